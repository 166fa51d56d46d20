//! ChaosSchedules run by the controller as in production, against the embedded API server with
//! a stand-in node agent and scripted probes: runs on time, history, stopping after failures.

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::api::{ChaosSchedule, ConditionStatus, ProbePhase, Verdict};
use faultline::lifecycle::HypothesisView;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// Every 2 seconds (the seconds field), 1-second latency runs.
fn schedule(extra: serde_json::Value) -> ChaosSchedule {
    let mut spec = json!({
        "schedule": "*/2 * * * * *",
        "successfulHistoryLimit": 1,
        "failedHistoryLimit": 1,
        "experimentTemplate": {
            "metadata": {"labels": {"team": "payments"}},
            "spec": latency_spec("1s"),
        },
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1",
        "kind": "ChaosSchedule",
        "metadata": {"name": "often", "namespace": "shop"},
        "spec": spec,
    }))
    .unwrap()
}

fn schedules(h: &Harness) -> Api<ChaosSchedule> {
    Api::namespaced(h.client.clone(), "shop")
}

async fn runs(h: &Harness) -> Vec<faultline::api::ChaosExperiment> {
    h.experiments("shop")
        .list(&ListParams::default().labels("faultline.dev/schedule=often"))
        .await
        .unwrap()
        .items
}

/// Watches the schedule's runs for two of its periods. Pruning to the history limit may still
/// remove a run that finished meanwhile (seen on the real control plane); a new name is what
/// would be wrong.
async fn assert_no_run_starts(h: &Harness, which: &str) {
    let names = |runs: Vec<faultline::api::ChaosExperiment>| {
        runs.iter()
            .map(|r| r.name_any())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = names(runs(h).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = names(runs(h).await);
    assert!(
        after.is_subset(&before),
        "{which} started a run: {after:?} after {before:?}"
    );
}

#[tokio::test]
async fn runs_start_on_schedule_and_only_the_newest_are_kept() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 1).await;
    schedules(&h)
        .create(&PostParams::default(), &schedule(json!({})))
        .await
        .unwrap();

    // Three runs finished: with a history of one, one passed run is left.
    let done = wait_for("three finished runs", Duration::from_secs(30), || async {
        let s = schedules(&h).get("often").await.ok()?;
        let status = s.status?;
        let counted = status.last_finished_schedule_time?;
        let first = s.metadata.creation_timestamp?;
        (counted.timestamp() - first.0.as_second() >= 5).then_some(status)
    })
    .await;
    assert_eq!(done.last_verdict, Some(Verdict::Passed));
    assert_eq!(done.consecutive_failures, 0);
    assert!(done.next_schedule_time.is_some());
    let active = done
        .conditions
        .iter()
        .find(|c| c.type_ == "Active")
        .unwrap();
    assert_eq!(active.status, ConditionStatus::True);
    assert_eq!(active.reason, "Scheduled");

    let schedule_uid = schedules(&h).get("often").await.unwrap().uid().unwrap();
    let left = wait_for(
        "the history to be pruned",
        Duration::from_secs(10),
        || async {
            let finished: Vec<_> = runs(&h)
                .await
                .into_iter()
                .filter(|e| e.status.as_ref().is_some_and(|s| s.verdict.is_some()))
                .collect();
            (finished.len() == 1).then_some(finished)
        },
    )
    .await;
    let run = &left[0];
    assert_eq!(run.owner_references()[0].uid, schedule_uid);
    assert_eq!(run.labels()["team"], "payments");
    let scheduled_at = &run.annotations()["faultline.dev/scheduled-at"];
    let scheduled_at: chrono::DateTime<chrono::Utc> = scheduled_at.parse().unwrap();
    assert_eq!(
        run.name_any(),
        format!("often-{}", scheduled_at.timestamp())
    );
    assert_eq!(scheduled_at.timestamp() % 2, 0, "on the schedule's seconds");

    // Suspended: no run starts any more.
    let suspend = json!({"spec": {"suspend": true}});
    schedules(&h)
        .patch("often", &PatchParams::default(), &Patch::Merge(&suspend))
        .await
        .unwrap();
    wait_for(
        "the schedule to say it is suspended",
        Duration::from_secs(10),
        || async {
            let status = schedules(&h).get("often").await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Active" && c.reason == "Suspended")
                .then_some(())
        },
    )
    .await;
    // A run that was already going may still finish; none starts after it.
    wait_for(
        "the last run to finish",
        Duration::from_secs(10),
        || async {
            runs(&h)
                .await
                .iter()
                .all(|e| e.status.as_ref().is_some_and(|s| s.verdict.is_some()))
                .then_some(())
        },
    )
    .await;
    assert_no_run_starts(&h, "a suspended schedule").await;
    h.stop().await;
}

#[tokio::test]
async fn failed_runs_in_a_row_stop_the_schedule_with_a_condition() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 1).await;
    h.probes.set(
        ProbePhase::During,
        HypothesisView::Violated {
            probe: "web".into(),
            message: "503".into(),
            since: chrono::Utc::now(),
        },
    );
    schedules(&h)
        .create(
            &PostParams::default(),
            &schedule(json!({"stopAfterConsecutiveFailures": 2})),
        )
        .await
        .unwrap();
    let stopped = wait_for("the schedule to stop", Duration::from_secs(30), || async {
        let status = schedules(&h).get("often").await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Stopped" && c.status == ConditionStatus::True)
            .then_some(status)
    })
    .await;
    assert_eq!(stopped.consecutive_failures, 2);
    assert_eq!(stopped.last_verdict, Some(Verdict::Aborted));
    let condition = stopped
        .conditions
        .iter()
        .find(|c| c.type_ == "Stopped")
        .unwrap();
    assert!(
        condition.message.contains("2 runs in a row did not pass"),
        "{}",
        condition.message
    );
    assert_eq!(stopped.next_schedule_time, None);
    assert_no_run_starts(&h, "a stopped schedule").await;
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}
