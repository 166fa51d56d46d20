//! The agent's wiring through the kube client against the embedded API server, with an
//! in-memory kernel (`RecordingKernel`): finalizers, status, deadlines without the API server,
//! restarts from the journal, orphan cleanup, capabilities. The real kernel's mechanisms have
//! their own root tests (agent_partition, agent_nfqueue, agent_tc) and the sandbox end-to-end
//! test runs them together.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{ApiServer, wait_for};
use faultline::agent::kernel::{Capabilities, Mechanism, RecordingKernel};
use faultline::agent::runner::{self, AgentConfig};
use faultline::agent::tag::InjectionTag;
use faultline::agent::telemetry::AgentMetrics;
use faultline::api::{
    AGENT_FINALIZER, Direction, FaultInjection, FaultInjectionSpec, InjectionPhase, LatencyFault,
    NODE_CAPABILITIES_ANNOTATION, NODE_LABEL, NetworkFault, ObjectRef, PodRef, all_crds,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const NODE: &str = "node-a";
const WAIT: Duration = Duration::from_secs(20);

struct World {
    server: Option<ApiServer>,
    client: Client,
    kernel: RecordingKernel,
    journal: tempfile::TempDir,
}

impl World {
    async fn start(kernel: RecordingKernel) -> Self {
        common::init_tracing();
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
        }
    }

    fn agent(&self) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let kernel = Arc::new(self.kernel.clone());
        let config = AgentConfig {
            nodes: vec![NODE.to_string()],
            journal_dir: self.journal.path().to_path_buf(),
            resync: Duration::from_millis(200),
        };
        tokio::spawn(async move {
            runner::run(
                client,
                kernel,
                config,
                AgentMetrics::new(),
                std::future::pending(),
            )
            .await
            .unwrap();
        })
    }

    async fn pod(&self, name: &str) -> String {
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
        uid
    }

    async fn injection(&self, name: &str, pod_uid: &str, expires_in: TimeDelta) -> FaultInjection {
        let mut injection = FaultInjection::new(
            name,
            FaultInjectionSpec {
                experiment: ObjectRef {
                    name: "exp".into(),
                    uid: None,
                },
                target: PodRef {
                    namespace: "default".into(),
                    name: "target".into(),
                    uid: pod_uid.into(),
                },
                node_name: NODE.into(),
                fault: NetworkFault {
                    latency: Some(LatencyFault {
                        latency: "50ms".into(),
                        direction: Direction::To,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                expires_at: Utc::now() + expires_in,
            },
        );
        injection
            .labels_mut()
            .insert(NODE_LABEL.into(), NODE.into());
        self.injections()
            .create(&PostParams::default(), &injection)
            .await
            .unwrap()
    }

    fn injections(&self) -> Api<FaultInjection> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn wait_phase(&self, name: &str, phase: InjectionPhase) -> FaultInjection {
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

    async fn wait_gone(&self, name: &str) {
        let api = self.injections();
        wait_for(&format!("{name} to be gone"), WAIT, || {
            let api = api.clone();
            async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
        })
        .await
    }

    async fn wait_rules(&self, count: usize) {
        let kernel = self.kernel.clone();
        wait_for(&format!("{count} rules in the kernel"), WAIT, || {
            let kernel = kernel.clone();
            async move { (kernel.rules().len() == count).then_some(()) }
        })
        .await
    }
}

fn tag_of(injection: &FaultInjection) -> InjectionTag {
    InjectionTag::from_uid(&injection.uid().unwrap()).unwrap()
}

#[tokio::test]
async fn applies_with_a_finalizer_reports_status_and_reverts_on_delete() {
    let world = World::start(RecordingKernel::new(Capabilities {
        nfqueue: true,
        nftables: true,
        ..Default::default()
    }))
    .await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;

    let applied = world.wait_phase("lat", InjectionPhase::Applied).await;
    let status = applied.status.clone().unwrap();
    assert_eq!(status.mechanism.as_deref(), Some("nfqueue"));
    assert!(status.applied_at.is_some());
    assert_eq!(status.observed_generation, applied.metadata.generation);
    assert!(applied.finalizers().iter().any(|f| f == AGENT_FINALIZER));
    assert_eq!(
        world.kernel.rules(),
        vec![(pod.clone(), tag_of(&applied), Mechanism::Nfqueue)]
    );

    // The node's capabilities are where the controller reads them.
    let nodes: Api<Node> = Api::all(world.client.clone());
    let annotation = wait_for("capabilities annotation", WAIT, || {
        let nodes = nodes.clone();
        async move {
            nodes
                .get(NODE)
                .await
                .unwrap()
                .annotations()
                .get(NODE_CAPABILITIES_ANNOTATION)
                .cloned()
        }
    })
    .await;
    assert_eq!(annotation, "nfqueue,nftables");

    world
        .injections()
        .delete("lat", &DeleteParams::default())
        .await
        .unwrap();
    world.wait_gone("lat").await;
    assert!(world.kernel.rules().is_empty());
    agent.abort();
}

#[tokio::test]
async fn a_fault_the_node_cannot_do_fails_with_the_reason() {
    let world = World::start(RecordingKernel::new(Capabilities {
        nftables: true,
        ..Default::default()
    }))
    .await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;
    let failed = world.wait_phase("lat", InjectionPhase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(
        message.contains("sch_netem") && message.contains("NFQUEUE"),
        "{message}"
    );
    assert!(world.kernel.rules().is_empty());
    agent.abort();
}

#[tokio::test]
async fn reverts_at_the_deadline_with_the_api_server_gone() {
    let mut world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::seconds(3)).await;
    world.wait_phase("lat", InjectionPhase::Applied).await;
    assert_eq!(world.kernel.rules().len(), 1);

    // The API server goes away for good: only the agent's own deadline can end the fault.
    world.server.take().unwrap().shutdown().await;
    world.wait_rules(0).await;
    agent.abort();
}

#[tokio::test]
async fn a_restarted_agent_reverts_what_ended_while_it_was_away_and_keeps_the_rest_once() {
    let world = World::start(RecordingKernel::full()).await;
    let first = world.agent();
    let pod = world.pod("target").await;
    let stays = world.injection("stays", &pod, TimeDelta::minutes(5)).await;
    world.injection("ends", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("stays", InjectionPhase::Applied).await;
    world.wait_phase("ends", InjectionPhase::Applied).await;
    assert_eq!(world.kernel.rules().len(), 2);

    // kill -9: no graceful anything. Then "ends" is deleted while no agent runs.
    first.abort();
    let _ = first.await;
    world
        .injections()
        .delete("ends", &DeleteParams::default())
        .await
        .unwrap();
    let applies_before = world.kernel.apply_count();

    let second = world.agent();
    world.wait_gone("ends").await;
    world.wait_rules(1).await;
    assert_eq!(world.kernel.rules()[0].1, tag_of(&stays));
    // "stays" was re-applied once (desired state after a restart), not duplicated.
    let kernel = world.kernel.clone();
    wait_for("the re-apply", WAIT, || {
        let kernel = kernel.clone();
        async move { (kernel.apply_count() == applies_before + 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(world.kernel.apply_count(), applies_before + 1);
    second.abort();
}

#[tokio::test]
async fn orphans_in_this_nodes_pods_are_removed_at_start() {
    let world = World::start(RecordingKernel::full()).await;
    let pod = world.pod("target").await;
    let live = world.injection("live", &pod, TimeDelta::minutes(5)).await;
    let stray = InjectionTag::from_uid("deadbeef-0000-4000-8000-000000000000").unwrap();
    world.kernel.plant(&pod, &stray, Mechanism::Nftables);

    let agent = world.agent();
    world.wait_phase("live", InjectionPhase::Applied).await;
    world.wait_rules(1).await;
    assert_eq!(world.kernel.rules()[0].1, tag_of(&live));
    agent.abort();
}

#[tokio::test]
async fn a_target_that_disappears_is_reported_and_not_followed() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("lat", InjectionPhase::Applied).await;

    world.kernel.remove_pod(&pod);
    let reverted = world.wait_phase("lat", InjectionPhase::Reverted).await;
    let message = reverted.status.unwrap().message.unwrap();
    assert!(message.contains("target pod is gone"), "{message}");

    // A new injection for a pod that is not on the node fails with that reason.
    world
        .injection("late", "0000-gone", TimeDelta::minutes(5))
        .await;
    let failed = world.wait_phase("late", InjectionPhase::Failed).await;
    assert!(
        failed
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("not running on this node"),
    );
    agent.abort();
}
