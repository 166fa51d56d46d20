//! Targets that leave an experiment while their network fault runs: the pod is gone (deleted,
//! scaled away, replaced by another pod of the same name), or consent is withdrawn (its
//! namespace lost `faultline.dev/chaos=enabled`, or the pod gained
//! `faultline.dev/protected=true`). Pure: the pods and namespaces come in, the departures go
//! out; `act` deletes each one's FaultInjection and publishes an Event naming the pod.
//!
//! Only records that carry a FaultInjection and may be in (Injecting, Injected) can leave: a
//! pod kill's target is expected to disappear (that is the fault), and a later round of kills
//! selects afresh, under the same safety rules as the first.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::{
    ChaosExperimentStatus, NAMESPACE_OPT_IN_LABEL, NAMESPACE_OPT_IN_VALUE, PROTECTED_LABEL,
    TargetRecord, TargetState,
};

/// One target that left, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    /// Index into `status.targets`.
    pub index: usize,
    /// `Gone` or `Withdrawn`.
    pub state: TargetState,
    /// PascalCase, for the Event: `TargetGone` or `ConsentWithdrawn`.
    pub reason: &'static str,
    /// Names the pod and why, e.g. `pod shop/web-1 was deleted`.
    pub message: String,
}

/// What observe found about the targets' pods and namespaces: their metadata, which is all a
/// departure depends on (identity, deletion, labels).
#[derive(Clone, Debug, Default)]
pub struct TargetWorld {
    /// The metadata of the pod now under each target's `namespace/name` (absent: no such pod).
    pub pods: BTreeMap<(String, String), ObjectMeta>,
    /// The metadata of the target namespaces that exist, with their labels.
    pub namespaces: Vec<ObjectMeta>,
    /// `--allow-all-namespaces`: the opt-in label is not required, so losing it means nothing.
    pub allow_all_namespaces: bool,
    /// FaultInjections (by name) that their agent reported Reverted before their deadline
    /// although nobody deleted them, with the agent's words: the agent found the target gone
    /// (e.g. its pod's network namespace replaced) while the pod object may still be there.
    pub agent_reverted: BTreeMap<String, String>,
    /// FaultInjections (by name) of targets whose fault was in that no longer exist, though
    /// faultline deleted none of them (someone ran `kubectl delete faultinjection`): their
    /// agents reverted the faults.
    pub deleted_by_others: std::collections::BTreeSet<String>,
}

/// The records whose faults can be in and that a departure can concern.
pub fn watched(record: &TargetRecord) -> bool {
    record.injection.is_some()
        && matches!(record.state, TargetState::Injecting | TargetState::Injected)
}

/// The targets that have left, in record order.
pub fn departures(records: &[TargetRecord], world: &TargetWorld) -> Vec<Departure> {
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| watched(r))
        .filter_map(|(index, record)| {
            let pod = format!("pod {}/{}", record.namespace, record.name);
            let gone = |why: &str| Departure {
                index,
                state: TargetState::Gone,
                reason: "TargetGone",
                message: format!("{pod} {why}; its fault went with it"),
            };
            let withdrawn = |why: String| Departure {
                index,
                state: TargetState::Withdrawn,
                reason: "ConsentWithdrawn",
                message: format!("{pod}: {why}; its fault was reverted at once"),
            };
            let found = world
                .pods
                .get(&(record.namespace.clone(), record.name.clone()));
            // A pod this experiment killed itself (a podKill on the same pod).
            let killed_here = records.iter().any(|r| {
                r.injection.is_none()
                    && r.uid == record.uid
                    && matches!(r.state, TargetState::Injected | TargetState::Reverted)
            });
            let killed = "was killed by this experiment's podKill";
            let Some(found) = found else {
                return Some(gone(if killed_here {
                    killed
                } else {
                    "was deleted (or its workload scaled it away)"
                }));
            };
            if !record.uid.is_empty() && found.uid.as_deref() != Some(&record.uid) {
                return Some(gone(if killed_here {
                    killed
                } else {
                    "was replaced by a new pod of the same name (the fault does not follow it)"
                }));
            }
            if found.deletion_timestamp.is_some() {
                return Some(gone(if killed_here {
                    killed
                } else {
                    "is being deleted"
                }));
            }
            if let Some(words) = record
                .injection
                .as_ref()
                .and_then(|name| world.agent_reverted.get(name))
            {
                return Some(Departure {
                    index,
                    state: TargetState::Gone,
                    reason: "TargetGone",
                    message: format!(
                        "{pod}: the agent on node {} reverted its fault on its own before the deadline ({words})",
                        record.node_name.as_deref().unwrap_or("?")
                    ),
                });
            }
            if let Some(name) = record
                .injection
                .as_ref()
                .filter(|name| world.deleted_by_others.contains(*name))
            {
                return Some(Departure {
                    index,
                    state: TargetState::Withdrawn,
                    reason: "FaultInjectionDeleted",
                    message: format!(
                        "{pod}: its FaultInjection {name} was deleted by someone other than faultline, and its agent reverted the fault; the experiment goes on without this target"
                    ),
                });
            }
            let protected = found
                .labels
                .as_ref()
                .and_then(|l| l.get(PROTECTED_LABEL))
                .is_some_and(|v| v == "true");
            if protected {
                return Some(withdrawn(format!("the pod was labelled {PROTECTED_LABEL}=true")));
            }
            let opted_in = world.allow_all_namespaces
                || world.namespaces.iter().any(|ns| {
                    ns.name.as_deref() == Some(record.namespace.as_str())
                        && ns
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(NAMESPACE_OPT_IN_LABEL))
                            .is_some_and(|v| v == NAMESPACE_OPT_IN_VALUE)
                });
            if !opted_in {
                return Some(withdrawn(format!(
                    "namespace {} no longer carries {NAMESPACE_OPT_IN_LABEL}={NAMESPACE_OPT_IN_VALUE}",
                    record.namespace
                )));
            }
            None
        })
        .collect()
}

/// Records each departure in its target's record.
pub fn record(status: &mut ChaosExperimentStatus, departures: &[Departure], now: DateTime<Utc>) {
    for d in departures {
        if let Some(record) = status.targets.get_mut(d.index) {
            record.state = d.state;
            record.message = Some(d.message.clone());
            record.reverted_at = Some(now);
        }
    }
}

/// `Some(why)` once every target with a network fault has left and no other target remains in
/// play (pod kills included): the experiment has nothing left to test.
pub fn all_left(status: &ChaosExperimentStatus) -> Option<String> {
    let left: Vec<&TargetRecord> = status
        .targets
        .iter()
        .filter(|r| matches!(r.state, TargetState::Gone | TargetState::Withdrawn))
        .collect();
    let remaining = status.targets.iter().any(|r| {
        matches!(
            r.state,
            TargetState::Selected | TargetState::Injecting | TargetState::Injected
        )
    });
    if left.is_empty() || remaining {
        return None;
    }
    let each: Vec<String> = left
        .iter()
        .map(|r| {
            r.message
                .clone()
                .unwrap_or_else(|| format!("pod {} left", r.name))
        })
        .collect();
    Some(format!(
        "every target left the experiment before it was over, so the hypothesis was not tested for its whole duration: {}",
        each.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn record(name: &str, state: TargetState) -> TargetRecord {
        TargetRecord {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            fault: "networkLatency".into(),
            state,
            injection: Some(format!("lat-{name}")),
            ..Default::default()
        }
    }

    fn pod(name: &str, uid: &str, labels: serde_json::Value) -> ((String, String), ObjectMeta) {
        let pod: ObjectMeta = serde_json::from_value(
            json!({"name": name, "namespace": "shop", "uid": uid, "labels": labels}),
        )
        .unwrap();
        (("shop".into(), name.into()), pod)
    }

    fn namespace(opted_in: bool) -> ObjectMeta {
        let labels = if opted_in {
            json!({NAMESPACE_OPT_IN_LABEL: NAMESPACE_OPT_IN_VALUE})
        } else {
            json!({})
        };
        serde_json::from_value(json!({"name": "shop", "labels": labels})).unwrap()
    }

    fn world(pods: Vec<((String, String), ObjectMeta)>, opted_in: bool) -> TargetWorld {
        TargetWorld {
            pods: pods.into_iter().collect(),
            namespaces: vec![namespace(opted_in)],
            ..Default::default()
        }
    }

    #[test]
    fn a_deleted_or_replaced_pod_is_gone_and_the_others_stay() {
        let records = vec![
            record("web-0", TargetState::Injected),
            record("web-1", TargetState::Injecting),
            record("web-2", TargetState::Injected),
        ];
        let w = world(
            vec![
                pod("web-0", "uid-web-0", json!({})),
                pod("web-2", "another-uid", json!({})),
            ],
            true,
        );
        let found = departures(&records, &w);
        assert_eq!(found.len(), 2);
        assert_eq!(
            (found[0].index, found[0].state, found[0].reason),
            (1, TargetState::Gone, "TargetGone")
        );
        assert!(found[0].message.starts_with("pod shop/web-1 was deleted"));
        assert_eq!((found[1].index, found[1].state), (2, TargetState::Gone));
        assert!(found[1].message.contains("replaced by a new pod"));
    }

    #[test]
    fn a_protected_label_or_a_lost_opt_in_withdraws_consent() {
        let records = vec![
            record("web-0", TargetState::Injected),
            record("web-1", TargetState::Injected),
        ];
        let w = world(
            vec![
                pod("web-0", "uid-web-0", json!({PROTECTED_LABEL: "true"})),
                pod("web-1", "uid-web-1", json!({})),
            ],
            true,
        );
        let found = departures(&records, &w);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].state, found[0].reason),
            (TargetState::Withdrawn, "ConsentWithdrawn")
        );
        assert!(
            found[0]
                .message
                .contains("was labelled faultline.dev/protected=true"),
            "{}",
            found[0].message
        );
        let w = world(
            vec![
                pod("web-0", "uid-web-0", json!({})),
                pod("web-1", "uid-web-1", json!({})),
            ],
            false,
        );
        let found = departures(&records, &w);
        assert_eq!(found.len(), 2);
        assert!(
            found[1]
                .message
                .contains("namespace shop no longer carries faultline.dev/chaos=enabled"),
            "{}",
            found[1].message
        );
        // --allow-all-namespaces: the label never mattered.
        let mut w = w;
        w.allow_all_namespaces = true;
        assert!(departures(&records, &w).is_empty());
    }

    #[test]
    fn a_fault_the_agent_reverted_on_its_own_is_gone_with_the_agents_words() {
        let records = vec![record("web-0", TargetState::Injected)];
        let mut w = world(vec![pod("web-0", "uid-web-0", json!({}))], true);
        assert!(departures(&records, &w).is_empty());
        w.agent_reverted.insert(
            "lat-web-0".into(),
            "the target pod is gone (a replacement pod is not followed)".into(),
        );
        let found = departures(&records, &w);
        assert_eq!(found[0].state, TargetState::Gone);
        assert!(
            found[0].message.contains(
                "reverted its fault on its own before the deadline (the target pod is gone"
            ),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn a_fault_whose_work_item_someone_deleted_is_withdrawn_and_the_rest_go_on() {
        let records = vec![
            record("web-0", TargetState::Injected),
            record("web-1", TargetState::Injected),
        ];
        let mut w = world(
            vec![
                pod("web-0", "uid-web-0", json!({})),
                pod("web-1", "uid-web-1", json!({})),
            ],
            true,
        );
        w.deleted_by_others.insert("lat-web-1".into());
        let found = departures(&records, &w);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].index, 1);
        assert_eq!(found[0].state, TargetState::Withdrawn);
        assert_eq!(found[0].reason, "FaultInjectionDeleted");
        assert!(
            found[0].message.starts_with(
                "pod shop/web-1: its FaultInjection lat-web-1 was deleted by someone other than faultline"
            ),
            "{}",
            found[0].message
        );
        // A pod that went is told as gone, whatever happened to its work item.
        let gone = world(vec![pod("web-0", "uid-web-0", json!({}))], true);
        let mut gone = gone;
        gone.deleted_by_others.insert("lat-web-1".into());
        assert_eq!(departures(&records, &gone)[0].reason, "TargetGone");
    }

    #[test]
    fn a_pod_this_experiment_killed_is_said_to_be_killed_here() {
        let mut kill = record("web-0", TargetState::Injected);
        kill.injection = None;
        kill.fault = "podKill".into();
        let latency = record("web-0", TargetState::Injected);
        let found = departures(&[kill, latency], &world(vec![], true));
        assert_eq!((found.len(), found[0].index), (1, 1));
        assert_eq!(
            found[0].message,
            "pod shop/web-0 was killed by this experiment's podKill; its fault went with it"
        );
    }

    #[test]
    fn pod_kills_and_finished_records_never_leave() {
        let mut kill = record("web-0", TargetState::Injected);
        kill.injection = None;
        let reverted = record("web-1", TargetState::Reverted);
        let gone_already = record("web-2", TargetState::Gone);
        assert!(departures(&[kill, reverted, gone_already], &world(vec![], true)).is_empty());
    }

    #[test]
    fn the_experiment_has_nothing_left_only_when_every_target_left() {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let mut status = ChaosExperimentStatus {
            targets: vec![
                record("web-0", TargetState::Injected),
                record("web-1", TargetState::Injected),
            ],
            ..Default::default()
        };
        let w = world(vec![pod("web-1", "uid-web-1", json!({}))], true);
        let found = departures(&status.targets, &w);
        super::record(&mut status, &found, now);
        assert_eq!(status.targets[0].state, TargetState::Gone);
        assert_eq!(status.targets[0].reverted_at, Some(now));
        assert_eq!(all_left(&status), None);
        let found = departures(&status.targets, &world(vec![], true));
        super::record(&mut status, &found, now);
        let why = all_left(&status).unwrap();
        assert!(why.contains("pod shop/web-0 was deleted"), "{why}");
        assert!(why.contains("pod shop/web-1 was deleted"), "{why}");
        assert!(!why.contains("agent"), "{why}");
    }
}
