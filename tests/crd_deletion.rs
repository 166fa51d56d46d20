//! faultline's CRDs deleted (`kubectl delete -f crds/`, an uninstall), through the API server
//! (the embedded one, or the real control plane with `FAULTLINE_TEST_CLUSTER=real`):
//! - as the real server carries it out: the CRD is Terminating and refuses new objects (405),
//!   its objects are deleted, a finalizer holds one (and the CRD) until it is released, and
//!   the CRD goes with its last object;
//! - while an experiment runs, with the controller as it runs in production and a stand-in
//!   node agent: the experiment's finalizer and the injections' are released (its faults
//!   reverted), and every CRD goes.

mod common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::{
    harness::{Harness, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::api::{ChaosSchedule, Phase, all_crds};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const SCHEDULES: &str = "chaosschedules.faultline.dev";

fn schedule(name: &str, finalizers: &[&str]) -> ChaosSchedule {
    serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule",
        "metadata": {"name": name, "finalizers": finalizers},
        "spec": {"schedule": "0 3 * * *", "suspend": true, "experimentTemplate": {"spec": {
            "duration": "1s", "faults": [{"podKill": {}}]}}},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_ends_refusing_new_objects_and_waits_for_its_objects_finalizers() {
    let cluster = TestCluster::start().await;
    let client = cluster.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let schedules: Api<ChaosSchedule> = Api::namespaced(client.clone(), "default");
    // A run of this test that failed midway on a real cluster left its CRD held: let go.
    let unhold = json!({"metadata": {"finalizers": null}});
    let _ = schedules
        .patch("held", &PatchParams::default(), &Patch::Merge(&unhold))
        .await;
    wait_for(
        "an earlier run's CRD to go",
        Duration::from_secs(60),
        || async {
            let crd = crds.get_opt(SCHEDULES).await.ok()?;
            crd.is_none_or(|c| c.metadata.deletion_timestamp.is_none())
                .then_some(())
        },
    )
    .await;
    cluster.install_crds(&all_crds()).await;
    schedules
        .create(
            &PostParams::default(),
            &schedule("held", &["example.com/hold"]),
        )
        .await
        .unwrap();
    schedules
        .create(&PostParams::default(), &schedule("free", &[]))
        .await
        .unwrap();

    crds.delete(SCHEDULES, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the free schedule to go",
        Duration::from_secs(30),
        || async {
            schedules
                .get_opt("free")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    // The real server deletes a namespace's objects as a collection, side by side: the one it
    // holds may be marked a moment after the free one is gone.
    wait_for(
        "the held schedule to be marked deleted",
        Duration::from_secs(10),
        || async {
            let held = schedules.get("held").await.ok()?;
            held.metadata.deletion_timestamp.is_some().then_some(())
        },
    )
    .await;
    let crd = crds.get(SCHEDULES).await.unwrap();
    assert!(crd.metadata.deletion_timestamp.is_some());
    let terminating = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Terminating");
    assert_eq!(terminating.map(|c| c.status).as_deref(), Some("True"));

    let refused = schedules
        .create(&PostParams::default(), &schedule("late", &[]))
        .await;
    let status = common::api_err(refused);
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            403,
            "Forbidden",
            "chaosschedules.faultline.dev \"late\" is forbidden: create not allowed while custom resource definition is terminating"
        )
    );

    schedules
        .patch("held", &PatchParams::default(), &Patch::Merge(&unhold))
        .await
        .unwrap();
    wait_for(
        "the CRD to go with its last object",
        Duration::from_secs(60),
        || async { crds.get_opt(SCHEDULES).await.ok()?.is_none().then_some(()) },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_crds_mid_experiment_reverts_and_lets_them_go() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 3).await;
    h.create("shop", "latency", latency_spec("10m")).await;
    h.wait_phase("shop", "latency", Phase::Running).await;
    assert_eq!(h.injection_count("shop").await, 3);

    let crds: Api<CustomResourceDefinition> = Api::all(h.client.clone());
    for crd in all_crds() {
        let name = crd.metadata.name.unwrap();
        crds.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    wait_for(
        "every faultline CRD to be gone",
        Duration::from_secs(60),
        || async {
            let left: Vec<String> = crds
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .filter(|n| n.ends_with(".faultline.dev"))
                .collect();
            left.is_empty().then_some(())
        },
    )
    .await;
    h.stop().await;
}
