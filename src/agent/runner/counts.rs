//! How much of each NFQUEUE fault was in place: packets matched and packets that bypassed the
//! queue, written to the injection's status when they change, with a condition when some
//! packets escaped the fault.

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use serde_json::json;

use super::{Agent, PARALLEL_WRITES};
use crate::agent::kernel::{Kernel, Mechanism, QueueCounts};
use crate::agent::tag::InjectionTag;
use crate::agent::writeback::{StatusChange, tag_of};
use crate::api::FaultInjection;

impl<K: Kernel> Agent<K> {
    /// Writes how much of each NFQUEUE fault was in place (packets matched, packets that
    /// bypassed the queue) when it changed. Writes only those fields.
    pub(super) async fn report_counts(&mut self, live: &[Arc<FaultInjection>]) {
        let mut wanted = Vec::new();
        for injection in live {
            let Some(tag) = tag_of(injection) else {
                continue;
            };
            // One whose Applied status is still held back gets its counts with that write.
            if !self.confirmed.contains(&tag)
                || injection.metadata.deletion_timestamp.is_some()
                || self.acknowledgements.holds(&tag)
            {
                continue;
            }
            let counted = self
                .journal
                .head(&tag)
                .and_then(|e| e.mechanism.as_deref())
                .and_then(Mechanism::parse)
                == Some(Mechanism::Nfqueue);
            if counted {
                wanted.push((tag, Arc::clone(injection)));
            }
        }
        if wanted.is_empty() {
            return;
        }
        let kernel = self.kernel.clone();
        let tags: Vec<InjectionTag> = wanted.iter().map(|(t, _)| t.clone()).collect();
        let counts: Vec<Option<QueueCounts>> = tokio::task::spawn_blocking(move || {
            tags.iter().map(|t| kernel.queue_counts(t)).collect()
        })
        .await
        .unwrap_or_default();
        let mut writes = Vec::new();
        for ((tag, injection), counts) in wanted.into_iter().zip(counts) {
            let Some(counts) = counts else { continue };
            let base = self.count_base.get(&tag).copied().unwrap_or_default();
            let total = QueueCounts {
                matched: base.matched + counts.matched,
                bypassed: base.bypassed + counts.bypassed,
            };
            self.metrics.set_bypassed(&tag, total.bypassed);
            if self.reported.get(&tag) == Some(&total) {
                continue;
            }
            self.reported.insert(tag, total);
            let statuses = self.statuses.clone();
            writes.push(async move {
                let change = counts_change(&injection, total);
                statuses.write(&injection, change).await;
            });
        }
        futures::stream::iter(writes)
            .buffer_unordered(PARALLEL_WRITES)
            .collect::<Vec<()>>()
            .await;
    }
}

/// The status fields that say how much of a queued fault was in place.
fn counts_change(injection: &FaultInjection, counts: QueueCounts) -> StatusChange {
    let mut change = StatusChange::default()
        .set("matchedPackets", json!(counts.matched))
        .set("bypassedPackets", json!(counts.bypassed));
    if counts.bypassed > 0 {
        let share = 100.0 * counts.bypassed as f64 / counts.matched.max(1) as f64;
        let since = injection
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == FULLY_APPLIED))
            .filter(|c| c.status == crate::api::ConditionStatus::False)
            .and_then(|c| c.last_transition_time)
            .unwrap_or_else(Utc::now);
        let condition = crate::api::Condition {
            type_: FULLY_APPLIED.into(),
            status: crate::api::ConditionStatus::False,
            reason: "QueueOverflow".into(),
            message: format!(
                "only partly in place: {} of {} packets ({share:.2}%) passed without the fault, because the agent's queues could not hold them at that rate",
                counts.bypassed, counts.matched
            ),
            last_transition_time: Some(since),
            observed_generation: injection.metadata.generation,
        };
        change = change.set("conditions", json!([condition]));
    }
    change
}

/// The condition that says whether every matched packet got the fault.
pub const FULLY_APPLIED: &str = "FullyApplied";
