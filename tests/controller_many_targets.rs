//! An experiment with more target records than `status.targets` lists (`api::packed_records`):
//! the controller runs it through injection and an abort with its records packed in
//! `status.targetRecords`, every record says what happened to its pod, and the stored object
//! stays small. Against the embedded API server, or the real control plane with
//! `FAULTLINE_TEST_CLUSTER=real`, with the stand-in agent.

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, assert_every_target, latency_spec},
    wait_for,
};
use faultline::api::{
    ChaosExperiment, Phase, TargetState, Verdict, packed_records::PLAIN_RECORDS_LIMIT,
};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

const PODS: usize = PLAIN_RECORDS_LIMIT + 20;

/// What the server stores under `status`, as it stores it.
async fn stored_status(h: &Harness, name: &str) -> serde_json::Value {
    let raw: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        h.client.clone(),
        "shop",
        &ApiResource::erase::<ChaosExperiment>(&()),
    );
    raw.get(name).await.unwrap().data["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_past_the_plain_list_runs_and_aborts_with_its_records_packed() {
    // Production's injection timeout: on a loaded machine the stand-in agent once took over
    // the tests' 5 s to apply 120 FaultInjections, and the experiment aborted.
    let h = Harness::start_with_production_timeout().await;
    h.namespace("shop", true).await;
    for i in 0..PODS {
        let ip = format!("10.244.{}.{}", 1 + i / 200, 10 + i % 200);
        h.pod("shop", &format!("web-{i}"), "web", &ip).await;
    }
    h.create("shop", "wide", latency_spec("10m")).await;
    let running = h
        .wait_phase_within("shop", "wide", Phase::Running, Duration::from_secs(90))
        .await;
    let status = running.status.unwrap();
    assert_eq!(status.target_count, PODS as i32);
    assert_eq!(status.targets.len(), PODS);
    assert_every_target(&status, TargetState::Injected);
    let stored = stored_status(&h, "wide").await;
    assert_eq!(stored["targets"], json!([]));
    let packed = stored["targetRecords"].as_str().expect("packed records");
    let listed = serde_json::to_vec(&status.targets).unwrap().len();
    println!(
        "{PODS} records: {listed} bytes as a list, {} packed",
        packed.len()
    );
    assert!(packed.len() * 2 < listed, "{} of {listed}", packed.len());

    let abort = json!({"metadata": {"annotations": {"faultline.dev/abort": "enough"}}});
    h.experiments("shop")
        .patch("wide", &PatchParams::default(), &Patch::Merge(&abort))
        .await
        .unwrap();
    let aborted = h.wait_phase("shop", "wide", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.targets.len(), PODS);
    assert_every_target(&status, TargetState::Reverted);
    assert!(stored_status(&h, "wide").await["targetRecords"].is_string());
    wait_for(
        "every FaultInjection to go",
        Duration::from_secs(30),
        || async { (h.injection_count("shop").await == 0).then_some(()) },
    )
    .await;
    h.stop().await;
}
