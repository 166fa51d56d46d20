//! Applied receipts: a node agent that has put faults of an experiment into the kernel says so
//! with one key of the revert signal's ConfigMap per experiment and node (the key a revert
//! receipt takes later, `<experiment UID>.<node>`, which the chart's admission policy lets only
//! that node's agent write), naming every injection of the experiment it applied there.
//!
//! Why: every FaultInjection's own `Applied` status write (100 of them for 100 targets) came
//! between the faults going in and the experiment counting them in, and the API server that
//! took those writes was the one still taking the controller's creates. Measured on the real
//! control plane, runs alternating with and without those writes in one session (100 targets,
//! five pairs): the last fault was in the kernel 606-815 ms after the experiment's create
//! without them, 763-1229 ms with them. With the receipt, the agent writes one key per step
//! and node, the controller counts the faults in from it, and the injections' own statuses
//! follow once the node's applies have gone quiet (see the agent's `acknowledge`): they are
//! still written, so `kubectl get faultinjections` and the report say the same, a moment later.
//!
//! A receipt only ever adds `Applied` where an injection's status says nothing newer (no
//! status, or `Pending`), for the same object (UID) and generation: a status the agent wrote
//! itself always wins. A revert receipt written later under the same key replaces it (by then
//! nothing is applied), and the signal's sweep removes both with the experiment.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::signal_receipts;
use crate::api::{FaultInjection, FaultInjectionStatus, InjectionPhase};

/// One injection a node's agent applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedEntry {
    /// The FaultInjection's UID: an injection deleted and created again under the same name is
    /// another one.
    pub uid: String,
    /// The generation of its spec that was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    pub applied_at: DateTime<Utc>,
    pub mechanism: String,
}

/// A node's applied receipt for one experiment, as the ConfigMap holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedReceipt {
    /// `namespace/name` of the experiment: which one to reconcile when the receipt arrives.
    pub experiment: String,
    pub node: String,
    /// Injection name → what was applied.
    pub applied: BTreeMap<String, AppliedEntry>,
}

impl AppliedReceipt {
    pub fn parse(value: &str) -> Option<AppliedReceipt> {
        serde_json::from_str(value).ok()
    }
}

/// The applied receipts the ConfigMap holds for the experiment with this UID. A value that is
/// no applied receipt (a revert receipt, or unreadable), or that speaks for another node than
/// its key names (the key is what the admission policy holds an agent to), is left out.
pub fn applied_of(data: &BTreeMap<String, String>, uid: &str) -> Vec<AppliedReceipt> {
    let prefix = format!("{uid}.");
    data.range(prefix.clone()..)
        .take_while(|(key, _)| key.starts_with(&prefix))
        .filter_map(|(key, value)| {
            let receipt = AppliedReceipt::parse(value)?;
            (key[prefix.len()..] == receipt.node).then_some(receipt)
        })
        .collect()
}

/// The injections as the experiment is to see them: each one a receipt names (same UID and
/// generation) whose own status does not say `Applied` or anything later yet, with the
/// receipt's word as its status.
pub fn overlay(
    injections: Vec<Arc<FaultInjection>>,
    receipts: &[AppliedReceipt],
) -> Vec<Arc<FaultInjection>> {
    if receipts.is_empty() {
        return injections;
    }
    injections
        .into_iter()
        .map(|injection| {
            let waiting = injection
                .status
                .as_ref()
                .is_none_or(|s| s.phase == InjectionPhase::Pending);
            match entry_for(&injection, receipts) {
                Some(entry) if waiting => {
                    let mut seen = (*injection).clone();
                    seen.status = Some(FaultInjectionStatus {
                        phase: InjectionPhase::Applied,
                        mechanism: Some(entry.mechanism.clone()),
                        applied_at: Some(entry.applied_at),
                        observed_generation: entry.generation,
                        message: Some(format!(
                            "applied ({}), as the agent's applied receipt for node {} says",
                            entry.mechanism, injection.spec.node_name
                        )),
                        ..Default::default()
                    });
                    Arc::new(seen)
                }
                _ => injection,
            }
        })
        .collect()
}

/// What the receipt of the injection's node says of it, if it names this very object (UID)
/// and generation: only then does it count the injection in.
pub fn entry_for<'a>(
    injection: &FaultInjection,
    receipts: &'a [AppliedReceipt],
) -> Option<&'a AppliedEntry> {
    let name = injection.name_any();
    receipts
        .iter()
        .filter(|r| r.node == injection.spec.node_name)
        .find_map(|r| r.applied.get(&name))
        .filter(|e| {
            injection.uid().as_deref() == Some(e.uid.as_str())
                && e.generation == injection.metadata.generation
        })
}

/// The ConfigMap key of `node`'s receipt for the experiment with this UID, if it fits.
pub fn key(uid: &str, node: &str) -> Option<String> {
    signal_receipts::key(uid, node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const UID: &str = "0b6e4f0e-6c5a-4f43-9d43-3c1f5b0f9a11";

    fn injection(
        name: &str,
        uid: &str,
        generation: i64,
        status: Option<&str>,
    ) -> Arc<FaultInjection> {
        let mut value = json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "generation": generation},
            "spec": {"experiment": {"name": "exp", "uid": UID},
                     "target": {"namespace": "ns", "name": "pod", "uid": "p"},
                     "nodeName": "node-1", "expiresAt": "2026-12-07T12:00:00Z",
                     "fault": {"latency": {"latency": "50ms"}}}
        });
        if let Some(phase) = status {
            value["status"] = json!({"phase": phase});
        }
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn receipt(node: &str, entries: &[(&str, &str, i64)]) -> AppliedReceipt {
        AppliedReceipt {
            experiment: "ns/exp".into(),
            node: node.into(),
            applied: entries
                .iter()
                .map(|(name, uid, generation)| {
                    (
                        name.to_string(),
                        AppliedEntry {
                            uid: uid.to_string(),
                            generation: Some(*generation),
                            applied_at: "2026-12-07T11:00:00Z".parse().unwrap(),
                            mechanism: "nfqueue".into(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn phase(injection: &FaultInjection) -> Option<InjectionPhase> {
        injection.status.as_ref().map(|s| s.phase)
    }

    #[test]
    fn a_receipt_counts_a_waiting_injection_applied_with_its_mechanism_and_time() {
        let seen = overlay(
            vec![
                injection("a", "u-a", 1, None),
                injection("b", "u-b", 1, Some("Pending")),
            ],
            &[receipt("node-1", &[("a", "u-a", 1), ("b", "u-b", 1)])],
        );
        for injection in &seen {
            let status = injection.status.as_ref().unwrap();
            assert_eq!(status.phase, InjectionPhase::Applied);
            assert_eq!(status.mechanism.as_deref(), Some("nfqueue"));
            assert_eq!(
                status.applied_at,
                Some("2026-12-07T11:00:00Z".parse().unwrap())
            );
            assert_eq!(status.observed_generation, Some(1));
        }
    }

    #[test]
    fn a_receipt_never_overrides_what_the_injection_itself_says_nor_speaks_for_another_object() {
        let receipts = [receipt(
            "node-1",
            &[
                ("reverted", "u-r", 1),
                ("failed", "u-f", 1),
                ("recreated", "old-uid", 1),
                ("edited", "u-e", 1),
            ],
        )];
        let seen = overlay(
            vec![
                injection("reverted", "u-r", 1, Some("Reverted")),
                injection("failed", "u-f", 1, Some("Failed")),
                injection("recreated", "new-uid", 1, None),
                injection("edited", "u-e", 2, None),
                injection("unnamed", "u-u", 1, None),
            ],
            &receipts,
        );
        let phases: Vec<Option<InjectionPhase>> = seen.iter().map(|i| phase(i)).collect();
        assert_eq!(
            phases,
            vec![
                Some(InjectionPhase::Reverted),
                Some(InjectionPhase::Failed),
                None,
                None,
                None
            ],
            "what the agent wrote wins; another UID or generation, or no entry, waits"
        );
    }

    #[test]
    fn a_receipt_speaks_only_for_the_node_it_names() {
        let seen = overlay(
            vec![injection("a", "u-a", 1, None)],
            &[receipt("node-2", &[("a", "u-a", 1)])],
        );
        assert_eq!(phase(&seen[0]), None);
    }

    #[test]
    fn only_readable_applied_receipts_under_their_own_nodes_key_are_read_and_a_revert_receipt_is_none()
     {
        let value = |node: &str| serde_json::to_string(&receipt(node, &[("a", "u-a", 1)])).unwrap();
        let revert = json!({"experiment": "ns/exp", "node": "node-3",
                            "revertedAt": "2026-12-07T11:00:00Z", "injections": 1})
        .to_string();
        let data: BTreeMap<String, String> = [
            (UID.to_string(), "{\"experiment\":\"ns/exp\"}".to_string()),
            (key(UID, "node-1").unwrap(), value("node-1")),
            (key(UID, "node-2").unwrap(), value("node-9")),
            (key(UID, "node-3").unwrap(), revert),
            (key(UID, "node-4").unwrap(), "not json".into()),
            (key("other", "node-1").unwrap(), value("node-1")),
        ]
        .into();
        let found: Vec<String> = applied_of(&data, UID).into_iter().map(|r| r.node).collect();
        assert_eq!(found, vec!["node-1".to_string()]);
        assert!(
            signal_receipts::receipts_of(&data, UID)
                .iter()
                .all(|r| r.node == "node-3"),
            "and an applied receipt is no revert receipt"
        );
    }
}
