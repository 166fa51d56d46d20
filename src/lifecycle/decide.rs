//! `decide`: one step of the experiment state machine.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{AbortBegun, Phase, Verdict};

/// What the probes say for the phase being checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HypothesisView {
    /// Every probe of this phase holds (or the experiment has no probes for it).
    Holding,
    /// Not enough checks yet to say.
    Undecided,
    /// A probe exceeded its failure threshold; the message names the probe and the value.
    Violated {
        probe: String,
        message: String,
        since: DateTime<Utc>,
    },
}

/// Which phases of an experiment some probe checks (`phases` of each probe; an experiment may
/// have no `steadyState` at all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbedPhases {
    pub before: bool,
    pub during: bool,
    pub after: bool,
}

impl ProbedPhases {
    /// Every phase checked, as an experiment with probes in all three has.
    pub const ALL: ProbedPhases = ProbedPhases {
        before: true,
        during: true,
        after: true,
    };

    /// What a Passed verdict can say: only the phases some probe checked held.
    fn passed_message(self) -> String {
        let checked: Vec<&str> = [
            (self.before, "before"),
            (self.during, "during"),
            (self.after, "after"),
        ]
        .into_iter()
        .filter_map(|(checked, phase)| checked.then_some(phase))
        .collect();
        match checked.as_slice() {
            [] => "every fault went in and was reverted; no probe checked a hypothesis (the experiment has no steadyState probes)".into(),
            [one] => format!("the hypothesis held {one} the faults (no probe runs in the other phases)"),
            [a, b] => format!("the hypothesis held {a} and {b} the faults (no probe runs in the other phase)"),
            _ => "the hypothesis held before, during and after the faults".into(),
        }
    }
}

/// Whether every fault has reached the state asked of it (applied, or reverted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressView {
    Done,
    InProgress,
    /// It will not get there; the message names the pod and the agent's words.
    Failed {
        message: String,
    },
}

/// Why an experiment is being stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortCause {
    HypothesisViolated {
        probe: String,
        message: String,
    },
    /// Someone asked (`faultline abort`); the message carries the reason they gave.
    Requested {
        message: String,
    },
    Deleted,
    Paused,
    InjectFailed {
        message: String,
    },
    /// The API server refused the controller a probe's read: a configuration error.
    ProbeForbidden {
        message: String,
    },
    /// Every target left the experiment while it ran (deleted, or consent withdrawn); the
    /// message names each pod and why. `any_injected`: some fault was in before they left.
    TargetsLeft {
        message: String,
        any_injected: bool,
    },
}

impl AbortCause {
    /// This abort as announced to the agents and recorded, begun at `since`.
    pub fn begun(&self, since: DateTime<Utc>) -> AbortBegun {
        AbortBegun {
            reason: self.reason().into(),
            message: self.message(),
            since,
        }
    }

    /// An abort request with the reason given (the annotation's value; may be empty).
    pub fn requested(reason: &str) -> AbortCause {
        let reason = reason.trim();
        AbortCause::Requested {
            message: if reason.is_empty() {
                "aborted on request (faultline.dev/abort annotation, no reason given)".into()
            } else {
                format!("aborted on request: {reason}")
            },
        }
    }

    /// The PascalCase reason written to status and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            AbortCause::HypothesisViolated { .. } => "ProbeFailed",
            AbortCause::Requested { .. } => "AbortRequested",
            AbortCause::Deleted => "ExperimentDeleted",
            AbortCause::Paused => "ChaosPaused",
            AbortCause::InjectFailed { .. } => "InjectFailed",
            AbortCause::ProbeForbidden { .. } => "ProbeForbidden",
            AbortCause::TargetsLeft { .. } => "TargetsLeft",
        }
    }

    pub fn message(&self) -> String {
        match self {
            AbortCause::HypothesisViolated { message, .. } => message.clone(),
            AbortCause::Requested { message } => message.clone(),
            AbortCause::Deleted => "the experiment was deleted while faults were in".into(),
            AbortCause::Paused => "chaos is paused cluster-wide (faultline pause)".into(),
            AbortCause::InjectFailed { message } => message.clone(),
            AbortCause::ProbeForbidden { message } => message.clone(),
            AbortCause::TargetsLeft { message, .. } => message.clone(),
        }
    }

    fn verdict(&self) -> Verdict {
        match self {
            AbortCause::InjectFailed { .. } | AbortCause::ProbeForbidden { .. } => Verdict::Error,
            // Nothing went in before the targets left: nothing was tested.
            AbortCause::TargetsLeft {
                any_injected: false,
                ..
            } => Verdict::Inconclusive,
            _ => Verdict::Aborted,
        }
    }
}

/// Everything `decide` looks at. The controller fills it from the object, the cluster and the
/// probe runner; tests fill it by hand.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: DateTime<Utc>,
    pub phase: Phase,
    /// When faults were first asked for (set on entering Injecting).
    pub injected_at: Option<DateTime<Utc>>,
    /// When every fault was confirmed gone.
    pub reverted_at: Option<DateTime<Utc>>,
    /// `Err` names the invalid field: the spec bypassed the schema.
    pub spec_valid: Result<(), String>,
    /// Parsed `spec.duration`.
    pub duration: Duration,
    /// Parsed `spec.steadyState.recoveryTimeout`.
    pub recovery_timeout: Duration,
    pub dry_run: bool,
    pub abort_on_hypothesis_failure: bool,
    /// Targets are recorded in status.
    pub targets_recorded: bool,
    /// The recorded selection is empty (and `allowEmptyTargets` decides what that means).
    pub no_targets: bool,
    pub allow_empty_targets: bool,
    /// A preflight problem that forbids injecting (over the cap, a fault the node cannot do).
    pub preflight_error: Option<String>,
    /// The controller may not make a read a `kubernetes` probe needs (an access review before
    /// injecting, or a 403 while the probes run): a configuration error, never a failed
    /// hypothesis. The message names the permission and `controller.probeReadRules`.
    pub probes_forbidden: Option<String>,
    /// `Some(why)` once every target has left the experiment mid-run (its pod deleted, its
    /// namespace's opt-in removed, the pod labelled protected), naming each pod and why.
    pub targets_left: Option<String>,
    /// Some fault went in (so a stop is an abort of a real test, not an empty one).
    pub any_injected: bool,
    /// `Some(which)` when some network fault's FaultInjection is gone although no agent ever
    /// reported it applied (so no agent held it to confirm a revert): the pods and nodes to
    /// check. `None` when every removed fault was held, and let go, by an agent.
    pub unconfirmed_reverts: Option<String>,
    pub deleting: bool,
    /// Someone asked for an abort, with this reason (possibly empty).
    pub abort_requested: Option<String>,
    /// Chaos is paused cluster-wide: nothing new starts, running experiments abort.
    pub paused: bool,
    /// The hypothesis for the phase being checked (before, during or after).
    pub hypothesis: HypothesisView,
    /// Which phases some probe checks: what "the hypothesis holds" can claim.
    pub probed: ProbedPhases,
    /// Progress of applying faults (meaningful in Injecting).
    pub injection: ProgressView,
    /// Progress of reverting faults (meaningful in Recovering and Aborting, and while an abort
    /// is under way).
    pub revert: ProgressView,
    /// Why the experiment is Aborting (recorded in status when the abort began).
    pub abort_cause: Option<AbortCause>,
    /// An abort announced to the agents (the reverting label) that status does not show yet:
    /// it waits for their receipts (see [`abort_under_way`]), or the controller stopped
    /// between the two writes. Its cause, and when it began.
    pub abort_begun: Option<(AbortCause, DateTime<Utc>)>,
    /// When a repeating pod kill (`podKill.interval`) is due next, if the experiment has one.
    pub next_kill_at: Option<DateTime<Utc>>,
    /// Pod kills recorded as under way that no status write marked done: the controller that
    /// began them stopped (a crash, a lost lease) or a kill failed, and they were, or were
    /// not, carried out.
    pub kills_interrupted: bool,
    /// `Some(why)` while no fault has gone in (every target so far skipped, each with its
    /// reason); `None` once one has, or may have.
    pub nothing_injected: Option<String>,
}

/// What to do next. `Transition` writes the new phase (and, for terminal phases, the verdict);
/// the acting step carries out the side effect that the new phase implies (inject, revert).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Select the targets and record them (with the seed) before anything else.
    RecordTargets,
    /// Move to another phase.
    Transition {
        to: Phase,
        reason: &'static str,
        message: String,
    },
    /// Stop early: revert everything, then end as Aborted (or Error).
    Abort(AbortCause),
    /// End, with this verdict. Only reached when nothing is (or was) injected, or after the
    /// revert is confirmed.
    Finish {
        verdict: Verdict,
        reason: &'static str,
        message: String,
    },
    /// A repeating pod kill is due: select targets afresh and kill them.
    KillAgain,
    /// Pod kills were left under way: kill the recorded pods that are still there, terminating
    /// or not (one that is gone or replaced was killed already), and record each kill, before
    /// the injection counts as done.
    FinishKills,
    /// Chaos is paused and nothing is injected yet: wait in Pending (targets are chosen
    /// afresh once chaos resumes).
    Hold,
    /// Nothing to do until this time (or until something changes).
    WaitUntil(DateTime<Utc>),
    /// Nothing to do until the world changes (probe result, injection status).
    Wait,
}

fn finish(verdict: Verdict, reason: &'static str, message: impl Into<String>) -> Decision {
    Decision::Finish {
        verdict,
        reason,
        message: message.into(),
    }
}

fn to(phase: Phase, reason: &'static str, message: impl Into<String>) -> Decision {
    Decision::Transition {
        to: phase,
        reason,
        message: message.into(),
    }
}

/// `start + duration`; a time past chrono's range is "never" (it cannot panic).
fn after(start: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| start.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Decides the next step. Pure: the same `Observed` always gives the same `Decision`.
pub fn decide(o: &Observed) -> Decision {
    if o.phase.is_terminal() {
        return Decision::Wait;
    }
    let faults_may_be_in = matches!(o.phase, Phase::Injecting | Phase::Running);

    // The agents are reverting already: the abort goes on, whatever the world says now.
    if faults_may_be_in && let Some((cause, since)) = &o.abort_begun {
        return abort_under_way(o, cause, *since);
    }

    // Stop requests come first, from every phase. Before injection there is nothing to revert.
    let stop = if o.deleting {
        Some(AbortCause::Deleted)
    } else if let Some(reason) = &o.abort_requested {
        Some(AbortCause::requested(reason))
    } else if o.paused {
        Some(AbortCause::Paused)
    } else {
        None
    };
    if let Some(cause) = stop {
        // A pause holds what has not started yet, as it holds schedules and game days; what
        // has faults in (or may have) stops.
        let not_started =
            matches!(o.phase, Phase::Pending | Phase::Verifying) && o.injected_at.is_none();
        if cause == AbortCause::Paused && not_started {
            return Decision::Hold;
        }
        return match o.phase {
            _ if faults_may_be_in => Decision::Abort(cause),
            Phase::Aborting | Phase::Recovering => revert_progress(o),
            _ if o.injected_at.is_some() => finish(
                Verdict::Aborted,
                cause.reason(),
                format!("{}; every fault had already been reverted", cause.message()),
            ),
            _ => finish(
                Verdict::Aborted,
                cause.reason(),
                format!("{} before any fault was injected", cause.message()),
            ),
        };
    }

    if let Some(why) = &o.probes_forbidden {
        match o.phase {
            _ if faults_may_be_in => {
                return Decision::Abort(AbortCause::ProbeForbidden {
                    message: why.clone(),
                });
            }
            Phase::Pending | Phase::Verifying => {
                let when = if o.injected_at.is_none() {
                    "nothing was injected"
                } else {
                    "every fault had already been reverted"
                };
                return finish(Verdict::Error, "ProbeForbidden", format!("{why}; {when}"));
            }
            _ => {}
        }
    }
    if let Some(why) = &o.targets_left
        && faults_may_be_in
    {
        return Decision::Abort(AbortCause::TargetsLeft {
            message: why.clone(),
            any_injected: o.any_injected,
        });
    }

    match o.phase {
        Phase::Pending => {
            if let Err(field) = &o.spec_valid {
                return finish(
                    Verdict::Error,
                    "InvalidSpec",
                    format!("the experiment is invalid and nothing was injected: {field}"),
                );
            }
            if !o.targets_recorded {
                return Decision::RecordTargets;
            }
            if let Some(problem) = &o.preflight_error {
                return finish(
                    Verdict::Failed,
                    "PreflightFailed",
                    format!("preflight failed, nothing was injected: {problem}"),
                );
            }
            if o.no_targets && !o.allow_empty_targets {
                return finish(
                    Verdict::Failed,
                    "NoTargets",
                    "no pod matched spec.target; nothing was injected (set allowEmptyTargets to accept this)",
                );
            }
            to(
                Phase::Verifying,
                "VerifyingSteadyState",
                "checking the steady-state hypothesis before injecting",
            )
        }
        Phase::Verifying if o.injected_at.is_none() => match &o.hypothesis {
            HypothesisView::Undecided => Decision::Wait,
            HypothesisView::Violated { message, .. } => finish(
                Verdict::Failed,
                "SteadyStateNotMet",
                format!(
                    "the hypothesis did not hold before injection, so nothing was injected: {message}"
                ),
            ),
            HypothesisView::Holding if o.dry_run => finish(
                Verdict::DryRun,
                "DryRun",
                "dry run: targets resolved, preflight and the before-hypothesis passed; nothing was injected",
            ),
            // The user asked for this outcome with allowEmptyTargets.
            HypothesisView::Holding if o.no_targets => finish(
                Verdict::Passed,
                "NoTargets",
                "no pod matched and allowEmptyTargets is set; nothing was injected",
            ),
            HypothesisView::Holding if !o.probed.before => to(
                Phase::Injecting,
                "Injecting",
                "no probe runs before the faults; injecting faults",
            ),
            HypothesisView::Holding => to(
                Phase::Injecting,
                "Injecting",
                "the hypothesis holds; injecting faults",
            ),
        },
        Phase::Injecting => {
            if let Some(cause) = violation(o) {
                return Decision::Abort(cause);
            }
            if o.kills_interrupted {
                return Decision::FinishKills;
            }
            match &o.injection {
                // Nothing went in and no later round can change that: there is nothing to
                // test the hypothesis against (and nothing to revert).
                ProgressView::Done if o.next_kill_at.is_none() && o.nothing_injected.is_some() => {
                    inconclusive(o)
                }
                ProgressView::Done => to(Phase::Running, "FaultsInjected", "every fault is in"),
                ProgressView::InProgress => Decision::Wait,
                ProgressView::Failed { message } => Decision::Abort(AbortCause::InjectFailed {
                    message: message.clone(),
                }),
            }
        }
        Phase::Running => {
            if let Some(cause) = violation(o) {
                return Decision::Abort(cause);
            }
            let end = after(o.injected_at.unwrap_or(o.now), o.duration);
            if o.now >= end {
                return to(
                    Phase::Recovering,
                    "DurationElapsed",
                    "the duration is over; reverting every fault",
                );
            }
            if o.kills_interrupted {
                return Decision::FinishKills;
            }
            match o.next_kill_at.filter(|next| *next < end) {
                Some(next) if o.now >= next => Decision::KillAgain,
                Some(next) => Decision::WaitUntil(next),
                None => Decision::WaitUntil(end),
            }
        }
        Phase::Recovering | Phase::Aborting => revert_progress(o),
        Phase::Verifying => {
            // After the revert: the hypothesis must hold again within the recovery timeout.
            let reverted_at = o.reverted_at.unwrap_or(o.now);
            let deadline = after(reverted_at, o.recovery_timeout);
            match &o.hypothesis {
                HypothesisView::Holding if o.nothing_injected.is_some() => inconclusive(o),
                HypothesisView::Holding => {
                    finish(Verdict::Passed, "Passed", o.probed.passed_message())
                }
                _ if o.now >= deadline => {
                    let detail = match &o.hypothesis {
                        HypothesisView::Violated { message, .. } => message.clone(),
                        _ => "the probes did not report in time".into(),
                    };
                    finish(
                        Verdict::Failed,
                        "NotRecovered",
                        format!("the system did not recover within the recovery timeout: {detail}"),
                    )
                }
                _ => Decision::WaitUntil(deadline),
            }
        }
        Phase::Succeeded | Phase::Failed | Phase::Aborted => Decision::Wait,
    }
}

/// The ending of an experiment in which no fault went in.
fn inconclusive(o: &Observed) -> Decision {
    finish(
        Verdict::Inconclusive,
        "NothingInjected",
        format!(
            "no fault was injected, so the hypothesis was not tested: {}",
            o.nothing_injected
                .as_deref()
                .unwrap_or("every target was skipped")
        ),
    )
}

fn violation(o: &Observed) -> Option<AbortCause> {
    match &o.hypothesis {
        HypothesisView::Violated { probe, message, .. } if o.abort_on_hypothesis_failure => {
            Some(AbortCause::HypothesisViolated {
                probe: probe.clone(),
                message: message.clone(),
            })
        }
        _ => None,
    }
}

/// How `cause` is announced to the agents and recorded: its reason and message, and when it
/// began: when the agents were first told (an abort carried over from the label), when the
/// probes first saw the violation it is for, or now.
pub fn abort_begun(o: &Observed, cause: &AbortCause) -> AbortBegun {
    let since = match (&o.abort_begun, &o.hypothesis) {
        (Some((_, since)), _) => *since,
        (None, HypothesisView::Violated { since, .. })
            if matches!(cause, AbortCause::HypothesisViolated { .. }) =>
        {
            *since
        }
        _ => o.now,
    };
    cause.begun(since)
}

/// Recovering and Aborting wait for the revert to be confirmed, and only then move on.
fn revert_progress(o: &Observed) -> Decision {
    match (&o.revert, o.phase) {
        (ProgressView::InProgress, _) => Decision::Wait,
        (ProgressView::Failed { message }, _) => finish(
            Verdict::Error,
            "RevertFailed",
            format!("reverting failed; these faults may still be in place: {message}"),
        ),
        (ProgressView::Done, Phase::Recovering) => to(
            Phase::Verifying,
            "FaultsReverted",
            match &o.unconfirmed_reverts {
                None => "every fault is confirmed reverted; checking that the system recovers"
                    .to_string(),
                Some(which) => format!(
                    "{}; checking that the system recovers",
                    unconfirmed_sentence(which)
                ),
            },
        ),
        (ProgressView::Done, _) => {
            let cause = o
                .abort_cause
                .clone()
                .unwrap_or_else(|| AbortCause::requested(""));
            aborted(o, &cause)
        }
    }
}

/// An abort the agents were told of (the reverting label) that status does not show yet. The
/// Aborting status is written only if the agents' receipts take longer than
/// [`ABORTING_SHOWN_AFTER`]: written at once, that write of the experiment (0.2-0.4 s of API
/// server at 500 targets) met the receipts' writes of the same object and held them as long;
/// the verdict's write carries it instead. The label, its annotation and an Event say at once
/// that the experiment is aborting, and a controller that restarts meanwhile carries on from
/// them. A revert that fails or runs long shows Aborting as before.
fn abort_under_way(o: &Observed, cause: &AbortCause, since: DateTime<Utc>) -> Decision {
    let shown_at = aborting_shown_at(since);
    match &o.revert {
        ProgressView::Done => aborted(o, cause),
        ProgressView::InProgress if o.now < shown_at => Decision::WaitUntil(shown_at),
        _ => Decision::Abort(cause.clone()),
    }
}

/// How long an abort under way may go without its Aborting status (see [`abort_under_way`]).
pub const ABORTING_SHOWN_AFTER: Duration = Duration::from_secs(2);

/// When an abort that began at `since` is due to show in status.
pub fn aborting_shown_at(since: DateTime<Utc>) -> DateTime<Utc> {
    after(since, ABORTING_SHOWN_AFTER)
}

/// The verdict of an abort whose revert is done.
fn aborted(o: &Observed, cause: &AbortCause) -> Decision {
    let reverted = match &o.unconfirmed_reverts {
        None => "every fault is confirmed reverted".to_string(),
        Some(which) => unconfirmed_sentence(which),
    };
    finish(
        cause.verdict(),
        cause.reason(),
        format!("{}; {reverted}", cause.message()),
    )
}

/// What is known, and what is not, when a FaultInjection went away without an agent's word.
pub fn unconfirmed_sentence(which: &str) -> String {
    format!(
        "the FaultInjections are deleted, but no agent confirmed a revert for {which}: no agent ever reported that fault applied, so whether it was ever in place (and is gone) is unknown; check the faultline agent on that node (its pod's readiness and log, and the node's faultline.dev capabilities annotation)"
    )
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
