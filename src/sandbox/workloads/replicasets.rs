//! The ReplicaSet controller: keeps `spec.replicas` active pods (owned by the ReplicaSet, named
//! `<replicaset>-<random>`), and writes the ReplicaSet's status.
//!
//! Simplifications: a shortage is acted on only after `replacement_delay` (modelling the real
//! controller's latency; the real one creates at once; both create in slow-start batches, at
//! most 500 a pass); surplus pods are
//! deleted at once, least valuable first (unscheduled, then not running, then not ready, then
//! newest); `minReadySeconds` is ignored (ready = available); orphaned pods matching the
//! selector are not adopted. Pods are listed from the API on every reconcile (no informer
//! cache), so no "expectations" bookkeeping is needed.

use super::events::{self, Source};
use super::{Context, Error, is_active, is_ready};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// The pod the ReplicaSet creates: its template, owned by it, named after it.
pub fn pod_for(rs: &ReplicaSet) -> Result<Pod, Error> {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| {
            Error::Invalid(format!("ReplicaSet {} has no pod template", rs.name_any()))
        })?;
    let owner = rs
        .controller_owner_ref(&())
        .ok_or_else(|| Error::Invalid(format!("ReplicaSet {} has no uid yet", rs.name_any())))?;
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = None;
    metadata.generate_name = Some(format!("{}-", rs.name_any()));
    metadata.namespace = rs.namespace();
    metadata.owner_references = Some(vec![owner]);
    Ok(Pod {
        metadata,
        spec: template.spec,
        status: None,
    })
}

/// Order for scale-down: the pods worth least come first.
fn scale_down_rank(pod: &Pod) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some();
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (
        u8::from(scheduled),
        u8::from(running),
        u8::from(is_ready(pod)),
        std::cmp::Reverse(created),
    )
}

pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.uid().unwrap_or_default();
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = rs.spec.clone().unwrap_or_default();
    let desired = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = super::selector_string(&spec.selector);
    let owned: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::kube("list pods of", &name, source))?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();
    let mut active: Vec<&Pod> = owned.iter().filter(|p| is_active(p)).collect();

    let mut requeue = None;
    if active.len() < desired {
        let missing = desired - active.len();
        let noticed = *super::lock(&ctx.shortages)
            .entry(uid.clone())
            .or_insert_with(Instant::now);
        let waited = noticed.elapsed();
        if waited < ctx.options.replacement_delay {
            requeue = Some(ctx.options.replacement_delay - waited);
        } else {
            let pod = pod_for(&rs)?;
            // As the real controller: at most BURST_REPLICAS a pass, in slow-start batches
            // (1, 2, 4, ...) whose creates go out together; a batch with a failure ends the pass.
            // The status below then shows the pods made so far, and the next pass makes more.
            let wanted = missing.min(BURST_REPLICAS);
            let mut made = 0;
            let mut batch = 1;
            while made < wanted {
                let size = batch.min(wanted - made);
                let creates = (0..size).map(|_| create_pod(&ctx, &rs, &pods_api, &pod));
                let results = futures::future::join_all(creates).await;
                made += size;
                results.into_iter().collect::<Result<Vec<()>, Error>>()?;
                batch *= 2;
            }
            if missing > wanted {
                requeue = Some(Duration::ZERO);
            } else {
                super::lock(&ctx.shortages).remove(&uid);
            }
        }
    } else {
        super::lock(&ctx.shortages).remove(&uid);
    }
    if active.len() > desired {
        active.sort_by_key(|p| scale_down_rank(p));
        let surplus: Vec<&Pod> = active.drain(..active.len() - desired).collect();
        for pod in surplus {
            match pods_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(source) => return Err(Error::kube("delete a surplus pod of", &name, source)),
            }
            tracing::debug!(namespace = %ns, replicaset = %name, pod = %pod.name_any(), "surplus pod deleted");
            let message = format!("Deleted pod: {}", pod.name_any());
            let rs_ref = events::reference(rs.as_ref());
            events::record(
                &ctx.client,
                Source::ReplicaSetController,
                rs_ref,
                None,
                "SuccessfulDelete",
                &message,
            )
            .await;
        }
    }

    // Status as observed in this pass (the real controller does the same: the next pass,
    // triggered by the pod events, reports the pods created or deleted now).
    let ready = active.iter().filter(|p| is_ready(p)).count() as i32;
    let status = json!({
        "replicas": active.len() as i32,
        "fullyLabeledReplicas": active.len() as i32,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs.meta().generation,
    });
    let current =
        serde_json::to_value(rs.status.clone().unwrap_or_default()).map_err(Error::Encode)?;
    if !super::same_status(&current, &status) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        rs_api
            .patch_status(
                &name,
                &super::patch_params(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map_err(|source| Error::kube("update the status of", &name, source))?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The most pods one pass creates (`burstReplicas` of kube-controller-manager).
const BURST_REPLICAS: usize = 500;

async fn create_pod(
    ctx: &Context,
    rs: &ReplicaSet,
    pods_api: &Api<Pod>,
    pod: &Pod,
) -> Result<(), Error> {
    let name = rs.name_any();
    let created = pods_api
        .create(&PostParams::default(), pod)
        .await
        .map_err(|source| Error::kube("create a pod for", &name, source))?;
    tracing::debug!(replicaset = %name, pod = %created.name_any(), "pod created");
    let message = format!("Created pod: {}", created.name_any());
    events::record(
        &ctx.client,
        Source::ReplicaSetController,
        events::reference(rs),
        None,
        "SuccessfulCreate",
        &message,
    )
    .await;
    Ok(())
}

/// How long after a failed pass to try again.
pub fn retry_after(_rs: Arc<ReplicaSet>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "ReplicaSet reconcile failed");
    Action::requeue(Duration::from_millis(500))
}
