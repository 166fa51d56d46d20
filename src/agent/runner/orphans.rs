//! Orphans: faultline rules in this node's pods that no live injection or journal entry
//! explains (left by an agent that lost its journal), removed once the pod list is known.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};

use super::Agent;
use crate::agent::kernel::Kernel;
use crate::agent::tag::InjectionTag;
use crate::agent::writeback::tag_of;
use crate::api::FaultInjection;

impl<K: Kernel> Agent<K> {
    /// Removes faultline rules in this node's pods that no live injection or journal entry
    /// explains. Returns whether the check ran (it needs the pod list).
    pub(super) async fn clean_orphans(
        &mut self,
        client: &Client,
        nodes: &[String],
        live: &[Arc<FaultInjection>],
    ) -> bool {
        let pods: Api<Pod> = Api::all(client.clone());
        let mut uids = BTreeSet::new();
        for node in nodes {
            match pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await
            {
                Ok(list) => uids.extend(list.items.iter().filter_map(|p| p.uid())),
                Err(error) => {
                    tracing::warn!(%error, "cannot list this node's pods for orphan cleanup yet");
                    return false;
                }
            }
        }
        let backed: BTreeSet<InjectionTag> = live
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .filter_map(|i| tag_of(i))
            .chain(self.journal.heads().filter_map(|h| h.tag()))
            .collect();
        let backed_pods: BTreeSet<String> = live
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .map(|i| i.spec.target.uid.clone())
            .chain(self.journal.heads().map(|e| e.pod_uid.clone()))
            .collect();
        let kernel = self.kernel.clone();
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            for rule in kernel.owned(&uids) {
                let is_backed = match (&rule.tag, &rule.pod_uid) {
                    (Some(tag), _) => backed.contains(tag),
                    (None, Some(pod)) => backed_pods.contains(pod),
                    (None, None) => true,
                };
                if is_backed {
                    continue;
                }
                match kernel.remove_orphan(&rule) {
                    Ok(()) => removed.push(rule.description),
                    Err(error) => tracing::error!(rule = %rule.description, %error, "cannot remove an orphaned rule"),
                }
            }
            removed
        })
        .await
        .unwrap_or_default();
        for description in &removed {
            tracing::warn!(rule = %description, "removed an orphaned faultline rule (no live injection backs it)");
        }
        self.metrics.add_orphans(removed.len());
        true
    }
}
