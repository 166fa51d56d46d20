//! Table tests for every edge of the lifecycle.

use chrono::TimeZone;

use super::*;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

/// A healthy experiment at time 0 in `phase`: valid, targets recorded, hypothesis holding.
fn observed(phase: Phase) -> Observed {
    Observed {
        now: t(0),
        phase,
        injected_at: None,
        reverted_at: None,
        spec_valid: Ok(()),
        duration: Duration::from_secs(60),
        recovery_timeout: Duration::from_secs(30),
        dry_run: false,
        abort_on_hypothesis_failure: true,
        targets_recorded: true,
        no_targets: false,
        allow_empty_targets: false,
        preflight_error: None,
        probes_forbidden: None,
        targets_left: None,
        any_injected: false,
        unconfirmed_reverts: None,
        deleting: false,
        abort_requested: None,
        paused: false,
        hypothesis: HypothesisView::Holding,
        probed: ProbedPhases::ALL,
        injection: ProgressView::InProgress,
        revert: ProgressView::InProgress,
        abort_cause: None,
        abort_begun: None,
        next_kill_at: None,
        kills_interrupted: false,
        nothing_injected: None,
    }
}

fn violated() -> HypothesisView {
    HypothesisView::Violated {
        probe: "http".into(),
        message: "probe http: status 503".into(),
        since: t(0),
    }
}

fn phase_of(d: &Decision) -> Option<Phase> {
    match d {
        Decision::Transition { to, .. } => Some(*to),
        _ => None,
    }
}

fn verdict_of(d: &Decision) -> Option<(Verdict, &'static str)> {
    match d {
        Decision::Finish {
            verdict, reason, ..
        } => Some((*verdict, *reason)),
        _ => None,
    }
}

#[test]
fn pending_records_targets_first_then_verifies() {
    let mut o = observed(Phase::Pending);
    o.targets_recorded = false;
    assert_eq!(decide(&o), Decision::RecordTargets);
    o.targets_recorded = true;
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Verifying));
}

#[test]
fn pending_fails_without_injecting_on_invalid_spec_preflight_or_no_targets() {
    let mut o = observed(Phase::Pending);
    o.spec_valid = Err("spec.duration: \"fast\" is not a duration".into());
    let d = decide(&o);
    assert_eq!(verdict_of(&d), Some((Verdict::Error, "InvalidSpec")));
    assert!(matches!(d, Decision::Finish { message, .. } if message.contains("spec.duration")));

    let mut o = observed(Phase::Pending);
    o.preflight_error = Some("node-1 cannot do networkLatency (no netem, no NFQUEUE)".into());
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Failed, "PreflightFailed"))
    );

    let mut o = observed(Phase::Pending);
    o.no_targets = true;
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Failed, "NoTargets"))
    );
    o.allow_empty_targets = true;
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Verifying));
}

#[test]
fn before_hypothesis_decides_whether_anything_is_injected() {
    let mut o = observed(Phase::Verifying);
    o.hypothesis = HypothesisView::Undecided;
    assert_eq!(decide(&o), Decision::Wait);
    o.hypothesis = violated();
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Failed, "SteadyStateNotMet"))
    );
    o.hypothesis = HypothesisView::Holding;
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Injecting));
}

#[test]
fn dry_run_and_accepted_empty_selections_end_before_injecting() {
    let mut o = observed(Phase::Verifying);
    o.dry_run = true;
    assert_eq!(verdict_of(&decide(&o)), Some((Verdict::DryRun, "DryRun")));
    let mut o = observed(Phase::Verifying);
    o.no_targets = true;
    o.allow_empty_targets = true;
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Passed, "NoTargets"))
    );
}

#[test]
fn injecting_waits_for_every_fault_then_runs() {
    let mut o = observed(Phase::Injecting);
    o.injected_at = Some(t(0));
    assert_eq!(decide(&o), Decision::Wait);
    o.injection = ProgressView::Done;
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Running));
}

#[test]
fn a_fault_that_cannot_be_applied_aborts_with_an_error() {
    let mut o = observed(Phase::Injecting);
    o.injected_at = Some(t(0));
    o.injection = ProgressView::Failed {
        message: "pod web-0: agent timed out".into(),
    };
    assert_eq!(
        decide(&o),
        Decision::Abort(AbortCause::InjectFailed {
            message: "pod web-0: agent timed out".into()
        })
    );
}

#[test]
fn running_waits_for_the_duration_then_recovers() {
    let mut o = observed(Phase::Running);
    o.injected_at = Some(t(0));
    o.now = t(10);
    assert_eq!(decide(&o), Decision::WaitUntil(t(60)));
    o.now = t(60);
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Recovering));
}

#[test]
fn a_during_violation_aborts_from_injecting_and_running() {
    for phase in [Phase::Injecting, Phase::Running] {
        let mut o = observed(phase);
        o.injected_at = Some(t(0));
        o.hypothesis = violated();
        assert_eq!(
            decide(&o),
            Decision::Abort(AbortCause::HypothesisViolated {
                probe: "http".into(),
                message: "probe http: status 503".into()
            }),
            "{phase:?}"
        );
    }
}

#[test]
fn a_violation_is_only_recorded_when_abort_on_failure_is_off() {
    let mut o = observed(Phase::Running);
    o.injected_at = Some(t(0));
    o.hypothesis = violated();
    o.abort_on_hypothesis_failure = false;
    assert_eq!(decide(&o), Decision::WaitUntil(t(60)));
}

#[test]
fn stop_requests_abort_once_faults_may_be_in() {
    let asked = || Some("db migration".to_string());
    for (set, cause) in [
        ((true, None, false), AbortCause::Deleted),
        (
            (false, asked(), false),
            AbortCause::Requested {
                message: "aborted on request: db migration".into(),
            },
        ),
        ((false, None, true), AbortCause::Paused),
    ] {
        for phase in [Phase::Injecting, Phase::Running] {
            let mut o = observed(phase);
            o.injected_at = Some(t(0));
            (o.deleting, o.abort_requested, o.paused) = set.clone();
            assert_eq!(decide(&o), Decision::Abort(cause.clone()), "{phase:?}");
        }
    }
}

#[test]
fn stop_requests_before_injection_end_without_reverting() {
    for phase in [Phase::Pending, Phase::Verifying] {
        let mut o = observed(phase);
        o.abort_requested = Some("game day over".into());
        let d = decide(&o);
        assert_eq!(
            verdict_of(&d),
            Some((Verdict::Aborted, "AbortRequested")),
            "{phase:?}"
        );
        assert!(
            matches!(&d, Decision::Finish { message, .. } if message == "aborted on request: game day over before any fault was injected"),
            "{d:?}"
        );
    }
    // An annotation without a value still aborts, and says no reason was given.
    assert_eq!(
        AbortCause::requested(" ").message(),
        "aborted on request (faultline.dev/abort annotation, no reason given)"
    );
}

#[test]
fn a_pause_holds_what_has_not_started_and_never_finishes_it() {
    for phase in [Phase::Pending, Phase::Verifying] {
        let mut o = observed(phase);
        o.paused = true;
        assert_eq!(decide(&o), Decision::Hold, "{phase:?}");
        // Deletion and abort requests still end it.
        o.deleting = true;
        assert_eq!(
            verdict_of(&decide(&o)),
            Some((Verdict::Aborted, "ExperimentDeleted"))
        );
    }
    // Once faults may be in, a pause aborts as before.
    let mut o = observed(Phase::Injecting);
    o.injected_at = Some(t(0));
    o.paused = true;
    assert_eq!(decide(&o), Decision::Abort(AbortCause::Paused));
}

#[test]
fn nothing_injected_is_inconclusive_never_passed() {
    // Every kill refused: nothing to test, nothing to revert, no later round.
    let mut o = observed(Phase::Injecting);
    o.injected_at = Some(t(0));
    o.injection = ProgressView::Done;
    o.nothing_injected = Some("pod shop/web-0: eviction refused: budget web-pdb".into());
    let d = decide(&o);
    assert_eq!(
        verdict_of(&d),
        Some((Verdict::Inconclusive, "NothingInjected"))
    );
    assert!(
        matches!(&d, Decision::Finish { message, .. } if message.ends_with("eviction refused: budget web-pdb")),
        "{d:?}"
    );
    // A repeating kill may still kill in a later round: it runs on.
    o.next_kill_at = Some(t(10));
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Running));
    // ... and if no round ever killed, the after-check cannot make it Passed.
    let mut o = observed(Phase::Verifying);
    o.injected_at = Some(t(0));
    o.reverted_at = Some(t(60));
    o.nothing_injected = Some("every round was refused".into());
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Inconclusive, "NothingInjected"))
    );
    o.nothing_injected = None;
    assert_eq!(verdict_of(&decide(&o)), Some((Verdict::Passed, "Passed")));
}

#[test]
fn stop_requests_during_a_revert_still_wait_for_the_revert() {
    for phase in [Phase::Recovering, Phase::Aborting] {
        let mut o = observed(phase);
        o.injected_at = Some(t(0));
        o.deleting = true;
        assert_eq!(
            decide(&o),
            Decision::Wait,
            "{phase:?}: never finish while faults may be in"
        );
    }
}

#[test]
fn recovering_moves_on_only_when_the_revert_is_confirmed() {
    let mut o = observed(Phase::Recovering);
    o.injected_at = Some(t(0));
    assert_eq!(decide(&o), Decision::Wait);
    o.revert = ProgressView::Done;
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Verifying));
    o.revert = ProgressView::Failed {
        message: "web-0: 2 rules left".into(),
    };
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Error, "RevertFailed"))
    );
}

#[test]
fn aborting_ends_with_the_cause_once_everything_is_reverted() {
    let mut o = observed(Phase::Aborting);
    o.injected_at = Some(t(0));
    o.abort_cause = Some(AbortCause::HypothesisViolated {
        probe: "http".into(),
        message: "probe http: status 503".into(),
    });
    assert_eq!(decide(&o), Decision::Wait);
    o.revert = ProgressView::Done;
    let d = decide(&o);
    assert_eq!(verdict_of(&d), Some((Verdict::Aborted, "ProbeFailed")));
    assert!(matches!(d, Decision::Finish { message, .. } if message.contains("status 503")));

    o.abort_cause = Some(AbortCause::InjectFailed {
        message: "x".into(),
    });
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Error, "InjectFailed"))
    );
}

#[test]
fn after_the_revert_the_hypothesis_must_hold_within_the_recovery_timeout() {
    let mut o = observed(Phase::Verifying);
    o.injected_at = Some(t(0));
    o.reverted_at = Some(t(60));
    o.now = t(70);
    o.hypothesis = violated();
    assert_eq!(decide(&o), Decision::WaitUntil(t(90)));
    o.hypothesis = HypothesisView::Holding;
    assert_eq!(verdict_of(&decide(&o)), Some((Verdict::Passed, "Passed")));
    o.hypothesis = violated();
    o.now = t(90);
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Failed, "NotRecovered"))
    );
    o.hypothesis = HypothesisView::Undecided;
    assert_eq!(
        verdict_of(&decide(&o)),
        Some((Verdict::Failed, "NotRecovered"))
    );
}

#[test]
fn a_stop_request_after_the_revert_ends_as_aborted_without_reinjecting() {
    let mut o = observed(Phase::Verifying);
    o.injected_at = Some(t(0));
    o.reverted_at = Some(t(60));
    o.paused = true;
    let d = decide(&o);
    assert_eq!(verdict_of(&d), Some((Verdict::Aborted, "ChaosPaused")));
    assert!(
        matches!(d, Decision::Finish { message, .. } if message.contains("already been reverted"))
    );
}

#[test]
fn terminal_phases_do_nothing_whatever_happens() {
    for phase in [Phase::Succeeded, Phase::Failed, Phase::Aborted] {
        let mut o = observed(phase);
        o.deleting = true;
        o.hypothesis = violated();
        assert_eq!(decide(&o), Decision::Wait);
    }
}

#[test]
fn a_repeating_pod_kill_fires_on_its_interval_but_never_past_the_end() {
    let mut o = observed(Phase::Running);
    o.injected_at = Some(t(0));
    o.next_kill_at = Some(t(20));
    o.now = t(10);
    assert_eq!(decide(&o), Decision::WaitUntil(t(20)));
    o.now = t(20);
    assert_eq!(decide(&o), Decision::KillAgain);
    o.next_kill_at = Some(t(60));
    o.now = t(59);
    assert_eq!(
        decide(&o),
        Decision::WaitUntil(t(60)),
        "the end comes first"
    );
    o.now = t(60);
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Recovering));
    // A violation still wins over a due kill.
    o.now = t(20);
    o.next_kill_at = Some(t(20));
    o.hypothesis = violated();
    assert!(matches!(decide(&o), Decision::Abort(_)));
}

#[test]
fn a_probe_the_controller_may_not_run_is_a_configuration_error_never_a_failed_hypothesis() {
    let why = "the controller is not allowed to read ... controller.probeReadRules";
    // Before anything is injected: the experiment ends as an Error, nothing injected.
    for phase in [Phase::Pending, Phase::Verifying] {
        let mut o = observed(phase);
        o.probes_forbidden = Some(why.into());
        // Even while the hypothesis looks violated: the refusal is no evidence.
        o.hypothesis = violated();
        let d = decide(&o);
        assert_eq!(
            verdict_of(&d),
            Some((Verdict::Error, "ProbeForbidden")),
            "{phase:?}"
        );
        let Decision::Finish { message, .. } = d else {
            unreachable!()
        };
        assert!(message.ends_with("; nothing was injected"), "{message}");
    }
    // With faults in: revert first, then end as an Error.
    for phase in [Phase::Injecting, Phase::Running] {
        let mut o = observed(phase);
        o.injected_at = Some(t(-5));
        o.probes_forbidden = Some(why.into());
        o.hypothesis = violated();
        let d = decide(&o);
        assert_eq!(
            d,
            Decision::Abort(AbortCause::ProbeForbidden {
                message: why.into()
            })
        );
        let mut aborting = observed(Phase::Aborting);
        aborting.revert = ProgressView::Done;
        aborting.abort_cause = Some(AbortCause::ProbeForbidden {
            message: why.into(),
        });
        assert_eq!(
            verdict_of(&decide(&aborting)),
            Some((Verdict::Error, "ProbeForbidden"))
        );
    }
}

#[test]
fn targets_that_all_left_end_the_experiment_with_that_story() {
    let mut o = observed(Phase::Running);
    o.injected_at = Some(t(-5));
    o.targets_left = Some("pod shop/web-0 was deleted".into());
    o.any_injected = true;
    let cause = AbortCause::TargetsLeft {
        message: "pod shop/web-0 was deleted".into(),
        any_injected: true,
    };
    assert_eq!(decide(&o), Decision::Abort(cause.clone()));
    let mut aborting = observed(Phase::Aborting);
    aborting.revert = ProgressView::Done;
    aborting.abort_cause = Some(cause);
    assert_eq!(
        verdict_of(&decide(&aborting)),
        Some((Verdict::Aborted, "TargetsLeft"))
    );
    // Nothing was ever in: nothing was tested.
    aborting.abort_cause = Some(AbortCause::TargetsLeft {
        message: "pod shop/web-0 was deleted".into(),
        any_injected: false,
    });
    assert_eq!(
        verdict_of(&decide(&aborting)),
        Some((Verdict::Inconclusive, "TargetsLeft"))
    );
    // Before injection the selection is redone anyway: no effect there.
    let mut pending = observed(Phase::Pending);
    pending.targets_left = Some("x".into());
    assert_eq!(decide(&pending), decide(&observed(Phase::Pending)));
}

#[test]
fn confirmed_reverted_is_said_only_when_an_agent_confirmed_it() {
    let mut o = observed(Phase::Aborting);
    o.revert = ProgressView::Done;
    o.abort_cause = Some(AbortCause::InjectFailed {
        message: "no agent reported networkLatency applied".into(),
    });
    let Decision::Finish { message, .. } = decide(&o) else {
        panic!("finish")
    };
    assert!(
        message.ends_with("every fault is confirmed reverted"),
        "{message}"
    );
    o.unconfirmed_reverts = Some("pod shop/web-0 on node node-1".into());
    let Decision::Finish { message, .. } = decide(&o) else {
        panic!("finish")
    };
    assert!(!message.contains("confirmed reverted"), "{message}");
    assert!(
        message.contains("no agent confirmed a revert for pod shop/web-0 on node node-1"),
        "{message}"
    );
    let mut recovering = observed(Phase::Recovering);
    recovering.revert = ProgressView::Done;
    recovering.unconfirmed_reverts = Some("pod shop/web-0 on node node-1".into());
    let Decision::Transition { message, .. } = decide(&recovering) else {
        panic!("transition")
    };
    assert!(!message.contains("confirmed reverted"), "{message}");
}

#[test]
fn an_abort_announced_but_not_recorded_goes_on_even_when_the_hypothesis_holds_again() {
    let cause = AbortCause::HypothesisViolated {
        probe: String::new(),
        message: "probe http: status 503".into(),
    };
    let shown_at = t(0) + chrono::TimeDelta::from_std(ABORTING_SHOWN_AFTER).unwrap();
    for phase in [Phase::Injecting, Phase::Running] {
        let mut o = observed(phase);
        o.hypothesis = HypothesisView::Holding;
        o.abort_begun = Some((cause.clone(), t(0)));
        // The agents' receipts are awaited without an Aborting status for a while...
        assert_eq!(decide(&o), Decision::WaitUntil(shown_at), "{phase:?}");
        // ...after which status shows the abort, as when it runs long or fails.
        o.now = shown_at;
        assert_eq!(decide(&o), Decision::Abort(cause.clone()), "{phase:?}");
        o.now = t(0);
        o.revert = ProgressView::Failed {
            message: "pod shop/web-0 (node n1): 2 rule(s) left".into(),
        };
        assert_eq!(decide(&o), Decision::Abort(cause.clone()), "{phase:?}");
        // Receipts in first: the verdict at once, as from Aborting.
        o.revert = ProgressView::Done;
        assert_eq!(
            decide(&o),
            Decision::Finish {
                verdict: Verdict::Aborted,
                reason: "ProbeFailed",
                message: "probe http: status 503; every fault is confirmed reverted".into(),
            },
            "{phase:?}"
        );
        o.unconfirmed_reverts = Some("networkLatency on pod shop/web-0 (node n1)".into());
        let Decision::Finish { message, .. } = decide(&o) else {
            panic!("finish")
        };
        assert!(
            message.contains("no agent confirmed a revert for networkLatency"),
            "{message}"
        );
    }
    // Only where faults may be in: an Aborting experiment follows its revert.
    let mut o = observed(Phase::Aborting);
    o.abort_cause = Some(cause.clone());
    o.abort_begun = Some((cause, t(0)));
    assert!(!matches!(decide(&o), Decision::Abort(_)));
}

#[test]
fn an_abort_begins_when_the_agents_were_told_else_when_the_violation_was_seen_else_now() {
    let broken = AbortCause::HypothesisViolated {
        probe: "http".into(),
        message: "probe http: status 503".into(),
    };
    let mut o = observed(Phase::Running);
    o.now = t(9);
    o.hypothesis = HypothesisView::Violated {
        probe: "http".into(),
        message: "probe http: status 503".into(),
        since: t(4),
    };
    let begun = abort_begun(&o, &broken);
    assert_eq!(begun.since, t(4));
    assert_eq!(begun.reason, "ProbeFailed");
    assert_eq!(begun.message, broken.message());

    // Another cause while the hypothesis is broken begins now, not at the violation.
    assert_eq!(abort_begun(&o, &AbortCause::Paused).since, t(9));

    // An abort the label carries over keeps the time the agents were told.
    o.abort_begun = Some((AbortCause::Paused, t(2)));
    assert_eq!(abort_begun(&o, &broken).since, t(2));
}

#[test]
fn kills_left_under_way_are_finished_before_the_injection_counts_as_done() {
    // A stopped reconcile left kills `Injecting`: they are finished first, even when every
    // network fault reports applied and a round is due.
    let mut o = observed(Phase::Injecting);
    o.injected_at = Some(t(0));
    o.injection = ProgressView::Done;
    o.kills_interrupted = true;
    assert_eq!(decide(&o), Decision::FinishKills);
    let mut o = observed(Phase::Running);
    o.injected_at = Some(t(0));
    o.next_kill_at = Some(t(10));
    o.now = t(10);
    o.kills_interrupted = true;
    assert_eq!(decide(&o), Decision::FinishKills);
    // Not past the end, and never before an abort.
    o.now = t(60);
    assert_eq!(phase_of(&decide(&o)), Some(Phase::Recovering));
    o.now = t(10);
    o.hypothesis = violated();
    assert!(matches!(decide(&o), Decision::Abort(_)));
    let mut o = observed(Phase::Injecting);
    o.kills_interrupted = true;
    o.hypothesis = violated();
    assert!(matches!(decide(&o), Decision::Abort(_)));
}

fn message_of(d: &Decision) -> &str {
    match d {
        Decision::Finish { message, .. } | Decision::Transition { message, .. } => message,
        _ => "",
    }
}

#[test]
fn the_hypothesis_is_said_to_hold_only_in_the_phases_a_probe_checks() {
    let mut o = observed(Phase::Verifying);
    o.probed = ProbedPhases {
        before: false,
        during: true,
        after: false,
    };
    assert_eq!(
        message_of(&decide(&o)),
        "no probe runs before the faults; injecting faults"
    );
    o.injected_at = Some(t(0));
    o.reverted_at = Some(t(60));
    let passed = decide(&o);
    assert_eq!(verdict_of(&passed), Some((Verdict::Passed, "Passed")));
    assert_eq!(
        message_of(&passed),
        "the hypothesis held during the faults (no probe runs in the other phases)"
    );
    o.probed.after = true;
    assert_eq!(
        message_of(&decide(&o)),
        "the hypothesis held during and after the faults (no probe runs in the other phase)"
    );
    o.probed = ProbedPhases::default();
    assert!(
        message_of(&decide(&o)).contains("no probe checked a hypothesis"),
        "an experiment without probes claims no hypothesis"
    );
    o.probed = ProbedPhases::ALL;
    assert_eq!(
        message_of(&decide(&o)),
        "the hypothesis held before, during and after the faults"
    );
}
