//! How far an experiment's revert is, from its FaultInjections and the agents' revert
//! receipts (pure).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::api::{FaultInjection, InjectionPhase, RevertReceipt};
use crate::lifecycle::ProgressView;

/// How far the revert is. Every fault is out once no FaultInjection is left, or once a revert
/// receipt (an agent's word for every fault of the experiment on its node) came from the node
/// of each injection left and of each target recorded with a fault that may be in
/// (`recorded_nodes`). Pod kills need no revert (the pods' own controllers replace them). A
/// receipt that names a failure, or a deleted injection whose agent reported its revert
/// failed, fails the revert.
pub fn revert_progress(
    injections: &[Arc<FaultInjection>],
    recorded_nodes: &BTreeSet<&str>,
    receipts: &[RevertReceipt],
) -> ProgressView {
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
                (status.phase == InjectionPhase::Failed).then(|| {
                    format!(
                        "{}: {}",
                        i.spec.target.name,
                        status.message.clone().unwrap_or_default()
                    )
                })
            }),
    );
    if !failed.is_empty() {
        return ProgressView::Failed {
            message: failed.join("; "),
        };
    }
    let receipted: BTreeSet<&str> = receipts.iter().map(|r| r.node.as_str()).collect();
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

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::api::{FaultInjectionSpec, FaultInjectionStatus};

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
            reverted_at: Utc::now(),
            injections: 1,
            failed: failed.map(str::to_string),
        }
    }

    #[test]
    fn a_receipt_from_the_node_of_every_injection_left_ends_the_revert() {
        let left = [injection("a"), injection("b")];
        let nodes = BTreeSet::from(["a", "b"]);
        assert_eq!(
            revert_progress(&left, &nodes, &[]),
            ProgressView::InProgress
        );
        assert_eq!(
            revert_progress(&left, &nodes, &[receipt("a", None)]),
            ProgressView::InProgress
        );
        assert_eq!(
            revert_progress(&left, &nodes, &[receipt("a", None), receipt("b", None)]),
            ProgressView::Done
        );
    }

    #[test]
    fn a_node_recorded_with_a_fault_needs_its_receipt_even_when_the_cache_has_no_injection_there() {
        // The injection for node b was created a moment ago; the watch has not shown it yet.
        let left = [injection("a")];
        let nodes = BTreeSet::from(["a", "b"]);
        assert_eq!(
            revert_progress(&left, &nodes, &[receipt("a", None)]),
            ProgressView::InProgress
        );
    }

    #[test]
    fn with_no_injection_left_the_revert_is_done_without_receipts() {
        // Every injection was deleted and let go by its agent: the old confirmation.
        let nodes = BTreeSet::from(["a"]);
        assert_eq!(revert_progress(&[], &nodes, &[]), ProgressView::Done);
    }

    #[test]
    fn a_receipt_that_names_a_failure_fails_the_revert_with_its_words() {
        let left = [injection("a")];
        let nodes = BTreeSet::from(["a"]);
        assert_eq!(
            revert_progress(
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
            revert_progress(&[Arc::new(failed)], &nodes, &[receipt("a", None)]),
            ProgressView::Failed { .. }
        ));
    }
}
