//! Taking faults out: the revert request to the agents (one write whatever the number of
//! targets), an abort, the faults of targets that left, and deleting the work items once the
//! agents confirmed. (client required)

use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{Context, Error, Next, Result, Turn, act_error, progress, until};
use crate::{
    api::{
        ABORTING_ANNOTATION, AbortBegun, ChaosExperiment, ChaosExperimentStatus, FaultInjection,
        Phase, REVERTING_LABEL,
    },
    controller::{
        departures::{self, Departure},
        events::Fact,
        injections,
        observe::may_have_injections,
        revert_signal, status,
    },
    lifecycle::{AbortCause, aborting_shown_at},
};

/// How long a revert waits for the agents' receipts before the FaultInjections are deleted
/// too: what an agent that cannot write receipts (an older one, or one without the chart's
/// permission for it) reverts on, and what makes a revert the kernel refused visible (the
/// agent's Failed status on a deleted injection).
pub(super) const RECEIPT_GRACE: Duration = Duration::from_secs(1);

/// Stops the experiment early. The agents first: the revert request (with the abort's cause,
/// so that a controller that stops before the status write carries the abort on) starts their
/// revert, and an Event says so. Status waits for their receipts (see `lifecycle::decide`):
/// the verdict's write carries the Aborting status, unless the revert runs long or this
/// reconcile has more to record than probe results and injection progress.
pub(super) async fn abort(turn: &mut Turn<'_>, cause: AbortCause) -> Result<Next> {
    let (ctx, now) = (turn.ctx.as_ref(), turn.now);
    let (experiment, status) = (&mut *turn.experiment, &mut turn.status);
    let begun = crate::lifecycle::abort_begun(&turn.observed, &cause);
    let told = turn.observed.abort_begun.is_some();
    let injected = may_have_injections(status, &turn.injections);
    let defer =
        !told && injected && progress::verdict_may_carry(experiment.status.as_ref(), status);
    let reverting = if defer {
        let labelled = revert_all_announcing(ctx, experiment, Some(&begun)).await;
        if labelled.is_ok() {
            let shown_at = aborting_shown_at(begun.since);
            return Ok(Next::Return(Action::requeue(until(shown_at, now))));
        }
        labelled
    } else if injected {
        revert_all_announcing(ctx, experiment, Some(&begun)).await
    } else {
        Ok(())
    };
    // Recorded even when the request failed: the next reconcile asks again, and the abort
    // stands.
    mark_aborting(status, &cause, &begun);
    status::write_among_receipts(ctx, experiment, status).await?;
    reverting?;
    Ok(Next::Continue(Some(Duration::ZERO)))
}

/// Targets that left while their fault ran: recorded after what the agents reported (a fault
/// applied before its pod went counts as injected), their faults go at once, and an Event
/// (returned) names each pod and why.
pub(super) async fn revert_departed(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    departed: &[Departure],
    now: DateTime<Utc>,
) -> Result<Vec<Fact>> {
    departures::record(status, departed, now);
    if departed.is_empty() {
        return Ok(Vec::new());
    }
    let api: Api<FaultInjection> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let mut facts = Vec::new();
    for departure in departed {
        let Some(record) = status.targets.get(departure.index) else {
            continue;
        };
        if let Some(name) = &record.injection {
            injections::delete_one(&api, name)
                .await
                .map_err(act_error("delete the FaultInjection of a target that left"))?;
        }
        facts.push(
            Fact::warning(departure.reason, "Revert", departure.message.clone()).about(record),
        );
    }
    Ok(facts)
}

/// Tells the agents to take the experiment's faults out: the `faultline.dev/reverting` label
/// on the experiment, one write whatever the number of targets. Each node agent watches for
/// it, reverts every fault of the experiment on its node in one kernel pass and confirms with
/// one revert receipt per node in the experiment's status, which is what ends the revert.
///
/// The FaultInjections are deleted later (see [`delete_injections`]): once the receipts are
/// in, or after [`RECEIPT_GRACE`] without them. Deleted at once, they cost the API server a
/// write each (and the agents a finalizer release each) while the abort is still waiting for
/// its receipts: on the real control plane with 100 targets, the abort took 286 ms (median of
/// three) that way and 196 ms with the deletions after the receipts.
pub(super) async fn revert_all(ctx: &Context, experiment: &mut ChaosExperiment) -> Result<()> {
    revert_all_announcing(ctx, experiment, None).await
}

/// [`revert_all`], announcing an abort that status does not record yet: the abort's cause
/// and start go with the request to the agents, so that a controller that stops before the
/// status write finds them and carries the abort on.
///
/// The request is the revert signal (see `revert_signal`: a small write, heard by the agents
/// at once); when that cannot be written, the experiment's reverting label, with the abort in
/// the [`ABORTING_ANNOTATION`] (a write of the whole experiment). Asked once: the label, the
/// signal (as the watch has it) or this process's own memory of asking says it was.
pub(super) async fn revert_all_announcing(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    abort: Option<&AbortBegun>,
) -> Result<()> {
    let uid = experiment.uid().unwrap_or_default();
    let labelled = experiment
        .labels()
        .get(REVERTING_LABEL)
        .is_some_and(|v| v == "true");
    let asked = labelled
        || ctx.caches.signalled(&uid).is_some()
        || ctx.caches.reverts.get(&uid).is_some_and(|a| a.told);
    if !asked {
        let namespace = &ctx.settings.policy.controller_namespace;
        let telling = std::time::Instant::now();
        let signalled = revert_signal::raise(&ctx.client, namespace, experiment, abort).await;
        tracing::debug!(
            took_ms = telling.elapsed().as_millis() as u64,
            ok = signalled.is_ok(),
            "revert signal raised"
        );
        if let Err(error) = signalled {
            revert_signal::report_failure(&error, namespace);
            label_reverting(ctx, experiment, abort).await?;
        }
        // Announced once, with the request: status may show the abort only with its verdict.
        if let Some(abort) = abort {
            status::publish(ctx, experiment, vec![abort_fact(abort)]).await;
        }
    }
    ctx.caches.reverts.told(&uid);
    Ok(())
}

/// The revert request where the signal cannot go: the reverting label, and the abort (if any)
/// in the [`ABORTING_ANNOTATION`].
async fn label_reverting(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    abort: Option<&AbortBegun>,
) -> Result<()> {
    let api: Api<ChaosExperiment> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let mut patch = json!({"metadata": {"labels": {REVERTING_LABEL: "true"}}});
    if let Some(abort) = abort {
        let announced =
            serde_json::to_string(abort).map_err(|e| Error::Record(kube::Error::SerdeError(e)))?;
        patch["metadata"]["annotations"] = json!({ ABORTING_ANNOTATION: announced });
    }
    let updated = api
        .patch(
            &experiment.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(act_error("label the experiment reverting"))?;
    ctx.caches
        .versions
        .replaced(experiment, updated.resource_version().as_deref());
    experiment.metadata.resource_version = updated.metadata.resource_version;
    experiment.metadata.labels = updated.metadata.labels;
    experiment.metadata.annotations = updated.metadata.annotations;
    Ok(())
}

/// The status of an aborting experiment: its phase, cause and start, and the abort's
/// timeline entry at its start (its Event went out with the label).
pub(super) fn mark_aborting(
    status: &mut ChaosExperimentStatus,
    cause: &AbortCause,
    begun: &AbortBegun,
) {
    status.phase = Phase::Aborting;
    status.abort_started_at = Some(begun.since);
    status.abort_reason = Some(cause.message());
    status.reason = Some(cause.reason().into());
    status.message = Some(cause.message());
    status::record_at(status, abort_fact(begun), begun.since);
}

/// What the timeline and an Event say when an abort begins.
fn abort_fact(begun: &AbortBegun) -> Fact {
    Fact::warning(
        &begun.reason,
        "Abort",
        format!("aborting: {}", begun.message),
    )
}

/// Deletes every FaultInjection of the experiment, in one request sent off without waiting
/// for it (the real control plane deletes a collection's items one after another, about 8 ms
/// each). Measured against deleting each by name, 32 at a time (100 targets): 0.67 s with the
/// collection, 0.97 s with single deletes. A deletion that fails is asked again by the next
/// reconcile.
pub(super) fn delete_injections(ctx: &Context, experiment: &ChaosExperiment) {
    let uid = experiment.uid().unwrap_or_default();
    ctx.caches.reverts.deletion_asked(&uid, true);
    let api: Api<FaultInjection> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let name = experiment.name_any();
    let reverts = ctx.caches.reverts.clone();
    tokio::spawn(async move {
        if let Err(error) = injections::delete_all(&api, &name).await {
            tracing::warn!(experiment = %name, %error, "could not delete the FaultInjections; asking again at the next reconcile");
            reverts.deletion_asked(&uid, false);
        }
    });
}
