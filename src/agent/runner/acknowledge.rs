//! Saying that faults are in: one applied receipt per experiment and node after each step's
//! applies (a key of the revert signal's ConfigMap, see `controller::applied_receipts`), and
//! each injection's own `Applied` status once this node's applies have gone quiet, a few at a
//! time.
//!
//! The injections' statuses used to be written as each fault went in: for 100 targets, 100
//! writes of the API server between the faults and the experiment counting them in, while
//! that server was still taking the controller's creates of the remaining ones. Held back
//! until no apply came for [`QUIET`] (at most [`AT_MOST`] after the first one held), they come
//! after the injection instead of in its way; the receipt tells the controller at once.
//!
//! Where the receipt cannot be written (no ConfigMap yet, an older chart without the
//! permission, a node name too long for a key), the statuses are written at once, as before,
//! and receipts are not tried again for [`RETRY_AFTER`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::PARALLEL_WRITES;
use crate::agent::kernel::QueueCounts;
use crate::agent::tag::InjectionTag;
use crate::agent::writeback::{StatusChange, StatusWriter};
use crate::api::FaultInjection;
use crate::controller::REVERTING_CONFIGMAP;
use crate::controller::applied_receipts::{self, AppliedEntry, AppliedReceipt};

/// The injections' own statuses wait until no apply came for this long: past the moment a
/// fault most often breaks what it targets, right after it goes in. Written sooner (0.5 s),
/// 500 of them met the abort that followed at once: on the real control plane, 500 targets,
/// side by side, the abort took 321 / 373 / 756 ms from the break (`status.abortLatency` 258 /
/// 259 / 506) against 211 / 233 / 238 (68 / 75 / 123) with every status written as its fault
/// went in...
pub const QUIET: Duration = Duration::from_secs(3);
/// ...but no longer than this after the first one held back (a long injection's first
/// statuses do not wait for its last).
pub(super) const AT_MOST: Duration = Duration::from_secs(10);
/// After a receipt could not be written, statuses go out at once for this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Held statuses are written this many at once: bookkeeping, they trickle rather than burst
/// (each write is also a watch event and a reconcile of its experiment in the controller).
const PARALLEL_HELD_WRITES: usize = 4;

/// One fault the kernel took, and what its status is to say.
pub(super) struct Acknowledged {
    pub injection: Arc<FaultInjection>,
    pub tag: InjectionTag,
    pub change: StatusChange,
    /// The packet counts the status carries (NFQUEUE faults only).
    pub counts: Option<QueueCounts>,
    pub entry: AppliedEntry,
    /// The version of the injection when its fault went in: a status held back is written
    /// over that version only (a revert's status written since wins).
    pub since: Option<String>,
}

/// What this agent said in receipts, and the statuses still to write.
#[derive(Default)]
pub(super) struct Acknowledgements {
    /// Every receipt value written, by key: each write of a key carries all of its entries.
    written: BTreeMap<String, AppliedReceipt>,
    held: Vec<Acknowledged>,
    first_held: Option<Instant>,
    last_apply: Option<Instant>,
    failed_at: Option<Instant>,
    /// Faults whose held statuses are being written; a fault taken out meanwhile leaves it,
    /// and its status is then not written.
    writing: Arc<Mutex<BTreeSet<InjectionTag>>>,
}

impl Acknowledgements {
    /// Whether receipts are to be tried (the ConfigMap exists, no recent failure).
    pub fn usable(&self, signal_exists: bool) -> bool {
        signal_exists && self.failed_at.is_none_or(|at| at.elapsed() >= RETRY_AFTER)
    }

    /// Whether this fault's status is still held back.
    pub fn holds(&self, tag: &InjectionTag) -> bool {
        self.held.iter().any(|a| a.tag == *tag)
    }

    /// Writes the receipts for `applied` (one key per experiment and node, in one patch) and
    /// holds their statuses back; when the receipt cannot be written, writes the statuses now.
    /// Returns the packet counts written with statuses now.
    pub async fn receipt(
        &mut self,
        client: &Client,
        controller_namespace: &str,
        statuses: &StatusWriter,
        applied: Vec<Acknowledged>,
    ) -> Vec<(InjectionTag, QueueCounts)> {
        if applied.is_empty() {
            return Vec::new();
        }
        // Entries go in even when the write then fails: each names a fault that is in (its
        // status is written at once instead), and the next receipt of that key says it too.
        let values = &mut self.written;
        let mut changed = BTreeSet::new();
        let mut fits = true;
        for ack in &applied {
            let experiment = &ack.injection.spec.experiment;
            let node = &ack.injection.spec.node_name;
            let Some(key) = experiment
                .uid
                .as_deref()
                .and_then(|uid| applied_receipts::key(uid, node))
            else {
                fits = false;
                break;
            };
            let value = values.entry(key.clone()).or_insert_with(|| AppliedReceipt {
                experiment: format!(
                    "{}/{}",
                    ack.injection.namespace().unwrap_or_default(),
                    experiment.name
                ),
                node: node.clone(),
                applied: BTreeMap::new(),
            });
            value
                .applied
                .insert(ack.injection.name_any(), ack.entry.clone());
            changed.insert(key);
        }
        let written = if fits {
            let started = Instant::now();
            let result = deliver(client, controller_namespace, values, &changed).await;
            tracing::debug!(
                took_ms = started.elapsed().as_millis() as u64,
                keys = changed.len(),
                injections = applied.len(),
                ok = result.is_ok(),
                "applied receipt write"
            );
            result
                .map_err(|error| {
                    tracing::info!(%error, "cannot write the applied receipt beside the revert signal; writing each injection's status at once instead");
                })
                .is_ok()
        } else {
            false
        };
        if written {
            let now = Instant::now();
            self.first_held.get_or_insert(now);
            self.last_apply = Some(now);
            self.held.extend(applied);
            return Vec::new();
        }
        self.failed_at = Some(Instant::now());
        write_all(statuses.clone(), applied).await
    }

    /// When the held statuses are due, if any are held.
    pub fn due(&self) -> Option<Instant> {
        let quiet = self.last_apply? + QUIET;
        let at_most = self.first_held? + AT_MOST;
        Some(quiet.min(at_most))
    }

    /// The held statuses, once due, of the faults still applied (`still_applied`): one taken
    /// out meanwhile has its own status written by the revert (or, for an experiment ending,
    /// its node's revert receipt speaks for it).
    fn take_due(&mut self, still_applied: impl Fn(&InjectionTag) -> bool) -> Vec<Acknowledged> {
        if self.due().is_none_or(|at| at > Instant::now()) {
            return Vec::new();
        }
        self.first_held = None;
        self.last_apply = None;
        std::mem::take(&mut self.held)
            .into_iter()
            .filter(|a| still_applied(&a.tag))
            .collect()
    }

    /// The writes of the held statuses that are due (see [`Self::take_due`]), to run in the
    /// background, a few at once, each only while its fault is still in (see
    /// [`Self::withdraw`]); with the packet counts they carry.
    pub fn write_due(
        &mut self,
        statuses: &StatusWriter,
        still_applied: impl Fn(&InjectionTag) -> bool,
    ) -> Option<(
        impl std::future::Future<Output = ()> + Send + 'static,
        Vec<(InjectionTag, QueueCounts)>,
    )> {
        let due = self.take_due(still_applied);
        if due.is_empty() {
            return None;
        }
        let counts = due
            .iter()
            .filter_map(|a| Some((a.tag.clone(), a.counts?)))
            .collect();
        lock(&self.writing).extend(due.iter().map(|a| a.tag.clone()));
        let writing = Arc::clone(&self.writing);
        let writes = write_statuses(statuses.clone(), due, PARALLEL_HELD_WRITES, move |tag| {
            lock(&writing).remove(tag)
        });
        Some((async move { drop(writes.await) }, counts))
    }

    /// Faults taken out: a held status of theirs still on its way is not written.
    pub fn withdraw(&self, tags: &[InjectionTag]) {
        let mut writing = lock(&self.writing);
        for tag in tags {
            writing.remove(tag);
        }
    }

    /// Forgets the receipts of experiments with no injection left for this agent (the signal's
    /// sweep removes their keys).
    pub fn retain_experiments(&mut self, live_uids: &BTreeSet<String>) {
        self.written
            .retain(|key, _| live_uids.contains(crate::controller::signal_receipts::uid_of(key)));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One merge patch of the ConfigMap with the `changed` keys' values.
async fn deliver(
    client: &Client,
    controller_namespace: &str,
    values: &BTreeMap<String, AppliedReceipt>,
    changed: &BTreeSet<String>,
) -> Result<(), kube::Error> {
    let mut data = serde_json::Map::new();
    for key in changed {
        let value = serde_json::to_string(&values[key]).map_err(kube::Error::SerdeError)?;
        data.insert(key.clone(), json!(value));
    }
    Api::<ConfigMap>::namespaced(client.clone(), controller_namespace)
        .patch(
            REVERTING_CONFIGMAP,
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": data })),
        )
        .await
        .map(drop)
}

/// Writes these statuses, [`PARALLEL_WRITES`] at once. Returns the packet counts written.
pub(super) async fn write_all(
    statuses: StatusWriter,
    applied: Vec<Acknowledged>,
) -> Vec<(InjectionTag, QueueCounts)> {
    write_statuses(statuses, applied, PARALLEL_WRITES, |_| true).await
}

/// Writes these statuses, `parallel` at once, each only if `still_wanted` says so when its turn
/// comes. Returns the packet counts written.
fn write_statuses(
    statuses: StatusWriter,
    acknowledged: Vec<Acknowledged>,
    parallel: usize,
    still_wanted: impl Fn(&InjectionTag) -> bool + Send + Sync + 'static,
) -> impl std::future::Future<Output = Vec<(InjectionTag, QueueCounts)>> + Send + 'static {
    let still_wanted = Arc::new(still_wanted);
    futures::stream::iter(acknowledged.into_iter().map(move |ack| {
        let (statuses, still_wanted) = (statuses.clone(), Arc::clone(&still_wanted));
        async move {
            if !still_wanted(&ack.tag) {
                return None;
            }
            let written = statuses
                .write_since(&ack.injection, ack.change, ack.since)
                .await;
            ack.counts
                .filter(|_| written)
                .map(|counts| (ack.tag, counts))
        }
    }))
    .buffer_unordered(parallel)
    .filter_map(|counts| async move { counts })
    .collect()
}
