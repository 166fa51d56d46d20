//! The workload simulator against the sandbox API server, through the kube client only:
//! Deployments become ReplicaSets become pods that get scheduled, addressed and Ready; killed
//! pods are replaced; evictions honour budgets end to end.

mod common;

use common::{api_err, server, wait_for};
use faultline::sandbox::workloads::{WorkloadOptions, Workloads, deployment};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

fn fast() -> WorkloadOptions {
    WorkloadOptions {
        nodes: 3,
        replacement_delay: Duration::from_millis(100),
        start_delay: Duration::from_millis(100),
        ..Default::default()
    }
}

/// A client without kube's default retry of 429s (it would retry a refused eviction for minutes).
fn client(srv: &common::ApiServer) -> Client {
    let mut config = srv.client_config();
    config.default_retry = false;
    Client::try_from(config).unwrap()
}

fn running_and_ready(p: &Pod) -> bool {
    let status = p.status.clone().unwrap_or_default();
    p.metadata.deletion_timestamp.is_none()
        && status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Wait until exactly `n` pods labelled app=`app` exist and all are Running and Ready.
async fn ready_pods(pods: &Api<Pod>, app: &str, n: usize) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("app={app}"));
    wait_for(&format!("{n} ready {app} pods"), TIMEOUT, || async {
        let list = pods.list(&lp).await.ok()?.items;
        (list.len() == n && list.iter().all(running_and_ready)).then_some(list)
    })
    .await
}

async fn ready_replicas(deploys: &Api<Deployment>, name: &str, n: i32) -> Deployment {
    wait_for(
        &format!("deployment {name} with {n} ready replicas"),
        TIMEOUT,
        || async {
            let d = deploys.get(name).await.ok()?;
            let s = d.status.clone()?;
            (s.ready_replicas == Some(n) && s.replicas == Some(n) && s.updated_replicas == Some(n))
                .then_some(d)
        },
    )
    .await
}

#[tokio::test]
async fn a_deployment_of_three_yields_three_ready_pods_with_nodes_and_unique_ips() {
    let srv = server().await;
    let client = client(&srv);
    let workloads = Workloads::start(client.clone(), fast()).await.unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let node_names: Vec<String> = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .map(|n| n.name_any())
        .collect();
    assert_eq!(
        node_names,
        ["sandbox-node-1", "sandbox-node-2", "sandbox-node-3"]
    );

    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deploys
        .create(
            &PostParams::default(),
            &deployment("default", "web", 3, &[("app", "web")]),
        )
        .await
        .unwrap();
    let ready = ready_pods(&pods, "web", 3).await;

    let rs: Vec<ReplicaSet> = Api::<ReplicaSet>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(rs.len(), 1);
    let hash = rs[0].labels()["pod-template-hash"].clone();
    assert_eq!(rs[0].name_any(), format!("web-{hash}"));
    assert_eq!(rs[0].owner_references()[0].kind, "Deployment");

    let mut ips = HashSet::new();
    let mut used_nodes = HashSet::new();
    for pod in &ready {
        assert!(
            pod.name_any().starts_with(&format!("web-{hash}-")),
            "{}",
            pod.name_any()
        );
        assert_eq!(pod.owner_references()[0].name, rs[0].name_any());
        let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(node_names.contains(&node));
        used_nodes.insert(node);
        let status = pod.status.as_ref().unwrap();
        let ip = status.pod_ip.clone().unwrap();
        assert!(ip.starts_with("10.244."), "{ip}");
        assert!(ips.insert(ip), "pod IPs are unique");
        let containers = status.container_statuses.clone().unwrap();
        assert!(
            containers
                .iter()
                .all(|c| c.ready && c.started == Some(true) && c.restart_count == 0)
        );
        for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert!(
                status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == t && c.status == "True"),
                "{t}"
            );
        }
    }
    assert_eq!(
        used_nodes.len(),
        3,
        "round robin spreads three pods over three nodes"
    );

    let d = ready_replicas(&deploys, "web", 3).await;
    let conditions = d.status.unwrap().conditions.unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    );
    workloads.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_deleted_pod_is_replaced_and_the_replacement_becomes_ready() {
    let srv = server().await;
    let client = client(&srv);
    let workloads = Workloads::start(client.clone(), fast()).await.unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deploys
        .create(
            &PostParams::default(),
            &deployment("default", "web", 3, &[("app", "web")]),
        )
        .await
        .unwrap();
    let before = ready_pods(&pods, "web", 3).await;
    let victim = before[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        api_err(pods.get(&victim).await).code,
        404,
        "a pod without finalizers goes at once"
    );

    let after = wait_for("a ready replacement", TIMEOUT, || async {
        let list = ready_pods(&pods, "web", 3).await;
        list.iter().all(|p| p.name_any() != victim).then_some(list)
    })
    .await;
    let old: HashSet<String> = before.iter().map(|p| p.name_any()).collect();
    assert_eq!(
        after
            .iter()
            .filter(|p| !old.contains(&p.name_any()))
            .count(),
        1
    );
    ready_replicas(&deploys, "web", 3).await;
    workloads.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn evictions_respect_a_disruption_budget_end_to_end() {
    let srv = server().await;
    let client = client(&srv);
    // A slow replacement keeps the budget exhausted for seconds: the second eviction lands
    // inside that window even when a loaded machine stalls it.
    let options = WorkloadOptions {
        replacement_delay: Duration::from_secs(5),
        ..fast()
    };
    let workloads = Workloads::start(client.clone(), options).await.unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(client.clone());
    deploys
        .create(
            &PostParams::default(),
            &deployment("default", "web", 3, &[("app", "web")]),
        )
        .await
        .unwrap();
    let ready = ready_pods(&pods, "web", 3).await;
    let pdb = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();

    // One disruption is allowed; the second, before a replacement is Ready, is refused.
    pods.evict(&ready[0].name_any(), &EvictParams::default())
        .await
        .unwrap();
    let s = api_err(
        pods.evict(&ready[1].name_any(), &EvictParams::default())
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(
        s.details.unwrap().causes[0].message,
        "The disruption budget web needs 2 healthy pods and has 2 currently"
    );

    // Once the replacement is Ready, the budget allows one disruption again.
    wait_for(
        "the budget to allow a disruption again",
        TIMEOUT,
        || async {
            let status = pdbs.get("web").await.ok()?.status?;
            (status.disruptions_allowed == 1 && status.current_healthy == 3).then_some(())
        },
    )
    .await;
    pods.evict(&ready[1].name_any(), &EvictParams::default())
        .await
        .unwrap();
    ready_pods(&pods, "web", 3).await;
    workloads.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn scaling_up_to_five_and_down_to_one_converges() {
    let srv = server().await;
    let client = client(&srv);
    let workloads = Workloads::start(client.clone(), fast()).await.unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deploys
        .create(
            &PostParams::default(),
            &deployment("default", "web", 3, &[("app", "web")]),
        )
        .await
        .unwrap();
    ready_pods(&pods, "web", 3).await;

    let scale = |n: i32| json!({"spec": {"replicas": n}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(5)))
        .await
        .unwrap();
    let five = ready_pods(&pods, "web", 5).await;
    let ips: HashSet<String> = five
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(ips.len(), 5);
    ready_replicas(&deploys, "web", 5).await;

    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(scale(1)))
        .await
        .unwrap();
    ready_pods(&pods, "web", 1).await;
    ready_replicas(&deploys, "web", 1).await;
    workloads.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn a_pod_held_by_a_finalizer_is_terminated_after_its_grace_period() {
    let srv = server().await;
    let client = client(&srv);
    let workloads = Workloads::start(client.clone(), fast()).await.unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deploys
        .create(
            &PostParams::default(),
            &deployment("default", "web", 2, &[("app", "web")]),
        )
        .await
        .unwrap();
    let victim = ready_pods(&pods, "web", 2).await[0].name_any();
    let hold = json!({"metadata": {"finalizers": ["example.com/hold"]}});
    pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    pods.delete(&victim, &DeleteParams::default().grace_period(1))
        .await
        .unwrap();

    // The kubelet waits out the grace period, reports the pod terminated and confirms the
    // deletion; the finalizer keeps the object, the ReplicaSet replaces it meanwhile.
    wait_for("the kubelet to terminate the pod", TIMEOUT, || async {
        let p = pods.get(&victim).await.ok()?;
        let done = p.status?.phase.as_deref() == Some("Succeeded")
            && p.metadata.deletion_grace_period_seconds == Some(0);
        done.then_some(())
    })
    .await;
    wait_for("a ready replacement", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        let ready = list.iter().filter(|p| running_and_ready(p)).count();
        (ready == 2).then_some(())
    })
    .await;
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch(&victim, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    assert_eq!(api_err(pods.get(&victim).await).code, 404);
    workloads.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_prompt_and_leaves_the_server_usable() {
    let srv = server().await;
    let client = client(&srv);
    let workloads = Workloads::start(client.clone(), fast()).await.unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    deploys
        .create(
            &PostParams::default(),
            &deployment("default", "web", 2, &[("app", "web")]),
        )
        .await
        .unwrap();
    ready_pods(&Api::default_namespaced(client.clone()), "web", 2).await;
    tokio::time::timeout(Duration::from_secs(5), workloads.shutdown())
        .await
        .expect("the simulator stops within 5s");
    // The cluster state stays; a new simulator picks it up (and keeps the pods it finds).
    let again = Workloads::start(client.clone(), fast()).await.unwrap();
    ready_replicas(&deploys, "web", 2).await;
    again.shutdown().await;
    srv.shutdown().await;
}

#[tokio::test]
async fn pods_marked_not_ready_by_another_are_reported_ready_again_also_after_a_restart() {
    let srv = server().await;
    let client = client(&srv);
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let workloads = Workloads::start(client.clone(), fast()).await.unwrap();
    deploys
        .create(
            &PostParams::default(),
            &deployment("default", "web", 2, &[("app", "web")]),
        )
        .await
        .unwrap();
    let before = ready_pods(&pods, "web", 2).await;
    workloads.shutdown().await;

    // While no kubelet answers for its node, the node lifecycle controller marks its pods not
    // ready; simulated containers did not die with the kubelet.
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    for pod in &before {
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(not_ready.clone()),
        )
        .await
        .unwrap();
    }
    assert!(
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .iter()
            .all(|p| !running_and_ready(p))
    );

    let restarted = Workloads::start(client.clone(), fast()).await.unwrap();
    let after = ready_pods(&pods, "web", 2).await;
    let uids = |pods: &[Pod]| {
        pods.iter()
            .map(|p| p.uid().unwrap())
            .collect::<HashSet<_>>()
    };
    assert_eq!(
        uids(&after),
        uids(&before),
        "the same pods, not replacements"
    );
    for pod in &after {
        let status = pod.status.as_ref().unwrap();
        assert_eq!(
            status.container_statuses.as_ref().unwrap()[0].restart_count,
            0,
            "{status:?}"
        );
        assert_eq!(
            status.pod_ip,
            before
                .iter()
                .find(|p| p.uid() == pod.uid())
                .unwrap()
                .status
                .as_ref()
                .unwrap()
                .pod_ip
        );
    }

    // The same while the simulator runs: marked not ready by someone else, reported Ready again.
    let marked = &after[0].name_any();
    pods.patch_status(
        marked,
        &PatchParams::default(),
        &Patch::Strategic(not_ready.clone()),
    )
    .await
    .unwrap();
    ready_pods(&pods, "web", 2).await;
    restarted.shutdown().await;
    srv.shutdown().await;
}
