//! Table tests for the tolerance rules and the per-phase hypothesis.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use ProbePhase::{After, Before, During};

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

fn probe(name: &str, failure_threshold: i32, success_threshold: i32) -> Probe {
    let mut probe: Probe =
        serde_yaml::from_str(&format!("{{name: {name}, http: {{url: 'http://x/'}}}}")).unwrap();
    probe.failure_threshold = failure_threshold;
    probe.success_threshold = success_threshold;
    probe
}

fn with_phases(mut probe: Probe, phases: &[ProbePhase]) -> Probe {
    probe.phases = phases.to_vec();
    probe
}

fn pass() -> CheckOutcome {
    CheckOutcome::pass("200 in 3ms", Duration::from_millis(3))
}

fn fail() -> CheckOutcome {
    CheckOutcome::fail(
        "probe p: status 503, expected 2xx",
        Some("503 in 3ms".into()),
        Duration::from_millis(3),
    )
}

/// Feeds `checks` ('+' pass, '-' fail), one a second from t(1), and returns the state after
/// each one as a string: U undecided, H holding, V violated.
fn states(failure_threshold: i32, success_threshold: i32, checks: &str) -> String {
    let mut tracker = ProbeTracker::new(&probe("p", failure_threshold, success_threshold));
    let mut out = String::new();
    for (i, c) in checks.chars().enumerate() {
        let outcome = if c == '+' { pass() } else { fail() };
        tracker.record(&outcome, t(i as i64 + 1), During);
        out.push(match tracker.state() {
            ProbeState::Undecided => 'U',
            ProbeState::Holding => 'H',
            ProbeState::Violated { .. } => 'V',
        });
    }
    out
}

#[test]
fn thresholds_decide_when_a_probe_is_violated_and_when_it_holds_again() {
    // (failureThreshold, successThreshold, checks, states after each check)
    let rows = [
        (1, 1, "", ""),
        (1, 1, "+", "H"),
        (1, 1, "-", "V"),
        (1, 1, "+-+", "HVH"),
        // Tolerance: two failures in a row are tolerated, the third violates.
        (3, 1, "+--+--", "HHHHHH"),
        (3, 1, "+---", "HHHV"),
        // A first failing check within the tolerance proves nothing either way.
        (3, 1, "--+", "UUH"),
        (3, 1, "---", "UUV"),
        // Once violated, it takes successThreshold passes in a row to hold again.
        (1, 3, "-++-+++", "VVVVVVH"),
        (2, 2, "--+-++", "UVVVVH"),
        // Holding does not need successThreshold passes the first time.
        (1, 3, "+", "H"),
    ];
    for (failure, success, checks, expected) in rows {
        assert_eq!(
            states(failure, success, checks),
            expected,
            "failureThreshold {failure}, successThreshold {success}, checks {checks:?}"
        );
    }
}

#[test]
fn a_flapping_probe_within_its_tolerance_keeps_holding_and_is_counted() {
    let mut tracker = ProbeTracker::new(&probe("p", 2, 1));
    for i in 0..10 {
        let outcome = if i % 2 == 0 { pass() } else { fail() };
        tracker.record(&outcome, t(i), During);
        assert_eq!(tracker.state(), ProbeState::Holding, "after check {i}");
    }
    let s = tracker.status();
    assert_eq!((s.passes, s.failures), (5, 5));
    assert_eq!((s.consecutive_failures, s.consecutive_successes), (1, 0));
    assert!(s.holding);
    assert_eq!(s.first_violation_at, None);
}

#[test]
fn status_records_the_last_check_and_the_first_violation() {
    let mut tracker = ProbeTracker::new(&probe("p", 1, 1));
    tracker.record(&pass(), t(1), Before);
    tracker.record(&fail(), t(2), During);
    assert_eq!(tracker.state(), ProbeState::Violated { since: t(2) });
    tracker.record(&pass(), t(3), During);
    tracker.record(&fail(), t(4), After);

    let s = tracker.status();
    assert_eq!(s.name, "p");
    assert_eq!(s.phase, Some(After));
    assert_eq!(s.last_checked_at, Some(t(4)));
    assert_eq!(s.last_value.as_deref(), Some("503 in 3ms"));
    assert_eq!(
        s.last_error.as_deref(),
        Some("probe p: status 503, expected 2xx")
    );
    // The first violation stays; the current one started at t(4).
    assert_eq!(s.first_violation_at, Some(t(2)));
    assert_eq!(tracker.state(), ProbeState::Violated { since: t(4) });
    assert!(!s.holding);
    assert_eq!((s.passes, s.failures), (2, 2));

    tracker.record(&pass(), t(5), After);
    assert_eq!(tracker.status().last_error, None, "a pass clears the error");
}

#[test]
fn samples_keep_only_the_most_recent_checks() {
    let mut tracker = ProbeTracker::new(&probe("p", 1, 1));
    for i in 0..(MAX_SAMPLES as i64 + 30) {
        tracker.record(&pass(), t(i), During);
    }
    let samples = &tracker.status().samples;
    assert_eq!(samples.len(), MAX_SAMPLES);
    assert_eq!(
        samples.first().unwrap().time,
        t(30),
        "the oldest are dropped"
    );
    assert_eq!(samples.last().unwrap().time, t(MAX_SAMPLES as i64 + 29));
    assert_eq!(tracker.status().passes, MAX_SAMPLES as i64 + 30);
}

#[test]
fn a_phase_without_probes_holds() {
    assert_eq!(Hypothesis::new(&[]).view(Before), HypothesisView::Holding);
    let only_during = Hypothesis::new(&[with_phases(probe("p", 1, 1), &[During])]);
    assert_eq!(only_during.view(Before), HypothesisView::Holding);
    assert_eq!(only_during.view(During), HypothesisView::Undecided);
}

#[test]
fn the_view_for_a_phase_looks_only_at_that_phases_probes() {
    let mut h = Hypothesis::new(&[
        with_phases(probe("before-only", 1, 1), &[Before]),
        with_phases(probe("during-only", 1, 1), &[During]),
    ]);
    h.record("before-only", &pass(), t(1), Before);
    h.record("during-only", &fail(), t(2), During);
    assert_eq!(h.view(Before), HypothesisView::Holding);
    assert!(
        matches!(h.view(During), HypothesisView::Violated { ref probe, .. } if probe == "during-only")
    );
    assert_eq!(h.view(After), HypothesisView::Holding);
}

#[test]
fn a_probe_is_undecided_in_a_phase_until_checked_in_it() {
    let mut h = Hypothesis::new(&[probe("p", 1, 1)]);
    assert_eq!(h.view(Before), HypothesisView::Undecided);
    h.record("p", &pass(), t(1), Before);
    assert_eq!(h.view(Before), HypothesisView::Holding);
    // Holding before injection says nothing about after the revert.
    assert_eq!(h.view(After), HypothesisView::Undecided);
    h.record("p", &pass(), t(2), After);
    assert_eq!(h.view(After), HypothesisView::Holding);
}

#[test]
fn a_violation_during_faults_must_recover_after_the_revert() {
    let mut h = Hypothesis::new(&[probe("p", 1, 2)]);
    h.record("p", &fail(), t(1), During);
    h.record("p", &pass(), t(2), After);
    let HypothesisView::Violated { message, since, .. } = h.view(After) else {
        panic!(
            "one pass of two needed: still violated, got {:?}",
            h.view(After)
        );
    };
    assert_eq!(since, t(1));
    assert!(
        message.contains("1 of 2 consecutive successes") && message.contains("200 in 3ms"),
        "{message}"
    );
    h.record("p", &pass(), t(3), After);
    assert_eq!(h.view(After), HypothesisView::Holding);
}

#[test]
fn violated_names_the_first_violated_probe_with_its_error() {
    let mut h = Hypothesis::new(&[
        probe("checkout", 1, 1),
        probe("cart", 2, 1),
        probe("search", 1, 1),
    ]);
    h.record("checkout", &pass(), t(1), During);
    h.record("search", &fail(), t(1), During);
    h.record("cart", &fail(), t(1), During);
    h.record("cart", &fail(), t(2), During);
    assert_eq!(
        h.view(During),
        HypothesisView::Violated {
            probe: "cart".into(),
            message:
                "probe p: status 503, expected 2xx (2 consecutive failures, failureThreshold 2)"
                    .into(),
            since: t(2),
        }
    );
}

#[test]
fn undecided_while_any_probe_of_the_phase_has_not_decided() {
    let mut h = Hypothesis::new(&[probe("a", 1, 1), probe("b", 3, 1)]);
    h.record("a", &pass(), t(1), Before);
    assert_eq!(h.view(Before), HypothesisView::Undecided);
    h.record("b", &fail(), t(1), Before);
    assert_eq!(
        h.view(Before),
        HypothesisView::Undecided,
        "b failed once, tolerance 3"
    );
    h.record("b", &pass(), t(2), Before);
    assert_eq!(h.view(Before), HypothesisView::Holding);
}

#[test]
fn unknown_probe_names_are_refused_and_statuses_follow_spec_order() {
    let mut h = Hypothesis::new(&[probe("a", 1, 1), probe("b", 1, 1)]);
    assert!(!h.record("zzz", &pass(), t(1), Before));
    assert!(h.record("b", &pass(), t(1), Before));
    let names: Vec<String> = h.statuses().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(h.tracker("b").unwrap().status().passes, 1);
}

#[test]
fn many_probes_share_the_sample_budget() {
    assert_eq!(samples_per_probe(1), MAX_SAMPLES);
    assert_eq!(samples_per_probe(8), 60);
    assert_eq!(samples_per_probe(32), MIN_SAMPLES);
    let probes: Vec<Probe> = (0..8).map(|i| probe(&format!("p{i}"), 1, 1)).collect();
    let mut h = Hypothesis::new(&probes);
    for i in 0..100 {
        h.record("p0", &pass(), t(i), During);
    }
    assert_eq!(h.statuses()[0].samples.len(), 60);
}

#[test]
fn a_resumed_hypothesis_keeps_the_record_marks_the_gap_and_judges_on_fresh_checks() {
    // What the first controller recorded: `ok` held, `bad` was violated at t(3).
    let mut first = Hypothesis::new(&[probe("ok", 1, 1), probe("bad", 1, 2)]);
    first.record("ok", &pass(), t(1), During);
    first.record("bad", &pass(), t(1), During);
    first.record("bad", &fail(), t(3), During);
    first.record("ok", &pass(), t(4), During);
    let recorded = first.snapshot();
    assert!(recorded.gaps.is_empty());

    let probes = [probe("ok", 1, 1), probe("bad", 1, 2)];
    let mut next = Hypothesis::resume(&probes, &recorded, true);
    let ok = next.tracker("ok").unwrap();
    assert_eq!(ok.status().passes, 2, "counts carry over");
    assert_eq!(ok.status().samples.len(), 2, "samples carry over");
    assert_eq!(ok.state(), ProbeState::Undecided, "no fresh check yet");
    assert!(!ok.status().holding);
    let bad = next.tracker("bad").unwrap();
    assert_eq!(bad.state(), ProbeState::Violated { since: t(3) });
    assert!(matches!(
        next.view(During),
        HypothesisView::Violated { probe, since, .. } if probe == "bad" && since == t(3)
    ));
    // The gap opens at the last recorded check and closes at the first fresh one.
    assert_eq!(
        next.snapshot().gaps,
        [ProbeGap {
            from: t(4),
            to: None,
            reason: CONTROLLER_CHANGED.into()
        }]
    );
    next.record("ok", &pass(), t(20), During);
    assert_eq!(next.snapshot().gaps[0].to, Some(t(20)));
    assert_eq!(next.tracker("ok").unwrap().state(), ProbeState::Holding);
    // `bad` needs two fresh passes: one from before the gap does not count.
    next.record("bad", &pass(), t(20), During);
    assert!(matches!(
        next.tracker("bad").unwrap().state(),
        ProbeState::Violated { .. }
    ));
    next.record("bad", &pass(), t(21), During);
    assert_eq!(next.view(During), HypothesisView::Holding);

    // A controller that took over while no probe was due (faults being reverted) leaves no
    // gap; one that finds an open gap keeps it open rather than starting another.
    assert!(
        Hypothesis::resume(&probes, &recorded, false)
            .snapshot()
            .gaps
            .is_empty()
    );
    let mut open = recorded.clone();
    open.gaps.push(ProbeGap {
        from: t(2),
        to: None,
        reason: CONTROLLER_CHANGED.into(),
    });
    let gaps = Hypothesis::resume(&probes, &open, true).snapshot().gaps;
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].from, t(2));
}
