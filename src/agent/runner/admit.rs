//! Which work items may act, and the quick writes for those that will not: consent from the
//! watch caches, the second look at the API server for the few that need it (the experiment
//! behind each apply and its target's namespace, a refused namespace's fresh labels, the pause
//! switch before a refusal on its word), then finalizers, refusals and the statuses of what
//! will not be applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::{Agent, PARALLEL_WRITES};
use crate::agent::admission::{self, Facts, Refusal, Verdict};
use crate::agent::converge::{self, Action, RevertReason};
use crate::agent::facts::Snapshot;
use crate::agent::kernel::Kernel;
use crate::agent::writeback::{StatusChange, StatusWriter, key_of};
use crate::api::{ChaosExperiment, FaultInjection, InjectionPhase};

impl<K: Kernel> Agent<K> {
    /// Whether this injection's fault may be on its target now, from the watch caches.
    pub(super) fn consent(&self, injection: &FaultInjection, facts: Option<&Snapshot>) -> Verdict {
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
    pub(super) async fn second_look(
        &self,
        plan: &converge::Plan,
        live: &[Arc<FaultInjection>],
    ) -> BTreeMap<String, Verdict> {
        let by_key: BTreeMap<String, &Arc<FaultInjection>> =
            live.iter().map(|i| (key_of(i), i)).collect();
        let mut to_vouch = Vec::new();
        let mut to_recheck = Vec::new();
        let mut paused_refusals = Vec::new();
        for action in &plan.actions {
            match action {
                Action::Apply { key } => to_vouch.extend(by_key.get(key).copied()),
                Action::Refuse {
                    key,
                    refusal: Refusal::NamespaceNotOptedIn,
                } => to_recheck.extend(by_key.get(key).copied()),
                Action::Refuse {
                    key,
                    refusal: Refusal::ChaosPaused,
                } => paused_refusals.push(key.clone()),
                _ => {}
            }
        }
        let mut verdicts = BTreeMap::new();
        if !paused_refusals.is_empty() && !self.paused_now().await {
            // The cache is behind a resume: decide when it has caught up.
            verdicts.extend(paused_refusals.into_iter().map(|k| (k, Verdict::Unknown)));
        }
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
        // The namespaces of what is about to be applied are read too: a consent withdrawn a
        // moment ago (the opt-in label removed) may not be in the cache yet.
        let vouching_namespaces = if self.policy.allow_all_namespaces {
            Vec::new()
        } else {
            to_vouch.clone()
        };
        let namespaces: BTreeSet<String> = vouching_namespaces
            .iter()
            .chain(&to_recheck)
            .map(|i| i.spec.target.namespace.clone())
            .collect();
        let client = &self.client;
        let experiments = futures::stream::iter(wanted.into_iter().map(|(namespace, name)| async move {
            let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), &namespace);
            let found = api.get_opt(&name).await.map_err(|error| {
                tracing::warn!(experiment = %format!("{namespace}/{name}"), %error, "cannot read the experiment behind an injection; it is not applied until the agent can");
            });
            ((namespace, name), found)
        }))
        .buffer_unordered(PARALLEL_WRITES)
        .collect::<BTreeMap<(String, String), Result<Option<ChaosExperiment>, ()>>>();
        let (experiments, opted_in) = futures::join!(experiments, self.opted_in_now(namespaces));
        for injection in to_vouch {
            let key = (
                injection.namespace().unwrap_or_default(),
                injection.spec.experiment.name.clone(),
            );
            let verdict = match experiments.get(&key) {
                Some(Ok(found)) => match admission::vouched(injection, found.as_ref()) {
                    Ok(()) if self.policy.allow_all_namespaces => continue,
                    Ok(()) => match opted_in.get(&injection.spec.target.namespace) {
                        Some(Some(true)) => continue,
                        Some(Some(false)) => Verdict::Refused(Refusal::NamespaceNotOptedIn),
                        _ => Verdict::Unknown,
                    },
                    Err(refusal) => Verdict::Refused(refusal),
                },
                _ => Verdict::Unknown,
            };
            verdicts.insert(key_of(injection), verdict);
        }
        for injection in to_recheck {
            // Opted in after all, or cannot tell: the cache is behind, or the read failed;
            // decide at the next step rather than refuse on a guess.
            if opted_in.get(&injection.spec.target.namespace) != Some(&Some(false)) {
                verdicts.insert(key_of(injection), Verdict::Unknown);
            }
        }
        verdicts
    }

    /// Whether each namespace carries the opt-in label, as the API server says now (`None`:
    /// the read failed; a namespace that is gone did not opt in).
    async fn opted_in_now(&self, names: BTreeSet<String>) -> BTreeMap<String, Option<bool>> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        futures::stream::iter(names.into_iter().map(|name| {
            let api = api.clone();
            async move {
                let opted_in = match api.get_opt(&name).await {
                    Ok(found) => Some(found.is_some_and(|ns| {
                        ns.labels()
                            .get(crate::api::NAMESPACE_OPT_IN_LABEL)
                            .is_some_and(|v| v == crate::api::NAMESPACE_OPT_IN_VALUE)
                    })),
                    Err(error) => {
                        tracing::warn!(namespace = %name, %error, "cannot read a target's namespace; its work items wait");
                        None
                    }
                };
                (name, opted_in)
            }
        }))
        .buffer_unordered(PARALLEL_WRITES)
        .collect()
        .await
    }

    /// Whether chaos is paused, as the API server says now. Cannot tell: not paused, so that
    /// the refusal waits for the next step rather than being made on a guess (nothing is
    /// applied meanwhile: the cache still says paused).
    async fn paused_now(&self) -> bool {
        let namespace = &self.policy.controller_namespace;
        crate::controller::pause_switch::paused_now(&self.client, namespace)
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "cannot read the pause switch; the refusal waits");
                false
            })
    }

    /// Finalizers, and statuses of what will not be applied: concurrently.
    pub(super) async fn quick_actions(
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
pub(super) async fn notify(
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
