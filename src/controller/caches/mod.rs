//! What the controller's watches know, besides the experiments themselves: every
//! FaultInjection, the pause switch, the namespaces' metadata, whether each watch has listed
//! once, and which cached experiment versions our own writes have already replaced. (no
//! client; fed by `run`)
//!
//! Reconciles read FaultInjections and the pause switch from here instead of asking the API
//! server each time. A watch cache lags the server by one event's delivery, so each reader
//! must know which way a lag can mislead it:
//! - the pause switch: a flip reaches every experiment through its own watch event, after the
//!   cache has it;
//! - FaultInjections: a lag can hide one we just created, never invent one; the one decision
//!   that "none left" would make unsafe (revert confirmed) is checked with a fresh list, see
//!   `observe`;
//! - namespaces: what a running experiment's once-a-second check of its targets' consent reads
//!   (see `target_reads`); a lag delays a withdrawal by one event's delivery, as the API
//!   server's own watch cache did for the GET per namespace and experiment it replaces. The
//!   opt-in label at target selection is read from the API server itself.
//!
//! Beside the watch stores: `listed` (which watches have listed once), `namespaces` (the
//! namespace watch's cache), `writes` (what our own writes have replaced, and when each
//! experiment was last written) and `asked` (what this process has asked per experiment).

mod asked;
mod listed;
mod namespaces;
mod writes;

pub use asked::{RevertsAsked, TargetReads};
pub use listed::{Listed, Watch};
pub use namespaces::NamespaceCache;
pub use writes::{InFlight, Versions, WrittenAt};

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    ResourceExt,
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};
use tokio::sync::watch;

use super::PAUSE_CONFIGMAP;
use super::revert_signal::{REVERTING_CONFIGMAP, Signal};
use super::{applied_receipts, signal_receipts};
use crate::api::{ChaosExperiment, EXPERIMENT_LABEL, FaultInjection, RevertReceipt};

/// Shared by every reconcile.
pub struct Caches {
    pub injections: Store<FaultInjection>,
    pause: Store<ConfigMap>,
    signal: Store<ConfigMap>,
    pub namespaces: NamespaceCache,
    controller_namespace: String,
    pub versions: Versions,
    pub reverts: Arc<RevertsAsked>,
    pub probe_writes: WrittenAt,
    pub status_writes: WrittenAt,
    pub writes_behind: InFlight,
    pub target_reads: TargetReads,
    listed: watch::Receiver<u8>,
}

impl Caches {
    pub fn new(
        injections: Store<FaultInjection>,
        pause: Store<ConfigMap>,
        signal: Store<ConfigMap>,
        namespaces: NamespaceCache,
        controller_namespace: String,
        listed: &Listed,
    ) -> Caches {
        Caches {
            injections,
            pause,
            signal,
            namespaces,
            controller_namespace,
            versions: Versions::default(),
            reverts: Arc::default(),
            probe_writes: WrittenAt::default(),
            status_writes: WrittenAt::default(),
            writes_behind: InFlight::default(),
            target_reads: TargetReads::default(),
            listed: listed.subscribe(),
        }
    }

    /// Resolves once every watch has delivered its first complete list. (Our own signal rather
    /// than `Store::wait_until_ready`: that one wakes only the last of several concurrent
    /// waiters, and the controller's runner is always one of them.)
    pub async fn synced(&self) {
        let mut listed = self.listed.clone();
        // An error means the watches are gone (shutdown): nothing left to wait for.
        let _ = listed.wait_for(Listed::all).await;
    }

    /// Whether chaos is paused cluster-wide (`paused: "true"` in the pause ConfigMap).
    pub fn paused(&self) -> bool {
        let key = kube::runtime::reflector::ObjectRef::new(PAUSE_CONFIGMAP)
            .within(&self.controller_namespace);
        self.pause
            .get(&key)
            .is_some_and(|map| super::pause_switch::says_paused(&map))
    }

    /// The signal's ConfigMap as the watch last saw it.
    fn signal_map(&self) -> Option<Arc<ConfigMap>> {
        let key = kube::runtime::reflector::ObjectRef::new(REVERTING_CONFIGMAP)
            .within(&self.controller_namespace);
        self.signal.get(&key)
    }

    /// What the revert signal says of experiment `uid`, if it names it.
    pub fn signalled(&self, uid: &str) -> Option<Signal> {
        let map = self.signal_map()?;
        map.data
            .as_ref()?
            .get(uid)
            .map(|value| Signal::parse(value))
    }

    /// The revert receipts the agents left for experiment `uid` in the signal's ConfigMap.
    pub fn receipts(&self, uid: &str) -> Vec<RevertReceipt> {
        self.signal_map()
            .and_then(|map| Some(signal_receipts::receipts_of(map.data.as_ref()?, uid)))
            .unwrap_or_default()
    }

    /// The applied receipts the agents left for experiment `uid` in the signal's ConfigMap.
    pub fn applied(&self, uid: &str) -> Vec<applied_receipts::AppliedReceipt> {
        self.signal_map()
            .and_then(|map| Some(applied_receipts::applied_of(map.data.as_ref()?, uid)))
            .unwrap_or_default()
    }

    /// The experiment's FaultInjections as the watch last saw them. The label is a name; the
    /// UID tells this experiment from an earlier one of the same name.
    pub fn injections_of(
        &self,
        namespace: &str,
        experiment: &str,
        uid: &str,
    ) -> Vec<Arc<FaultInjection>> {
        self.injections
            .state_filter(|i| belongs_to(i, namespace, experiment, uid))
    }
}

/// The UIDs of the cached experiments that have not ended. One that cannot be read counts:
/// nothing says it is over.
pub fn not_ended(experiments: &Store<DeserializeGuard<ChaosExperiment>>) -> BTreeSet<String> {
    experiments
        .state()
        .iter()
        .filter(|guarded| match &guarded.0 {
            Ok(experiment) => !experiment
                .status
                .as_ref()
                .is_some_and(|s| s.phase.is_terminal()),
            Err(_) => true,
        })
        .filter_map(|guarded| guarded.uid())
        .collect()
}

/// What `read` makes of the cached experiment `injection` belongs to (see [`belongs_to`]):
/// None when the injection names none, or that experiment is not cached, cannot be read, or
/// is another one of the same name.
pub fn with_owner<T>(
    experiments: &Store<DeserializeGuard<ChaosExperiment>>,
    injection: &FaultInjection,
    read: impl FnOnce(&ChaosExperiment) -> T,
) -> Option<T> {
    let name = injection.labels().get(EXPERIMENT_LABEL)?;
    let namespace = injection.namespace()?;
    let cached = experiments.get(&ObjectRef::new(name).within(&namespace))?;
    let experiment = cached.0.as_ref().ok()?;
    let uid = experiment.uid().unwrap_or_default();
    belongs_to(injection, &namespace, name, &uid).then(|| read(experiment))
}

/// Whether `injection` is one of the experiment `namespace/experiment` with UID `uid`.
pub fn belongs_to(
    injection: &FaultInjection,
    namespace: &str,
    experiment: &str,
    uid: &str,
) -> bool {
    injection.metadata.namespace.as_deref() == Some(namespace)
        && injection.labels().get(EXPERIMENT_LABEL).map(String::as_str) == Some(experiment)
        && injection
            .spec
            .experiment
            .uid
            .as_deref()
            .is_none_or(|u| u == uid)
}
