//! The agent process: watches the FaultInjections for its node(s), converges the kernel to
//! them through a [`Kernel`], and reports in their status.
//!
//! One loop, one thing at a time: wake on a watch event, a deadline, or a periodic resync;
//! plan ([`converge::plan`]); act; repeat. Deadlines come from the journal, so they fire even
//! while the API server is unreachable; nothing else needs it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::converge::{self, Action, LiveInjection, RevertReason};
use super::journal::{Journal, JournalEntry};
use super::kernel::{Kernel, KernelError, Mechanism};
use super::tag::InjectionTag;
use super::telemetry::AgentMetrics;
use super::writeback::{self, key_of, live_injection, tag_of};
use crate::api::{FaultInjection, InjectionPhase, NODE_LABEL};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node(s) this agent serves: one in production; the sandbox runs one agent for all its
    /// simulated nodes because they share one machine.
    pub nodes: Vec<String>,
    pub journal_dir: PathBuf,
    /// How often the agent re-plans without an event (target presence, NFQUEUE counters).
    pub resync: Duration,
}

/// Runs the agent until `shutdown` resolves. Faults stay in place on shutdown (a restarted
/// agent picks them up from the journal; deadlines still hold): stopping the agent must not
/// end experiments early, and its deadlines make sure it cannot make them last longer.
pub async fn run<K: Kernel>(
    client: Client,
    kernel: Arc<K>,
    config: AgentConfig,
    metrics: AgentMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let journal = Journal::open(&config.journal_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot open the agent journal in {}: {e} (the agent needs a writable directory there: a hostPath in production)",
            config.journal_dir.display()
        )
    })?;
    let mut agent = Agent {
        client: client.clone(),
        api: Api::all(client.clone()),
        kernel,
        journal,
        confirmed: BTreeSet::new(),
        reported_bypass: BTreeMap::new(),
        metrics,
    };
    tracing::info!(
        nodes = ?config.nodes,
        journal_entries = agent.journal.len(),
        capabilities = %agent.kernel.capabilities().annotation(),
        "agent starting"
    );
    // Deadlines first, before anything that needs the API server.
    agent.step(None).await;

    tokio::spawn(writeback::publish_capabilities(
        client.clone(),
        config.nodes.clone(),
        agent.kernel.capabilities().annotation(),
    ));

    let selector = format!("{NODE_LABEL} in ({})", config.nodes.join(","));
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let (healthy_tx, healthy) = watch::channel(false);
    tokio::spawn(watch_injections(
        agent.api.clone(),
        selector,
        writer,
        changed.clone(),
        healthy_tx,
    ));

    let mut orphans_checked = false;
    tokio::pin!(shutdown);
    loop {
        let api_healthy = *healthy.borrow();
        let live = if api_healthy && store.wait_until_ready().await.is_ok() {
            Some(store.state())
        } else {
            None
        };
        if let (Some(live), false) = (&live, orphans_checked) {
            orphans_checked = agent.clean_orphans(&client, &config.nodes, live).await;
        }
        let next_deadline = agent.step(live.as_deref()).await;
        let sleep = next_deadline
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .map_or(config.resync, |until| until.min(config.resync));
        tokio::select! {
            _ = &mut shutdown => break,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
    tracing::info!(
        journal_entries = agent.journal.len(),
        "agent stopping; applied faults stay until their injections end or expire"
    );
    Ok(())
}

async fn watch_injections(
    api: Api<FaultInjection>,
    selector: String,
    writer: reflector::store::Writer<FaultInjection>,
    changed: Arc<Notify>,
    healthy: watch::Sender<bool>,
) {
    let stream = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {
                healthy.send_replace(true);
            }
            Err(error) => {
                if *healthy.borrow() {
                    tracing::warn!(%error, "lost the API server; deadlines still revert faults");
                }
                healthy.send_replace(false);
            }
        }
        changed.notify_one();
    }
}

/// Writes the node's capabilities where the controller reads them, retrying until it works.
struct Agent<K> {
    client: Client,
    api: Api<FaultInjection>,
    kernel: Arc<K>,
    journal: Journal,
    /// Tags (re)applied by this process: journal entries from a previous run are re-applied
    /// once so the kernel holds exactly what the injections say (and NFQUEUE workers run).
    confirmed: BTreeSet<InjectionTag>,
    reported_bypass: BTreeMap<InjectionTag, u64>,
    metrics: AgentMetrics,
}

impl<K: Kernel> Agent<K> {
    /// Plans and acts once; returns the next deadline.
    async fn step(
        &mut self,
        live: Option<&[Arc<FaultInjection>]>,
    ) -> Option<chrono::DateTime<Utc>> {
        let now = Utc::now();
        let live_view: Option<Vec<LiveInjection>> =
            live.map(|l| l.iter().filter_map(|i| live_injection(i)).collect());
        let applied: Vec<converge::Applied> = self
            .journal
            .entries()
            .filter_map(|e| {
                let tag = e.tag()?;
                Some(converge::Applied {
                    confirmed: self.confirmed.contains(&tag),
                    tag,
                    pod_uid: e.pod_uid.clone(),
                    expires_at: e.expires_at,
                    generation: e.generation,
                })
            })
            .collect();
        let gone = self.gone_pods(&applied, live_view.as_deref()).await;
        let plan = converge::plan(now, live_view.as_deref(), &applied, &gone);
        let by_key: BTreeMap<String, &Arc<FaultInjection>> = live
            .unwrap_or_default()
            .iter()
            .map(|i| (key_of(i), i))
            .collect();
        for action in plan.actions {
            match action {
                Action::Revert { tag, reason } => {
                    let injection = live
                        .unwrap_or_default()
                        .iter()
                        .find(|i| tag_of(i).as_ref() == Some(&tag))
                        .cloned();
                    self.revert(&tag, reason, injection.as_deref()).await;
                }
                Action::AddFinalizer { key } => {
                    if let Some(injection) = by_key.get(&key) {
                        writeback::set_finalizer(&self.client, injection, true).await;
                    }
                }
                Action::Apply { key } => {
                    if let Some(injection) = by_key.get(&key) {
                        self.apply(injection).await;
                    }
                }
                Action::ReportNotApplied { key, reason } => {
                    if let Some(injection) = by_key.get(&key) {
                        let phase = match reason {
                            RevertReason::Expired => InjectionPhase::Reverted,
                            _ => InjectionPhase::Failed,
                        };
                        let message = match reason {
                            RevertReason::Expired => "expired before it was applied".to_string(),
                            _ => format!(
                                "target pod {} ({}) is not running on this node: {}",
                                injection.spec.target.name,
                                injection.spec.target.uid,
                                reason.describe()
                            ),
                        };
                        writeback::write_status(&self.client, injection, phase, message, |_| {})
                            .await;
                    }
                }
                Action::RemoveFinalizer { key } => {
                    if let Some(injection) = by_key.get(&key) {
                        writeback::set_finalizer(&self.client, injection, false).await;
                    }
                }
            }
        }
        if let Some(live) = live {
            self.report_bypass(live).await;
        }
        self.metrics.set_active(self.journal.len());
        plan.next_deadline
    }

    async fn gone_pods(
        &self,
        applied: &[converge::Applied],
        live: Option<&[LiveInjection]>,
    ) -> BTreeSet<String> {
        let mut uids: BTreeSet<String> = applied.iter().map(|a| a.pod_uid.clone()).collect();
        uids.extend(
            live.unwrap_or_default()
                .iter()
                .filter(|i| !i.deleting && self.journal.get(&i.tag).is_none())
                .map(|i| i.pod_uid.clone()),
        );
        if uids.is_empty() {
            return uids;
        }
        let kernel = self.kernel.clone();
        tokio::task::spawn_blocking(move || kernel.absent_pods(&uids))
            .await
            .unwrap_or_default()
    }

    async fn apply(&mut self, injection: &FaultInjection) {
        let Some(tag) = tag_of(injection) else { return };
        let fault = injection.spec.fault.clone();
        let mechanism = match self.kernel.capabilities().mechanism_for(&fault) {
            Ok(m) => m,
            Err(why) => {
                writeback::write_status(
                    &self.client,
                    injection,
                    InjectionPhase::Failed,
                    why,
                    |_| {},
                )
                .await;
                return;
            }
        };
        let previous = self.journal.get(&tag).cloned();
        let mut entry = JournalEntry {
            tag: tag.to_string(),
            injection: key_of(injection),
            injection_uid: injection.uid().unwrap_or_default(),
            pod_uid: injection.spec.target.uid.clone(),
            fault: fault.clone(),
            expires_at: injection.spec.expires_at,
            generation: injection.metadata.generation,
            mechanism: previous.as_ref().and_then(|p| p.mechanism.clone()),
            baseline: previous.as_ref().and_then(|p| p.baseline.clone()),
            applied_at: previous.as_ref().and_then(|p| p.applied_at),
        };
        // Intent before action: a crash in the middle still leaves a record to revert.
        if let Err(error) = self.journal.record(entry.clone()) {
            let message =
                format!("cannot write the agent journal, so the fault is not applied: {error}");
            writeback::write_status(
                &self.client,
                injection,
                InjectionPhase::Failed,
                message,
                |_| {},
            )
            .await;
            return;
        }
        let kernel = self.kernel.clone();
        let pod_uid = entry.pod_uid.clone();
        let tag_for_apply = tag.clone();
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            kernel.apply(&pod_uid, &tag_for_apply, &fault, mechanism)
        })
        .await
        .unwrap_or_else(|e| Err(KernelError::Failed(format!("apply panicked: {e}"))));
        match result {
            Ok(applied) => {
                self.metrics
                    .observe_apply(applied.mechanism.name(), started.elapsed());
                entry.mechanism = Some(applied.mechanism.name().to_string());
                if entry.baseline.is_none() {
                    entry.baseline = applied.baseline.clone();
                }
                let applied_at = *entry.applied_at.get_or_insert_with(Utc::now);
                if let Err(error) = self.journal.record(entry) {
                    tracing::error!(%error, %tag, "cannot update the journal after applying");
                }
                self.confirmed.insert(tag.clone());
                tracing::info!(injection = %key_of(injection), %tag, mechanism = applied.mechanism.name(), "fault applied");
                let mechanism = applied.mechanism.name().to_string();
                writeback::write_status(
                    &self.client,
                    injection,
                    InjectionPhase::Applied,
                    applied.message,
                    |s| {
                        s.mechanism = Some(mechanism);
                        s.applied_at = Some(applied_at);
                        s.reverted_at = None;
                        s.residual_rules = None;
                        s.residual.clear();
                    },
                )
                .await;
            }
            Err(error) => {
                tracing::warn!(injection = %key_of(injection), %tag, %error, "fault not applied");
                // Clean whatever a partial apply left, then forget it.
                let kernel = self.kernel.clone();
                let pod_uid = injection.spec.target.uid.clone();
                let tag_for_revert = tag.clone();
                let cleaned = tokio::task::spawn_blocking(move || {
                    kernel.revert(&pod_uid, &tag_for_revert, Some(mechanism), None)
                })
                .await;
                if matches!(cleaned, Ok(Ok(_)) | Ok(Err(KernelError::TargetGone(_)))) {
                    let _ = self.journal.forget(&tag);
                    self.confirmed.remove(&tag);
                }
                let message = match &error {
                    KernelError::TargetGone(m) => format!(
                        "{m}: the target pod {} is gone or not on this node (a replacement pod is not followed)",
                        injection.spec.target.name
                    ),
                    other => other.to_string(),
                };
                writeback::write_status(
                    &self.client,
                    injection,
                    InjectionPhase::Failed,
                    message,
                    |s| {
                        s.mechanism = Some(mechanism.name().to_string());
                    },
                )
                .await;
            }
        }
    }

    async fn revert(
        &mut self,
        tag: &InjectionTag,
        reason: RevertReason,
        injection: Option<&FaultInjection>,
    ) {
        let Some(entry) = self.journal.get(tag).cloned() else {
            return;
        };
        let kernel = self.kernel.clone();
        let tag_owned = tag.clone();
        let mechanism = entry.mechanism.as_deref().and_then(Mechanism::parse);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            kernel.revert(
                &entry.pod_uid,
                &tag_owned,
                mechanism,
                entry.baseline.as_deref(),
            )
        })
        .await
        .unwrap_or_else(|e| Err(KernelError::Failed(format!("revert panicked: {e}"))));
        let residual = match result {
            Ok(reverted) => reverted.residual,
            Err(KernelError::TargetGone(_)) => Vec::new(),
            Err(error) => {
                tracing::error!(%tag, %error, "revert failed; retrying at the next resync");
                if let Some(injection) = injection {
                    let message = format!("revert failed, retrying: {error}");
                    writeback::write_status(
                        &self.client,
                        injection,
                        InjectionPhase::Failed,
                        message,
                        |_| {},
                    )
                    .await;
                }
                return;
            }
        };
        self.metrics.observe_revert(started.elapsed(), reason);
        if let Err(error) = self.journal.forget(tag) {
            tracing::error!(%tag, %error, "cannot update the journal after reverting");
        }
        self.confirmed.remove(tag);
        self.reported_bypass.remove(tag);
        tracing::info!(%tag, ?reason, residual = residual.len(), "fault reverted");
        let Some(injection) = injection else { return };
        let clean = residual.is_empty();
        let (phase, message) = if clean {
            (InjectionPhase::Reverted, reason.describe().to_string())
        } else {
            (
                InjectionPhase::Failed,
                format!(
                    "{}; but {} rule(s) differ from before the fault: {}",
                    reason.describe(),
                    residual.len(),
                    residual.join("; ")
                ),
            )
        };
        let count = i32::try_from(residual.len()).unwrap_or(i32::MAX);
        writeback::write_status(&self.client, injection, phase, message, |s| {
            s.reverted_at = Some(Utc::now());
            s.residual_rules = Some(count);
            s.residual = residual;
        })
        .await;
        if injection.metadata.deletion_timestamp.is_some() {
            writeback::set_finalizer(&self.client, injection, false).await;
        }
    }

    /// Removes faultline rules in this node's pods that no live injection or journal entry
    /// explains. Returns whether the check ran (it needs the pod list).
    async fn clean_orphans(
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
            .chain(self.journal.entries().filter_map(JournalEntry::tag))
            .collect();
        let backed_pods: BTreeSet<String> = live
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
            .map(|i| i.spec.target.uid.clone())
            .chain(self.journal.entries().map(|e| e.pod_uid.clone()))
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

    async fn report_bypass(&mut self, live: &[Arc<FaultInjection>]) {
        for injection in live {
            let Some(tag) = tag_of(injection) else {
                continue;
            };
            if !self.confirmed.contains(&tag) || injection.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(bypassed) = self.kernel.bypassed_packets(&tag) else {
                continue;
            };
            self.metrics.set_bypassed(&tag, bypassed);
            if self.reported_bypass.get(&tag) == Some(&bypassed) {
                continue;
            }
            let status = injection.status.clone().unwrap_or_default();
            let patch = json!({"status": {"bypassedPackets": bypassed, "phase": status.phase}});
            if writeback::api_for(&self.client, injection)
                .patch_status(
                    &injection.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .is_ok()
            {
                self.reported_bypass.insert(tag, bypassed);
            }
        }
    }
}
