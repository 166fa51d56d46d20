//! The probe hub: runs every experiment's probes in the background and answers the controller's
//! questions about them. It hands results to the controller through its trigger channel (a
//! reconcile of that experiment), so that status shows them while the experiment runs:
//! - a change of verdict (violated, or decided) at once: an abort never waits for a requeue;
//! - any other new result coalesced, at most once per [`PUBLISH_INTERVAL`] per experiment.
//!
//! A hub that starts on an experiment that already has probe results in status (another
//! controller ran it: a failover, a restart) goes on from them; see `Hypothesis::resume`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{Client, ResourceExt, runtime::reflector::ObjectRef};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::HypothesisSource;
use crate::{
    api::{ChaosExperiment, ProbePhase},
    lifecycle::HypothesisView,
    metrics::{Metrics, ProbeLabel},
    probes::{
        ProbeRunner,
        hypothesis::{Hypothesis, ProbeRecord},
        scheduler::run_probes,
    },
};

/// The shortest time between two hand-overs of new (verdict-neutral) probe results of one
/// experiment; the controller writes status no more often than this for them either.
pub const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

struct Running {
    phase: watch::Sender<Option<ProbePhase>>,
    hypothesis: Arc<Mutex<Hypothesis>>,
    /// The first check the API server refused (403), as a sentence: the experiment is
    /// misconfigured, and the refusal is no evidence about the system under test.
    forbidden: Arc<Mutex<Option<String>>>,
    cancel: CancellationToken,
}

/// Probes of every experiment this controller is driving, keyed by experiment UID.
pub struct ProbeHub {
    /// What Kubernetes probes read the cluster with.
    client: Client,
    running: Mutex<HashMap<String, Running>>,
    triggers: mpsc::UnboundedSender<ObjectRef<ChaosExperiment>>,
    metrics: Metrics,
}

impl ProbeHub {
    /// `client` is what Kubernetes probes read the cluster with (the controller's own);
    /// `triggers` is the sending side of the controller's `reconcile_on` channel.
    pub fn new(
        client: Client,
        triggers: mpsc::UnboundedSender<ObjectRef<ChaosExperiment>>,
        metrics: Metrics,
    ) -> Self {
        ProbeHub {
            client,
            running: Mutex::default(),
            triggers,
            metrics,
        }
    }

    fn runners(&self, experiment: &ChaosExperiment) -> Result<Vec<ProbeRunner>, String> {
        let namespace = experiment.namespace().unwrap_or_default();
        experiment
            .spec
            .probes()
            .iter()
            .map(|p| ProbeRunner::new(p, &namespace, Some(&self.client)).map_err(|e| e.to_string()))
            .collect()
    }

    fn start(&self, experiment: &ChaosExperiment, phase: Option<ProbePhase>) -> Option<Running> {
        let runners = self.runners(experiment).ok()?;
        let probes = experiment
            .spec
            .steady_state
            .as_ref()
            .map(|s| s.probes.clone())
            .unwrap_or_default();
        let status = experiment.status.clone().unwrap_or_default();
        let recorded = ProbeRecord {
            probes: status.probes,
            gaps: status.probe_gaps,
        };
        let hypothesis = Arc::new(Mutex::new(Hypothesis::resume(
            &probes,
            &recorded,
            phase.is_some(),
        )));
        let (phase_tx, phase_rx) = watch::channel(phase);
        let (reports_tx, mut reports) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        tokio::spawn(run_probes(
            runners,
            phase_rx.clone(),
            reports_tx,
            cancel.clone(),
        ));

        let target = ObjectRef::from_obj(experiment);
        let triggers = self.triggers.clone();
        let metrics = self.metrics.clone();
        let shared = hypothesis.clone();
        let forbidden = Arc::new(Mutex::new(None::<String>));
        let forbidden_seen = forbidden.clone();
        tokio::spawn(async move {
            // When results were last handed over, and whether some have come in since.
            let mut last_sent: Option<Instant> = None;
            let mut pending = false;
            loop {
                let due = last_sent.map_or_else(Instant::now, |t| t + PUBLISH_INTERVAL);
                let report = tokio::select! {
                    report = reports.recv() => match report {
                        Some(report) => report,
                        None => return,
                    },
                    _ = tokio::time::sleep_until(due), if pending => {
                        let _ = triggers.send(target.clone());
                        last_sent = Some(Instant::now());
                        pending = false;
                        continue;
                    }
                };
                if report.outcome.forbidden {
                    // Not a result: the controller may not read what the probe names. The
                    // controller ends the experiment as misconfigured (at once).
                    let mut seen = forbidden_seen.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.is_none() {
                        *seen = report.outcome.error.clone();
                        drop(seen);
                        let _ = triggers.send(target.clone());
                        last_sent = Some(Instant::now());
                        pending = false;
                    }
                    continue;
                }
                let result = if report.outcome.ok { "pass" } else { "fail" };
                metrics
                    .probe_checks
                    .get_or_create(&ProbeLabel {
                        probe: report.probe.clone(),
                        result: result.into(),
                    })
                    .inc();
                let changed = {
                    let mut hypothesis = shared.lock().unwrap_or_else(|p| p.into_inner());
                    let before = hypothesis.view(report.phase);
                    hypothesis.record(&report.probe, &report.outcome, report.at, report.phase);
                    let after = hypothesis.view(report.phase);
                    std::mem::discriminant(&before) != std::mem::discriminant(&after)
                };
                // Only the current phase's verdict matters to the controller.
                let current = *phase_rx.borrow();
                if changed && current == Some(report.phase) {
                    debug!(experiment = %target.name, probe = %report.probe, "hypothesis changed; reconciling now");
                    let _ = triggers.send(target.clone());
                    last_sent = Some(Instant::now());
                    pending = false;
                } else {
                    pending = true;
                }
            }
        });
        Some(Running {
            phase: phase_tx,
            hypothesis,
            forbidden,
            cancel,
        })
    }
}

impl HypothesisSource for ProbeHub {
    fn preflight(&self, experiment: &ChaosExperiment) -> Result<(), String> {
        self.runners(experiment).map(|_| ())
    }

    fn watch(&self, experiment: &ChaosExperiment, phase: Option<ProbePhase>) {
        let uid = experiment.uid().unwrap_or_default();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(&uid) {
            Some(probes) => {
                probes.phase.send_if_modified(|current| {
                    let changed = *current != phase;
                    *current = phase;
                    changed
                });
            }
            None => {
                if let Some(probes) = self.start(experiment, phase) {
                    running.insert(uid, probes);
                }
            }
        }
    }

    fn view(&self, experiment_uid: &str, phase: ProbePhase) -> HypothesisView {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        match running.get(experiment_uid) {
            Some(probes) => probes
                .hypothesis
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .view(phase),
            None => HypothesisView::Undecided,
        }
    }

    fn misconfigured(&self, experiment_uid: &str) -> Option<String> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .get(experiment_uid)?
            .forbidden
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn snapshot(&self, experiment_uid: &str) -> Option<ProbeRecord> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(experiment_uid).map(|p| {
            p.hypothesis
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshot()
        })
    }

    fn forget(&self, experiment_uid: &str) {
        if let Some(probes) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(experiment_uid)
        {
            probes.cancel.cancel();
        }
    }
}
