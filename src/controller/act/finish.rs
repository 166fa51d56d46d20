//! Ending an experiment: the verdict, the numbers (abort latency, recovery time), the last
//! records, the metrics, and letting go of the probes and the finalizer. (client required)

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use super::{Context, Next, Result, Turn, finalizer::remove_finalizer, revert};
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

/// Ends the experiment as decided.
pub(super) async fn decided(turn: &mut Turn<'_>, verdict: Verdict) -> Result<Next> {
    let status = &mut turn.status;
    if let Some((cause, _)) = &turn.observed.abort_begun
        && matches!(status.phase, Phase::Injecting | Phase::Running)
    {
        // An abort whose receipts came in before its Aborting status was written: the
        // verdict's write carries both. Its Event went out when it began.
        let begun = crate::lifecycle::abort_begun(&turn.observed, cause);
        revert::mark_aborting(status, cause, &begun);
    }
    conclude(turn.ctx, turn.experiment, status, verdict, turn.now).await?;
    Ok(Next::Continue(None))
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
        revert::delete_injections(ctx, experiment);
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
        if let Some(fact) = mark_reverted(status, now, experiment.metadata.generation) {
            events.push(status::record(ctx, status, fact));
        }
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
///
/// Each record's revert time is its node's receipt's (when the agent says its last fault there
/// left the kernel), not this confirmation's: an agent that ended the faults at their deadline
/// while the controller could not act wrote its receipt, with that earlier time, once it could.
/// When every receipt is noticeably older than the confirmation, the returned fact says so for
/// the timeline.
pub(super) fn mark_reverted(
    status: &mut ChaosExperimentStatus,
    now: DateTime<Utc>,
    generation: Option<i64>,
) -> Option<Fact> {
    status.reverted_at = Some(now);
    let receipts: std::collections::BTreeMap<String, DateTime<Utc>> = status
        .revert_receipts
        .iter()
        .map(|r| (r.node.clone(), r.reverted_at.min(now)))
        .collect();
    let mut out_by: Option<DateTime<Utc>> = None;
    let mut every_record_receipted = true;
    let mut unconfirmed = Vec::new();
    for record in status.targets.iter_mut() {
        if record.state == TargetState::Injecting && record.injection.is_none() {
            // A pod kill left under way that the experiment ended before finishing: nothing
            // to revert, and no record says whether it happened.
            record.state = TargetState::Skipped;
            record.message = Some(
                "the experiment ended before this pod kill was finished: it was under way when a reconcile stopped, so the pod may or may not have been killed".into(),
            );
            continue;
        }
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
            let receipt = record
                .node_name
                .as_deref()
                .and_then(|node| receipts.get(node))
                .copied();
            every_record_receipted &= receipt.is_some();
            let at = receipt.unwrap_or(now);
            out_by = out_by.max(Some(at));
            record.state = TargetState::Reverted;
            record.reverted_at = Some(at);
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
    let out_by = out_by.filter(|at| every_record_receipted && now - *at >= NOTICEABLY_EARLIER)?;
    Some(Fact::warning(
        "FaultsOutBeforeRevert",
        "Revert",
        format!(
            "every fault was out of the kernel by {}, {} before the controller confirmed it: the agents took them out without waiting for it (at their deadline, `expiresAt`, or as their pods went), so the controller could not act in time (the API server out of reach, or no controller running)",
            out_by.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            GoDuration::from_duration((now - out_by).to_std().unwrap_or_default())
        ),
    ))
}

/// How much older than the controller's confirmation the agents' receipts must be for the
/// timeline to say the faults were out before the controller could act.
const NOTICEABLY_EARLIER: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RevertReceipt;
    use chrono::TimeDelta;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::seconds(seconds)
    }

    fn injected(name: &str, node: &str) -> TargetRecord {
        TargetRecord {
            namespace: "shop".into(),
            name: name.into(),
            node_name: Some(node.into()),
            injection: Some(format!("exp-0-{name}")),
            state: TargetState::Injected,
            ..Default::default()
        }
    }

    fn receipt(node: &str, at: DateTime<Utc>) -> RevertReceipt {
        RevertReceipt {
            node: node.into(),
            reverted_at: at,
            injections: 1,
            failed: None,
        }
    }

    #[test]
    fn records_take_their_nodes_receipt_time_and_faults_out_long_before_are_told() {
        let mut status = ChaosExperimentStatus {
            targets: vec![injected("a", "n1"), injected("b", "n2")],
            revert_receipts: vec![receipt("n1", t(-7)), receipt("n2", t(-8))],
            ..Default::default()
        };
        let fact = mark_reverted(&mut status, t(0), None).expect("told");
        assert_eq!(status.reverted_at, Some(t(0)), "the confirmation");
        assert_eq!(status.targets[0].reverted_at, Some(t(-7)));
        assert_eq!(status.targets[1].reverted_at, Some(t(-8)));
        assert!(
            status
                .targets
                .iter()
                .all(|r| r.state == TargetState::Reverted)
        );
        assert_eq!(fact.reason, "FaultsOutBeforeRevert");
        let out_by = t(-7).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert!(
            fact.message.starts_with(&format!(
                "every fault was out of the kernel by {out_by}, 7s before"
            )),
            "the last node's time: {}",
            fact.message
        );
    }

    #[test]
    fn a_pod_kill_the_experiment_ended_before_finishing_is_not_called_reverted() {
        let unfinished_kill = TargetRecord {
            name: "c".into(),
            fault: "podKill".into(),
            state: TargetState::Injecting,
            ..Default::default()
        };
        let mut status = ChaosExperimentStatus {
            targets: vec![injected("a", "n1"), unfinished_kill],
            revert_receipts: vec![receipt("n1", t(0))],
            ..Default::default()
        };
        mark_reverted(&mut status, t(0), None);
        assert_eq!(status.targets[0].state, TargetState::Reverted);
        let kill = &status.targets[1];
        assert_eq!(kill.state, TargetState::Skipped);
        assert_eq!(kill.reverted_at, None);
        assert!(
            kill.message
                .as_deref()
                .is_some_and(|m| m.contains("may or may not have been killed")),
            "{kill:?}"
        );
    }

    #[test]
    fn receipts_just_before_the_confirmation_or_missing_are_not_told() {
        let mut prompt = ChaosExperimentStatus {
            targets: vec![injected("a", "n1")],
            revert_receipts: vec![receipt("n1", t(0) - TimeDelta::milliseconds(40))],
            ..Default::default()
        };
        assert!(mark_reverted(&mut prompt, t(0), None).is_none());
        assert_eq!(
            prompt.targets[0].reverted_at,
            Some(t(0) - TimeDelta::milliseconds(40))
        );

        let mut one_missing = ChaosExperimentStatus {
            targets: vec![injected("a", "n1"), injected("b", "n2")],
            revert_receipts: vec![receipt("n1", t(-30))],
            ..Default::default()
        };
        assert!(
            mark_reverted(&mut one_missing, t(0), None).is_none(),
            "n2's faults went out when their FaultInjections went: no earlier time to tell"
        );
        assert_eq!(one_missing.targets[0].reverted_at, Some(t(-30)));
        assert_eq!(one_missing.targets[1].reverted_at, Some(t(0)));

        let mut from_the_future = ChaosExperimentStatus {
            targets: vec![injected("a", "n1")],
            revert_receipts: vec![receipt("n1", t(5))],
            ..Default::default()
        };
        mark_reverted(&mut from_the_future, t(0), None);
        assert_eq!(
            from_the_future.targets[0].reverted_at,
            Some(t(0)),
            "a node clock ahead never puts a revert after its confirmation"
        );
    }
}
