//! The API server stops answering mid-fault (root, real control plane only): `kill -STOP` of
//! kube-apiserver, so every request of the controller and the agent hangs, as in an outage
//! or a control plane under a long GC pause. The agent still ends a partition at its
//! deadline (`expiresAt`, the experiment's end plus a few seconds), while the API server is
//! frozen; once it answers again the experiment ends with its verdict, and the report says
//! when the faults really left (the targets' revert times at the deadline, a
//! `FaultsOutBeforeRevert` timeline entry) rather than when the controller could confirm it.
//!
//! Against the sandbox API server the test says so and returns: it runs in the same process
//! as the test, so there is nothing to freeze apart from the rest.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::cluster::{TestCluster, real_cluster_requested, real_kubeconfig};
use common::sandbox_cli::{Down, up_attached};
use common::wait_for;
use faultline::agent::testnet::root_or_skip;
use faultline::api::{ChaosExperiment, FaultInjection, InjectionPhase, Phase, Verdict};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

/// The frozen API server, thawed when dropped: a failing assertion must never leave the
/// shared control plane stopped for the tests after this one.
struct Frozen(Pid);
impl Frozen {
    fn freeze(pid: Pid) -> Frozen {
        kill(pid, Signal::SIGSTOP).expect("stop kube-apiserver");
        Frozen(pid)
    }
}
impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

fn api_server_pid() -> Pid {
    let file = real_kubeconfig().with_file_name("kube-apiserver.pid");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (started by scripts/cluster.sh?)", file.display()));
    Pid::from_raw(text.trim().parse().expect("a pid"))
}

fn ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.pod_ip.is_some()
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// Whether `from_netns` reaches `ip`:8080 within half a second.
fn reaches(from_netns: &str, ip: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from_netns, "curl", "-s", "-o", "/dev/null"])
        .args(["-m", "0.5", &format!("http://{ip}:8080/healthz")])
        .status()
        .is_ok_and(|s| s.success())
}

fn netns_prefix(state: &Path) -> String {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    match state["pod_slot"].as_u64().expect("real pods as root") {
        0 => "flsbx-".to_string(),
        slot => format!("flsbx{slot}-"),
    }
}

async fn experiment(client: &Client) -> ChaosExperiment {
    Api::<ChaosExperiment>::namespaced(client.clone(), "default")
        .get("outage-partition")
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_ends_at_its_deadline_while_the_api_server_is_frozen() {
    if !root_or_skip(
        "api_server_outage::a_partition_ends_at_its_deadline_while_the_api_server_is_frozen",
    ) {
        return;
    }
    if !real_cluster_requested() {
        eprintln!(
            "api_server_outage: real control plane only (FAULTLINE_TEST_CLUSTER=real): the \
             sandbox API server runs inside this test process"
        );
        return;
    }
    let cluster = TestCluster::start().await;
    let client = cluster.client().await;
    let work = tempfile::tempdir().unwrap();
    let kubeconfig = work.path().join("cluster.kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
    let state = work.path().join("sandbox");
    let _down = Down(state.clone());
    up_attached(&state, &kubeconfig, &["--apply", "experiments/workloads/"]);
    let prefix = netns_prefix(&state);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (web, api) = wait_for("the demo's web and api pods Ready", TIMEOUT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?.items;
        let of = |tier: &str| -> Vec<Pod> {
            list.iter()
                .filter(|p| p.labels().get("tier").map(String::as_str) == Some(tier))
                .filter(|p| ready(p))
                .cloned()
                .collect()
        };
        let (web, api) = (of("web"), of("api"));
        (web.len() == 3 && api.len() == 2).then_some((web, api))
    })
    .await;
    let web_netns = format!("{prefix}{}", &web[0].uid().unwrap()[..8]);
    let api_ip = api[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    assert!(
        reaches(&web_netns, &api_ip),
        "web reaches api before the fault"
    );

    let manifest = json!({
        "apiVersion": "faultline.dev/v1alpha1",
        "kind": "ChaosExperiment",
        "metadata": {"name": "outage-partition", "namespace": "default"},
        "spec": {
            "duration": "10s",
            "target": {"labelSelector": {"matchLabels": {"tier": "web"}}, "mode": "All"},
            "faults": [{"networkPartition": {"direction": "both",
                "peers": {"selector": {"matchLabels": {"tier": "api"}}}}}],
        },
    });
    Api::<ChaosExperiment>::namespaced(client.clone(), "default")
        .patch(
            "outage-partition",
            &PatchParams::apply("faultline-tests"),
            &Patch::Apply(&manifest),
        )
        .await
        .unwrap();
    let injections: Api<FaultInjection> = Api::namespaced(client.clone(), "default");
    let expires_at = wait_for(
        "the partition applied on every web pod",
        TIMEOUT,
        || async {
            let list = injections.list(&ListParams::default()).await.ok()?.items;
            let applied = list.len() == 3
                && list.iter().all(|i| {
                    i.status
                        .as_ref()
                        .is_some_and(|s| s.phase == InjectionPhase::Applied)
                });
            applied.then(|| list[0].spec.expires_at)
        },
    )
    .await;
    assert!(
        !reaches(&web_netns, &api_ip),
        "the partition cuts web from api"
    );

    let frozen = Frozen::freeze(api_server_pid());
    let frozen_at = Utc::now();
    // Reachable again within a second of the deadline, with the API server frozen throughout.
    let give_up = Instant::now()
        + (expires_at - Utc::now()).to_std().unwrap_or_default()
        + Duration::from_secs(10);
    // The time an attempt started, not when curl returned: on a loaded machine starting the
    // processes alone can take a good part of a second, which is not the fault's doing.
    let reachable_at = loop {
        let tried_at = Utc::now();
        if reaches(&web_netns, &api_ip) {
            break tried_at;
        }
        assert!(
            Instant::now() < give_up,
            "the partition outlived its deadline {expires_at} by 10 s with the API server frozen"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // A moment more frozen, so that nothing but the agent's own deadline can have ended it.
    std::thread::sleep(Duration::from_secs(2));
    drop(frozen);
    let thawed_at = Utc::now();
    eprintln!(
        "frozen {frozen_at}, deadline {expires_at}, web reached api again {reachable_at} \
         ({} ms after the deadline), thawed {thawed_at}",
        (reachable_at - expires_at).num_milliseconds()
    );
    assert!(
        reachable_at - expires_at < chrono::TimeDelta::seconds(1),
        "ended {} ms after its deadline",
        (reachable_at - expires_at).num_milliseconds()
    );
    assert!(
        reachable_at > expires_at - chrono::TimeDelta::milliseconds(500),
        "never before the experiment's end: reachable at {reachable_at}, deadline {expires_at}"
    );

    let ended = wait_for(
        "the experiment's verdict after the outage",
        TIMEOUT,
        || async {
            let e = experiment(&client).await;
            e.status
                .as_ref()
                .is_some_and(|s| s.phase.is_terminal())
                .then_some(e)
        },
    )
    .await;
    let status = ended.status.unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.message);
    assert_eq!(status.verdict, Some(Verdict::Passed));
    for target in &status.targets {
        let reverted = target.reverted_at.expect("a revert time");
        assert!(
            (reverted - expires_at).num_milliseconds().abs() < 1000,
            "{}: reverted at {reverted}, the deadline was {expires_at}: the report must say when \
             the fault left, not when the controller could confirm it ({thawed_at})",
            target.name
        );
    }
    assert!(
        status
            .timeline
            .iter()
            .any(|e| e.reason == "FaultsOutBeforeRevert"),
        "the timeline says the agents ended the faults before the controller could: {:?}",
        status.timeline
    );
    wait_for("every FaultInjection gone", TIMEOUT, || async {
        injections
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(reaches(&web_netns, &api_ip));
    cluster.shutdown().await;
}
