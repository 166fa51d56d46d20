//! A workload simulator for the sandbox: what kube-controller-manager, kube-scheduler and the
//! kubelets do for Deployments, as a *client* of the API server (the real `kube::Client`,
//! watches through kube-runtime), never reaching into its storage.
//!
//! ```text
//!  Deployment ──(deployments)──▶ ReplicaSet <name>-<hash> ──(replicasets)──▶ Pods <rs>-xxxxx
//!                                                                              │
//!                     (kubelet: schedule round robin, start, Running + Ready) ◀┘
//! ```
//!
//! Modules: `nodes` (the simulated Nodes), `deployments`, `replicasets`, `kubelet` (scheduler +
//! kubelet), `events` (the Events each of them publishes, as the real components word them), `runtime` (how a pod is "started": [`PodRuntime`]), `realpod` (the runtime of real
//! processes in network namespaces), `container_updates` (the kubelet reporting restarts and
//! readiness the runtime notices), `naming` (pure helpers).
//! Each documents where it simplifies. Across all of them: no leader election (one simulator
//! per API server), no Services/endpoints, and a pod is only as real as its
//! [`PodRuntime`] (simulated: nothing runs; real: demo-app processes, as root).
//!
//! Against a real control plane ([`ControlPlane::Real`]: kube-controller-manager and
//! kube-scheduler run) the simulator plays the kubelets only: it registers its Nodes and keeps
//! them alive (a Lease in `kube-node-lease` and a Ready condition, as a kubelet does, so the
//! node lifecycle controller never taints them), runs the pods the real scheduler binds to them,
//! reports their status, and confirms their deletion. Deployments, ReplicaSets, scheduling,
//! EndpointSlices, PodDisruptionBudget status and garbage collection are the real controllers'.

mod container_updates;
mod deployments;
mod events;
mod kubelet;
pub mod naming;
mod nodes;
pub mod realpod;
mod replicasets;
pub mod runtime;

pub use runtime::PodRuntime;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, PatchParams};
use kube::runtime::{Controller, watcher};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The field manager of every write the simulator makes.
pub const FIELD_MANAGER: &str = "faultline-sandbox-workloads";

/// Tunables of the simulation.
#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// How many nodes (`sandbox-node-1..=N`) to create; at most 254.
    pub nodes: u8,
    /// How long a ReplicaSet that misses pods waits before creating them.
    pub replacement_delay: Duration,
    /// How long a scheduled pod takes to become Running and Ready.
    pub start_delay: Duration,
    pub runtime: PodRuntime,
    /// Who runs Deployments, ReplicaSets and scheduling: the simulator, or a real control plane.
    pub control_plane: ControlPlane,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            nodes: 3,
            replacement_delay: Duration::from_secs(1),
            start_delay: Duration::from_millis(500),
            runtime: PodRuntime::Simulated,
            control_plane: ControlPlane::Simulated,
        }
    }
}

/// What the API server has around it besides the simulator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ControlPlane {
    /// Nothing (the embedded API server): the simulator also plays kube-controller-manager's
    /// Deployment and ReplicaSet controllers and kube-scheduler.
    #[default]
    Simulated,
    /// A real kube-controller-manager and kube-scheduler: the simulator plays the kubelets only.
    Real,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {object}: {source}")]
    Kube {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to encode an object: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
}

impl Error {
    fn kube(action: &'static str, object: &str, source: kube::Error) -> Self {
        Error::Kube {
            action,
            object: object.to_string(),
            source,
        }
    }
}

/// Where the scheduler puts pods and which addresses they get.
#[derive(Default)]
struct PlacementState {
    round_robin: naming::RoundRobin,
    ips: naming::IpAllocator,
}

/// Shared by every controller of the simulator.
pub(crate) struct Context {
    client: Client,
    options: WorkloadOptions,
    nodes: Vec<String>,
    /// ReplicaSet uid -> when it was first seen short of pods.
    shortages: Mutex<HashMap<String, Instant>>,
    /// Pod uid -> when the kubelet first saw it scheduled.
    starting: Mutex<HashMap<String, Instant>>,
    placement: Mutex<PlacementState>,
    /// Uids of the pods this kubelet started or resumed (a Running pod not among them was
    /// started by an earlier run of the sandbox).
    synced: Mutex<HashSet<String>>,
    /// Pod uid -> when the kubelet last reported it Ready again (see `kubelet`).
    ready_again: Mutex<HashMap<String, Instant>>,
    /// Pod uid -> the failed starts in a row and the last one's message (see `kubelet`).
    start_failures: Mutex<HashMap<String, (u32, String)>>,
}

/// A poisoned lock only means another reconcile panicked; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Whether every field of `wanted` already has that value in `current` (absent = 0).
fn same_status(current: &Value, wanted: &Value) -> bool {
    wanted.as_object().is_some_and(|w| {
        w.iter().all(|(k, v)| match current.get(k) {
            Some(c) => c == v,
            None => *v == json!(0) || v.is_null(),
        })
    })
}

/// `matchLabels` as a label selector string (`matchExpressions` are left to the caller's
/// ownerReference filter, which is what decides ownership anyway).
fn selector_string(selector: &LabelSelector) -> String {
    selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod that counts toward its ReplicaSet: not being deleted and not finished.
fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A Deployment of `replicas` pods labelled `labels` (also its selector), one container
/// `app` with an image that is never pulled. For tests and demos.
pub fn deployment(
    namespace: &str,
    name: &str,
    replicas: i32,
    labels: &[(&str, &str)],
) -> Deployment {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "sandbox.local/app:1"}]},
            },
        },
    }))
    .expect("a literal Deployment always deserialises")
}

/// Consumes a controller's output stream; failures are already logged by the error policies,
/// what remains (e.g. an object gone before its reconcile) is only worth a debug line.
fn drain<T, E: std::fmt::Display>(
    controller: &'static str,
) -> impl FnMut(Result<T, E>) -> std::future::Ready<()> {
    move |result| {
        if let Err(e) = result {
            tracing::debug!(controller, error = %e, "reconcile not run");
        }
        std::future::ready(())
    }
}

/// The running simulator.
pub struct Workloads {
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    runtime: PodRuntime,
    client: Client,
    nodes: Vec<String>,
    control_plane: ControlPlane,
}

impl Workloads {
    /// Create the nodes, then run the controllers until [`Workloads::shutdown`].
    pub async fn start(client: Client, options: WorkloadOptions) -> Result<Workloads, Error> {
        let nodes = nodes::ensure(&client, options.nodes).await?;
        let ctx = Arc::new(Context {
            client: client.clone(),
            options,
            nodes,
            shortages: Mutex::default(),
            starting: Mutex::default(),
            placement: Mutex::default(),
            synced: Mutex::default(),
            ready_again: Mutex::default(),
            start_failures: Mutex::default(),
        });
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        let stop = || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        };
        let config = watcher::Config::default();
        let mut tasks = Vec::new();
        match ctx.options.control_plane {
            ControlPlane::Simulated => {
                let deployments =
                    Controller::new(Api::<Deployment>::all(client.clone()), config.clone())
                        .owns(Api::<ReplicaSet>::all(client.clone()), config.clone())
                        .graceful_shutdown_on(stop())
                        .run(
                            deployments::reconcile,
                            deployments::retry_after,
                            ctx.clone(),
                        )
                        .for_each(drain("deployments"));
                let replicasets =
                    Controller::new(Api::<ReplicaSet>::all(client.clone()), config.clone())
                        .owns(Api::<Pod>::all(client.clone()), config.clone())
                        .graceful_shutdown_on(stop())
                        .run(
                            replicasets::reconcile,
                            replicasets::retry_after,
                            ctx.clone(),
                        )
                        .for_each(drain("replicasets"));
                tasks.push(tokio::spawn(deployments));
                tasks.push(tokio::spawn(replicasets));
            }
            ControlPlane::Real => {
                tasks.push(tokio::spawn(nodes::heartbeat(
                    client.clone(),
                    ctx.nodes.clone(),
                    rx.clone(),
                )));
            }
        }
        let kubelet = Controller::new(Api::<Pod>::all(client.clone()), config)
            .graceful_shutdown_on(stop())
            .run(kubelet::reconcile, kubelet::retry_after, ctx.clone())
            .for_each(drain("kubelet"));
        tasks.push(tokio::spawn(kubelet));
        tasks.push(tokio::spawn(kubelet::reap(ctx.clone(), rx.clone())));
        tasks.push(tokio::spawn(container_updates::report(
            ctx.clone(),
            rx.clone(),
        )));
        tracing::info!(nodes = ctx.nodes.len(), "workload simulator running");
        Ok(Workloads {
            shutdown,
            tasks,
            runtime: ctx.options.runtime.clone(),
            client,
            nodes: ctx.nodes.clone(),
            control_plane: ctx.options.control_plane,
        })
    }

    /// Stop every controller (running reconciles finish first) and wait for them, then stop
    /// every pod the runtime still runs.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a workload simulator task ended abnormally");
            }
        }
        self.runtime.shutdown().await;
        if self.control_plane == ControlPlane::Real {
            // A kubelet that is gone for good: its Nodes go too, so the real scheduler does not
            // bind pods to them (and the pod garbage collector removes what was left on them).
            nodes::remove(&self.client, &self.nodes).await;
        }
        tracing::info!("workload simulator stopped");
    }
}
