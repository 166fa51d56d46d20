//! How kube-apiserver v1.36 judges a custom resource and a CRD, in Rust, for the two places that
//! must judge as it does without one: `faultline validate` and the sandbox API server.
//!
//! - [`formats`]: the schema `format`s (`int32`, `int64`, `date-time`), the JSON number model
//!   of the server, and Go's way of printing values in its messages.
//! - [`cel`]: the CRDs' CEL rules run locally (kube-cel), with the rewrites that make kube-cel
//!   read IP addresses and durations as Go does.
//! - [`cost`]: the CEL cost budget the server holds a CRD to before it accepts it.
//!
//! Pure: no IO. The real server is the referee: tests/differential.rs sends one corpus of
//! manifests to both and to `faultline validate`.

pub mod cel;
pub mod cost;
pub mod formats;
