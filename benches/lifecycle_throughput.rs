//! Lifecycle throughput: 1,000 one-second experiments created at once, each on its own pod,
//! measured until every one is terminal. Two rounds, each on a fresh API server and
//! controller: a network fault (FaultInjections held by the stand-in agent) and a pod kill by
//! delete. The pods are spread over opted-in namespaces of `PODS_PER_NAMESPACE` pods.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    time::Instant,
};

use common::{
    ApiCalls, Bed, Calls, PodSpec, create_experiments, create_pods, machine, metric, namespace,
    percentiles, pod_ip, print_table,
};
use faultline::api::ChaosExperiment;
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};

/// How many experiments per round: `FAULTLINE_BENCH_EXPERIMENTS`, by default 1,000 (about 75 s
/// for both rounds on 2 cores).
fn experiments() -> usize {
    std::env::var("FAULTLINE_BENCH_EXPERIMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}
/// Each experiment's pod shares its namespace with this many others. (The controller asks the
/// API server for the pods its selector matches, so neighbours cost it nothing; before it did,
/// 1,000 pods in one namespace ran it out of memory.)
const PODS_PER_NAMESPACE: usize = 10;

fn namespace_of(pod: usize) -> String {
    format!("team-{}", pod / PODS_PER_NAMESPACE)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    NetworkLatency,
    PodKill,
}

struct Round {
    fault: Fault,
    seconds: f64,
    finished: Vec<f64>,
    reconciles: u64,
    failures: Vec<String>,
    /// From the metric, which counts a verdict once its status write succeeded.
    verdicts: Vec<String>,
    /// `reason` of each terminal experiment, as its status says.
    reasons: BTreeMap<String, usize>,
    mean_reconcile_ms: f64,
    writes: u64,
    calls: BTreeMap<String, Calls>,
}

#[tokio::main]
async fn main() {
    let calls = ApiCalls::install();
    let mut rounds = Vec::new();
    for fault in [Fault::NetworkLatency, Fault::PodKill] {
        rounds.push(round(fault, &calls).await);
    }

    let n = experiments() as f64;
    let rows = rounds
        .iter()
        .map(|r| {
            let p = percentiles(&r.finished);
            vec![
                format!("{:?}", r.fault),
                format!("{:.1}", r.seconds),
                format!("{:.1}", n / r.seconds),
                format!("{:.1} / {:.1} / {:.1}", p.p50, p.p90, p.max),
                r.reconciles.to_string(),
                format!("{:.1}", r.reconciles as f64 / n),
                format!("{:.1}", r.mean_reconcile_ms),
                format!("{:.1}", r.writes as f64 / n),
                r.reasons
                    .iter()
                    .map(|(reason, n)| format!("{reason} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.verdicts.join(", "),
                if r.failures.is_empty() {
                    "none".into()
                } else {
                    r.failures.join(", ")
                },
            ]
        })
        .collect::<Vec<_>>();
    print_table(
        &format!(
            "lifecycle_throughput: {} experiments of 1s on 1 pod each, created at once ({})",
            experiments(),
            machine()
        ),
        &[
            "fault",
            "all terminal (s)",
            "experiments/s",
            "terminal at p50 / p90 / max (s)",
            "reconciles",
            "reconciles/experiment",
            "mean reconcile (ms)",
            "API writes/experiment",
            "status.reason of the terminal experiments",
            "faultline_experiments_finished_total",
            "faultline_reconcile_failures_total",
        ],
        &rows,
    );
    let kinds: HashSet<&String> = rounds.iter().flat_map(|r| r.calls.keys()).collect();
    let mut kinds: Vec<&String> = kinds.into_iter().collect();
    kinds.sort();
    let rows = kinds
        .into_iter()
        .map(|kind| {
            let mut row = vec![kind.clone()];
            row.extend(rounds.iter().map(|r| {
                let c = r.calls.get(kind).copied().unwrap_or_default();
                format!("{:.2} ({:.1} ms)", c.count as f64 / n, c.mean_ms())
            }));
            row
        })
        .collect::<Vec<_>>();
    let mut header = vec!["API call made inside reconciles".to_string()];
    header.extend(
        rounds
            .iter()
            .map(|r| format!("{:?}: per experiment (mean time)", r.fault)),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table("lifecycle_throughput: API calls", &header, &rows);
}

async fn round(fault: Fault, calls: &ApiCalls) -> Round {
    let bed = Bed::start().await;
    for n in 0..experiments().div_ceil(PODS_PER_NAMESPACE) {
        namespace(&bed.client, &namespace_of(n * PODS_PER_NAMESPACE), true).await;
    }
    let pods = (0..experiments())
        .map(|i| PodSpec {
            namespace: namespace_of(i),
            name: format!("pod-{i}"),
            app: format!("app-{i}"),
            ip: pod_ip(i),
        })
        .collect();
    create_pods(&bed.client, pods).await;
    let specs = (0..experiments())
        .map(|i| {
            let app = format!("app-{i}");
            let spec = match fault {
                Fault::NetworkLatency => common::latency_spec(&app, "1s"),
                Fault::PodKill => common::pod_kill_spec(&app, "1s"),
            };
            (namespace_of(i), format!("exp-{i}"), spec)
        })
        .collect();

    // The watch starts (and has listed nothing) before the first experiment exists.
    let api: Api<ChaosExperiment> = Api::all(bed.client.clone());
    let mut events = watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    calls.take();
    let writes_before = bed.server.resource_version();
    let started = Instant::now();
    let creating = tokio::spawn(create_experiments(bed.client.clone(), specs));
    let mut terminal = HashSet::new();
    let mut finished = Vec::new();
    let mut reasons = BTreeMap::<String, usize>::new();
    while terminal.len() < experiments() {
        let Some(event) = events.next().await else {
            panic!("the experiment watch ended");
        };
        let Ok(experiment) = event else { continue };
        let Some(status) = experiment.status.as_ref() else {
            continue;
        };
        if status.phase.is_terminal()
            && terminal.insert(format!(
                "{}/{}",
                experiment.namespace().unwrap_or_default(),
                experiment.name_any()
            ))
        {
            finished.push(started.elapsed().as_secs_f64());
            let reason = status.reason.clone().unwrap_or_default();
            *reasons.entry(reason).or_default() += 1;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    creating.await.expect("creating experiments");
    // The controller counts a verdict once its write has returned, which can be just after the
    // watch above has shown it: give the last ones a moment.
    let counted = Instant::now();
    while finished_total(&bed.telemetry.metrics.render()) < experiments() as f64
        && counted.elapsed() < std::time::Duration::from_secs(5)
    {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Writes by anyone (controller, agent, the bench's creates) over the round.
    let writes = bed.server.resource_version() - writes_before;
    let metrics = bed.telemetry.metrics.render();
    let labelled = |prefix: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].to_string())
            .collect::<Vec<_>>()
    };
    let duration_sum: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("faultline_reconcile_duration_seconds_sum "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    let reconciles = metric(&metrics, "faultline_reconciliations_total");
    let result = Round {
        fault,
        seconds,
        finished,
        reconciles,
        failures: labelled("faultline_reconcile_failures_total"),
        verdicts: labelled("faultline_experiments_finished_total"),
        reasons,
        mean_reconcile_ms: duration_sum * 1e3 / reconciles.max(1) as f64,
        writes,
        calls: calls.take(),
    };
    bed.stop().await;
    result
}

/// The sum of `faultline_experiments_finished_total` over its verdicts.
fn finished_total(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("faultline_experiments_finished_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}
