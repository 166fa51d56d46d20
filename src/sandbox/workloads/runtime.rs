//! How the kubelet starts and stops a pod's containers: the seam between "the kubelet decided
//! this pod runs on this node with this IP" and "something actually runs".
//!
//! - [`PodRuntime::Simulated`]: nothing runs; containers are reported as started and ready.
//! - [`PodRuntime::Real`]: each pod is a network namespace on a bridge and each container a
//!   `faultline demo-app` process in a kubelet-style pod cgroup (root only; see
//!   [`realpod`](super::realpod)).
//!
//! The kubelet only talks to this enum.

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateRunning, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::realpod::{PodUpdate, RealPods};

/// Where the kubelet placed a pod.
#[derive(Debug, Clone)]
pub struct Placement {
    pub node: String,
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to {step} for pod {pod}: {source}")]
    Setup {
        step: &'static str,
        pod: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pod {0} was stopped; it is not started again")]
    Stopped(String),
}

#[derive(Debug, Clone, Default)]
pub enum PodRuntime {
    /// Containers exist only in the pod's status.
    #[default]
    Simulated,
    /// Real processes in real network namespaces.
    Real(Arc<RealPods>),
}

impl PodRuntime {
    /// The address a pod gets, from the one the IP allocator handed out (always in
    /// 10.244.0.0/16): the same for simulated pods, moved into the runtime's own /16 for real
    /// ones (each real runtime on a machine needs its own subnet).
    pub fn pod_ip(&self, allocated: Ipv4Addr) -> Ipv4Addr {
        match self {
            PodRuntime::Simulated => allocated,
            PodRuntime::Real(pods) => {
                let [a, b] = pods.config().subnet;
                let [_, _, node, host] = allocated.octets();
                Ipv4Addr::new(a, b, node, host)
            }
        }
    }

    /// The inverse of [`PodRuntime::pod_ip`] for an address seen on a pod: the allocator's
    /// address it stands for, `None` when it is none of this runtime's.
    pub fn allocated_ip(&self, pod_ip: Ipv4Addr) -> Option<Ipv4Addr> {
        match self {
            PodRuntime::Simulated => Some(pod_ip),
            PodRuntime::Real(pods) => {
                let [a, b, node, host] = pod_ip.octets();
                ([a, b] == pods.config().subnet).then(|| Ipv4Addr::new(10, 244, node, host))
            }
        }
    }

    /// Start the pod's containers; returns their statuses (for real pods: ready once they
    /// answer, see [`RealPods::start`]).
    pub async fn start(
        &self,
        pod: &Pod,
        placement: &Placement,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        match self {
            PodRuntime::Simulated => {
                tracing::debug!(
                    pod = pod.metadata.name.as_deref().unwrap_or_default(),
                    node = %placement.node,
                    ip = %placement.pod_ip,
                    "simulated pod started"
                );
                Ok(simulated_statuses(pod, Timestamp::now()))
            }
            PodRuntime::Real(pods) => pods.start(pod, placement.pod_ip).await,
        }
    }

    /// Whether a pod's containers outlive the kubelet that started them. Simulated ones do
    /// (nothing runs, so nothing dies); real ones are children of the sandbox, and an earlier
    /// sandbox's leftovers are removed when the next one starts.
    pub fn survives_kubelet_restart(&self) -> bool {
        matches!(self, PodRuntime::Simulated)
    }

    /// The containers of a running pod as the runtime sees them; `None` when the runtime
    /// keeps no state of its own (simulated: the pod's status is all there is) or runs no such
    /// pod.
    pub fn statuses(&self, uid: &str) -> Option<Vec<ContainerStatus>> {
        match self {
            PodRuntime::Simulated => None,
            PodRuntime::Real(pods) => pods.statuses(uid),
        }
    }

    /// Stop whatever runs for the pod with this uid (it is being deleted or is gone).
    pub async fn stop(&self, namespace: &str, name: &str, uid: &str) {
        match self {
            PodRuntime::Simulated => {
                tracing::debug!(namespace, pod = name, uid, "simulated pod stopped");
            }
            PodRuntime::Real(pods) => pods.stop(uid).await,
        }
    }

    /// Changes to containers after they started (restarts, readiness), for the kubelet to
    /// report; `None` when containers never change on their own.
    pub fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<PodUpdate>> {
        match self {
            PodRuntime::Simulated => None,
            PodRuntime::Real(pods) => Some(pods.subscribe()),
        }
    }

    /// Every running pod's container state now (see [`RealPods::current_states`]).
    pub fn current_states(&self) -> Vec<PodUpdate> {
        match self {
            PodRuntime::Simulated => Vec::new(),
            PodRuntime::Real(pods) => pods.current_states(),
        }
    }

    /// Stop every pod (the simulator is shutting down).
    pub async fn shutdown(&self) {
        match self {
            PodRuntime::Simulated => {}
            PodRuntime::Real(pods) => pods.shutdown().await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::workloads::realpod::RealPodConfig;

    #[test]
    fn real_pods_get_addresses_in_their_slot_subnet_and_back() {
        let simulated = PodRuntime::Simulated;
        let allocated = Ipv4Addr::new(10, 244, 2, 7);
        assert_eq!(simulated.pod_ip(allocated), allocated);
        let real =
            PodRuntime::Real(RealPods::new(RealPodConfig::slot(3, "faultline".into())).unwrap());
        let ip = real.pod_ip(allocated);
        assert_eq!(ip, Ipv4Addr::new(10, 247, 2, 7));
        assert_eq!(real.allocated_ip(ip), Some(allocated));
        assert_eq!(
            real.allocated_ip(allocated),
            None,
            "not one of this runtime's"
        );
    }
}
