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
    let recorded = recorded?;
    let since = (now - last_written?).to_std().unwrap_or_default();
    let wait = PUBLISH_INTERVAL
        .checked_sub(since)
        .filter(|wait| !wait.is_zero())?;
    progress_only(recorded, new).then_some(wait.max(Duration::from_millis(50)))
}

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
}
