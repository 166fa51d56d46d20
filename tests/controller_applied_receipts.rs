//! The controller counts faults in from an agent's applied receipt (one key per experiment and
//! node beside the revert signal; see `controller::applied_receipts`) before the injections'
//! own statuses say so, and only for the objects the receipt names. Played by hand here, with
//! no agent: the test writes the receipt an agent would. Through the API server (embedded, or
//! the real control plane with `FAULTLINE_TEST_CLUSTER=real`).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{
    harness::{Harness, assert_every_target, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::api::{FaultInjection, Phase, TargetState};
use faultline::controller::REVERTING_CONFIGMAP;
use faultline::controller::applied_receipts::{AppliedEntry, AppliedReceipt, key};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// An experiment `latency` over `targets` pods with no agent: its FaultInjections as created,
/// its UID, and the revert signal's ConfigMap (which the controller makes at its start, as the
/// chart does in a cluster), where the test writes the receipts an agent would.
async fn unapplied_experiment(
    h: &Harness,
    targets: usize,
) -> (Vec<FaultInjection>, String, Api<ConfigMap>) {
    shop_with_web_pods(h, targets).await;
    h.create("shop", "latency", latency_spec("10m")).await;
    let injections = wait_for("every FaultInjection", Duration::from_secs(20), || async {
        let items = h
            .injections("shop")
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        (items.len() == targets).then_some(items)
    })
    .await;
    let experiment = h.experiments("shop").get("latency").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), "faultline-system");
    wait_for(
        "the signal's ConfigMap",
        Duration::from_secs(10),
        || async { maps.get_opt(REVERTING_CONFIGMAP).await.ok()? },
    )
    .await;
    (injections, experiment.uid().unwrap(), maps)
}

/// Node-1's applied receipt for experiment `uid`, as its agent writes it.
async fn write_receipt(maps: &Api<ConfigMap>, uid: &str, entries: BTreeMap<String, AppliedEntry>) {
    let receipt = AppliedReceipt {
        experiment: "shop/latency".into(),
        node: "node-1".into(),
        applied: entries,
    };
    let value = serde_json::to_string(&receipt).unwrap();
    let patch = json!({"data": {key(uid, "node-1").unwrap(): value}});
    maps.patch(
        REVERTING_CONFIGMAP,
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_receipt_counts_the_faults_in_before_their_own_statuses_say_so() {
    let h = Harness::start_without_agent().await;
    let (injections, uid, maps) = unapplied_experiment(&h, 2).await;

    // Node-1's agent says both are in: the first as it is, the second for an object of the
    // same name that no longer exists (another UID), which must not count.
    let applied_at: chrono::DateTime<chrono::Utc> = "2026-12-07T12:00:00Z".parse().unwrap();
    let entries: BTreeMap<String, AppliedEntry> = injections
        .iter()
        .enumerate()
        .map(|(n, injection)| {
            let uid = if n == 0 {
                injection.uid().unwrap()
            } else {
                "an-earlier-object".to_string()
            };
            let entry = AppliedEntry {
                uid,
                generation: injection.metadata.generation,
                applied_at,
                mechanism: "nfqueue".into(),
            };
            (injection.name_any(), entry)
        })
        .collect();
    write_receipt(&maps, &uid, entries.clone()).await;
    let second = injections[1].name_any();
    let one_in = wait_for("one target injected", Duration::from_secs(10), || async {
        let status = h.experiments("shop").get("latency").await.ok()?.status?;
        let injected = status
            .targets
            .iter()
            .filter(|t| t.state == TargetState::Injected)
            .count();
        (injected >= 1).then_some(status)
    })
    .await;
    assert_eq!(one_in.phase, Phase::Injecting, "one fault is not in yet");
    let waiting = one_in
        .targets
        .iter()
        .find(|t| t.injection.as_deref() == Some(second.as_str()))
        .unwrap();
    assert_eq!(
        waiting.state,
        TargetState::Injecting,
        "a receipt for another object of that name counts nothing"
    );

    // The receipt, corrected, names the second one too: every fault is in.
    let mut corrected = entries;
    corrected.get_mut(&second).unwrap().uid = injections[1].uid().unwrap();
    write_receipt(&maps, &uid, corrected).await;
    let running = h.wait_phase("shop", "latency", Phase::Running).await;
    let status = running.status.unwrap();
    assert_every_target(&status, TargetState::Injected);
    for target in &status.targets {
        assert_eq!(target.injected_at, Some(applied_at), "{target:?}");
        assert_eq!(target.message.as_deref(), Some("nfqueue"), "{target:?}");
    }
    for injection in h
        .injections("shop")
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        assert_eq!(
            injection.status, None,
            "nobody wrote the injections' statuses: the receipt alone counted them in"
        );
    }
    h.stop().await;
}

/// The injections' own `Applied` statuses, written after the receipt counted them in (the
/// agents hold them back a few seconds), say nothing new to the experiment: they do not
/// reconcile it (at 500 targets, 500 reconciles of a 500-target experiment while an abort
/// might be on its way). Counts that move still do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_own_statuses_after_a_receipt_do_not_reconcile_the_experiment_again() {
    const TARGETS: usize = 12;
    let h = Harness::start_without_agent().await;
    let (injections, uid, maps) = unapplied_experiment(&h, TARGETS).await;
    let applied_at: chrono::DateTime<chrono::Utc> = "2026-12-07T12:00:00Z".parse().unwrap();
    let entries = injections
        .iter()
        .map(|injection| {
            let entry = AppliedEntry {
                uid: injection.uid().unwrap(),
                generation: injection.metadata.generation,
                applied_at,
                mechanism: "nfqueue".into(),
            };
            (injection.name_any(), entry)
        })
        .collect();
    write_receipt(&maps, &uid, entries).await;
    h.wait_phase("shop", "latency", Phase::Running).await;
    // Whatever the transition set going has settled.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = h.metrics.reconciliations.get();
    let api = h.injections("shop");
    for injection in &injections {
        let status = json!({"status": {
            "phase": "Applied", "observedGeneration": injection.metadata.generation,
            "appliedAt": "2026-12-07T12:00:01Z", "mechanism": "nfqueue",
            "message": "latency 100ms via nfqueue, as the agent says it in its own words",
            "matchedPackets": 0, "bypassedPackets": 0,
        }});
        api.patch_status(
            &injection.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await
        .unwrap();
        // One at a time, as reconciles would follow them one by one if they were news.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reconciled = h.metrics.reconciliations.get() - before;
    // The experiment's own clock (a recheck of its targets every 2 s) may come in between.
    assert!(
        reconciled <= 3,
        "{reconciled} reconciles for {TARGETS} statuses that said what the receipt said"
    );

    // Counts that moved are news: the record follows.
    let first = injections[0].name_any();
    api.patch_status(
        &first,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"matchedPackets": 321}})),
    )
    .await
    .unwrap();
    wait_for(
        "the counts in the record",
        Duration::from_secs(10),
        || async {
            let status = h.experiments("shop").get("latency").await.ok()?.status?;
            status
                .targets
                .iter()
                .any(|t| {
                    t.injection.as_deref() == Some(first.as_str()) && t.matched_packets == Some(321)
                })
                .then_some(())
        },
    )
    .await;
    h.stop().await;
}
