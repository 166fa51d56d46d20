//! How far an experiment's revert is, from its FaultInjections and the agents' revert
//! receipts (pure).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use kube::ResourceExt;

use crate::api::{AGENT_FINALIZER, FaultInjection, InjectionPhase, RevertReceipt};
use crate::lifecycle::ProgressView;

/// How far the revert is. Every fault is out once no FaultInjection is left, or once a revert
/// receipt (an agent's word for every fault of the experiment on its node) came from the node
/// of each injection left and of each target recorded with a fault that may be in
/// (`recorded_nodes`). Pod kills need no revert (the pods' own controllers replace them). A
/// receipt that names a failure, a deleted injection whose agent reported its revert failed,
/// or one its agent reported applied and still holds `revert_timeout` after its deletion,
/// fails the revert.
pub fn revert_progress(
    injections: &[Arc<FaultInjection>],
    recorded_nodes: &BTreeSet<&str>,
    receipts: &[RevertReceipt],
    now: DateTime<Utc>,
    revert_timeout: TimeDelta,
) -> ProgressView {
    let receipted: BTreeSet<&str> = receipts.iter().map(|r| r.node.as_str()).collect();
    let mut failed: Vec<String> = receipts
        .iter()
        .filter_map(|r| Some(format!("node {}: {}", r.node, r.failed.as_deref()?)))
        .collect();
    failed.extend(
        injections
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_some())
            .filter_map(|i| {
                let status = i.status.as_ref()?;
                // A refused work item was never applied: its deletion only waits for the
                // agent to let go of it.
                (status.phase == InjectionPhase::Failed && !status.refused()).then(|| {
                    format!(
                        "{}: {}",
                        i.spec.target.name,
                        status.message.clone().unwrap_or_default()
                    )
                })
            }),
    );
    failed.extend(
        injections
            .iter()
            .filter(|i| !receipted.contains(i.spec.node_name.as_str()))
            .filter(|i| deleted_for(i, now, revert_timeout))
            .filter(|i| i.status.as_ref().map(|s| s.phase) == Some(InjectionPhase::Applied))
            .map(|i| {
                format!(
                    "{}/{} on node {}: its agent reported the fault applied and has not confirmed its revert within {}s of the request (abort.revertTimeout); the kernel ends it at its deadline, {} (expiresAt), even if the agent stays down; check the faultline agent on that node",
                    i.spec.target.namespace,
                    i.spec.target.name,
                    i.spec.node_name,
                    revert_timeout.num_seconds(),
                    i.spec.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )
            }),
    );
    if !failed.is_empty() {
        return ProgressView::Failed {
            message: failed.join("; "),
        };
    }
    let all_receipted = injections
        .iter()
        .all(|i| receipted.contains(i.spec.node_name.as_str()))
        && recorded_nodes.is_subset(&receipted);
    if injections.is_empty() || all_receipted {
        ProgressView::Done
    } else {
        ProgressView::InProgress
    }
}

/// FaultInjections deleted at least `revert_timeout` ago that still carry the agent's
/// finalizer although no agent ever reported holding a fault for them (no word at all, or
/// one that says nothing is in the kernel). The controller puts that finalizer on at creation,
/// which saves every injection a write, so a node with no running agent would keep them, and
/// the experiment's revert, forever; these are the ones the controller lets go of itself.
/// Their records were never reported injected, so the verdict says that no agent confirmed
/// their revert.
pub fn unclaimed(
    injections: &[Arc<FaultInjection>],
    now: DateTime<Utc>,
    revert_timeout: TimeDelta,
) -> Vec<Arc<FaultInjection>> {
    injections
        .iter()
        .filter(|i| deleted_for(i, now, revert_timeout))
        .filter(|i| i.finalizers().iter().any(|f| f == AGENT_FINALIZER))
        .filter(|i| {
            i.status.as_ref().is_none_or(|s| {
                matches!(s.phase, InjectionPhase::Pending | InjectionPhase::Reverted) || s.refused()
            })
        })
        .cloned()
        .collect()
}

/// Whether `injection` was deleted at least `long` before `now` (never, for a `long` that
/// reaches before the first representable time).
fn deleted_for(injection: &FaultInjection, now: DateTime<Utc>, long: TimeDelta) -> bool {
    let Some(cutoff) = now.checked_sub_signed(long) else {
        return false;
    };
    injection
        .metadata
        .deletion_timestamp
        .as_ref()
        .is_some_and(|deleted| deleted.0.as_millisecond() <= cutoff.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{
        Condition, ConditionStatus, FaultInjectionSpec, FaultInjectionStatus, PodRef,
    };

    const TIMEOUT: TimeDelta = TimeDelta::seconds(30);

    fn now() -> DateTime<Utc> {
        "2026-12-05T12:00:00Z".parse().unwrap()
    }

    fn progress(
        left: &[Arc<FaultInjection>],
        nodes: &BTreeSet<&str>,
        receipts: &[RevertReceipt],
    ) -> ProgressView {
        revert_progress(left, nodes, receipts, now(), TIMEOUT)
    }

    /// An injection on `node` deleted `ago` before now, carrying the agent's finalizer, with
    /// the agent's `phase` (None: no agent wrote anything).
    fn deleted(node: &str, ago: TimeDelta, phase: Option<InjectionPhase>) -> Arc<FaultInjection> {
        let mut injection = (*injection(node)).clone();
        injection.spec.target = PodRef {
            namespace: "shop".into(),
            name: format!("web-{node}"),
            uid: "u".into(),
        };
        injection.spec.expires_at = now() + TimeDelta::minutes(2);
        let at = (now() - ago).timestamp_millis();
        injection.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_millisecond(at).unwrap(),
        ));
        injection.metadata.finalizers = Some(vec![AGENT_FINALIZER.into()]);
        injection.status = phase.map(|phase| FaultInjectionStatus {
            phase,
            ..Default::default()
        });
        Arc::new(injection)
    }

    fn injection(node: &str) -> Arc<FaultInjection> {
        Arc::new(FaultInjection::new(
            &format!("lat-{node}"),
            FaultInjectionSpec {
                node_name: node.into(),
                ..Default::default()
            },
        ))
    }

    fn receipt(node: &str, failed: Option<&str>) -> RevertReceipt {
        RevertReceipt {
            node: node.into(),
            reverted_at: now(),
            injections: 1,
            failed: failed.map(str::to_string),
        }
    }

    #[test]
    fn a_receipt_from_the_node_of_every_injection_left_ends_the_revert() {
        let left = [injection("a"), injection("b")];
        let nodes = BTreeSet::from(["a", "b"]);
        assert_eq!(progress(&left, &nodes, &[]), ProgressView::InProgress);
        assert_eq!(
            progress(&left, &nodes, &[receipt("a", None)]),
            ProgressView::InProgress
        );
        assert_eq!(
            progress(&left, &nodes, &[receipt("a", None), receipt("b", None)]),
            ProgressView::Done
        );
    }

    #[test]
    fn a_node_recorded_with_a_fault_needs_its_receipt_even_when_the_cache_has_no_injection_there() {
        // The injection for node b was created a moment ago; the watch has not shown it yet.
        let left = [injection("a")];
        let nodes = BTreeSet::from(["a", "b"]);
        assert_eq!(
            progress(&left, &nodes, &[receipt("a", None)]),
            ProgressView::InProgress
        );
    }

    #[test]
    fn with_no_injection_left_the_revert_is_done_without_receipts() {
        // Every injection was deleted and let go by its agent: the old confirmation.
        let nodes = BTreeSet::from(["a"]);
        assert_eq!(progress(&[], &nodes, &[]), ProgressView::Done);
    }

    #[test]
    fn a_receipt_that_names_a_failure_fails_the_revert_with_its_words() {
        let left = [injection("a")];
        let nodes = BTreeSet::from(["a"]);
        assert_eq!(
            progress(
                &left,
                &nodes,
                &[receipt("a", Some("pod web-0: 2 rule(s) left"))]
            ),
            ProgressView::Failed {
                message: "node a: pod web-0: 2 rule(s) left".into()
            }
        );
    }

    #[test]
    fn a_deleted_injection_whose_revert_failed_fails_the_revert() {
        let mut failed = (*injection("a")).clone();
        failed.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-01T00:00:00Z".parse().unwrap(),
            ));
        failed.status = Some(FaultInjectionStatus {
            phase: InjectionPhase::Failed,
            message: Some("revert failed, retrying: nft: busy".into()),
            ..Default::default()
        });
        let nodes = BTreeSet::new();
        assert!(matches!(
            progress(&[Arc::new(failed)], &nodes, &[receipt("a", None)]),
            ProgressView::Failed { .. }
        ));
    }

    #[test]
    fn a_fault_its_agent_still_holds_past_the_revert_timeout_fails_the_revert_naming_pod_node_and_deadline()
     {
        let nodes = BTreeSet::from(["a"]);
        let held = [deleted("a", TIMEOUT, Some(InjectionPhase::Applied))];
        let ProgressView::Failed { message } = progress(&held, &nodes, &[]) else {
            panic!("a fault held past the revert timeout must fail the revert");
        };
        assert!(message.contains("shop/web-a on node a"), "{message}");
        assert!(message.contains("within 30s"), "{message}");
        assert!(message.contains("2026-12-05T12:02:00Z"), "{message}");

        let young = [deleted(
            "a",
            TIMEOUT - TimeDelta::seconds(1),
            Some(InjectionPhase::Applied),
        )];
        assert_eq!(progress(&young, &nodes, &[]), ProgressView::InProgress);
        // Its node's receipt speaks for it: the agent only has not let go of the object yet.
        assert_eq!(
            progress(&held, &nodes, &[receipt("a", None)]),
            ProgressView::Done
        );
    }

    #[test]
    fn a_refused_work_item_waiting_for_its_finalizer_does_not_fail_the_revert() {
        let mut refused =
            (*deleted("a", TimeDelta::seconds(1), Some(InjectionPhase::Failed))).clone();
        refused.status.as_mut().unwrap().conditions.push(Condition {
            type_: crate::api::ADMITTED_CONDITION.into(),
            status: ConditionStatus::False,
            reason: "NotOptedIn".into(),
            ..Default::default()
        });
        let nodes = BTreeSet::from(["a"]);
        assert_eq!(
            progress(&[Arc::new(refused)], &nodes, &[]),
            ProgressView::InProgress
        );
    }

    #[test]
    fn the_controller_lets_go_only_of_deleted_injections_no_agent_held_once_the_revert_timeout_passed()
     {
        let names = |left: &[Arc<FaultInjection>]| -> Vec<String> {
            unclaimed(left, now(), TIMEOUT)
                .iter()
                .map(|i| i.spec.node_name.clone())
                .collect()
        };
        let left = [
            deleted("silent", TIMEOUT, None),
            deleted("pending", TIMEOUT, Some(InjectionPhase::Pending)),
            deleted("expired-unapplied", TIMEOUT, Some(InjectionPhase::Reverted)),
            deleted("applied", TIMEOUT, Some(InjectionPhase::Applied)),
            deleted("young", TIMEOUT - TimeDelta::seconds(1), None),
        ];
        assert_eq!(names(&left), ["silent", "pending", "expired-unapplied"]);

        let mut not_deleted = (*injection("live")).clone();
        not_deleted.metadata.finalizers = Some(vec![AGENT_FINALIZER.into()]);
        let mut let_go = (*deleted("let-go", TIMEOUT, None)).clone();
        let_go.metadata.finalizers = None;
        assert!(names(&[Arc::new(not_deleted), Arc::new(let_go)]).is_empty());
    }

    #[test]
    fn a_revert_timeout_beyond_the_calendar_holds_everything_and_panics_nothing() {
        let nodes = BTreeSet::from(["a"]);
        let left = [deleted(
            "a",
            TimeDelta::days(365),
            Some(InjectionPhase::Applied),
        )];
        assert_eq!(
            revert_progress(&left, &nodes, &[], now(), TimeDelta::MAX),
            ProgressView::InProgress
        );
        let silent = [deleted("a", TimeDelta::days(365), None)];
        assert!(unclaimed(&silent, now(), TimeDelta::MAX).is_empty());
    }
}
