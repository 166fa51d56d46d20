//! Targets that leave an experiment while their network fault runs, through the API server
//! (the embedded one, or the real control plane with `FAULTLINE_TEST_CLUSTER=real`), with the
//! controller as it runs in production, a stand-in node agent and scripted probes:
//! - a target pod deleted mid-fault is `Gone`: its FaultInjection goes, an Event names it, and
//!   the experiment goes on with the others; when every target is gone the verdict says so,
//!   never "no agent reported ... is the faultline agent running";
//! - consent withdrawn mid-fault (the pod labelled protected, the namespace's opt-in removed):
//!   that target's fault is reverted at once, its record and an Event say why;
//! - a target's FaultInjection deleted by hand: that target is withdrawn, never "in".

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, assert_every_target, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::api::{
    ChaosExperiment, NAMESPACE_OPT_IN_LABEL, PROTECTED_LABEL, Phase, TargetState, Verdict,
};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    events::v1::Event,
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

/// How long the experiments here run: the departure, what it is seen to do and the Event about
/// it all happen while they run, so with room for a loaded real API server.
const WINDOW: &str = "15s";

/// Waits until target `pod` of experiment `name` reaches `state`; returns the experiment.
async fn wait_target(h: &Harness, name: &str, pod: &str, state: TargetState) -> ChaosExperiment {
    let api = h.experiments("shop");
    wait_for(
        &format!("target {pod} of {name} to be {state:?}"),
        Duration::from_secs(15),
        || async {
            let e = api.get_opt(name).await.ok().flatten()?;
            let found = e
                .status
                .as_ref()?
                .targets
                .iter()
                .any(|t| t.name == pod && t.state == state);
            found.then_some(e)
        },
    )
    .await
}

/// The Event with `reason` about `pod` (its `related` object), once it is there.
async fn event_about(h: &Harness, reason: &str, pod: &str) -> Event {
    h.wait_event("shop", reason, |e| {
        e.related.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
    })
    .await
}

/// Whether `message` says `pod` left by deletion: gone already, or (a real API server may show
/// it for a moment, even with a grace period of 0) on its way out.
fn deleted(message: &str, pod: &str) -> bool {
    message.contains(&format!("pod shop/{pod} was deleted"))
        || message.contains(&format!("pod shop/{pod} is being deleted"))
}

async fn injection_names(h: &Harness) -> Vec<String> {
    h.injections("shop")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| i.spec.target.name.clone())
        .collect()
}

async fn delete_pod(h: &Harness, name: &str) {
    Api::<Pod>::namespaced(h.client.clone(), "shop")
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_deleted_mid_fault_is_gone_and_the_experiment_goes_on_with_the_others() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "latency", latency_spec(WINDOW)).await;
    h.wait_phase("shop", "latency", Phase::Running).await;

    delete_pod(&h, "web-1").await;
    let running = wait_target(&h, "latency", "web-1", TargetState::Gone).await;
    let status = running.status.unwrap();
    assert_eq!(status.phase, Phase::Running, "{:?}", status.message);
    let gone = status.targets.iter().find(|t| t.name == "web-1").unwrap();
    let message = gone.message.clone().unwrap_or_default();
    assert!(deleted(&message, "web-1"), "{message}");
    let web0 = status.targets.iter().find(|t| t.name == "web-0").unwrap();
    assert_eq!(web0.state, TargetState::Injected);
    let event = event_about(&h, "TargetGone", "web-1").await;
    let note = event.note.unwrap_or_default();
    assert!(deleted(&note, "web-1"), "{note}");
    wait_for(
        "the gone target's FaultInjection to go",
        Duration::from_secs(10),
        || async { (injection_names(&h).await == ["web-0"]).then_some(()) },
    )
    .await;

    // The rest of the experiment is as usual.
    let done = h.wait_phase("shop", "latency", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Passed),
        "{:?}",
        status.message
    );
    let states: Vec<(String, TargetState)> = status
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.state))
        .collect();
    assert_eq!(
        states,
        [
            ("web-0".to_string(), TargetState::Reverted),
            ("web-1".to_string(), TargetState::Gone)
        ]
    );
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

/// Someone deletes one target's FaultInjection by hand (`kubectl delete finj`): its agent
/// reverts the fault, and the experiment must not go on saying that fault is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_item_deleted_by_hand_withdraws_its_target_and_the_experiment_goes_on() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "latency", latency_spec(WINDOW)).await;
    h.wait_phase("shop", "latency", Phase::Running).await;

    let injections = h.injections("shop");
    let web1 = injections
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|i| i.spec.target.name == "web-1")
        .expect("web-1's FaultInjection");
    injections
        .delete(
            &kube::ResourceExt::name_any(&web1),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    let running = wait_target(&h, "latency", "web-1", TargetState::Withdrawn).await;
    let status = running.status.unwrap();
    assert_eq!(status.phase, Phase::Running, "{:?}", status.message);
    let withdrawn = status.targets.iter().find(|t| t.name == "web-1").unwrap();
    let message = withdrawn.message.clone().unwrap_or_default();
    assert!(
        message.contains("was deleted by someone other than faultline"),
        "{message}"
    );
    let web0 = status.targets.iter().find(|t| t.name == "web-0").unwrap();
    assert_eq!(web0.state, TargetState::Injected);
    let event = event_about(&h, "FaultInjectionDeleted", "web-1").await;
    assert!(
        event
            .note
            .unwrap_or_default()
            .contains("its agent reverted the fault")
    );

    let done = h.wait_phase("shop", "latency", Phase::Succeeded).await;
    let states: Vec<(String, TargetState)> = done
        .status
        .unwrap()
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.state))
        .collect();
    assert_eq!(
        states,
        [
            ("web-0".to_string(), TargetState::Reverted),
            ("web-1".to_string(), TargetState::Withdrawn)
        ]
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_deleted_among_many_in_one_namespace_is_gone_too() {
    // Many targets in one namespace: the one that left is told from the 39 still there.
    let h = Harness::start().await;
    shop_with_web_pods(&h, 40).await;
    let mut spec = latency_spec(WINDOW);
    spec["target"]["maxTargets"] = json!(40);
    h.create("shop", "latency", spec).await;
    h.wait_phase("shop", "latency", Phase::Running).await;

    delete_pod(&h, "web-17").await;
    let running = wait_target(&h, "latency", "web-17", TargetState::Gone).await;
    let status = running.status.unwrap();
    assert_eq!(status.phase, Phase::Running, "{:?}", status.message);
    let gone = status.targets.iter().find(|t| t.name == "web-17").unwrap();
    let message = gone.message.clone().unwrap_or_default();
    assert!(deleted(&message, "web-17"), "{message}");
    let injected = status
        .targets
        .iter()
        .filter(|t| t.state == TargetState::Injected)
        .count();
    assert_eq!(injected, 39, "the others stay in");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn among_many_a_pod_relabelled_out_of_the_selector_stays_and_a_protected_one_leaves() {
    // Enough targets in one namespace that they are read with one list by the selector: a pod
    // that no longer matches it is not in that list, yet it is still there and keeps its
    // fault (selection chose it; only deletion or withdrawn consent ends its part).
    let h = Harness::start().await;
    shop_with_web_pods(&h, 24).await;
    let mut spec = latency_spec("10m");
    spec["target"]["maxTargets"] = json!(24);
    h.create("shop", "latency", spec).await;
    h.wait_phase("shop", "latency", Phase::Running).await;

    let pods = Api::<Pod>::namespaced(h.client.clone(), "shop");
    let relabel = json!({"metadata": {"labels": {"app": "moved-elsewhere"}}});
    pods.patch("web-3", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .unwrap();
    // Protected after the relabel: the read that sees it also sees the relabelled pod.
    let protect = json!({"metadata": {"labels": {PROTECTED_LABEL: "true"}}});
    pods.patch("web-5", &PatchParams::default(), &Patch::Merge(&protect))
        .await
        .unwrap();
    let running = wait_target(&h, "latency", "web-5", TargetState::Withdrawn).await;
    let status = running.status.unwrap();
    assert_eq!(status.phase, Phase::Running, "{:?}", status.message);
    let relabelled = status.targets.iter().find(|t| t.name == "web-3").unwrap();
    assert_eq!(
        relabelled.state,
        TargetState::Injected,
        "{:?}",
        relabelled.message
    );
    let injected = status
        .targets
        .iter()
        .filter(|t| t.state == TargetState::Injected)
        .count();
    assert_eq!(injected, 23, "only the protected pod left");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_deleted_ends_the_experiment_saying_the_targets_disappeared() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "latency", latency_spec("10m")).await;
    h.wait_phase("shop", "latency", Phase::Running).await;

    delete_pod(&h, "web-0").await;
    delete_pod(&h, "web-1").await;
    let done = h.wait_phase("shop", "latency", Phase::Aborted).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.reason.as_deref(), Some("TargetsLeft"));
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("every target left the experiment before it was over"),
        "{message}"
    );
    assert!(deleted(&message, "web-0"), "{message}");
    assert!(deleted(&message, "web-1"), "{message}");
    assert!(!message.contains("agent running"), "{message}");
    assert_every_target(&status, TargetState::Gone);
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_withdrawn_mid_fault_reverts_that_target_at_once_and_says_why() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "latency", latency_spec("10m")).await;
    h.wait_phase("shop", "latency", Phase::Running).await;
    assert_eq!(injection_names(&h).await.len(), 2);

    // The pod is labelled protected: its fault goes, the other stays.
    let protect = json!({"metadata": {"labels": {PROTECTED_LABEL: "true"}}});
    Api::<Pod>::namespaced(h.client.clone(), "shop")
        .patch("web-0", &PatchParams::default(), &Patch::Merge(&protect))
        .await
        .unwrap();
    let running = wait_target(&h, "latency", "web-0", TargetState::Withdrawn).await;
    let status = running.status.unwrap();
    assert_eq!(status.phase, Phase::Running);
    let record = status.targets.iter().find(|t| t.name == "web-0").unwrap();
    assert!(
        record
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("the pod was labelled faultline.dev/protected=true"),
        "{:?}",
        record.message
    );
    wait_for(
        "the protected pod's FaultInjection to go",
        Duration::from_secs(10),
        || async { (injection_names(&h).await == ["web-1"]).then_some(()) },
    )
    .await;
    let event = event_about(&h, "ConsentWithdrawn", "web-0").await;
    assert!(
        event
            .note
            .unwrap_or_default()
            .contains("faultline.dev/protected=true")
    );

    // The namespace's opt-in goes: the last target leaves, and the experiment ends saying so.
    let unlabel = json!({"metadata": {"labels": {NAMESPACE_OPT_IN_LABEL: null}}});
    Api::<Namespace>::all(h.client.clone())
        .patch("shop", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    let done = h.wait_phase("shop", "latency", Phase::Aborted).await;
    let status = done.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("TargetsLeft"));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains(
            "pod shop/web-1: namespace shop no longer carries faultline.dev/chaos=enabled"
        ),
        "{message}"
    );
    let event = event_about(&h, "ConsentWithdrawn", "web-1").await;
    assert!(event.note.unwrap_or_default().contains("no longer carries"));
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeating_pod_kill_stops_killing_where_consent_was_withdrawn() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 4).await;
    h.create(
        "shop",
        "kills",
        json!({
            "duration": WINDOW,
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "One"},
            "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0, "interval": "1s"}}],
        }),
    )
    .await;
    h.wait_phase("shop", "kills", Phase::Running).await;
    let unlabel = json!({"metadata": {"labels": {NAMESPACE_OPT_IN_LABEL: null}}});
    Api::<Namespace>::all(h.client.clone())
        .patch("shop", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    let withdrawn_at = chrono::Utc::now();
    let skipped = event_reason_after(&h, "PodKillRoundSkipped", withdrawn_at).await;
    assert!(
        skipped.contains("this round kills nothing") && skipped.contains("shop"),
        "{skipped}"
    );
    let done = h.wait_phase("shop", "kills", Phase::Succeeded).await;
    let status = done.status.unwrap();
    // No round after the opt-in went killed a pod. A round already under way may finish its
    // kill (its namespace read came first; on a loaded API server, its few requests can take
    // over a second): one kill, where ignoring the withdrawal would kill in every round.
    let late_kills = status
        .timeline
        .iter()
        .filter(|e| e.reason == "PodKilled" && e.time > withdrawn_at)
        .count();
    assert!(
        late_kills <= 1,
        "{late_kills} kills after the opt-in went: {:?}",
        status.timeline
    );
    h.stop().await;
}

/// The note of the first Event with `reason` published after `after`.
async fn event_reason_after(
    h: &Harness,
    reason: &str,
    after: chrono::DateTime<chrono::Utc>,
) -> String {
    h.wait_event("shop", reason, |e| {
        e.event_time
            .as_ref()
            .is_some_and(|t| t.0.as_millisecond() >= after.timestamp_millis() - 1000)
    })
    .await
    .note
    .unwrap_or_default()
}
