//! How the kubelet starts and stops a pod's containers: the seam between "the kubelet decided
//! this pod runs on this node with this IP" and "something actually runs".
//!
//! Only [`PodRuntime::Simulated`] exists: nothing runs, containers are reported as started and
//! ready. A runtime that starts real processes in network namespaces becomes another variant;
//! the kubelet only talks to this enum.

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::net::Ipv4Addr;

/// Where the kubelet placed a pod.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node: String,
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
}

#[derive(Debug, Clone, Default)]
pub enum PodRuntime {
    /// Containers exist only in the pod's status.
    #[default]
    Simulated,
}

impl PodRuntime {
    /// Start the pod's containers; returns their statuses (all running and ready).
    pub async fn start(&self, pod: &Pod, placement: &Placement) -> Vec<ContainerStatus> {
        match self {
            PodRuntime::Simulated => {
                tracing::debug!(
                    pod = pod.metadata.name.as_deref().unwrap_or_default(),
                    node = %placement.node,
                    ip = %placement.pod_ip,
                    "simulated pod started"
                );
                simulated_statuses(pod, Timestamp::now())
            }
        }
    }

    /// Stop whatever runs for the pod with this uid (it is being deleted or is gone).
    pub async fn stop(&self, namespace: &str, name: &str, uid: &str) {
        match self {
            PodRuntime::Simulated => {
                tracing::debug!(namespace, pod = name, uid, "simulated pod stopped");
            }
        }
    }
}

/// Running, ready, started containers with the ids and images the pod spec names.
fn simulated_statuses(pod: &Pod, now: Timestamp) -> Vec<ContainerStatus> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            ContainerStatus {
                name: c.name.clone(),
                image_id: format!("sandbox://{image}"),
                image,
                container_id: Some(format!("sandbox://{uid}/{}", c.name)),
                ready: true,
                started: Some(true),
                restart_count: 0,
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(now)),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect()
}
