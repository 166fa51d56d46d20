//! The kubelet's status manager for what happens to containers after they started: the runtime
//! reports a process that died, was restarted (`restartCount` + 1) or became ready, and this
//! writes the pod's `containerStatuses` and its Ready conditions; after missing updates it
//! reports every pod's state. A pod that is gone, being
//! deleted or replaced by another of the same name is left alone.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::kubelet::conditions;
use super::realpod::PodUpdate;
use super::{Context, Error, patch_params};

/// Reports the runtime's container updates until `shutdown`.
pub async fn report(ctx: Arc<Context>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some(mut updates) = ctx.options.runtime.subscribe() else {
        return;
    };
    loop {
        tokio::select! {
            () = async { let _ = shutdown.wait_for(|stop| *stop).await; } => return,
            update = updates.recv() => match update {
                Ok(update) => {
                    if let Err(error) = write(&ctx, &update).await {
                        tracing::warn!(pod = %update.name, %error, "container status not reported");
                    }
                }
                // An update is about one pod: a later one does not stand for a missed one of
                // another pod (hundreds of pods becoming ready at once overflow the channel).
                // Catch up with every pod's state now.
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "container updates missed; reporting every pod's state");
                    for update in ctx.options.runtime.current_states() {
                        if let Err(error) = write(&ctx, &update).await {
                            tracing::warn!(pod = %update.name, %error, "container status not reported");
                        }
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

async fn write(ctx: &Context, update: &PodUpdate) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &update.namespace);
    let pod = api
        .get_opt(&update.name)
        .await
        .map_err(|source| Error::kube("read", &update.name, source))?;
    let Some(pod) = pod else {
        return Ok(());
    };
    if pod.uid().as_deref() != Some(update.uid.as_str())
        || pod.metadata.deletion_timestamp.is_some()
    {
        return Ok(());
    }
    let ready = update.containers.iter().all(|c| c.ready);
    let status = json!({"status": {
        "containerStatuses": update.containers,
        "conditions": conditions(ready),
    }});
    api.patch_status(&update.name, &patch_params(), &Patch::Merge(status))
        .await
        .map_err(|source| Error::kube("report container status of", &update.name, source))?;
    tracing::debug!(pod = %update.name, ready, "container status reported");
    Ok(())
}
