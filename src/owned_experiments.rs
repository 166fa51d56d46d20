//! What GameDays and ChaosSchedules do through the API to the ChaosExperiments they own:
//! create them (owned, so deleting the parent deletes them and their faults), ask them to
//! abort, delete old ones, and write the parent's status and Events. (client required)

use std::{collections::BTreeMap, time::Duration};

use futures::Stream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
        PostParams, PropagationPolicy,
    },
    core::{DeserializeGuard, NamespaceResourceScope, error_boundary::InvalidObject},
    runtime::{
        WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;
use tracing::warn;

use crate::api::{ABORT_ANNOTATION, ChaosExperiment, ChaosExperimentSpec, Condition};
use crate::panics::{PANICKED_REASON, Panic};

/// A step of a GameDay's or ChaosSchedule's reconcile that the API server refused.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action}: {source}")]
pub struct StepError {
    pub action: &'static str,
    #[source]
    pub source: kube::Error,
}

/// For `map_err`: the API error of `action`.
pub fn failed(action: &'static str) -> impl FnOnce(kube::Error) -> StepError {
    move |source| StepError { action, source }
}

/// What to do after a failed reconcile: a conflict means we decided on a stale copy and the
/// newer one is on its way through the watch; anything else is retried shortly.
pub fn retry_after(error: &StepError) -> Action {
    if let kube::Error::Api(status) = &error.source
        && status.code == 409
    {
        return Action::await_change();
    }
    Action::requeue(Duration::from_secs(5))
}

/// Something worth an Event on the owner, decided by a pure planner.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Changes to the experiments carrying `label` (any value): what GameDays and schedules watch
/// to react at once when one of theirs moves. Guarded: one unreadable experiment must not stall
/// the stream.
pub fn changes_of_labelled(
    client: &Client,
    label: &str,
) -> impl Stream<Item = Result<DeserializeGuard<ChaosExperiment>, watcher::Error>> + Send + 'static
{
    watcher(
        Api::<DeserializeGuard<ChaosExperiment>>::all(client.clone()),
        watcher::Config::default().labels(label),
    )
    .default_backoff()
    .touched_objects()
}

/// An owner that bypassed the schema: `status` (a merge patch of the status) says why, nothing
/// is started.
pub async fn report_unreadable<K>(
    client: &Client,
    invalid: &InvalidObject,
    status: serde_json::Value,
) -> Result<Action, StepError>
where
    K: Resource<DynamicType = ()>,
{
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
    warn!(kind = %K::kind(&()), %name, %namespace, error = %invalid.error, "cannot be read");
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(failed("report that it cannot be read"))?;
    Ok(Action::await_change())
}

/// Whether an earlier reconcile of this generation of the owner panicked (a condition with
/// [`PANICKED_REASON`] says so): it is not run again until the spec is edited, since it would
/// only panic again.
pub fn panicked_before(conditions: &[Condition], generation: Option<i64>) -> bool {
    conditions
        .iter()
        .any(|c| c.reason == PANICKED_REASON && c.observed_generation == generation)
}

/// Reports on the owner that its reconcile panicked: `status` (a merge patch of the status)
/// says so, in a condition carrying [`PANICKED_REASON`] and the generation. Nothing else is
/// done for it until the spec is edited; every other object goes on.
pub async fn report_panicked<K>(
    client: &Client,
    object: &K,
    panic: &Panic,
    status: serde_json::Value,
) -> Result<Action, StepError>
where
    K: Resource<DynamicType = ()>,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    tracing::error!(kind = %K::kind(&()), %name, %namespace, %panic, "reconcile panicked; the object is quarantined");
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &resource);
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(failed("report that its reconcile panicked"))?;
    Ok(Action::await_change())
}

/// The sentence a panicked owner's status carries: what happened, where, and what it means.
pub fn panic_message(what: &str, panic: &Panic, consequence: &str) -> String {
    format!(
        "the controller failed on this {what} ({panic}), so it stopped acting on it: {consequence}. This is a faultline bug: please report it with this message. Editing the spec tries again"
    )
}

/// Whether chaos is paused cluster-wide, as the experiment controller's cache sees it.
pub type PausedSwitch = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// The experiments of `namespace` carrying `label=value` and owned by the object `owner_uid`.
/// Ones with the label but another owner (left by a deleted parent of the same name) come back
/// separately, so the caller can clear them out of the way.
pub async fn list(
    client: &Client,
    namespace: &str,
    label: &str,
    value: &str,
    owner_uid: &str,
) -> Result<(Vec<ChaosExperiment>, Vec<ChaosExperiment>), kube::Error> {
    let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), namespace);
    let all = api
        .list(&ListParams::default().labels(&format!("{label}={value}")))
        .await?
        .items;
    Ok(all.into_iter().partition(|e| {
        e.owner_references()
            .iter()
            .any(|o| o.uid == owner_uid && o.controller == Some(true))
    }))
}

/// A ChaosExperiment owned (as controller) by `owner`.
pub fn experiment(
    owner: OwnerReference,
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    spec: ChaosExperimentSpec,
) -> ChaosExperiment {
    ChaosExperiment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// Creates `experiment`; one that already exists (an earlier attempt got through) is fine.
pub async fn create(client: &Client, experiment: &ChaosExperiment) -> Result<(), kube::Error> {
    let api: Api<ChaosExperiment> =
        Api::namespaced(client.clone(), &experiment.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), experiment).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Sets the abort annotation on an experiment or a GameDay (what `faultline abort` does). One
/// that is gone already is fine.
pub async fn request_abort<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    reason: &str,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned,
    K: std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let patch = json!({ "metadata": { "annotations": { ABORT_ANNOTATION: reason } } });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes a finished experiment (its finalizer still makes sure nothing is left behind).
pub async fn delete(client: &Client, namespace: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Replaces `object`'s status with `status` (a PUT of the status subresource: fields that are
/// gone from `status` go from the object too, which an apply would only do on a server that
/// tracks field ownership). Conditional on the resourceVersion we decided on: a decision made on
/// a stale copy gets a 409 instead of overwriting a newer status. A status that would not
/// change is not written.
pub async fn write_status<K, S>(
    client: &Client,
    object: &K,
    current: Option<&S>,
    status: &S,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned,
    K: Serialize + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current.is_some_and(|c| {
        c == status || serde_json::to_value(c).ok() == serde_json::to_value(status).ok()
    }) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let mut body = serde_json::to_value(object).map_err(kube::Error::SerdeError)?;
    body["status"] = serde_json::to_value(status).map_err(kube::Error::SerdeError)?;
    let body: K = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
    api.replace_status(&object.name_any(), &PostParams::default(), &body)
        .await?;
    Ok(())
}

/// The Events recorder of the controllers that own experiments.
pub fn recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "faultline-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    )
}

/// Logs and publishes the planner's notes as Events on `object`.
pub async fn publish_notes<K>(recorder: &Recorder, object: &K, notes: &[Note])
where
    K: Resource<DynamicType = ()>,
{
    for note in notes {
        tracing::info!(kind = %K::kind(&()), reason = note.reason, message = %note.message, "note");
        publish(recorder, object, note.warning, note.reason, &note.message).await;
    }
}

/// Publishes an Event on `object`; one that cannot be published is logged, never fatal (status
/// holds the same facts).
pub async fn publish<K>(recorder: &Recorder, object: &K, warning: bool, reason: &str, note: &str)
where
    K: Resource<DynamicType = ()>,
{
    let mut note = note.to_string();
    note.truncate(1024);
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        warn!(%error, reason, "could not publish event");
    }
}

/// A Kubernetes timestamp as chrono's.
pub fn to_chrono(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().unsigned_abs())
        .unwrap_or_else(chrono::Utc::now)
}
