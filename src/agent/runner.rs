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
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

use super::admission::{self, Facts, Policy, Refusal, Verdict};
use super::converge::{self, Action, LiveInjection, RevertReason};
use super::deadline::Deadline;
use super::facts::{FactWatches, Snapshot};
use super::journal::{Journal, JournalEntry};
use super::kernel::{Kernel, KernelError, Mechanism, QueueCounts, RevertItem};
use super::tag::InjectionTag;
use super::telemetry::AgentMetrics;
use super::writeback::{self, StatusChange, StatusWriter, key_of, live_injection, tag_of};
use crate::api::{ChaosExperiment, FaultInjection, InjectionPhase, NODE_LABEL};

mod receipts;
mod reverts;
use receipts::Receipts;
use reverts::{Report, RevertJob};

/// How many pods the agent applies faults to at once (reverts go in one pass).
pub const PARALLEL_PODS: usize = 32;
/// How many status writes go out at once.
const PARALLEL_WRITES: usize = 32;
/// Steps whose revert reports may still be in flight while a later step runs.
const REPORTS_IN_FLIGHT: usize = 4;
/// How long a scan for gone pods answers for (see `Agent::gone_pods`).
const GONE_SCAN_EVERY: Duration = Duration::from_millis(250);
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
}

/// What a scan for gone pods found (see [`Agent::gone_pods`]).
struct PodScan {
    at: std::time::Instant,
    asked: BTreeSet<String>,
    gone: BTreeSet<String>,
}

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
            // A work item about to be applied needs a running experiment behind it; a refusal
            // on a namespace's labels is checked again against the API server (the cache may
            // not have seen a label just added). Then plan again with what that found.
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
        let reports = self
            .per_pod(reverts, applies, &finalize_first, &by_tag)
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
        }
        self.metrics.set_active(self.journal.len());
        if backlog {
            // More of the backlog right away.
            return Some(Utc::now());
        }
        plan.next_deadline
    }

    /// Whether this injection's fault may be on its target now, from the watch caches.
    fn consent(&self, injection: &FaultInjection, facts: Option<&Snapshot>) -> Verdict {
        let Some(facts) = facts else {
            return Verdict::Unknown;
        };
        let spec = &injection.spec;
        let facts = Facts {
            paused: facts.paused,
            pod: facts.pods.get(&spec.target.uid),
            namespace_labels: facts.namespaces.get(&spec.target.namespace),
        };
        admission::consent(injection, &self.nodes, &facts, &self.policy)
    }

    /// The reads the caches cannot answer, for the few injections that need them: the
    /// experiment behind each one about to be applied (one read per experiment, however many
    /// of its injections), and the namespace of each refused for its labels. Returns the
    /// verdicts that change.
    async fn second_look(
        &self,
        plan: &converge::Plan,
        live: &[Arc<FaultInjection>],
    ) -> BTreeMap<String, Verdict> {
        let by_key: BTreeMap<String, &Arc<FaultInjection>> =
            live.iter().map(|i| (key_of(i), i)).collect();
        let mut to_vouch = Vec::new();
        let mut to_recheck = Vec::new();
        for action in &plan.actions {
            match action {
                Action::Apply { key } => to_vouch.extend(by_key.get(key).copied()),
                Action::Refuse {
                    key,
                    refusal: Refusal::NamespaceNotOptedIn,
                } => to_recheck.extend(by_key.get(key).copied()),
                _ => {}
            }
        }
        let mut verdicts = BTreeMap::new();
        if to_vouch.is_empty() && to_recheck.is_empty() {
            return verdicts;
        }
        let wanted: BTreeSet<(String, String)> = to_vouch
            .iter()
            .map(|i| {
                (
                    i.namespace().unwrap_or_default(),
                    i.spec.experiment.name.clone(),
                )
            })
            .collect();
        let client = &self.client;
        let experiments: BTreeMap<(String, String), Result<Option<ChaosExperiment>, ()>> =
            futures::stream::iter(wanted.into_iter().map(|(namespace, name)| async move {
                let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), &namespace);
                let found = api.get_opt(&name).await.map_err(|error| {
                    tracing::warn!(experiment = %format!("{namespace}/{name}"), %error, "cannot read the experiment behind an injection; it is not applied until the agent can");
                });
                ((namespace, name), found)
            }))
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        for injection in to_vouch {
            let key = (
                injection.namespace().unwrap_or_default(),
                injection.spec.experiment.name.clone(),
            );
            let verdict = match experiments.get(&key) {
                Some(Ok(found)) => match admission::vouched(injection, found.as_ref()) {
                    Ok(()) => continue,
                    Err(refusal) => Verdict::Refused(refusal),
                },
                _ => Verdict::Unknown,
            };
            verdicts.insert(key_of(injection), verdict);
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for injection in to_recheck {
            let fresh = namespaces.get_opt(&injection.spec.target.namespace).await;
            let opted_in = match &fresh {
                Ok(Some(ns)) => ns
                    .labels()
                    .get(crate::api::NAMESPACE_OPT_IN_LABEL)
                    .is_some_and(|v| v == crate::api::NAMESPACE_OPT_IN_VALUE),
                Ok(None) => false,
                // Cannot tell: ask again at the next step rather than refuse on a guess.
                Err(_) => true,
            };
            if opted_in {
                // The cache is behind: decide when it has caught up.
                verdicts.insert(key_of(injection), Verdict::Unknown);
            }
        }
        verdicts
    }

    /// Finalizers, and statuses of what will not be applied: concurrently.
    async fn quick_actions(
        &self,
        actions: Vec<Action>,
        by_key: &BTreeMap<String, &Arc<FaultInjection>>,
    ) {
        let writes = actions.into_iter().filter_map(|action| {
            let statuses = self.statuses.clone();
            let (key, work) = match action {
                Action::AddFinalizer { key } => (key, Work::Finalizer(true)),
                Action::RemoveFinalizer { key } => (key, Work::Finalizer(false)),
                Action::ReportNotApplied { key, reason } => (key, Work::NotApplied(reason)),
                Action::Refuse { key, refusal } => (key, Work::Refused(refusal)),
                _ => return None,
            };
            let injection = Arc::clone(by_key.get(&key)?);
            let recorder = self.recorder.clone();
            let metrics = self.metrics.clone();
            Some(async move {
                match work {
                    Work::Refused(refusal) => {
                        metrics.observe_refusal(refusal);
                        refuse(&statuses, &recorder, &injection, refusal).await
                    }
                    Work::Finalizer(present) => statuses.set_finalizer(&injection, present).await,
                    Work::NotApplied(reason) => {
                        let (phase, message) = match reason {
                            RevertReason::Expired => (
                                InjectionPhase::Reverted,
                                "expired before it was applied".to_string(),
                            ),
                            _ => (
                                InjectionPhase::Failed,
                                format!(
                                    "target pod {} ({}) is not running on this node: {}",
                                    injection.spec.target.name,
                                    injection.spec.target.uid,
                                    reason.describe()
                                ),
                            ),
                        };
                        statuses
                            .write(
                                &injection,
                                StatusChange::phase(phase, injection.metadata.generation, message),
                            )
                            .await;
                    }
                }
            })
        });
        futures::stream::iter(writes)
            .buffer_unordered(PARALLEL_WRITES)
            .collect::<Vec<()>>()
            .await;
    }

    /// The pods of the journal's entries and of new injections that have no process on this
    /// node. Scanning `/proc` reads every process of the node; a burst of events (an abort
    /// deleting hundreds of injections) makes a step per event, so the last scan's answer
    /// serves for [`GONE_SCAN_EVERY`] when it covered every pod asked about (a pod that is
    /// gone stays gone: a UID is never reused).
    async fn gone_pods(
        &mut self,
        applied: &[converge::Applied],
        live: Option<&[LiveInjection]>,
    ) -> BTreeSet<String> {
        // An ending experiment's faults come out whether or not their pods are there (the
        // pass copes with a namespace gone), and the scan reads every process of the node:
        // an abort does not wait for it.
        let ending: BTreeSet<&InjectionTag> = live
            .unwrap_or_default()
            .iter()
            .filter(|i| i.ending)
            .map(|i| &i.tag)
            .collect();
        let mut uids: BTreeSet<String> = applied
            .iter()
            .filter(|a| !ending.contains(&a.tag))
            .map(|a| a.pod_uid.clone())
            .collect();
        uids.extend(
            live.unwrap_or_default()
                .iter()
                .filter(|i| !i.deleting && !i.ending && self.journal.head(&i.tag).is_none())
                .map(|i| i.pod_uid.clone()),
        );
        if uids.is_empty() {
            return uids;
        }
        let recent = self
            .last_scan
            .as_ref()
            .is_some_and(|scan| scan.at.elapsed() < GONE_SCAN_EVERY && uids.is_subset(&scan.asked));
        if let Some(scan) = self.last_scan.as_ref().filter(|_| recent) {
            return scan.gone.intersection(&uids).cloned().collect();
        }
        let kernel = self.kernel.clone();
        let asked = uids.clone();
        let gone = tokio::task::spawn_blocking(move || kernel.absent_pods(&uids))
            .await
            .unwrap_or_default();
        self.last_scan = Some(PodScan {
            at: std::time::Instant::now(),
            asked,
            gone: gone.clone(),
        });
        gone
    }

    /// Reverts entries of pods that are gone, at most `chunk` of them, in one sweep and one
    /// journal write. Returns whether more are left.
    async fn drain_gone(
        &mut self,
        stale: Vec<(InjectionTag, RevertReason)>,
        chunk: usize,
        by_tag: &BTreeMap<InjectionTag, &Arc<FaultInjection>>,
    ) -> bool {
        let backlog = stale.len() > chunk;
        let stale: Vec<(String, InjectionTag, RevertReason)> = stale
            .into_iter()
            .take(chunk)
            .filter_map(|(tag, reason)| {
                Some((self.journal.head(&tag)?.pod_uid.clone(), tag, reason))
            })
            .collect();
        if stale.is_empty() {
            return backlog;
        }
        let started = std::time::Instant::now();
        let kernel = self.kernel.clone();
        let items: Vec<(String, InjectionTag)> = stale
            .iter()
            .map(|(pod, tag, _)| (pod.clone(), tag.clone()))
            .collect();
        let swept = tokio::task::spawn_blocking(move || kernel.revert_gone(&items))
            .await
            .unwrap_or_else(|e| Err(KernelError::Failed(format!("sweep panicked: {e}"))));
        if let Err(error) = swept {
            tracing::error!(%error, entries = stale.len(), "cannot sweep the node's namespace for gone pods' rules; retrying at the next resync");
            return false;
        }
        let tags: Vec<InjectionTag> = stale.iter().map(|(_, tag, _)| tag.clone()).collect();
        self.forget(&tags, "the sweep");
        tracing::info!(entries = tags.len(), took = ?started.elapsed(), "reverted the faults of gone pods");
        let writes = stale.into_iter().filter_map(|(_, tag, reason)| {
            let injection = Arc::clone(by_tag.get(&tag)?);
            let statuses = self.statuses.clone();
            self.metrics.observe_revert(Duration::ZERO, reason);
            Some(async move {
                reverts::report_reverted(&statuses, &injection, reason, Vec::new()).await
            })
        });
        futures::stream::iter(writes)
            .buffer_unordered(PARALLEL_WRITES)
            .collect::<Vec<()>>()
            .await;
        backlog
    }

    /// Reverts, every pod's in one pass, then applies, per pod, pods in parallel. Returns
    /// what the reverts did, for [`Self::report`].
    async fn per_pod(
        &mut self,
        reverts: Vec<(InjectionTag, RevertReason)>,
        applies: Vec<Arc<FaultInjection>>,
        finalize_first: &BTreeSet<String>,
        by_tag: &BTreeMap<InjectionTag, &Arc<FaultInjection>>,
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
        self.apply_all(applies, finalize_first).await;
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
    }

    /// Applies, per pod, pods in parallel (at most [`PARALLEL_PODS`]); each pod's task first
    /// adds the finalizers of its injections in `finalize_first`.
    async fn apply_all(
        &mut self,
        applies: Vec<Arc<FaultInjection>>,
        finalize_first: &BTreeSet<String>,
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
                apply_pod(kernel, statuses, metrics, names, jobs).await
            });
        }
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

    /// Writes how much of each NFQUEUE fault was in place (packets matched, packets that
    /// bypassed the queue) when it changed. Writes only those fields.
    async fn report_counts(&mut self, live: &[Arc<FaultInjection>]) {
        let mut wanted = Vec::new();
        for injection in live {
            let Some(tag) = tag_of(injection) else {
                continue;
            };
            if !self.confirmed.contains(&tag) || injection.metadata.deletion_timestamp.is_some() {
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

enum Work {
    Finalizer(bool),
    NotApplied(RevertReason),
    Refused(Refusal),
}

/// Records a refusal: phase Failed, the `Admitted` condition False with the reason, a Warning
/// Event. Nothing of the injection is in the kernel.
async fn refuse(
    statuses: &StatusWriter,
    recorder: &Recorder,
    injection: &FaultInjection,
    refusal: Refusal,
) {
    let message = format!("refused by the node agent: {}", refusal.explain(injection));
    tracing::warn!(injection = %key_of(injection), reason = refusal.reason(), pod = %injection.spec.target.name, "refused a FaultInjection; nothing applied");
    let generation = injection.metadata.generation;
    let condition = crate::api::Condition {
        type_: crate::api::ADMITTED_CONDITION.into(),
        status: crate::api::ConditionStatus::False,
        reason: refusal.reason().into(),
        message: message.clone(),
        last_transition_time: Some(Utc::now()),
        observed_generation: generation,
    };
    let change = StatusChange::phase(InjectionPhase::Failed, generation, message.clone())
        .set("conditions", json!([condition]));
    statuses.write(injection, change).await;
    notify(recorder, injection, refusal.reason(), "Apply", message).await;
}

/// Publishes a Warning Event about an injection (best effort: status carries the same words).
async fn notify(
    recorder: &Recorder,
    injection: &FaultInjection,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &injection.object_ref(&())).await {
        tracing::warn!(injection = %key_of(injection), %error, "cannot publish an Event");
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

/// One pod's applies, in order.
async fn apply_pod<K: Kernel>(
    kernel: Arc<K>,
    statuses: StatusWriter,
    metrics: AgentMetrics,
    names: Arc<BTreeMap<InjectionTag, String>>,
    jobs: Vec<ApplyJob>,
) -> PodOutcome {
    let mut outcome = PodOutcome::default();
    for job in jobs {
        apply_one(&kernel, &statuses, &metrics, &names, job, &mut outcome).await;
    }
    outcome
}

async fn apply_one<K: Kernel>(
    kernel: &Arc<K>,
    statuses: &StatusWriter,
    metrics: &AgentMetrics,
    names: &BTreeMap<InjectionTag, String>,
    job: ApplyJob,
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
            if statuses.write(&injection, change).await && applied.mechanism == Mechanism::Nfqueue {
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
