//! What the controller's own writes did: the experiment versions they replaced, the writes on
//! their way that nobody waits for, and when each experiment's status was last written.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use chrono::{DateTime, Utc};
use kube::{ResourceExt, core::DeserializeGuard};

use crate::api::ChaosExperiment;

/// Experiments (by UID) with a write on its way that nobody waits for (see
/// `status::write_behind`), and, once such a write landed, the version it replaced.
#[derive(Clone, Default)]
pub struct InFlight {
    on_its_way: Arc<Mutex<HashSet<String>>>,
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
