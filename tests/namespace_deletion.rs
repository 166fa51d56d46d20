//! A namespace deleted (`kubectl delete namespace`), through the API server (the embedded one,
//! or the real control plane with `FAULTLINE_TEST_CLUSTER=real`):
//! - as the API server and the namespace controller carry it out: the namespace is
//!   Terminating and refuses new content, its pods go first, a finalizer holds its object and
//!   the namespace until it is released;
//! - with a running experiment in it, the controller as it runs in production and a stand-in
//!   node agent: the namespace waits for faultline's finalizers, the faults are reverted (every
//!   FaultInjection goes through its agent), the namespace goes, and the controller goes on
//!   with other experiments.

mod common;

use std::time::Duration;

use common::cluster::TestCluster;
use common::{
    harness::{Harness, latency_spec},
    wait_for,
};
use faultline::api::{FaultInjection, Phase, Verdict};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_experiments_namespace_reverts_its_faults_and_the_namespace_goes() {
    let h = Harness::start().await;
    let namespaces: Api<Namespace> = Api::all(h.client.clone());
    no_namespace_ending(&namespaces, "doomed").await;
    h.namespace("doomed", true).await;
    // A real cluster's namespace controller deletes the pods first and waits for them to be
    // gone (ordered namespace deletion) before it deletes the experiment.
    for i in 0..3 {
        let (name, ip) = (format!("web-{i}"), format!("10.244.7.{}", i + 10));
        h.pod_that_goes_at_once("doomed", &name, "web", &ip).await;
    }
    h.create("doomed", "latency", latency_spec("10m")).await;
    h.wait_phase("doomed", "latency", Phase::Running).await;
    assert_eq!(h.injection_count("doomed").await, 3);

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the namespace to be gone (faultline's finalizers released)",
        Duration::from_secs(60),
        || async {
            namespaces
                .get_opt("doomed")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    let everywhere: Api<FaultInjection> = Api::all(h.client.clone());
    let left = everywhere.list(&ListParams::default()).await.unwrap().items;
    assert!(left.is_empty(), "FaultInjections left: {left:?}");

    // The controller was not wedged by the namespace's end: the next experiment runs.
    h.namespace("after", true).await;
    h.pod("after", "web-0", "web", "10.244.8.10").await;
    h.create("after", "next", latency_spec("1s")).await;
    let done = h.wait_phase("after", "next", Phase::Succeeded).await;
    assert_eq!(done.status.unwrap().verdict, Some(Verdict::Passed));
    h.stop().await;
}

/// Waits until no namespace `name` is being deleted (a real cluster's reset leaves namespaces,
/// and one of an earlier run may still be going).
async fn no_namespace_ending(namespaces: &Api<Namespace>, name: &str) {
    wait_for(
        &format!("an earlier run's namespace {name} to be gone"),
        Duration::from_secs(60),
        || async {
            let ending = namespaces
                .get_opt(name)
                .await
                .ok()?
                .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some());
            (!ending).then_some(())
        },
    )
    .await;
}

const HOLD: &str = "example.com/hold";

/// Waits until object `name` of `api` carries a deletionTimestamp.
async fn marked_for_deletion<K>(api: &Api<K>, name: &str, what: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    wait_for(
        &format!("{what} to be marked for deletion"),
        Duration::from_secs(30),
        || async {
            api.get(name)
                .await
                .ok()?
                .meta()
                .deletion_timestamp
                .as_ref()
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_ends_pods_first_refuses_new_content_and_waits_for_finalizers() {
    let cluster = TestCluster::start().await;
    let client = cluster.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    no_namespace_ending(&namespaces, "ending").await;
    common::cluster::apply_namespace(&client, "ending", false).await;
    if cluster.is_real() {
        common::cluster::cordoned_node(&client, "node-1").await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ending");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ending");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": [HOLD]},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "app", "image": "demo"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": [HOLD]}}))
            .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();

    let answered = namespaces
        .delete("ending", &DeleteParams::default())
        .await
        .unwrap();
    let marked = answered.left().expect("the namespace is marked, not gone");
    assert!(marked.metadata.deletion_timestamp.is_some());
    marked_for_deletion(&pods, "held", "the pod").await;
    let ns = namespaces.get("ending").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    // Pods first: the ConfigMap is left alone while a pod remains.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let map_now = maps.get("held").await.unwrap();
    assert!(map_now.metadata.deletion_timestamp.is_none(), "{map_now:?}");

    let refused = maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap(),
        )
        .await;
    let status = common::api_err(refused);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "configmaps \"late\" is forbidden: unable to create new content in namespace ending because it is being terminated"
    );
    let cause = &status.details.unwrap().causes[0];
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("NamespaceTerminating", "metadata.namespace")
    );

    let unhold = json!({"metadata": {"finalizers": null}});
    pods.patch("held", &PatchParams::default(), &Patch::Merge(&unhold))
        .await
        .unwrap();
    marked_for_deletion(&maps, "held", "the ConfigMap, once the pod is gone,").await;
    assert!(namespaces.get_opt("ending").await.unwrap().is_some());
    maps.patch("held", &PatchParams::default(), &Patch::Merge(&unhold))
        .await
        .unwrap();
    wait_for(
        "the namespace to go with its last object",
        Duration::from_secs(60),
        || async {
            namespaces
                .get_opt("ending")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    cluster.shutdown().await;
}
