pub mod apiserver;
pub mod services;
pub mod testkit;
pub mod workloads;
