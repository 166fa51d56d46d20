//! Abort latency with 100 network faults in: from the moment the hypothesis breaks to every
//! FaultInjection gone from the API, measured from outside (a watch on the FaultInjections)
//! and as the controller records it in `status.abortLatency`.
//!
//! Each run: a fresh experiment (networkLatency to a CIDR, 100 target pods, a probe so the
//! hypothesis is consulted) is created and reaches Running with the stand-in agent holding all
//! 100 FaultInjections; then the scripted During view flips to Violated and the experiment's
//! reconcile is triggered, as the probe hub does on a violation.

mod common;

use std::{collections::HashSet, time::Instant};

use common::{
    ApiCalls, Bed, Calls, PodSpec, create_experiments, create_pods, machine, namespace,
    percentiles, pod_ip, print_table,
};
use faultline::{
    api::{ChaosExperiment, EXPERIMENT_LABEL, FaultInjection, Phase, ProbePhase},
    lifecycle::HypothesisView,
};
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    api::DeleteParams,
    runtime::{WatchStreamExt, reflector::ObjectRef, watcher},
};
use serde_json::json;
use tokio::sync::watch;

const TARGETS: usize = 100;
const RUNS: usize = 20;
const NAMESPACE: &str = "shop";

#[tokio::main]
async fn main() {
    let calls = ApiCalls::install();
    let bed = Bed::start().await;
    namespace(&bed.client, NAMESPACE, true).await;
    let pods = (0..TARGETS)
        .map(|i| PodSpec {
            namespace: NAMESPACE.into(),
            name: format!("web-{i}"),
            app: "web".into(),
            ip: pod_ip(i),
        })
        .collect();
    create_pods(&bed.client, pods).await;

    let mut to_running = Vec::new();
    let mut external = Vec::new();
    let mut to_verdict = Vec::new();
    let mut recorded = Vec::new();
    let mut requested = Vec::new();
    let mut to_aborting = Vec::new();
    let mut abort_reconciles = 0;
    let mut abort_reconcile_seconds = 0.0;
    let mut abort_calls = std::collections::BTreeMap::<String, Calls>::new();
    let started = Instant::now();
    for run in 0..RUNS {
        let name = format!("abort-{run}");
        let (live, watching) = watch_injections(&bed, &name);
        // Started with the injection watch, before the experiment exists: a watch started
        // later would first have to catch up, and that would be what it measured.
        let aborting = phase_seen(&bed, &name, Phase::Aborting);
        let created = Instant::now();
        create_experiments(
            bed.client.clone(),
            vec![(NAMESPACE.into(), name.clone(), spec())],
        )
        .await;
        let running = wait_experiment(&bed, &name, |p| p == Phase::Running).await;
        let mut live_rx = live.clone();
        live_rx
            .wait_for(|l| l.count == TARGETS)
            .await
            .expect("the injection watch runs");
        to_running.push(created.elapsed().as_secs_f64() * 1e3);

        calls.take();
        let reconciles_before = bed.reconciliations();
        let reconcile_seconds_before = bed.reconcile_seconds();
        let flipped = Instant::now();
        bed.probes.set(
            ProbePhase::During,
            HypothesisView::Violated {
                probe: "web".into(),
                message: "probe web: status 503, expected 200".into(),
                since: chrono::Utc::now(),
            },
        );
        bed.trigger
            .send(ObjectRef::from_obj(&running))
            .expect("the controller runs");
        let all_marked = live_rx
            .wait_for(|l| l.marked == TARGETS)
            .await
            .expect("the injection watch runs")
            .at;
        requested.push(all_marked.duration_since(flipped).as_secs_f64() * 1e3);
        let recorded_at = aborting.await.expect("the phase watch runs");
        to_aborting.push(recorded_at.duration_since(flipped).as_secs_f64() * 1e3);
        let gone = live_rx
            .wait_for(|l| l.count == 0)
            .await
            .expect("the injection watch runs")
            .at;
        external.push(gone.duration_since(flipped).as_secs_f64() * 1e3);
        let aborted = wait_experiment(&bed, &name, |p| p.is_terminal()).await;
        to_verdict.push(flipped.elapsed().as_secs_f64() * 1e3);
        abort_reconciles += bed.reconciliations() - reconciles_before;
        abort_reconcile_seconds += bed.reconcile_seconds() - reconcile_seconds_before;
        for (kind, c) in calls.take() {
            let total = abort_calls.entry(kind).or_default();
            total.count += c.count;
            total.seconds += c.seconds;
        }
        let status = aborted.status.unwrap_or_default();
        assert_eq!(status.phase, Phase::Aborted, "{:?}", status.message);
        let latency = status
            .abort_latency
            .map(|l| l.parse().expect("a Go duration"))
            .expect("status.abortLatency is set");
        recorded.push(latency.as_secs_f64() * 1e3);

        bed.probes.clear();
        bed.experiments(NAMESPACE)
            .delete(&name, &DeleteParams::default())
            .await
            .expect("delete the finished experiment");
        watching.abort();
    }
    let total = started.elapsed();

    let row = |what: &str, values: &[f64]| {
        let p = percentiles(values);
        vec![
            what.to_string(),
            format!("{:.1}", p.p50),
            format!("{:.1}", p.p90),
            format!("{:.1}", p.p99),
            format!("{:.1}", p.max),
        ]
    };
    print_table(
        &format!(
            "abort_latency: {TARGETS} FaultInjections, {RUNS} runs ({}; {:.1}s in all)",
            machine(),
            total.as_secs_f64()
        ),
        &["measured (ms)", "p50", "p90", "p99", "max"],
        &[
            row("flip -> every FaultInjection gone (watch)", &external),
            row(
                "  of which: flip -> phase Aborting written (watch)",
                &to_aborting,
            ),
            row(
                "  of which: flip -> the last one marked for deletion",
                &requested,
            ),
            row("status.abortLatency (recorded)", &recorded),
            row("flip -> verdict Aborted seen (watch)", &to_verdict),
            row("create -> Running, 100 injected (for scale)", &to_running),
        ],
    );
    let runs = RUNS as f64;
    let mut rows = vec![vec![
        "reconciles".to_string(),
        format!("{:.1}", abort_reconciles as f64 / runs),
        format!("{:.1}", abort_reconcile_seconds * 1e3 / runs),
        format!(
            "{:.1}",
            abort_reconcile_seconds * 1e3 / abort_reconciles.max(1) as f64
        ),
    ]];
    rows.extend(abort_calls.into_iter().map(|(kind, c)| {
        vec![
            kind,
            format!("{:.1}", c.count as f64 / runs),
            format!("{:.1}", c.seconds * 1e3 / runs),
            format!("{:.2}", c.mean_ms()),
        ]
    }));
    print_table(
        "abort_latency: per abort, from the flip to the verdict: reconciles and the API calls made inside them",
        &["what", "count", "total ms", "mean ms"],
        &rows,
    );
    bed.stop().await;
}

fn spec() -> serde_json::Value {
    let mut spec = common::latency_spec("web", "10m");
    // With no probe the hypothesis is never consulted.
    spec["steadyState"] =
        json!({"probes": [{"name": "web", "http": {"url": "http://127.0.0.1:1/"}}]});
    spec
}

#[derive(Clone, Copy)]
struct Live {
    /// FaultInjections that exist.
    count: usize,
    /// How many were ever seen marked for deletion (a deletionTimestamp: the controller asked
    /// for the revert) or deleted.
    marked: usize,
    /// When the counts last changed.
    at: Instant,
}

/// Follows the experiment's FaultInjections with a watch from before they exist; the receiver
/// sees how many exist and when that last changed.
fn watch_injections(
    bed: &Bed,
    experiment: &str,
) -> (watch::Receiver<Live>, tokio::task::JoinHandle<()>) {
    let api: Api<FaultInjection> = Api::namespaced(bed.client.clone(), NAMESPACE);
    let config = watcher::Config::default().labels(&format!("{EXPERIMENT_LABEL}={experiment}"));
    let (tx, rx) = watch::channel(Live {
        count: 0,
        marked: 0,
        at: Instant::now(),
    });
    let task = tokio::spawn(async move {
        let mut live = HashSet::new();
        let mut initial = HashSet::new();
        let mut marked = HashSet::new();
        let mut events = watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            let before = (live.len(), marked.len());
            match event {
                Ok(watcher::Event::Apply(i)) => {
                    if i.metadata.deletion_timestamp.is_some() {
                        marked.insert(i.name_any());
                    }
                    live.insert(i.name_any());
                }
                Ok(watcher::Event::Delete(i)) => {
                    marked.insert(i.name_any());
                    live.remove(&i.name_any());
                }
                Ok(watcher::Event::Init) => initial.clear(),
                Ok(watcher::Event::InitApply(i)) => {
                    initial.insert(i.name_any());
                }
                Ok(watcher::Event::InitDone) => live = std::mem::take(&mut initial),
                Err(_) => continue,
            }
            if (live.len(), marked.len()) != before {
                let _ = tx.send(Live {
                    count: live.len(),
                    marked: marked.len(),
                    at: Instant::now(),
                });
            }
        }
    });
    (rx, task)
}

/// When the experiment is first seen in `phase`, on a watch started now.
fn phase_seen(bed: &Bed, name: &str, phase: Phase) -> tokio::task::JoinHandle<Instant> {
    let api = bed.experiments(NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event
                && o.status.as_ref().is_some_and(|s| s.phase == phase)
            {
                return Instant::now();
            }
        }
        panic!("the watch ended before phase {phase:?}");
    })
}

/// Waits (on a watch) until the experiment's phase satisfies `done`.
async fn wait_experiment(bed: &Bed, name: &str, done: impl Fn(Phase) -> bool) -> ChaosExperiment {
    let api = bed.experiments(NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            _ => continue,
        };
        if object.status.as_ref().is_some_and(|s| done(s.phase)) {
            return object;
        }
    }
    panic!("the watch on {name} ended");
}
