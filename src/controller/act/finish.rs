//! Ending an experiment: the verdict, the numbers (abort latency, recovery time), the last
//! records, the metrics, and letting go of the probes and the finalizer. (client required)

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::{Context, Result, remove_finalizer};
use crate::{
    api::{
        ChaosExperiment, ChaosExperimentStatus, ConditionStatus, GoDuration, Phase, TargetRecord,
        TargetState,
    },
    controller::{events::Fact, status},
    lifecycle::record::set_condition,
    metrics::{ReasonLabel, VerdictLabel},
};

/// The verdict to end with.
pub(super) struct Verdict {
    pub verdict: crate::api::Verdict,
    pub reason: &'static str,
    pub message: String,
}

/// Ends the experiment with `verdict`, stops its probes and releases its finalizer. Only for
/// an experiment with no fault in (never injected, or every fault confirmed reverted).
pub(super) async fn conclude(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    verdict: Verdict,
    now: DateTime<Utc>,
) -> Result<()> {
    finish(ctx, experiment, status, verdict, now).await?;
    let uid = experiment.uid().unwrap_or_default();
    ctx.hypotheses.forget(&uid);
    // The receipts confirmed every fault reverted; the work items left are housekeeping. (An
    // experiment that never reverted made none; one a restarted controller did not see
    // revert is cleaned up by the next reconcile, from the FaultInjections it finds.)
    if ctx.caches.reverts.get(&uid).is_some_and(|a| !a.deletion) {
        super::delete_injections(ctx, experiment);
    }
    ctx.caches.probe_writes.remove(&uid);
    ctx.caches.status_writes.remove(&uid);
    remove_finalizer(ctx, experiment).await
}

/// Writes the verdict, its condition and its numbers, then counts it and publishes its Events.
async fn finish(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    Verdict {
        verdict,
        reason,
        message,
    }: Verdict,
    now: DateTime<Utc>,
) -> Result<()> {
    use crate::api::Verdict::*;
    let mut events = Vec::new();
    if verdict == DryRun {
        // The plan, one line per target and fault, exactly as a real run would act on it.
        let plan: Vec<Fact> = status
            .targets
            .iter()
            .map(|record| {
                Fact::normal("WouldInject", "DryRun", planned_action(record)).about(record)
            })
            .collect();
        for fact in plan {
            events.push(status::record(ctx, status, fact));
        }
    }
    let aborted = matches!(status.phase, Phase::Aborting);
    let mut abort_latency = None;
    let mut recovery_time = None;
    if aborted {
        mark_reverted(status, now, experiment.metadata.generation);
        if let Some(started) = status.abort_started_at {
            let latency = (now - started).to_std().unwrap_or_default();
            status.abort_latency = Some(GoDuration::from_duration(latency));
            abort_latency = Some(latency);
        }
    } else if verdict == Passed
        && let Some(reverted) = status.reverted_at
    {
        let recovery = (now - reverted).to_std().unwrap_or_default();
        status.recovery_time = Some(GoDuration::from_duration(recovery));
        recovery_time = Some(recovery);
    }
    status.phase = match verdict {
        Passed | DryRun => Phase::Succeeded,
        Aborted => Phase::Aborted,
        Failed | Error | Inconclusive => Phase::Failed,
    };
    status.verdict = Some(verdict);
    status.reason = Some(reason.into());
    status.message = Some(message.clone());
    status.finished_at = Some(now);
    let generation = experiment.metadata.generation;
    set_condition(
        &mut status.conditions,
        "Complete",
        ConditionStatus::True,
        &format!("{verdict:?}"),
        &message,
        generation,
        now,
    );
    let reason_word = format!("Experiment{verdict:?}");
    let fact = if matches!(verdict, Passed | DryRun) {
        Fact::normal(&reason_word, "Finish", message)
    } else {
        Fact::warning(&reason_word, "Finish", message)
    };
    events.push(status::record(ctx, status, fact));
    status::write_verdict(ctx, experiment, status).await?;
    // Counted once the verdict is written, so once per experiment: the write is conditional
    // on the version the verdict was decided from (or made while only an older write of
    // probe results was on its way), and a retry after a failed write counts nothing twice.
    let metrics = &ctx.metrics;
    if aborted {
        if let Some(latency) = abort_latency {
            metrics.abort_latency.observe(latency.as_secs_f64());
        }
        metrics
            .experiments_aborted
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
    if let Some(recovery) = recovery_time {
        metrics.recovery_time.observe(recovery.as_secs_f64());
    }
    metrics
        .experiments_finished
        .get_or_create(&VerdictLabel {
            verdict: format!("{verdict:?}"),
        })
        .inc();
    status::publish(ctx, experiment, events).await;
    Ok(())
}

/// Every FaultInjection is gone: records that were (or may have been) in are Reverted. The
/// `Reverted` condition says "confirmed" only when an agent confirmed it: a record the agent
/// reported Applied had the agent's finalizer, so its FaultInjection could only go once that
/// agent had reverted it. A record still `Injecting` was never reported applied: no agent may
/// ever have held it, and the condition says what is unknown and what to check.
pub(super) fn mark_reverted(
    status: &mut ChaosExperimentStatus,
    now: DateTime<Utc>,
    generation: Option<i64>,
) {
    status.reverted_at = Some(now);
    let mut unconfirmed = Vec::new();
    for record in status.targets.iter_mut() {
        if record.state == TargetState::Injecting && record.injection.is_some() {
            unconfirmed.push(format!(
                "{} on pod {}/{} (node {})",
                record.fault,
                record.namespace,
                record.name,
                record.node_name.as_deref().unwrap_or("?")
            ));
            record.message = Some(
                "its FaultInjection is deleted, but no agent ever reported this fault applied, so no agent confirmed its revert".into(),
            );
        }
        if matches!(record.state, TargetState::Injected | TargetState::Injecting) {
            record.state = TargetState::Reverted;
            record.reverted_at = Some(now);
        }
    }
    let (condition, reason, message) = if unconfirmed.is_empty() {
        (
            ConditionStatus::True,
            "FaultsReverted",
            "every fault is confirmed reverted".to_string(),
        )
    } else {
        (
            ConditionStatus::Unknown,
            "RevertUnconfirmed",
            crate::lifecycle::unconfirmed_sentence(&unconfirmed.join(", ")),
        )
    };
    set_condition(
        &mut status.conditions,
        "Reverted",
        condition,
        reason,
        &message,
        generation,
        now,
    );
}

/// What a real run would do to one target, for a dry run's plan.
fn planned_action(record: &TargetRecord) -> String {
    let target = format!("{}/{}", record.namespace, record.name);
    let node = record.node_name.as_deref().unwrap_or("an unscheduled node");
    match &record.injection {
        Some(injection) => format!(
            "{} on pod {target} (node {node}) through FaultInjection {injection}",
            record.fault
        ),
        None => format!("{} of pod {target} (node {node})", record.fault),
    }
}
