//! What a report says about one experiment, computed once from its spec and status so that every
//! format tells the same story. The JSON report serializes it as `summary` (stable names).

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde::Serialize;

use super::text;
use crate::api::{
    ChaosExperiment, ChaosExperimentStatus, ConditionStatus, Phase, Probe, ProbeCheck, ProbePhase,
    ProbeStatus, TargetState, Verdict,
};

/// One experiment's outcome and numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentSummary {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    pub verdict: Option<Verdict>,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// The `Complete` condition is True (or the phase is terminal).
    pub complete: bool,
    pub dry_run: bool,
    /// `spec.duration`.
    pub duration: String,
    pub started_at: Option<DateTime<Utc>>,
    pub injected_at: Option<DateTime<Utc>>,
    pub reverted_at: Option<DateTime<Utc>>,
    /// When the last fault left the kernel (see [`faults_out_at`]): the fault window's end.
    pub faults_out_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to finish, once finished.
    pub elapsed: Option<String>,
    /// How long faults were in: injection to revert.
    pub fault_window: Option<String>,
    pub abort_started_at: Option<DateTime<Utc>>,
    /// Why it was aborted: the reason given to `faultline abort`, the probe that failed, ...
    pub abort_reason: Option<String>,
    pub abort_latency: Option<String>,
    pub recovery_time: Option<String>,
    pub target_count: i32,
    /// Targets whose fault went in (Injected or since Reverted).
    pub targets_injected: usize,
    /// Targets left alone on purpose (e.g. a PodDisruptionBudget refused the eviction).
    pub targets_skipped: usize,
    pub targets_failed: usize,
    /// Targets that left while their fault ran: pod gone, or consent withdrawn.
    pub targets_left: usize,
    /// Faults that went in over the whole experiment (each round of a repeating kill counts).
    pub faults_injected: i32,
    pub probes: Vec<ProbeSummary>,
    /// Times without probe checks although checks were due (a controller failover), each as
    /// `from`, `to` (unset while still open) and the reason.
    pub probe_gaps: Vec<crate::api::ProbeGap>,
    /// The sentence that explains a failed or aborted experiment: the probe, the value that
    /// broke the hypothesis and the controller's message. None when it passed.
    pub failure: Option<String>,
    /// One sentence per target whose fault packets escaped (NFQUEUE's queue was full), e.g.
    /// `pod shop/web-0: the fault was only partly in place: 250 of 1000 packets (25.0%)
    /// bypassed it ...`: the hypothesis was tested against a weaker fault than asked.
    pub partly_applied: Vec<String>,
}

/// One probe: its spec and what it saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSummary {
    pub name: String,
    /// `http`, `kubernetes`, `prometheus`, or `unknown` for a probe only status knows.
    pub kind: String,
    /// What it checks: the URL, the query, the object.
    pub check: String,
    pub phases: Vec<ProbePhase>,
    pub passes: i64,
    pub failures: i64,
    pub holding: bool,
    pub last_value: Option<String>,
    pub last_error: Option<String>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub first_violation_at: Option<DateTime<Utc>>,
    /// The value of the check that broke the hypothesis (at `firstViolationAt`).
    pub violation_value: Option<String>,
    /// The probe exceeded its failure threshold at some point.
    pub violated: bool,
}

/// Summarizes `experiment`. An experiment without status summarizes as Pending with no data.
pub fn summarize(experiment: &ChaosExperiment) -> ExperimentSummary {
    let empty = ChaosExperimentStatus::default();
    let status = experiment.status.as_ref().unwrap_or(&empty);
    let spec_probes: &[Probe] = experiment.spec.probes();
    let mut probes: Vec<ProbeSummary> = spec_probes
        .iter()
        .map(|p| probe_summary(Some(p), status.probes.iter().find(|s| s.name == p.name)))
        .collect();
    for seen in &status.probes {
        if !spec_probes.iter().any(|p| p.name == seen.name) {
            probes.push(probe_summary(None, Some(seen)));
        }
    }
    let complete = status.phase.is_terminal()
        || status
            .conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == ConditionStatus::True);
    let count = |states: &[TargetState]| {
        status
            .targets
            .iter()
            .filter(|t| states.contains(&t.state))
            .count()
    };
    let failure = failure_sentence(status, &probes);
    ExperimentSummary {
        name: experiment.name_any(),
        namespace: experiment.namespace().unwrap_or_default(),
        phase: status.phase,
        verdict: status.verdict,
        reason: status.reason.clone(),
        message: status.message.clone(),
        complete,
        dry_run: experiment.spec.dry_run,
        duration: experiment.spec.duration.to_string(),
        started_at: status.started_at,
        injected_at: status.injected_at,
        reverted_at: status.reverted_at,
        faults_out_at: faults_out_at(status),
        finished_at: status.finished_at,
        elapsed: status
            .started_at
            .zip(status.finished_at)
            .map(|(a, b)| text::span(a, b)),
        fault_window: status
            .injected_at
            .zip(faults_out_at(status))
            .map(|(a, b)| text::span(a, b)),
        abort_started_at: status.abort_started_at,
        abort_reason: status.abort_reason.clone(),
        abort_latency: status.abort_latency.as_ref().map(ToString::to_string),
        recovery_time: status.recovery_time.as_ref().map(ToString::to_string),
        target_count: status.target_count,
        targets_injected: count(&[
            TargetState::Injected,
            TargetState::Injecting,
            TargetState::Reverted,
        ]),
        targets_skipped: count(&[TargetState::Skipped]),
        targets_failed: count(&[TargetState::Failed]),
        targets_left: count(&[TargetState::Gone, TargetState::Withdrawn]),
        faults_injected: status.faults_injected,
        probes,
        probe_gaps: status.probe_gaps.clone(),
        failure,
        partly_applied: status
            .targets
            .iter()
            .filter_map(|t| {
                t.partly_applied()
                    .map(|p| format!("pod {}/{}: {p}", t.namespace, t.name))
            })
            .collect(),
    }
}

fn probe_summary(spec: Option<&Probe>, seen: Option<&ProbeStatus>) -> ProbeSummary {
    let (kind, check) = match spec.and_then(Probe::check) {
        // The spec's URL may carry a password or token; reports are passed around more widely
        // than the experiment is readable.
        Some(ProbeCheck::Http(h)) => (
            "http",
            format!("{} {}", h.method, crate::probes::redact::url_text(&h.url)),
        ),
        Some(ProbeCheck::Prometheus(p)) => (
            "prometheus",
            format!("{} {} {}", p.query, p.operator.symbol(), p.value),
        ),
        Some(ProbeCheck::Kubernetes(k)) => {
            let object = k
                .name
                .clone()
                .or_else(|| k.label_selector.as_ref().map(|s| format!("-l {s}")))
                .unwrap_or_default();
            ("kubernetes", format!("{} {object}", k.kind))
        }
        None => ("unknown", String::new()),
    };
    let empty = ProbeStatus::default();
    let seen_status = seen.unwrap_or(&empty);
    ProbeSummary {
        name: spec.map_or_else(|| seen_status.name.clone(), |p| p.name.clone()),
        kind: kind.into(),
        check,
        phases: spec.map(|p| p.phases.clone()).unwrap_or_default(),
        passes: seen_status.passes,
        failures: seen_status.failures,
        holding: seen_status.holding,
        last_value: seen_status.last_value.clone(),
        last_error: seen_status.last_error.clone(),
        last_checked_at: seen_status.last_checked_at,
        first_violation_at: seen_status.first_violation_at,
        violation_value: violation_value(seen_status),
        violated: seen_status.first_violation_at.is_some(),
    }
}

/// The value of the check at the first violation; samples are bounded, so when that sample is
/// gone, the first failing sample kept, then the last value.
fn violation_value(probe: &ProbeStatus) -> Option<String> {
    let at = probe.first_violation_at?;
    let sample = probe
        .samples
        .iter()
        .find(|s| s.time == at && !s.ok)
        .or_else(|| probe.samples.iter().find(|s| !s.ok));
    match sample {
        Some(s) => s.value.clone(),
        None => probe.last_value.clone(),
    }
}

fn failure_sentence(status: &ChaosExperimentStatus, probes: &[ProbeSummary]) -> Option<String> {
    let verdict = status.verdict?;
    if matches!(verdict, Verdict::Passed | Verdict::DryRun) {
        return None;
    }
    let message = status.message.clone().unwrap_or_default();
    // The probe that broke the hypothesis: the earliest violation.
    let culprit = probes
        .iter()
        .filter(|p| p.violated)
        .min_by_key(|p| p.first_violation_at);
    Some(match culprit {
        Some(p) => format!(
            "probe {} failed with value {}: {}",
            p.name,
            text::or_dash(p.violation_value.as_deref().or(p.last_value.as_deref())),
            // The controller's message often starts by naming the probe too.
            message
                .strip_prefix(&format!("probe {}: ", p.name))
                .unwrap_or(&message)
        ),
        None => format!(
            "{verdict:?} ({}): {message}",
            status.reason.as_deref().unwrap_or("no reason")
        ),
    })
}

/// When the last fault left the kernel: the latest revert time of the targets whose faults
/// were in (their nodes' receipts say it, which can be well before the controller confirmed
/// the revert when the agents ended the faults at their deadline), else the confirmation.
fn faults_out_at(status: &ChaosExperimentStatus) -> Option<DateTime<Utc>> {
    let confirmed = status.reverted_at?;
    let targets = status
        .targets
        .iter()
        .filter(|r| r.state == TargetState::Reverted)
        .map(|r| r.reverted_at)
        .collect::<Option<Vec<_>>>()
        .and_then(|times| times.into_iter().max());
    Some(targets.map_or(confirmed, |last| last.min(confirmed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetRecord;
    use chrono::TimeDelta;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::seconds(seconds)
    }

    fn reverted(at: Option<DateTime<Utc>>) -> TargetRecord {
        TargetRecord {
            state: TargetState::Reverted,
            reverted_at: at,
            ..Default::default()
        }
    }

    #[test]
    fn the_fault_window_ends_when_the_last_fault_left_not_at_the_confirmation() {
        let status = |targets| ChaosExperimentStatus {
            reverted_at: Some(t(0)),
            targets,
            ..Default::default()
        };
        let ended_at_deadline = status(vec![reverted(Some(t(-9))), reverted(Some(t(-8)))]);
        assert_eq!(faults_out_at(&ended_at_deadline), Some(t(-8)));
        let one_unknown = status(vec![reverted(Some(t(-9))), reverted(None)]);
        assert_eq!(faults_out_at(&one_unknown), Some(t(0)));
        let never_after = status(vec![reverted(Some(t(3)))]);
        assert_eq!(faults_out_at(&never_after), Some(t(0)));
        let none_injected = status(vec![TargetRecord {
            state: TargetState::Skipped,
            ..Default::default()
        }]);
        assert_eq!(faults_out_at(&none_injected), Some(t(0)));
        assert_eq!(
            faults_out_at(&ChaosExperimentStatus::default()),
            None,
            "not reverted yet"
        );
    }
}
