//! Which FaultInjection events are news to the experiment that owns them. Every event used to
//! reconcile the experiment; at 500 targets the agents' held `Applied` statuses (see the
//! agent's `acknowledge`) arrive seconds after the injection, 500 of them, each saying what the
//! node's applied receipt had already said, and each reconcile of a 500-target experiment
//! (10-25 ms of the controller, in a trace of one late abort) kept a core busy while the abort
//! that came then waited for CPU. An event is news when the injection as the experiment sees it
//! (its status overlaid by the receipts, see `applied_receipts::overlay`) changed in anything
//! a decision or the status reads; its own words for a fault the receipt counted in (when,
//! how, in which sentence) are not. Deletions are always news here (a finished experiment's
//! are sorted out by `housekeeping`). Pure but for the receipts it is handed.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::applied_receipts::{AppliedReceipt, applied_of, entry_for};
use crate::api::{Condition, FaultInjection, InjectionPhase};

/// What the owning experiment sees of one injection.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    generation: Option<i64>,
    deleting: bool,
    finalizers: Vec<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    status: SeenStatus,
}

#[derive(Clone, Debug, PartialEq)]
enum SeenStatus {
    /// Applied as far as the experiment is concerned, by the agent's own status or by its
    /// node's receipt: only what follows an applied fault (its counts, its conditions) counts.
    Applied {
        observed_generation: Option<i64>,
        matched_packets: i64,
        bypassed_packets: i64,
        conditions: Vec<Condition>,
    },
    /// Anything else, word for word.
    Other(Box<Option<crate::api::FaultInjectionStatus>>),
}

/// The injections as last seen, by UID. Kept as objects, not as views: a receipt that came
/// since (it comes through another watch, with no event of the injection's own) changes what
/// the earlier object meant, so both are read with the receipts of now. Shared with the watch
/// cache (the caller hands in the cache's copy), so that remembering costs no second copy.
#[derive(Default)]
pub struct InjectionNews {
    seen: HashMap<String, Arc<FaultInjection>>,
}

impl InjectionNews {
    /// Whether `injection` (as an added or changed object) is news; remembers it either way.
    /// `receipts` gives the applied receipts of an experiment by its UID (asked at most once,
    /// and only when an injection still pending could be counted in by them).
    pub fn is_news<R: Deref<Target = [AppliedReceipt]>>(
        &mut self,
        injection: impl Into<Arc<FaultInjection>>,
        receipts: impl FnOnce(&str) -> R,
    ) -> bool {
        let injection = injection.into();
        let Some(uid) = injection.uid() else {
            return true;
        };
        let Some(before) = self.seen.insert(uid, injection.clone()) else {
            return true;
        };
        let mut receipts = Some(receipts);
        let mut read: Option<R> = None;
        let mut counted = |injection: &FaultInjection| {
            let Some(experiment) = injection.spec.experiment.uid.as_deref() else {
                return false;
            };
            if let Some(receipts) = receipts.take() {
                read = Some(receipts(experiment));
            }
            read.as_deref()
                .is_some_and(|receipts| entry_for(injection, receipts).is_some())
        };
        seen(&before, &mut counted) != seen(&injection, &mut counted)
    }

    /// An injection as a listing brings it: news whatever it says, as every object listed is;
    /// remembered.
    pub fn listed(&mut self, injection: impl Into<Arc<FaultInjection>>) {
        let injection = injection.into();
        if let Some(uid) = injection.uid() {
            self.seen.insert(uid, injection);
        }
    }

    /// The listing is done and in the watch cache: what `listed` remembered is swapped for
    /// the cache's copy of the same version (`cached`), so that no second copy is kept.
    pub fn listing_done(
        &mut self,
        cached: impl Fn(&FaultInjection) -> Option<Arc<FaultInjection>>,
    ) {
        for remembered in self.seen.values_mut() {
            if let Some(shared) = cached(remembered)
                && shared.resource_version() == remembered.resource_version()
            {
                *remembered = shared;
            }
        }
    }

    /// An injection deleted: always news; forgotten.
    pub fn deleted(&mut self, injection: &FaultInjection) {
        if let Some(uid) = injection.uid() {
            self.seen.remove(&uid);
        }
    }

    /// The watch starts listing again: what it lists is news, what it no longer lists is gone.
    pub fn relisting(&mut self) {
        self.seen.clear();
    }
}

/// The applied receipts in the revert signal's ConfigMap, read once per version of it and
/// experiment (hundreds of injections of one experiment ask in a row).
#[derive(Default)]
pub struct ReceiptsRead {
    version: Option<String>,
    by_experiment: HashMap<String, Arc<[AppliedReceipt]>>,
}

impl ReceiptsRead {
    /// The applied receipts of the experiment with UID `uid` in `signal`.
    pub fn of(&mut self, signal: Option<&ConfigMap>, uid: &str) -> Arc<[AppliedReceipt]> {
        let version = signal.and_then(|map| map.resource_version());
        if version != self.version {
            self.by_experiment.clear();
            self.version = version;
        }
        self.by_experiment
            .entry(uid.to_string())
            .or_insert_with(|| {
                signal
                    .and_then(|map| map.data.as_ref())
                    .map(|data| applied_of(data, uid))
                    .unwrap_or_default()
                    .into()
            })
            .clone()
    }
}

/// What the experiment sees of `injection`; `counted` says whether a receipt counts it in.
fn seen(injection: &FaultInjection, counted: &mut impl FnMut(&FaultInjection) -> bool) -> Seen {
    let status = injection.status.as_ref();
    let phase = status.map_or(InjectionPhase::Pending, |s| s.phase);
    let applied = match phase {
        InjectionPhase::Applied => true,
        // Only a receipt can make a Pending one Applied; ask only then.
        InjectionPhase::Pending => counted(injection),
        InjectionPhase::Reverted | InjectionPhase::Failed => false,
    };
    let status = if applied {
        SeenStatus::Applied {
            observed_generation: status
                .and_then(|s| s.observed_generation)
                .filter(|_| phase == InjectionPhase::Applied)
                .or(injection.metadata.generation),
            matched_packets: status.and_then(|s| s.matched_packets).unwrap_or(0),
            bypassed_packets: status.and_then(|s| s.bypassed_packets).unwrap_or(0),
            conditions: status.map(|s| s.conditions.clone()).unwrap_or_default(),
        }
    } else {
        SeenStatus::Other(Box::new(injection.status.clone()))
    };
    Seen {
        generation: injection.metadata.generation,
        deleting: injection.metadata.deletion_timestamp.is_some(),
        finalizers: injection.finalizers().to_vec(),
        labels: injection.labels().clone(),
        annotations: injection.annotations().clone(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FaultInjectionStatus;
    use crate::controller::applied_receipts::AppliedEntry;
    use chrono::TimeZone;
    use serde_json::json;

    fn injection(status: Option<FaultInjectionStatus>) -> FaultInjection {
        let mut injection: FaultInjection = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
            "metadata": {"name": "fi-a", "namespace": "shop", "uid": "fi-uid", "generation": 1,
                         "resourceVersion": "10", "labels": {"faultline.dev/experiment": "e"}},
            "spec": {"experiment": {"name": "e", "uid": "exp-uid"},
                     "target": {"namespace": "shop", "name": "a", "uid": "p"},
                     "nodeName": "node-1", "fault": {"partition": "both", "peerCidrs": ["10.0.0.0/8"]},
                     "expiresAt": "2030-01-01T00:00:00Z"},
        }))
        .unwrap();
        injection.status = status;
        injection
    }

    fn receipt(node: &str, uid: &str, generation: i64) -> Vec<AppliedReceipt> {
        vec![AppliedReceipt {
            experiment: "shop/e".into(),
            node: node.into(),
            applied: BTreeMap::from([(
                "fi-a".to_string(),
                AppliedEntry {
                    uid: uid.into(),
                    generation: Some(generation),
                    applied_at: chrono::Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
                    mechanism: "nfqueue".into(),
                },
            )]),
        }]
    }

    fn applied(matched: Option<i64>) -> Option<FaultInjectionStatus> {
        Some(FaultInjectionStatus {
            phase: InjectionPhase::Applied,
            mechanism: Some("nfqueue".into()),
            applied_at: Some(chrono::Utc.timestamp_opt(1_800_000_001, 0).unwrap()),
            message: Some("latency 50ms via nfqueue in pod shop/a".into()),
            observed_generation: Some(1),
            matched_packets: matched,
            bypassed_packets: matched.map(|_| 0),
            ..Default::default()
        })
    }

    #[test]
    fn the_agents_own_applied_status_after_its_receipt_is_no_news() {
        let mut news = InjectionNews::default();
        let counted = |_: &str| receipt("node-1", "fi-uid", 1);
        assert!(news.is_news(injection(None), counted), "first seen");
        // Its own status, with no packets counted yet, says what the receipt said.
        let mut own = injection(applied(Some(0)));
        own.metadata.resource_version = Some("11".into());
        assert!(!news.is_news(own.clone(), counted));
        // Counts that move are news (the target record shows them).
        assert!(news.is_news(injection(applied(Some(40))), counted));
        assert!(!news.is_news(injection(applied(Some(40))), counted));
    }

    #[test]
    fn a_receipt_that_came_after_the_injection_was_seen_still_counts() {
        // As it goes: the injection is created (no receipt yet), the receipt comes through
        // the signal's watch, then the agent's own status.
        let mut news = InjectionNews::default();
        assert!(news.is_news(injection(None), |_: &str| Vec::new()));
        assert!(
            !news.is_news(injection(applied(Some(0))), |_: &str| receipt(
                "node-1", "fi-uid", 1
            ))
        );
    }

    #[test]
    fn an_applied_status_no_receipt_said_before_is_news() {
        let mut news = InjectionNews::default();
        let none = |_: &str| Vec::new();
        assert!(news.is_news(injection(None), none));
        assert!(news.is_news(injection(applied(None)), none));

        // A receipt for another node, another object of the same name or another generation
        // does not count it in.
        for other in [
            receipt("node-2", "fi-uid", 1),
            receipt("node-1", "older-uid", 1),
            receipt("node-1", "fi-uid", 2),
        ] {
            let mut news = InjectionNews::default();
            assert!(news.is_news(injection(None), |_| other.clone()));
            assert!(news.is_news(injection(applied(None)), |_| other.clone()));
        }
    }

    #[test]
    fn deletion_finalizers_labels_generation_and_any_other_phase_are_news() {
        let counted = |_: &str| receipt("node-1", "fi-uid", 1);
        let base = injection(applied(Some(0)));
        let changes: Vec<(&str, FaultInjection)> = vec![
            ("deleting", {
                let mut i = base.clone();
                i.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::from_second(1_800_000_002).unwrap(),
                    ));
                i
            }),
            ("finalizer", {
                let mut i = base.clone();
                i.metadata.finalizers = Some(vec!["faultline.dev/agent".into()]);
                i
            }),
            ("label", {
                let mut i = base.clone();
                i.labels_mut()
                    .insert("faultline.dev/reverting".into(), "true".into());
                i
            }),
            ("generation", {
                let mut i = base.clone();
                i.metadata.generation = Some(2);
                i
            }),
            ("reverted", {
                let mut i = base.clone();
                i.status.as_mut().unwrap().phase = InjectionPhase::Reverted;
                i
            }),
            ("condition", {
                let mut i = base.clone();
                i.status.as_mut().unwrap().conditions = vec![Condition {
                    type_: "FullyApplied".into(),
                    ..Default::default()
                }];
                i
            }),
        ];
        for (what, changed) in changes {
            let mut news = InjectionNews::default();
            assert!(news.is_news(base.clone(), counted));
            assert!(news.is_news(changed.clone(), counted), "{what}");
        }
        // A failure's words are news, each time they change.
        let failed = |message: &str| {
            injection(Some(FaultInjectionStatus {
                phase: InjectionPhase::Failed,
                message: Some(message.into()),
                ..Default::default()
            }))
        };
        let mut news = InjectionNews::default();
        assert!(news.is_news(failed("no such pod"), counted));
        assert!(news.is_news(failed("no such pod, retried"), counted));
    }

    #[test]
    fn the_receipts_are_read_only_for_an_injection_still_pending() {
        let mut news = InjectionNews::default();
        let mut asked = 0;
        news.is_news(injection(applied(None)), |_| {
            asked += 1;
            Vec::new()
        });
        assert_eq!(asked, 0);
        news.is_news(injection(None), |experiment| {
            assert_eq!(experiment, "exp-uid");
            asked += 1;
            Vec::new()
        });
        assert_eq!(asked, 1);
    }

    #[test]
    fn receipts_are_read_again_only_when_the_signal_changed() {
        let signal = |version: &str, node: &str| -> ConfigMap {
            let value = serde_json::to_string(&receipt(node, "fi-uid", 1)[0]).unwrap();
            serde_json::from_value(json!({
                "metadata": {"name": "faultline-reverting", "resourceVersion": version},
                "data": {format!("exp-uid.{node}"): value},
            }))
            .unwrap()
        };
        let mut read = ReceiptsRead::default();
        let first = read.of(Some(&signal("1", "node-1")), "exp-uid");
        assert_eq!(first.len(), 1);
        // Same version: the same read, even if handed another copy.
        let again = read.of(Some(&signal("1", "node-2")), "exp-uid");
        assert!(Arc::ptr_eq(&first, &again));
        let newer = read.of(Some(&signal("2", "node-2")), "exp-uid");
        assert_eq!(newer[0].node, "node-2");
        assert!(
            read.of(Some(&signal("2", "node-2")), "other-uid")
                .is_empty()
        );
        assert!(read.of(None, "exp-uid").is_empty());
    }

    #[test]
    fn a_deleted_or_relisted_injection_is_news_when_seen_again() {
        let mut news = InjectionNews::default();
        let i = injection(applied(None));
        assert!(news.is_news(i.clone(), |_| Vec::new()));
        assert!(!news.is_news(i.clone(), |_| Vec::new()));
        news.deleted(&i);
        assert!(news.is_news(i.clone(), |_| Vec::new()));
        news.relisting();
        assert!(news.is_news(i.clone(), |_| Vec::new()));
        news.relisting();
        news.listed(i.clone());
        assert!(
            !news.is_news(i.clone(), |_| Vec::new()),
            "listed, then the same again"
        );
    }

    #[test]
    fn after_a_listing_the_caches_copies_are_kept_not_the_listings() {
        let mut news = InjectionNews::default();
        let listed = injection(None);
        news.listed(listed.clone());
        let cache_copy = Arc::new(listed.clone());
        let mut newer = listed.clone();
        newer.metadata.resource_version = Some("99".into());
        // A cache that already holds a later version: the listed one is kept.
        news.listing_done(|_| Some(Arc::new(newer.clone())));
        assert!(!Arc::ptr_eq(&news.seen["fi-uid"], &cache_copy));
        assert_eq!(
            news.seen["fi-uid"].resource_version().as_deref(),
            Some("10")
        );
        news.listing_done(|_| Some(cache_copy.clone()));
        assert!(Arc::ptr_eq(&news.seen["fi-uid"], &cache_copy));
        // And it reads the same: no news.
        assert!(!news.is_news(listed, |_| Vec::new()));
    }
}
