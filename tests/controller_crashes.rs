//! A controller that crash-loops. One `faultline controller` process is killed with SIGKILL at
//! random moments and started again at once under the same identity, as the container of a
//! crash-looping pod is, while experiments with pod kills, network latency and HTTP probes run
//! and one of them is aborted. Wherever a kill lands (between a pod's delete and the status that
//! records it, between a FaultInjection's create and the targets list, in the middle of a
//! revert), each experiment reaches the verdict it would have reached without the crashes, no
//! pod is killed twice and no other pod is killed instead, and no fault is left.
//!
//! The moments come from a seed printed by the test; `FAULTLINE_CRASH_SEED=N` replays a run.
//! The agent is the in-process stand-in (it confirms applies and reverts through the API): the
//! subject here is the controller, whose crashes are not the kernel's business.

mod common;

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::wait_for;
use faultline::api::{
    ChaosExperiment, ChaosExperimentSpec, FaultInjection, Phase, Verdict, all_crds,
};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const GROUPS: usize = 3;
const PODS_PER_GROUP: usize = 4;
const KILLS_PER_GROUP: usize = 2;

/// A controller process, killed (SIGKILL) when dropped.
struct Controller(Child);

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A controller under the one identity every restart shares (a pod's name survives the
/// restarts of its container), so that a restart takes its own lease back at once.
fn start_controller(kubeconfig: &std::path::Path) -> Controller {
    let child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "controller",
            "--admin-addr",
            "127.0.0.1:0",
            "--namespace",
            "faultline-system",
            "--lease-duration-seconds",
            "15",
            "--lease-grace-seconds",
            "5",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", "faultline-controller-0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start faultline controller");
    Controller(child)
}

/// xorshift64*: enough randomness for crash moments, and a run is replayed from its seed.
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, from: u64, to: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        from + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (to - from)
    }
}

async fn ready_pod(client: &Client, name: &str, group: usize) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": format!("web-{group}")}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "demo"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

async fn healthy_service() -> String {
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn experiment(group: usize, url: &str) -> ChaosExperimentSpec {
    serde_json::from_value(json!({
        "duration": "8s",
        "target": {"labelSelector": {"matchLabels": {"app": format!("web-{group}")}},
                   "mode": "Fixed", "value": KILLS_PER_GROUP},
        "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0}}],
        "steadyState": {"recoveryTimeout": "20s", "probes": [
            {"name": "shop", "http": {"url": url}, "interval": "1s", "timeout": "900ms"}]}
    }))
    .unwrap()
}

fn latency_experiment(group: usize, duration: &str, url: &str) -> ChaosExperimentSpec {
    serde_json::from_value(json!({
        "duration": duration,
        "target": {"labelSelector": {"matchLabels": {"app": format!("web-{group}")}},
                   "mode": "All"},
        "faults": [{"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
        "steadyState": {"recoveryTimeout": "20s", "probes": [
            {"name": "shop", "http": {"url": url}, "interval": "1s", "timeout": "900ms"}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_controller_kills_each_target_once_and_leaves_no_fault() {
    let seed = std::env::var("FAULTLINE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash moments from seed {seed} (replay: FAULTLINE_CRASH_SEED={seed})");
    let mut moments = Moments(seed);

    let cluster = common::TestCluster::start().await;
    cluster.install_crds(&all_crds()).await;
    let client = cluster.client().await;
    common::cluster::apply_namespace(&client, "faultline-system", false).await;
    common::cluster::apply_namespace(&client, "shop", true).await;
    if cluster.is_real() {
        common::cluster::cordoned_node(&client, "node-1").await;
    }
    // Groups 0..GROUPS for the pod kills, GROUPS and GROUPS + 1 for the latencies.
    for group in 0..GROUPS + 2 {
        for i in 0..PODS_PER_GROUP {
            ready_pod(&client, &format!("web-{group}-{i}"), group).await;
        }
    }
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(faultline::sandbox::testkit::stand_in_agent(
        client.clone(),
        agent_stopped,
    ));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
    let url = healthy_service().await;

    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), "shop");
    let mut names = Vec::new();
    for group in 0..GROUPS {
        let name = format!("kill-{group}");
        experiments
            .create(
                &PostParams::default(),
                &ChaosExperiment::new(&name, experiment(group, &url)),
            )
            .await
            .unwrap();
        names.push(name);
    }
    for (name, group, duration) in [("latency", GROUPS, "8s"), ("aborted", GROUPS + 1, "5m")] {
        experiments
            .create(
                &PostParams::default(),
                &ChaosExperiment::new(name, latency_experiment(group, duration, &url)),
            )
            .await
            .unwrap();
        names.push(name.to_string());
    }

    // Crash and restart for a while; abort one experiment in the middle of it.
    let mut controller = start_controller(&kubeconfig);
    let crashing = std::time::Instant::now();
    let mut crashes = 0;
    let mut abort_sent = false;
    while crashing.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_millis(moments.next_millis(150, 2500))).await;
        drop(controller);
        crashes += 1;
        if !abort_sent && crashing.elapsed() > Duration::from_secs(8) {
            // `faultline abort` is an annotation: it must hold across the restarts.
            let abort = json!({"metadata": {"annotations": {
                faultline::api::ABORT_ANNOTATION: "crash-loop test"}}});
            experiments
                .patch("aborted", &PatchParams::default(), &Patch::Merge(abort))
                .await
                .unwrap();
            abort_sent = true;
        }
        controller = start_controller(&kubeconfig);
    }
    eprintln!("killed the controller {crashes} times in 25 s; it now runs undisturbed");

    let mut verdicts = BTreeMap::new();
    for name in &names {
        let done = wait_for(
            &format!("{name} to finish"),
            Duration::from_secs(90),
            || async {
                let e = experiments.get(name).await.ok()?;
                e.status.as_ref()?.phase.is_terminal().then_some(e)
            },
        )
        .await;
        verdicts.insert(name.clone(), done);
    }
    for (name, done) in &verdicts {
        let status = done.status.as_ref().unwrap();
        eprintln!(
            "{name}: {:?} {:?}: {}",
            status.phase,
            status.verdict,
            status.message.as_deref().unwrap_or_default()
        );
        if name == "aborted" {
            assert_eq!(status.phase, Phase::Aborted, "{name}: {status:?}");
        } else {
            assert_eq!(status.phase, Phase::Succeeded, "{name}: {status:?}");
            assert_eq!(status.verdict, Some(Verdict::Passed), "{name}: {status:?}");
        }
    }

    // Each group lost exactly the pods its experiment chose, once each.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let remaining = pods.list(&ListParams::default()).await.unwrap().items;
    for group in 0..GROUPS {
        let prefix = format!("web-{group}-");
        let left = remaining
            .iter()
            .filter(|p| p.metadata.name.as_deref().unwrap().starts_with(&prefix))
            .count();
        let status = verdicts[&format!("kill-{group}")].status.clone().unwrap();
        assert_eq!(
            left,
            PODS_PER_GROUP - KILLS_PER_GROUP,
            "group {group}: {left} pods left; targets {:#?}; timeline {:#?}",
            status.targets,
            status.timeline
        );
        let mut killed: Vec<&str> = status
            .timeline
            .iter()
            .filter(|e| e.reason == "PodKilled")
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(
            killed.len(),
            KILLS_PER_GROUP,
            "group {group}: {killed:?}; targets {:#?}; timeline {:#?}",
            status.targets,
            status.timeline
        );
        killed.dedup();
        assert_eq!(killed.len(), KILLS_PER_GROUP, "group {group}: {killed:?}");
    }
    for group in [GROUPS, GROUPS + 1] {
        let prefix = format!("web-{group}-");
        let left = remaining
            .iter()
            .filter(|p| p.metadata.name.as_deref().unwrap().starts_with(&prefix))
            .count();
        assert_eq!(
            left, PODS_PER_GROUP,
            "a latency killed a pod of group {group}"
        );
    }

    // No fault is left: every FaultInjection was reverted and went.
    let injections: Api<FaultInjection> = Api::namespaced(client.clone(), "shop");
    wait_for("every fault reverted", Duration::from_secs(30), || async {
        injections
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    drop(controller);
    let _ = stop_agent.send(());
    let _ = agent.await;
    cluster.shutdown().await;
}

// The worst moment, made on purpose: the answer to the first pod's delete is held back, so the
// controller has killed it and recorded nothing, and then it dies. The next controller finds
// both kills under way: it records the first as done (the pod is gone) and kills the second,
// never a third pod.
#[tokio::test]
async fn a_controller_stopped_between_a_kill_and_its_record_finishes_the_kills_without_repeating_one()
 {
    let held = common::held_responses::HeldResponses::new(&["/pods/"]);
    let mut h = common::harness::Harness::start_holding(&held).await;
    common::harness::shop_with_web_pods(&h, 4).await;
    h.create(
        "shop",
        "halfway",
        json!({
            "duration": "2s",
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "Fixed", "value": 2},
            "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0}}]
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "shop");
    wait_for(
        "the first kill to go through",
        Duration::from_secs(30),
        || async {
            let left = pods.list(&ListParams::default()).await.ok()?.items.len();
            (left == 3).then_some(())
        },
    )
    .await;
    let experiments = h.experiments("shop");
    let stopped = experiments.get("halfway").await.unwrap().status.unwrap();
    assert_eq!(stopped.phase, Phase::Injecting);
    assert!(
        stopped
            .targets
            .iter()
            .all(|t| t.state == faultline::api::TargetState::Injecting),
        "{:?}",
        stopped.targets
    );

    h.crash_and_restart_controller().await;
    let done = h.wait_phase("shop", "halfway", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Passed),
        "{:?}",
        status.message
    );
    let kills: Vec<&str> = status
        .timeline
        .iter()
        .filter(|e| e.reason == "PodKilled")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(kills.len(), 2, "{kills:?}");
    assert_eq!(
        kills
            .iter()
            .filter(|m| m.contains("found gone when its kill was taken up again"))
            .count(),
        1,
        "{kills:?}"
    );
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        2,
        "two pods killed, no more"
    );
    held.release();
    h.stop().await;
}
