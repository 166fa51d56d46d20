//! Applying: intent in the journal first, then per pod, pods in parallel, each pod's faults in
//! order, and what each injection's status says afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::acknowledge::Acknowledged;
use super::{Agent, PARALLEL_PODS};
use crate::agent::converge::RevertReason;
use crate::agent::deadline::Deadline;
use crate::agent::journal::JournalEntry;
use crate::agent::kernel::{Kernel, KernelError, Mechanism, QueueCounts};
use crate::agent::tag::InjectionTag;
use crate::agent::telemetry::AgentMetrics;
use crate::agent::writeback::{StatusChange, StatusWriter, key_of, tag_of};
use crate::api::{FaultInjection, InjectionPhase};
use crate::controller::applied_receipts::AppliedEntry;

/// One injection to apply.
struct ApplyJob {
    injection: Arc<FaultInjection>,
    tag: InjectionTag,
    mechanism: Mechanism,
    entry: JournalEntry,
    /// The fault was applied by an earlier run (or generation) already.
    was_applied: bool,
    /// Packet counts an earlier agent reported (zero for a new fault): the Applied write
    /// carries them, so that counting starts without a write of its own.
    counts_from: QueueCounts,
    /// The agent's finalizer is to be added before the apply (see `Agent::step`).
    add_finalizer: bool,
}

/// What a pod's task did, for the journal.
#[derive(Default)]
struct PodOutcome {
    /// Reverted (or never applied, or gone): forget.
    forget: Vec<InjectionTag>,
    /// Applied: record (with mechanism and baseline) and mark confirmed.
    applied: Vec<JournalEntry>,
    /// Packet counts the Applied writes carried, per fault.
    counts_written: Vec<(InjectionTag, QueueCounts)>,
    /// Applied, their statuses left to the step's receipt (see `acknowledge`).
    acknowledged: Vec<Acknowledged>,
}

impl<K: Kernel> Agent<K> {
    /// Applies, per pod, pods in parallel (at most [`PARALLEL_PODS`]); each pod's task first
    /// adds the finalizers of its injections in `finalize_first`. With `receipt`, what went in
    /// is said by one applied receipt per experiment and node, and the injections' statuses
    /// follow later (see `acknowledge`); without, each status is written as its fault goes in.
    pub(super) async fn apply_all(
        &mut self,
        applies: Vec<Arc<FaultInjection>>,
        finalize_first: &BTreeSet<String>,
        receipt: bool,
    ) {
        // Intent before action: every fault about to be applied is in the journal first.
        let mut intents = Vec::new();
        let mut jobs = Vec::new();
        for injection in applies {
            let Some(tag) = tag_of(&injection) else {
                continue;
            };
            let fault = injection.spec.fault.clone();
            let mechanism = match self.kernel.capabilities().mechanism_for(&fault) {
                Ok(m) => m,
                Err(why) => {
                    self.statuses
                        .write(
                            &injection,
                            StatusChange::phase(
                                InjectionPhase::Failed,
                                injection.metadata.generation,
                                why,
                            ),
                        )
                        .await;
                    continue;
                }
            };
            let previous = self.journal.get(&tag).cloned();
            if previous.is_some() && !self.confirmed.contains(&tag) {
                // Adopting what an earlier agent applied: its counts go on from what it
                // reported.
                let status = injection.status.clone().unwrap_or_default();
                self.count_base.insert(
                    tag.clone(),
                    QueueCounts {
                        matched: status.matched_packets.unwrap_or(0).max(0) as u64,
                        bypassed: status.bypassed_packets.unwrap_or(0).max(0) as u64,
                    },
                );
            }
            let entry = JournalEntry {
                tag: tag.to_string(),
                injection: key_of(&injection),
                injection_uid: injection.uid().unwrap_or_default(),
                pod_uid: injection.spec.target.uid.clone(),
                fault,
                expires_at: injection.spec.expires_at,
                generation: injection.metadata.generation,
                mechanism: previous.as_ref().and_then(|p| p.mechanism.clone()),
                baseline: previous.as_ref().and_then(|p| p.baseline.clone()),
                applied_at: previous.as_ref().and_then(|p| p.applied_at),
            };
            intents.push(entry.clone());
            jobs.push(ApplyJob {
                add_finalizer: finalize_first.contains(&entry.injection),
                counts_from: self.count_base.get(&tag).copied().unwrap_or_default(),
                injection,
                tag,
                mechanism,
                was_applied: previous.is_some_and(|p| p.mechanism.is_some()),
                entry,
            });
        }
        if !intents.is_empty()
            && let Err(error) = self.journal.record_many(intents)
        {
            let message =
                format!("cannot write the agent journal, so the fault is not applied: {error}");
            for job in jobs.drain(..) {
                self.statuses
                    .write(
                        &job.injection,
                        StatusChange::phase(
                            InjectionPhase::Failed,
                            job.injection.metadata.generation,
                            message.clone(),
                        ),
                    )
                    .await;
            }
        }
        let mut pods: BTreeMap<String, Vec<ApplyJob>> = BTreeMap::new();
        for job in jobs {
            pods.entry(job.entry.pod_uid.clone()).or_default().push(job);
        }
        if pods.is_empty() {
            return;
        }
        let names: Arc<BTreeMap<InjectionTag, String>> = Arc::new(
            self.journal
                .heads()
                .filter_map(|e| Some((e.tag()?, e.injection.clone())))
                .collect(),
        );
        let permits = Arc::new(Semaphore::new(PARALLEL_PODS));
        let mut tasks = JoinSet::new();
        for (_, jobs) in pods {
            let kernel = self.kernel.clone();
            let statuses = self.statuses.clone();
            let metrics = self.metrics.clone();
            let names = Arc::clone(&names);
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let finalizers = jobs
                    .iter()
                    .filter(|job| job.add_finalizer)
                    .map(|job| statuses.set_finalizer(&job.injection, true));
                futures::future::join_all(finalizers).await;
                apply_pod(kernel, statuses, metrics, names, jobs, receipt).await
            });
        }
        let mut acknowledged = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let outcome = match done {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::error!(%error, "a pod's task failed; its journal entries stay and are retried");
                    continue;
                }
            };
            self.forget(&outcome.forget, "a failed apply");
            self.reported.extend(outcome.counts_written);
            acknowledged.extend(outcome.acknowledged);
            let confirmed: Vec<InjectionTag> = outcome
                .applied
                .iter()
                .filter_map(JournalEntry::tag)
                .collect();
            if let Err(error) = self.journal.record_many(outcome.applied) {
                tracing::error!(%error, "cannot update the journal after applying");
            }
            self.confirmed.extend(confirmed);
        }
        let counts = self
            .acknowledgements
            .receipt(
                &self.client,
                &self.policy.controller_namespace,
                &self.statuses,
                acknowledged,
            )
            .await;
        self.reported.extend(counts);
    }
}

/// One pod's applies, in order.
async fn apply_pod<K: Kernel>(
    kernel: Arc<K>,
    statuses: StatusWriter,
    metrics: AgentMetrics,
    names: Arc<BTreeMap<InjectionTag, String>>,
    jobs: Vec<ApplyJob>,
    receipt: bool,
) -> PodOutcome {
    let mut outcome = PodOutcome::default();
    for job in jobs {
        apply_one(
            &kernel,
            &statuses,
            &metrics,
            &names,
            job,
            receipt,
            &mut outcome,
        )
        .await;
    }
    outcome
}

async fn apply_one<K: Kernel>(
    kernel: &Arc<K>,
    statuses: &StatusWriter,
    metrics: &AgentMetrics,
    names: &BTreeMap<InjectionTag, String>,
    job: ApplyJob,
    receipt: bool,
    outcome: &mut PodOutcome,
) {
    let ApplyJob {
        injection,
        tag,
        mut mechanism,
        mut entry,
        was_applied,
        counts_from,
        add_finalizer: _,
    } = job;
    let deadline = Deadline::new(entry.expires_at);
    let started = std::time::Instant::now();
    let attempt = |mechanism: Mechanism| {
        let kernel = kernel.clone();
        let pod = entry.pod_uid.clone();
        let tag = tag.clone();
        let fault = entry.fault.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                kernel.apply(&pod, &tag, &fault, mechanism, &deadline)
            })
            .await
            .unwrap_or_else(|e| Err(KernelError::Failed(format!("apply panicked: {e}"))))
        }
    };
    let mut result = attempt(mechanism).await;
    let mut note = None;
    if let Err(KernelError::Conflict { with, .. }) = &result
        && mechanism == Mechanism::Netem
        && kernel.capabilities().nfqueue
    {
        // Another experiment's netem holds the interface: queue this one in userspace
        // instead, so the two add up rather than one replacing the other.
        note = Some(format!(
            "queued in userspace because the pod's interface already carries the qdisc fault of {}; the two add up",
            names
                .get(with)
                .cloned()
                .unwrap_or_else(|| format!("injection {with}"))
        ));
        mechanism = Mechanism::Nfqueue;
        result = attempt(mechanism).await;
    }
    let generation = injection.metadata.generation;
    match result {
        Ok(applied) => {
            metrics.observe_apply(applied.mechanism.name(), started.elapsed());
            entry.mechanism = Some(applied.mechanism.name().to_string());
            if entry.baseline.is_none() {
                entry.baseline = applied.baseline.clone();
            }
            let applied_at = *entry.applied_at.get_or_insert_with(Utc::now);
            tracing::info!(injection = %key_of(&injection), %tag, mechanism = applied.mechanism.name(), "fault applied");
            outcome.applied.push(entry);
            let message = match note {
                Some(note) => format!("{} ({note})", applied.message),
                None => applied.message,
            };
            let mut change = StatusChange::phase(InjectionPhase::Applied, generation, message)
                .set("mechanism", json!(applied.mechanism.name()))
                .set("appliedAt", json!(applied_at))
                .set("revertedAt", serde_json::Value::Null)
                .set("residualRules", serde_json::Value::Null)
                .set("residual", serde_json::Value::Null);
            if applied.mechanism == Mechanism::Nfqueue {
                change = change
                    .set("matchedPackets", json!(counts_from.matched))
                    .set("bypassedPackets", json!(counts_from.bypassed));
            }
            let nfqueue = applied.mechanism == Mechanism::Nfqueue;
            if receipt {
                outcome.acknowledged.push(Acknowledged {
                    entry: AppliedEntry {
                        uid: injection.uid().unwrap_or_default(),
                        generation,
                        applied_at,
                        mechanism: applied.mechanism.name().to_string(),
                    },
                    since: statuses.known_version(&injection),
                    counts: nfqueue.then_some(counts_from),
                    tag: tag.clone(),
                    change,
                    injection,
                });
            } else if statuses.write(&injection, change).await && nfqueue {
                outcome.counts_written.push((tag.clone(), counts_from));
            }
        }
        Err(error) => {
            tracing::warn!(injection = %key_of(&injection), %tag, %error, "fault not applied");
            // Clean whatever a partial apply left (never another injection's qdisc), then
            // forget it.
            let cleaned = {
                let kernel = kernel.clone();
                let pod = entry.pod_uid.clone();
                let tag = tag.clone();
                tokio::task::spawn_blocking(move || {
                    kernel.revert(&pod, &tag, Some(mechanism), None)
                })
                .await
            };
            if matches!(cleaned, Ok(Ok(_)) | Ok(Err(KernelError::TargetGone(_)))) {
                outcome.forget.push(tag.clone());
            }
            let (phase, message) = match &error {
                KernelError::Expired(_) if was_applied => (
                    InjectionPhase::Reverted,
                    RevertReason::Expired.describe().to_string(),
                ),
                KernelError::Expired(_) => (
                    InjectionPhase::Reverted,
                    "expired before it was applied".to_string(),
                ),
                KernelError::TargetGone(m) => (
                    InjectionPhase::Failed,
                    format!(
                        "{m}: the target pod {} is gone or not on this node (a replacement pod is not followed)",
                        injection.spec.target.name
                    ),
                ),
                KernelError::Conflict { with, message } => (
                    InjectionPhase::Failed,
                    format!(
                        "not applied: {message}; the pod already carries injection {}, whose fault would be replaced. Run them one after the other, or use a scope that does not need a qdisc on the same interface",
                        names
                            .get(with)
                            .cloned()
                            .unwrap_or_else(|| format!("with tag {with}"))
                    ),
                ),
                other => (InjectionPhase::Failed, other.to_string()),
            };
            let mut change = StatusChange::phase(phase, generation, message)
                .set("mechanism", json!(mechanism.name()));
            if phase == InjectionPhase::Reverted {
                change = change.set("revertedAt", json!(Utc::now()));
            }
            statuses.write(&injection, change).await;
        }
    }
}
