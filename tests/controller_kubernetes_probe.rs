//! The controller with its real probe hub and a Kubernetes probe: `readyPods` on a Deployment
//! of the workload simulator while a pod kill takes one of its pods away.

mod common;

use std::time::Duration;

use common::harness::Harness;
use faultline::api::{Phase, TargetState, Verdict};
use serde_json::json;

fn ready_pods_hypothesis(min: i32) -> serde_json::Value {
    json!({"recoveryTimeout": "10s", "probes": [{
        "name": "web-ready",
        "kubernetes": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                       "readyPods": {"min": min}},
        // A loaded real API server can miss one 450 ms read (CI runs both API servers at once);
        // two misses in a row are a failure, which a pod short for seconds still gives.
        "interval": "500ms", "timeout": "450ms", "failureThreshold": 2
    }]})
}

fn kill_one(min: i32) -> serde_json::Value {
    json!({
        "duration": "2s",
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "One"},
        "faults": [{"podKill": {}}],
        "steadyState": ready_pods_hypothesis(min),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_kill_that_leaves_enough_ready_pods_passes() {
    let h = Harness::start_with_real_probes().await;
    let workloads = h.web_deployment(3, Duration::from_millis(100)).await;
    h.create("shop", "kill-one", kill_one(2)).await;
    let done = h.wait_phase("shop", "kill-one", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Passed),
        "{:?}",
        status.message
    );
    assert_eq!(status.targets[0].state, TargetState::Reverted);
    let probe = &status.probes[0];
    assert_eq!(probe.name, "web-ready");
    assert!(probe.passes >= 2, "{probe:?}");
    // A check that failed must be one that timed out (no value), never one that counted too few
    // ready pods: the kill leaves exactly the minimum.
    assert!(
        probe.samples.iter().all(|s| s.ok || s.value.is_none()),
        "{probe:?}"
    );
    workloads.shutdown().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_kill_below_the_ready_minimum_aborts_with_the_count_in_the_reason() {
    let h = Harness::start_with_real_probes().await;
    // Slow replacement: the Deployment stays one pod short long enough for the probe to see.
    let workloads = h.web_deployment(3, Duration::from_secs(3)).await;
    let mut spec = kill_one(3);
    spec["duration"] = json!("20s");
    h.create("shop", "too-few", spec).await;
    let aborted = h.wait_phase("shop", "too-few", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.reason.as_deref(), Some("ProbeFailed"));
    let message = status.message.clone().unwrap_or_default();
    // Two Ready; the total is 2, 3 or, on a real control plane whose ReplicaSet made the
    // replacement before the killed pod was gone, 4.
    let total = message
        .strip_prefix("probe web-ready: deployments/web: 2 of ")
        .and_then(|rest| rest.split_once(" pods Ready, expected at least 3"))
        .map(|(total, _)| total);
    assert!(matches!(total, Some("2" | "3" | "4")), "{message}");
    workloads.shutdown().await;
    h.stop().await;
}
