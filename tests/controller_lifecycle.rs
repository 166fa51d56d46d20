//! The controller as it runs in production (kube-runtime Controller, real kube client) against
//! the embedded API server, with a stand-in node agent and scripted probes.

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, assert_every_target, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::{
    api::{
        ChaosExperiment, ConditionStatus, EXPERIMENT_FINALIZER, Phase, ProbePhase, TargetState,
        Verdict, all_crds,
    },
    lifecycle::HypothesisView,
};
use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::reflector::ObjectRef,
};
use serde_json::json;

/// The web probe failing now, as the scripted probes report it.
fn web_failing() -> HypothesisView {
    HypothesisView::Violated {
        probe: "web".into(),
        message: "probe web: status 503, expected 200".into(),
        since: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn a_network_fault_goes_through_its_whole_lifecycle_and_leaves_nothing() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    // 3 s: long enough that the checks made while it runs (a GET, a list) finish before the
    // revert, also on a loaded real API server.
    h.create("shop", "latency", latency_spec("3s")).await;

    let running = h.wait_phase("shop", "latency", Phase::Running).await;
    let status = running.status.unwrap();
    assert_eq!(status.target_count, 2);
    assert_every_target(&status, TargetState::Injected);
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
        // The kernel's deadline: the experiment's 3 s and a few seconds of grace for a late
        // controller, not the half minute it once was.
        let injected_at = status.injected_at.unwrap();
        assert!(injection.spec.expires_at > injected_at + chrono::TimeDelta::seconds(3));
        assert!(
            injection.spec.expires_at <= injected_at + chrono::TimeDelta::seconds(8),
            "expiresAt {} for a 3 s fault injected at {injected_at}",
            injection.spec.expires_at
        );
        let owner = &injection.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, running.metadata.uid.clone().unwrap());
        // Each record is in from the time its agent reported, in the agent's words.
        let record = status
            .targets
            .iter()
            .find(|t| t.injection.as_deref() == Some(injection.name_any().as_str()))
            .unwrap();
        let applied = injection.status.as_ref().unwrap().applied_at;
        assert!(
            applied.is_some() && record.injected_at == applied,
            "{record:?}"
        );
        assert_eq!(record.message.as_deref(), Some("stand-in"));
    }
    assert_eq!(status.faults_injected, 2);

    let done = h.wait_phase("shop", "latency", Phase::Succeeded).await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.verdict, Some(Verdict::Passed));
    assert_every_target(&status, TargetState::Reverted);
    assert!(status.reverted_at.is_some() && status.recovery_time.is_some());
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.reason == "Passed")
    );
    assert_eq!(h.injection_count("shop").await, 0);
    // The report's Targets table shows when each fault went in.
    let html = faultline::report::html::render(&done, chrono::Utc::now());
    let targets = html.split("<table class=\"targets\">").nth(1).unwrap();
    let targets = targets.split("</table>").next().unwrap();
    for record in &status.targets {
        let injected = record.injected_at.unwrap().format("%H:%M:%S%.3f");
        assert!(
            targets.contains(&format!("<td>{injected}</td>")),
            "{targets}"
        );
    }
    // The verdict is written before the finalizer is released.
    let api = h.experiments("shop");
    wait_for(
        "the finalizer to be released",
        Duration::from_secs(30),
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
    h.probes.set(ProbePhase::Before, web_failing());
    h.create("shop", "unhealthy", latency_spec("30s")).await;
    let failed = h.wait_phase("shop", "unhealthy", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Failed));
    assert_eq!(status.reason.as_deref(), Some("SteadyStateNotMet"));
    assert!(status.message.as_deref().unwrap().contains("status 503"));
    assert_every_target(&status, TargetState::Selected);
    assert!(status.injected_at.is_none());
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test]
async fn a_during_violation_aborts_and_reverts_everything_with_the_latency_recorded() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 3).await;
    h.create("shop", "abortme", latency_spec("10m")).await;
    let running = h.wait_phase("shop", "abortme", Phase::Running).await;
    assert_eq!(
        h.injection_count("shop").await,
        3,
        "{:?}",
        running.status.as_ref().map(|s| &s.timeline)
    );

    h.probes.set(ProbePhase::During, web_failing());
    h.trigger.send(ObjectRef::from_obj(&running)).unwrap();
    let aborted = h.wait_phase("shop", "abortme", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.reason.as_deref(), Some("ProbeFailed"));
    assert!(status.abort_latency.is_some());
    assert_every_target(&status, TargetState::Reverted);
    // The receipts came in before the Aborting status was due, so the verdict's write
    // carried it: the abort's start, cause and timeline entry are there all the same, and
    // its Event went out once, with the reverting label.
    let started = status.abort_started_at.expect("abortStartedAt");
    assert_eq!(
        status.abort_reason.as_deref(),
        Some("probe web: status 503, expected 200")
    );
    let announced: Vec<_> = status
        .timeline
        .iter()
        .filter(|e| e.message.starts_with("aborting: "))
        .collect();
    assert_eq!(announced.len(), 1, "{:?}", status.timeline);
    assert_eq!(announced[0].reason, "ProbeFailed");
    assert_eq!(announced[0].time, started);
    let events = Api::<Event>::namespaced(h.client.clone(), "shop")
        .list(&ListParams::default())
        .await
        .unwrap();
    let aborting = events
        .items
        .iter()
        .filter(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.starts_with("aborting: probe web"))
        })
        .count();
    assert_eq!(aborting, 1, "one Event says the experiment is aborting");
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

/// The hypothesis breaks as the faults go in (here: before the first create): the creates not
/// yet begun are not made, their targets say why, and the experiment aborts with nothing to
/// take out.
#[tokio::test]
async fn a_hypothesis_that_breaks_while_faults_go_in_stops_the_creates_not_yet_begun() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 3).await;
    h.probes.set(ProbePhase::During, web_failing());
    h.create("shop", "stopped", latency_spec("10m")).await;
    let aborted = h.wait_phase("shop", "stopped", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("ProbeFailed"));
    assert_eq!(status.faults_injected, 0);
    assert_eq!(status.targets.len(), 3);
    for target in &status.targets {
        assert_eq!(target.state, TargetState::Skipped, "{target:?}");
        assert!(
            target
                .message
                .as_deref()
                .is_some_and(|m| m.contains("the hypothesis broke while the faults were going in")),
            "{target:?}"
        );
    }
    let reasons: Vec<&str> = status.timeline.iter().map(|e| e.reason.as_str()).collect();
    assert!(reasons.contains(&"InjectionStopped"), "{reasons:?}");
    assert!(
        !reasons.contains(&"FaultInjectionCreated"),
        "a FaultInjection was created: {reasons:?}"
    );
    assert_eq!(h.injection_count("shop").await, 0);
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
    assert_eq!(h.injection_count("shop").await, 0);
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
    assert_eq!(h.injection_count("shop").await, 0);

    // kube-system is never a target, opted in or not.
    let mut system = latency_spec("30s");
    system["target"]["namespaces"] = json!(["kube-system"]);
    h.create("shop", "system", system).await;
    let failed = h.wait_phase("shop", "system", Phase::Failed).await;
    assert!(
        failed
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("kube-system is never a chaos target")
    );

    // A protected pod is skipped silently by selection: only the unprotected ones are targets.
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "shop");
    let protect = json!({"metadata": {"labels": {"faultline.dev/protected": "true"}}});
    pods.patch("web-0", &PatchParams::default(), &Patch::Merge(protect))
        .await
        .unwrap();
    let mut dry = latency_spec("30s");
    dry["dryRun"] = json!(true);
    common::cluster::node_with_agent(&h.client, "node-1").await;
    h.create("shop", "protected", dry).await;
    let done = h.wait_phase("shop", "protected", Phase::Succeeded).await;
    let names: Vec<String> = done
        .status
        .unwrap()
        .targets
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);
    h.stop().await;
}

/// A selection whose target records could not fit the experiment's status (etcd stores an
/// object of at most 1.5 MiB; a status write over it fails however often it is retried) is
/// refused as a whole, before anything is injected, with what to do about it. 650 pods with
/// names of 250 characters, two faults each: 1,300 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_too_large_to_record_is_refused_before_anything_is_injected() {
    use futures::StreamExt;
    let h = Harness::start().await;
    h.namespace("shop", true).await;
    let pods = 650;
    futures::stream::iter(0..pods)
        .for_each_concurrent(16, |i| {
            let h = &h;
            async move {
                let name = format!("web-{i:04}-{}", "x".repeat(240));
                let ip = format!("10.244.{}.{}", i / 250, i % 250 + 1);
                h.pod("shop", &name, "web", &ip).await;
            }
        })
        .await;
    let mut spec = latency_spec("30s");
    spec["faults"]
        .as_array_mut()
        .unwrap()
        .push(json!({"podKill": {"method": "delete", "gracePeriodSeconds": 0}}));
    h.create("shop", "everything", spec).await;

    let failed = h.wait_phase("shop", "everything", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Failed));
    assert_eq!(status.reason.as_deref(), Some("SelectionRefused"));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("too large to record: its 1300 target records")
            && message.contains("narrow spec.target, set spec.target.maxTargets, or split"),
        "{message}"
    );
    assert!(status.targets.is_empty(), "{:?}", status.targets.len());
    assert_eq!(h.injection_count("shop").await, 0);
    let left: Api<Pod> = Api::namespaced(h.client.clone(), "shop");
    assert_eq!(
        left.list(&ListParams::default()).await.unwrap().items.len(),
        pods
    );
    h.stop().await;
}

#[tokio::test]
async fn a_dry_run_lists_the_targets_and_injects_nothing() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    // A dry run of a network fault checks that an agent has reported on the target's node.
    common::cluster::node_with_agent(&h.client, "node-1").await;
    let mut spec = latency_spec("30s");
    spec["dryRun"] = json!(true);
    h.create("shop", "dry", spec).await;
    let done = h.wait_phase("shop", "dry", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::DryRun));
    let names: Vec<_> = status.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["web-0", "web-1"]);
    let plan: Vec<&str> = status
        .timeline
        .iter()
        .filter(|e| e.reason == "WouldInject")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert!(
        plan[0].starts_with(
            "networkLatency on pod shop/web-0 (node node-1) through FaultInjection dry-0-"
        ),
        "{plan:?}"
    );
    assert_eq!(h.injection_count("shop").await, 0);
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
    let status = aborted.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("AbortRequested"));
    // The reason given is in status, through to the verdict's message.
    assert_eq!(
        status.abort_reason.as_deref(),
        Some("aborted on request: game over")
    );
    assert_eq!(
        status.message.as_deref(),
        Some("aborted on request: game over; every fault is confirmed reverted")
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
    assert_eq!(h.injection_count("shop").await, 0);

    h.stop().await;
}

// Another selector and 900 ms instead of 100 ms, while the 100 ms fault is in on the old pods:
// the API server refuses the edit (the experiment's CEL transition rule), so status never
// claims what is not happening. Metadata (the abort annotation) still changes.
#[tokio::test]
async fn the_api_server_refuses_an_edit_of_a_started_experiments_spec() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "fixed", latency_spec("10m")).await;
    h.wait_phase("shop", "fixed", Phase::Running).await;
    let api = h.experiments("shop");
    let edit = json!({"spec": {
        "target": {"labelSelector": {"matchLabels": {"app": "other"}}},
        "faults": [{"networkLatency": {"latency": "900ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
    }});
    let refused = common::api_err(
        api.patch("fixed", &PatchParams::default(), &Patch::Merge(&edit))
            .await,
    );
    assert_eq!(refused.code, 422, "{refused:?}");
    assert!(
        refused
            .message
            .contains("spec cannot change once the experiment has started"),
        "{}",
        refused.message
    );
    let unchanged = api.get("fixed").await.unwrap();
    assert_eq!(
        unchanged.spec.faults[0]
            .network_latency
            .as_ref()
            .unwrap()
            .latency
            .as_str(),
        "100ms"
    );
    let annotate = json!({"metadata": {"annotations": {"faultline.dev/abort": "edit refused"}}});
    api.patch("fixed", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    let aborted = h.wait_phase("shop", "fixed", Phase::Aborted).await;
    // Finished, it stays as it ran: the record of what was done.
    let refused = common::api_err(
        api.patch("fixed", &PatchParams::default(), &Patch::Merge(&edit))
            .await,
    );
    assert_eq!(refused.code, 422);
    assert_eq!(aborted.spec, api.get("fixed").await.unwrap().spec);
    h.stop().await;
}

/// The status of experiment `name` once it is held by a pause (its `Paused` condition).
async fn held_by_pause(
    api: &Api<ChaosExperiment>,
    name: &str,
) -> faultline::api::ChaosExperimentStatus {
    common::wait_for("the hold", Duration::from_secs(30), || async {
        let status = api.get(name).await.ok()?.status?;
        faultline::controller::pause_switch::held(&status).then_some(status)
    })
    .await
}

#[tokio::test]
async fn a_pause_holds_a_new_experiment_in_pending_until_resume() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.namespace("faultline-system", false).await;
    let switch = |paused: bool| common::cluster::set_paused(&h.client, paused);
    switch(true).await;
    h.create("shop", "while-paused", latency_spec("10m")).await;
    let api = h.experiments("shop");
    let held = held_by_pause(&api, "while-paused").await;
    assert_eq!(held.phase, Phase::Pending);
    assert_eq!(held.reason.as_deref(), Some("ChaosPaused"));
    let condition = held
        .conditions
        .iter()
        .find(|c| c.type_ == "Paused")
        .unwrap();
    assert!(
        condition.message.contains("starts on `faultline resume`"),
        "{}",
        condition.message
    );
    assert!(held.targets.is_empty() && held.verdict.is_none());
    // It stays held: nothing is selected, nothing injected, no verdict.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = api.get("while-paused").await.unwrap().status.unwrap();
    assert_eq!((still.phase, still.verdict), (Phase::Pending, None));
    assert_eq!(h.injection_count("shop").await, 0);

    // Resumed, it starts: targets chosen then, faults in.
    switch(false).await;
    let running = h.wait_phase("shop", "while-paused", Phase::Running).await;
    let status = running.status.unwrap();
    assert_eq!(status.target_count, 2);
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Paused")
        .unwrap();
    assert_eq!(
        (condition.status, condition.reason.as_str()),
        (ConditionStatus::False, "ChaosResumed")
    );
    let reasons: Vec<&str> = status.timeline.iter().map(|e| e.reason.as_str()).collect();
    let held_at = reasons.iter().position(|r| *r == "ExperimentHeld").unwrap();
    let resumed_at = reasons
        .iter()
        .position(|r| *r == "ExperimentResumed")
        .unwrap();
    let selected_at = reasons
        .iter()
        .position(|r| *r == "TargetsSelected")
        .unwrap();
    assert!(
        held_at < resumed_at && resumed_at < selected_at,
        "{reasons:?}"
    );
    h.stop().await;
}

/// A pause the controller's watch has not delivered yet: the experiment created after it is
/// held all the same (the cache's "not paused" is confirmed with the API server before the
/// first fault goes in, and again before a held experiment starts), and starts once chaos
/// resumes and the cache has caught up.
#[tokio::test]
async fn a_pause_the_controllers_cache_has_not_seen_holds_a_new_experiment() {
    let held = common::held_responses::HeldResponses::new(&[
        "/configmaps",
        "watch=",
        faultline::controller::PAUSE_CONFIGMAP,
    ]);
    let h = Harness::start_holding(&held).await;
    shop_with_web_pods(&h, 2).await;
    let switch = |paused: bool| common::cluster::set_paused(&h.client, paused);
    switch(true).await;
    h.create("shop", "paused-unseen", latency_spec("10m")).await;
    let api = h.experiments("shop");
    let held_status = held_by_pause(&api, "paused-unseen").await;
    assert_eq!(held_status.phase, Phase::Pending);
    assert_eq!(h.injection_count("shop").await, 0, "injected while paused");
    // It stays held, although the cache still says chaos runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = api.get("paused-unseen").await.unwrap().status.unwrap();
    assert_eq!((still.phase, still.verdict), (Phase::Pending, None));
    assert_eq!(h.injection_count("shop").await, 0, "injected while paused");

    switch(false).await;
    held.release();
    let running = h.wait_phase("shop", "paused-unseen", Phase::Running).await;
    assert_eq!(running.status.unwrap().target_count, 2);
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
    h.cluster.install_crds(&[crd]).await;
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
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(
            "cannot be read, so nothing new is injected: spec.faults: invalid type: string \"oops\", expected a sequence"
        ) && message.contains("faultline validate"),
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
    assert_eq!(h.injection_count("shop").await, 0, "no revert lost");
    h.stop().await;
}

#[tokio::test]
async fn a_fault_the_node_cannot_do_fails_preflight_and_names_the_node() {
    let h = Harness::start().await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(h.client.clone());
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
        "metadata": {"name": "node-1", "annotations": {"faultline.dev/capabilities": "nftables,tbf"}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    shop_with_web_pods(&h, 1).await;
    h.create("shop", "slow", latency_spec("30s")).await;
    let failed = h.wait_phase("shop", "slow", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("PreflightFailed"));
    let message = status.message.unwrap();
    assert!(
        message.contains("node node-1")
            && message.contains("networkLatency")
            && message.contains("netem or nfqueue"),
        "{message}"
    );
    assert_eq!(h.injection_count("shop").await, 0);

    // A partition is within what the node offers.
    h.create(
        "shop",
        "cut",
        json!({
            "duration": "1s",
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
            "faults": [{"networkPartition": {"peers": {"cidrs": ["10.0.0.0/8"]}}}]
        }),
    )
    .await;
    let done = h.wait_phase("shop", "cut", Phase::Succeeded).await;
    assert_eq!(done.status.unwrap().verdict, Some(Verdict::Passed));
    h.stop().await;
}

// A network fault on a pod that runs on no node: no agent could apply it (the FaultInjection
// would be refused: it needs a node). Preflight says so, naming the pod, and nothing is made.
#[tokio::test]
async fn a_network_fault_on_a_pod_with_no_node_fails_preflight_with_the_real_cause() {
    let h = Harness::start().await;
    h.namespace("shop", true).await;
    // Unschedulable on any cluster: it waits for a node that does not exist.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "lonely", "labels": {"app": "lonely"}},
        "spec": {"nodeSelector": {"faultline.dev/no-such-node": "true"},
                 "containers": [{"name": "app", "image": "demo"}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(h.client.clone(), "shop")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    h.create(
        "shop",
        "nowhere",
        json!({
            "duration": "30s",
            "target": {"labelSelector": {"matchLabels": {"app": "lonely"}},
                       "includeNotReady": true, "fieldSelectors": {"status.phase": "Pending"}},
            "faults": [{"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
        }),
    )
    .await;
    let failed = h.wait_phase("shop", "nowhere", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("PreflightFailed"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "preflight failed, nothing was injected: pod shop/lonely runs on no node (it is not scheduled), so no faultline agent can apply networkLatency to it"
        )
    );
    assert!(status.injected_at.is_none());
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test]
async fn peers_chosen_by_selector_are_kept_current_while_the_fault_runs() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 1).await;
    h.pod("shop", "db-0", "db", "10.244.9.1").await;
    h.create("shop", "split", json!({
        "duration": "10m",
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
        "faults": [{"networkPartition": {"peers": {"selector": {"matchLabels": {"app": "db"}}}}}]
    }))
    .await;
    h.wait_phase("shop", "split", Phase::Running).await;
    let injections = h.injections("shop");
    let first = injections.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(first[0].spec.fault.peer_cidrs, ["10.244.9.1/32"]);

    h.pod("shop", "db-1", "db", "10.244.9.2").await;
    wait_for(
        "the new peer to reach the injection",
        Duration::from_secs(10),
        || async {
            let list = injections.list(&ListParams::default()).await.ok()?.items;
            (list[0].spec.fault.peer_cidrs == ["10.244.9.1/32", "10.244.9.2/32"]).then_some(())
        },
    )
    .await;
    // The injection is updated first, the experiment's timeline right after.
    let experiments = h.experiments("shop");
    wait_for(
        "PeersUpdated in the timeline",
        Duration::from_secs(10),
        || async {
            let status = experiments.get("split").await.ok()?.status?;
            status
                .timeline
                .iter()
                .any(|e| e.reason == "PeersUpdated")
                .then_some(())
        },
    )
    .await;
    h.stop().await;
}
