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

use std::time::Duration;

use common::{
    disturbed::Workload,
    replicas::{Replica, ReplicaBed, holder},
    wait_for,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_and_woken_changes_nothing_it_no_longer_owns() {
    let mut seed = common::disturbed::seed();
    let bed = ReplicaBed::start().await;
    let client = bed.client.clone();
    // A 6-second lease renewed 2 seconds early.
    let replicas = [
        Replica::start(&bed.kubeconfig, "replica-a", 6, 2),
        Replica::start(&bed.kubeconfig, "replica-b", 6, 2),
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
        frozen.signal("STOP");
        let taken = wait_for(
            "the standby to take the lease",
            Duration::from_secs(30),
            || async { holder(&client).await.filter(|h| *h != leader) },
        )
        .await;
        // A moment for the new leader to act on the old one's work, then wake the old one.
        tokio::time::sleep(Duration::from_millis(500 + seed % 1500)).await;
        frozen.signal("CONT");
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
    bed.shutdown().await;
}
