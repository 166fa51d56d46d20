//! Injection progress in status, coalesced: while faults go in, the agents report each one
//! Applied, and each report wakes a reconcile that marks its target `Injected`. Written every
//! time, that was a status write per handful of reports (9 writes of the experiment for 100
//! targets on the real control plane, 30-80 ms of API server time each, in the window the
//! injection is measured in), and at 500 targets every write of the experiment costs the API
//! server 0.1-0.4 s. So progress alone is written at most once per [`PUBLISH_INTERVAL`], the
//! probes' cadence; anything else (a fact, a probe result, a phase) is written at once, and the
//! transition to Running writes every target's state. Pure.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{
    api::{ChaosExperimentStatus, TargetRecord, TargetState},
    controller::probe_hub::PUBLISH_INTERVAL,
};

/// How long to hold back writing `new` over `recorded`: `Some` when all that changed is
/// injection progress and the last status write was less than [`PUBLISH_INTERVAL`] ago (then
/// the wait until it is due), `None` when it is to be written now.
pub(super) fn hold_back(
    recorded: Option<&ChaosExperimentStatus>,
    new: &ChaosExperimentStatus,
    last_written: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    held_back(recorded, new, last_written, now, progress_only)
}

/// [`hold_back`] for a revert under way: while the agents take the faults out, a status that
/// differs only in probe results (the last samples before the probes stopped, the hypothesis
/// now `NotChecked` and its condition) waits, at most [`PUBLISH_INTERVAL`] after the last
/// write, for the verdict's write to carry it. Written at once, it met the agents' receipts
/// on the way (a conflict at 500 targets, 0.2-0.5 s on the real control plane, before the
/// verdict could be written).
pub(super) fn hold_back_while_reverting(
    recorded: Option<&ChaosExperimentStatus>,
    new: &ChaosExperimentStatus,
    last_written: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    held_back(recorded, new, last_written, now, probe_results_only)
}

/// [`hold_back`] for a running experiment: a status that differs only in the packet counts
/// of its faults (what the agents' NFQUEUE reports carry) waits, at most [`PUBLISH_INTERVAL`]
/// after the last write, like progress does. At 500 targets the agents' Applied statuses,
/// which come with the counts, arrive in batches for seconds after the injection; each batch
/// was an awaited write of the whole experiment (0.06-0.17 s on the real control plane), and
/// an abort decided meanwhile waited for it.
pub(super) fn hold_back_running(
    recorded: Option<&ChaosExperimentStatus>,
    new: &ChaosExperimentStatus,
    last_written: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    held_back(recorded, new, last_written, now, packet_counts_only)
}

/// Whether `new` differs from `recorded` in what is observed while faults run alone: probe
/// results (see [`probe_results_only`]) and the packet counts of the faults. Neither decides
/// anything; while an experiment runs, such a status is written behind
/// (`status::write_behind`), so that a probe failing meanwhile is decided on at once.
pub(super) fn observations_only(
    recorded: &ChaosExperimentStatus,
    new: &ChaosExperimentStatus,
) -> bool {
    with_counts_of(recorded, new).is_some_and(|rest| probe_results_only(recorded, &rest))
}

/// Whether `new` differs from `recorded` in the faults' packet counts alone.
fn packet_counts_only(recorded: &ChaosExperimentStatus, new: &ChaosExperimentStatus) -> bool {
    with_counts_of(recorded, new).is_some_and(|rest| rest == *recorded)
}

/// `new` with `recorded`'s packet counts, for the same targets (None when the targets differ
/// in number, which counts cannot explain).
fn with_counts_of(
    recorded: &ChaosExperimentStatus,
    new: &ChaosExperimentStatus,
) -> Option<ChaosExperimentStatus> {
    if recorded.targets.len() != new.targets.len() {
        return None;
    }
    let mut rest = new.clone();
    for (kept, before) in rest.targets.iter_mut().zip(&recorded.targets) {
        kept.matched_packets = before.matched_packets;
        kept.bypassed_packets = before.bypassed_packets;
    }
    Some(rest)
}

/// How long to hold back `new` when `news_only` says it can wait: until [`PUBLISH_INTERVAL`]
/// after the last write.
fn held_back(
    recorded: Option<&ChaosExperimentStatus>,
    new: &ChaosExperimentStatus,
    last_written: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    news_only: fn(&ChaosExperimentStatus, &ChaosExperimentStatus) -> bool,
) -> Option<Duration> {
    let since = (now - last_written?).to_std().unwrap_or_default();
    let wait = PUBLISH_INTERVAL
        .checked_sub(since)
        .filter(|wait| !wait.is_zero())?;
    news_only(recorded?, new).then_some(wait.max(Duration::from_millis(50)))
}

/// Whether `new` differs from `recorded` in probe results alone: the probes' samples and
/// counts, when they last checked, the hypothesis state and its `HypothesisHolding` condition.
fn probe_results_only(recorded: &ChaosExperimentStatus, new: &ChaosExperimentStatus) -> bool {
    let recorded_condition = recorded
        .conditions
        .iter()
        .find(|c| c.type_ == HYPOTHESIS_CONDITION);
    let rest = ChaosExperimentStatus {
        probes: recorded.probes.clone(),
        checks: recorded.checks.clone(),
        last_checked_at: recorded.last_checked_at,
        hypothesis: recorded.hypothesis,
        conditions: new
            .conditions
            .iter()
            .filter_map(|c| {
                if c.type_ == HYPOTHESIS_CONDITION {
                    recorded_condition.cloned()
                } else {
                    Some(c.clone())
                }
            })
            .collect(),
        ..new.clone()
    };
    rest == *recorded
}

/// Whether what `new` adds to `recorded` can wait for the verdict's write of an abort under
/// way: probe results and injection progress, which the reconcile that writes the verdict
/// reads again (from the probes and the agents' reports). A target that left, a fact in the
/// timeline, anything else cannot.
pub(super) fn verdict_may_carry(
    recorded: Option<&ChaosExperimentStatus>,
    new: &ChaosExperimentStatus,
) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    if recorded.targets.len() != new.targets.len() {
        return false;
    }
    let mut rest = new.clone();
    for (kept, (before, after)) in rest
        .targets
        .iter_mut()
        .zip(recorded.targets.iter().zip(&new.targets))
    {
        if as_progressed(before, after) == *before {
            *kept = before.clone();
        }
    }
    rest.faults_injected = recorded.faults_injected;
    probe_results_only(recorded, &rest)
}

/// The condition that says whether the hypothesis holds.
pub(super) const HYPOTHESIS_CONDITION: &str = "HypothesisHolding";

/// Whether `new` differs from `recorded` in injection progress alone: targets that went in
/// (state, time, the agent's words, packet counts) and the count of faults in.
fn progress_only(recorded: &ChaosExperimentStatus, new: &ChaosExperimentStatus) -> bool {
    if recorded.targets.len() != new.targets.len() {
        return false;
    }
    let same_targets = recorded
        .targets
        .iter()
        .zip(&new.targets)
        .all(|(before, after)| *before == as_progressed(before, after));
    let mut rest = new.clone();
    rest.targets = recorded.targets.clone();
    rest.faults_injected = recorded.faults_injected;
    same_targets && rest == *recorded
}

/// `after` with `before`'s progress fields: equal to `before` when nothing else moved. A
/// change of state is progress only from `Injecting` to `Injected`.
fn as_progressed(before: &TargetRecord, after: &TargetRecord) -> TargetRecord {
    let went_in = before.state == TargetState::Injecting && after.state == TargetState::Injected;
    TargetRecord {
        state: if went_in { before.state } else { after.state },
        injected_at: before.injected_at,
        message: before.message.clone(),
        bypassed_packets: before.bypassed_packets,
        matched_packets: before.matched_packets,
        ..after.clone()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::{Phase, TimelineEntry};

    fn t(millis: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + millis)
            .unwrap()
    }

    fn injecting(targets: usize) -> ChaosExperimentStatus {
        ChaosExperimentStatus {
            phase: Phase::Injecting,
            targets: (0..targets)
                .map(|i| TargetRecord {
                    namespace: "shop".into(),
                    name: format!("web-{i}"),
                    uid: format!("uid-{i}"),
                    fault: "networkLatency".into(),
                    state: TargetState::Injecting,
                    injection: Some(format!("x-0-{i}")),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn applied(mut status: ChaosExperimentStatus, index: usize) -> ChaosExperimentStatus {
        let record = &mut status.targets[index];
        record.state = TargetState::Injected;
        record.injected_at = Some(t(5));
        record.message = Some("nfqueue".into());
        record.matched_packets = Some(3);
        status.faults_injected += 1;
        status
    }

    #[test]
    fn progress_alone_waits_for_the_interval_since_the_last_write() {
        let recorded = injecting(3);
        let new = applied(recorded.clone(), 1);
        assert_eq!(
            hold_back(Some(&recorded), &new, Some(t(0)), t(300)),
            Some(Duration::from_millis(700))
        );
        assert_eq!(hold_back(Some(&recorded), &new, Some(t(0)), t(1000)), None);
        // The first write of a controller that just started is not held back.
        assert_eq!(hold_back(Some(&recorded), &new, None, t(300)), None);
    }

    #[test]
    fn anything_besides_progress_is_written_at_once() {
        let recorded = injecting(3);

        let mut fact = applied(recorded.clone(), 0);
        fact.timeline.push(TimelineEntry {
            time: t(1),
            reason: "FaultPartlyApplied".into(),
            message: "pod shop/web-0: ...".into(),
        });
        assert_eq!(hold_back(Some(&recorded), &fact, Some(t(0)), t(1)), None);

        let mut withdrawn = recorded.clone();
        withdrawn.targets[2].state = TargetState::Withdrawn;
        assert_eq!(
            hold_back(Some(&recorded), &withdrawn, Some(t(0)), t(1)),
            None
        );

        let mut renamed = applied(recorded.clone(), 0);
        renamed.targets[0].name = "other".into();
        assert_eq!(hold_back(Some(&recorded), &renamed, Some(t(0)), t(1)), None);

        let mut moved_on = recorded.clone();
        moved_on.phase = Phase::Running;
        assert_eq!(
            hold_back(Some(&recorded), &moved_on, Some(t(0)), t(1)),
            None
        );
    }

    fn running_with_counts(matched: i64, bypassed: i64) -> ChaosExperimentStatus {
        let mut status = applied(applied(injecting(2), 0), 1);
        status.phase = Phase::Running;
        for record in &mut status.targets {
            record.matched_packets = Some(matched);
            record.bypassed_packets = Some(bypassed);
        }
        status
    }

    #[test]
    fn while_running_packet_counts_alone_wait_for_the_interval_since_the_last_write() {
        let recorded = running_with_counts(0, 0);
        let mut counted = recorded.clone();
        counted.targets[1].matched_packets = Some(1200);
        assert!(observations_only(&recorded, &counted));
        assert_eq!(
            hold_back_running(Some(&recorded), &counted, Some(t(0)), t(250)),
            Some(Duration::from_millis(750))
        );
        assert_eq!(
            hold_back_running(Some(&recorded), &counted, Some(t(0)), t(1000)),
            None
        );
        // Counts that were not there at all before are counts too (the Applied status that
        // an agent held back brings them).
        let mut first = recorded.clone();
        first.targets[0].matched_packets = None;
        first.targets[0].bypassed_packets = None;
        assert_eq!(
            hold_back_running(Some(&first), &recorded, Some(t(0)), t(250)),
            Some(Duration::from_millis(750))
        );
    }

    #[test]
    fn while_running_probe_results_go_out_behind_at_once_counts_with_them() {
        let recorded = running_with_counts(0, 0);
        let mut new = recorded.clone();
        new.targets[0].matched_packets = Some(7);
        new.checks = Some("12 passed, 0 failed".into());
        new.last_checked_at = Some(t(900));
        assert!(observations_only(&recorded, &new));
        assert_eq!(
            hold_back_running(Some(&recorded), &new, Some(t(0)), t(250)),
            None,
            "probe results are already held to their cadence where they are refreshed"
        );
    }

    #[test]
    fn while_running_anything_besides_observations_is_written_and_waited_for() {
        let recorded = running_with_counts(0, 0);
        let mut gone = running_with_counts(5, 0);
        gone.targets[1].state = TargetState::Gone;
        assert!(!observations_only(&recorded, &gone));
        assert_eq!(
            hold_back_running(Some(&recorded), &gone, Some(t(0)), t(1)),
            None
        );

        let mut fact = running_with_counts(5, 2);
        fact.timeline.push(TimelineEntry {
            time: t(1),
            reason: "FaultPartlyApplied".into(),
            message: "pod shop/web-0: the fault was only partly in place".into(),
        });
        assert!(!observations_only(&recorded, &fact));
        assert_eq!(
            hold_back_running(Some(&recorded), &fact, Some(t(0)), t(1)),
            None
        );

        let mut fewer = recorded.clone();
        fewer.targets.pop();
        assert!(!observations_only(&recorded, &fewer));
        assert_eq!(
            hold_back_running(Some(&recorded), &fewer, Some(t(0)), t(1)),
            None
        );
    }

    fn aborting() -> ChaosExperimentStatus {
        let mut status = applied(injecting(2), 0);
        status.phase = Phase::Aborting;
        status.hypothesis = Some(crate::api::HypothesisState::Violated);
        status.conditions = vec![crate::api::Condition {
            type_: HYPOTHESIS_CONDITION.into(),
            status: crate::api::ConditionStatus::False,
            reason: "Violated".into(),
            ..Default::default()
        }];
        status
    }

    /// `status` with the probes' last samples in and the hypothesis no longer checked.
    fn probes_stopped(mut status: ChaosExperimentStatus) -> ChaosExperimentStatus {
        status.checks = Some("41 checks, 3 failed".into());
        status.last_checked_at = Some(t(900));
        status.hypothesis = Some(crate::api::HypothesisState::NotChecked);
        status.probes = vec![crate::api::ProbeStatus {
            name: "service".into(),
            failures: 3,
            ..Default::default()
        }];
        status.conditions[0].status = crate::api::ConditionStatus::Unknown;
        status.conditions[0].reason = "NotChecked".into();
        status
    }

    #[test]
    fn while_reverting_probe_results_alone_wait_for_the_verdict_at_most_the_interval() {
        let recorded = aborting();
        let new = probes_stopped(recorded.clone());
        assert_eq!(
            hold_back_while_reverting(Some(&recorded), &new, Some(t(0)), t(200)),
            Some(Duration::from_millis(800))
        );
        assert_eq!(
            hold_back_while_reverting(Some(&recorded), &new, Some(t(0)), t(1000)),
            None
        );
        // Injection progress is not probe results.
        assert_eq!(
            hold_back_while_reverting(
                Some(&recorded),
                &applied(recorded.clone(), 1),
                Some(t(0)),
                t(200)
            ),
            None
        );
    }

    #[test]
    fn while_reverting_anything_besides_probe_results_is_written_at_once() {
        let recorded = aborting();
        let mut verdict = probes_stopped(recorded.clone());
        verdict.phase = Phase::Aborted;
        assert_eq!(
            hold_back_while_reverting(Some(&recorded), &verdict, Some(t(0)), t(200)),
            None
        );
        let mut another_condition = probes_stopped(recorded.clone());
        another_condition.conditions.push(crate::api::Condition {
            type_: "Reverted".into(),
            status: crate::api::ConditionStatus::True,
            ..Default::default()
        });
        assert_eq!(
            hold_back_while_reverting(Some(&recorded), &another_condition, Some(t(0)), t(200)),
            None
        );
        let mut fact = probes_stopped(recorded.clone());
        fact.timeline.push(TimelineEntry {
            time: t(1),
            reason: "TargetGone".into(),
            message: "pod shop/web-1 ...".into(),
        });
        assert_eq!(
            hold_back_while_reverting(Some(&recorded), &fact, Some(t(0)), t(200)),
            None
        );
    }
}
