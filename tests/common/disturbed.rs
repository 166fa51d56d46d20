//! One workload for a controller that is disturbed (killed at random moments, or on a network
//! that loses answers), and what must still hold afterwards: pod-kill experiments, latencies
//! (one of them aborted halfway), a three-stage game day and a schedule that starts a run every
//! three seconds, all over pods that no kubelet runs (the agent is the stand-in).
//!
//! Afterwards: each experiment reaches the verdict it would have reached undisturbed, each
//! chosen pod died once and no other did, no game-day stage or scheduled run started twice or
//! overlapped the one before, and no fault is left.

use std::{collections::BTreeMap, time::Duration};

use faultline::api::{ChaosExperiment, ChaosSchedule, FaultInjection, GameDay, Verdict};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::wait_for;

const KILL_GROUPS: usize = 3;
const PODS_PER_GROUP: usize = 4;
const KILLS_PER_GROUP: usize = 2;
/// Pod groups (`app=web-N`): the kills', then the latency's, the aborted one's, the game
/// day's and the schedule's.
const LATENCY: usize = KILL_GROUPS;
const ABORTED: usize = KILL_GROUPS + 1;
const GAME_DAY: usize = KILL_GROUPS + 2;
const SCHEDULED: usize = KILL_GROUPS + 3;
const GROUPS: usize = KILL_GROUPS + 4;

/// `FAULTLINE_CRASH_SEED`, or one from the clock; printed either way.
pub fn seed() -> u64 {
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
    eprintln!("random moments from seed {seed} (replay: FAULTLINE_CRASH_SEED={seed})");
    seed
}

/// The experiments of the workload, by name (the game day's and the schedule's aside).
pub struct Workload {
    experiments: Vec<String>,
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

/// An HTTP service that always answers 200, for the experiments' probes.
pub async fn healthy_service() -> String {
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn probes(url: &str) -> serde_json::Value {
    json!({"recoveryTimeout": "20s", "probes": [
        {"name": "shop", "http": {"url": url}, "interval": "1s", "timeout": "900ms"}]})
}

fn pod_kill(group: usize, url: &str) -> serde_json::Value {
    json!({
        "duration": "8s",
        "target": {"labelSelector": {"matchLabels": {"app": format!("web-{group}")}},
                   "mode": "Fixed", "value": KILLS_PER_GROUP},
        "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0}}],
        "steadyState": probes(url)
    })
}

fn latency(group: usize, duration: &str, url: &str) -> serde_json::Value {
    json!({
        "duration": duration,
        "target": {"labelSelector": {"matchLabels": {"app": format!("web-{group}")}},
                   "mode": "All"},
        "faults": [{"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
        "steadyState": probes(url)
    })
}

impl Workload {
    /// Creates the pods (on `node-1`, which the caller provides) and starts everything in
    /// the opted-in namespace `shop`.
    pub async fn start(client: &Client, url: &str) -> Workload {
        for group in 0..GROUPS {
            for i in 0..PODS_PER_GROUP {
                ready_pod(client, &format!("web-{group}-{i}"), group).await;
            }
        }
        let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), "shop");
        let mut specs: Vec<(String, serde_json::Value)> = (0..KILL_GROUPS)
            .map(|group| (format!("kill-{group}"), pod_kill(group, url)))
            .collect();
        specs.push(("latency".into(), latency(LATENCY, "8s", url)));
        specs.push(("aborted".into(), latency(ABORTED, "5m", url)));
        for (name, spec) in &specs {
            let experiment =
                ChaosExperiment::new(name, serde_json::from_value(spec.clone()).unwrap());
            api.create(&PostParams::default(), &experiment)
                .await
                .unwrap();
        }

        let stages: Vec<serde_json::Value> = ["one", "two", "three"]
            .iter()
            .map(|stage| {
                json!({"name": stage, "experiments": [
                    {"name": "slow", "spec": latency(GAME_DAY, "2s", url)}]})
            })
            .collect();
        let day: GameDay = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
            "metadata": {"name": "drill", "namespace": "shop"},
            "spec": {"stages": stages}
        }))
        .unwrap();
        Api::<GameDay>::namespaced(client.clone(), "shop")
            .create(&PostParams::default(), &day)
            .await
            .unwrap();
        // Forbid (the default): a run due while the last one goes on is skipped.
        let schedule: ChaosSchedule = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule",
            "metadata": {"name": "often", "namespace": "shop"},
            "spec": {"schedule": "*/3 * * * * *", "successfulHistoryLimit": 50,
                     "failedHistoryLimit": 50,
                     "experimentTemplate": {"spec": latency(SCHEDULED, "2s", url)}}
        }))
        .unwrap();
        Api::<ChaosSchedule>::namespaced(client.clone(), "shop")
            .create(&PostParams::default(), &schedule)
            .await
            .unwrap();
        Workload {
            experiments: specs.into_iter().map(|(name, _)| name).collect(),
        }
    }

    /// Asks for the abort of the long latency (as `faultline abort` does: an annotation, which
    /// must hold whatever happens to the controller).
    pub async fn abort_one(&self, client: &Client) {
        let abort = json!({"metadata": {"annotations": {
            faultline::api::ABORT_ANNOTATION: "disturbed-controller test"}}});
        Api::<ChaosExperiment>::namespaced(client.clone(), "shop")
            .patch("aborted", &PatchParams::default(), &Patch::Merge(abort))
            .await
            .unwrap();
    }

    /// Waits for everything to end (the schedule is suspended first, so that every run can be
    /// waited for) and checks what must hold, with at least `scheduled_runs` runs of the
    /// schedule (it starts one every three seconds, and skips those due while one goes on or
    /// while no replica leads).
    ///
    /// How many runs fit in the disturbed window depends on the machine's load (a run under a
    /// lossy network or a crash loop can take most of it), so the schedule is given a
    /// generous while to reach `scheduled_runs` before it is suspended: what must hold is that
    /// it keeps firing after the disturbance, not how fast.
    pub async fn check(&self, client: &Client, scheduled_runs: usize) {
        let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), "shop");
        wait_for(
            &format!("the schedule to start {scheduled_runs} runs"),
            Duration::from_secs(120),
            || async {
                let runs = experiments
                    .list(&ListParams::default().labels("faultline.dev/schedule=often"))
                    .await
                    .ok()?
                    .items
                    .len();
                (runs >= scheduled_runs).then_some(())
            },
        )
        .await;
        Api::<ChaosSchedule>::namespaced(client.clone(), "shop")
            .patch(
                "often",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"suspend": true}})),
            )
            .await
            .unwrap();
        let mut verdicts = BTreeMap::new();
        for name in &self.experiments {
            let done = wait_for(
                &format!("{name} to finish"),
                Duration::from_secs(90),
                || async {
                    let e = experiments.get(name).await.ok()?;
                    e.status.as_ref()?.phase.is_terminal().then_some(e)
                },
            )
            .await;
            verdicts.insert(name.clone(), done.status.unwrap());
        }
        for (name, status) in &verdicts {
            eprintln!(
                "{name}: {:?} {:?}: {}",
                status.phase,
                status.verdict,
                status.message.as_deref().unwrap_or_default()
            );
            let expected = if name == "aborted" {
                Verdict::Aborted
            } else {
                Verdict::Passed
            };
            assert_eq!(status.verdict, Some(expected), "{name}: {status:?}");
        }

        // Each kill group lost exactly the pods its experiment chose, once each.
        let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
        let remaining = pods.list(&ListParams::default()).await.unwrap().items;
        let left = |group: usize| {
            let prefix = format!("web-{group}-");
            remaining
                .iter()
                .filter(|p| p.name_any().starts_with(&prefix))
                .count()
        };
        for group in 0..KILL_GROUPS {
            let status = &verdicts[&format!("kill-{group}")];
            let mut killed: Vec<&str> = status
                .timeline
                .iter()
                .filter(|e| e.reason == "PodKilled")
                .map(|e| e.message.as_str())
                .collect();
            let context = format!(
                "group {group}: targets {:#?}; timeline {:#?}",
                status.targets, status.timeline
            );
            assert_eq!(left(group), PODS_PER_GROUP - KILLS_PER_GROUP, "{context}");
            assert_eq!(killed.len(), KILLS_PER_GROUP, "{context}");
            killed.dedup();
            assert_eq!(killed.len(), KILLS_PER_GROUP, "{context}");
        }
        for group in [LATENCY, ABORTED, GAME_DAY, SCHEDULED] {
            assert_eq!(
                left(group),
                PODS_PER_GROUP,
                "a latency killed a pod of group {group}"
            );
        }

        self.check_game_day(client, &experiments).await;
        self.check_schedule(&experiments, scheduled_runs).await;

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
    }

    /// The game day ran each stage's experiment once, in order, and passed.
    async fn check_game_day(&self, client: &Client, experiments: &Api<ChaosExperiment>) {
        let gamedays: Api<GameDay> = Api::namespaced(client.clone(), "shop");
        let day = wait_for(
            "the game day to finish",
            Duration::from_secs(90),
            || async {
                let day = gamedays.get("drill").await.ok()?;
                day.status.as_ref()?.verdict.is_some().then_some(day)
            },
        )
        .await;
        let status = day.status.unwrap();
        assert_eq!(
            status.verdict,
            Some(Verdict::Passed),
            "{:?}",
            status.message
        );
        let stage_runs: Vec<Vec<String>> = status
            .stages
            .iter()
            .map(|s| s.experiments.clone())
            .collect();
        assert_eq!(
            stage_runs,
            [["drill-one-slow"], ["drill-two-slow"], ["drill-three-slow"]],
            "{status:?}"
        );
        let of_the_day = experiments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e.name_any().starts_with("drill-"))
            .count();
        assert_eq!(of_the_day, 3);
        for pair in status.stages.windows(2) {
            assert!(
                pair[0].finished_at <= pair[1].started_at,
                "stages overlap: {pair:?}"
            );
        }
    }

    /// The schedule's runs never overlapped, and each passed (a run's name is its time, so
    /// none can start twice).
    async fn check_schedule(&self, experiments: &Api<ChaosExperiment>, at_least: usize) {
        let mut runs = wait_for(
            "the schedule's runs to finish",
            Duration::from_secs(60),
            || async {
                let runs: Vec<ChaosExperiment> = experiments
                    .list(&ListParams::default().labels("faultline.dev/schedule=often"))
                    .await
                    .ok()?
                    .items;
                runs.iter()
                    .all(|r| r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
                    .then_some(runs)
            },
        )
        .await;
        runs.sort_by_key(|r| r.metadata.creation_timestamp.clone());
        for run in &runs {
            let status = run.status.as_ref().unwrap();
            assert_eq!(
                status.verdict,
                Some(Verdict::Passed),
                "{}: {:?}",
                run.name_any(),
                status.message
            );
        }
        assert!(runs.len() >= at_least, "only {} scheduled runs", runs.len());
        for pair in runs.windows(2) {
            let finished = pair[0].status.as_ref().unwrap().finished_at.unwrap();
            let next_created = pair[1].metadata.creation_timestamp.as_ref().unwrap();
            assert!(
                finished.timestamp() <= next_created.0.as_second(),
                "{} started before {} finished (Forbid)",
                pair[1].name_any(),
                pair[0].name_any()
            );
        }
        eprintln!(
            "game day: 3 stages in order; schedule: {} runs, none overlapping",
            runs.len()
        );
    }
}
