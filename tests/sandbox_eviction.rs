//! The pods/eviction subresource through the kube client: PodDisruptionBudgets honoured with the
//! real server's codes, reasons and wording. Pods get their status by hand here (no kubelet); the
//! end-to-end flow with controllers is in `sandbox_workloads.rs`.
//!
//! The clients here have kube's default retry turned off: kube 5 retries a 429 up to 15 times
//! with exponential backoff (minutes in all), against a real server as against this one, and
//! these tests want to see the refusal itself.

mod common;

use common::{api_err, server};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Status;
use serde_json::{Value, json};

const NS: &str = "default";

async fn create_pod(pods: &Api<Pod>, name: &str, phase: &str, ready: bool) -> Pod {
    create_pod_with(pods, name, phase, ready, json!({})).await
}

/// A pod labelled `app=web`, given `phase` and a Ready condition through the status subresource.
async fn create_pod_with(
    pods: &Api<Pod>,
    name: &str,
    phase: &str,
    ready: bool,
    meta: Value,
) -> Pod {
    let mut body = json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "app", "image": "app:1"}], "nodeName": "node-1"}
    });
    if let (Some(extra), Some(md)) = (meta.as_object(), body["metadata"].as_object_mut()) {
        md.extend(extra.clone());
    }
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    let status = json!({"status": {"phase": phase, "conditions": [
        {"type": "Ready", "status": if ready { "True" } else { "False" }}
    ]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap()
}

async fn create_budget(pdbs: &Api<PodDisruptionBudget>, name: &str, spec: Value) {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    let pdb = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
}

/// POST an Eviction the way client-go and kubectl shape it (`deleteOptions`, camelCase).
async fn evict_raw(
    client: &kube::Client,
    name: &str,
    delete_options: Value,
) -> Result<Status, kube::Error> {
    let body = json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": name, "namespace": NS},
        "deleteOptions": delete_options,
    });
    let req = http::Request::post(format!("/api/v1/namespaces/{NS}/pods/{name}/eviction"))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    client.request::<Status>(req).await
}

/// A client for `srv` that does not retry 429s.
async fn client(srv: &common::ApiServer) -> kube::Client {
    let mut config = srv.client_config();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn apis(client: &kube::Client) -> (Api<Pod>, Api<PodDisruptionBudget>) {
    (
        Api::namespaced(client.clone(), NS),
        Api::namespaced(client.clone(), NS),
    )
}

#[tokio::test]
async fn without_a_budget_an_eviction_deletes_the_pod() {
    let srv = server().await;
    let (pods, _) = apis(&client(&srv).await);
    create_pod(&pods, "a", "Running", true).await;
    let status = pods.evict("a", &EvictParams::default()).await.unwrap();
    assert_eq!((status.code, status.is_success()), (201, true));
    assert_eq!(api_err(pods.get("a").await).code, 404);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_budget_at_its_minimum_refuses_with_429_naming_the_budget() {
    let srv = server().await;
    let (pods, pdbs) = apis(&client(&srv).await);
    create_pod(&pods, "a", "Running", true).await;
    create_pod(&pods, "b", "Running", true).await;
    create_budget(&pdbs, "web-pdb", json!({"minAvailable": 2})).await;

    let s = api_err(pods.evict("a", &EvictParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        s.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    let causes = s.details.expect("details").causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "DisruptionBudget");
    assert_eq!(
        causes[0].message,
        "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
    );
    assert!(
        pods.get("a").await.is_ok(),
        "a refused eviction leaves the pod alone"
    );

    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!(
        (
            status.current_healthy,
            status.desired_healthy,
            status.expected_pods,
            status.disruptions_allowed
        ),
        (2, 2, 2, 0)
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_replacement_becoming_ready_makes_room_for_exactly_one_eviction() {
    let srv = server().await;
    let (pods, pdbs) = apis(&client(&srv).await);
    create_pod(&pods, "a", "Running", true).await;
    create_pod(&pods, "b", "Running", true).await;
    create_budget(&pdbs, "web-pdb", json!({"minAvailable": 2})).await;
    assert_eq!(
        api_err(pods.evict("a", &EvictParams::default()).await).code,
        429
    );

    // A third pod is not enough while it is starting; once Ready, one disruption is allowed.
    create_pod(&pods, "c", "Running", false).await;
    assert_eq!(
        pdbs.get("web-pdb")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        0
    );
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status("c", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    assert_eq!(
        pdbs.get("web-pdb")
            .await
            .unwrap()
            .status
            .unwrap()
            .disruptions_allowed,
        1
    );

    pods.evict("a", &EvictParams::default()).await.unwrap();
    assert_eq!(api_err(pods.get("a").await).code, 404);
    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!((status.current_healthy, status.disruptions_allowed), (2, 0));
    assert!(
        status.disrupted_pods.is_none(),
        "a deleted pod leaves disruptedPods"
    );
    let s = api_err(pods.evict("b", &EvictParams::default()).await);
    assert_eq!(s.code, 429);
    srv.shutdown().await;
}

#[tokio::test]
async fn max_unavailable_one_allows_one_eviction_against_the_controllers_scale() {
    let srv = server().await;
    let client = client(&srv).await;
    let (pods, pdbs) = apis(&client);
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let rs = rss
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "app", "image": "app:1"}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let owner = json!({"ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
        "uid": rs.metadata.uid.unwrap(), "controller": true
    }]});
    for name in ["a", "b", "c"] {
        create_pod_with(&pods, name, "Running", true, owner.clone()).await;
    }
    create_budget(&pdbs, "web-pdb", json!({"maxUnavailable": 1})).await;

    pods.evict("a", &EvictParams::default()).await.unwrap();
    // Nobody replaces `a`: 2 of the 3 expected pods are healthy, the budget needs 2.
    let s = api_err(pods.evict("b", &EvictParams::default()).await);
    assert_eq!(s.code, 429);
    assert_eq!(
        s.details.unwrap().causes[0].message,
        "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
    );
    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!(
        status.expected_pods, 3,
        "expected pods come from the ReplicaSet's scale"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_uid_precondition_that_does_not_match_is_a_conflict() {
    let srv = server().await;
    let client = client(&srv).await;
    let (pods, _) = apis(&client);
    create_pod(&pods, "a", "Running", true).await;
    let s = api_err(
        evict_raw(
            &client,
            "a",
            json!({"preconditions": {"uid": "not-the-uid"}}),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message
            .starts_with("Precondition failed: UID in precondition: not-the-uid"),
        "{}",
        s.message
    );
    let pod = pods.get("a").await.expect("the pod survives");

    // The matching uid deletes.
    let uid = pod.metadata.uid.unwrap();
    evict_raw(&client, "a", json!({"preconditions": {"uid": uid}}))
        .await
        .unwrap();
    assert_eq!(api_err(pods.get("a").await).code, 404);
    srv.shutdown().await;
}

#[tokio::test]
async fn kube_rs_evict_params_delete_options_are_ignored_as_a_real_server_ignores_them() {
    // kube 5 sends EvictParams::delete_options as `delete_options`, a field the Eviction type
    // does not have: a real server drops it (with a warning), and so do we. This pins that, so
    // nobody builds on preconditions or grace periods passed that way.
    let srv = server().await;
    let (pods, _) = apis(&client(&srv).await);
    create_pod(&pods, "a", "Running", true).await;
    let params = EvictParams {
        delete_options: Some(DeleteParams::default().preconditions(Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        })),
        ..Default::default()
    };
    pods.evict("a", &params).await.unwrap();
    assert_eq!(api_err(pods.get("a").await).code, 404);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_pending_pod_is_evicted_whatever_the_budget_says() {
    let srv = server().await;
    let (pods, pdbs) = apis(&client(&srv).await);
    create_pod(&pods, "ready", "Running", true).await;
    create_pod(&pods, "starting", "Pending", false).await;
    create_budget(&pdbs, "web-pdb", json!({"minAvailable": 5})).await;
    assert_eq!(
        api_err(pods.evict("ready", &EvictParams::default()).await).code,
        429
    );
    pods.evict("starting", &EvictParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(pods.get("starting").await).code, 404);
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unready_running_pod_is_evicted_without_using_a_disruption() {
    let srv = server().await;
    let (pods, pdbs) = apis(&client(&srv).await);
    create_pod(&pods, "a", "Running", true).await;
    create_pod(&pods, "b", "Running", true).await;
    create_pod(&pods, "sick", "Running", false).await;
    create_budget(&pdbs, "web-pdb", json!({"minAvailable": 1})).await;
    pods.evict("sick", &EvictParams::default()).await.unwrap();
    let status = pdbs.get("web-pdb").await.unwrap().status.unwrap();
    assert_eq!((status.current_healthy, status.disruptions_allowed), (2, 1));
    srv.shutdown().await;
}

#[tokio::test]
async fn two_budgets_selecting_the_pod_is_a_500() {
    let srv = server().await;
    let (pods, pdbs) = apis(&client(&srv).await);
    create_pod(&pods, "a", "Running", true).await;
    create_budget(&pdbs, "one", json!({"minAvailable": 0})).await;
    create_budget(&pdbs, "two", json!({"minAvailable": 0})).await;
    let s = api_err(pods.evict("a", &EvictParams::default()).await);
    assert_eq!(s.code, 500);
    assert_eq!(
        s.message,
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    assert!(pods.get("a").await.is_ok());
    srv.shutdown().await;
}

#[tokio::test]
async fn evicting_a_missing_pod_is_404() {
    let srv = server().await;
    let (pods, _) = apis(&client(&srv).await);
    let s = api_err(pods.evict("ghost", &EvictParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "pods \"ghost\" not found");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_pod_held_by_a_finalizer_gets_the_requested_grace_period() {
    let srv = server().await;
    let client = client(&srv).await;
    let (pods, _) = apis(&client);
    create_pod_with(
        &pods,
        "a",
        "Running",
        true,
        json!({"finalizers": ["example.com/hold"]}),
    )
    .await;
    evict_raw(&client, "a", json!({"gracePeriodSeconds": 7}))
        .await
        .unwrap();
    let pod = pods.get("a").await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(7));
    // Evicting a pod that is already terminating deletes without consulting any budget.
    evict_raw(&client, "a", json!({"gracePeriodSeconds": 0}))
        .await
        .unwrap();
    assert_eq!(
        pods.get("a")
            .await
            .unwrap()
            .metadata
            .deletion_grace_period_seconds,
        Some(0)
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn discovery_lists_the_eviction_subresource_and_other_verbs_are_refused() {
    let srv = server().await;
    let client = client(&srv).await;
    let list = client.list_core_api_resources("v1").await.unwrap();
    let eviction = list
        .resources
        .iter()
        .find(|r| r.name == "pods/eviction")
        .expect("pods/eviction in discovery");
    assert_eq!(
        (
            eviction.group.as_deref(),
            eviction.version.as_deref(),
            eviction.kind.as_str()
        ),
        (Some("policy"), Some("v1"), "Eviction")
    );
    let req = http::Request::get(format!("/api/v1/namespaces/{NS}/pods/a/eviction"))
        .body(vec![])
        .unwrap();
    let s = api_err(client.request::<Status>(req).await);
    assert_eq!(s.code, 405);
    srv.shutdown().await;
}
