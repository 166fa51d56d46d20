//! How much of a running fault is in place: the packet counts an agent writes to its
//! FaultInjection's status (NFQUEUE's matched and bypassed packets) reach the experiment's
//! target records while it runs, without holding anything up (they go out behind, at most
//! about once a second), and packets that bypassed the fault are told in the timeline. The
//! controller as it runs in production, a stand-in agent; the counts written here are what the
//! agent's `report_counts` writes.

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::api::{FaultInjection, Phase, TargetRecord};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

async fn count(injections: &Api<FaultInjection>, name: &str, matched: i64, bypassed: i64) {
    let patch = json!({"status": {"matchedPackets": matched, "bypassedPackets": bypassed}});
    injections
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("the agent's counts are written");
}

async fn record_once(
    h: &Harness,
    injection: &str,
    accept: impl Fn(&TargetRecord) -> bool,
) -> TargetRecord {
    let experiments = h.experiments("shop");
    wait_for(
        "the counts in the experiment's target record",
        Duration::from_secs(30),
        || async {
            let experiment = experiments.get("counted").await.ok()?;
            let status = experiment.status?;
            status
                .targets
                .into_iter()
                .find(|r| r.injection.as_deref() == Some(injection))
                .filter(|r| accept(r))
        },
    )
    .await
}

#[tokio::test]
async fn packet_counts_reach_the_running_experiment_and_a_bypass_is_told() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "counted", latency_spec("10m")).await;
    h.wait_phase("shop", "counted", Phase::Running).await;
    let injections = h.injections("shop");
    let names: Vec<String> = injections
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|i| i.name_any())
        .collect();
    assert_eq!(names.len(), 2);

    count(&injections, &names[0], 1200, 0).await;
    let record = record_once(&h, &names[0], |r| r.matched_packets == Some(1200)).await;
    assert_eq!(record.bypassed_packets, Some(0));
    assert!(record.partly_applied().is_none());

    // Counts that move again, on both targets: the record follows each.
    count(&injections, &names[0], 5000, 0).await;
    count(&injections, &names[1], 70, 0).await;
    record_once(&h, &names[0], |r| r.matched_packets == Some(5000)).await;
    record_once(&h, &names[1], |r| r.matched_packets == Some(70)).await;

    count(&injections, &names[1], 1000, 250).await;
    let record = record_once(&h, &names[1], |r| r.bypassed_packets == Some(250)).await;
    assert_eq!(record.matched_packets, Some(1000));
    let experiment = h.experiments("shop").get("counted").await.unwrap();
    let status = experiment.status.unwrap();
    assert_eq!(status.phase, Phase::Running, "counts decide nothing");
    let told: Vec<&str> = status
        .timeline
        .iter()
        .filter(|e| e.reason == "FaultPartlyApplied")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(told.len(), 1, "{:?}", status.timeline);
    assert!(
        told[0].contains("250 of 1000 packets (25.0%) bypassed it"),
        "{told:?}"
    );

    // The abort still goes through at once, counts and all.
    let patch = json!({"metadata": {"annotations": {"faultline.dev/abort": "done counting"}}});
    h.experiments("shop")
        .patch("counted", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let aborted = h.wait_phase("shop", "counted", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    let record = status
        .targets
        .iter()
        .find(|r| r.injection.as_deref() == Some(names[1].as_str()))
        .unwrap();
    assert_eq!(record.bypassed_packets, Some(250), "kept into the verdict");
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}
