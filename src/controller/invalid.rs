//! Experiments that cannot be read. An object that bypassed the CRD schema (an old CRD, a
//! direct write to etcd) must not stall the watcher nor panic the controller: it is reported in
//! its own status, and whatever faults it had are reverted from the labels alone.
//! (client required)

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
    core::error_boundary::InvalidObject,
    runtime::controller::Action,
};
use serde_json::json;
use std::time::Duration;
use tracing::warn;

use super::{Context, Error, Result, injections};
use crate::api::{ChaosExperiment, EXPERIMENT_FINALIZER, EXPERIMENT_LABEL, FaultInjection};

pub async fn reconcile_invalid(ctx: &Context, invalid: &InvalidObject) -> Result<Action> {
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
    warn!(experiment = %name, %namespace, error = %invalid.error, "experiment cannot be read");

    let fault_api: Api<FaultInjection> = Api::namespaced(ctx.client.clone(), &namespace);
    let params = ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={name}"));
    let left: Vec<FaultInjection> = fault_api
        .list(&params)
        .await
        .map_err(Error::Observe)?
        .items
        .into_iter()
        .filter(|i| i.spec.experiment.uid == invalid.metadata.uid)
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
    let now = (ctx.now)();
    let message = format!(
        "the experiment cannot be read, so nothing new is injected{}: {}. Fix the manifest (faultline validate shows every problem) and apply it again",
        if left.is_empty() {
            ""
        } else {
            " and its faults are being reverted"
        },
        invalid.error
    );
    let status = json!({ "status": {
        "phase": "Failed", "verdict": "Error", "reason": "InvalidSpec", "message": message,
        "conditions": [{ "type": "Complete", "status": "True", "reason": "Error",
                          "message": message, "lastTransitionTime": now }],
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map_err(Error::Record)?;

    if !left.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let finalizers = invalid.metadata.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == EXPERIMENT_FINALIZER) {
        let kept: Vec<&String> = finalizers
            .iter()
            .filter(|f| *f != EXPERIMENT_FINALIZER)
            .collect();
        let patch = json!({ "metadata": { "finalizers": kept } });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(object) => {
                tracing::debug!(rv = ?object.resource_version(), "released the finalizer of an unreadable experiment")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(Error::Act {
                    action: "remove the finalizer",
                    source,
                });
            }
        }
    }
    Ok(Action::await_change())
}
