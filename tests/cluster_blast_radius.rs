//! The blast radius as the API server enforces it: the chart's RBAC and admission policies
//! (charts/faultline/templates/admission-policies.yaml), applied to the real control plane, and
//! the controller's and the agent's own ServiceAccount tokens trying every act they must not do
//! (refused by the server, whatever faultline's code would have done) and every act they must
//! do (allowed). No faultline process runs here: this is the server's lock, tested alone; the
//! controller's own checks are tested in controller_lifecycle.rs.
//!
//! Needs `FAULTLINE_TEST_CLUSTER=real` (the embedded server has no RBAC or admission policies).

mod common;
mod k8s_objects;

use std::sync::Arc;

use common::TestCluster;
use faultline::agent::admission::Policy;
use faultline::agent::kernel::RecordingKernel;
use faultline::agent::runner::{self, AgentConfig};
use faultline::agent::telemetry::AgentMetrics;
use faultline::api::{ChaosExperiment, FaultInjection, InjectionPhase};
use faultline::controller::REVERTING_CONFIGMAP;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client,
    api::{DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchParams},
};
use serde_json::{Value, json};

const RELEASE_NS: &str = "faultline-system";
const CONTROLLER: &str = "faultline-controller";
const AGENT: &str = "faultline-agent";

/// The chart's identities, permissions and (when `policies`) admission policies: every object
/// but the workloads (no kubelet runs their pods here).
fn chart_policies_and_rbac(policies: bool) -> Vec<Value> {
    k8s_objects::chart_access_objects(RELEASE_NS)
        .into_iter()
        .filter(|o| {
            policies
                || !o["kind"]
                    .as_str()
                    .unwrap()
                    .starts_with("ValidatingAdmission")
        })
        .collect()
}

async fn apply(client: &Client, object: &Value) {
    common::cluster::apply_object(client, object, RELEASE_NS).await;
}

async fn pod(client: &Client, namespace: &str, name: &str, labels: Value, account: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "node-a", "serviceAccountName": account,
                 "containers": [{"name": "app", "image": "demo"}]},
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    // kube-system is not emptied between tests: a pod of the test before may still be there.
    let _ = pods
        .delete(name, &DeleteParams::default().grace_period(0))
        .await;
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("pod {namespace}/{name}: {e}"));
}

/// Waits until the admission policies act (the server loads new policies asynchronously): a
/// request the controller may never make is refused.
async fn policies_in_force(controller: &Client, agent_on_a: &Client) {
    common::wait_for(
        "the admission policies to be in force",
        std::time::Duration::from_secs(30),
        || async {
            let other_node = Api::<Node>::all(agent_on_a.clone())
                .patch(
                    "node-b",
                    &PatchParams::default().dry_run(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"faultline.dev/capabilities": "x"}}}),
                    ),
                )
                .await
                .is_err_and(|e| e.to_string().contains("may only change the Node"));
            let pods: Api<Pod> = Api::namespaced(controller.clone(), "kube-system");
            let eviction_refused = pods
                .evict("system-pod", &EvictParams::default())
                .await
                .is_err_and(|e| e.to_string().contains("protected"));
            // Each policy loads on its own; the one on a custom resource can come later.
            let injections: Api<FaultInjection> = Api::namespaced(controller.clone(), "closed");
            let dry_run = PostParams {
                dry_run: true,
                ..Default::default()
            };
            let injection_refused = injections
                .create(&dry_run, &injection("closed", "closed", "policy-probe"))
                .await
                .is_err_and(|e| e.to_string().contains("did not"));
            (eviction_refused && injection_refused && other_node).then_some(())
        },
    )
    .await;
}

fn refused_with<T: std::fmt::Debug>(result: Result<T, kube::Error>, words: &str, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains(words),
            "{what}: refused, but not for {words:?}: {} ({})",
            status.message,
            status.code
        ),
        other => panic!("{what}: expected the API server to refuse it, got {other:?}"),
    }
}

fn allowed<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    if let Err(e) = result {
        panic!("{what}: expected it to be allowed, got {e}");
    }
}

struct Bed {
    cluster: TestCluster,
    admin: Client,
    controller: Client,
    agent_on_a: Client,
}

/// The chart's RBAC and policies, namespaces `shop` (opted in) and `closed` (not), nodes
/// `node-a` and `node-b`, a pod the agent's token is bound to on node-a, and pods to disrupt.
async fn bed() -> Option<Bed> {
    bed_with(true).await
}

async fn bed_with(policies: bool) -> Option<Bed> {
    let cluster = TestCluster::start().await;
    if !cluster.is_real() {
        eprintln!(
            "cluster_blast_radius: SKIPPED in the sandbox (no RBAC or admission policies there); runs with FAULTLINE_TEST_CLUSTER=real"
        );
        return None;
    }
    cluster.install_crds(&faultline::api::all_crds()).await;
    let admin = cluster.client().await;
    common::cluster::apply_namespace(&admin, RELEASE_NS, false).await;
    common::cluster::apply_namespace(&admin, "shop", true).await;
    common::cluster::apply_namespace(&admin, "closed", false).await;
    for object in chart_policies_and_rbac(policies) {
        apply(&admin, &object).await;
    }
    for node in ["node-a", "node-b"] {
        common::cluster::cordoned_node(&admin, node).await;
    }
    pod(&admin, RELEASE_NS, "agent-on-a", json!({}), AGENT).await;
    pod(&admin, RELEASE_NS, "own-pod", json!({}), "default").await;
    pod(&admin, "kube-system", "system-pod", json!({}), "default").await;
    pod(&admin, "shop", "victim", json!({"app": "web"}), "default").await;
    pod(&admin, "shop", "victim-2", json!({"app": "web"}), "default").await;
    pod(
        &admin,
        "shop",
        "guarded",
        json!({"faultline.dev/protected": "true"}),
        "default",
    )
    .await;
    pod(
        &admin,
        "closed",
        "outsider",
        json!({"app": "web"}),
        "default",
    )
    .await;
    let controller = common::cluster::client_as(&cluster, RELEASE_NS, CONTROLLER, None).await;
    let agent_on_a =
        common::cluster::client_as(&cluster, RELEASE_NS, AGENT, Some("agent-on-a")).await;
    if policies {
        policies_in_force(&controller, &agent_on_a).await;
    }
    Some(Bed {
        cluster,
        admin,
        controller,
        agent_on_a,
    })
}

#[tokio::test]
async fn the_controller_disrupts_only_pods_in_opted_in_unprotected_places() {
    let Some(bed) = bed().await else { return };
    let pods = |ns: &str| Api::<Pod>::namespaced(bed.controller.clone(), ns);
    allowed(
        pods("shop").evict("victim", &EvictParams::default()).await,
        "evict a pod in an opted-in namespace",
    );
    allowed(
        pods("shop")
            .delete("victim-2", &DeleteParams::default())
            .await,
        "delete a pod in an opted-in namespace",
    );
    refused_with(
        pods("closed")
            .evict("outsider", &EvictParams::default())
            .await,
        "did not (kubectl label namespace closed faultline.dev/chaos=enabled)",
        "evict in a namespace that did not opt in",
    );
    refused_with(
        pods("closed")
            .delete("outsider", &DeleteParams::default())
            .await,
        "did not",
        "delete in a namespace that did not opt in",
    );
    refused_with(
        pods("kube-system")
            .evict("system-pod", &EvictParams::default())
            .await,
        "kube-system: it is protected",
        "evict in kube-system",
    );
    refused_with(
        pods(RELEASE_NS)
            .delete("own-pod", &DeleteParams::default())
            .await,
        "faultline-system: it is protected",
        "delete in faultline's own namespace",
    );
    refused_with(
        pods("shop")
            .delete("guarded", &DeleteParams::default())
            .await,
        "guarded is labelled faultline.dev/protected=true",
        "delete a protected pod",
    );
    bed.cluster.shutdown().await;
}

/// The revert signal (the chart's `faultline-reverting` ConfigMap): the controller's token
/// writes and watches that one ConfigMap and creates none; the agent's token lists and watches it by name,
/// as the agent does, and adds only its own node's revert receipts there (the admission
/// policy): no signal, no other node's receipt, nothing else of the ConfigMap.
#[tokio::test]
async fn the_revert_signal_is_the_controllers_and_an_agent_adds_only_its_own_nodes_receipts() {
    // The bed applied the chart's ConfigMap with its RBAC.
    let Some(bed) = bed().await else { return };
    let as_controller: Api<ConfigMap> = Api::namespaced(bed.controller.clone(), RELEASE_NS);
    let raise = Patch::Merge(json!({"data": {"0b0e8e4c-uid": "shop/exp"}}));
    allowed(
        as_controller
            .patch(REVERTING_CONFIGMAP, &PatchParams::default(), &raise)
            .await,
        "the controller raises the revert signal",
    );
    allowed(
        as_controller
            .watch(
                &WatchParams::default().fields(&format!("metadata.name={REVERTING_CONFIGMAP}")),
                "0",
            )
            .await
            .map(|_| ()),
        "the controller watches the revert signal by name",
    );
    let other: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "not-faultlines"}})).unwrap();
    refused_with(
        as_controller.create(&PostParams::default(), &other).await,
        "forbidden",
        "the controller creates a ConfigMap",
    );
    let as_agent: Api<ConfigMap> = Api::namespaced(bed.agent_on_a.clone(), RELEASE_NS);
    let by_name = format!("metadata.name={REVERTING_CONFIGMAP}");
    let listed = as_agent
        .list(&ListParams::default().fields(&by_name))
        .await
        .expect("the agent lists the revert signal by name");
    assert_eq!(
        listed.items[0].data.as_ref().unwrap()["0b0e8e4c-uid"],
        "shop/exp"
    );
    allowed(
        as_agent
            .watch(&WatchParams::default().fields(&by_name), "0")
            .await
            .map(|_| ()),
        "the agent watches the revert signal by name",
    );
    // The receipts' policy loads on its own: wait until it refuses what it must.
    let dry_run = PatchParams {
        dry_run: true,
        ..Default::default()
    };
    let another = Patch::Merge(json!({"data": {"0b0e8e4c-uid2": "shop/other"}}));
    common::wait_for(
        "the receipt keys' policy to be in force",
        std::time::Duration::from_secs(30),
        || async {
            as_agent
                .patch(REVERTING_CONFIGMAP, &dry_run, &another)
                .await
                .is_err_and(|e| e.to_string().contains("only the revert receipts"))
                .then_some(())
        },
    )
    .await;
    let params = PatchParams::default();
    let receipt = r#"{"experiment":"shop/exp","node":"node-a","revertedAt":"2026-12-05T06:00:01Z","injections":2}"#;
    allowed(
        as_agent
            .patch(
                REVERTING_CONFIGMAP,
                &params,
                &Patch::Merge(json!({"data": {"0b0e8e4c-uid.node-a": receipt}})),
            )
            .await,
        "the agent leaves its own node's receipt",
    );
    for (what, data) in [
        (
            "the agent raises a revert signal",
            json!({"0b0e8e4c-uid2": "shop/other"}),
        ),
        (
            "the agent changes the controller's signal",
            json!({"0b0e8e4c-uid": "shop/other"}),
        ),
        (
            "the agent removes the controller's signal",
            json!({"0b0e8e4c-uid": null}),
        ),
        (
            "the agent writes another node's receipt",
            json!({"0b0e8e4c-uid.node-b": receipt}),
        ),
        (
            "the agent writes a key that only ends with its node's name",
            json!({"0b0e8e4c-uid.x.node-a": receipt}),
        ),
    ] {
        refused_with(
            as_agent
                .patch(
                    REVERTING_CONFIGMAP,
                    &params,
                    &Patch::Merge(json!({"data": data})),
                )
                .await,
            "only the revert receipts of the node its own pod runs on (keys <experiment uid>.node-a)",
            what,
        );
    }
    refused_with(
        as_agent
            .patch(
                REVERTING_CONFIGMAP,
                &params,
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "may change only data keys",
        "the agent labels the ConfigMap",
    );
    refused_with(
        as_agent
            .delete(REVERTING_CONFIGMAP, &DeleteParams::default())
            .await,
        "forbidden",
        "the agent deletes the ConfigMap",
    );
    let unbound = common::cluster::client_as(&bed.cluster, RELEASE_NS, AGENT, None).await;
    refused_with(
        Api::<ConfigMap>::namespaced(unbound, RELEASE_NS)
            .patch(
                REVERTING_CONFIGMAP,
                &params,
                &Patch::Merge(json!({"data": {"0b0e8e4c-uid.node-a": receipt}})),
            )
            .await,
        "only with a token bound to its pod",
        "an unbound agent token",
    );
    let kept = as_controller.get(REVERTING_CONFIGMAP).await.unwrap();
    let keys: Vec<&String> = kept.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["0b0e8e4c-uid", "0b0e8e4c-uid.node-a"]);
    bed.cluster.shutdown().await;
}

#[tokio::test]
async fn the_agent_changes_only_its_own_nodes_capabilities_annotation() {
    let Some(bed) = bed().await else { return };
    let nodes = Api::<Node>::all(bed.agent_on_a.clone());
    let merge = |patch: Value| Patch::Merge(patch);
    let params = PatchParams::default();
    allowed(
        nodes
            .patch(
                "node-a",
                &params,
                &merge(json!({"metadata": {"annotations": {"faultline.dev/capabilities": "nfqueue,nftables"}}})),
            )
            .await,
        "annotate its own node's capabilities",
    );
    refused_with(
        nodes
            .patch(
                "node-b",
                &params,
                &merge(
                    json!({"metadata": {"annotations": {"faultline.dev/capabilities": "netem"}}}),
                ),
            )
            .await,
        "may only change the Node its own pod runs on (node-a), not node-b",
        "annotate another node",
    );
    for (what, patch) in [
        (
            "cordon its own node",
            json!({"spec": {"unschedulable": false}}),
        ),
        (
            "taint its own node",
            json!({"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}),
        ),
        (
            "label its own node",
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        ),
        (
            "set another annotation",
            json!({"metadata": {"annotations": {"other": "x"}}}),
        ),
    ] {
        refused_with(
            nodes.patch("node-a", &params, &merge(patch)).await,
            "may change only the faultline.dev/capabilities annotation",
            what,
        );
    }
    // A token not bound to a pod says nothing about a node: it may change none.
    let unbound = common::cluster::client_as(&bed.cluster, RELEASE_NS, AGENT, None).await;
    refused_with(
        Api::<Node>::all(unbound)
            .patch(
                "node-a",
                &params,
                &merge(json!({"metadata": {"annotations": {"faultline.dev/capabilities": "x"}}})),
            )
            .await,
        "its token names no node",
        "an unbound agent token",
    );
    bed.cluster.shutdown().await;
}

/// What the receipts policy lets through: a pod-bound agent token writes its own node's entry
/// of `status.revertReceipts` (merged by the server beside the other nodes' entries) and
/// nothing else of an experiment; the controller's status writes, which leave the list out,
/// keep every entry.
#[tokio::test]
async fn the_agent_writes_only_its_own_nodes_revert_receipt() {
    let Some(bed) = bed().await else { return };
    let admin: Api<ChaosExperiment> = Api::namespaced(bed.admin.clone(), "shop");
    let experiment: ChaosExperiment = serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": "aborting", "namespace": "shop",
                     "labels": {"faultline.dev/reverting": "true"}},
        "spec": {"duration": "1m",
                 "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
                 "faults": [{"podKill": {}}]},
    }))
    .unwrap();
    admin
        .create(&PostParams::default(), &experiment)
        .await
        .unwrap();
    let apply = |manager: &str, status: Value| {
        let body = json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
                          "metadata": {"name": "aborting"}, "status": status});
        (PatchParams::apply(manager).force(), Patch::Apply(body))
    };
    let (params, patch) = apply(
        "faultline-controller",
        json!({"phase": "Aborting", "message": "aborting: probe web failed"}),
    );
    admin
        .patch_status("aborting", &params, &patch)
        .await
        .unwrap();
    let (params, patch) = apply(
        "faultline-agent-node-b",
        json!({"revertReceipts": [{"node": "node-b", "revertedAt": "2026-12-05T06:00:00Z", "injections": 3}]}),
    );
    admin
        .patch_status("aborting", &params, &patch)
        .await
        .unwrap();

    let as_agent: Api<ChaosExperiment> = Api::namespaced(bed.agent_on_a.clone(), "shop");
    // The policy on the status of a custom resource loads on its own, after the others.
    common::wait_for(
        "the receipts policy to be in force",
        std::time::Duration::from_secs(30),
        || async {
            let (params, patch) = apply(
                "faultline-agent-node-a",
                json!({"revertReceipts": [{"node": "node-b", "revertedAt": "2026-12-05T06:00:02Z"}]}),
            );
            as_agent
                .patch_status("aborting", &params.dry_run(), &patch)
                .await
                .is_err_and(|e| e.to_string().contains("only the revert receipt"))
                .then_some(())
        },
    )
    .await;
    let own = json!({"revertReceipts": [{"node": "node-a", "revertedAt": "2026-12-05T06:00:01Z", "injections": 2}]});
    let (params, patch) = apply("faultline-agent-node-a", own);
    allowed(
        as_agent.patch_status("aborting", &params, &patch).await,
        "write its own node's revert receipt",
    );
    let (params, patch) = apply(
        "faultline-agent-node-a",
        json!({"revertReceipts": [
            {"node": "node-a", "revertedAt": "2026-12-05T06:00:01Z", "injections": 2},
            {"node": "node-b", "revertedAt": "2026-12-05T06:00:02Z", "injections": 0}]}),
    );
    refused_with(
        as_agent.patch_status("aborting", &params, &patch).await,
        "only the revert receipt of the node its own pod runs on (node-a)",
        "write another node's receipt",
    );
    refused_with(
        as_agent
            .patch_status(
                "aborting",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
            )
            .await,
        "may change only status.revertReceipts",
        "change the experiment's phase",
    );
    refused_with(
        as_agent
            .patch(
                "aborting",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"faultline.dev/reverting": null}}})),
            )
            .await,
        "forbidden",
        "change the experiment itself",
    );
    let unbound = common::cluster::client_as(&bed.cluster, RELEASE_NS, AGENT, None).await;
    let (params, patch) = apply(
        "faultline-agent-node-a",
        json!({"revertReceipts": [{"node": "node-a", "revertedAt": "2026-12-05T06:00:01Z"}]}),
    );
    refused_with(
        Api::<ChaosExperiment>::namespaced(unbound, "shop")
            .patch_status("aborting", &params, &patch)
            .await,
        "only with a token bound to its pod",
        "an unbound agent token",
    );

    // A controller status write that leaves the list out (as from a view that knows neither
    // receipt): both stay, each owned by its agent.
    let (params, patch) = apply(
        "faultline-controller",
        json!({"phase": "Aborted", "message": "aborted: every fault is confirmed reverted"}),
    );
    let after = admin
        .patch_status("aborting", &params, &patch)
        .await
        .unwrap();
    let status = after.status.unwrap();
    assert_eq!(status.phase, faultline::api::Phase::Aborted);
    let nodes: Vec<(&str, i32)> = status
        .revert_receipts
        .iter()
        .map(|r| (r.node.as_str(), r.injections))
        .collect();
    assert_eq!(nodes, [("node-b", 3), ("node-a", 2)]);
    bed.cluster.shutdown().await;
}

fn injection(namespace: &str, target_namespace: &str, target: &str) -> FaultInjection {
    serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
        "metadata": {"name": format!("finj-{target}"), "namespace": namespace,
                     "labels": {"faultline.dev/node": "node-a"}},
        "spec": {
            "experiment": {"name": "nobody"},
            "target": {"namespace": target_namespace, "name": target, "uid": "0000"},
            "nodeName": "node-a",
            "fault": {"partition": "both", "peerCidrs": ["10.0.0.0/8"]},
            "expiresAt": "2030-01-01T00:00:00Z",
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn only_the_controller_writes_work_items_and_only_for_opted_in_pods() {
    let Some(bed) = bed().await else { return };
    // A user who may create FaultInjections through RBAC (an over-broad role, say).
    for object in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "mallory", "namespace": "shop"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "faultline-test-injector"},
               "rules": [{"apiGroups": ["faultline.dev"], "resources": ["faultinjections"],
                          "verbs": ["create", "get", "update", "patch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "faultline-test-injector"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "faultline-test-injector"},
               "subjects": [{"kind": "ServiceAccount", "name": "mallory", "namespace": "shop"}]}),
    ] {
        apply(&bed.admin, &object).await;
    }
    let mallory = common::cluster::client_as(&bed.cluster, "shop", "mallory", None).await;
    let create = |client: &Client, ns: &str, object: FaultInjection| {
        let api: Api<FaultInjection> = Api::namespaced(client.clone(), ns);
        async move { api.create(&PostParams::default(), &object).await }
    };
    refused_with(
        create(
            &mallory,
            "closed",
            injection("closed", "closed", "outsider"),
        )
        .await,
        "only the faultline controller creates FaultInjections",
        "a plain user's FaultInjection for a pod that did not opt in",
    );
    refused_with(
        create(&mallory, "shop", injection("shop", "shop", "victim")).await,
        "only the faultline controller creates FaultInjections",
        "a plain user's FaultInjection in an opted-in namespace",
    );
    refused_with(
        create(
            &bed.controller,
            "closed",
            injection("closed", "closed", "outsider"),
        )
        .await,
        "did not (kubectl label namespace closed",
        "the controller's FaultInjection in a namespace that did not opt in",
    );
    refused_with(
        create(
            &bed.controller,
            "shop",
            injection("shop", "kube-system", "system-pod"),
        )
        .await,
        "protected namespace kube-system",
        "the controller's FaultInjection for a pod in kube-system",
    );
    allowed(
        create(
            &bed.controller,
            "shop",
            injection("shop", "shop", "guarded-target"),
        )
        .await,
        "the controller's FaultInjection for a pod in its own opted-in namespace",
    );
    // The agent works the item (finalizer, status), but may not change what it asks for.
    let as_agent: Api<FaultInjection> = Api::namespaced(bed.agent_on_a.clone(), "shop");
    allowed(
        as_agent
            .patch(
                "finj-guarded-target",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["faultline.dev/agent-cleanup"]}})),
            )
            .await,
        "the agent holds its finalizer",
    );
    refused_with(
        as_agent
            .patch(
                "finj-guarded-target",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"target": {"name": "victim"}}})),
            )
            .await,
        "only the faultline controller creates FaultInjections or changes what they ask for",
        "the agent rewriting a work item",
    );

    // The namespace withdraws while the work item is there: nothing new may be asked in it,
    // but the agent may still let go of its finalizer once it has reverted; refused, the
    // FaultInjection, and the namespace with it, could never go.
    let namespaces: Api<Namespace> = Api::all(bed.admin.clone());
    let unlabel = json!({"metadata": {"labels": {"faultline.dev/chaos": null}}});
    namespaces
        .patch("shop", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let as_controller: Api<FaultInjection> = Api::namespaced(bed.controller.clone(), "shop");
    let refusal = common::wait_for(
        "the policy to see shop's consent withdrawn",
        std::time::Duration::from_secs(10),
        || async {
            as_controller
                .create(&dry_run, &injection("shop", "shop", "late-target"))
                .await
                .err()
        },
    )
    .await;
    refused_with::<()>(
        Err(refusal),
        "did not (kubectl label namespace shop",
        "the controller's new FaultInjection in a namespace that withdrew",
    );
    refused_with(
        as_controller
            .patch(
                "finj-guarded-target",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"target": {"name": "web-1"}}})),
            )
            .await,
        "did not (kubectl label namespace shop",
        "the controller retargeting a work item in a namespace that withdrew",
    );
    allowed(
        as_agent
            .patch(
                "finj-guarded-target",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await,
        "the agent letting go of its finalizer in a namespace that withdrew",
    );
    allowed(
        as_controller
            .delete("finj-guarded-target", &Default::default())
            .await,
        "the controller deleting a work item in a namespace that withdrew",
    );
    bed.cluster.shutdown().await;
}

/// The second lock, alone: without the admission policies (not installed, or a cluster older
/// than 1.30), an admin writes work items by hand, and the agent, running with its own token
/// and the chart's RBAC, refuses each with a status and a Warning Event and applies nothing.
#[tokio::test]
async fn a_work_item_that_slips_past_the_server_is_refused_by_the_agent() {
    let Some(bed) = bed_with(false).await else {
        return;
    };
    let uid_of = |ns: &str, name: &str| {
        let pods = Api::<Pod>::namespaced(bed.admin.clone(), ns);
        let name = name.to_string();
        async move { pods.get(&name).await.unwrap().metadata.uid.unwrap() }
    };
    let outsider = uid_of("closed", "outsider").await;
    let victim = uid_of("shop", "victim").await;
    let kernel = RecordingKernel::full();
    kernel.add_pod(&outsider);
    kernel.add_pod(&victim);
    let journal = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        nodes: vec!["node-a".into()],
        journal_dir: journal.path().to_path_buf(),
        resync: std::time::Duration::from_millis(500),
        policy: Policy::new(RELEASE_NS),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(runner::run(
        bed.agent_on_a.clone(),
        Arc::new(kernel.clone()),
        config,
        AgentMetrics::new(),
        async move {
            let _ = stopped.await;
        },
    ));

    let hand_written = |namespace: &str, name: &str, target_ns: &str, target: &str, uid: &str| {
        let mut object = injection(namespace, target_ns, target);
        object.metadata.name = Some(name.into());
        object.spec.target.uid = uid.into();
        object
    };
    let cases = [
        // A pod in a namespace that did not opt in, work item next to it.
        (
            hand_written("closed", "closed-pod", "closed", "outsider", &outsider),
            "NamespaceNotOptedIn",
        ),
        // Written in the opted-in namespace, for a pod in one that did not opt in.
        (
            hand_written("shop", "reach-out", "closed", "outsider", &outsider),
            "NamespaceNotOptedIn",
        ),
        // An opted-in pod, but no experiment behind the work item.
        (
            hand_written("shop", "no-experiment", "shop", "victim", &victim),
            "ExperimentNotFound",
        ),
    ];
    for (object, _) in &cases {
        let namespace = object.metadata.namespace.clone().unwrap();
        allowed(
            Api::<FaultInjection>::namespaced(bed.admin.clone(), &namespace)
                .create(&PostParams::default(), object)
                .await,
            "an admin's FaultInjection without the admission policies",
        );
    }
    for (object, reason) in &cases {
        let namespace = object.metadata.namespace.clone().unwrap();
        let name = object.metadata.name.clone().unwrap();
        let api = Api::<FaultInjection>::namespaced(bed.admin.clone(), &namespace);
        let status = common::wait_for(
            &format!("{namespace}/{name} refused ({reason})"),
            std::time::Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let status = api.get(&name).await.ok()?.status?;
                    (status.phase == InjectionPhase::Failed).then_some(status)
                }
            },
        )
        .await;
        let admitted = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Admitted")
            .unwrap_or_else(|| panic!("{name}: no Admitted condition: {status:?}"));
        assert_eq!(admitted.reason, *reason, "{name}: {status:?}");
        let events = Api::<Event>::namespaced(bed.admin.clone(), &namespace);
        common::wait_for(
            &format!("a Warning Event {reason} about {name}"),
            std::time::Duration::from_secs(30),
            || {
                let events = events.clone();
                let name = name.clone();
                async move {
                    events
                        .list(&Default::default())
                        .await
                        .ok()?
                        .items
                        .into_iter()
                        .find(|e| {
                            e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some(name.as_str())
                                && e.reason.as_deref() == Some(*reason)
                                && e.type_.as_deref() == Some("Warning")
                        })
                }
            },
        )
        .await;
    }
    assert_eq!(
        kernel.apply_count(),
        0,
        "nothing applied: {:?}",
        kernel.rules()
    );
    assert!(kernel.rules().is_empty(), "{:?}", kernel.rules());
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
    bed.cluster.shutdown().await;
}
