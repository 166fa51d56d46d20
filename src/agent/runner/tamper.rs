//! Rules removed behind the agent's back: a person's `nft flush ruleset` in a pod, another
//! tool that rewrites the pod's tables. Every resync the agent lists the tagged nftables tables
//! of the pods whose faults it applied (one netlink listing per pod, no process); a table it
//! saw there before and no longer finds means the fault silently stopped acting while the
//! experiment says it is in. The agent applies it again (gated by the same deadline) and says
//! so with a Warning Event on the FaultInjection.
//!
//! Only tables count (partitions, NFQUEUE steering and the qdiscs' steering all have one where
//! nftables is available); a fault carried by iptables rules alone is not looked at. A table
//! must have been seen once before its absence counts, so a mechanism that makes none is never
//! taken for tampered.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::Utc;

use super::Agent;
use super::admit::notify;
use crate::agent::kernel::Kernel;
use crate::agent::tag::InjectionTag;
use crate::agent::writeback::tag_of;
use crate::api::FaultInjection;

impl<K: Kernel> Agent<K> {
    /// Looks whether the tables of the faults this agent applied are still there; a fault
    /// whose table went is marked unconfirmed, so that the next step applies it again.
    /// Returns whether any did.
    pub(super) async fn check_tampering(&mut self, live: &[Arc<FaultInjection>]) -> bool {
        let now = Utc::now();
        let expected: Vec<(InjectionTag, String)> = self
            .journal
            .heads()
            .filter(|e| e.expires_at > now)
            .filter_map(|e| Some((e.tag()?, e.pod_uid.clone())))
            .filter(|(tag, _)| self.confirmed.contains(tag))
            .collect();
        let tags: BTreeSet<&InjectionTag> = expected.iter().map(|(tag, _)| tag).collect();
        self.seen_in_kernel.retain(|tag| tags.contains(tag));
        if expected.is_empty() {
            return false;
        }
        let pods: BTreeSet<String> = expected.iter().map(|(_, pod)| pod.clone()).collect();
        let kernel = self.kernel.clone();
        let tables = tokio::task::spawn_blocking(move || kernel.tagged_tables(&pods))
            .await
            .unwrap_or_default();
        let mut tampered = Vec::new();
        for (tag, pod) in expected {
            // A pod the listing did not reach (gone, or its namespace unreadable) tells nothing.
            let Some(present) = tables.get(&pod) else {
                continue;
            };
            if present.contains(&tag) {
                self.seen_in_kernel.insert(tag);
            } else if self.seen_in_kernel.remove(&tag) {
                tampered.push((tag, pod));
            }
        }
        for (tag, pod) in &tampered {
            self.confirmed.remove(tag);
            tracing::warn!(%tag, pod, "the fault's nftables table was removed by something other than faultline; applying the fault again");
            if let Some(injection) = live.iter().find(|i| tag_of(i).as_ref() == Some(tag)) {
                let note = format!(
                    "the rules of this fault on pod {}/{} were removed by something other than faultline (its nftables table {} was gone); the agent applied them again",
                    injection.spec.target.namespace,
                    injection.spec.target.name,
                    tag.nft_table()
                );
                notify(&self.recorder, injection, "RulesRestored", "Apply", note).await;
            }
        }
        !tampered.is_empty()
    }
}
