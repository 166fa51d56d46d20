//! An abort whose agents confirm the revert at once (revert receipts): status goes from Running
//! to Aborted in one write, the verdict's, carrying the abort's start, cause and timeline
//! entry. Written as soon as the abort began, the Aborting status met the receipts' writes of
//! the same object. Against the embedded API server, or the real control plane with
//! `FAULTLINE_TEST_CLUSTER=real`; the receipt is written here, as the agent on `node-1` writes
//! it (the stand-in agent writes none): in the experiment's status, or beside the revert
//! signal.

mod common;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use common::{
    harness::{Harness, assert_every_target, latency_spec, shop_with_web_pods},
    lost_responses::LostResponses,
    wait_for,
};
use faultline::{
    api::{AGENT_FIELD_MANAGER, ChaosExperiment, Phase, RevertReceipt, TargetState, Verdict},
    controller::{REVERTING_CONFIGMAP, signal_receipts},
    lifecycle::ABORTING_SHOWN_AFTER,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

/// A phase the watch saw, and when.
type Seen = (Phase, DateTime<Utc>);

/// Waits until the controller has raised the revert signal for `experiment`; the signal's
/// ConfigMaps (the controller's namespace) and the experiment's UID.
async fn revert_signal_raised(
    h: &Harness,
    experiment: &ChaosExperiment,
) -> (Api<ConfigMap>, String) {
    let maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.controller_namespace);
    let uid = experiment.uid().unwrap();
    wait_for(
        "the revert signal",
        std::time::Duration::from_secs(15),
        || async {
            let map = maps.get_opt(REVERTING_CONFIGMAP).await.ok()??;
            map.data?.contains_key(&uid).then_some(())
        },
    )
    .await;
    (maps, uid)
}

/// Breaks the hypothesis of `running` (an experiment of `shop` with `injections` faults, all
/// on node-1), waits for the revert signal, and leaves node-1's revert receipt beside it, as
/// that node's agent would once every fault is out: the receipt, and the signal's ConfigMaps
/// and the experiment's UID.
async fn aborted_with_a_receipt(
    h: &Harness,
    running: &ChaosExperiment,
    injections: i32,
) -> (RevertReceipt, Api<ConfigMap>, String) {
    h.break_hypothesis(running);
    let (maps, uid) = revert_signal_raised(h, running).await;
    let receipt = RevertReceipt {
        node: "node-1".into(),
        reverted_at: Utc::now(),
        injections,
        failed: None,
    };
    signal_receipts::write(
        &h.client,
        &h.controller_namespace,
        &uid,
        &format!("shop/{}", running.name_any()),
        std::slice::from_ref(&receipt),
    )
    .await
    .unwrap();
    (receipt, maps, uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_in_before_the_aborting_status_is_due_end_the_abort_in_one_write() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "quick", latency_spec("10m")).await;
    let running = h.wait_phase("shop", "quick", Phase::Running).await;

    // Every version of the experiment's status, as a watch sees it, and when.
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let watching = {
        let seen = seen.clone();
        let config = watcher::Config::default().fields("metadata.name=quick");
        let events = watcher(h.experiments("shop"), config).applied_objects();
        tokio::spawn(events.for_each(move |event| {
            if let Ok(experiment) = event {
                let phase = experiment.status.map(|s| s.phase).unwrap_or_default();
                seen.lock().unwrap().push((phase, Utc::now()));
            }
            async {}
        }))
    };

    h.break_hypothesis(&running);
    let api = h.experiments("shop");
    // The agents are told (the revert signal) before anything is written to status.
    revert_signal_raised(&h, &running).await;
    // The agent of node-1 has taken both faults out.
    let receipt = json!({
        "apiVersion": "faultline.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": "quick", "namespace": "shop"},
        "status": {"revertReceipts": [
            {"node": "node-1", "revertedAt": Utc::now(), "injections": 2}
        ]},
    });
    api.patch_status(
        "quick",
        &PatchParams::apply(&format!("{AGENT_FIELD_MANAGER}-node-1")).force(),
        &Patch::Apply(receipt),
    )
    .await
    .unwrap();

    let done = h.wait_phase("shop", "quick", Phase::Aborted).await;
    watching.abort();
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.reason.as_deref(), Some("ProbeFailed"));
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.ends_with("every fault is confirmed reverted"),
        "{message}"
    );
    let started = status.abort_started_at.expect("abortStartedAt");
    assert!(status.abort_latency.is_some());
    assert!(
        status
            .abort_reason
            .as_deref()
            .unwrap_or_default()
            .contains("status 503"),
        "{:?}",
        status.abort_reason
    );
    assert_every_target(&status, TargetState::Reverted);
    let aborting_entries = status
        .timeline
        .iter()
        .filter(|e| e.message.starts_with("aborting: "))
        .count();
    assert_eq!(aborting_entries, 1, "{:?}", status.timeline);

    // An Aborting status may appear only once the receipts were late (here they were not,
    // unless this machine stalled for seconds): never as the abort began.
    let due = started + chrono::TimeDelta::from_std(ABORTING_SHOWN_AFTER).unwrap();
    let seen = seen.lock().unwrap().clone();
    let early: Vec<_> = seen
        .iter()
        .filter(|(phase, at)| *phase == Phase::Aborting && *at < due)
        .collect();
    assert!(
        early.is_empty(),
        "Aborting written before the receipts were due: {seen:?}"
    );
    let aborting_seen = seen.iter().any(|(phase, _)| *phase == Phase::Aborting);
    println!(
        "status versions seen: {:?} (Aborting {})",
        seen.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        if aborting_seen {
            "written: the receipt came late"
        } else {
            "never written: the verdict carried it"
        }
    );
    h.stop().await;
}

/// The receipt as the agents leave it first: a key of the signal's ConfigMap, a write of a few
/// hundred bytes where the experiment's status is a write of the whole object. The controller
/// reconciles on it at once, ends the abort, and its verdict write takes the receipt into the
/// experiment's status, where it stays after the sweep has removed the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_left_beside_the_revert_signal_ends_the_abort_and_lands_in_status() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "beside", latency_spec("10m")).await;
    let running = h.wait_phase("shop", "beside", Phase::Running).await;
    let (receipt, maps, uid) = aborted_with_a_receipt(&h, &running, 2).await;

    let done = h.wait_phase("shop", "beside", Phase::Aborted).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    let message = status.message.clone().unwrap_or_default();
    assert!(
        message.ends_with("every fault is confirmed reverted"),
        "{message}"
    );
    assert_eq!(status.revert_receipts, vec![receipt.clone()]);

    // Swept with the signal once nothing needs them (the harness sweeps every second), and
    // the status keeps the receipt through the controller's writes after that.
    wait_for(
        "the signal and the receipt swept",
        std::time::Duration::from_secs(30),
        || async {
            let map = maps.get_opt(REVERTING_CONFIGMAP).await.ok()??;
            let data = map.data.unwrap_or_default();
            (!data.keys().any(|k| k.starts_with(&uid))).then_some(())
        },
    )
    .await;
    let later = h.experiments("shop").get("beside").await.unwrap();
    assert_eq!(later.status.unwrap().revert_receipts, vec![receipt]);
    h.stop().await;
}

/// An experiment that ended deletes its FaultInjections as housekeeping, and the agents let go
/// of them one after another: their going wakes the experiment for the last one only (it then
/// forgets its revert), not twice for each (a 500-target abort was reconciled 289 times in
/// the seconds after its verdict, each time for nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_experiments_injections_going_do_not_wake_it_once_each() {
    const PODS: usize = 60;
    let h = Harness::start_with_production_timeout().await;
    shop_with_web_pods(&h, PODS).await;
    h.create("shop", "tidy", latency_spec("10m")).await;
    let running = h.wait_phase("shop", "tidy", Phase::Running).await;
    aborted_with_a_receipt(&h, &running, PODS as i32).await;
    h.wait_phase("shop", "tidy", Phase::Aborted).await;
    let before = h.metrics.reconciliations.get();
    let left_at_the_verdict = h.injection_count("shop").await;
    h.wait_no_injections("shop", std::time::Duration::from_secs(30))
        .await;
    // The last events' reconciles, if any were coming.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let reconciled = h.metrics.reconciliations.get() - before;
    eprintln!(
        "{left_at_the_verdict} FaultInjections left when the verdict was seen; {reconciled} reconciles while they went"
    );
    assert!(
        left_at_the_verdict >= PODS / 2,
        "the test needs the injections to go after the verdict: only {left_at_the_verdict} were left"
    );
    assert!(
        reconciled <= 3,
        "{reconciled} reconciles of a finished experiment while its {left_at_the_verdict} FaultInjections went"
    );
    h.stop().await;
}

/// A finished experiment whose request to delete its FaultInjections failed asks again on its
/// own: nothing about the injections changes, so no event of theirs would wake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_experiments_failed_deletion_of_its_injections_is_asked_again() {
    // Twice: the reconcile that follows the verdict (its own finalizer released) asks again
    // at once, and that is refused too.
    let refused = LostResponses::first(&["DELETE", "/faultinjections?"], 2);
    let h = Harness::start_via(|config| refused.client_of(config)).await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "refused", latency_spec("10m")).await;
    let running = h.wait_phase("shop", "refused", Phase::Running).await;
    aborted_with_a_receipt(&h, &running, 2).await;
    h.wait_phase("shop", "refused", Phase::Aborted).await;
    wait_for(
        "the deletions refused",
        std::time::Duration::from_secs(10),
        || async { (refused.counts().0 == 2).then_some(()) },
    )
    .await;
    // Deleted all the same.
    h.wait_no_injections("shop", std::time::Duration::from_secs(40))
        .await;
    h.stop().await;
}
