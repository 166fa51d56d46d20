//! The controller as it runs in production (kube-runtime Controller, real kube client) against
//! the embedded API server, with a stand-in node agent and scripted probes.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{ApiServer, wait_for};
use faultline::{
    api::{
        AGENT_FINALIZER, ChaosExperiment, ChaosExperimentSpec, EXPERIMENT_FINALIZER,
        FaultInjection, FaultInjectionStatus, InjectionPhase, Phase, ProbePhase, ProbeStatus,
        TargetState, Verdict, all_crds,
    },
    controller::{self, HypothesisSource, Settings},
    lifecycle::HypothesisView,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// Probes whose verdict the test sets per phase; unset phases hold.
#[derive(Default)]
struct ScriptedProbes {
    views: Mutex<HashMap<ProbePhase, HypothesisView>>,
}

impl ScriptedProbes {
    fn set(&self, phase: ProbePhase, view: HypothesisView) {
        self.views.lock().unwrap().insert(phase, view);
    }
}

impl HypothesisSource for ScriptedProbes {
    fn preflight(&self, _: &ChaosExperiment) -> Result<(), String> {
        Ok(())
    }
    fn watch(&self, _: &ChaosExperiment, _: Option<ProbePhase>) {}
    fn view(&self, _: &str, phase: ProbePhase) -> HypothesisView {
        self.views
            .lock()
            .unwrap()
            .get(&phase)
            .cloned()
            .unwrap_or(HypothesisView::Holding)
    }
    fn statuses(&self, _: &str) -> Vec<ProbeStatus> {
        vec![]
    }
    fn forget(&self, _: &str) {}
}

struct Harness {
    server: ApiServer,
    client: Client,
    probes: Arc<ScriptedProbes>,
    trigger: mpsc::UnboundedSender<ObjectRef<ChaosExperiment>>,
    controller: tokio::task::JoinHandle<()>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn spawn_controller(
    client: &Client,
    probes: &Arc<ScriptedProbes>,
) -> (
    mpsc::UnboundedSender<ObjectRef<ChaosExperiment>>,
    tokio::task::JoinHandle<()>,
) {
    let (trigger, triggers) = mpsc::unbounded_channel();
    let settings = Settings {
        injection_timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    let task = tokio::spawn(controller::run(
        client.clone(),
        settings,
        probes.clone(),
        triggers,
        Default::default(),
        std::future::pending(),
    ));
    (trigger, task)
}

impl Harness {
    async fn start() -> Harness {
        faultline::cli::install_crypto_provider();
        let server = common::server().await;
        server.install_crds(&all_crds()).await.unwrap();
        let client = server.client().await;
        let probes = Arc::new(ScriptedProbes::default());
        let (trigger, controller) = spawn_controller(&client, &probes);
        let (stop_agent, agent_stopped) = oneshot::channel::<()>();
        let agent = tokio::spawn(stand_in_agent(client.clone(), agent_stopped));
        Harness {
            server,
            client,
            probes,
            trigger,
            controller,
            stop: vec![stop_agent],
            tasks: vec![agent],
        }
    }

    /// Kills the controller where it stands (its task is dropped mid-flight, as a crash would)
    /// and starts a fresh one.
    async fn crash_and_restart_controller(&mut self) {
        self.controller.abort();
        let _ = (&mut self.controller).await;
        let (trigger, controller) = spawn_controller(&self.client, &self.probes);
        self.trigger = trigger;
        self.controller = controller;
    }

    async fn namespace(&self, name: &str, opted_in: bool) {
        let labels = opted_in
            .then(|| BTreeMap::from([("faultline.dev/chaos".to_string(), "enabled".to_string())]));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels,
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
    }

    /// A Running, Ready pod on `node` with `ip`.
    async fn pod(&self, namespace: &str, name: &str, app: &str, ip: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "demo"}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let status = json!({"status": {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    async fn create(&self, namespace: &str, name: &str, spec: serde_json::Value) {
        let spec: ChaosExperimentSpec = serde_json::from_value(spec).unwrap();
        let experiment = ChaosExperiment::new(name, spec);
        self.experiments(namespace)
            .create(&PostParams::default(), &experiment)
            .await
            .unwrap();
    }

    fn experiments(&self, namespace: &str) -> Api<ChaosExperiment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn injections(&self, namespace: &str) -> Api<FaultInjection> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn wait_phase(&self, namespace: &str, name: &str, phase: Phase) -> ChaosExperiment {
        let api = self.experiments(namespace);
        wait_for(
            &format!("{name} to reach {phase:?}"),
            Duration::from_secs(15),
            || async {
                let e = api.get_opt(name).await.ok().flatten()?;
                (e.status.as_ref()?.phase == phase).then_some(e)
            },
        )
        .await
    }

    async fn stop(mut self) {
        self.controller.abort();
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.server.shutdown().await;
    }
}

/// Plays the node agent: holds its finalizer, reports Applied, and lets go on deletion.
async fn stand_in_agent(client: Client, stop: oneshot::Receiver<()>) {
    let all: Api<FaultInjection> = Api::all(client.clone());
    let events = watcher(all, watcher::Config::default()).applied_objects();
    let work = events.for_each(|event| {
        let client = client.clone();
        async move {
            let Ok(injection) = event else { return };
            let api: Api<FaultInjection> =
                Api::namespaced(client, &injection.namespace().unwrap_or_default());
            let name = injection.name_any();
            let has_finalizer = injection.finalizers().iter().any(|f| f == AGENT_FINALIZER);
            if injection.metadata.deletion_timestamp.is_some() {
                let patch = json!({"metadata": {"finalizers": null}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            } else if !has_finalizer {
                let patch = json!({"metadata": {"finalizers": [AGENT_FINALIZER]}});
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            } else if injection
                .status
                .as_ref()
                .is_none_or(|s| s.phase != InjectionPhase::Applied)
            {
                let status = FaultInjectionStatus {
                    phase: InjectionPhase::Applied,
                    mechanism: Some("stand-in".into()),
                    ..Default::default()
                };
                let patch = json!({"status": status});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await;
            }
        }
    });
    tokio::select! {
        _ = work => {}
        _ = stop => {}
    }
}

fn latency_spec(duration: &str) -> serde_json::Value {
    json!({
        "duration": duration,
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
        "faults": [{"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
        "steadyState": {"probes": [{"name": "web", "http": {"url": "http://127.0.0.1:1/"}}]}
    })
}

async fn shop_with_web_pods(h: &Harness, n: usize) {
    h.namespace("shop", true).await;
    for i in 0..n {
        h.pod(
            "shop",
            &format!("web-{i}"),
            "web",
            &format!("10.244.0.{}", i + 10),
        )
        .await;
    }
}

#[tokio::test]
async fn a_network_fault_goes_through_its_whole_lifecycle_and_leaves_nothing() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "latency", latency_spec("1s")).await;

    let running = h.wait_phase("shop", "latency", Phase::Running).await;
    let status = running.status.unwrap();
    assert_eq!(status.target_count, 2);
    assert!(
        status
            .targets
            .iter()
            .all(|t| t.state == TargetState::Injected),
        "{:?}",
        status.targets
    );
    assert!(
        running
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&EXPERIMENT_FINALIZER.to_string())
    );
    let injections = h
        .injections("shop")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(injections.len(), 2);
    for injection in &injections {
        assert_eq!(
            injection
                .labels()
                .get("faultline.dev/node")
                .map(String::as_str),
            Some("node-1")
        );
        assert_eq!(injection.spec.fault.peer_cidrs, ["10.0.0.0/8"]);
        assert!(injection.spec.expires_at > status.injected_at.unwrap());
        let owner = &injection.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, running.metadata.uid.clone().unwrap());
    }

    let done = h.wait_phase("shop", "latency", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Passed));
    assert!(
        status
            .targets
            .iter()
            .all(|t| t.state == TargetState::Reverted)
    );
    assert!(status.reverted_at.is_some() && status.recovery_time.is_some());
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.reason == "Passed")
    );
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The verdict is written before the finalizer is released.
    let api = h.experiments("shop");
    wait_for(
        "the finalizer to be released",
        Duration::from_secs(5),
        || async {
            let e = api.get("latency").await.ok()?;
            e.metadata
                .finalizers
                .unwrap_or_default()
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let reasons: Vec<_> = status.timeline.iter().map(|e| e.reason.as_str()).collect();
    for expected in [
        "TargetsSelected",
        "Injecting",
        "FaultsInjected",
        "DurationElapsed",
        "FaultsReverted",
        "ExperimentPassed",
    ] {
        assert!(
            reasons.contains(&expected),
            "{expected} missing from {reasons:?}"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn a_before_hypothesis_that_fails_injects_nothing() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.probes.set(
        ProbePhase::Before,
        HypothesisView::Violated {
            probe: "web".into(),
            message: "probe web: status 503, expected 200".into(),
            since: chrono::Utc::now(),
        },
    );
    h.create("shop", "unhealthy", latency_spec("30s")).await;
    let failed = h.wait_phase("shop", "unhealthy", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Failed));
    assert_eq!(status.reason.as_deref(), Some("SteadyStateNotMet"));
    assert!(status.message.unwrap().contains("status 503"));
    assert!(
        status
            .targets
            .iter()
            .all(|t| t.state == TargetState::Selected),
        "nothing injected"
    );
    assert!(status.injected_at.is_none());
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_during_violation_aborts_and_reverts_everything_with_the_latency_recorded() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 3).await;
    h.create("shop", "abortme", latency_spec("10m")).await;
    let running = h.wait_phase("shop", "abortme", Phase::Running).await;
    assert_eq!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );

    h.probes.set(
        ProbePhase::During,
        HypothesisView::Violated {
            probe: "web".into(),
            message: "probe web: status 503, expected 200".into(),
            since: chrono::Utc::now(),
        },
    );
    h.trigger.send(ObjectRef::from_obj(&running)).unwrap();
    let aborted = h.wait_phase("shop", "abortme", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.reason.as_deref(), Some("ProbeFailed"));
    assert!(status.abort_latency.is_some());
    assert!(
        status
            .targets
            .iter()
            .all(|t| t.state == TargetState::Reverted)
    );
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test]
async fn deleting_a_running_experiment_reverts_before_it_disappears() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "deleteme", latency_spec("10m")).await;
    h.wait_phase("shop", "deleteme", Phase::Running).await;
    h.experiments("shop")
        .delete("deleteme", &DeleteParams::default())
        .await
        .unwrap();
    let api = h.experiments("shop");
    wait_for(
        "the experiment to be gone",
        Duration::from_secs(15),
        || async { api.get_opt("deleteme").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test]
async fn selections_outside_the_safety_rules_are_refused_before_anything_happens() {
    let h = Harness::start().await;
    h.namespace("closed", false).await;
    h.pod("closed", "web-0", "web", "10.244.0.9").await;
    h.create("closed", "refused", latency_spec("30s")).await;
    let failed = h.wait_phase("closed", "refused", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("SelectionRefused"));
    assert!(
        status
            .message
            .unwrap()
            .contains("kubectl label namespace closed faultline.dev/chaos=enabled")
    );

    shop_with_web_pods(&h, 3).await;
    let mut over_cap = latency_spec("30s");
    over_cap["target"]["maxTargets"] = json!(2);
    h.create("shop", "overcap", over_cap).await;
    let failed = h.wait_phase("shop", "overcap", Phase::Failed).await;
    assert!(
        failed
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("over the cap of 2")
    );
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test]
async fn a_dry_run_lists_the_targets_and_injects_nothing() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    let mut spec = latency_spec("30s");
    spec["dryRun"] = json!(true);
    h.create("shop", "dry", spec).await;
    let done = h.wait_phase("shop", "dry", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::DryRun));
    let names: Vec<_> = status.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["web-0", "web-1"]);
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    h.stop().await;
}

#[tokio::test]
async fn pod_kill_by_delete_kills_each_target_once() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create(
        "shop",
        "kill",
        json!({
            "duration": "1s",
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "One"},
            "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0}}]
        }),
    )
    .await;
    let done = h.wait_phase("shop", "kill", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(status.target_count, 1);
    let killed = &status.targets[0].name;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "shop");
    assert!(
        pods.get_opt(killed).await.unwrap().is_none(),
        "{killed} was deleted"
    );
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1,
        "only one pod killed"
    );
    assert!(status.timeline.iter().any(|e| e.reason == "PodKilled"));
    h.stop().await;
}

#[tokio::test]
async fn the_abort_annotation_and_the_pause_switch_both_abort_running_experiments() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "annotated", latency_spec("10m")).await;
    h.wait_phase("shop", "annotated", Phase::Running).await;
    let patch = json!({"metadata": {"annotations": {"faultline.dev/abort": "game over"}}});
    h.experiments("shop")
        .patch("annotated", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let aborted = h.wait_phase("shop", "annotated", Phase::Aborted).await;
    assert_eq!(
        aborted.status.unwrap().reason.as_deref(),
        Some("AbortRequested")
    );

    h.create("shop", "paused", latency_spec("10m")).await;
    h.wait_phase("shop", "paused", Phase::Running).await;
    h.namespace("faultline-system", false).await;
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(h.client.clone(), "faultline-system");
    let pause: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "faultline-pause"}, "data": {"paused": "true"}}),
    )
    .unwrap();
    maps.create(&PostParams::default(), &pause).await.unwrap();
    let aborted = h.wait_phase("shop", "paused", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("ChaosPaused"));
    assert!(status.abort_latency.is_some());
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // While paused, a new experiment injects nothing.
    h.create("shop", "while-paused", latency_spec("10m")).await;
    let ended = h.wait_phase("shop", "while-paused", Phase::Aborted).await;
    assert!(ended.status.unwrap().injected_at.is_none());
    h.stop().await;
}

#[tokio::test]
async fn an_unreadable_experiment_is_reported_and_does_not_stall_the_others() {
    let h = Harness::start().await;
    // An older or hand-edited CRD that no longer checks the spec: the controller is the last line.
    let mut crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "ChaosExperiment")
        .unwrap();
    let schema = crd.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    let props = schema.properties.as_mut().unwrap();
    props.insert(
        "spec".into(),
        serde_json::from_value(
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        )
        .unwrap(),
    );
    h.server.install_crds(&[crd]).await.unwrap();
    shop_with_web_pods(&h, 1).await;

    let raw = kube::api::ApiResource::erase::<ChaosExperiment>(&());
    let dynamic: Api<kube::api::DynamicObject> =
        Api::namespaced_with(h.client.clone(), "shop", &raw);
    let broken: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": "broken"}, "spec": {"duration": "30s", "faults": "oops"}
    }))
    .unwrap();
    dynamic
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    h.create("shop", "healthy", latency_spec("10m")).await;

    h.wait_phase("shop", "healthy", Phase::Running).await;
    let status = wait_for(
        "the unreadable experiment's status",
        Duration::from_secs(15),
        || async {
            let object = dynamic.get("broken").await.ok()?;
            let status = object.data.get("status")?.clone();
            (status["reason"] == "InvalidSpec").then_some(status)
        },
    )
    .await;
    assert_eq!(status["verdict"], "Error");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("faultline validate"),
        "{status}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_controller_crash_mid_experiment_neither_kills_twice_nor_loses_a_revert() {
    let mut h = Harness::start().await;
    shop_with_web_pods(&h, 3).await;
    h.create("shop", "crashy", json!({
        "duration": "2s",
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "Fixed", "value": 2},
        "faults": [
            {"podKill": {"method": "delete", "gracePeriodSeconds": 0}},
            {"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}
        ]
    }))
    .await;
    let running = h.wait_phase("shop", "crashy", Phase::Running).await;
    let killed: Vec<String> = running
        .status
        .unwrap()
        .targets
        .iter()
        .filter(|t| t.fault == "podKill")
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(killed.len(), 2);

    h.crash_and_restart_controller().await;
    let done = h.wait_phase("shop", "crashy", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Passed));
    let kills = status
        .timeline
        .iter()
        .filter(|e| e.reason == "PodKilled")
        .count();
    assert_eq!(
        kills, 2,
        "each target killed exactly once across the restart"
    );
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "shop");
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert!(
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no revert lost"
    );
    h.stop().await;
}
