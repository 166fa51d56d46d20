//! Real sandbox pods in-process (root only): a sandbox slot of a test's own (bridge, subnet,
//! namespace prefix, cgroup root), the workload simulator running its pods as real processes,
//! and the pods' readiness as the tests wait for it.

use std::sync::Arc;
use std::time::Duration;

use super::wait_for;
use faultline::sandbox::workloads::realpod::{self, RealPodConfig, RealPods, SlotLease};
use faultline::sandbox::workloads::{PodRuntime, WorkloadOptions, Workloads};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(40);

/// A slot of our own and the runtime on it; whatever is left under the slot's names is removed
/// on drop, also when the test fails halfway.
pub struct Slot {
    pub config: RealPodConfig,
    pub pods: Arc<RealPods>,
    _lease: SlotLease,
}

impl Slot {
    pub fn claim() -> Slot {
        let lease = realpod::claim_slot()
            .expect("slot locks work")
            .expect("a free sandbox slot");
        let mut config = RealPodConfig::slot(lease.slot(), env!("CARGO_BIN_EXE_faultline").into());
        config.termination_grace = Duration::from_secs(2);
        // A slot nobody held may still hold what a crashed run left.
        realpod::cleanup(&config).unwrap();
        let pods = RealPods::new(config.clone()).unwrap();
        Slot {
            config,
            pods,
            _lease: lease,
        }
    }

    pub async fn workloads(&self, client: &Client) -> Workloads {
        Workloads::start(
            client.clone(),
            WorkloadOptions {
                nodes: 2,
                replacement_delay: Duration::from_millis(100),
                start_delay: Duration::from_millis(100),
                runtime: PodRuntime::Real(self.pods.clone()),
                ..WorkloadOptions::default()
            },
        )
        .await
        .unwrap()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = realpod::cleanup(&self.config);
    }
}

/// `replicas` demo-app pods labelled app=`name`, listening on 8080, calling `downstream`.
pub fn demo(name: &str, replicas: i32, downstream: Option<&str>) -> Deployment {
    let env: Vec<Value> = downstream
        .map(|d| json!({"name": "DEMO_DOWNSTREAM", "value": d}))
        .into_iter()
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": "faultline-demo",
                    "ports": [{"containerPort": 8080}],
                    "env": env,
                }]},
            },
        },
    }))
    .unwrap()
}

pub fn ready(p: &Pod) -> bool {
    let status = p.status.clone().unwrap_or_default();
    p.metadata.deletion_timestamp.is_none()
        && status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

pub async fn ready_pods(pods: &Api<Pod>, app: &str, n: usize) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("app={app}"));
    wait_for(&format!("{n} ready {app} pods"), TIMEOUT, || async {
        let list = pods.list(&lp).await.ok()?.items;
        (list.len() == n && list.iter().all(ready)).then_some(list)
    })
    .await
}

/// A slot with an API server and the workload simulator running its pods, and the default
/// namespace's Deployments and Pods at hand. Destructure it with `slot` first, so that the
/// slot's cleanup runs last.
pub struct RealBed {
    pub slot: Slot,
    pub server: super::ApiServer,
    pub client: Client,
    pub workloads: Workloads,
    pub deployments: Api<Deployment>,
    pub pods: Api<Pod>,
}

impl RealBed {
    pub async fn start() -> RealBed {
        let slot = Slot::claim();
        let server = super::server().await;
        let client = server.client().await;
        let workloads = slot.workloads(&client).await;
        RealBed {
            deployments: Api::namespaced(client.clone(), "default"),
            pods: Api::namespaced(client.clone(), "default"),
            slot,
            server,
            client,
            workloads,
        }
    }
}

/// Creates the [`demo`] Deployment `name` and waits for its `replicas` pods to be Ready.
pub async fn deploy(
    deployments: &Api<Deployment>,
    pods: &Api<Pod>,
    name: &str,
    replicas: i32,
    downstream: Option<&str>,
) -> Vec<Pod> {
    deployments
        .create(&PostParams::default(), &demo(name, replicas, downstream))
        .await
        .unwrap();
    ready_pods(pods, name, usize::try_from(replicas).unwrap()).await
}
