//! The Deployment controller: one ReplicaSet per pod template (`<deployment>-<pod-template-hash>`,
//! owned by the Deployment, the hash also a label and a selector term), scaled to
//! `spec.replicas`; the Deployment's status summed up from its ReplicaSets.
//!
//! Revisions as the real controller keeps them: the `deployment.kubernetes.io/revision`
//! annotation on the Deployment and its newest ReplicaSet (one more than any older one), with
//! `desired-replicas` and `max-replicas` beside it; `ScalingReplicaSet` Events for every scale.
//!
//! Simplifications: a template change scales the new ReplicaSet to `replicas` and the old ones
//! to 0 in one step (no rolling surge/unavailable arithmetic, no `paused`, no
//! `progressDeadlineSeconds`, no revision history clean-up), and hash collisions are not handled
//! (`collisionCount` is never set).

use super::events::{self, Source};
use super::naming::pod_template_hash;
use super::{Context, Error, now, patch_params, same_status};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

fn revision(obj: &impl ResourceExt) -> i64 {
    obj.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The ReplicaSet the Deployment wants for its current template.
pub fn replicaset_for(deploy: &Deployment) -> Result<ReplicaSet, Error> {
    let spec = deploy.spec.clone().unwrap_or_default();
    let owner = deploy.controller_owner_ref(&()).ok_or_else(|| {
        Error::Invalid(format!("Deployment {} has no uid yet", deploy.name_any()))
    })?;
    let template_json = serde_json::to_value(&spec.template).map_err(Error::Encode)?;
    let hash = pod_template_hash(&template_json);
    let mut template = spec.template;
    let meta = template.metadata.get_or_insert_default();
    meta.labels
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut selector = spec.selector;
    selector
        .match_labels
        .get_or_insert_default()
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
    Ok(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", deploy.name_any())),
            namespace: deploy.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(spec.replicas.unwrap_or(1)),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    })
}

/// `maxUnavailable` of a rolling update, rounded down as the real controller does (default 25%).
fn max_unavailable(deploy: &Deployment, desired: i32) -> i32 {
    let value = deploy
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone());
    resolve(value, desired, false)
}

/// `maxSurge`, rounded up (default 25%); 0 for the Recreate strategy.
fn max_surge(deploy: &Deployment, desired: i32) -> i32 {
    let strategy = deploy.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return 0;
    }
    let value = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_surge.clone());
    resolve(value, desired, true)
}

/// An absolute number or a percentage of `desired` (25% when unset).
fn resolve(value: Option<IntOrString>, desired: i32, round_up: bool) -> i32 {
    match value.unwrap_or(IntOrString::String("25%".into())) {
        IntOrString::Int(i) => i,
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |p| {
                let scaled = p * i64::from(desired);
                let rounded = if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                };
                i32::try_from(rounded).unwrap_or(0)
            }),
    }
}

/// A condition, keeping the old transition time when its status did not change.
fn condition(old: &Value, type_: &str, status: bool, reason: &str, message: String) -> Value {
    let status = if status { "True" } else { "False" };
    let previous = old["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_));
    let unchanged = previous.is_some_and(|c| c["status"] == status && c["reason"] == reason);
    let (transition, update) = match previous {
        Some(c) if unchanged => (c["lastTransitionTime"].clone(), c["lastUpdateTime"].clone()),
        Some(c) if c["status"] == status => (c["lastTransitionTime"].clone(), json!(now())),
        _ => (json!(now()), json!(now())),
    };
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": transition, "lastUpdateTime": update})
}

pub async fn reconcile(deploy: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = deploy.namespace().unwrap_or_default();
    let name = deploy.name_any();
    if deploy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = deploy.uid().unwrap_or_default();
    let desired = deploy.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let wanted = replicaset_for(&deploy)?;
    let wanted_name = wanted.name_any();
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let owned: Vec<ReplicaSet> = rs_api
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::kube("list ReplicaSets of", &name, source))?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect();

    // The newest ReplicaSet's revision is one more than any other's (a rollback to an older
    // template makes that ReplicaSet the newest again).
    let older = owned
        .iter()
        .filter(|rs| rs.name_any() != wanted_name)
        .map(revision)
        .max()
        .unwrap_or(0);
    let annotations = json!({
        REVISION: (older + 1).to_string(),
        DESIRED_REPLICAS: desired.to_string(),
        MAX_REPLICAS: (desired + max_surge(&deploy, desired)).to_string(),
    });
    let new_rs = match owned.iter().find(|rs| rs.name_any() == wanted_name) {
        Some(rs) => {
            let current = serde_json::to_value(rs.annotations()).map_err(Error::Encode)?;
            if !same_status(&current, &annotations) || revision(rs) <= older {
                let patch = json!({"metadata": {"annotations": annotations}});
                rs_api
                    .patch(&wanted_name, &patch_params(), &Patch::Merge(&patch))
                    .await
                    .map_err(|source| Error::kube("annotate", &wanted_name, source))?;
            }
            rs.clone()
        }
        None => {
            let mut wanted = wanted;
            wanted.metadata.annotations =
                serde_json::from_value(annotations.clone()).map_err(Error::Encode)?;
            let created = rs_api
                .create(&PostParams::default(), &wanted)
                .await
                .map_err(|source| Error::kube("create the ReplicaSet of", &name, source))?;
            tracing::debug!(namespace = %ns, deployment = %name, replicaset = %wanted_name, "ReplicaSet created");
            if desired > 0 {
                let message = format!("Scaled up replica set {wanted_name} from 0 to {desired}");
                scaling_event(&ctx, &deploy, &message).await;
            }
            created
        }
    };
    if revision(deploy.as_ref()) != older + 1 {
        let patch = json!({"metadata": {"annotations": {REVISION: (older + 1).to_string()}}});
        Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
            .patch(&name, &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::kube("annotate", &name, source))?;
    }
    let scale = |rs: &ReplicaSet, replicas: i32| {
        let rs_api = rs_api.clone();
        let (rs_name, from) = (
            rs.name_any(),
            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        );
        let (ctx, deploy) = (ctx.clone(), deploy.clone());
        async move {
            let patch = json!({"spec": {"replicas": replicas}});
            rs_api
                .patch(&rs_name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map_err(|source| Error::kube("scale", &rs_name, source))?;
            let direction = if replicas > from { "up" } else { "down" };
            let message =
                format!("Scaled {direction} replica set {rs_name} from {from} to {replicas}");
            scaling_event(&ctx, &deploy, &message).await;
            Ok::<_, Error>(())
        }
    };
    if new_rs.spec.as_ref().and_then(|s| s.replicas) != Some(desired) {
        scale(&new_rs, desired).await?;
        tracing::debug!(namespace = %ns, deployment = %name, replicas = desired, "ReplicaSet scaled");
    }
    for old in owned.iter().filter(|rs| rs.name_any() != wanted_name) {
        if old.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
            scale(old, 0).await?;
        }
    }

    let sum = |f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| -> i32 {
        owned
            .iter()
            .filter_map(|rs| rs.status.as_ref())
            .map(f)
            .sum()
    };
    let replicas = sum(|s| s.replicas);
    let ready = sum(|s| s.ready_replicas.unwrap_or(0));
    let available = sum(|s| s.available_replicas.unwrap_or(0));
    let new_status = new_rs.status.clone().unwrap_or_default();
    let updated = new_status.replicas;
    let old_status =
        serde_json::to_value(deploy.status.clone().unwrap_or_default()).map_err(Error::Encode)?;
    let is_available = available >= desired - max_unavailable(&deploy, desired);
    let complete = updated == desired
        && replicas == desired
        && new_status.available_replicas.unwrap_or(0) == desired;
    let conditions = vec![
        if is_available {
            condition(
                &old_status,
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            condition(
                &old_status,
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        },
        if complete {
            condition(
                &old_status,
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{wanted_name}\" has successfully progressed."),
            )
        } else {
            condition(
                &old_status,
                "Progressing",
                true,
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{wanted_name}\" is progressing."),
            )
        },
    ];
    let status = json!({
        "observedGeneration": deploy.meta().generation,
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": conditions,
    });
    if !same_status(&old_status, &status) {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(
            &name,
            &patch_params(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(|source| Error::kube("update the status of", &name, source))?;
    }
    Ok(Action::await_change())
}

async fn scaling_event(ctx: &Context, deploy: &Deployment, message: &str) {
    let regarding = events::reference(deploy);
    let source = Source::DeploymentController;
    events::record(
        &ctx.client,
        source,
        regarding,
        None,
        "ScalingReplicaSet",
        message,
    )
    .await;
}

pub fn retry_after(_d: Arc<Deployment>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "Deployment reconcile failed");
    Action::requeue(Duration::from_millis(500))
}
