//! The node agent in-process against the embedded API server, with an in-memory kernel
//! (`RecordingKernel`): a node, pods, work items as the controller writes them, and waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use faultline::agent::kernel::{Capabilities, RecordingKernel};
use faultline::agent::runner::{self, AgentConfig};
use faultline::agent::tag::InjectionTag;
use faultline::agent::telemetry::AgentMetrics;
use faultline::api::{
    ChaosExperiment, Direction, FaultInjection, FaultInjectionSpec, InjectionPhase, LatencyFault,
    NODE_LABEL, NetworkFault, ObjectRef, PodRef, all_crds,
};
use faultline::controller::signal_receipts;
use faultline::sandbox::testkit;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::{ApiServer, wait_for};

pub const NODE: &str = "node-a";
pub const WAIT: Duration = Duration::from_secs(20);

pub struct World {
    pub server: Option<ApiServer>,
    pub client: Client,
    pub kernel: RecordingKernel,
    pub journal: tempfile::TempDir,
    /// Pod UID -> name, for the injections' targets.
    pod_names: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl World {
    pub async fn start(kernel: RecordingKernel) -> Self {
        super::init_tracing();
        let server = ApiServer::start(0).await.unwrap();
        server.install_crds(&all_crds()).await.unwrap();
        let client = server.client().await;
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap(),
            )
            .await
            .unwrap();
        Self {
            server: Some(server),
            client,
            kernel,
            journal: tempfile::tempdir().unwrap(),
            pod_names: Default::default(),
        }
    }

    pub fn agent(&self) -> tokio::task::JoinHandle<()> {
        self.agent_in(self.journal.path().to_path_buf(), AgentMetrics::new())
    }

    pub fn agent_in(
        &self,
        journal_dir: std::path::PathBuf,
        metrics: AgentMetrics,
    ) -> tokio::task::JoinHandle<()> {
        self.agent_with(self.client.clone(), journal_dir, metrics)
    }

    pub fn agent_with(
        &self,
        client: Client,
        journal_dir: std::path::PathBuf,
        metrics: AgentMetrics,
    ) -> tokio::task::JoinHandle<()> {
        let kernel = Arc::new(self.kernel.clone());
        let config = AgentConfig {
            nodes: vec![NODE.to_string()],
            journal_dir,
            resync: Duration::from_millis(200),
            policy: faultline::agent::admission::Policy::new("faultline-system"),
        };
        tokio::spawn(async move {
            runner::run(client, kernel, config, metrics, std::future::pending())
                .await
                .unwrap();
        })
    }

    pub async fn pod(&self, name: &str) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let pod = pods
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "demo"}]}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let uid = pod.uid().unwrap();
        self.kernel.add_pod(&uid);
        self.pod_names
            .lock()
            .unwrap()
            .insert(uid.clone(), name.to_string());
        uid
    }

    pub async fn injection(
        &self,
        name: &str,
        pod_uid: &str,
        expires_in: TimeDelta,
    ) -> FaultInjection {
        let fault = NetworkFault {
            latency: Some(LatencyFault {
                latency: "50ms".into(),
                direction: Direction::To,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.injection_with(name, pod_uid, expires_in, fault).await
    }

    pub async fn injection_with(
        &self,
        name: &str,
        pod_uid: &str,
        expires_in: TimeDelta,
        fault: NetworkFault,
    ) -> FaultInjection {
        let injection = self.vouched(name, pod_uid, expires_in, fault).await;
        self.injections()
            .create(&PostParams::default(), &injection)
            .await
            .unwrap()
    }

    /// A work item as the controller would write it, with a running experiment behind it (and
    /// its namespace opted in), not created yet.
    pub async fn vouched(
        &self,
        name: &str,
        pod_uid: &str,
        expires_in: TimeDelta,
        fault: NetworkFault,
    ) -> FaultInjection {
        let mut injection = FaultInjection::new(
            name,
            FaultInjectionSpec {
                experiment: ObjectRef {
                    name: "exp".into(),
                    uid: None,
                },
                target: PodRef {
                    namespace: "default".into(),
                    name: self
                        .pod_names
                        .lock()
                        .unwrap()
                        .get(pod_uid)
                        .cloned()
                        .unwrap_or_else(|| "target".into()),
                    uid: pod_uid.into(),
                },
                node_name: NODE.into(),
                fault,
                expires_at: Utc::now() + expires_in,
            },
        );
        injection
            .labels_mut()
            .insert(NODE_LABEL.into(), NODE.into());
        // A running experiment stands behind it, as the controller's would.
        testkit::vouch_for(&self.client, &mut injection)
            .await
            .unwrap();
        injection
    }

    pub fn injections(&self) -> Api<FaultInjection> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn wait_phase(&self, name: &str, phase: InjectionPhase) -> FaultInjection {
        let api = self.injections();
        wait_for(&format!("{name} to be {phase:?}"), WAIT, || {
            let api = api.clone();
            async move {
                api.get_opt(name)
                    .await
                    .unwrap()
                    .filter(|i| i.status.as_ref().is_some_and(|s| s.phase == phase))
            }
        })
        .await
    }

    pub async fn wait_gone(&self, name: &str) {
        let api = self.injections();
        wait_for(&format!("{name} to be gone"), WAIT, || {
            let api = api.clone();
            async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
        })
        .await
    }

    /// The controller's namespace and the revert signal's ConfigMap with `data`, as the chart
    /// and the controller make them.
    pub async fn signal_configmap(&self, data: serde_json::Value) -> Api<ConfigMap> {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "faultline-system"}})).unwrap(),
            )
            .await
            .unwrap();
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), "faultline-system");
        maps.create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": faultline::controller::REVERTING_CONFIGMAP},
                "data": data,
            }))
            .unwrap(),
        )
        .await
        .unwrap();
        maps
    }

    /// The first revert receipt for experiment `exp`, once there, and where: beside the revert
    /// signal (in its ConfigMap) or, where that cannot be written, in the experiment's status.
    pub async fn receipt(&self) -> (faultline::api::RevertReceipt, ReceiptPlace) {
        let experiments: Api<ChaosExperiment> = Api::namespaced(self.client.clone(), "default");
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), "faultline-system");
        wait_for("the node's revert receipt", WAIT, || {
            let (experiments, maps) = (experiments.clone(), maps.clone());
            async move {
                let experiment = experiments.get("exp").await.unwrap();
                let uid = experiment.uid().unwrap();
                let beside_signal = maps
                    .get_opt(faultline::controller::REVERTING_CONFIGMAP)
                    .await
                    .unwrap()
                    .and_then(|map| map.data)
                    .map(|data| signal_receipts::receipts_of(&data, &uid))
                    .unwrap_or_default();
                if let Some(receipt) = beside_signal.into_iter().next() {
                    return Some((receipt, ReceiptPlace::SignalConfigMap));
                }
                let in_status = experiment.status?.revert_receipts.into_iter().next()?;
                Some((in_status, ReceiptPlace::Status))
            }
        })
        .await
    }

    pub async fn wait_rules(&self, count: usize) {
        let kernel = self.kernel.clone();
        wait_for(&format!("{count} rules in the kernel"), WAIT, || {
            let kernel = kernel.clone();
            async move { (kernel.rules().len() == count).then_some(()) }
        })
        .await
    }
}

#[derive(Debug, PartialEq)]
pub enum ReceiptPlace {
    SignalConfigMap,
    Status,
}

/// A kernel that queues latency in userspace (NFQUEUE) and partitions with nftables.
pub fn queueing_kernel() -> RecordingKernel {
    RecordingKernel::new(Capabilities {
        nfqueue: true,
        nftables: true,
        ..Default::default()
    })
}

pub fn tag_of(injection: &FaultInjection) -> InjectionTag {
    InjectionTag::from_uid(&injection.uid().unwrap()).unwrap()
}
