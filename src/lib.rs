//! faultline: a Kubernetes chaos engineering controller whose faults never outlive their
//! experiment.
//!
//! Module map:
//! - [`api`]: the custom resource types (the contract with users); no IO.
//! - [`cli`]: the `faultline` command line.
pub mod api;
pub mod cli;
pub mod controller;
pub mod lifecycle;
pub mod manifest;
pub mod selection;
