//! PodDisruptionBudget status, computed the way kube-controller-manager's disruption controller
//! computes it (`pkg/controller/disruption/disruption.go`), so that the eviction subresource can
//! decide exactly as a real cluster would.
//!
//! [`pdb_status`] is pure. [`sync_namespace`] runs it for every budget of a namespace and writes
//! the status when it changed; the request handlers call it after every write to pods, budgets,
//! ReplicaSets and Deployments. Simplifications:
//! * The "controller" is synchronous: a budget's status is current as soon as the write that
//!   changed its inputs returns (a real cluster lags by a few milliseconds to seconds).
//! * `disruptedPods` entries expire after 2 minutes (`DeletionTimeout`), but only when some later
//!   write to the namespace triggers a recomputation; there is no timer.
//! * Controllers that give the expected scale of a pod: Deployments (through their ReplicaSets)
//!   and bare ReplicaSets; StatefulSets, ReplicationControllers and the scale subresource of
//!   custom resources are not served, so pods owned by them count as "no controller found".
//! * A null or empty selector matches no pod (what the eviction handler does; the v1 disruption
//!   controller would match every pod of the namespace with `{}`).

use super::State;
use super::resources::ResKey;
use crate::selection::LabelMatcher;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// How long an approved eviction keeps a pod out of `currentHealthy` if the pod is not deleted.
pub const DELETION_TIMEOUT_SECONDS: i64 = 120;
/// The condition the disruption controller maintains.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// The scale of the workload controlling a pod, keyed by the uid of the pod's controller
/// (its ReplicaSet): `(uid of the top controller, desired replicas)`.
pub type ControllerScales = HashMap<String, (String, i32)>;

/// Whether `pod` is selected by `pdb` (same namespace, non-empty selector matching its labels).
pub fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    if pdb.metadata.namespace != pod.metadata.namespace {
        return false;
    }
    let Some(selector) = &pdb.spec.as_ref().and_then(|s| s.selector.clone()) else {
        return false;
    };
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty);
    if empty {
        return false;
    }
    // An invalid selector matches nothing (as in the eviction handler).
    LabelMatcher::new(selector).is_ok_and(|m| m.matches(pod.metadata.labels.as_ref()))
}

/// `podutil.IsPodReady`: the Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `intstr.GetScaledValueFromIntOrPercent(v, total, roundUp=true)`.
fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let value = (pct * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(value).unwrap_or(i32::MAX))
        }
    }
}

/// `getExpectedScale`: the sum of the scales of the controllers of `pods`.
fn expected_scale(pods: &[&Pod], scales: &ControllerScales) -> Result<i32, String> {
    let mut by_controller: HashMap<&str, i32> = HashMap::new();
    for pod in pods {
        let Some(owner) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        else {
            // Unmanaged pods are skipped (the real controller records an event about them).
            continue;
        };
        let (uid, scale) = scales
            .get(&owner.uid)
            .ok_or_else(|| format!("found no controllers for pod {:?}", pod.metadata.name))?;
        by_controller.insert(uid, *scale);
    }
    Ok(by_controller.values().sum())
}

fn condition(
    status: &PodDisruptionBudgetStatus,
    old: Option<&Condition>,
    now: Timestamp,
) -> Condition {
    let (value, reason) = if status.disruptions_allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    condition_with(value, reason, "", status.observed_generation, old, now)
}

fn condition_with(
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    old: Option<&Condition>,
    now: Timestamp,
) -> Condition {
    let last_transition_time = match old {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

fn old_condition(pdb: &PodDisruptionBudget) -> Option<&Condition> {
    pdb.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == DISRUPTION_ALLOWED))
}

/// The status the disruption controller would write for `pdb`, given every pod of its namespace,
/// the scales of their controllers and the current time. A failure to work out the expected pod
/// count gives the controller's fail-safe status: no disruption allowed, condition `SyncFailed`.
pub fn pdb_status(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    scales: &ControllerScales,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let selected: Vec<&Pod> = pods.iter().filter(|p| selects(pdb, p)).collect();
    let spec = pdb.spec.clone().unwrap_or_default();
    let expected_and_desired = if let Some(max_unavailable) = &spec.max_unavailable {
        expected_scale(&selected, scales).and_then(|expected| {
            let max = scaled(max_unavailable, expected)?;
            Ok((expected, (expected - max).max(0)))
        })
    } else {
        match &spec.min_available {
            Some(IntOrString::Int(min)) => Ok((selected.len() as i32, *min)),
            Some(pct @ IntOrString::String(_)) => expected_scale(&selected, scales)
                .and_then(|expected| Ok((expected, scaled(pct, expected)?))),
            None => Ok((0, 0)),
        }
    };
    let generation = pdb.metadata.generation;
    let previous = pdb.status.clone().unwrap_or_default();
    let (expected, desired) = match expected_and_desired {
        Ok(v) => v,
        Err(message) => {
            let mut failed = previous;
            failed.disruptions_allowed = 0;
            let c = condition_with(
                "False",
                "SyncFailed",
                &message,
                failed.observed_generation,
                old_condition(pdb),
                now,
            );
            failed.conditions = Some(vec![c]);
            return failed;
        }
    };

    // buildDisruptedPodMap: keep entries of pods that still exist, are not being deleted, and
    // whose eviction is less than DeletionTimeout old.
    let mut disrupted = BTreeMap::new();
    for (name, at) in previous.disrupted_pods.iter().flatten() {
        let live = selected.iter().any(|p| {
            p.metadata.name.as_deref() == Some(name.as_str())
                && p.metadata.deletion_timestamp.is_none()
        });
        let fresh = at.0.as_second() + DELETION_TIMEOUT_SECONDS > now.as_second();
        if live && fresh {
            disrupted.insert(name.clone(), at.clone());
        }
    }
    let current = selected
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
        .filter(|p| is_pod_ready(p))
        .count() as i32;
    let allowed = if expected <= 0 {
        0
    } else {
        (current - desired).max(0)
    };
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: current,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: generation,
        conditions: None,
    };
    status.conditions = Some(vec![condition(&status, old_condition(pdb), now)]);
    status
}

/// After a decrement by the eviction handler (`UpdateDisruptionAllowedCondition`).
pub fn refresh_condition(
    pdb: &PodDisruptionBudget,
    status: &mut PodDisruptionBudgetStatus,
    now: Timestamp,
) {
    status.conditions = Some(vec![condition(status, old_condition(pdb), now)]);
}

fn key(group: &str, plural: &str) -> ResKey {
    ResKey {
        group: group.into(),
        plural: plural.into(),
    }
}

pub fn pdb_key() -> ResKey {
    key("policy", "poddisruptionbudgets")
}

pub fn pod_key() -> ResKey {
    key("", "pods")
}

/// Whether a write to this resource can change a budget's status.
pub fn affects_budgets(res: &ResKey) -> bool {
    matches!(
        (res.group.as_str(), res.plural.as_str()),
        ("", "pods") | ("policy", "poddisruptionbudgets") | ("apps", "replicasets" | "deployments")
    )
}

/// The scales of every ReplicaSet of `ns`: a ReplicaSet controlled by a Deployment reports the
/// Deployment's uid and replicas (the real finders do the same), a bare one its own.
fn controller_scales(st: &State, ns: &str) -> ControllerScales {
    let replicas = |o: &Value| o["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    let uid = |o: &Value| {
        o["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let deployments: HashMap<String, i32> = st
        .store
        .list(&key("apps", "deployments"), Some(ns))
        .map(|d| (uid(d), replicas(d)))
        .collect();
    st.store
        .list(&key("apps", "replicasets"), Some(ns))
        .map(|rs| {
            let owner = rs["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["controller"] == Value::Bool(true) && r["kind"] == "Deployment")
                .and_then(|r| r["uid"].as_str())
                .and_then(|u| deployments.get(u).map(|s| (u.to_string(), *s)));
            (uid(rs), owner.unwrap_or_else(|| (uid(rs), replicas(rs))))
        })
        .collect()
}

/// Typed copies of the pods of a namespace (objects that do not parse are skipped).
pub fn pods_in(st: &State, ns: &str) -> Vec<Pod> {
    st.store
        .list(&pod_key(), Some(ns))
        .filter_map(|p| serde_json::from_value(p.clone()).ok())
        .collect()
}

/// Recompute and store the status of every budget in `ns` whose status changed.
pub fn sync_namespace(st: &mut State, ns: &str) {
    let budgets: Vec<Value> = st.store.list(&pdb_key(), Some(ns)).cloned().collect();
    if budgets.is_empty() {
        return;
    }
    let pods = pods_in(st, ns);
    let scales = controller_scales(st, ns);
    let now = Timestamp::now();
    for stored in budgets {
        let Ok(pdb) = serde_json::from_value::<PodDisruptionBudget>(stored.clone()) else {
            continue;
        };
        let status = pdb_status(&pdb, &pods, &scales, now);
        let Ok(status) = serde_json::to_value(&status) else {
            continue;
        };
        if stored.get("status") != Some(&status) {
            let mut updated = stored;
            updated["status"] = status;
            tracing::debug!(
                namespace = %ns,
                budget = pdb.metadata.name.as_deref().unwrap_or_default(),
                "disruption budget status updated"
            );
            st.store.put(&pdb_key(), updated);
        }
    }
}

#[cfg(test)]
#[path = "disruption_tests.rs"]
mod tests;
