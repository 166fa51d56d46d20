//! Runs every probe at its interval and sends each outcome on a channel.
//!
//! Which probes run follows a `watch` channel holding the phase being checked (`None`: run
//! nothing, e.g. while faults are being reverted). A probe whose `phases` include the new phase
//! is checked at once when the phase changes, so the after-hypothesis does not wait an
//! interval to start. Each probe has its own task, so a slow probe never delays another.
//! Everything stops when the token is cancelled or the receiver is dropped.

use chrono::{DateTime, Utc};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

use super::{CheckOutcome, ProbeRunner};
use crate::api::ProbePhase;

/// One check's outcome, with when it finished and the phase it was made in.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeReport {
    pub probe: String,
    pub phase: ProbePhase,
    pub at: DateTime<Utc>,
    pub outcome: CheckOutcome,
}

/// Runs `runners` until `cancel` is cancelled or `reports` is closed; returns once every probe
/// task has stopped.
pub async fn run_probes(
    runners: Vec<ProbeRunner>,
    phase: watch::Receiver<Option<ProbePhase>>,
    reports: mpsc::Sender<ProbeReport>,
    cancel: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    for runner in runners {
        tasks.spawn(run_probe(
            runner,
            phase.clone(),
            reports.clone(),
            cancel.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

async fn run_probe(
    runner: ProbeRunner,
    mut phase: watch::Receiver<Option<ProbePhase>>,
    reports: mpsc::Sender<ProbeReport>,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(runner.interval());
    // After a slow check, wait a whole interval again rather than firing a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = reports.closed() => return,
            _ = ticker.tick() => {}
            changed = phase.changed() => {
                if changed.is_err() {
                    return; // the controller dropped the phase sender: nothing more to check
                }
                ticker.reset_at(Instant::now() + runner.interval());
            }
        }
        let current = *phase.borrow_and_update();
        let Some(current) = current.filter(|p| runner.runs_in(*p)) else {
            continue;
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            outcome = runner.run_once() => outcome,
        };
        let report = ProbeReport {
            probe: runner.name().to_string(),
            phase: current,
            at: Utc::now(),
            outcome,
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            sent = reports.send(report) => if sent.is_err() { return },
        }
    }
}
