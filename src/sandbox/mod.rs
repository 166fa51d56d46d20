pub mod apiserver;
pub mod workloads;
