//! The controller with its real probe hub: HTTP probes against real servers on 127.0.0.1, pods
//! from the sandbox's workload simulator, evictions through the sandbox's Eviction API.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use common::{
    harness::{Harness, shop_with_web_pods},
    wait_for,
};
use faultline::{
    api::{Phase, TargetState, Verdict},
    selection::is_running_and_ready,
};
use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// A service whose health the test controls.
struct Service {
    status: Arc<AtomicU16>,
    url: String,
}

impl Service {
    async fn start() -> Service {
        let status = Arc::new(AtomicU16::new(200));
        let app = Router::new()
            .route(
                "/healthz",
                get(|State(s): State<Arc<AtomicU16>>| async move {
                    StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
                }),
            )
            .with_state(status.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Service { status, url }
    }

    fn set(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

fn http_hypothesis(url: &str) -> serde_json::Value {
    json!({"recoveryTimeout": "10s", "probes": [{
        "name": "shop-healthy", "http": {"url": url, "expectedStatus": [200]},
        "interval": "200ms", "timeout": "150ms", "failureThreshold": 2
    }]})
}

async fn ready_pods(h: &Harness, namespace: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    list.into_iter().filter(is_running_and_ready).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_kill_under_an_http_hypothesis_passes_and_the_pod_comes_back() {
    let h = Harness::start_with_real_probes().await;
    let service = Service::start().await;
    let workloads = h.web_deployment(3, Duration::from_millis(100)).await;
    h.create(
        "shop",
        "kill-one",
        json!({
            "duration": "1s",
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "One"},
            "faults": [{"podKill": {}}],
            "steadyState": http_hypothesis(&service.url),
        }),
    )
    .await;
    let done = h.wait_phase("shop", "kill-one", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Passed),
        "{:?}",
        status.message
    );
    let killed = &status.targets[0];
    assert_eq!(killed.state, TargetState::Reverted);
    let probe = &status.probes[0];
    assert_eq!(probe.name, "shop-healthy");
    assert!(probe.passes >= 2 && probe.failures == 0, "{probe:?}");
    assert!(!probe.samples.is_empty());
    wait_for(
        "the killed pod to be replaced",
        Duration::from_secs(10),
        || async {
            let pods = ready_pods(&h, "shop").await;
            (pods.len() == 3
                && pods
                    .iter()
                    .all(|p| p.metadata.uid.as_deref() != Some(killed.uid.as_str())))
            .then_some(())
        },
    )
    .await;
    workloads.shutdown().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_forbids_the_eviction_makes_the_kill_a_recorded_skip() {
    let h = Harness::start_with_real_probes().await;
    let workloads = h.web_deployment(2, Duration::from_millis(100)).await;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(h.client.clone(), "shop");
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "web-pdb"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    budgets
        .create(&PostParams::default(), &budget)
        .await
        .unwrap();
    h.create(
        "shop",
        "blocked",
        json!({
            "duration": "1s",
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "One"},
            "faults": [{"podKill": {"method": "evict"}}],
        }),
    )
    .await;
    let done = h.wait_phase("shop", "blocked", Phase::Succeeded).await;
    let status = done.status.unwrap();
    let record = &status.targets[0];
    assert_eq!(record.state, TargetState::Skipped);
    let message = record.message.clone().unwrap_or_default();
    assert!(message.contains("web-pdb"), "{message}");
    assert!(
        status
            .timeline
            .iter()
            .any(|e| e.reason == "PodKillSkipped" && e.message.contains("web-pdb"))
    );
    assert_eq!(ready_pods(&h, "shop").await.len(), 2, "nothing was killed");
    workloads.shutdown().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_service_before_injection_means_nothing_is_injected() {
    let h = Harness::start_with_real_probes().await;
    let service = Service::start().await;
    service.set(503);
    shop_with_web_pods(&h, 2).await;
    let mut spec = common::harness::latency_spec("30s");
    spec["steadyState"] = http_hypothesis(&service.url);
    h.create("shop", "sick", spec).await;
    let failed = h.wait_phase("shop", "sick", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("SteadyStateNotMet"));
    assert!(
        status
            .message
            .clone()
            .unwrap()
            .contains("status 503, expected 200"),
        "{:?}",
        status.message
    );
    assert!(status.injected_at.is_none());
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_fails_during_the_run_aborts_and_reverts_everything() {
    let h = Harness::start_with_real_probes().await;
    let service = Service::start().await;
    shop_with_web_pods(&h, 3).await;
    let mut spec = common::harness::latency_spec("10m");
    spec["steadyState"] = http_hypothesis(&service.url);
    h.create("shop", "breaks", spec).await;
    h.wait_phase("shop", "breaks", Phase::Running).await;
    assert_eq!(h.injection_count("shop").await, 3);

    service.set(500);
    let aborted = h.wait_phase("shop", "breaks", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.reason.as_deref(), Some("ProbeFailed"));
    assert!(
        status.message.clone().unwrap().contains("status 500"),
        "{:?}",
        status.message
    );
    let latency = status
        .abort_latency
        .clone()
        .expect("abort latency recorded");
    assert!(latency.parse().is_ok(), "{latency}");
    assert!(
        status
            .targets
            .iter()
            .all(|t| t.state == TargetState::Reverted)
    );
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_kill_with_an_interval_kills_again_each_round_selecting_afresh() {
    let h = Harness::start_with_real_probes().await;
    let workloads = h.web_deployment(3, Duration::from_millis(100)).await;
    h.create("shop", "repeat", json!({
        "duration": "3500ms",
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "One"},
        // 1s: the shortest interval a pod kill allows.
        "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0, "interval": "1s"}}],
    }))
    .await;
    let done = h.wait_phase("shop", "repeat", Phase::Succeeded).await;
    let status = done.status.unwrap();
    let kills: Vec<&str> = status
        .timeline
        .iter()
        .filter(|e| e.reason == "PodKilled")
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        kills.len() >= 3,
        "expected a kill at 0, 1, 2 and 3s: {kills:?}"
    );
    let mut distinct = kills.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        kills.len(),
        "every round killed a live pod, never the same one twice: {kills:?}"
    );
    assert!(
        status
            .timeline
            .iter()
            .any(|e| e.reason == "PodKillRound" && e.message.contains("seed"))
    );
    assert_eq!(
        status.targets.len(),
        1,
        "status keeps the latest round only"
    );
    workloads.shutdown().await;
    h.stop().await;
}
