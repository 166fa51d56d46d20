//! Carries out a decision: record targets, inject, revert, hold, finish, and keep status
//! current (what the agents applied, live probe results, conditions, Events).
//!
//! The only module of the controller that changes the world. The helpers it calls sit below
//! it and never call back up: `targets` reads and chooses, `podkill` and `injections` act on
//! one target each, `status` writes the status and publishes Events. Every step that touches
//! a fault first records what it is about to do. (client required)
//!
//! [`perform`] takes in what happened since the last reconcile (agents' reports, departed
//! targets, probe results), then hands the decision to its step: `transition` (targets and
//! phases), `revert` (aborts and reverts), `finish`, `hold`, `wait`.

mod finalizer;
mod finish;
mod hold;
mod inject;
mod live;
mod progress;
mod revert;
mod transition;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Context, Error, Result,
    observe::{World, probe_phase},
    pause_switch, status,
};
use crate::{
    api::{ChaosExperiment, ChaosExperimentStatus, FaultInjection, Phase},
    lifecycle::{Decision, Observed},
};

pub use finalizer::ensure_finalizer;

pub(super) fn act_error(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Act { action, source }
}

/// One reconcile's acting step: the experiment, the status built for it, and what observe
/// found that the steps still need.
struct Turn<'a> {
    ctx: &'a Arc<Context>,
    experiment: &'a mut ChaosExperiment,
    status: ChaosExperimentStatus,
    observed: Observed,
    /// The experiment's FaultInjections that still exist (as the watch cache has them).
    injections: Vec<Arc<FaultInjection>>,
    /// Deleted FaultInjections no agent took up (see `observe::World`).
    unclaimed: Vec<Arc<FaultInjection>>,
    now: DateTime<Utc>,
}

/// Where a step leaves the reconcile.
enum Next {
    /// On to what every reconcile ends with (probe bookkeeping, the hypothesis watch); back
    /// after this long if nothing changes before (None: only on a change).
    Continue(Option<Duration>),
    /// The step held its status back: back as this says, without that ending.
    Return(Action),
}

pub async fn perform(
    shared: &Arc<Context>,
    experiment: &mut ChaosExperiment,
    world: World,
    decision: Decision,
) -> Result<Action> {
    let ctx = shared.as_ref();
    let World {
        observed,
        mut status,
        injections,
        hypothesis,
        departures,
        unclaimed,
    } = world;
    // Status writes carry the resourceVersion this decision was made from (see
    // `status::write`), so a decision made on a stale cached object fails with a conflict
    // instead of rolling the status back.
    let now = observed.now;
    // The cache's word that chaos is not paused is confirmed before the first fault goes in:
    // a pause written a moment ago holds this experiment too.
    let decision = match decision {
        Decision::Transition {
            to: Phase::Injecting,
            ..
        } if !observed.paused
            && pause_switch::paused_after_all(
                &ctx.client,
                &ctx.settings.policy.controller_namespace,
            )
            .await =>
        {
            Decision::Hold
        }
        other => other,
    };
    let uid = experiment.uid().unwrap_or_default();
    let generation = experiment.metadata.generation;
    status.observed_generation = generation;
    if status.started_at.is_none() {
        status.started_at = Some(now);
    }

    // What happened since the last reconcile: faults the agents applied, targets that left,
    // a resume, probe results (written at once when the hypothesis changes or the decision
    // ends a phase, otherwise at most once per `probe_hub::PUBLISH_INTERVAL`).
    let mut facts = live::follow_injections(&mut status, &injections, now);
    facts.extend(live::follow_packets(&mut status, &injections));
    facts.extend(revert::revert_departed(ctx, experiment, &mut status, &departures, now).await?);
    if !observed.paused && pause_switch::held(&status) {
        facts.push(hold::resume(&mut status, generation, now));
    }
    let decisive = matches!(
        decision,
        Decision::Transition { .. } | Decision::Abort(_) | Decision::Finish { .. } | Decision::Hold
    );
    let probes = live::refresh_probes(
        &mut status,
        live::ProbeInput {
            snapshot: ctx.hypotheses.snapshot(&uid),
            state: hypothesis,
            view: &observed.hypothesis,
            decisive,
            last_written: ctx.caches.probe_writes.last(&uid),
            generation,
            now,
        },
    );
    facts.extend(probes.facts);
    status::note_all(ctx, experiment, &mut status, facts).await;

    let mut turn = Turn {
        ctx: shared,
        experiment,
        status,
        observed,
        injections,
        unclaimed,
        now,
    };
    let next = match decision {
        Decision::RecordTargets => transition::record_targets(&mut turn).await?,
        Decision::Transition {
            to,
            reason,
            message,
        } => transition::transition(&mut turn, to, reason, message).await?,
        Decision::Abort(cause) => revert::abort(&mut turn, cause).await?,
        Decision::Finish {
            verdict,
            reason,
            message,
        } => {
            let verdict = finish::Verdict {
                verdict,
                reason,
                message,
            };
            finish::decided(&mut turn, verdict).await?
        }
        Decision::KillAgain => {
            inject::kill_round(ctx, turn.experiment, &mut turn.status, now).await?;
            Next::Continue(Some(Duration::ZERO))
        }
        Decision::FinishKills => {
            inject::finish_kills(ctx, turn.experiment, &mut turn.status, now).await?;
            Next::Continue(Some(Duration::ZERO))
        }
        Decision::Hold => {
            hold::hold(ctx, turn.experiment, &mut turn.status, generation, now).await?;
            // The pause switch's change reconciles every experiment.
            Next::Continue(None)
        }
        Decision::WaitUntil(at) => wait::wait_until(&mut turn, at).await?,
        Decision::Wait => wait::wait(&mut turn, probes.withheld_until).await?,
    };
    let next = match next {
        Next::Continue(next) => next,
        Next::Return(action) => return Ok(action),
    };

    if turn.status.phase.is_terminal() {
        return Ok(Action::await_change());
    }
    if probes.refreshed {
        ctx.caches.probe_writes.written(&uid, now);
    }
    // The probes check what the phase as now written needs (the before-, during- or
    // after-hypothesis), or nothing while faults are reverted.
    if turn.experiment.spec.steady_state.is_some() {
        ctx.hypotheses
            .watch(turn.experiment, probe_phase(&turn.status));
    }
    // Probe results held back to keep status writes at about one a second go out then.
    let withheld = probes
        .withheld_until
        .map(|at| (at - now).to_std().unwrap_or_default());
    Ok(match (next, withheld) {
        (Some(next), Some(withheld)) => Action::requeue(next.min(withheld)),
        (None, Some(wait)) | (Some(wait), None) => Action::requeue(wait),
        (None, None) => Action::await_change(),
    })
}

/// From `now` until `at`, at least a moment (a time already past reconciles again soon, not
/// in a loop).
fn until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    (at - now)
        .to_std()
        .unwrap_or_default()
        .max(Duration::from_millis(50))
}
