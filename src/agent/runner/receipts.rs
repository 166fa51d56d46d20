//! Revert receipts: once an experiment is reverting (named by the revert signal, or labelled
//! `faultline.dev/reverting`), the agent takes all of its faults on each node out in one pass
//! and says so with one receipt per node, instead of one write per FaultInjection: a key of
//! the signal's ConfigMap (see `controller::signal_receipts`: milliseconds, where a write of a
//! large experiment takes a tenth of a second), or, when that write fails (an older chart
//! without the permission, say), an entry in the experiment's `status.revertReceipts`.
//!
//! A receipt for a node is written once none of the experiment's injections there is left in
//! the journal (a revert the kernel refused keeps its entry, and the receipt waits for the
//! retry), and it covers the injections the agent never applied too: it applies nothing of a
//! reverting experiment. Rules a revert left behind go in the receipt as its failure.
//!
//! In status, written by server-side apply under a field manager of this agent's own, with
//! every entry this agent owns for the experiment each time (an entry left out of an apply
//! would be removed by the server), so agents on other nodes never touch each other's entries.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::PARALLEL_WRITES;
use crate::agent::facts::Snapshot;
use crate::agent::journal::Journal;
use crate::agent::writeback::tag_of;
use crate::api::{
    AGENT_FIELD_MANAGER, ChaosExperiment, FaultInjection, GROUP_VERSION, RevertReceipt,
};
use crate::controller::signal_receipts;

/// An experiment as the receipts name it: its namespace (the injections'), name and UID (the
/// signal's ConfigMap keys receipts by it; an injection that does not carry it gets its
/// receipt in status).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ExperimentKey {
    namespace: String,
    name: String,
    uid: Option<String>,
}

/// What this agent wrote, and what is left to say.
#[derive(Default)]
pub(super) struct Receipts {
    /// Entries this agent applied, per experiment (each apply carries all of them).
    written: BTreeMap<ExperimentKey, BTreeMap<String, RevertReceipt>>,
    /// Rules reverts left behind, per experiment and node, for the receipt to name.
    residue: BTreeMap<(ExperimentKey, String), Vec<String>>,
    /// When the last fault of an experiment on a node left the kernel: a receipt says that
    /// time, not its own (a fault the agent ended at its deadline while the API server was
    /// out of reach was out long before the receipt could be written).
    last_out: BTreeMap<(ExperimentKey, String), DateTime<Utc>>,
    /// A write that failed waits this long before the next try.
    failed_at: BTreeMap<ExperimentKey, Instant>,
}

/// How long a failed receipt write waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);

fn experiment_of(injection: &FaultInjection) -> ExperimentKey {
    ExperimentKey {
        namespace: injection.namespace().unwrap_or_default(),
        name: injection.spec.experiment.name.clone(),
        uid: injection.spec.experiment.uid.clone(),
    }
}

impl Receipts {
    /// Notes rules a revert of `injection` left behind.
    pub fn note_residue(&mut self, injection: &FaultInjection, residual: &[String]) {
        if residual.is_empty() {
            return;
        }
        let target = &injection.spec.target;
        self.residue
            .entry((experiment_of(injection), injection.spec.node_name.clone()))
            .or_default()
            .push(format!(
                "pod {}/{}: {} rule(s) left: {}",
                target.namespace,
                target.name,
                residual.len(),
                residual.join("; ")
            ));
    }

    /// Notes that `injection`'s fault left the kernel at `at`.
    pub fn note_out(&mut self, injection: &FaultInjection, at: DateTime<Utc>) {
        let key = (experiment_of(injection), injection.spec.node_name.clone());
        let last = self.last_out.entry(key).or_insert(at);
        *last = (*last).max(at);
    }

    /// Writes the receipts that are due: for each reverting experiment, each of `nodes` with
    /// an injection of it and none of them left in the journal.
    pub async fn write_due(
        &mut self,
        client: &Client,
        controller_namespace: &str,
        nodes: &[String],
        live: &[std::sync::Arc<FaultInjection>],
        facts: &Snapshot,
        journal: &Journal,
    ) {
        let mut due: BTreeMap<ExperimentKey, BTreeMap<String, (i32, bool)>> = BTreeMap::new();
        let mut present = std::collections::BTreeSet::new();
        for injection in live {
            let node = &injection.spec.node_name;
            if !nodes.contains(node) {
                continue;
            }
            present.insert(experiment_of(injection));
            if !facts.is_ending(injection) {
                continue;
            }
            let held = tag_of(injection).is_some_and(|tag| journal.head(&tag).is_some());
            let (count, any_held) = due
                .entry(experiment_of(injection))
                .or_default()
                .entry(node.clone())
                .or_default();
            *count += 1;
            *any_held |= held;
        }
        // Experiments no longer reverting (gone, or finished and cleaned up) are forgotten;
        // what reverts noted is kept while the experiment has injections here, since a fault
        // can leave (its deadline, its pod gone) before the experiment reverts.
        self.written.retain(|key, _| due.contains_key(key));
        self.failed_at.retain(|key, _| due.contains_key(key));
        self.residue.retain(|(key, _), _| present.contains(key));
        self.last_out.retain(|(key, _), _| present.contains(key));

        let now = Utc::now();
        let mut writes = Vec::new();
        for (key, per_node) in due {
            if self
                .failed_at
                .get(&key)
                .is_some_and(|at| at.elapsed() < RETRY_AFTER)
            {
                continue;
            }
            let written = self.written.entry(key.clone()).or_default();
            let mut changed = false;
            for (node, (count, any_held)) in per_node {
                if any_held || written.contains_key(&node) {
                    continue;
                }
                let failed = self
                    .residue
                    .get(&(key.clone(), node.clone()))
                    .map(|lines| lines.join("; "));
                // Faults this agent took out: the last one's time; none (never applied here,
                // or taken out by an earlier agent): now, when it is sure none is in.
                let reverted_at = self
                    .last_out
                    .get(&(key.clone(), node.clone()))
                    .copied()
                    .unwrap_or(now)
                    .min(now);
                written.insert(
                    node.clone(),
                    RevertReceipt {
                        node,
                        reverted_at,
                        injections: count,
                        failed,
                    },
                );
                changed = true;
            }
            if changed {
                writes.push((key, written.values().cloned().collect::<Vec<_>>()));
            }
        }
        if writes.is_empty() {
            return;
        }
        let manager = field_manager(nodes);
        let results: Vec<(ExperimentKey, Vec<String>, Result<(), kube::Error>)> =
            futures::stream::iter(writes.into_iter().map(|(key, entries)| {
                let client = client.clone();
                let manager = manager.clone();
                async move {
                    let nodes = entries.iter().map(|e| e.node.clone()).collect();
                    let started = Instant::now();
                    let result =
                        deliver(&client, controller_namespace, &manager, &key, entries).await;
                    tracing::debug!(
                        took_ms = started.elapsed().as_millis() as u64,
                        place = result.as_ref().ok().copied(),
                        "receipt write"
                    );
                    (key, nodes, result.map(drop))
                }
            }))
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        for (key, nodes, result) in results {
            match result {
                Ok(()) => {
                    tracing::info!(experiment = %format!("{}/{}", key.namespace, key.name), ?nodes, "revert receipt written");
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    // The experiment is gone; its injections go with it.
                }
                Err(error) => {
                    tracing::warn!(experiment = %format!("{}/{}", key.namespace, key.name), %error, "cannot write the revert receipt; the FaultInjections' deletion confirms instead, and the receipt is tried again");
                    if let Some(written) = self.written.get_mut(&key) {
                        written.retain(|node, _| !nodes.contains(node));
                    }
                    self.failed_at.insert(key, Instant::now());
                }
            }
        }
    }
}

/// This agent's field manager: one per agent, named after its (first) node.
fn field_manager(nodes: &[String]) -> String {
    let mut manager = format!(
        "{AGENT_FIELD_MANAGER}-{}",
        nodes.first().map(String::as_str).unwrap_or("node")
    );
    // The API server refuses managers longer than 128 characters.
    manager.truncate(128);
    manager
}

/// Into the signal's ConfigMap, or (when that fails) the experiment's status; says which.
async fn deliver(
    client: &Client,
    controller_namespace: &str,
    manager: &str,
    key: &ExperimentKey,
    entries: Vec<RevertReceipt>,
) -> Result<&'static str, kube::Error> {
    if let Some(uid) = &key.uid {
        let experiment = format!("{}/{}", key.namespace, key.name);
        match signal_receipts::write(client, controller_namespace, uid, &experiment, &entries).await
        {
            Ok(()) => return Ok("signal"),
            Err(error) => {
                tracing::debug!(%experiment, %error, "cannot leave the receipt beside the revert signal; writing it to the experiment's status");
            }
        }
    }
    apply(client, manager, key, entries)
        .await
        .map(|()| "status")
}

async fn apply(
    client: &Client,
    manager: &str,
    key: &ExperimentKey,
    entries: Vec<RevertReceipt>,
) -> Result<(), kube::Error> {
    let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), &key.namespace);
    let body = json!({
        "apiVersion": GROUP_VERSION,
        "kind": "ChaosExperiment",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": {"revertReceipts": entries},
    });
    api.patch_status(
        &key.name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(body),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_manager_is_the_agents_own_and_never_too_long() {
        assert_eq!(field_manager(&["node-1".into()]), "faultline-agent-node-1");
        assert_eq!(field_manager(&["n".repeat(253)]).len(), 128);
    }
}
