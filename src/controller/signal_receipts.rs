//! Revert receipts beside the revert signal: a node agent that has taken an experiment's faults
//! out says so with a key of the signal's ConfigMap (`faultline-reverting`), named
//! `<experiment UID>.<node>`, whose value is the receipt and the experiment's `namespace/name`
//! (an [`Entry`] in JSON).
//!
//! Why not straight into the experiment's `status.revertReceipts`, as before (and still, when
//! this write fails): a write of a 500-target experiment costs the real API server 50-150 ms
//! under an abort's load whatever the patch holds (the whole object is decoded, validated and
//! stored again; measured 70 ms for a one-field patch of the ended 210 KB object on an idle
//! server, 10-20 ms for the same patch on a ConfigMap of that size), and the receipt was one
//! of two such writes between the broken service and `Aborted`. A key in a small ConfigMap
//! costs milliseconds. The controller watches the ConfigMap, takes the receipts into the
//! experiment's status with its verdict (where the report reads them), and the sweep of the
//! signal removes them with the signal's own key once nothing needs either.
//!
//! Each agent writes only keys that end with its own node's name (the chart's admission
//! policy `faultline-agent-receipt-keys` enforces it): what another node confirmed, and the
//! controller's signal, are not its to change.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::revert_signal::REVERTING_CONFIGMAP;
use crate::api::RevertReceipt;

/// ConfigMap keys are at most this long (a node name may be up to 253 characters itself: such
/// a node's receipt goes to the experiment's status instead).
const MAX_KEY: usize = 253;

/// A receipt as the ConfigMap holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `namespace/name` of the experiment: which one to reconcile when the receipt arrives.
    pub experiment: String,
    #[serde(flatten)]
    pub receipt: RevertReceipt,
}

/// The key of `node`'s receipt for the experiment with this UID, if it fits in a key.
pub fn key(uid: &str, node: &str) -> Option<String> {
    let key = format!("{uid}.{node}");
    (key.len() <= MAX_KEY && !uid.is_empty() && !node.is_empty()).then_some(key)
}

/// The experiment UID a key of the ConfigMap belongs to: a signal's key is the UID itself, a
/// receipt's starts with it (UIDs hold no dots; node names may).
pub fn uid_of(key: &str) -> &str {
    key.split_once('.').map_or(key, |(uid, _)| uid)
}

/// Whether a key of the ConfigMap is a receipt (and not a signal).
pub fn is_receipt(key: &str) -> bool {
    key.contains('.')
}

/// The receipts the ConfigMap holds for the experiment with this UID. A value that cannot be
/// read, or that speaks for another node than its key names (the key is what the admission
/// policy holds an agent to), is no receipt: the experiment waits for a good one (or for its
/// revert timeout).
pub fn receipts_of(data: &BTreeMap<String, String>, uid: &str) -> Vec<RevertReceipt> {
    let prefix = format!("{uid}.");
    data.range(prefix.clone()..)
        .take_while(|(key, _)| key.starts_with(&prefix))
        .filter_map(|(key, value)| {
            let entry = serde_json::from_str::<Entry>(value).ok()?;
            (key[prefix.len()..] == entry.receipt.node).then_some(entry.receipt)
        })
        .collect()
}

/// What every receipt's value names, revert and applied receipts alike (see
/// `applied_receipts`).
#[derive(Deserialize)]
struct Names {
    experiment: String,
}

/// Receipt keys whose values differ between two versions of the ConfigMap's data, with the
/// experiment (`namespace/name`) each names: the experiments to reconcile now. Revert and
/// applied receipts alike.
pub fn arrived(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut experiments: Vec<(String, String)> = after
        .iter()
        .filter(|(key, value)| is_receipt(key) && before.get(*key) != Some(*value))
        .filter_map(|(_, value)| serde_json::from_str::<Names>(value).ok())
        .filter_map(|entry| {
            let (namespace, name) = entry.experiment.split_once('/')?;
            Some((namespace.to_string(), name.to_string()))
        })
        .collect();
    experiments.sort();
    experiments.dedup();
    experiments
}

/// Writes these receipts (one per node) for the experiment, in one merge patch of the
/// ConfigMap. Fails when the ConfigMap is missing (the controller creates it with the signal),
/// when a key would be too long, or when the agent may not write it: the caller then writes
/// them to the experiment's status.
pub async fn write(
    client: &Client,
    controller_namespace: &str,
    uid: &str,
    experiment: &str,
    receipts: &[RevertReceipt],
) -> Result<(), kube::Error> {
    let mut data = serde_json::Map::new();
    for receipt in receipts {
        let Some(key) = key(uid, &receipt.node) else {
            return Err(kube::Error::Service(
                format!(
                    "node {} makes a ConfigMap key longer than {MAX_KEY} characters",
                    receipt.node
                )
                .into(),
            ));
        };
        let entry = Entry {
            experiment: experiment.to_string(),
            receipt: receipt.clone(),
        };
        let value = serde_json::to_string(&entry).map_err(kube::Error::SerdeError)?;
        data.insert(key, serde_json::Value::String(value));
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), controller_namespace);
    api.patch(
        REVERTING_CONFIGMAP,
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": data })),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(node: &str) -> RevertReceipt {
        RevertReceipt {
            node: node.into(),
            reverted_at: chrono::Utc::now(),
            injections: 3,
            failed: None,
        }
    }

    fn value(experiment: &str, node: &str) -> String {
        serde_json::to_string(&Entry {
            experiment: experiment.into(),
            receipt: receipt(node),
        })
        .unwrap()
    }

    const UID: &str = "0b6e4f0e-6c5a-4f43-9d43-3c1f5b0f9a11";
    const OTHER: &str = "0b6e4f0e-6c5a-4f43-9d43-3c1f5b0f9a12";

    #[test]
    fn a_key_names_the_experiment_and_the_node_and_reads_back() {
        let key = key(UID, "ip-10-0-0-1.ec2.internal").unwrap();
        assert_eq!(uid_of(&key), UID);
        assert!(is_receipt(&key));
        assert_eq!(uid_of(UID), UID, "a signal's key is the UID");
        assert!(!is_receipt(UID));
        assert_eq!(
            super::key(UID, &"n".repeat(253)),
            None,
            "too long for a key"
        );
        assert_eq!(super::key("", "node"), None);
    }

    #[test]
    fn the_receipts_of_one_experiment_are_its_own_readable_ones_for_the_node_their_key_names() {
        let data: BTreeMap<String, String> = [
            (UID.to_string(), "{\"experiment\":\"ns/a\"}".to_string()),
            (key(UID, "node-1").unwrap(), value("ns/a", "node-1")),
            (key(UID, "node-2").unwrap(), "not json".to_string()),
            (key(UID, "node-3").unwrap(), value("ns/a", "node-4")),
            (key(OTHER, "node-1").unwrap(), value("ns/b", "node-1")),
        ]
        .into();
        let found: Vec<String> = receipts_of(&data, UID)
            .into_iter()
            .map(|r| r.node)
            .collect();
        assert_eq!(found, vec!["node-1".to_string()]);
        assert!(receipts_of(&data, "nope").is_empty());
    }

    #[test]
    fn an_arrived_or_changed_receipt_names_its_experiment_once() {
        let before: BTreeMap<String, String> =
            [(key(UID, "node-1").unwrap(), value("ns/a", "node-1"))].into();
        let mut after = before.clone();
        assert!(arrived(&before, &after).is_empty(), "nothing new");
        after.insert(key(UID, "node-2").unwrap(), value("ns/a", "node-2"));
        after.insert(key(UID, "node-3").unwrap(), value("ns/a", "node-3"));
        after.insert(OTHER.to_string(), "{\"experiment\":\"ns/b\"}".to_string());
        assert_eq!(
            arrived(&before, &after),
            vec![("ns".to_string(), "a".to_string())],
            "two receipts of one experiment, and a signal that is no receipt"
        );
    }
}
