//! What the agent writes back to the API server: injection status, its finalizer, and the
//! node's capabilities; and how it reads an injection.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::converge::LiveInjection;
use super::tag::InjectionTag;
use crate::api::{
    AGENT_FINALIZER, FaultInjection, FaultInjectionStatus, InjectionPhase,
    NODE_CAPABILITIES_ANNOTATION,
};

pub(super) async fn publish_capabilities(client: Client, nodes: Vec<String>, capabilities: String) {
    let api: Api<Node> = Api::all(client);
    let patch = json!({"metadata": {"annotations": {NODE_CAPABILITIES_ANNOTATION: capabilities}}});
    for node in nodes {
        loop {
            match api
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(%node, %capabilities, "published node capabilities");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%node, %error, "cannot publish node capabilities yet; retrying");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    }
}

pub(super) fn api_for(client: &Client, injection: &FaultInjection) -> Api<FaultInjection> {
    Api::namespaced(client.clone(), &injection.namespace().unwrap_or_default())
}

pub(super) async fn write_status(
    client: &Client,
    injection: &FaultInjection,
    phase: InjectionPhase,
    message: String,
    edit: impl FnOnce(&mut FaultInjectionStatus),
) {
    let mut status = injection.status.clone().unwrap_or_default();
    status.phase = phase;
    status.message = Some(message);
    status.observed_generation = injection.metadata.generation;
    edit(&mut status);
    let patch = json!({"status": status});
    if let Err(error) = api_for(client, injection)
        .patch_status(
            &injection.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::warn!(injection = %key_of(injection), %error, "cannot write injection status");
    }
}

pub(super) async fn set_finalizer(client: &Client, injection: &FaultInjection, present: bool) {
    let mut finalizers: Vec<String> = injection.finalizers().to_vec();
    let has = finalizers.iter().any(|f| f == AGENT_FINALIZER);
    if has == present {
        return;
    }
    if present {
        finalizers.push(AGENT_FINALIZER.to_string());
    } else {
        finalizers.retain(|f| f != AGENT_FINALIZER);
    }
    // The resourceVersion makes this a compare-and-swap: finalizers are a list that other
    // writers (the controller) may change at the same time.
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": injection.resource_version(),
    }});
    if let Err(error) = api_for(client, injection)
        .patch(
            &injection.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(injection = %key_of(injection), %error, "finalizer update lost a race; the next event retries");
    }
}

pub(super) fn key_of(injection: &FaultInjection) -> String {
    format!(
        "{}/{}",
        injection.namespace().unwrap_or_default(),
        injection.name_any()
    )
}

pub(super) fn tag_of(injection: &FaultInjection) -> Option<InjectionTag> {
    InjectionTag::from_uid(injection.metadata.uid.as_deref()?)
}

pub(super) fn live_injection(injection: &FaultInjection) -> Option<LiveInjection> {
    let status = injection.status.clone().unwrap_or_default();
    Some(LiveInjection {
        key: key_of(injection),
        tag: tag_of(injection)?,
        pod_uid: injection.spec.target.uid.clone(),
        expires_at: injection.spec.expires_at,
        generation: injection.metadata.generation,
        deleting: injection.metadata.deletion_timestamp.is_some(),
        has_finalizer: injection.finalizers().iter().any(|f| f == AGENT_FINALIZER),
        phase: status.phase,
        observed_generation: status.observed_generation,
    })
}
