//! Before anything is injected: may the controller make every read its `kubernetes` probes
//! make? One SelfSubjectAccessReview (authorization.k8s.io/v1) per permission, asked as the
//! controller itself. A refusal ends the experiment as a configuration error naming each
//! missing permission and the Helm value `controller.probeReadRules` (see `probes::access`).
//! (client required; reads only: an access review changes nothing)

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::{Api, ResourceExt, api::PostParams};

use super::{Context, Error, Result};
use crate::{
    api::ChaosExperiment,
    probes::{
        KubernetesCheck,
        access::{Permission, refusal},
    },
};

/// `Some(why)` when a `kubernetes` probe of the experiment asks for a read the controller is
/// not allowed. A kind discovery cannot find is left to the probe (its check says so).
pub(super) async fn refused(ctx: &Context, experiment: &ChaosExperiment) -> Result<Option<String>> {
    let Some(steady_state) = &experiment.spec.steady_state else {
        return Ok(None);
    };
    let namespace = experiment.namespace().unwrap_or_default();
    let mut denied = Vec::new();
    for probe in &steady_state.probes {
        let Some(spec) = &probe.kubernetes else {
            continue;
        };
        // An invalid probe is the preflight's to report.
        let Ok(check) = KubernetesCheck::new(spec, ctx.client.clone()) else {
            continue;
        };
        let Some(needed) = check.permissions(&namespace).await else {
            continue;
        };
        for permission in needed {
            if !allowed(ctx, &permission).await? {
                denied.push((probe.name.clone(), permission));
            }
        }
    }
    Ok(refusal(&denied))
}

async fn allowed(ctx: &Context, permission: &Permission) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(permission.verb.clone()),
                group: Some(permission.group.clone()),
                resource: Some(permission.resource.clone()),
                namespace: permission.namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(ctx.client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(Error::Observe)?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}
