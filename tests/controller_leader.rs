//! Two `faultline controller` processes against one API server: only the lease holder
//! reconciles, and when it dies the standby takes over.

mod common;

use std::time::Duration;

use common::{
    replicas::{Replica, ReplicaBed, holder},
    wait_for,
};
use faultline::api::{ChaosExperiment, ChaosExperimentSpec, Phase, TargetState};
use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{
    Api, Client,
    api::{ListParams, PostParams},
};
use serde_json::json;

/// The replicas' bed with three ready `web` pods in `shop` for the experiments to kill.
async fn bed_with_three_web_pods() -> ReplicaBed {
    let bed = ReplicaBed::start().await;
    for i in 0..3 {
        let (name, ip) = (format!("web-{i}"), format!("10.244.0.{}", i + 10));
        common::cluster::ready_pod(&bed.client, "shop", &name, "web", &ip, None).await;
    }
    bed
}

async fn run_experiment(client: &Client, name: &str) -> String {
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), "shop");
    let spec: ChaosExperimentSpec = serde_json::from_value(json!({
        "duration": "1s",
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "One"},
        "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0}}]
    }))
    .unwrap();
    experiments
        .create(&PostParams::default(), &ChaosExperiment::new(name, spec))
        .await
        .unwrap();
    wait_for(
        &format!("{name} to succeed"),
        Duration::from_secs(30),
        || async {
            let e = experiments.get(name).await.ok()?;
            (e.status?.phase == Phase::Succeeded).then_some(())
        },
    )
    .await;
    // Who acted: every Event about the experiment names the replica that wrote it.
    let events: Api<Event> = Api::namespaced(client.clone(), "shop");
    let mut writers: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reporting_instance)
        .collect();
    writers.sort();
    writers.dedup();
    assert_eq!(
        writers.len(),
        1,
        "events about {name} came from {writers:?}"
    );
    writers.remove(0)
}

// Multi-threaded: the controllers are separate processes talking to this runtime's server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_the_standby_takes_over_when_it_dies() {
    let bed = bed_with_three_web_pods().await;
    let client = bed.client.clone();
    // A short lease, for a quick takeover, yet with two seconds for a renewal on a loaded API
    // server.
    let mut replicas = vec![
        Replica::start(&bed.kubeconfig, "replica-a", 6, 2),
        Replica::start(&bed.kubeconfig, "replica-b", 6, 2),
    ];
    let leader = wait_for("a leader", Duration::from_secs(15), || holder(&client)).await;
    assert!(leader == "replica-a" || leader == "replica-b", "{leader}");

    let writer = run_experiment(&client, "first").await;
    assert_eq!(writer, leader, "only the lease holder acted");

    // Kill the leader outright: no lease release, so the standby waits for it to expire.
    replicas.retain(|r| r.identity != leader);
    let standby = replicas[0].identity.clone();
    let new_leader = wait_for(
        "the standby to take the lease",
        Duration::from_secs(20),
        || async { holder(&client).await.filter(|h| *h == standby) },
    )
    .await;
    let writer = run_experiment(&client, "second").await;
    assert_eq!(writer, new_leader);
    drop(replicas);
    bed.shutdown().await;
}

// The chart's lease (15 s, renewed 5 s early), a pod kill and a network fault in flight under a
// 1 s HTTP probe: the leader dies by SIGKILL while the faults are in. The standby takes the
// lease and carries the experiment to its verdict from what status records: it kills no pod
// twice, reverts the fault, keeps the probe samples from before the failover, records the time
// without checks as a gap (the report's timeline shows it) and judges the hypothesis on fresh
// checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_experiment_hands_over_without_repeating_or_leaving_a_fault() {
    let bed = bed_with_three_web_pods().await;
    let client = bed.client.clone();
    let mut replicas = vec![
        Replica::start(&bed.kubeconfig, "replica-a", 15, 5),
        Replica::start(&bed.kubeconfig, "replica-b", 15, 5),
    ];
    let leader = wait_for("a leader", Duration::from_secs(20), || holder(&client)).await;

    let url = common::disturbed::healthy_service().await;
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), "shop");
    let spec: ChaosExperimentSpec = serde_json::from_value(json!({
        // Long enough for the standby to take over (about 15.5 s) with faults still in.
        "duration": "30s",
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "Fixed", "value": 2},
        "faults": [
            {"podKill": {"method": "delete", "gracePeriodSeconds": 0}},
            {"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}
        ],
        "steadyState": {"recoveryTimeout": "20s", "probes": [
            {"name": "shop", "http": {"url": url}, "interval": "1s", "timeout": "900ms"}]}
    }))
    .unwrap();
    experiments
        .create(
            &PostParams::default(),
            &ChaosExperiment::new("failover", spec),
        )
        .await
        .unwrap();
    // The faults are in and status shows the leader's checks during them.
    let before = wait_for(
        "the faults to be in and checked",
        Duration::from_secs(40),
        || async {
            let status = experiments.get("failover").await.ok()?.status?;
            let during = status.probes.first()?.samples.len();
            // Both kills are in; each latency went in or went with its killed pod (`Gone`:
            // whether its agent reported it applied first is a race).
            let latencies_settled = status
                .targets
                .iter()
                .filter(|t| t.injection.is_some())
                .all(|t| matches!(t.state, TargetState::Injected | TargetState::Gone));
            (status.phase == Phase::Running
                && during >= 4
                && status.faults_injected >= 2
                && latencies_settled)
                .then_some(status)
        },
    )
    .await;
    let samples_before = before.probes[0].samples.clone();

    replicas.retain(|r| r.identity != leader);
    let killed_at = chrono::Utc::now();
    let killed = std::time::Instant::now();
    let standby = replicas[0].identity.clone();
    wait_for(
        "the standby to take the lease",
        Duration::from_secs(40),
        || async { holder(&client).await.filter(|h| *h == standby) },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!(
        "leader {leader} killed mid-experiment; {standby} holds the lease {:.1} s later (lease 15 s, renewed 5 s early)",
        takeover.as_secs_f64()
    );

    let done = wait_for("the verdict", Duration::from_secs(60), || async {
        let e = experiments.get("failover").await.ok()?;
        matches!(
            e.status.as_ref()?.phase,
            Phase::Succeeded | Phase::Failed | Phase::Aborted
        )
        .then_some(e)
    })
    .await;
    let status = done.status.clone().unwrap();
    assert_eq!(status.phase, Phase::Succeeded, "{:?}", status.message);
    assert_eq!(status.verdict, Some(faultline::api::Verdict::Passed));
    // The samples from before the failover are still there, and fresh ones after it.
    let samples = &status.probes[0].samples;
    for sample in &samples_before {
        assert!(samples.contains(sample), "lost {sample:?}");
    }
    let last_before = samples_before.last().unwrap().time;
    let took_over = killed_at + chrono::Duration::from_std(takeover).unwrap();
    assert!(
        samples.iter().filter(|s| s.time >= took_over).count() >= 5,
        "{samples:?}"
    );
    // The time without checks is a gap, from the last recorded check to the first fresh one.
    assert_eq!(status.probe_gaps.len(), 1, "{:?}", status.probe_gaps);
    let gap = &status.probe_gaps[0];
    assert_eq!(gap.reason, "ControllerChanged");
    assert!(gap.from >= last_before && gap.from <= killed_at, "{gap:?}");
    let to = gap.to.expect("the gap is closed");
    assert!(to >= took_over - chrono::Duration::seconds(1), "{gap:?}");
    assert!(
        samples.iter().all(|s| s.time <= gap.from || s.time >= to),
        "no check inside the gap"
    );
    assert!(
        status.timeline.iter().any(|e| e.reason == "ProbesResumed"
            && e.message.starts_with("no probe checked anything for")),
        "{:?}",
        status.timeline
    );
    // The report's timeline shows it.
    let html = faultline::report::html::render(&done, chrono::Utc::now());
    assert!(html.contains("<g class=\"probe-gap\">"), "{html}");
    assert!(html.contains("gap in the probe checks: "), "{html}");
    assert!(html.contains("<dt>Gap in the probe checks</dt>"), "{html}");
    let kills = status
        .timeline
        .iter()
        .filter(|e| e.reason == "PodKilled")
        .count();
    assert_eq!(kills, 2, "each target killed once across the failover");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    let injections: Api<faultline::api::FaultInjection> = Api::namespaced(client.clone(), "shop");
    wait_for("every fault reverted", Duration::from_secs(10), || async {
        injections
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    drop(replicas);
    bed.shutdown().await;
}
