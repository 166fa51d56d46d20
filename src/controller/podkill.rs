//! Pod kill through the Eviction API (honouring PodDisruptionBudgets) or by deletion.
//! (client required)

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, EvictParams, Preconditions},
};

use crate::api::{PodKillFault, PodKillMethod, TargetRecord};

/// What happened to one kill.
#[derive(Debug, PartialEq)]
pub enum KillOutcome {
    Killed,
    /// Not killed on purpose; the message says why (e.g. the PodDisruptionBudget).
    Skipped(String),
    /// The pod was gone or replaced before we got to it.
    Gone,
}

/// Whether the kill recorded for this target already happened (the controller may have crashed
/// between the kill and writing it down): the pod is gone, replaced, or terminating.
pub async fn already_killed(pods: &Api<Pod>, record: &TargetRecord) -> Result<bool, kube::Error> {
    Ok(match pods.get_opt(&record.name).await? {
        None => true,
        Some(pod) => {
            pod.metadata.uid.as_deref() != Some(record.uid.as_str())
                || pod.metadata.deletion_timestamp.is_some()
        }
    })
}

pub async fn kill(
    pods: &Api<Pod>,
    record: &TargetRecord,
    fault: &PodKillFault,
) -> Result<KillOutcome, kube::Error> {
    // The UID precondition makes sure a replacement pod with the same name is never killed by
    // a retry meant for the original.
    let delete_options = DeleteParams {
        grace_period_seconds: fault
            .grace_period_seconds
            .and_then(|s| u32::try_from(s).ok()),
        preconditions: Some(Preconditions {
            uid: Some(record.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let result = match fault.method {
        PodKillMethod::Evict => pods
            .evict(
                &record.name,
                &EvictParams {
                    delete_options: Some(delete_options),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ()),
        PodKillMethod::Delete => pods.delete(&record.name, &delete_options).await.map(|_| ()),
    };
    match result {
        Ok(()) => Ok(KillOutcome::Killed),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(KillOutcome::Gone),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(KillOutcome::Gone),
        Err(kube::Error::Api(status)) if status.code == 429 => {
            let budget = status
                .details
                .as_ref()
                .and_then(|d| d.causes.iter().find(|c| c.reason == "DisruptionBudget"))
                .map(|c| c.message.clone())
                .unwrap_or_else(|| status.message.clone());
            Ok(KillOutcome::Skipped(format!("eviction refused: {budget}")))
        }
        Err(other) => Err(other),
    }
}
