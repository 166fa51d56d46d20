use super::*;
use crate::agent::admission::{Refusal, Verdict};
use chrono::TimeDelta;

fn tag(n: u8) -> InjectionTag {
    InjectionTag::from_uid(&format!("{n:02x}{}", "0".repeat(30))).unwrap()
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn live(n: u8) -> LiveInjection {
    LiveInjection {
        key: format!("default/inj-{n}"),
        tag: tag(n),
        pod_uid: format!("pod-{n}"),
        expires_at: now() + TimeDelta::seconds(60),
        generation: Some(1),
        deleting: false,
        ending: false,
        has_finalizer: true,
        phase: InjectionPhase::Pending,
        observed_generation: None,
        consent: Verdict::Allowed,
    }
}

fn applied(n: u8) -> Applied {
    Applied {
        tag: tag(n),
        pod_uid: format!("pod-{n}"),
        expires_at: now() + TimeDelta::seconds(60),
        generation: Some(1),
        confirmed: true,
    }
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

#[test]
fn a_new_injection_gets_the_finalizer_then_is_applied() {
    let mut injection = live(1);
    injection.has_finalizer = false;
    let plan = plan(now(), Some(&[injection]), &[], &none());
    assert_eq!(
        plan.actions,
        vec![
            Action::AddFinalizer {
                key: "default/inj-1".into()
            },
            Action::Apply {
                key: "default/inj-1".into()
            }
        ]
    );
    assert_eq!(plan.next_deadline, Some(now() + TimeDelta::seconds(60)));
}

#[test]
fn an_applied_injection_in_sync_needs_nothing() {
    let plan = plan(now(), Some(&[live(1)]), &[applied(1)], &none());
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn a_new_generation_is_reapplied() {
    let mut injection = live(1);
    injection.generation = Some(2);
    let plan = plan(now(), Some(&[injection]), &[applied(1)], &none());
    assert_eq!(
        plan.actions,
        vec![Action::Apply {
            key: "default/inj-1".into()
        }]
    );
}

#[test]
fn after_a_restart_journal_entries_are_reapplied_once() {
    let mut entry = applied(1);
    entry.confirmed = false;
    let plan = plan(now(), Some(&[live(1)]), &[entry], &none());
    assert_eq!(
        plan.actions,
        vec![Action::Apply {
            key: "default/inj-1".into()
        }]
    );
}

#[test]
fn deadlines_revert_without_the_api_server() {
    let mut entry = applied(1);
    entry.expires_at = now() - TimeDelta::seconds(1);
    let plan = plan(now(), None, &[entry, applied(2)], &none());
    assert_eq!(
        plan.actions,
        vec![Action::Revert {
            tag: tag(1),
            reason: RevertReason::Expired
        }]
    );
    assert_eq!(plan.next_deadline, Some(now() + TimeDelta::seconds(60)));
}

#[test]
fn without_the_api_server_nothing_is_applied_or_reverted_before_its_deadline() {
    let mut entry = applied(1);
    entry.confirmed = false;
    let plan = plan(now(), None, &[entry], &none());
    assert!(plan.actions.is_empty());
}

#[test]
fn a_deleted_injection_is_reverted_and_one_never_applied_is_released() {
    let mut deleting = live(1);
    deleting.deleting = true;
    let mut never_applied = live(2);
    never_applied.deleting = true;
    let plan = plan(
        now(),
        Some(&[deleting, never_applied]),
        &[applied(1)],
        &none(),
    );
    assert_eq!(
        plan.actions,
        vec![
            Action::Revert {
                tag: tag(1),
                reason: RevertReason::Deleted
            },
            Action::RemoveFinalizer {
                key: "default/inj-2".into()
            }
        ]
    );
}

#[test]
fn a_journal_entry_no_live_injection_backs_is_reverted() {
    let plan = plan(now(), Some(&[]), &[applied(3)], &none());
    assert_eq!(
        plan.actions,
        vec![Action::Revert {
            tag: tag(3),
            reason: RevertReason::NoLongerDesired
        }]
    );
}

#[test]
fn an_expired_injection_is_reverted_and_not_reapplied() {
    let mut injection = live(1);
    injection.expires_at = now();
    let mut entry = applied(1);
    entry.expires_at = now();
    let plan = plan(now(), Some(&[injection.clone()]), &[entry], &none());
    assert_eq!(
        plan.actions,
        vec![Action::Revert {
            tag: tag(1),
            reason: RevertReason::Expired
        }]
    );
    assert_eq!(plan.next_deadline, None);

    // Never applied and already expired: say so once.
    let plan_2 = super::plan(now(), Some(&[injection.clone()]), &[], &none());
    assert_eq!(
        plan_2.actions,
        vec![Action::ReportNotApplied {
            key: "default/inj-1".into(),
            reason: RevertReason::Expired
        }]
    );
    injection.phase = InjectionPhase::Reverted;
    injection.observed_generation = Some(1);
    assert!(
        super::plan(now(), Some(&[injection]), &[], &none())
            .actions
            .is_empty()
    );
}

#[test]
fn a_gone_target_is_reverted_and_a_replacement_is_not_followed() {
    let gone: BTreeSet<String> = ["pod-1".to_string()].into();
    let plan = plan(now(), Some(&[live(1)]), &[applied(1)], &gone);
    assert_eq!(
        plan.actions,
        vec![Action::Revert {
            tag: tag(1),
            reason: RevertReason::TargetGone
        }]
    );
    let plan = super::plan(now(), Some(&[live(1)]), &[], &gone);
    assert_eq!(
        plan.actions,
        vec![Action::ReportNotApplied {
            key: "default/inj-1".into(),
            reason: RevertReason::TargetGone
        }]
    );
}

#[test]
fn a_failed_generation_is_not_retried_but_a_new_one_is() {
    let mut injection = live(1);
    injection.phase = InjectionPhase::Failed;
    injection.observed_generation = Some(1);
    assert!(
        plan(now(), Some(&[injection.clone()]), &[], &none())
            .actions
            .is_empty()
    );
    injection.generation = Some(2);
    assert_eq!(
        plan(now(), Some(&[injection]), &[], &none()).actions,
        vec![Action::Apply {
            key: "default/inj-1".into()
        }]
    );
}

#[test]
fn a_refused_injection_is_reported_once_and_gets_no_finalizer() {
    let mut injection = live(1);
    injection.has_finalizer = false;
    injection.consent = Verdict::Refused(Refusal::NamespaceNotOptedIn);
    let first = plan(now(), Some(&[injection.clone()]), &[], &none());
    assert_eq!(
        first.actions,
        vec![Action::Refuse {
            key: "default/inj-1".into(),
            refusal: Refusal::NamespaceNotOptedIn
        }]
    );
    // Once the refusal is in status for this generation, nothing more.
    injection.phase = InjectionPhase::Failed;
    injection.observed_generation = Some(1);
    let plan = plan(now(), Some(&[injection]), &[], &none());
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn a_fault_in_place_is_reverted_when_consent_is_withdrawn() {
    for refusal in [
        Refusal::NamespaceNotOptedIn,
        Refusal::PodProtected,
        Refusal::ChaosPaused,
    ] {
        let mut injection = live(1);
        injection.consent = Verdict::Refused(refusal);
        let plan = plan(now(), Some(&[injection]), &[applied(1)], &none());
        assert_eq!(
            plan.actions,
            vec![Action::Revert {
                tag: tag(1),
                reason: RevertReason::Withdrawn(refusal)
            }],
            "{refusal:?}"
        );
    }
}

#[test]
fn a_reverted_fault_is_not_applied_again_when_consent_returns() {
    let mut injection = live(1);
    injection.phase = InjectionPhase::Reverted;
    injection.observed_generation = Some(1);
    let plan = plan(now(), Some(&[injection]), &[], &none());
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn unknown_consent_neither_applies_nor_reverts() {
    let mut new = live(1);
    new.consent = Verdict::Unknown;
    let first = plan(now(), Some(&[new]), &[], &none());
    assert!(first.actions.is_empty(), "{first:?}");
    // Adopted after a restart: it stays as it is until the agent knows.
    let mut adopted = live(2);
    adopted.consent = Verdict::Unknown;
    let mut entry = applied(2);
    entry.confirmed = false;
    let plan = plan(now(), Some(&[adopted]), &[entry], &none());
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn deadlines_still_act_on_refused_injections() {
    let mut injection = live(1);
    injection.consent = Verdict::Refused(Refusal::ChaosPaused);
    injection.expires_at = now() - TimeDelta::seconds(1);
    let mut entry = applied(1);
    entry.expires_at = injection.expires_at;
    let plan = plan(now(), Some(&[injection]), &[entry], &none());
    assert_eq!(
        plan.actions,
        vec![Action::Revert {
            tag: tag(1),
            reason: RevertReason::Expired
        },]
    );
}

#[test]
fn a_settled_injection_with_nothing_applied_gets_no_finalizer() {
    // Refused (or failed) earlier: the next plan must not add a finalizer to it.
    let mut injection = live(1);
    injection.has_finalizer = false;
    injection.phase = InjectionPhase::Failed;
    injection.observed_generation = Some(1);
    let plan = plan(now(), Some(&[injection]), &[], &none());
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn an_ending_experiments_faults_are_reverted_and_nothing_of_it_goes_in_or_is_written() {
    // 1 is applied, 2 was never applied (not even a finalizer), 3 was refused before.
    let mut injections = [live(1), live(2), live(3)];
    injections[1].has_finalizer = false;
    injections[2].consent = Verdict::Refused(Refusal::NamespaceNotOptedIn);
    for injection in &mut injections {
        injection.ending = true;
    }
    let plan = plan(now(), Some(&injections), &[applied(1)], &none());
    assert_eq!(
        plan.actions,
        vec![Action::Revert {
            tag: tag(1),
            reason: RevertReason::Ending
        }]
    );
    assert_eq!(plan.next_deadline, None, "nothing left to wake up for");
}

#[test]
fn an_ending_injection_that_is_deleted_too_is_reverted_as_deleted_and_then_let_go() {
    let mut injection = live(1);
    injection.ending = true;
    injection.deleting = true;
    let first = plan(now(), Some(&[injection.clone()]), &[applied(1)], &none());
    assert_eq!(
        first.actions,
        vec![Action::Revert {
            tag: tag(1),
            reason: RevertReason::Deleted
        }]
    );
    // Reverted by the receipt's pass earlier: only the finalizer is left to release.
    let after = plan(now(), Some(&[injection]), &[], &none());
    assert_eq!(
        after.actions,
        vec![Action::RemoveFinalizer {
            key: "default/inj-1".into()
        }]
    );
}
