//! Faults of pods that are gone: which pods of the journal and of new injections have no
//! process on this node, and the sweep that reverts their entries in chunks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{Agent, PARALLEL_WRITES, reverts};
use crate::agent::converge::{self, LiveInjection, RevertReason};
use crate::agent::kernel::{Kernel, KernelError};
use crate::agent::tag::InjectionTag;
use crate::api::FaultInjection;

/// How long a scan for gone pods answers for (see `Agent::gone_pods`).
const GONE_SCAN_EVERY: Duration = Duration::from_millis(250);

/// What a scan for gone pods found (see [`Agent::gone_pods`]).
pub(super) struct PodScan {
    at: std::time::Instant,
    asked: BTreeSet<String>,
    gone: BTreeSet<String>,
}

impl<K: Kernel> Agent<K> {
    /// The pods of the journal's entries and of new injections that have no process on this
    /// node. Scanning `/proc` reads every process of the node; a burst of events (an abort
    /// deleting hundreds of injections) makes a step per event, so the last scan's answer
    /// serves for [`GONE_SCAN_EVERY`] when it covered every pod asked about (a pod that is
    /// gone stays gone: a UID is never reused).
    pub(super) async fn gone_pods(
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
    pub(super) async fn drain_gone(
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
}
