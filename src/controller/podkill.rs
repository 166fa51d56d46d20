//! Pod kill through the Eviction API (honouring PodDisruptionBudgets) or by deletion.
//! (client required)
//!
//! Two kube-rs 5 behaviours shape this module: `Api::evict` sends its delete options under a
//! field name the API server ignores (so the UID precondition and grace period would be lost),
//! and the default client retries a 429 (a budget refusing the eviction) for minutes. So the
//! Eviction is POSTed here by hand, through a client built without retries.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, Preconditions},
    core::Status,
};
use serde_json::json;

use super::events::Fact;
use crate::api::{PodKillFault, PodKillMethod, TargetRecord, TargetState};

/// What happened to one kill.
#[derive(Debug, PartialEq)]
pub enum KillOutcome {
    Killed,
    /// Not killed on purpose; the message says why (e.g. the PodDisruptionBudget).
    Skipped(String),
    /// The pod was gone or replaced before we got to it.
    Gone,
}

/// Whether the kill recorded for this target is over (the controller may have stopped between
/// the kill and writing it down): its pod is gone, or replaced under the same name.
pub async fn kill_is_over(pods: &Api<Pod>, record: &TargetRecord) -> Result<bool, kube::Error> {
    Ok(kill_is_over_for(
        pods.get_opt(&record.name).await?.as_ref(),
        record,
    ))
}

/// [`kill_is_over`] once the pod is read. A pod still there under its UID is not done with,
/// even terminating: the API server deletes in two steps (marks the pod, then removes it), so
/// a kill cut off between them (its client killed) leaves the pod terminating with a grace
/// period of 0, waiting for a kubelet that may never come, and a graceful delete by someone
/// else may have a longer grace than the fault asks. Killing it again finishes the one and
/// shortens the other; it never lengthens a grace period. Pure.
pub fn kill_is_over_for(pod: Option<&Pod>, record: &TargetRecord) -> bool {
    pod.is_none_or(|pod| pod.metadata.uid.as_deref() != Some(record.uid.as_str()))
}

/// Kills one target. `no_retry` must be a client without kube's default retry layer.
pub async fn kill(
    no_retry: &Client,
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
        PodKillMethod::Evict => evict(no_retry, record, &delete_options).await,
        PodKillMethod::Delete => {
            let pods: Api<Pod> = Api::namespaced(no_retry.clone(), &record.namespace);
            pods.delete(&record.name, &delete_options).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(KillOutcome::Killed),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(KillOutcome::Gone),
        // A failed UID precondition: the pod was replaced under the same name.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(KillOutcome::Gone),
        Err(kube::Error::Api(status)) if status.code == 429 => {
            Ok(KillOutcome::Skipped(refusal(&status)))
        }
        Err(other) => Err(other),
    }
}

/// Kills the target of `record` and records the outcome in it; returns the fact to publish,
/// naming the pod and, for a skip, why.
pub async fn apply(
    no_retry: &Client,
    record: &mut TargetRecord,
    fault: &PodKillFault,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Fact, kube::Error> {
    let outcome = kill(no_retry, record, fault).await?;
    tracing::info!(pod = %record.name, namespace = %record.namespace, ?outcome, "pod kill");
    Ok(record_outcome(record, fault, outcome, now))
}

/// Writes a kill's outcome into its record. Pure.
pub fn record_outcome(
    record: &mut TargetRecord,
    fault: &PodKillFault,
    outcome: KillOutcome,
    now: chrono::DateTime<chrono::Utc>,
) -> Fact {
    let target = format!("{}/{}", record.namespace, record.name);
    let fact = match outcome {
        KillOutcome::Killed => {
            record.state = TargetState::Injected;
            record.injected_at = Some(now);
            let how = match fault.method {
                PodKillMethod::Evict => "evicted",
                PodKillMethod::Delete => "deleted",
            };
            Fact::normal("PodKilled", "Inject", format!("{how} pod {target}"))
        }
        KillOutcome::Skipped(why) => {
            record.state = TargetState::Skipped;
            let fact = Fact::warning(
                "PodKillSkipped",
                "Inject",
                format!("pod {target} not killed: {why}"),
            );
            record.message = Some(why);
            fact
        }
        KillOutcome::Gone => {
            record.state = TargetState::Skipped;
            let why = "the pod was gone before it could be killed";
            record.message = Some(why.into());
            Fact::warning(
                "PodKillSkipped",
                "Inject",
                format!("pod {target} not killed: {why}"),
            )
        }
    };
    fact.about(record)
}

/// Records a kill found done when the controller came back: it was under way when the
/// controller stopped, and the pod is gone or replaced. Pure.
pub fn record_resumed_kill(
    record: &mut TargetRecord,
    fault: &PodKillFault,
    now: chrono::DateTime<chrono::Utc>,
) -> Fact {
    record.state = TargetState::Injected;
    record.injected_at.get_or_insert(now);
    let how = match fault.method {
        PodKillMethod::Evict => "evicted",
        PodKillMethod::Delete => "deleted",
    };
    Fact::normal(
        "PodKilled",
        "Inject",
        format!(
            "{how} pod {}/{} (found gone when its kill was taken up again: the reconcile that killed it stopped before recording it)",
            record.namespace, record.name
        ),
    )
    .about(record)
}

/// The budget's own words when it refused, e.g. "The disruption budget web-pdb needs 2 healthy
/// pods and has 2 currently".
fn refusal(status: &Status) -> String {
    let budget = status
        .details
        .as_ref()
        .and_then(|d| d.causes.iter().find(|c| c.reason == "DisruptionBudget"))
        .map(|c| c.message.clone())
        .unwrap_or_else(|| status.message.clone());
    format!("eviction refused: {budget}")
}

async fn evict(
    client: &Client,
    record: &TargetRecord,
    options: &DeleteParams,
) -> Result<(), kube::Error> {
    let url = format!(
        "/api/v1/namespaces/{}/pods/{}/eviction",
        record.namespace, record.name
    );
    let body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": { "name": record.name, "namespace": record.namespace },
        "deleteOptions": options,
    });
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
        .map_err(kube::Error::HttpError)?;
    client
        .request::<serde_json::Value>(request)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, terminating: bool) -> Pod {
        serde_json::from_value(json!({"metadata": {
            "name": "web-0", "namespace": "shop", "uid": uid,
            "deletionTimestamp": terminating.then_some("2026-12-07T01:02:12Z"),
            "deletionGracePeriodSeconds": terminating.then_some(0)}}))
        .unwrap()
    }

    #[test]
    fn a_resumed_kill_is_over_only_when_its_pod_is_gone_or_replaced() {
        let record = TargetRecord {
            namespace: "shop".into(),
            name: "web-0".into(),
            uid: "uid-a".into(),
            ..Default::default()
        };
        assert!(kill_is_over_for(None, &record));
        assert!(kill_is_over_for(Some(&pod("uid-b", false)), &record));
        assert!(kill_is_over_for(Some(&pod("uid-b", true)), &record));
        assert!(!kill_is_over_for(Some(&pod("uid-a", false)), &record));
        // Terminating under its UID: perhaps half deleted by the kill that was cut off.
        assert!(!kill_is_over_for(Some(&pod("uid-a", true)), &record));
    }

    #[test]
    fn a_refusal_quotes_the_budget() {
        let status: Status = serde_json::from_value(json!({
            "code": 429, "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]}
        }))
        .unwrap();
        assert_eq!(
            refusal(&status),
            "eviction refused: The disruption budget web-pdb needs 2 healthy pods and has 2 currently"
        );
    }
}
