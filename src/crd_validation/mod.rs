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

/// The part of `generateName` the API server keeps before its 5 random characters: at most 58
/// characters, so that a generated name fits in 63 (Kubernetes' `SimpleNameGenerator`).
pub fn generated_name_prefix(generate_name: &str) -> &str {
    const MAX_PREFIX: usize = 58;
    match generate_name.char_indices().nth(MAX_PREFIX) {
        Some((cut, _)) => &generate_name[..cut],
        None => generate_name,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_generated_name_keeps_at_most_58_characters_of_its_prefix() {
        let long = "g".repeat(70);
        assert_eq!(super::generated_name_prefix(&long).len(), 58);
        assert_eq!(super::generated_name_prefix("latency-"), "latency-");
    }
}
