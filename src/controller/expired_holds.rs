//! FaultInjections an agent still holds after its fault's deadline, with nobody left to let go.
//! A deleted injection whose agent reported it applied keeps the agent's finalizer until that
//! agent confirms the revert; an agent that never comes back (its node removed, the DaemonSet
//! uninstalled) would keep it forever: the experiment already ended `RevertFailed`, and the
//! object blocks its namespace's deletion. The kernel ends every fault at its `expiresAt` on
//! its own (see the agent's deadlines), so once that time is well past (a margin for the
//! node's clock) nothing is left for the finalizer to guard, and the controller lets go.
//! Injections of an experiment still deciding are its reconcile's (see `revert_progress`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::reflector::Store;
use kube::{ResourceExt, core::DeserializeGuard};

use super::{
    Context,
    caches::{not_ended, with_owner},
    events::{Fact, PodOf},
    injections, object_reference,
};
use crate::api::{AGENT_FINALIZER, ChaosExperiment, FaultInjection};

/// How far past `expiresAt` an injection must be before it is let go of: a node's clock may be
/// that much behind the controller's (which wrote `expiresAt`) and its kernel still counting.
pub const EXPIRED_HOLD_MARGIN: Duration = Duration::from_secs(60);

/// The deleted injections still holding the agent's finalizer `margin` past their
/// `expiresAt`, of experiments that are not `deciding` (finished, or gone).
pub fn expired_holds(
    injections: &[Arc<FaultInjection>],
    deciding: &BTreeSet<String>,
    now: DateTime<Utc>,
    margin: TimeDelta,
) -> Vec<Arc<FaultInjection>> {
    injections
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_some())
        .filter(|i| i.finalizers().iter().any(|f| f == AGENT_FINALIZER))
        .filter(|i| {
            i.spec
                .expires_at
                .checked_add_signed(margin)
                .is_some_and(|released| released <= now)
        })
        .filter(|i| {
            i.spec
                .experiment
                .uid
                .as_ref()
                .is_none_or(|uid| !deciding.contains(uid))
        })
        .cloned()
        .collect()
}

/// Every `every`, lets go of the expired holds (see [`expired_holds`]) with a Warning Event on
/// their experiment, or on the target pod when the experiment is gone; until the future is
/// dropped.
pub async fn sweep(
    ctx: Arc<Context>,
    experiments: Store<DeserializeGuard<ChaosExperiment>>,
    every: Duration,
) {
    let margin = TimeDelta::from_std(ctx.settings.expired_hold_margin).unwrap_or(TimeDelta::MAX);
    // Before the experiments are listed, every hold would look like one of an experiment
    // gone, and one still reverting would lose its injection before its revert was judged.
    ctx.caches.synced().await;
    loop {
        tokio::time::sleep(every).await;
        let held = expired_holds(
            &ctx.caches.injections.state(),
            &not_ended(&experiments),
            (ctx.now)(),
            margin,
        );
        for injection in held {
            release(&ctx, &experiments, &injection).await;
        }
    }
}

async fn release(
    ctx: &Context,
    experiments: &Store<DeserializeGuard<ChaosExperiment>>,
    injection: &FaultInjection,
) {
    let namespace = injection.namespace().unwrap_or_default();
    let (name, node) = (injection.name_any(), &injection.spec.node_name);
    let pod = format!(
        "{}/{}",
        injection.spec.target.namespace, injection.spec.target.name
    );
    match injections::release_agent_finalizer(&ctx.client, injection).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(error) => {
            tracing::warn!(%namespace, injection = %name, %error, "could not let go of a FaultInjection held past its deadline; trying again at the next sweep");
            return;
        }
    }
    let expires_at = injection
        .spec
        .expires_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    tracing::warn!(%namespace, injection = %name, %node, %pod, %expires_at, "released the agent finalizer of a FaultInjection held past its deadline: its agent never confirmed the revert, and the kernel ended the fault at expiresAt");
    // An experiment gone before its injections (its finalizer let go of after the receipts,
    // then deleted) leaves the fault's pod as the place a person looks.
    let regarding = with_owner(experiments, injection, object_reference)
        .unwrap_or_else(|| target_pod_reference(injection));
    let fact = Fact::warning(
        "ExpiredHoldReleased",
        "Release",
        format!(
            "FaultInjection {name} ({pod}) on node {node}: its agent never confirmed the revert, and the kernel ended the fault at its deadline {expires_at}; the controller let go of the object. Check the faultline agent on {node}: it removes what is left of the fault's rules (inert after the deadline) when it starts"
        ),
    );
    if let Err(error) = ctx.recorder.publish(&fact, &regarding).await {
        tracing::debug!(%error, "could not publish the ExpiredHoldReleased Event");
    }
}

fn target_pod_reference(injection: &FaultInjection) -> ObjectReference {
    let target = &injection.spec.target;
    PodOf {
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        uid: target.uid.clone(),
    }
    .reference()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FaultInjectionStatus, InjectionPhase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z")
            .unwrap()
            .into()
    }

    /// A deleted, applied injection of experiment `experiment_uid` that expired `ago` before
    /// `now()`, held by the agent's finalizer.
    fn held(experiment_uid: &str, ago: TimeDelta) -> Arc<FaultInjection> {
        let mut injection: FaultInjection = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "FaultInjection",
            "metadata": {"name": "fi", "namespace": "shop", "uid": "fi-uid",
                         "finalizers": [AGENT_FINALIZER]},
            "spec": {"experiment": {"name": "e", "uid": experiment_uid},
                     "target": {"namespace": "shop", "name": "web-0", "uid": "p"},
                     "nodeName": "node-1", "fault": {"partition": "both", "peerCidrs": ["10.0.0.0/8"]},
                     "expiresAt": "2030-01-01T00:00:00Z"},
        }))
        .unwrap();
        injection.spec.expires_at = now() - ago;
        let deleted = (now() - ago - TimeDelta::minutes(1)).timestamp_millis();
        injection.metadata.deletion_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_millisecond(deleted).unwrap(),
        ));
        injection.status = Some(FaultInjectionStatus {
            phase: InjectionPhase::Applied,
            ..Default::default()
        });
        Arc::new(injection)
    }

    fn names(held: &[Arc<FaultInjection>]) -> Vec<String> {
        held.iter()
            .map(|i| i.spec.experiment.uid.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_finished_experiments_hold_goes_only_the_margin_past_its_deadline() {
        let margin = TimeDelta::seconds(60);
        let none = BTreeSet::new();
        let injections = [
            held("past-margin", TimeDelta::seconds(61)),
            held("at-margin", TimeDelta::seconds(60)),
            held("within-margin", TimeDelta::seconds(59)),
            held("not-yet-expired", TimeDelta::seconds(-600)),
        ];
        assert_eq!(
            names(&expired_holds(&injections, &none, now(), margin)),
            ["past-margin", "at-margin"]
        );
    }

    #[test]
    fn an_experiment_still_deciding_keeps_its_holds() {
        let deciding = BTreeSet::from(["running".to_string()]);
        let injections = [
            held("running", TimeDelta::hours(1)),
            held("ended", TimeDelta::hours(1)),
        ];
        assert_eq!(
            names(&expired_holds(
                &injections,
                &deciding,
                now(),
                TimeDelta::zero()
            )),
            ["ended"]
        );
    }

    #[test]
    fn only_deleted_injections_holding_the_agents_finalizer_are_let_go_of() {
        let standing = {
            let mut i = (*held("a", TimeDelta::hours(1))).clone();
            i.metadata.deletion_timestamp = None;
            Arc::new(i)
        };
        let released = {
            let mut i = (*held("b", TimeDelta::hours(1))).clone();
            i.metadata.finalizers = Some(vec!["someone.else/finalizer".into()]);
            Arc::new(i)
        };
        assert!(
            expired_holds(
                &[standing, released],
                &BTreeSet::new(),
                now(),
                TimeDelta::zero()
            )
            .is_empty()
        );
    }

    #[test]
    fn a_margin_past_the_end_of_time_never_releases() {
        let injections = [held("a", TimeDelta::hours(1))];
        assert!(expired_holds(&injections, &BTreeSet::new(), now(), TimeDelta::MAX).is_empty());
    }
}
