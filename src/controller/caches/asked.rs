//! What this process has asked of the API server per experiment, and when: the reverts, and
//! the reads of the targets.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

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

#[cfg(test)]
mod tests {
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
