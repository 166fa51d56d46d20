pub mod apiserver;
pub mod testkit;
pub mod workloads;
