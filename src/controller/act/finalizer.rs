//! The experiment finalizer: on before anything is injected, so that a deletion always passes
//! through our revert; off once no fault can be left. (client required)

use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{Context, Error, Result, act_error};
use crate::api::{ChaosExperiment, EXPERIMENT_FINALIZER};

/// Adds the experiment finalizer before anything else, so a deletion always passes through
/// our revert. A finished experiment does not get it back. Returns the object as written when
/// it changed it.
pub async fn ensure_finalizer(
    ctx: &Context,
    experiment: &ChaosExperiment,
) -> Result<Option<ChaosExperiment>> {
    let finished = experiment
        .status
        .as_ref()
        .is_some_and(|s| s.phase.is_terminal());
    let has_finalizer = experiment
        .finalizers()
        .iter()
        .any(|f| f == EXPERIMENT_FINALIZER);
    if finished || has_finalizer || experiment.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let api: Api<ChaosExperiment> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let mut finalizers = experiment.finalizers().to_vec();
    finalizers.push(EXPERIMENT_FINALIZER.into());
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": experiment.resource_version() }
    });
    let updated = api
        .patch(
            &experiment.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(act_error("add the finalizer"))?;
    Ok(Some(updated))
}

/// Releases the experiment finalizer. The first attempt goes from our own copy (our writes in
/// this reconcile have kept its resourceVersion current); if someone else changed the object
/// since, it is read afresh.
pub(super) async fn remove_finalizer(ctx: &Context, experiment: &ChaosExperiment) -> Result<()> {
    let api: Api<ChaosExperiment> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let mut current = experiment.clone();
    for attempt in 0..4 {
        if attempt > 0 {
            match api
                .get_opt(&experiment.name_any())
                .await
                .map_err(Error::Observe)?
            {
                Some(fresh) => current = fresh,
                None => return Ok(()),
            }
        }
        let ours = current
            .finalizers()
            .iter()
            .any(|f| f == EXPERIMENT_FINALIZER);
        if attempt == 0 && !ours {
            // Our copy may predate the finalizer: ask.
            continue;
        }
        if current.uid() != experiment.uid() || !ours {
            return Ok(());
        }
        let finalizers: Vec<&String> = current
            .finalizers()
            .iter()
            .filter(|f| *f != EXPERIMENT_FINALIZER)
            .collect();
        let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": current.resource_version() } });
        match api
            .patch(
                &experiment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(updated) => {
                ctx.caches
                    .versions
                    .replaced(&current, updated.resource_version().as_deref());
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(act_error("remove the finalizer")(e)),
        }
    }
    Err(act_error("remove the finalizer")(kube::Error::Api(
        kube::core::Status::failure("the experiment kept changing", "Conflict").boxed(),
    )))
}
