//! The agent process: watches the FaultInjections for its node(s), converges the kernel to
//! them through a [`Kernel`], and reports in their status.
//!
//! One loop: wake on a watch event, a deadline, or a periodic resync; plan
//! ([`converge::plan`]); act; repeat. Deadlines come from the journal, so they fire even while
//! the API server is unreachable; and the kernel enforces each deadline itself (see
//! [`super::deadline`]), so they hold even while no agent runs.
//!
//! Before acting, every live injection gets a verdict ([`admission`]): from the watch caches
//! ([`super::facts`]: the node's pods, namespaces, the pause switch) for all of them, and, for
//! those about to be applied, from a read of the experiment behind each (one read per
//! experiment). A refused one is never applied; a refused one that is applied (consent
//! withdrawn, chaos paused) is reverted like any other.
//!
//! Acting, in order:
//! 1. finalizers and the statuses of what will not be applied (refusals with a Warning Event);
//! 2. entries of pods that are gone (stale entries, possibly many after a long absence): one
//!    sweep of the node's namespace and one journal write for all of them;
//! 3. the reverts, every pod's in one kernel pass (the node's namespace changed once for all
//!    of them), then the applies, per pod, pods in parallel (at most [`PARALLEL_PODS`] at
//!    once); the reverts' statuses are written in the background, so that the next step
//!    (the next deletions of an abort) does not wait for the API server to take them. What
//!    is about to be applied is in the journal (one write) before any of it starts.
//!
//! The steps live beside this file: `admit` (consent, the second look, refusals and
//! finalizers), `gone` (pods that are gone), `reverts` and `receipts` (the revert pass and what
//! it reports), `apply`, `counts` (NFQUEUE packet counts) and `orphans`.
//!
//! On SIGTERM the agent stops and leaves the faults in place: a rolling update must not end
//! experiments early, and the next agent adopts them from the journal and the kernel (it
//! re-applies each once, with the time left). If no agent comes back (an uninstall), every
//! fault still ends at its deadline, by the kernel; see the README's safety model.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::api::ListParams;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use super::admission::Policy;
use super::converge::{self, Action, LiveInjection, RevertReason};
use super::facts::{FactWatches, Snapshot};
use super::journal::Journal;
use super::kernel::{Kernel, Mechanism, QueueCounts, RevertItem};
use super::tag::InjectionTag;
use super::telemetry::AgentMetrics;
use super::writeback::{self, StatusChange, StatusWriter, key_of, live_injection, tag_of};
use crate::api::{FaultInjection, InjectionPhase, NODE_LABEL};

mod acknowledge;
mod admit;
mod apply;
mod counts;
mod gone;
mod orphans;
mod receipts;
mod reverts;
mod tamper;
use acknowledge::Acknowledgements;
use gone::PodScan;
use receipts::Receipts;
use reverts::{Report, RevertJob};

/// How long a node's applies must be quiet before the injections' own `Applied` statuses,
/// held back behind the applied receipt, are written.
pub use acknowledge::QUIET as HELD_STATUSES_QUIET;
pub use counts::FULLY_APPLIED;

/// How many pods the agent applies faults to at once (reverts go in one pass).
pub const PARALLEL_PODS: usize = 32;
/// How many status writes go out at once.
const PARALLEL_WRITES: usize = 32;
/// Steps whose revert reports may still be in flight while a later step runs.
const REPORTS_IN_FLIGHT: usize = 4;
/// Entries of gone pods drained per step (a backlog takes several steps, one after another).
const DRAIN_CHUNK: usize = 20_000;

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The node(s) this agent serves: one in production; the sandbox runs one agent for all its
    /// simulated nodes because they share one machine.
    pub nodes: Vec<String>,
    pub journal_dir: PathBuf,
    /// How often the agent re-plans without an event (target presence, NFQUEUE counters).
    pub resync: Duration,
    /// The safety settings it checks each work item against (the controller's own).
    pub policy: Policy,
}

/// Runs the agent until `shutdown` resolves. Faults stay in place on shutdown (a restarted
/// agent picks them up from the journal; deadlines still hold): stopping the agent must not
/// end experiments early, and its deadlines make sure it cannot make them last longer.
///
/// Without a usable journal the agent is not ready (`/readyz` and the node's capability
/// annotation say why), refuses the injections for its nodes with that reason, and tries the
/// journal again every resync.
pub async fn run<K: Kernel>(
    client: Client,
    kernel: Arc<K>,
    config: AgentConfig,
    metrics: AgentMetrics,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let statuses = StatusWriter::new(client.clone());
    let mut publisher: Option<tokio::task::JoinHandle<()>> = None;
    let mut publish = |value: String| {
        if let Some(previous) = publisher.take() {
            previous.abort();
        }
        publisher = Some(tokio::spawn(writeback::publish_capabilities(
            client.clone(),
            config.nodes.clone(),
            value,
        )));
    };
    let mut refused_for: Option<String> = None;
    let journal = loop {
        match Journal::open(&config.journal_dir) {
            Ok(journal) => break journal,
            Err(error) => {
                let reason = format!(
                    "{error} (the agent needs a writable directory there: a hostPath in production)"
                );
                if refused_for.as_deref() != Some(&reason) {
                    tracing::error!(%reason, "the node agent cannot record faults; it is not ready and applies nothing");
                    metrics.set_not_ready(reason.clone());
                    publish(format!("none (agent not ready: {reason})"));
                    refused_for = Some(reason.clone());
                }
                refuse_injections(&statuses, &config.nodes, &reason).await;
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(config.resync) => {}
                }
            }
        }
    };
    let opened = journal.opened().clone();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "faultline-agent".into(),
            instance: Some(config.nodes.join(",")),
        },
    );
    let mut agent = Agent {
        kernel,
        journal,
        client: client.clone(),
        nodes: config.nodes.clone(),
        policy: config.policy.clone(),
        recorder,
        confirmed: BTreeSet::new(),
        reported: BTreeMap::new(),
        count_base: BTreeMap::new(),
        metrics: metrics.clone(),
        statuses,
        counts_every: config.resync,
        counted_at: None,
        last_scan: None,
        reporting: JoinSet::new(),
        receipts: Receipts::default(),
        acknowledgements: Acknowledgements::default(),
        seen_in_kernel: BTreeSet::new(),
    };
    tracing::info!(
        nodes = ?config.nodes,
        journal_entries = agent.journal.len(),
        journal_lines = opened.lines,
        kept_aside = ?opened.kept_aside,
        capabilities = %agent.kernel.capabilities().annotation(),
        "agent starting"
    );
    // Deadlines first, before anything that needs the API server.
    let started = std::time::Instant::now();
    agent.step(None, None).await;
    tracing::info!(took = ?started.elapsed(), journal_entries = agent.journal.len(), "journal replayed and drained");
    metrics.set_ready();
    publish(agent.kernel.capabilities().annotation());

    let selector = format!("{NODE_LABEL} in ({})", config.nodes.join(","));
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let (healthy_tx, healthy) = watch::channel(false);
    tokio::spawn(watch_injections(
        Api::all(client.clone()),
        selector,
        writer,
        agent.statuses.clone(),
        changed.clone(),
        healthy_tx,
    ));
    // What consent is checked against: the node's pods, namespaces, the pause switch.
    let facts = FactWatches::start(
        &client,
        &config.nodes,
        &config.policy.controller_namespace,
        changed.clone(),
    );

    let mut orphans_checked = false;
    loop {
        let api_healthy = *healthy.borrow();
        let live = if api_healthy && store.wait_until_ready().await.is_ok() {
            // Injections for our nodes without the node label are not ours to apply, but they
            // are never ignored silently: they join the live set and are refused.
            let mut live = store.state();
            live.extend(facts.unlabelled(&config.nodes));
            Some(live)
        } else {
            None
        };
        // Until every consent watch has listed, nothing new is applied (and nothing reverted
        // for want of consent).
        let snapshot = facts.ready().then(|| facts.snapshot());
        if let (Some(live), false) = (&live, orphans_checked) {
            orphans_checked = agent.clean_orphans(&client, &config.nodes, live).await;
        }
        let stepping = std::time::Instant::now();
        let next_deadline = agent.step(live.as_deref(), snapshot.as_ref()).await;
        tracing::debug!(took_ms = stepping.elapsed().as_millis() as u64, "stepped");
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
        "agent stopping; applied faults stay until their injections end or expire (the kernel ends each at its deadline)"
    );
    Ok(())
}

/// Marks the injections for `nodes` that are waiting for this agent as Failed with `reason`.
async fn refuse_injections(statuses: &StatusWriter, nodes: &[String], reason: &str) {
    let api: Api<FaultInjection> = Api::all(statuses.client().clone());
    let selector = format!("{NODE_LABEL} in ({})", nodes.join(","));
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
        return;
    };
    for injection in list.items {
        let status = injection.status.clone().unwrap_or_default();
        let waiting = injection.metadata.deletion_timestamp.is_none()
            && (status.phase == InjectionPhase::Pending
                || status.observed_generation != injection.metadata.generation)
            && !(status.phase == InjectionPhase::Failed
                && status
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains(reason)));
        if waiting {
            let message = format!(
                "the node agent cannot record faults, so it applies none: {reason}. Fix the agent's journal directory; the agent retries by itself"
            );
            statuses
                .write(
                    &injection,
                    StatusChange::phase(
                        InjectionPhase::Failed,
                        injection.metadata.generation,
                        message,
                    ),
                )
                .await;
        }
    }
}

/// Keeps `writer`'s store of the node's injections and wakes the agent on each change, but for
/// the echoes of the agent's own writes: the store has them for the next step, and a step for
/// each (500 at 500 targets, when the held `Applied` statuses go out, each a plan over every
/// injection of the node) only kept a core busy while an abort might be on its way.
async fn watch_injections(
    api: Api<FaultInjection>,
    selector: String,
    writer: reflector::store::Writer<FaultInjection>,
    statuses: StatusWriter,
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
            Ok(watcher::Event::Apply(injection)) if statuses.is_own_write(&injection) => {
                healthy.send_replace(true);
                continue;
            }
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

struct Agent<K> {
    kernel: Arc<K>,
    journal: Journal,
    client: Client,
    nodes: Vec<String>,
    policy: Policy,
    recorder: Recorder,
    /// Tags (re)applied by this process: journal entries from a previous run are re-applied
    /// once so the kernel holds exactly what the injections say (and NFQUEUE workers run).
    confirmed: BTreeSet<InjectionTag>,
    /// Packet counts last written to each injection's status.
    reported: BTreeMap<InjectionTag, QueueCounts>,
    /// Counts an earlier agent reported, added to ours (the kernel's counting restarts with
    /// each agent).
    count_base: BTreeMap<InjectionTag, QueueCounts>,
    metrics: AgentMetrics,
    statuses: StatusWriter,
    /// Packet counts are read at most this often (the resync): reading them costs a listing
    /// per injection in the node's namespace, and a burst of events (hundreds of injections
    /// created or deleted) makes hundreds of steps.
    counts_every: std::time::Duration,
    counted_at: Option<std::time::Instant>,
    last_scan: Option<PodScan>,
    /// Revert reports being written (see [`REPORTS_IN_FLIGHT`]).
    reporting: JoinSet<()>,
    receipts: Receipts,
    /// Applied receipts written, and the injections' statuses held back meanwhile.
    acknowledgements: Acknowledgements,
    /// Faults whose nftables table the tamper check found in the kernel (see `tamper`).
    seen_in_kernel: BTreeSet<InjectionTag>,
}

impl<K: Kernel> Agent<K> {
    /// Plans and acts once; returns the next deadline. `facts` is `None` until the consent
    /// watches have listed.
    async fn step(
        &mut self,
        live: Option<&[Arc<FaultInjection>]>,
        facts: Option<&Snapshot>,
    ) -> Option<DateTime<Utc>> {
        let now = Utc::now();
        let mut live_view: Option<Vec<LiveInjection>> = live.map(|l| {
            l.iter()
                .filter_map(|i| {
                    let ending = facts.is_some_and(|f| f.is_ending(i));
                    live_injection(i, self.consent(i, facts), ending)
                })
                .collect()
        });
        let applied: Vec<converge::Applied> = self
            .journal
            .heads()
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
        let t0 = std::time::Instant::now();
        let gone = self.gone_pods(&applied, live_view.as_deref()).await;
        let t1 = std::time::Instant::now();
        let mut plan = converge::plan(now, live_view.as_deref(), &applied, &gone);
        if let (Some(view), Some(live)) = (live_view.as_mut(), live) {
            // A work item about to be applied needs a running experiment behind it and its
            // target's namespace opted in, as the API server says now; a refusal on a
            // namespace's labels or on the pause switch is checked again there too (the cache
            // may not have seen a label just removed or added, or a resume). Then plan again
            // with what that found.
            let verdicts = self.second_look(&plan, live).await;
            if !verdicts.is_empty() {
                for injection in view.iter_mut() {
                    if let Some(verdict) = verdicts.get(&injection.key) {
                        injection.consent = *verdict;
                    }
                }
                plan = converge::plan(now, Some(view), &applied, &gone);
            }
        }
        tracing::debug!(gone = ?(t1 - t0), plan = ?t1.elapsed(), entries = applied.len(), "planned");
        let by_key: BTreeMap<String, &Arc<FaultInjection>> = live
            .unwrap_or_default()
            .iter()
            .map(|i| (key_of(i), i))
            .collect();
        let by_tag: BTreeMap<InjectionTag, &Arc<FaultInjection>> = live
            .unwrap_or_default()
            .iter()
            .filter_map(|i| Some((tag_of(i)?, i)))
            .collect();

        // The finalizer of an injection about to be applied is added by its pod's task, just
        // before the apply: the first faults go in after one write, not after every one of
        // the step's finalizers (100 new injections: three rounds of 32 writes, 0.3 s on the
        // real control plane, before the first apply).
        let applying: BTreeSet<&String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Apply { key } => Some(key),
                _ => None,
            })
            .collect();
        let finalize_first: BTreeSet<String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::AddFinalizer { key } if applying.contains(key) => Some(key.clone()),
                _ => None,
            })
            .collect();
        let mut reverts = Vec::new();
        let mut applies = Vec::new();
        let mut quick = Vec::new();
        for action in plan.actions {
            match action {
                Action::Revert { tag, reason } => reverts.push((tag, reason)),
                Action::Apply { key } => applies.extend(by_key.get(&key).map(|i| Arc::clone(i))),
                Action::AddFinalizer { key } if finalize_first.contains(&key) => {}
                other => quick.push(other),
            }
        }
        self.quick_actions(quick, &by_key).await;
        // Entries of gone pods (possibly a large backlog) are drained in chunks, after the
        // new faults unless the journal needs the room first: a backlog never delays an apply.
        let (stale, reverts): (Vec<_>, Vec<_>) = reverts.into_iter().partition(|(tag, _)| {
            self.journal
                .head(tag)
                .is_some_and(|h| gone.contains(&h.pod_uid))
        });
        let room_first = self.journal.len() + applies.len() > super::journal::MAX_ENTRIES;
        let mut backlog = false;
        if room_first {
            // All of it: new faults need the room now.
            backlog = self.drain_gone(stale.clone(), usize::MAX, &by_tag).await;
        }
        let receipt = self
            .acknowledgements
            .usable(facts.is_some_and(|f| f.signal_exists));
        let reports = self
            .per_pod(reverts, applies, &finalize_first, &by_tag, receipt)
            .await;
        if let (Some(live), Some(facts)) = (live, facts) {
            self.receipts
                .write_due(
                    &self.client,
                    &self.policy.controller_namespace,
                    &self.nodes,
                    live,
                    facts,
                    &self.journal,
                )
                .await;
        }
        // After the receipts: an experiment's revert is confirmed by its receipt, and the
        // status of each of its injections (500 writes at 500 targets) sent first held that
        // write up (0.44 s for the receipt of a 500-target abort on the real control plane).
        self.report(reports).await;
        self.release_held_statuses(live);
        self.statuses.retry_unwritten().await;
        if !room_first {
            backlog = self.drain_gone(stale, DRAIN_CHUNK, &by_tag).await;
        }
        if let Some(live) = live
            && self
                .counted_at
                .is_none_or(|at| at.elapsed() >= self.counts_every)
        {
            self.counted_at = Some(std::time::Instant::now());
            self.report_counts(live).await;
            if self.check_tampering(live).await {
                // Apply them again right away.
                backlog = true;
            }
        }
        self.metrics.set_active(self.journal.len());
        if backlog {
            // More of the backlog right away.
            return Some(Utc::now());
        }
        let held_due = self.acknowledgements.due().map(|at| {
            let wait = at.saturating_duration_since(std::time::Instant::now());
            Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default()
        });
        match (plan.next_deadline, held_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Writes the injections' statuses held back behind the applied receipts, once due, in
    /// the background; those of faults taken out meanwhile are left to the revert's report.
    fn release_held_statuses(&mut self, live: Option<&[Arc<FaultInjection>]>) {
        if let Some(live) = live {
            let uids: BTreeSet<String> = live
                .iter()
                .filter_map(|i| i.spec.experiment.uid.clone())
                .collect();
            self.acknowledgements.retain_experiments(&uids);
        }
        let (confirmed, journal) = (&self.confirmed, &self.journal);
        let still_applied =
            |tag: &InjectionTag| confirmed.contains(tag) && journal.head(tag).is_some();
        if let Some((writes, counts)) = self
            .acknowledgements
            .write_due(&self.statuses, still_applied)
        {
            self.reported.extend(counts);
            self.reporting.spawn(writes);
        }
    }

    /// Reverts, every pod's in one pass, then applies, per pod, pods in parallel. Returns
    /// what the reverts did, for [`Self::report`].
    async fn per_pod(
        &mut self,
        reverts: Vec<(InjectionTag, RevertReason)>,
        applies: Vec<Arc<FaultInjection>>,
        finalize_first: &BTreeSet<String>,
        by_tag: &BTreeMap<InjectionTag, &Arc<FaultInjection>>,
        receipt: bool,
    ) -> Vec<Report> {
        let mut to_revert: BTreeMap<String, Vec<RevertJob>> = BTreeMap::new();
        for (tag, reason) in reverts {
            let Some(entry) = self.journal.get(&tag) else {
                continue;
            };
            to_revert
                .entry(entry.pod_uid.clone())
                .or_default()
                .push(RevertJob {
                    item: RevertItem {
                        tag: tag.clone(),
                        mechanism: entry.mechanism.as_deref().and_then(Mechanism::parse),
                        baseline: entry.baseline.clone(),
                    },
                    reason,
                    injection: by_tag.get(&tag).map(|i| Arc::clone(i)),
                });
        }
        let pass =
            reverts::revert_pass(&self.kernel, &self.metrics, to_revert.into_iter().collect())
                .await;
        self.forget(&pass.forget, "reverting");
        for (injection, at) in &pass.out {
            self.receipts.note_out(injection, *at);
        }
        for report in &pass.reports {
            if let Report::Reverted {
                injection,
                residual,
                ..
            } = report
            {
                self.receipts.note_residue(injection, residual);
            }
        }
        self.apply_all(applies, finalize_first, receipt).await;
        pass.reports
    }

    /// Writes what a revert pass did (a status per injection, a finalizer per deleted one) in
    /// the background: the next step must not wait for the API server to take these (an
    /// abort's deletions arrive while the first ones are being reported).
    async fn report(&mut self, reports: Vec<Report>) {
        if !reports.is_empty() {
            while self.reporting.len() >= REPORTS_IN_FLIGHT {
                self.reporting.join_next().await;
            }
            self.reporting.spawn(reverts::report_all(
                self.statuses.clone(),
                self.recorder.clone(),
                reports,
            ));
        }
        while self.reporting.try_join_next().is_some() {}
    }

    /// Forgets reverted faults: the journal's entries and what was counted for them.
    fn forget(&mut self, tags: &[InjectionTag], after: &str) {
        if tags.is_empty() {
            return;
        }
        if let Err(error) = self.journal.forget_many(tags) {
            tracing::error!(%error, "cannot update the journal after {after}");
        }
        for tag in tags {
            self.confirmed.remove(tag);
            self.reported.remove(tag);
            self.count_base.remove(tag);
        }
        self.acknowledgements.withdraw(tags);
    }
}
