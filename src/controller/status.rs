//! Writes the experiment's status (server-side apply, our field manager) and its Events.
//! (client required)

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType},
};
use serde_json::json;
use tracing::warn;

use super::{Context, Error, Result, object_reference};
use crate::api::{
    ChaosExperiment, ChaosExperimentStatus, FIELD_MANAGER, GROUP_VERSION, TimelineEntry,
};
use crate::lifecycle::record::push_timeline;

/// Replaces the status with `status` (we own every status field). The write is conditional on
/// `experiment`'s resourceVersion, which it then advances, so that several writes in one
/// reconcile chain correctly while a write based on a stale object gets a 409.
pub async fn write(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &ChaosExperimentStatus,
) -> Result<()> {
    let api: Api<ChaosExperiment> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": GROUP_VERSION,
        "kind": "ChaosExperiment",
        "metadata": { "resourceVersion": experiment.resource_version() },
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let updated = api
        .patch_status(&experiment.name_any(), &params, &Patch::Apply(patch))
        .await
        .map_err(Error::Record)?;
    experiment.metadata.resource_version = updated.metadata.resource_version;
    Ok(())
}

/// Adds a timeline entry and publishes the matching Event. An Event that cannot be published is
/// logged, never fatal: the status timeline holds the same facts.
pub async fn note(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    warning: bool,
    reason: &str,
    action: &str,
    message: String,
) {
    let now = (ctx.now)();
    push_timeline(
        &mut status.timeline,
        TimelineEntry {
            time: now,
            reason: reason.into(),
            message: message.clone(),
        },
    );
    let mut note = message;
    note.truncate(1024);
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx
        .recorder
        .publish(&event, &object_reference(experiment))
        .await
    {
        warn!(%error, reason, "could not publish event");
    }
}
