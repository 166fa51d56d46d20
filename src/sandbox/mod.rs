pub mod apiserver;
pub mod node_agent;
pub mod pod_logs;
pub mod services;
pub mod testkit;
pub mod workloads;
