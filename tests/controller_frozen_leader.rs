//! Split brain: two `faultline controller` replicas, and the leader is frozen (SIGSTOP) longer
//! than its lease, again and again, while the workload of `common::disturbed` runs (pod kills,
//! latencies, an abort, a game day, a schedule). The standby takes over; then the frozen one
//! wakes (SIGCONT) believing it still leads, with reconciles in flight and a cache from before.
//! Whatever it tries then must fail against the newer state (status writes are conditional on
//! the resourceVersion), so what `disturbed` checks must hold: no pod killed twice or instead
//! of another, no stage or run started twice, every verdict right, no fault left.
//!
//! The freeze moments come from a seed printed by the test; `FAULTLINE_CRASH_SEED=N` replays
//! them. The agent is the in-process stand-in.

mod common;

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{disturbed::Workload, wait_for};
use faultline::api::all_crds;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

/// A controller process, killed (SIGKILL) when dropped.
struct Replica {
    child: Child,
    identity: &'static str,
}

impl Drop for Replica {
    fn drop(&mut self) {
        signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status();
}

/// A replica with a 6-second lease renewed 2 seconds early.
fn replica(kubeconfig: &std::path::Path, identity: &'static str) -> Replica {
    let child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args([
            "controller",
            "--admin-addr",
            "127.0.0.1:0",
            "--namespace",
            "faultline-system",
            "--lease-duration-seconds",
            "6",
            "--lease-grace-seconds",
            "2",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", identity)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start faultline controller");
    Replica { child, identity }
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "faultline-system");
    leases
        .get_opt("faultline-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_and_woken_changes_nothing_it_no_longer_owns() {
    let mut seed = common::disturbed::seed();
    let cluster = common::TestCluster::start().await;
    cluster.install_crds(&all_crds()).await;
    let client = cluster.client().await;
    common::cluster::apply_namespace(&client, "faultline-system", false).await;
    common::cluster::apply_namespace(&client, "shop", true).await;
    if cluster.is_real() {
        common::cluster::cordoned_node(&client, "node-1").await;
    }
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(faultline::sandbox::testkit::stand_in_agent(
        client.clone(),
        agent_stopped,
    ));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
    let replicas = [
        replica(&kubeconfig, "replica-a"),
        replica(&kubeconfig, "replica-b"),
    ];
    wait_for("a leader", Duration::from_secs(20), || holder(&client)).await;
    let url = common::disturbed::healthy_service().await;
    let workload = Workload::start(&client, &url).await;

    let started = std::time::Instant::now();
    let mut freezes = 0;
    let mut abort_sent = false;
    while started.elapsed() < Duration::from_secs(30) {
        // Let the leader work for a random moment, then freeze it past its lease.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(500 + seed % 2500)).await;
        let Some(leader) = holder(&client).await else {
            continue;
        };
        let Some(frozen) = replicas.iter().find(|r| r.identity == leader) else {
            continue;
        };
        signal(&frozen.child, "STOP");
        let taken = wait_for(
            "the standby to take the lease",
            Duration::from_secs(30),
            || async { holder(&client).await.filter(|h| *h != leader) },
        )
        .await;
        // A moment for the new leader to act on the old one's work, then wake the old one.
        tokio::time::sleep(Duration::from_millis(500 + seed % 1500)).await;
        signal(&frozen.child, "CONT");
        freezes += 1;
        eprintln!("froze {leader} past its lease; {taken} took over; woke {leader}");
        if !abort_sent && started.elapsed() > Duration::from_secs(8) {
            workload.abort_one(&client).await;
            abort_sent = true;
        }
    }
    if !abort_sent {
        workload.abort_one(&client).await;
    }
    eprintln!("{freezes} leaders frozen past their lease and woken");
    assert!(freezes >= 2, "only {freezes} freezes");
    // Each takeover leaves the schedule without a leader for a lease's length: fewer runs.
    workload.check(&client, 1).await;

    drop(replicas);
    let _ = stop_agent.send(());
    let _ = agent.await;
    cluster.shutdown().await;
}
