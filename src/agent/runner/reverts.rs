//! One step's reverts: every pod's in one kernel pass, then what each injection's status
//! must say. The pass comes first and alone (the node's namespace is changed once for all of
//! them); the reports go out while the step's applies run.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::events::Recorder;
use serde_json::json;

use super::PARALLEL_WRITES;
use super::admit::notify;
use crate::agent::converge::RevertReason;
use crate::agent::kernel::{Kernel, KernelError, RevertItem};
use crate::agent::tag::InjectionTag;
use crate::agent::telemetry::AgentMetrics;
use crate::agent::writeback::{StatusChange, StatusWriter};
use crate::api::{FaultInjection, InjectionPhase};

/// One injection to revert.
pub(super) struct RevertJob {
    pub item: RevertItem,
    pub reason: RevertReason,
    pub injection: Option<Arc<FaultInjection>>,
}

/// What a revert pass leaves to say, per injection.
pub(super) enum Report {
    Reverted {
        injection: Arc<FaultInjection>,
        reason: RevertReason,
        residual: Vec<String>,
    },
    /// The kernel refused or failed; the journal keeps the entry and the next resync retries.
    Failed {
        injection: Arc<FaultInjection>,
        error: KernelError,
    },
}

/// What a revert pass did.
#[derive(Default)]
pub(super) struct Pass {
    /// Reverted (or gone with their pod): to forget in the journal.
    pub forget: Vec<InjectionTag>,
    pub reports: Vec<Report>,
    /// The injections whose faults this pass took out of the kernel, and when: what a revert
    /// receipt says (see `receipts`), also when the revert came before the receipt was due.
    pub out: Vec<(Arc<FaultInjection>, chrono::DateTime<Utc>)>,
}

/// Reverts every job, all pods in one kernel pass.
pub(super) async fn revert_pass<K: Kernel>(
    kernel: &Arc<K>,
    metrics: &AgentMetrics,
    pods: Vec<(String, Vec<RevertJob>)>,
) -> Pass {
    let mut pass = Pass::default();
    if pods.is_empty() {
        return pass;
    }
    let work: Vec<(String, Vec<RevertItem>)> = pods
        .iter()
        .map(|(pod, jobs)| (pod.clone(), jobs.iter().map(|j| j.item.clone()).collect()))
        .collect();
    let faults: usize = work.iter().map(|(_, items)| items.len()).sum();
    let started = Instant::now();
    let kernel = kernel.clone();
    let results = tokio::task::spawn_blocking(move || kernel.revert_pods(&work))
        .await
        .unwrap_or_else(|e| {
            pods.iter()
                .map(|(_, jobs)| {
                    jobs.iter()
                        .map(|_| Err(KernelError::Failed(format!("revert panicked: {e}"))))
                        .collect()
                })
                .collect()
        });
    let took = started.elapsed();
    let done_at = Utc::now();
    tracing::debug!(pods = pods.len(), faults, ?took, "revert pass");
    for ((_, jobs), results) in pods.into_iter().zip(results) {
        for (job, result) in jobs.into_iter().zip(results) {
            let tag = job.item.tag;
            let residual = match result {
                Ok(reverted) => reverted.residual,
                Err(KernelError::TargetGone(_)) => Vec::new(),
                Err(error) => {
                    tracing::error!(%tag, %error, "revert failed; retrying at the next resync");
                    if let Some(injection) = job.injection {
                        pass.reports.push(Report::Failed { injection, error });
                    }
                    continue;
                }
            };
            metrics.observe_revert(took, job.reason);
            tracing::info!(%tag, reason = ?job.reason, residual = residual.len(), "fault reverted");
            pass.forget.push(tag);
            if let Some(injection) = &job.injection {
                pass.out.push((Arc::clone(injection), done_at));
            }
            if job.reason == RevertReason::Ending && residual.is_empty() {
                // The node's revert receipt says it, for all of the experiment's faults.
                continue;
            }
            if let Some(injection) = job.injection {
                pass.reports.push(Report::Reverted {
                    injection,
                    reason: job.reason,
                    residual,
                });
            }
        }
    }
    pass
}

/// Writes what a pass did, [`PARALLEL_WRITES`] at a time.
pub(super) async fn report_all(statuses: StatusWriter, recorder: Recorder, reports: Vec<Report>) {
    futures::stream::iter(reports.into_iter().map(|report| {
        let statuses = statuses.clone();
        let recorder = recorder.clone();
        async move { report_one(&statuses, &recorder, report).await }
    }))
    .buffer_unordered(PARALLEL_WRITES)
    .collect::<Vec<()>>()
    .await;
}

async fn report_one(statuses: &StatusWriter, recorder: &Recorder, report: Report) {
    match report {
        Report::Failed { injection, error } => {
            let message = format!("revert failed, retrying: {error}");
            let change = StatusChange::phase(
                InjectionPhase::Failed,
                injection.metadata.generation,
                message,
            );
            statuses.write(&injection, change).await;
        }
        Report::Reverted {
            injection,
            reason,
            residual,
        } => {
            // The watch's copy of a deleted injection is newer than our last write.
            statuses.forget(&injection.uid().unwrap_or_default());
            report_reverted(statuses, &injection, reason, residual).await;
            if let RevertReason::Withdrawn(refusal) = reason {
                let note = format!(
                    "{} on pod {}/{}: {}",
                    refusal.withdrawn(),
                    injection.spec.target.namespace,
                    injection.spec.target.name,
                    refusal.explain(&injection)
                );
                notify(
                    recorder,
                    &injection,
                    refusal.withdrawal_reason(),
                    "Revert",
                    note,
                )
                .await;
            }
        }
    }
}

/// Writes a revert's status: Reverted, or Failed with what was left behind; then lets a
/// deleted injection go. A deleted injection reverted clean gets no status write: releasing
/// the finalizer is the confirmation (the controller counts a network fault reverted once its
/// FaultInjection is gone, and only an agent that reverted releases it), and the object is
/// gone a moment later. That halves the writes of an abort.
pub(super) async fn report_reverted(
    statuses: &StatusWriter,
    injection: &FaultInjection,
    reason: RevertReason,
    residual: Vec<String>,
) {
    let deleting = injection.metadata.deletion_timestamp.is_some();
    let clean = residual.is_empty();
    if !(deleting && clean) {
        let (phase, message) = if clean {
            (InjectionPhase::Reverted, reason.describe().to_string())
        } else {
            (
                InjectionPhase::Failed,
                format!(
                    "{}; but {} rule(s) of this injection are still there: {}",
                    reason.describe(),
                    residual.len(),
                    residual.join("; ")
                ),
            )
        };
        let count = i32::try_from(residual.len()).unwrap_or(i32::MAX);
        let change = StatusChange::phase(phase, injection.metadata.generation, message)
            .set("revertedAt", json!(Utc::now()))
            .set("residualRules", json!(count))
            .set("residual", json!(residual));
        statuses.write(injection, change).await;
    }
    if deleting {
        statuses.set_finalizer(injection, false).await;
    }
}
