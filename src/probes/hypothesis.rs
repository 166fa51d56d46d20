//! The steady-state hypothesis from probe outcomes. Pure: no IO, no clock; the time of each
//! check is an input.
//!
//! Tolerance, per probe:
//! - A probe is *undecided* until it has either passed once or failed `failureThreshold`
//!   times in a row. (A first check that fails within the tolerance does not make the probe
//!   hold: injecting on the strength of a probe that has never passed would be wrong.)
//! - It is *violated* after `failureThreshold` consecutive failures, and holds again only after
//!   `successThreshold` consecutive successes. In between, it stays what it was.
//!
//! Per phase: the [`Hypothesis`] for a phase looks only at probes whose `phases` include it,
//! and a probe counts as undecided for a phase until it has been checked in that phase (so an
//! after-probe that held before injection says nothing until it is checked again after the
//! revert). Counts carry across phases: a probe violated while faults were in must pass
//! `successThreshold` times after the revert before the after-hypothesis holds.
//!
//! Resuming: a controller that takes over an experiment (a failover, a restart) picks up what
//! status recorded ([`Hypothesis::resume`]): the counts and samples stay, the time without
//! checks is recorded as a [`ProbeGap`], and the hypothesis is judged on fresh checks only: a
//! probe that held before the gap is undecided until checked again, and one that was violated
//! needs `successThreshold` fresh passes.

use chrono::{DateTime, Utc};

use super::CheckOutcome;
use crate::api::{Probe, ProbeGap, ProbePhase, ProbeSample, ProbeStatus};
use crate::lifecycle::HypothesisView;

/// How many checks each probe's status keeps for the report's timeline, at most.
pub const MAX_SAMPLES: usize = 120;
/// How many checks an experiment's status keeps over all its probes: the status is written
/// about once a second while it runs, so it must stay small. Each probe keeps an equal share,
/// between [`MIN_SAMPLES`] and [`MAX_SAMPLES`].
pub const SAMPLE_BUDGET: usize = 480;
/// The fewest checks a probe keeps, however many probes the experiment has.
pub const MIN_SAMPLES: usize = 30;
/// The most gaps status keeps (the oldest go first).
pub const MAX_GAPS: usize = 10;
/// [`ProbeGap::reason`] of a gap left by a controller that stopped (failover or restart).
pub const CONTROLLER_CHANGED: &str = "ControllerChanged";

/// How many samples each of `probes` probes keeps.
pub fn samples_per_probe(probes: usize) -> usize {
    (SAMPLE_BUDGET / probes.max(1)).clamp(MIN_SAMPLES, MAX_SAMPLES)
}

/// What the probes of one experiment have seen: every probe's status and the gaps in them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeRecord {
    pub probes: Vec<ProbeStatus>,
    pub gaps: Vec<ProbeGap>,
}

/// Where one probe stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeState {
    Undecided,
    Holding,
    Violated { since: DateTime<Utc> },
}

/// Folds one probe's check outcomes into its [`ProbeStatus`].
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeTracker {
    failure_threshold: i32,
    success_threshold: i32,
    phases: Vec<ProbePhase>,
    state: ProbeState,
    status: ProbeStatus,
    max_samples: usize,
}

impl ProbeTracker {
    /// A tracker that has seen nothing yet. Thresholds below 1 (which the schema rejects) are
    /// read as 1.
    pub fn new(probe: &Probe) -> Self {
        ProbeTracker {
            failure_threshold: probe.failure_threshold.max(1),
            success_threshold: probe.success_threshold.max(1),
            phases: probe.phases.clone(),
            state: ProbeState::Undecided,
            status: ProbeStatus {
                name: probe.name.clone(),
                ..ProbeStatus::default()
            },
            max_samples: MAX_SAMPLES,
        }
    }

    /// A tracker that goes on from `recorded` (what an earlier controller wrote to status):
    /// counts, samples and the first violation stay; the state is judged on fresh checks. A
    /// probe that held is undecided until its next check; one that was violated stays
    /// violated until `successThreshold` fresh passes.
    pub fn resume(probe: &Probe, recorded: &ProbeStatus) -> Self {
        let mut tracker = ProbeTracker::new(probe);
        let mut status = recorded.clone();
        status.name = probe.name.clone();
        let violated = match (status.holding, status.first_violation_at) {
            (false, Some(since)) => Some(since),
            _ => None,
        };
        tracker.state = match violated {
            Some(since) => ProbeState::Violated { since },
            None => {
                status.consecutive_failures = 0;
                ProbeState::Undecided
            }
        };
        status.holding = false;
        status.consecutive_successes = 0;
        tracker.status = status;
        tracker
    }

    pub fn name(&self) -> &str {
        &self.status.name
    }

    pub fn state(&self) -> ProbeState {
        self.state
    }

    pub fn status(&self) -> &ProbeStatus {
        &self.status
    }

    pub fn runs_in(&self, phase: ProbePhase) -> bool {
        self.phases.contains(&phase)
    }

    /// Takes the outcome of one check made at `at` during `phase`.
    pub fn record(&mut self, outcome: &CheckOutcome, at: DateTime<Utc>, phase: ProbePhase) {
        let s = &mut self.status;
        s.phase = Some(phase);
        s.last_checked_at = Some(at);
        s.last_value = outcome.value.clone();
        if outcome.ok {
            s.passes += 1;
            s.consecutive_successes = s.consecutive_successes.saturating_add(1);
            s.consecutive_failures = 0;
            s.last_error = None;
        } else {
            s.failures += 1;
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            s.consecutive_successes = 0;
            s.last_error = Some(
                outcome
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("probe {}: check failed", s.name)),
            );
        }
        self.state = match self.state {
            ProbeState::Violated { since } => {
                if s.consecutive_successes >= self.success_threshold {
                    ProbeState::Holding
                } else {
                    ProbeState::Violated { since }
                }
            }
            _ if s.consecutive_failures >= self.failure_threshold => {
                s.first_violation_at.get_or_insert(at);
                ProbeState::Violated { since: at }
            }
            ProbeState::Undecided if !outcome.ok => ProbeState::Undecided,
            _ => ProbeState::Holding,
        };
        s.holding = self.state == ProbeState::Holding;
        s.samples.push(ProbeSample {
            time: at,
            ok: outcome.ok,
            value: outcome.value.clone(),
        });
        self.trim_samples();
    }

    fn trim_samples(&mut self) {
        let samples = &mut self.status.samples;
        if samples.len() > self.max_samples {
            let excess = samples.len() - self.max_samples;
            samples.drain(..excess);
        }
    }

    /// Where the probe stands for `phase`: undecided until checked in that phase.
    pub fn state_in(&self, phase: ProbePhase) -> ProbeState {
        if self.status.phase == Some(phase) {
            self.state
        } else {
            ProbeState::Undecided
        }
    }

    /// The sentence for a violated probe: its last error, or, when it has started passing
    /// again but not often enough, how far it is from holding.
    fn violation_message(&self) -> String {
        let s = &self.status;
        match &s.last_error {
            Some(error) if self.failure_threshold > 1 => format!(
                "{error} ({} consecutive failures, failureThreshold {})",
                s.consecutive_failures, self.failure_threshold
            ),
            Some(error) => error.clone(),
            None => format!(
                "probe {}: still failing; {} of {} consecutive successes needed to hold again \
                 (last value {})",
                s.name,
                s.consecutive_successes,
                self.success_threshold,
                s.last_value.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// Every probe of an experiment, in spec order, and the gaps in their checks.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    trackers: Vec<ProbeTracker>,
    gaps: Vec<ProbeGap>,
}

impl Hypothesis {
    pub fn new(probes: &[Probe]) -> Self {
        Self::resume(probes, &ProbeRecord::default(), false)
    }

    /// Goes on from what status recorded (see [`ProbeTracker::resume`]). When checks were
    /// expected (`checking`) and some were recorded, the time from the last recorded check to
    /// the first fresh one is a gap (`ControllerChanged`); an open gap an earlier controller
    /// left stays open until then.
    pub fn resume(probes: &[Probe], recorded: &ProbeRecord, checking: bool) -> Self {
        let per_probe = samples_per_probe(probes.len());
        let trackers = probes
            .iter()
            .map(|probe| {
                let mut tracker = match recorded.probes.iter().find(|r| r.name == probe.name) {
                    Some(seen) => ProbeTracker::resume(probe, seen),
                    None => ProbeTracker::new(probe),
                };
                tracker.max_samples = per_probe;
                tracker.trim_samples();
                tracker
            })
            .collect();
        let mut hypothesis = Hypothesis {
            trackers,
            gaps: recorded.gaps.clone(),
        };
        let last_check = recorded
            .probes
            .iter()
            .filter_map(|p| p.last_checked_at)
            .max();
        let open = hypothesis.gaps.iter().any(|g| g.to.is_none());
        if let (true, false, Some(from)) = (checking, open, last_check) {
            hypothesis.gaps.push(ProbeGap {
                from,
                to: None,
                reason: CONTROLLER_CHANGED.into(),
            });
        }
        if hypothesis.gaps.len() > MAX_GAPS {
            let excess = hypothesis.gaps.len() - MAX_GAPS;
            hypothesis.gaps.drain(..excess);
        }
        hypothesis
    }

    /// Everything recorded so far, for status.
    pub fn snapshot(&self) -> ProbeRecord {
        ProbeRecord {
            probes: self.statuses(),
            gaps: self.gaps.clone(),
        }
    }

    /// Records an outcome for the probe called `probe`; returns false for an unknown name.
    pub fn record(
        &mut self,
        probe: &str,
        outcome: &CheckOutcome,
        at: DateTime<Utc>,
        phase: ProbePhase,
    ) -> bool {
        match self.trackers.iter_mut().find(|t| t.name() == probe) {
            Some(tracker) => {
                tracker.record(outcome, at, phase);
                // The first fresh check closes the gap.
                for gap in self.gaps.iter_mut().filter(|g| g.to.is_none()) {
                    gap.to = Some(at.max(gap.from));
                }
                true
            }
            None => false,
        }
    }

    pub fn tracker(&self, probe: &str) -> Option<&ProbeTracker> {
        self.trackers.iter().find(|t| t.name() == probe)
    }

    /// The hypothesis for `phase`: violated by the first (in spec order) violated probe of
    /// that phase, else undecided while any of them is, else holding. A phase without probes
    /// holds.
    pub fn view(&self, phase: ProbePhase) -> HypothesisView {
        let mut undecided = false;
        for tracker in self.trackers.iter().filter(|t| t.runs_in(phase)) {
            match tracker.state_in(phase) {
                ProbeState::Violated { since } => {
                    return HypothesisView::Violated {
                        probe: tracker.name().to_string(),
                        message: tracker.violation_message(),
                        since,
                    };
                }
                ProbeState::Undecided => undecided = true,
                ProbeState::Holding => {}
            }
        }
        if undecided {
            HypothesisView::Undecided
        } else {
            HypothesisView::Holding
        }
    }

    /// Every probe's status, for `status.probes`.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        self.trackers.iter().map(|t| t.status().clone()).collect()
    }
}

#[cfg(test)]
#[path = "hypothesis_tests.rs"]
mod tests;
