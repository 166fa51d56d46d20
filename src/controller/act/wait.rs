//! Between transitions: keep what runs current (peers, departed targets, probe results), pick
//! up work a crash or a failed request left (missing injections, an unanswered revert), and
//! tidy a finished experiment. (client required)

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::{ResourceExt, runtime::controller::Action};

use super::{
    Next, Result, Turn, act_error, finalizer::remove_finalizer, inject, progress, revert, until,
};
use crate::{
    api::{EXPERIMENT_FINALIZER, Phase},
    controller::{departures, events::Fact, injections, probe_hub, status},
};

/// How often the peers of selector-scoped network faults are resolved again while they run.
const PEER_REFRESH: Duration = Duration::from_secs(3);

/// How often the pods and namespaces of targets whose faults run are read again, to revert at
/// once the fault of a target that left (deleted, protected, its namespace's opt-in removed).
/// Nothing watches pods or namespaces, so this bounds how long such a fault outlives consent.
const TARGET_CHECK: Duration = Duration::from_secs(2);

/// How soon a finished experiment with FaultInjections not yet deleted looks again.
const TIDY_AGAIN: Duration = Duration::from_secs(10);

/// Nothing to do before `at` but keep the running faults current and status up to date.
pub(super) async fn wait_until(turn: &mut Turn<'_>, at: DateTime<Utc>) -> Result<Next> {
    let (ctx, now) = (turn.ctx.as_ref(), turn.now);
    if turn.observed.abort_begun.is_some() {
        // An abort under way: its status waits for the receipts (see `revert::abort`).
        return Ok(Next::Continue(Some(until(at, now))));
    }
    let (experiment, status) = (&mut *turn.experiment, &mut turn.status);
    let mut longest = Duration::from_secs(30);
    if status.targets.iter().any(departures::watched) {
        longest = TARGET_CHECK;
    }
    if status.phase == Phase::Running && injections::has_selector_scopes(experiment) {
        // Peer pods come and go; keep every injection's peer list current.
        for (pod, peers) in injections::refresh_peers(&ctx.client, experiment, &turn.injections)
            .await
            .map_err(act_error("update FaultInjection peers"))?
        {
            let message = format!(
                "peers of the fault on pod {pod} are now [{}]",
                peers.join(", ")
            );
            status::note(
                ctx,
                experiment,
                status,
                Fact::normal("PeersUpdated", "Inject", message),
            )
            .await;
        }
        longest = PEER_REFRESH;
    }
    let recorded = experiment.status.as_ref();
    let observations_only = status.phase == Phase::Running
        && recorded.is_some_and(|recorded| progress::observations_only(recorded, status));
    let uid = experiment.uid().unwrap_or_default();
    if !observations_only {
        status::write(ctx, experiment, status).await?;
    } else if let Some(wait) =
        progress::hold_back_running(recorded, status, ctx.caches.status_writes.last(&uid), now)
    {
        // Packet counts alone: they go out with the next write, or when the interval is up.
        longest = longest.min(wait);
    } else if !status::write_behind(turn.ctx, experiment, status) {
        // Not waited for: a probe that fails while it is on its way is decided on at once
        // (see `status::write_behind`).
        longest = longest.min(probe_hub::PUBLISH_INTERVAL);
    }
    Ok(Next::Continue(Some(until(at, now).min(longest))))
}

/// Nothing to do until the world changes (a probe result, an agent's report, a deletion), but
/// what a crash or a failed request may have left undone. `withheld_until`: when probe results
/// held back from status go out.
pub(super) async fn wait(
    turn: &mut Turn<'_>,
    withheld_until: Option<DateTime<Utc>>,
) -> Result<Next> {
    if turn.status.phase.is_terminal() {
        return tidy_finished(turn).await;
    }
    let (ctx, now) = (turn.ctx.as_ref(), turn.now);
    let (experiment, status) = (&mut *turn.experiment, &mut turn.status);
    let uid = experiment.uid().unwrap_or_default();
    if status.phase == Phase::Injecting {
        // A create that failed for a moment, or a crash between record and create.
        inject::create_missing(ctx, experiment, status, &turn.injections, now).await?;
        if let Some(wait) = progress::hold_back(
            experiment.status.as_ref(),
            status,
            ctx.caches.status_writes.last(&uid),
            now,
        ) {
            // Back with every report that came in meanwhile (see `progress`), or sooner for
            // probe results held back.
            let withheld = withheld_until.and_then(|at| (at - now).to_std().ok());
            return Ok(Next::Return(Action::requeue(
                withheld.map_or(wait, |w| w.min(wait)),
            )));
        }
    }
    let reverting = matches!(status.phase, Phase::Recovering | Phase::Aborting);
    if reverting {
        // Asking again is idempotent and covers a request lost to a crash. Nothing asked by
        // this process (a restart): how long the agents have had is unknown, so the
        // FaultInjections are deleted at once too.
        let asked = ctx.caches.reverts.get(&uid);
        if asked.is_none() {
            revert::revert_all(ctx, experiment).await?;
        }
        let undeleted = turn
            .injections
            .iter()
            .any(|i| i.metadata.deletion_timestamp.is_none());
        if undeleted && asked.is_none_or(|a| !a.deletion && a.at.elapsed() >= revert::RECEIPT_GRACE)
        {
            revert::delete_injections(ctx, experiment);
        }
        if !turn.unclaimed.is_empty() {
            injections::release_unclaimed(&ctx.client, experiment, &turn.unclaimed).await;
        }
    }
    // Back when the receipts' grace ends (unless they, or deletions, wake us first).
    let grace_left = reverting
        .then(|| ctx.caches.reverts.get(&uid))
        .flatten()
        .filter(|a| !a.deletion)
        .map(|a| revert::RECEIPT_GRACE.saturating_sub(a.at.elapsed()));
    let held = reverting
        && progress::hold_back_while_reverting(
            experiment.status.as_ref(),
            status,
            ctx.caches.status_writes.last(&uid),
            now,
        )
        .is_some();
    if !held {
        status::write(ctx, experiment, status).await?;
    }
    Ok(Next::Continue(Some(
        grace_left.map_or(Duration::from_secs(1), |left| {
            left.max(Duration::from_millis(50))
        }),
    )))
}

/// A finished experiment: the revert was confirmed by the receipts; what is left of the work
/// items is housekeeping (a deletion lost to a crash or a failed request is asked again).
async fn tidy_finished(turn: &mut Turn<'_>) -> Result<Next> {
    let ctx = turn.ctx.as_ref();
    let experiment = &mut *turn.experiment;
    let uid = experiment.uid().unwrap_or_default();
    let undeleted = turn
        .injections
        .iter()
        .any(|i| i.metadata.deletion_timestamp.is_none());
    let deleting = ctx.caches.reverts.get(&uid).is_some_and(|a| a.deletion);
    if undeleted && !deleting {
        revert::delete_injections(ctx, experiment);
    }
    if turn.injections.is_empty() {
        ctx.caches.reverts.remove(&uid);
    }
    // The finalizer only guards faults; a finished experiment with none left lets go of it
    // (this also completes a release that failed in the finishing step).
    let held = experiment
        .finalizers()
        .iter()
        .any(|f| f == EXPERIMENT_FINALIZER);
    if held && turn.injections.is_empty() {
        remove_finalizer(ctx, experiment).await?;
    }
    // A deletion that failed is asked again by a later reconcile, and no event of the
    // injections may bring one (nothing changes on them): back in a while for as long as
    // some are not deleted.
    if undeleted {
        return Ok(Next::Return(Action::requeue(TIDY_AGAIN)));
    }
    Ok(Next::Return(Action::await_change()))
}
