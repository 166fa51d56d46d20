//! faultline: a Kubernetes chaos engineering controller whose faults never outlive their
//! experiment.
//!
//! Module map:
//! - [`api`]: the custom resource types (the contract with users); no IO.
//! - [`cli`]: the `faultline` command line.
//! - [`probes`]: HTTP and Prometheus checks and the steady-state hypothesis built from them.
pub mod api;
pub mod cli;
pub mod lifecycle;
pub mod manifest;
pub mod probes;
pub mod selection;
