//! Lifecycle throughput: 1,000 experiments created at once, each on its own pod, measured until
//! every one is terminal. Three rounds, each on a fresh API server and controller: a one-second
//! network fault (FaultInjections held by the stand-in agent), a one-second pod kill by delete,
//! and a network fault of `FAULTLINE_BENCH_PROBED_DURATION` (10s) under an HTTP probe checked
//! every second by the controller's real probe hub, whose results go into status as they come.
//! The pods are spread over opted-in namespaces of `PODS_PER_NAMESPACE` pods.
//!
//! Status writes are counted as the controller's `PATCH chaosexperiments/status` requests; per
//! minute of fault window, as the watch events of each experiment while it is Running (every
//! status write is one event) over the time it was Running.

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

/// How long the probed round's faults stay in: `FAULTLINE_BENCH_PROBED_DURATION`, default 10s.
fn probed_duration() -> String {
    std::env::var("FAULTLINE_BENCH_PROBED_DURATION").unwrap_or_else(|_| "10s".into())
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    NetworkLatency,
    PodKill,
    /// A network fault under an HTTP probe every second (the real probe hub).
    ProbedLatency,
}

impl Fault {
    fn label(self) -> String {
        match self {
            Fault::NetworkLatency => "NetworkLatency 1s".into(),
            Fault::PodKill => "PodKill 1s".into(),
            Fault::ProbedLatency => format!("NetworkLatency {} + 1s probe", probed_duration()),
        }
    }
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
    /// Watch events of experiments while Running, and the seconds they were Running, summed.
    running_events: u64,
    running_seconds: f64,
}

impl Round {
    /// The controller's status writes (`PATCH chaosexperiments/status` inside reconciles).
    fn status_writes(&self) -> u64 {
        self.calls
            .get("PATCH chaosexperiments/status")
            .map_or(0, |c| c.count)
    }

    /// Every API request the controller's reconciles made.
    fn requests(&self) -> u64 {
        self.calls.values().map(|c| c.count).sum()
    }
}

#[tokio::main]
async fn main() {
    let calls = ApiCalls::install();
    let mut rounds = Vec::new();
    for fault in [Fault::NetworkLatency, Fault::PodKill, Fault::ProbedLatency] {
        rounds.push(round(fault, &calls).await);
    }

    let n = experiments() as f64;
    let rows = rounds
        .iter()
        .map(|r| {
            let p = percentiles(&r.finished);
            vec![
                r.fault.label(),
                format!("{:.1}", r.seconds),
                format!("{:.1}", n / r.seconds),
                format!("{:.1} / {:.1} / {:.1}", p.p50, p.p90, p.max),
                r.reconciles.to_string(),
                format!("{:.1}", r.reconciles as f64 / n),
                format!("{:.1}", r.mean_reconcile_ms),
                format!("{:.1}", r.writes as f64 / n),
                format!("{:.1}", r.requests() as f64 / n),
                format!("{:.1}", r.status_writes() as f64 / n),
                format!("{:.0}", r.status_writes() as f64 / r.seconds),
                if r.running_seconds > 0.0 {
                    format!("{:.1}", r.running_events as f64 * 60.0 / r.running_seconds)
                } else {
                    "-".into()
                },
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
            "lifecycle_throughput: {} experiments on 1 pod each, created at once ({})",
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
            "controller API requests/experiment",
            "status writes/experiment",
            "status writes/s",
            "status writes per experiment-minute Running",
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
            .map(|r| format!("{}: per experiment (mean time)", r.fault.label())),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table("lifecycle_throughput: API calls", &header, &rows);
}

async fn round(fault: Fault, calls: &ApiCalls) -> Round {
    let bed = match fault {
        Fault::ProbedLatency => Bed::start_with_probe_hub().await,
        _ => Bed::start().await,
    };
    let probe_url = common::healthy_service().await;
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
                Fault::ProbedLatency => {
                    common::latency_with_probe_spec(&app, &probed_duration(), &probe_url, "1s")
                }
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
    // Per experiment: when it was first seen Running, and how many events it had while Running.
    let mut running: std::collections::HashMap<String, (Instant, u64)> = Default::default();
    let (mut running_events, mut running_seconds) = (0u64, 0f64);
    while terminal.len() < experiments() {
        let Some(event) = events.next().await else {
            panic!("the experiment watch ended");
        };
        let Ok(experiment) = event else { continue };
        let Some(status) = experiment.status.as_ref() else {
            continue;
        };
        let key = format!(
            "{}/{}",
            experiment.namespace().unwrap_or_default(),
            experiment.name_any()
        );
        if status.phase == faultline::api::Phase::Running {
            running.entry(key.clone()).or_insert((Instant::now(), 0)).1 += 1;
        } else if let Some((since, events)) = running.remove(&key) {
            // The first event past Running ends its window (the write that left it is not
            // counted; the one that entered it is).
            running_events += events;
            running_seconds += since.elapsed().as_secs_f64();
        }
        if status.phase.is_terminal() && terminal.insert(key) {
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
        running_events,
        running_seconds,
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
