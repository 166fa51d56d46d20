//! Experiments the controller cannot act on: one that cannot be read (it bypassed the CRD
//! schema: an old CRD, a direct write to etcd), and one whose reconcile panicked. Neither may
//! stall the watcher nor take the controller down: the experiment is quarantined. Its status
//! says what went wrong, whatever faults it had are reverted from the FaultInjections' labels
//! alone (no spec needed), and its finalizer is released once they are gone, so `kubectl
//! delete` is never blocked. Every other experiment goes on. (client required)

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams},
    core::error_boundary::InvalidObject,
    runtime::controller::Action,
};
use serde_json::json;
use std::time::Duration;
use tracing::{error, warn};

use super::{Context, Error, Result, injections};
use crate::{
    api::{
        ChaosExperiment, EXPERIMENT_FINALIZER, EXPERIMENT_LABEL, FaultInjection, packed_records,
    },
    metrics::ReasonLabel,
    panics::{PANICKED_REASON, Panic},
    unreadable,
};

/// `status.reason` of an experiment that cannot be read.
const UNREADABLE_REASON: &str = "InvalidSpec";

/// An experiment that cannot be read.
pub async fn reconcile_invalid(ctx: &Context, invalid: &InvalidObject) -> Result<Action> {
    warn!(experiment = ?invalid.metadata.name, namespace = ?invalid.metadata.namespace,
          error = %invalid.error, "experiment cannot be read");
    // A status faultline cannot read says its own remedy; the manifest is not at fault.
    let remedy = if invalid.error.contains(packed_records::UNREADABLE) {
        ""
    } else {
        ". Fix the manifest (faultline validate shows every problem) and apply it again"
    };
    // Said from the object quarantine reads anyway, with the field's path where it has one.
    let problem = |object: &DynamicObject| {
        let what = unreadable::where_it_fails::<ChaosExperiment>(object)
            .unwrap_or_else(|| invalid.error.clone());
        format!(
            "the experiment cannot be read, so nothing new is injected{{reverting}}: {what}{remedy}"
        )
    };
    quarantine(ctx, &invalid.metadata, UNREADABLE_REASON, problem).await
}

/// An experiment whose reconcile panicked: reported, reverted, released. It is Failed from then
/// on, as any finished experiment.
pub async fn reconcile_panicked(
    ctx: &Context,
    experiment: &ChaosExperiment,
    panic: &Panic,
) -> Result<Action> {
    error!(experiment = %experiment.name_any(), %panic, "reconcile panicked; the experiment is quarantined");
    ctx.metrics
        .reconcile_failures
        .get_or_create(&ReasonLabel {
            reason: PANICKED_REASON.into(),
        })
        .inc();
    ctx.hypotheses.forget(&experiment.uid().unwrap_or_default());
    let problem = panic_problem(panic);
    quarantine(ctx, &experiment.metadata, PANICKED_REASON, |_| problem).await
}

/// Whether an earlier reconcile panicked: the controller does not run the experiment again (it
/// would panic again), it only finishes the quarantine. Returns the reported problem.
pub fn panicked_before(experiment: &ChaosExperiment) -> Option<String> {
    let status = experiment.status.as_ref()?;
    (status.reason.as_deref() == Some(PANICKED_REASON))
        .then(|| status.message.clone().unwrap_or_default())
}

/// Goes on quarantining an experiment [`panicked_before`] found.
pub async fn reconcile_quarantined(
    ctx: &Context,
    experiment: &ChaosExperiment,
    problem: &str,
) -> Result<Action> {
    let problem = problem.replace(REVERTING, "{reverting}");
    quarantine(ctx, &experiment.metadata, PANICKED_REASON, |_| problem).await
}

/// What `{reverting}` in a problem becomes while FaultInjections are left.
const REVERTING: &str = " and its faults are being reverted";

fn panic_problem(panic: &Panic) -> String {
    format!(
        "the controller failed on this experiment ({panic}), so it stopped acting on it: nothing new is injected{{reverting}}. This is a faultline bug: please report it with this message"
    )
}

/// Reports the problem (`problem` of the experiment as stored, with `{reverting}` filled in)
/// in the status, deletes the experiment's FaultInjections and, once none is left, releases
/// the finalizer.
async fn quarantine(
    ctx: &Context,
    metadata: &ObjectMeta,
    reason: &str,
    problem: impl FnOnce(&DynamicObject) -> String,
) -> Result<Action> {
    let name = metadata.name.clone().unwrap_or_default();
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let fault_api: Api<FaultInjection> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={name}"));
    let left: Vec<FaultInjection> = fault_api
        .list(&params)
        .await
        .map_err(Error::Observe)?
        .items
        .into_iter()
        .filter(|i| i.spec.experiment.uid == metadata.uid)
        .collect();
    if left.iter().any(|i| i.metadata.deletion_timestamp.is_none()) {
        injections::delete_all(&fault_api, &name)
            .await
            .map_err(|source| Error::Act {
                action: "delete FaultInjections",
                source,
            })?;
    }

    let resource = ApiResource::erase::<ChaosExperiment>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    // Written only when it says something new: our own status write triggers the next
    // reconcile, and an unconditional one (a fresh lastTransitionTime) would never settle.
    let Some(object) = api.get_opt(&name).await.map_err(Error::Observe)? else {
        return Ok(Action::await_change());
    };
    let current = object.data.get("status").cloned().unwrap_or_default();
    let reverting = if left.is_empty() { "" } else { REVERTING };
    let message = problem(&object).replace("{reverting}", reverting);
    let unchanged = current["reason"] == reason
        && current["message"] == message.as_str()
        && current["observedGeneration"] == json!(metadata.generation);
    if !unchanged {
        let now = (ctx.now)();
        let status = json!({ "status": {
            "phase": "Failed", "verdict": "Error", "reason": reason, "message": message,
            "observedGeneration": metadata.generation,
            "conditions": [{ "type": "Complete", "status": "True", "reason": reason,
                              "message": message, "lastTransitionTime": now,
                              "observedGeneration": metadata.generation }],
        }});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .map_err(Error::Record)?;
    }

    if !left.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    release_finalizer(&api, metadata).await?;
    Ok(Action::await_change())
}

async fn release_finalizer(api: &Api<DynamicObject>, metadata: &ObjectMeta) -> Result<()> {
    let finalizers = metadata.finalizers.clone().unwrap_or_default();
    if !finalizers.iter().any(|f| f == EXPERIMENT_FINALIZER) {
        return Ok(());
    }
    let kept: Vec<&String> = finalizers
        .iter()
        .filter(|f| *f != EXPERIMENT_FINALIZER)
        .collect();
    let patch = json!({ "metadata": { "finalizers": kept } });
    let name = metadata.name.clone().unwrap_or_default();
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(object) => {
            tracing::debug!(rv = ?object.resource_version(), "released the finalizer of a quarantined experiment");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Act {
            action: "remove the finalizer",
            source,
        }),
    }
}
