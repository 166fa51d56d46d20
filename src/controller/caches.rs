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

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;

use super::PAUSE_CONFIGMAP;
use super::revert_signal::{REVERTING_CONFIGMAP, Signal};
use super::{applied_receipts, signal_receipts};
use crate::api::{ChaosExperiment, EXPERIMENT_LABEL, FaultInjection, RevertReceipt};

/// The watches whose first list must be in before anything is decided.
#[derive(Clone, Copy, Debug)]
pub enum Watch {
    Experiments = 1,
    Injections = 2,
    Pause = 4,
    Signal = 8,
    Namespaces = 16,
}

const ALL_LISTED: u8 = Watch::Experiments as u8
    | Watch::Injections as u8
    | Watch::Pause as u8
    | Watch::Signal as u8
    | Watch::Namespaces as u8;

/// Every namespace's metadata, as the controller's namespace watch has it, once that watch has
/// listed; `None` where the controller may not watch namespaces (an older chart's
/// permissions), so readers ask the API server instead.
#[derive(Clone)]
pub struct NamespaceCache {
    store: Store<PartialObjectMeta<Namespace>>,
    listed: Arc<std::sync::atomic::AtomicBool>,
}

impl NamespaceCache {
    pub fn new(store: Store<PartialObjectMeta<Namespace>>) -> Self {
        Self {
            store,
            listed: Arc::default(),
        }
    }

    /// For `inspect` on the namespace watch: the cache answers from each complete list on, and
    /// not from the watch's first error until it has listed again (a watch that fails keeps
    /// its last state, which would hide a withdrawal for as long as it fails; a grant taken
    /// away while the controller runs, say). A refused watch is said once; the readers ask the
    /// API server meanwhile.
    pub fn marker<K>(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let listed = self.listed.clone();
        let mut refusal_said = false;
        move |event| match event {
            Ok(watcher::Event::InitDone) => {
                listed.store(true, std::sync::atomic::Ordering::Release);
            }
            Ok(_) => {}
            Err(error) => {
                listed.store(false, std::sync::atomic::Ordering::Release);
                if let watcher::Error::InitialListFailed(kube::Error::Api(status)) = error
                    && status.code == 403
                    && !refusal_said
                {
                    refusal_said = true;
                    tracing::warn!(
                        error = %status.message,
                        "the controller may not list and watch namespaces (a chart older than this controller?): each running experiment reads its target namespaces from the API server instead; `helm upgrade` the chart to grant the watch"
                    );
                }
            }
        }
    }

    /// `Some(metadata)` of namespace `name` if it exists, `Some(None)` if it does not, `None`
    /// when the cache cannot tell (its watch never listed).
    pub fn get(&self, name: &str) -> Option<Option<ObjectMeta>> {
        if !self.listed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let key = kube::runtime::reflector::ObjectRef::new(name);
        Some(self.store.get(&key).map(|ns| ns.metadata.clone()))
    }
}

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
            listed: listed.0.subscribe(),
        }
    }

    /// Resolves once every watch has delivered its first complete list. (Our own signal rather
    /// than `Store::wait_until_ready`: that one wakes only the last of several concurrent
    /// waiters, and the controller's runner is always one of them.)
    pub async fn synced(&self) {
        let mut listed = self.listed.clone();
        // An error means the watches are gone (shutdown): nothing left to wait for.
        let _ = listed.wait_for(|l| *l == ALL_LISTED).await;
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

/// Experiments (by UID) with a write on its way that nobody waits for (see
/// `status::write_behind`), and, once such a write landed, the version it replaced.
#[derive(Clone, Default)]
pub struct InFlight {
    on_its_way: Arc<Mutex<std::collections::HashSet<String>>>,
    landed_on: Arc<Mutex<HashMap<String, String>>>,
}

/// Held while the write is on its way; dropping it (the write done, failed or its task gone)
/// lets the next one go.
pub struct InFlightGuard {
    set: InFlight,
    uid: String,
}

impl InFlight {
    /// Whether a write of `uid` is on its way.
    pub fn contains(&self, uid: &str) -> bool {
        self.on_its_way
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(uid)
    }

    /// A guard for `uid`'s write, unless one is on its way.
    pub fn start(&self, uid: &str) -> Option<InFlightGuard> {
        let mut set = self.on_its_way.lock().unwrap_or_else(|p| p.into_inner());
        set.insert(uid.to_string()).then(|| InFlightGuard {
            set: self.clone(),
            uid: uid.to_string(),
        })
    }

    /// `uid`'s write, based on `version`, landed (called before its guard goes).
    pub fn landed(&self, uid: &str, version: String) {
        self.landed_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), version);
    }

    /// Whether a write decided on `version` of `uid` would meet such a write: one on its way,
    /// or one that landed over `version` itself (after the copy was read, before the write
    /// that was decided on it).
    pub fn overtakes(&self, uid: &str, version: Option<&str>) -> bool {
        self.contains(uid)
            || version.is_some_and(|version| {
                self.landed_on
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(uid)
                    .is_some_and(|landed| landed == version)
            })
    }

    /// The experiment is gone.
    pub fn forget(&self, uid: &str) {
        self.landed_on
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.set
            .on_its_way
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.uid);
    }
}

/// When each experiment's targets were last read (to see which left, see `target_reads`).
/// An injection of 500 targets brings a reconcile per batch of agent reports; reading every
/// target in each of them cost ~0.4 s a time and held the reconcile that would see a broken
/// hypothesis. The departures need a look every poll (2 s), not one per report.
#[derive(Default)]
pub struct TargetReads(Mutex<HashMap<String, Instant>>);

impl TargetReads {
    /// Whether the targets of experiment `uid` are due for a read (the last was `every` ago or
    /// more, or there was none); when they are, that read is taken to happen now.
    pub fn due(&self, uid: &str, every: Duration) -> bool {
        self.due_at(uid, every, Instant::now())
    }

    fn due_at(&self, uid: &str, every: Duration, now: Instant) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Experiments long finished or deleted leave no entry behind.
        last.retain(|_, at| now.saturating_duration_since(*at) < FORGET_TARGET_READS);
        match last.get(uid) {
            Some(at) if now.saturating_duration_since(*at) < every => false,
            _ => {
                last.insert(uid.to_string(), now);
                true
            }
        }
    }
}

const FORGET_TARGET_READS: Duration = Duration::from_secs(600);

/// Which watches have listed, shared between the watch streams and the readers.
#[derive(Clone)]
pub struct Listed(Arc<watch::Sender<u8>>);

impl Default for Listed {
    fn default() -> Self {
        Listed(Arc::new(watch::channel(0).0))
    }
}

impl Listed {
    /// For `inspect` on a watch stream: marks `which` listed at its first `InitDone`.
    pub fn marker<K>(
        &self,
        which: Watch,
    ) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let listed = self.0.clone();
        move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                mark(&listed, which);
            }
        }
    }

    /// [`Self::marker`] for a watch this controller may not be allowed: a refused list counts
    /// as listed (nothing to read), so that an older chart's permissions do not hold every
    /// decision back.
    pub fn marker_unless_refused<K>(
        &self,
        which: Watch,
    ) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let mut listed_marker = self.marker(which);
        let listed = self.0.clone();
        move |event| {
            if let Err(watcher::Error::InitialListFailed(kube::Error::Api(status))) = event
                && status.code == 403
            {
                mark(&listed, which);
            }
            listed_marker(event);
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u8> {
        self.0.subscribe()
    }

    pub fn all(listed: &u8) -> bool {
        *listed == ALL_LISTED
    }
}

/// Marks `which` listed, waking the waiters only the first time.
fn mark(listed: &watch::Sender<u8>, which: Watch) {
    listed.send_if_modified(|l| {
        let before = *l;
        *l |= which as u8;
        *l != before
    });
}

/// Experiment versions that a write of ours has replaced, by experiment UID.
///
/// A reconcile often writes the experiment more than once (finalizer, status, status again).
/// The watch delivers each version in turn, and a reconcile triggered by an intermediate one
/// would decide on a copy that is already out of date. Each entry lists versions that are
/// provably old (a later one exists on the server because we wrote it), so skipping a
/// reconcile of one of them never loses a wakeup: the newer version's event is still to come.
/// Versions are compared for equality only, never ordered (they are opaque).
#[derive(Default)]
pub struct Versions {
    superseded: Mutex<HashMap<String, Vec<String>>>,
}

impl Versions {
    /// A write of ours has just replaced `experiment`'s current version with `now` (the
    /// version the write answered with). A write that changed nothing (the server keeps the
    /// version of a no-op and sends no watch event) replaced nothing: skipping that version
    /// would wait for an event that never comes.
    pub fn replaced(&self, experiment: &ChaosExperiment, now: Option<&str>) {
        let (Some(uid), Some(old)) = (experiment.uid(), experiment.resource_version()) else {
            return;
        };
        if now == Some(old.as_str()) {
            return;
        }
        let mut superseded = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
        superseded.entry(uid).or_default().push(old);
    }

    /// Whether this cached copy is one our writes have replaced. A copy that is not ends the
    /// entry: the cache has caught up, and a watch never goes back in time.
    pub fn is_superseded(&self, experiment: &ChaosExperiment) -> bool {
        let (Some(uid), Some(version)) = (experiment.uid(), experiment.resource_version()) else {
            return false;
        };
        let mut superseded = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
        match superseded.get(&uid) {
            Some(old) if old.contains(&version) => true,
            Some(_) => {
                superseded.remove(&uid);
                false
            }
            None => false,
        }
    }

    /// The experiment is gone: drop what was kept for it.
    pub fn forget(&self, experiment: &DeserializeGuard<ChaosExperiment>) {
        if let Some(uid) = experiment.uid() {
            self.superseded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
        }
    }
}

/// Experiments (by UID) whose revert this process has asked for: when the agents were told
/// (the reverting label), and whether the FaultInjections were asked to be deleted. A
/// deletecollection that succeeded marked every injection there was, and none is created once
/// a revert has begun, so either request needs repeating only after a restart (when this map
/// starts empty), not because the cache still shows an injection unmarked.
#[derive(Default)]
pub struct RevertsAsked(Mutex<HashMap<String, Asked>>);

#[derive(Clone, Copy)]
pub struct Asked {
    pub at: Instant,
    pub deletion: bool,
    /// The agents were told (not only the FaultInjections' deletion asked).
    pub told: bool,
}

impl RevertsAsked {
    /// The agents were told now (a second call keeps the first time).
    pub fn told(&self, uid: &str) {
        self.with(uid, |entry| entry.told = true);
    }

    pub fn deletion_asked(&self, uid: &str, asked: bool) {
        self.with(uid, |entry| entry.deletion = asked);
    }

    fn with(&self, uid: &str, change: impl FnOnce(&mut Asked)) {
        let mut map = self.lock();
        change(map.entry(uid.to_string()).or_insert(Asked {
            at: Instant::now(),
            deletion: false,
            told: false,
        }));
    }

    pub fn get(&self, uid: &str) -> Option<Asked> {
        self.lock().get(uid).copied()
    }

    pub fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Asked>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// When something was last written into each experiment's status (by UID): probe results, or
/// anything at all. Kept to hold writes of news that can wait (new probe results, injection
/// progress) to about one a second. A controller that starts afresh writes at once.
#[derive(Default)]
pub struct WrittenAt(Mutex<HashMap<String, DateTime<Utc>>>);

impl WrittenAt {
    pub fn last(&self, uid: &str) -> Option<DateTime<Utc>> {
        self.lock().get(uid).copied()
    }

    pub fn written(&self, uid: &str, at: DateTime<Utc>) {
        self.lock().insert(uid.to_string(), at);
    }

    pub fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn experiment(uid: &str, version: &str) -> ChaosExperiment {
        let mut e = ChaosExperiment::new(
            "e",
            serde_json::from_value(serde_json::json!({
                "duration": "1s", "target": {}, "faults": [{"podKill": {}}]
            }))
            .unwrap(),
        );
        e.metadata.uid = Some(uid.into());
        e.metadata.resource_version = Some(version.into());
        e
    }

    #[test]
    fn a_write_behind_overtakes_a_copy_while_on_its_way_and_the_copy_it_landed_on() {
        let writes = InFlight::default();
        assert!(!writes.overtakes("u", Some("7")));
        let guard = writes.start("u").expect("none on its way");
        assert!(writes.start("u").is_none());
        assert!(writes.overtakes("u", Some("7")));
        assert!(writes.overtakes("u", None));
        writes.landed("u", "7".into());
        drop(guard);
        // Landed over 7: a copy of 7 was read before it and is out of date by that write only.
        assert!(writes.overtakes("u", Some("7")));
        // A copy read after it (8), or another experiment's, is not.
        assert!(!writes.overtakes("u", Some("8")));
        assert!(!writes.overtakes("v", Some("7")));
        writes.forget("u");
        assert!(!writes.overtakes("u", Some("7")));
    }

    #[test]
    fn versions_our_writes_replaced_are_skipped_until_the_cache_catches_up() {
        let versions = Versions::default();
        versions.replaced(&experiment("u", "1"), Some("2"));
        versions.replaced(&experiment("u", "2"), Some("3"));
        // The watch delivers 2 (an intermediate write of ours): out of date.
        assert!(versions.is_superseded(&experiment("u", "2")));
        assert!(versions.is_superseded(&experiment("u", "1")));
        // Another experiment is not affected.
        assert!(!versions.is_superseded(&experiment("v", "1")));
        // 3 (or anything newer) is current and ends the entry.
        assert!(!versions.is_superseded(&experiment("u", "3")));
    }

    #[test]
    fn a_write_that_changed_nothing_supersedes_nothing() {
        let versions = Versions::default();
        // The server answered with the version it had: no new version, no watch event.
        versions.replaced(&experiment("u", "4"), Some("4"));
        assert!(!versions.is_superseded(&experiment("u", "4")));
    }
}

#[cfg(test)]
mod in_flight_tests {
    use super::*;

    #[test]
    fn one_write_behind_at_a_time_per_experiment() {
        let writes = InFlight::default();
        let first = writes.start("a").expect("none on its way");
        assert!(writes.start("a").is_none());
        assert!(
            writes.start("b").is_some(),
            "another experiment's is its own"
        );
        drop(first);
        assert!(writes.start("a").is_some());
    }
}

#[cfg(test)]
mod listed_tests {
    use kube::core::Status;

    use super::*;

    fn refused(code: u16) -> Result<watcher::Event<ConfigMap>, watcher::Error> {
        let mut status = Status::failure("configmaps is forbidden", "Forbidden");
        status.code = code;
        Err(watcher::Error::InitialListFailed(kube::Error::Api(
            Box::new(status),
        )))
    }

    #[test]
    fn a_watch_the_controller_may_not_read_counts_as_listed_and_a_failing_one_does_not() {
        let listed = Listed::default();
        let mut signal = listed.marker_unless_refused::<ConfigMap>(Watch::Signal);
        signal(&refused(500));
        assert_eq!(
            *listed.subscribe().borrow(),
            0,
            "a server error is retried, not skipped"
        );
        signal(&refused(403));
        assert_eq!(*listed.subscribe().borrow(), Watch::Signal as u8);

        let strict = Listed::default();
        let mut pause = strict.marker::<ConfigMap>(Watch::Pause);
        pause(&refused(403));
        assert_eq!(
            *strict.subscribe().borrow(),
            0,
            "the pause switch is never skipped"
        );
        pause(&Ok(watcher::Event::InitDone));
        assert_eq!(*strict.subscribe().borrow(), Watch::Pause as u8);
    }

    #[test]
    fn the_namespace_cache_answers_only_once_its_watch_has_listed() {
        use kube::runtime::reflector;

        let (store, mut writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let cache = NamespaceCache::new(store);
        let mut marker = cache.marker::<PartialObjectMeta<Namespace>>();
        let mut shop = PartialObjectMeta::<Namespace>::default();
        shop.metadata.name = Some("shop".into());
        shop.metadata.labels = Some([("faultline.dev/chaos".into(), "enabled".into())].into());
        writer.apply_watcher_event(&watcher::Event::Apply(shop));

        // Refused (an older chart) or not listed yet: the readers ask the API server.
        marker(&Err(watcher::Error::InitialListFailed(kube::Error::Api(
            Box::new(kube::core::Status::failure("forbidden", "Forbidden").with_code(403)),
        ))));
        assert_eq!(cache.get("shop"), None);

        marker(&Ok(watcher::Event::InitDone));
        let shop = cache.get("shop").expect("listed").expect("exists");
        assert_eq!(
            shop.labels.unwrap_or_default().get("faultline.dev/chaos"),
            Some(&"enabled".to_string())
        );
        assert_eq!(cache.get("gone"), Some(None), "listed, and not there");

        // A watch that fails after listing keeps its last state: not trusted until it lists
        // again.
        marker(&Err(watcher::Error::WatchFailed(kube::Error::Api(
            Box::new(kube::core::Status::failure("forbidden", "Forbidden").with_code(403)),
        ))));
        assert_eq!(cache.get("shop"), None, "the failed watch is not read");
        marker(&Ok(watcher::Event::Init));
        assert_eq!(cache.get("shop"), None, "still listing");
        marker(&Ok(watcher::Event::InitDone));
        assert!(cache.get("shop").is_some(), "listed again");
    }
}

#[cfg(test)]
mod target_reads_tests {
    use super::*;

    #[test]
    fn targets_are_read_at_most_once_per_interval_per_experiment() {
        let reads = TargetReads::default();
        let every = Duration::from_secs(1);
        let t0 = Instant::now();
        assert!(reads.due_at("a", every, t0));
        assert!(!reads.due_at("a", every, t0 + Duration::from_millis(300)));
        assert!(reads.due_at("b", every, t0 + Duration::from_millis(300)));
        assert!(!reads.due_at("a", every, t0 + Duration::from_millis(999)));
        assert!(reads.due_at("a", every, t0 + Duration::from_secs(1)));
        assert!(!reads.due_at("a", every, t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn old_entries_are_forgotten() {
        let reads = TargetReads::default();
        let t0 = Instant::now();
        reads.due_at("gone", Duration::from_secs(1), t0);
        reads.due_at("other", Duration::from_secs(1), t0 + FORGET_TARGET_READS);
        assert_eq!(reads.0.lock().unwrap().len(), 1);
    }
}
