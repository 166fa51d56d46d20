//! Which FaultInjection events are a finished experiment's housekeeping, and so wake nobody.
//! An experiment that ended (its receipts confirmed every fault reverted) deletes its
//! FaultInjections as it goes; each deletion used to reconcile it, and again when its agent let
//! go of the object: 289 reconciles of a 500-target experiment in the 4.4 s after its abort, in
//! one traced run on the real control plane, each reading the 500 target records for nothing
//! (`act::wait` has nothing to do for a finished experiment while some of its injections are
//! still on their way out). Only the last one's going matters: then the experiment forgets its
//! revert and lets go of its finalizer if it still holds it. Reads the watch caches only.

use kube::runtime::reflector::Store;
use kube::{ResourceExt, core::DeserializeGuard};

use super::caches::{belongs_to, with_owner};
use crate::api::{ChaosExperiment, FaultInjection};

/// The watch caches the decision reads: the experiments, and the injections as they are
/// after the event (the injection watch's cache is written before its events are filtered).
pub struct Housekeeping {
    pub experiments: Store<DeserializeGuard<ChaosExperiment>>,
    pub injections: Store<FaultInjection>,
}

/// What became of the injection the event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Going {
    /// Changed, and on its way out (a deletion timestamp): its agent reverting, or letting go.
    BeingDeleted,
    /// Gone from the API server.
    Deleted,
}

impl Housekeeping {
    /// Whether the event about `injection` is only housekeeping of a finished experiment: the
    /// injection is on its way out, its experiment (as cached) has ended, and, for a deletion,
    /// another of its injections is still there to be waited for. Anything the cache cannot
    /// tell (no owner label, the experiment not cached or of another UID, unreadable) is not.
    pub fn is_only_housekeeping(&self, injection: &FaultInjection, going: Option<Going>) -> bool {
        let Some(going) = going else {
            return false;
        };
        let owner = with_owner(&self.experiments, injection, |experiment| {
            let finished = experiment
                .status
                .as_ref()
                .is_some_and(|s| s.phase.is_terminal());
            finished.then(|| (experiment.name_any(), experiment.uid().unwrap_or_default()))
        });
        let Some((name, uid)) = owner.flatten() else {
            return false;
        };
        let namespace = injection.namespace().unwrap_or_default();
        match going {
            Going::BeingDeleted => true,
            Going::Deleted => self
                .injections
                .find(|other| belongs_to(other, &namespace, &name, &uid))
                .is_some(),
        }
    }
}

/// How `injection` is going, as an added or changed object shows it.
pub fn going(injection: &FaultInjection) -> Option<Going> {
    injection
        .metadata
        .deletion_timestamp
        .is_some()
        .then_some(Going::BeingDeleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChaosExperimentStatus, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::runtime::{reflector, watcher};
    use serde_json::json;

    fn experiment(phase: Phase) -> ChaosExperiment {
        let mut experiment: ChaosExperiment = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": "e", "namespace": "shop", "uid": "exp-uid"},
            "spec": {"target": {"namespace": "shop", "selector": {"matchLabels": {"app": "web"}}},
                     "faults": [{"networkLatency": {"latency": "50ms"}}], "duration": "1m"},
        }))
        .unwrap();
        experiment.status = Some(ChaosExperimentStatus {
            phase,
            ..Default::default()
        });
        experiment
    }

    fn injection(name: &str, experiment_uid: &str, deleting: bool) -> FaultInjection {
        let mut injection: FaultInjection = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
            "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"),
                         "labels": {"faultline.dev/experiment": "e"}},
            "spec": {"experiment": {"name": "e", "uid": experiment_uid},
                     "target": {"namespace": "shop", "name": name, "uid": "p"},
                     "nodeName": "node-1", "fault": {"partition": "both", "peerCidrs": ["10.0.0.0/8"]},
                     "expiresAt": "2030-01-01T00:00:00Z"},
        }))
        .unwrap();
        if deleting {
            injection.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        }
        injection
    }

    /// The caches with `experiment` (if any) and `injections` in them.
    fn caches(experiment: Option<ChaosExperiment>, injections: &[FaultInjection]) -> Housekeeping {
        let (experiments, mut experiment_writer) = reflector::store();
        if let Some(experiment) = experiment {
            let guarded = DeserializeGuard(Ok(experiment));
            experiment_writer.apply_watcher_event(&watcher::Event::Apply(guarded));
        }
        let (injection_store, mut injection_writer) = reflector::store();
        for injection in injections {
            injection_writer.apply_watcher_event(&watcher::Event::Apply(injection.clone()));
        }
        Housekeeping {
            experiments,
            injections: injection_store,
        }
    }

    #[test]
    fn a_finished_experiments_injections_going_wake_it_only_for_the_last() {
        let (a, b) = (
            injection("a", "exp-uid", true),
            injection("b", "exp-uid", true),
        );
        let both_left = caches(Some(experiment(Phase::Aborted)), &[a.clone(), b.clone()]);
        assert!(both_left.is_only_housekeeping(&a, going(&a)));
        // `a` deleted: the cache no longer has it, `b` is still to go.
        let one_left = caches(Some(experiment(Phase::Aborted)), std::slice::from_ref(&b));
        assert!(one_left.is_only_housekeeping(&a, Some(Going::Deleted)));
        // `b`, the last, deleted: news.
        let none_left = caches(Some(experiment(Phase::Aborted)), &[]);
        assert!(!none_left.is_only_housekeeping(&b, Some(Going::Deleted)));
    }

    #[test]
    fn while_the_experiment_runs_or_reverts_every_going_is_news() {
        let (a, b) = (
            injection("a", "exp-uid", true),
            injection("b", "exp-uid", true),
        );
        for phase in [
            Phase::Injecting,
            Phase::Running,
            Phase::Aborting,
            Phase::Recovering,
        ] {
            let hk = caches(Some(experiment(phase)), std::slice::from_ref(&b));
            assert!(!hk.is_only_housekeeping(&a, going(&a)), "{phase:?}");
            assert!(
                !hk.is_only_housekeeping(&a, Some(Going::Deleted)),
                "{phase:?}"
            );
        }
    }

    #[test]
    fn what_the_cache_cannot_vouch_for_is_news() {
        let a = injection("a", "exp-uid", true);
        let other = injection("other", "exp-uid", true);
        // Not on its way out: a finished experiment's undeleted injection is its to delete.
        let standing = injection("a", "exp-uid", false);
        let finished = caches(
            Some(experiment(Phase::Succeeded)),
            std::slice::from_ref(&other),
        );
        assert!(!finished.is_only_housekeeping(&standing, going(&standing)));
        // No experiment cached (not listed yet, or gone).
        let none = caches(None, std::slice::from_ref(&other));
        assert!(!none.is_only_housekeeping(&a, Some(Going::Deleted)));
        // The cached experiment is a later one of the same name.
        let earlier = injection("a", "earlier-uid", true);
        assert!(!finished.is_only_housekeeping(&earlier, going(&earlier)));
        // No owner label.
        let mut unlabelled = a.clone();
        unlabelled.metadata.labels = None;
        assert!(!finished.is_only_housekeeping(&unlabelled, going(&unlabelled)));
    }
}
