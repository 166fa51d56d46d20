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

use chrono::{DateTime, Utc};

use super::CheckOutcome;
use crate::api::{Probe, ProbePhase, ProbeSample, ProbeStatus};
use crate::lifecycle::HypothesisView;

/// How many checks each probe's status keeps for the report's timeline.
pub const MAX_SAMPLES: usize = 120;

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
        }
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
        if s.samples.len() > MAX_SAMPLES {
            let excess = s.samples.len() - MAX_SAMPLES;
            s.samples.drain(..excess);
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

/// Every probe of an experiment, in spec order.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    trackers: Vec<ProbeTracker>,
}

impl Hypothesis {
    pub fn new(probes: &[Probe]) -> Self {
        Hypothesis {
            trackers: probes.iter().map(ProbeTracker::new).collect(),
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
