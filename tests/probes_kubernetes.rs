//! The Kubernetes probe against the sandbox API server: conditions, fields and Ready pods of
//! real objects read through discovery and `DynamicObject`s, with the workload simulator
//! making a Deployment's pods Ready.

mod common;

use std::time::Duration;

use common::{server, wait_for};
use faultline::{
    api::{Probe, all_crds},
    probes::{CheckOutcome, ProbeRunner},
    sandbox::workloads::{WorkloadOptions, Workloads, deployment},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Namespace, Service},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

/// Runs one check of a probe named `p` whose `kubernetes` part is `kubernetes` (YAML flow).
async fn check(client: &Client, kubernetes: &str) -> CheckOutcome {
    let probe: Probe = serde_yaml::from_str(&format!(
        "{{name: p, timeout: 5s, kubernetes: {kubernetes}}}"
    ))
    .unwrap();
    ProbeRunner::new(&probe, "shop", Some(client))
        .unwrap()
        .run_once()
        .await
}

fn error(outcome: &CheckOutcome) -> &str {
    assert!(!outcome.ok, "expected a failure, got {outcome:?}");
    outcome.error.as_deref().unwrap()
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

/// A Deployment the simulator does not run (no simulator in the test), with `status` as given.
async fn deployment_with_status(
    client: &Client,
    name: &str,
    labels: &[(&str, &str)],
    status: serde_json::Value,
) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    api.create(&PostParams::default(), &deployment("shop", name, 3, labels))
        .await
        .unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .unwrap();
}

/// `web` in `shop`: three pods, Ready, behind a Service `web`.
async fn running_web(client: &Client) -> Workloads {
    let options = WorkloadOptions {
        nodes: 2,
        replacement_delay: Duration::from_millis(100),
        start_delay: Duration::from_millis(50),
        ..Default::default()
    };
    let workloads = Workloads::start(client.clone(), options).await.unwrap();
    namespace(client, "shop").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    deployments
        .create(
            &PostParams::default(),
            &deployment("shop", "web", 3, &[("app", "web")]),
        )
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    wait_for("web to be available", Duration::from_secs(10), || async {
        let d = deployments.get("web").await.ok()?;
        (d.status?.ready_replicas == Some(3)).then_some(())
    })
    .await;
    workloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_with_its_pods_ready_passes_every_check() {
    let srv = server().await;
    let client = srv.client().await;
    let workloads = running_web(&client).await;

    // All three checks on the Deployment.
    let outcome = check(
        &client,
        "{apiVersion: apps/v1, kind: Deployment, name: web, condition: {type: Available}, \
         field: {path: .status.readyReplicas, operator: '>=', value: '3'}, readyPods: {min: 3}}",
    )
    .await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(
        outcome.value.as_deref(),
        Some("deployments/web Available=True, .status.readyReplicas=3, 3/3 pods Ready")
    );
    // The pods behind a Service, the pods a label selector picks, the Deployment's ReplicaSet.
    for kubernetes in [
        "{apiVersion: v1, kind: Service, name: web, readyPods: {min: 3}}",
        "{apiVersion: v1, kind: Pod, labelSelector: app=web, readyPods: {min: 3}}",
        "{apiVersion: apps/v1, kind: ReplicaSet, labelSelector: app=web, readyPods: {min: 3}}",
        // A string field compared as text.
        "{apiVersion: v1, kind: Pod, labelSelector: app=web, \
          field: {path: .status.phase, value: Running}}",
        // A cluster-scoped kind ignores the namespace.
        "{apiVersion: v1, kind: Node, name: sandbox-node-1, condition: {type: Ready}}",
    ] {
        let outcome = check(&client, kubernetes).await;
        assert!(outcome.ok, "{kubernetes}: {outcome:?}");
    }
    workloads.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failing_check_names_the_object_and_the_value() {
    let srv = server().await;
    let client = srv.client().await;
    let workloads = running_web(&client).await;
    let deploy = "apiVersion: apps/v1, kind: Deployment, name: web";
    // Each row: the checks, and the whole error.
    let rows = [
        (
            "field: {path: .status.readyReplicas, operator: '>=', value: '5'}",
            "probe p: deployments/web .status.readyReplicas is 3, expected >= 5",
        ),
        (
            "field: {path: '.spec.template.spec.containers[0].image', operator: '!=', \
             value: 'sandbox.local/app:1'}",
            "probe p: deployments/web .spec.template.spec.containers[0].image is \
             sandbox.local/app:1, expected != sandbox.local/app:1",
        ),
        (
            "field: {path: .status.nope, value: '1'}",
            "probe p: deployments/web has no field .status.nope (expected .status.nope == 1)",
        ),
        (
            "field: {path: .metadata.name, operator: '>', value: '1'}",
            "probe p: deployments/web .metadata.name cannot be compared: \"web\" is not a \
             number; > compares numbers only",
        ),
        (
            "readyPods: {min: 4}",
            "probe p: deployments/web: 3 of 3 pods Ready, expected at least 4",
        ),
        (
            "condition: {type: Available, status: 'False'}",
            "probe p: deployments/web condition Available is True (expected False): \
             Deployment has minimum availability.",
        ),
        (
            "condition: {type: Healthy}",
            "probe p: deployments/web has no condition Healthy (expected True)",
        ),
        // Two checks failing: both are listed.
        (
            "readyPods: {min: 4}, field: {path: .spec.replicas, operator: '<', value: '3'}",
            "probe p: deployments/web .spec.replicas is 3, expected < 3; \
             deployments/web: 3 of 3 pods Ready, expected at least 4",
        ),
    ];
    for (checks, expected) in rows {
        let outcome = check(&client, &format!("{{{deploy}, {checks}}}")).await;
        assert_eq!(error(&outcome), expected, "{checks}");
    }
    let outcome = check(
        &client,
        "{apiVersion: v1, kind: Pod, labelSelector: app=web, readyPods: {min: 4}}",
    )
    .await;
    assert_eq!(
        error(&outcome),
        "probe p: 3 of 3 pods Ready, expected at least 4"
    );
    let outcome = check(
        &client,
        "{apiVersion: v1, kind: Service, name: web, readyPods: {min: 4}}",
    )
    .await;
    assert_eq!(
        error(&outcome),
        "probe p: services/web: 3 of 3 pods Ready, expected at least 4"
    );
    workloads.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_false_condition_quotes_the_condition_message() {
    let srv = server().await;
    let client = srv.client().await;
    namespace(&client, "shop").await;
    deployment_with_status(
        &client,
        "db",
        &[("app", "db")],
        json!({"readyReplicas": 1, "conditions": [{"type": "Available", "status": "False",
            "reason": "MinimumReplicasUnavailable",
            "message": "Deployment does not have minimum availability."}]}),
    )
    .await;
    let outcome = check(
        &client,
        "{apiVersion: apps/v1, kind: Deployment, name: db, condition: {type: Available}}",
    )
    .await;
    assert_eq!(
        error(&outcome),
        "probe p: deployments/db condition Available is False (expected True): \
         Deployment does not have minimum availability."
    );
    assert_eq!(
        outcome.value.as_deref(),
        Some("deployments/db Available=False")
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_missing_object_fails_naming_it_and_its_namespace() {
    let srv = server().await;
    let client = srv.client().await;
    namespace(&client, "shop").await;
    namespace(&client, "billing").await;
    let outcome = check(
        &client,
        "{apiVersion: apps/v1, kind: Deployment, name: web, readyPods: {min: 1}}",
    )
    .await;
    assert_eq!(
        error(&outcome),
        "probe p: deployments/web not found in namespace shop"
    );
    // The probe's own namespace wins over the experiment's.
    let outcome = check(
        &client,
        "{apiVersion: v1, kind: Service, namespace: billing, name: api, readyPods: {min: 1}}",
    )
    .await;
    assert_eq!(
        error(&outcome),
        "probe p: services/api not found in namespace billing"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn a_label_selector_needs_every_matching_object_to_pass() {
    let srv = server().await;
    let client = srv.client().await;
    namespace(&client, "shop").await;
    for (name, ready) in [("a", 2), ("b", 3), ("c", 1)] {
        deployment_with_status(
            &client,
            name,
            &[("tier", "web"), ("app", name)],
            json!({"readyReplicas": ready}),
        )
        .await;
    }
    // Another tier's Deployment is not looked at.
    deployment_with_status(&client, "z", &[("tier", "db")], json!({"readyReplicas": 0})).await;
    let probe = "{apiVersion: apps/v1, kind: Deployment, labelSelector: 'tier in (web)', \
                 field: {path: .status.readyReplicas, operator: '>=', value: '2'}}";
    let outcome = check(&client, probe).await;
    assert_eq!(
        error(&outcome),
        "probe p: deployments/c .status.readyReplicas is 1, expected >= 2"
    );
    assert_eq!(
        outcome.value.as_deref(),
        Some(
            "deployments/a .status.readyReplicas=2; deployments/b .status.readyReplicas=3; \
             deployments/c .status.readyReplicas=1"
        )
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    deployments
        .patch_status(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 2}})),
        )
        .await
        .unwrap();
    let outcome = check(&client, probe).await;
    assert!(outcome.ok, "{outcome:?}");
    // A selector that matches nothing proves nothing.
    let outcome = check(
        &client,
        "{apiVersion: apps/v1, kind: Deployment, labelSelector: tier=cache, \
         field: {path: .status.readyReplicas, operator: '>=', value: '2'}}",
    )
    .await;
    assert_eq!(
        error(&outcome),
        "probe p: no deployments match labelSelector \"tier=cache\" in namespace shop"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn an_unknown_kind_fails_with_a_clear_message_until_its_crd_is_installed() {
    let srv = server().await;
    let client = srv.client().await;
    namespace(&client, "shop").await;
    let outcome = check(
        &client,
        "{apiVersion: apps/v1, kind: Deplyoment, name: web, condition: {type: Available}}",
    )
    .await;
    assert_eq!(
        error(&outcome),
        "probe p: kind Deplyoment is not served in apps/v1 (check the kind's spelling, or \
         whether its CRD is installed)"
    );
    // A group the server does not have; the same checker again once the CRD is there (a
    // failed discovery is not cached).
    let probe: Probe = serde_yaml::from_str(
        "{name: p, kubernetes: {apiVersion: faultline.dev/v1alpha1, kind: ChaosExperiment, \
         name: x, field: {path: .status.phase, value: Succeeded}}}",
    )
    .unwrap();
    let runner = ProbeRunner::new(&probe, "shop", Some(&client)).unwrap();
    let outcome = runner.run_once().await;
    assert_eq!(
        error(&outcome),
        "probe p: apiVersion faultline.dev/v1alpha1 is not served by the cluster, so kind \
         ChaosExperiment cannot be found (check the apiVersion, or whether its CRD is installed)"
    );
    srv.install_crds(&all_crds()).await.unwrap();
    let outcome = runner.run_once().await;
    assert_eq!(
        error(&outcome),
        "probe p: chaosexperiments/x not found in namespace shop"
    );
    srv.shutdown().await;
}
