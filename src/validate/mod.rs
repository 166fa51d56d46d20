//! `faultline validate`: offline checks of faultline manifests. Pure: text in, problems out.

pub mod yaml_lines;
