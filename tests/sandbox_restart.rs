//! The sandbox killed and started again, as a kubelet is (root only: real pods). `faultline
//! sandbox up --cluster` plays the kubelets of a cluster that outlives it; after a `kill -9`
//! the pods it ran are still bound to its nodes and still say Running, but their processes are
//! gone (the next start removes an earlier sandbox's leftovers). Started again, it must do what
//! a restarted kubelet does: a new pod sandbox (`SandboxChanged`), the containers started again
//! with `restartCount` one higher, the pod Ready and answering, never a Running pod with nothing
//! behind it.
//!
//! Runs against the embedded API server (in this test process, so that it outlives the killed
//! sandbox) and, with `FAULTLINE_TEST_CLUSTER=real`, against the real control plane.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::TestCluster;
use common::sandbox_cli::{Down, sandbox, up_attached};
use common::wait_for;
use faultline::agent::testnet::root_or_skip;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn up(state: &Path, kubeconfig: &Path) -> u32 {
    up_attached(state, kubeconfig, &["--no-controller", "--no-agent"])
}

/// A bare demo-app pod bound to the sandbox's first node (no scheduler, no ReplicaSet: the
/// same on both API servers).
async fn bound_pod(pods: &Api<Pod>, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": "sandbox-node-1",
            "containers": [{"name": "app", "image": "faultline-demo",
                            "ports": [{"containerPort": 8080}]}],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap()
}

fn ready(pod: &Pod) -> bool {
    let status = pod.status.clone().unwrap_or_default();
    status.phase.as_deref() == Some("Running")
        && status.pod_ip.is_some()
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map_or(-1, |c| c.restart_count)
}

async fn healthz(pod: &Pod) -> u16 {
    let ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match client.get(format!("http://{ip}:8080/healthz")).send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

async fn sandbox_changed_events(client: &Client, pod: &str) -> usize {
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .filter(|e| e.reason.as_deref() == Some("SandboxChanged"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_started_again_restarts_the_pods_it_ran() {
    if !root_or_skip("sandbox_restart::a_killed_sandbox_started_again_restarts_the_pods_it_ran") {
        return;
    }
    let cluster = TestCluster::start().await;
    let client = cluster.client().await;
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("cluster.kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
    let state = work.path().join("sandbox");
    let _down = Down(state.clone());

    let first = up(&state, &kubeconfig);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = bound_pod(&pods, "web-0").await;
    let before = wait_for("web-0 Ready", TIMEOUT, || async {
        pods.get_opt("web-0").await.ok()?.filter(ready)
    })
    .await;
    assert_eq!(
        healthz(&before).await,
        200,
        "the pod answers before the kill"
    );
    assert_eq!(restart_count(&before), 0);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the killed sandbox to be gone", TIMEOUT, || async {
        let stat = std::fs::read_to_string(format!("/proc/{first}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.split_whitespace().nth(2) == Some("Z")).then_some(())
    })
    .await;

    let second = up(&state, &kubeconfig);
    assert_ne!(first, second);
    let after = wait_for("web-0 started again and Ready", TIMEOUT, || async {
        pods.get_opt("web-0")
            .await
            .ok()?
            .filter(|p| ready(p) && restart_count(p) == 1)
    })
    .await;
    assert_eq!(after.uid(), created.uid(), "the same pod, not a new one");
    assert_eq!(
        healthz(&after).await,
        200,
        "a Running pod has a process behind it: {:?}",
        after.status
    );
    let old_container = container_id(&before);
    let new_container = container_id(&after);
    assert_ne!(
        old_container, new_container,
        "a new container process: {:?}",
        after.status
    );
    assert!(
        sandbox_changed_events(&client, "web-0").await >= 1,
        "the restarted kubelet says why the containers started again"
    );

    // A second pod after the restart starts as a new one does.
    bound_pod(&pods, "web-1").await;
    let fresh = wait_for("web-1 Ready", TIMEOUT, || async {
        pods.get_opt("web-1").await.ok()?.filter(ready)
    })
    .await;
    assert_eq!(restart_count(&fresh), 0);
    assert_eq!(healthz(&fresh).await, 200);

    // The node lifecycle controller marks a silent node's pods not ready (an API server outage
    // longer than its grace period does it to every pod); the kubelet reports them Ready again
    // once it sees their containers ready, as a kubelet's status sync does.
    let not_ready = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "NodeNotReady"}]}});
    pods.patch_status(
        "web-1",
        &PatchParams::default(),
        &Patch::Strategic(not_ready),
    )
    .await
    .unwrap();
    wait_for("web-1 Ready again", TIMEOUT, || async {
        pods.get_opt("web-1").await.ok()?.filter(ready)
    })
    .await;

    let down = sandbox(&state, &["down"]);
    assert!(down.status.success(), "{down:?}");
    cluster.shutdown().await;
}

fn container_id(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .clone()
}
