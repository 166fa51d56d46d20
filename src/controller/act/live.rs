//! Keeping status current between decisions: what the agents report applied, the probes'
//! results, the hypothesis now and its condition, gaps in the checks. Pure: the values come
//! in, the status and the facts to publish go out.
//!
//! Probe results are written coalesced: at once when the hypothesis changes or the decision
//! moves the experiment on, otherwise at most once per [`PUBLISH_INTERVAL`]. While an
//! experiment runs with probes that check at least once a second, that is about 60 status
//! writes a minute; slower probes mean fewer (only new results are written).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use crate::{
    api::{
        ChaosExperimentStatus, ConditionStatus, FaultInjection, HypothesisState, InjectionPhase,
        TargetState,
    },
    controller::{events::Fact, probe_hub::PUBLISH_INTERVAL},
    lifecycle::{HypothesisView, record::set_condition},
    probes::hypothesis::ProbeRecord,
};

/// `12:00:03.120`.
fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S%.3f").to_string()
}

/// Records whose FaultInjection the agent reports Applied become `Injected`, stamped with the
/// agent's own time (`now` if it gave none) and its mechanism (`nfqueue`, `nftables`, ...). So
/// the report knows when and how each fault went in even if the experiment stops before every
/// fault is in. The agent's full description (the fault, its peers, the deadline, the queue
/// and interface it used) stays on the FaultInjection and in the agent's log: copied into
/// every record it was 160 bytes a target, a third of a 500-target experiment's 240 KB, which
/// every status write sends whole (see README, Performance). Returns the facts to publish
/// (none: "every fault is in" is the transition's).
pub(super) fn follow_injections(
    status: &mut ChaosExperimentStatus,
    injections: &[Arc<FaultInjection>],
    now: DateTime<Utc>,
) -> Vec<Fact> {
    let mut applied = 0;
    for record in status
        .targets
        .iter_mut()
        .filter(|r| r.state == TargetState::Injecting)
    {
        let Some(name) = record.injection.as_deref() else {
            continue;
        };
        let Some(report) = injections
            .iter()
            .find(|i| i.name_any() == name)
            .and_then(|i| i.status.as_ref())
            .filter(|s| s.phase == InjectionPhase::Applied)
        else {
            continue;
        };
        record.state = TargetState::Injected;
        if record.injected_at.is_none() {
            record.injected_at = Some(report.applied_at.unwrap_or(now));
        }
        record.message = report.mechanism.clone().or_else(|| report.message.clone());
        applied += 1;
    }
    status.faults_injected += applied;
    Vec::new()
}

/// Copies what the agents report about packets that escaped each network fault (NFQUEUE's
/// queue full) into the target records, so status and the report say how much of the fault
/// was in place. The first time a target's fault lets packets through, a Warning says so.
pub(super) fn follow_packets(
    status: &mut ChaosExperimentStatus,
    injections: &[Arc<FaultInjection>],
) -> Vec<Fact> {
    let mut facts = Vec::new();
    for record in status.targets.iter_mut() {
        let Some(name) = record.injection.as_deref() else {
            continue;
        };
        let Some(report) = injections
            .iter()
            .find(|i| i.name_any() == name)
            .and_then(|i| i.status.as_ref())
        else {
            continue;
        };
        if report.bypassed_packets.is_none() && report.matched_packets.is_none() {
            continue;
        }
        let before = record.bypassed_packets.unwrap_or(0);
        record.bypassed_packets = report.bypassed_packets.or(record.bypassed_packets);
        record.matched_packets = report.matched_packets.or(record.matched_packets);
        if before == 0
            && let Some(partly) = record.partly_applied()
        {
            facts.push(
                Fact::warning(
                    "FaultPartlyApplied",
                    "Inject",
                    format!("pod {}/{}: {partly}", record.namespace, record.name),
                )
                .about(record),
            );
        }
    }
    facts
}

/// What the probe refresh looks at.
pub(super) struct ProbeInput<'a> {
    /// The probes' results (None when they are not running in this controller).
    pub snapshot: Option<ProbeRecord>,
    /// The hypothesis now (None: no steady state, or the experiment is over).
    pub state: Option<HypothesisState>,
    /// What the probes of the current phase say, for the messages.
    pub view: &'a HypothesisView,
    /// The decision moves the experiment on (a transition, an abort, a verdict, a hold).
    pub decisive: bool,
    /// When probe results were last written for this experiment.
    pub last_written: Option<DateTime<Utc>>,
    pub generation: Option<i64>,
    pub now: DateTime<Utc>,
}

/// What the probe refresh did.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ProbeUpdate {
    /// New results went into status.
    pub refreshed: bool,
    /// New results were held back until then, to keep writes at about one a second.
    pub withheld_until: Option<DateTime<Utc>>,
    pub facts: Vec<Fact>,
}

/// Brings the probe fields of status up to date, if due.
pub(super) fn refresh_probes(
    status: &mut ChaosExperimentStatus,
    input: ProbeInput<'_>,
) -> ProbeUpdate {
    let ProbeInput {
        snapshot,
        state,
        view,
        decisive,
        last_written,
        generation,
        now,
    } = input;
    let mut update = ProbeUpdate::default();
    let Some(state) = state else {
        return update;
    };
    let changed = status.hypothesis != Some(state);
    let fresh = snapshot
        .as_ref()
        .filter(|s| s.probes != status.probes || s.gaps != status.probe_gaps);
    let interval = chrono::Duration::from_std(PUBLISH_INTERVAL).unwrap_or_default();
    let due = decisive || changed || last_written.is_none_or(|at| now - at >= interval);
    if let Some(fresh) = fresh {
        if !due {
            update.withheld_until = last_written.map(|at| at + interval);
            return update;
        }
        update.facts.extend(closed_gaps(status, fresh));
        status.probes = fresh.probes.clone();
        status.probe_gaps = fresh.gaps.clone();
        let (passed, failed) = status
            .probes
            .iter()
            .fold((0, 0), |(p, f), s| (p + s.passes, f + s.failures));
        status.checks = Some(format!("{passed} passed, {failed} failed"));
        status.last_checked_at = status.probes.iter().filter_map(|p| p.last_checked_at).max();
        update.refreshed = true;
    }
    if changed {
        if !decisive {
            update
                .facts
                .extend(hypothesis_fact(status.hypothesis, state, view));
        }
        status.hypothesis = Some(state);
    }
    let (condition, reason, message) = match (state, view) {
        (HypothesisState::Holding, _) => (
            ConditionStatus::True,
            "Holding",
            "every probe of the phase holds".to_string(),
        ),
        (HypothesisState::Violated, HypothesisView::Violated { message, .. }) => {
            (ConditionStatus::False, "ProbeFailed", message.clone())
        }
        (HypothesisState::Violated, _) => (
            ConditionStatus::False,
            "ProbeFailed",
            "a probe exceeded its failure threshold".to_string(),
        ),
        (HypothesisState::Undecided, _) => (
            ConditionStatus::Unknown,
            "Undecided",
            "waiting for enough fresh checks to decide".to_string(),
        ),
        (HypothesisState::NotChecked, _) => (
            ConditionStatus::Unknown,
            "NotChecked",
            "no probe runs now (the experiment waits to start, or its faults are being reverted)"
                .to_string(),
        ),
    };
    set_condition(
        &mut status.conditions,
        super::progress::HYPOTHESIS_CONDITION,
        condition,
        reason,
        &message,
        generation,
        now,
    );
    update
}

/// The facts for gaps that `fresh` closes: how long no probe checked, and why.
fn closed_gaps(status: &ChaosExperimentStatus, fresh: &ProbeRecord) -> Vec<Fact> {
    fresh
        .gaps
        .iter()
        .filter_map(|gap| {
            let to = gap.to?;
            let known = status
                .probe_gaps
                .iter()
                .any(|g| g.from == gap.from && g.to.is_some());
            (!known).then(|| {
                let seconds = (to - gap.from).num_milliseconds() as f64 / 1000.0;
                Fact::warning(
                    "ProbesResumed",
                    "Check",
                    format!(
                        "no probe checked anything for {seconds:.1}s (from {} to {}): the controller that ran the probes stopped (a failover or a restart); the checks before are kept and the hypothesis is judged on fresh checks",
                        clock(gap.from),
                        clock(to)
                    ),
                )
            })
        })
        .collect()
}

/// The fact for a hypothesis that breaks or holds again while the experiment goes on (an
/// abort or a verdict has its own).
fn hypothesis_fact(
    before: Option<HypothesisState>,
    now: HypothesisState,
    view: &HypothesisView,
) -> Option<Fact> {
    match (before, now, view) {
        (_, HypothesisState::Violated, HypothesisView::Violated { message, .. }) => {
            Some(Fact::warning(
                "HypothesisViolated",
                "Check",
                format!("{message}; abort.onHypothesisFailure is off, so the faults stay in"),
            ))
        }
        (Some(HypothesisState::Violated), HypothesisState::Holding, _) => Some(Fact::normal(
            "HypothesisHolding",
            "Check",
            "every probe holds again",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::{ProbeGap, ProbeStatus};

    fn t(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    fn snapshot(passes: i64, at: i64) -> ProbeRecord {
        ProbeRecord {
            probes: vec![ProbeStatus {
                name: "web".into(),
                passes,
                holding: true,
                last_checked_at: Some(t(at)),
                ..Default::default()
            }],
            gaps: vec![],
        }
    }

    fn input(snapshot: ProbeRecord, last_written: Option<i64>, now: i64) -> ProbeInput<'static> {
        ProbeInput {
            snapshot: Some(snapshot),
            state: Some(HypothesisState::Holding),
            view: &HypothesisView::Holding,
            decisive: false,
            last_written: last_written.map(t),
            generation: Some(1),
            now: t(now),
        }
    }

    #[test]
    fn a_fault_the_agent_applied_is_in_from_the_agents_time_even_if_the_rest_never_comes() {
        use crate::api::{FaultInjectionStatus, TargetRecord};
        let record = |name: &str| TargetRecord {
            name: name.into(),
            state: TargetState::Injecting,
            injection: Some(format!("fi-{name}")),
            ..Default::default()
        };
        let mut status = ChaosExperimentStatus {
            targets: vec![record("a"), record("b")],
            ..Default::default()
        };
        let mut applied: FaultInjection = serde_json::from_value(serde_json::json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
            "metadata": {"name": "fi-a", "namespace": "shop"},
            "spec": {"experiment": {"name": "e"}, "target": {"namespace": "shop", "name": "a", "uid": "u"},
                     "nodeName": "node-1", "fault": {"partition": "both", "peerCidrs": ["10.0.0.0/8"]},
                     "expiresAt": "2030-01-01T00:00:00Z"},
        }))
        .unwrap();
        applied.status = Some(FaultInjectionStatus {
            phase: InjectionPhase::Applied,
            applied_at: Some(t(-300)),
            mechanism: Some("nftables".into()),
            message: Some(
                "partition (Both) on traffic with 10.0.0.0/8 via nftables, ended by the kernel at 2030-01-01T00:00:00Z: table faultline_x in pod shop/a".into(),
            ),
            ..Default::default()
        });
        follow_injections(&mut status, &[Arc::new(applied)], t(0));
        assert_eq!(status.targets[0].state, TargetState::Injected);
        assert_eq!(status.targets[0].injected_at, Some(t(-300)));
        assert_eq!(
            status.targets[0].message.as_deref(),
            Some("nftables"),
            "the mechanism; the agent's description stays on the FaultInjection"
        );
        assert_eq!(status.targets[1].state, TargetState::Injecting);
        assert_eq!(status.targets[1].injected_at, None);
        assert_eq!(status.faults_injected, 1);
        // Aborted now: the applied fault keeps its time into the report, reverted.
        crate::controller::act::finish::mark_reverted(&mut status, t(500), None);
        assert_eq!(status.targets[0].injected_at, Some(t(-300)));
        assert_eq!(status.targets[0].reverted_at, Some(t(500)));
    }

    #[test]
    fn packets_that_bypassed_the_fault_reach_the_record_and_are_told_once() {
        use crate::api::{FaultInjectionStatus, TargetRecord};
        let mut status = ChaosExperimentStatus {
            targets: vec![TargetRecord {
                namespace: "shop".into(),
                name: "web-0".into(),
                state: TargetState::Injected,
                injection: Some("fi-web-0".into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let injection = |bypassed: i64, matched: i64| {
            let mut fi: FaultInjection = serde_json::from_value(serde_json::json!({
                "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
                "metadata": {"name": "fi-web-0", "namespace": "shop"},
                "spec": {"experiment": {"name": "e"}, "target": {"namespace": "shop", "name": "web-0", "uid": "u"},
                         "nodeName": "node-1", "fault": {"partition": "both", "peerCidrs": ["10.0.0.0/8"]},
                         "expiresAt": "2030-01-01T00:00:00Z"},
            }))
            .unwrap();
            fi.status = Some(FaultInjectionStatus {
                phase: InjectionPhase::Applied,
                bypassed_packets: Some(bypassed),
                matched_packets: Some(matched),
                ..Default::default()
            });
            vec![Arc::new(fi)]
        };
        assert!(follow_packets(&mut status, &injection(0, 500)).is_empty());
        assert_eq!(status.targets[0].matched_packets, Some(500));
        let facts = follow_packets(&mut status, &injection(250, 1000));
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].reason, "FaultPartlyApplied");
        assert_eq!(
            facts[0].message,
            "pod shop/web-0: the fault was only partly in place: 250 of 1000 packets (25.0%) bypassed it (the agent's queue was full)"
        );
        // More bypassed later: the record follows, no second Event.
        assert!(follow_packets(&mut status, &injection(400, 2000)).is_empty());
        assert_eq!(status.targets[0].bypassed_packets, Some(400));
    }

    #[test]
    fn new_results_are_written_at_most_once_a_second() {
        let mut status = ChaosExperimentStatus {
            hypothesis: Some(HypothesisState::Holding),
            ..Default::default()
        };
        let first = refresh_probes(&mut status, input(snapshot(1, 0), None, 10));
        assert!(first.refreshed);
        assert_eq!(status.checks.as_deref(), Some("1 passed, 0 failed"));
        assert_eq!(status.last_checked_at, Some(t(0)));
        // 400 ms later: held back until a second after the last write.
        let held = refresh_probes(&mut status, input(snapshot(2, 400), Some(10), 410));
        assert_eq!(
            held,
            ProbeUpdate {
                refreshed: false,
                withheld_until: Some(t(1010)),
                facts: vec![]
            }
        );
        assert_eq!(status.probes[0].passes, 1);
        // ... then written.
        let later = refresh_probes(&mut status, input(snapshot(2, 400), Some(10), 1010));
        assert!(later.refreshed);
        assert_eq!(status.probes[0].passes, 2);
        // Nothing new: nothing to do.
        let same = refresh_probes(&mut status, input(snapshot(2, 400), Some(1010), 1100));
        assert_eq!(same, ProbeUpdate::default());
    }

    #[test]
    fn a_change_of_hypothesis_or_a_decisive_step_is_written_at_once() {
        let mut status = ChaosExperimentStatus {
            hypothesis: Some(HypothesisState::Holding),
            ..Default::default()
        };
        refresh_probes(&mut status, input(snapshot(1, 0), None, 0));
        let view = HypothesisView::Violated {
            probe: "web".into(),
            message: "probe web: status 500".into(),
            since: t(100),
        };
        let mut violated = input(snapshot(1, 100), Some(0), 100);
        violated.state = Some(HypothesisState::Violated);
        violated.view = &view;
        let update = refresh_probes(&mut status, violated);
        assert!(update.refreshed);
        assert_eq!(status.hypothesis, Some(HypothesisState::Violated));
        assert_eq!(update.facts[0].reason, "HypothesisViolated");
        assert!(update.facts[0].message.starts_with("probe web: status 500"));
        let condition = &status.conditions[0];
        assert_eq!(
            (condition.type_.as_str(), condition.status),
            ("HypothesisHolding", ConditionStatus::False)
        );

        let mut decisive = input(snapshot(2, 150), Some(100), 150);
        decisive.decisive = true;
        decisive.state = Some(HypothesisState::Violated);
        decisive.view = &view;
        assert!(refresh_probes(&mut status, decisive).refreshed);
    }

    #[test]
    fn a_closed_gap_is_told_once() {
        let mut status = ChaosExperimentStatus::default();
        let mut record = snapshot(3, 20_000);
        record.gaps.push(ProbeGap {
            from: t(4_000),
            to: None,
            reason: "ControllerChanged".into(),
        });
        let open = refresh_probes(&mut status, input(record.clone(), None, 19_000));
        assert!(open.facts.is_empty(), "{:?}", open.facts);
        record.gaps[0].to = Some(t(20_000));
        let closed = refresh_probes(&mut status, input(record.clone(), Some(19_000), 20_100));
        assert_eq!(closed.facts.len(), 1);
        assert!(
            closed.facts[0]
                .message
                .starts_with("no probe checked anything for 16.0s"),
            "{}",
            closed.facts[0].message
        );
        record.probes[0].passes = 4;
        let again = refresh_probes(&mut status, input(record, Some(20_100), 21_200));
        assert!(again.facts.is_empty());
    }
}
