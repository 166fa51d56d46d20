//! Kubernetes Events about experiments: one Event per fact a person should see. (client
//! required)
//!
//! Why not kube-runtime's `Recorder`: it folds every Event with the same type, reason, action
//! and objects into one `EventSeries` and keeps the first note, so "pod web-1 not killed: the
//! budget needs 2" and, a moment later, "pod web-2 not killed: ..." became one Event with
//! `series.count: 2` that names only web-1. Here a repeat is the same fact again: the same
//! reason, action, note and pod. The pod a fact is about is the Event's `related` object, so
//! `kubectl get events --field-selector related.name=web-2` finds it too.
//!
//! Repeats within six minutes (kube-runtime's window) become a series on the first Event;
//! anything else is a new Event. The cache of what was published is per process: after a
//! restart a repeat starts a new Event, which loses nothing.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::api::TargetRecord;

/// How long a published fact counts as "the same Event" for a repeat.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// The longest note the API server takes (events.k8s.io/v1 refuses more than 1 kB).
const MAX_NOTE: usize = 1024;

/// One thing that happened, for a person: the timeline entry and the Event say the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fact {
    pub warning: bool,
    /// PascalCase, e.g. `PodKillSkipped`.
    pub reason: String,
    /// The short verb, e.g. `Inject`.
    pub action: String,
    /// The sentence; it names the pod and the reason when there is one.
    pub message: String,
    /// The pod the fact is about.
    pub pod: Option<PodOf>,
}

/// The pod a fact is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodOf {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodOf {
    /// The pod as an Event's `regarding` or `related` object.
    pub fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: Some(self.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        }
    }
}

impl Fact {
    pub fn normal(reason: &str, action: &str, message: impl Into<String>) -> Fact {
        Fact {
            warning: false,
            reason: reason.into(),
            action: action.into(),
            message: message.into(),
            pod: None,
        }
    }

    pub fn warning(reason: &str, action: &str, message: impl Into<String>) -> Fact {
        Fact {
            warning: true,
            ..Fact::normal(reason, action, message)
        }
    }

    /// The same fact, about the target pod of `record`.
    pub fn about(mut self, record: &TargetRecord) -> Fact {
        self.pod = Some(PodOf {
            namespace: record.namespace.clone(),
            name: record.name.clone(),
            uid: record.uid.clone(),
        });
        self
    }
}

/// Who publishes: the controller and this replica.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub controller: String,
    pub instance: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: (Option<String>, Option<String>, Option<String>),
    warning: bool,
    reason: String,
    action: String,
    note: String,
    pod: Option<PodOf>,
}

#[derive(Clone, Debug)]
struct Published {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

/// Publishes Events; share one per controller so that repeats become series.
pub struct EventRecorder {
    client: Client,
    reporter: Reporter,
    published: Mutex<HashMap<Key, Published>>,
}

impl EventRecorder {
    pub fn new(client: Client, reporter: Reporter) -> EventRecorder {
        EventRecorder {
            client,
            reporter,
            published: Mutex::default(),
        }
    }

    /// Publishes `fact` about `regarding` (an experiment).
    pub async fn publish(
        &self,
        fact: &Fact,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let note = truncated(&fact.message);
        let key = Key {
            regarding: (
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            warning: fact.warning,
            reason: fact.reason.clone(),
            action: fact.action.clone(),
            note: note.clone(),
            pod: fact.pod.clone(),
        };
        let previous = {
            let mut published = self.lock();
            published.retain(|_, p| p.at.elapsed() < SERIES_WINDOW);
            published.get(&key).cloned()
        };
        let now = Timestamp::now();
        if let Some(previous) = previous {
            let count = previous.count + 1;
            let api: Api<Event> = Api::namespaced(self.client.clone(), &previous.namespace);
            let patch = json!({ "series": EventSeries {
                count,
                last_observed_time: MicroTime(now),
            }});
            match api
                .patch(
                    &previous.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    self.lock().insert(
                        key,
                        Published {
                            count,
                            at: Instant::now(),
                            ..previous
                        },
                    );
                    return Ok(());
                }
                // Gone (expired or deleted): the repeat becomes an Event of its own.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error),
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if fact.warning { "Warning" } else { "Normal" }.into()),
            reason: Some(fact.reason.clone()),
            action: Some(fact.action.clone()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            related: fact.pod.as_ref().map(PodOf::reference),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        self.lock().insert(
            key,
            Published {
                namespace,
                name,
                count: 1,
                at: Instant::now(),
            },
        );
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Published>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// At most [`MAX_NOTE`] bytes, cut at a character boundary.
fn truncated(message: &str) -> String {
    if message.len() <= MAX_NOTE {
        return message.to_string();
    }
    let mut end = MAX_NOTE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncated("short"), "short");
        let long = "é".repeat(600); // 1,200 bytes
        let cut = truncated(&long);
        assert!(cut.len() <= MAX_NOTE && cut.len() >= MAX_NOTE - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
