//! Recording the targets, and moving an experiment from one phase to the next: what each
//! phase asks on the way in (inject, stamp the injections, ask for the revert, confirm it).
//! (client required)

use std::time::Duration;

use super::{Next, Result, Turn, finish, inject, revert};
use crate::{
    api::{ConditionStatus, Phase, TargetState},
    controller::{events::Fact, observe::may_have_injections, status, targets},
    lifecycle::record::set_condition,
};

/// Selects the targets and records them (with the seed) before anything else, or ends the
/// experiment when the selection refuses.
pub(super) async fn record_targets(turn: &mut Turn<'_>) -> Result<Next> {
    let (ctx, now) = (turn.ctx.as_ref(), turn.now);
    let (experiment, status) = (&mut *turn.experiment, &mut turn.status);
    let selection = targets::select(ctx, experiment, status.seed).await?;
    status.seed = Some(selection.seed);
    status.target_count = selection.target_count;
    status.targets = selection.records;
    if let Some(summary) = selection.summary {
        status::note(
            ctx,
            experiment,
            status,
            Fact::normal("TargetsSelected", "Select", summary),
        )
        .await;
    }
    let Some(refusal) = selection.refused else {
        status::write(ctx, experiment, status).await?;
        return Ok(Next::Continue(Some(Duration::ZERO)));
    };
    finish::conclude(
        ctx,
        experiment,
        status,
        finish::Verdict {
            verdict: refusal.verdict,
            reason: refusal.reason,
            message: refusal.message,
        },
        now,
    )
    .await?;
    Ok(Next::Continue(None))
}

/// Moves to phase `to`, doing what entering it asks.
pub(super) async fn transition(
    turn: &mut Turn<'_>,
    to: Phase,
    reason: &'static str,
    message: String,
) -> Result<Next> {
    let (ctx, now) = (turn.ctx.as_ref(), turn.now);
    let (experiment, status) = (&mut *turn.experiment, &mut turn.status);
    let generation = status.observed_generation;
    let from = status.phase;
    status.phase = to;
    status.reason = Some(reason.into());
    status.message = Some(message.clone());
    // Its Event goes out once the status write that makes it true went through: a replica
    // that lost the lease while frozen must not announce what it cannot do (its write of a
    // stale copy fails with a conflict).
    let mut announce = vec![status::record(
        ctx,
        status,
        Fact::normal(reason, "Transition", message),
    )];
    match (from, to) {
        (_, Phase::Injecting) => {
            status.injected_at = Some(now);
            // Before the injections' own Events, to keep them in order; the first injection
            // step is a status write (record before act).
            status::publish(ctx, experiment, std::mem::take(&mut announce)).await;
            inject::inject_all(ctx, experiment, status, now).await?;
        }
        (_, Phase::Running) => {
            // Whatever the agents have not stamped yet is in as of now.
            for record in status
                .targets
                .iter_mut()
                .filter(|r| r.state == TargetState::Injecting)
            {
                record.state = TargetState::Injected;
                record.injected_at.get_or_insert(now);
                status.faults_injected += 1;
            }
            set_condition(
                &mut status.conditions,
                "Injected",
                ConditionStatus::True,
                reason,
                "every fault is in",
                generation,
                now,
            );
        }
        (_, Phase::Recovering) => {
            status::write(ctx, experiment, status).await?;
            status::publish(ctx, experiment, std::mem::take(&mut announce)).await;
            if may_have_injections(status, &turn.injections) {
                revert::revert_all(ctx, experiment).await?;
            }
        }
        (Phase::Recovering, Phase::Verifying) => {
            if let Some(fact) = finish::mark_reverted(status, now, generation) {
                announce.push(status::record(ctx, status, fact));
            }
        }
        _ => {}
    }
    status::write(ctx, experiment, status).await?;
    status::publish(ctx, experiment, announce).await;
    Ok(Next::Continue(Some(Duration::ZERO)))
}
