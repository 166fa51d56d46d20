//! `POST /api/v1/namespaces/NS/pods/NAME/eviction` (policy/v1 `Eviction`), following the real
//! handler (`pkg/registry/core/pod/storage/eviction.go`) branch by branch:
//!
//! 1. the body must name the pod of the URL; `deleteOptions` are the delete's options, and an
//!    unknown field is a warning (a 400 with `fieldValidation=Strict`);
//! 2. a pod that is Pending, Succeeded, Failed or already being deleted is deleted without
//!    looking at any budget;
//! 3. more than one budget selecting the pod: 500 (the eviction API does not support it);
//!    none: the pod is deleted;
//! 4. a pod that is not Ready, while the budget has its desired healthy pods, is deleted without
//!    using up a disruption;
//! 5. otherwise the budget must allow a disruption (`429 TooManyRequests` with a
//!    `DisruptionBudget` cause if not); the handler decrements `disruptionsAllowed`, records the
//!    pod in `disruptedPods` and then deletes the pod.
//!
//! As in the real server the budget is decremented before the delete is tried, so an eviction
//! that then fails (e.g. a uid precondition) still holds a disruption for `DeletionTimeout`.
//! Simplification: everything happens under the server's one lock, so the real handler's retry
//! loops (conflicts on the budget, a pod becoming Ready meanwhile) have nothing to retry.
//!
//! Note for kube-rs users: `Api::<Pod>::evict` (kube 5) sends its `EvictParams::delete_options`
//! as a field named `delete_options`, which the real server does not know and ignores (with a
//! warning); so does this one. Send `deleteOptions` yourself when they matter.

use super::State;
use super::disruption::{self, is_pod_ready, pdb_key, pod_key};
use super::errors::{ApiError, ApiResult, Cause};
use super::gc::{self, DeleteOpts};
use super::request::FieldValidation;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// Above this many `disruptedPods` entries evictions are refused (`MaxDisruptedPodSize`).
const MAX_DISRUPTED_POD_SIZE: usize = 2000;

const TOO_MANY: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

/// What the handler returns on success (HTTP 201).
fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// The parsed request: the delete options and the warnings to send back.
struct Request {
    opts: DeleteOpts,
    warnings: Vec<String>,
}

fn parse(
    name: &str,
    body: &Value,
    dry_run: bool,
    validation: FieldValidation,
) -> ApiResult<Request> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    match body.get("kind").and_then(Value::as_str) {
        None | Some("Eviction") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "not a Eviction object: kind {other:?}"
            )));
        }
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        None | Some("policy/v1" | "policy/v1beta1") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unsupported apiVersion {other:?} for an Eviction: use policy/v1"
            )));
        }
    }
    let unknown: Vec<&String> = fields
        .keys()
        .filter(|k| {
            !matches!(
                k.as_str(),
                "apiVersion" | "kind" | "metadata" | "deleteOptions"
            )
        })
        .collect();
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let rendered: Vec<String> = unknown
            .iter()
            .map(|k| format!("unknown field {k:?}"))
            .collect();
        match validation {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    rendered.join(", ")
                )));
            }
            FieldValidation::Warn => warnings = rendered,
            FieldValidation::Ignore => {}
        }
    }
    if body["metadata"]["name"].as_str() != Some(name) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let delete_options = body.get("deleteOptions").filter(|v| !v.is_null());
    let body_dry_run = delete_options
        .and_then(|d| d["dryRun"].as_array())
        .is_some_and(|a| !a.is_empty());
    let body_dry_run_all = delete_options
        .and_then(|d| d["dryRun"].as_array())
        .is_some_and(|a| a.iter().any(|v| v == "All"));
    if dry_run && body_dry_run && !body_dry_run_all {
        return Err(ApiError::bad_request(
            "Non-matching dry-run options in request and content",
        ));
    }
    let opts = DeleteOpts::from_request(None, dry_run, delete_options)?;
    Ok(Request { opts, warnings })
}

/// Handle one eviction; returns the response body (a success `Status`) and warnings.
pub fn evict(
    st: &mut State,
    ns: &str,
    name: &str,
    body: &Value,
    dry_run: bool,
    validation: FieldValidation,
) -> ApiResult<(Value, Vec<String>)> {
    let Request { opts, warnings } = parse(name, body, dry_run, validation)?;
    let stored = st
        .store
        .get(&pod_key(), ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let pod: Pod = serde_json::from_value(stored)
        .map_err(|e| ApiError::internal(format!("stored pod does not parse: {e}")))?;

    if can_ignore_budget(&pod) {
        tracing::debug!(namespace = %ns, pod = %name, "evicting a pod that cannot be disrupted further");
        delete(st, ns, name, &opts)?;
        return Ok((success(), warnings));
    }

    // Our disruption "controller" is synchronous: bring the budgets up to date first.
    disruption::sync_namespace(st, ns);
    let mut budgets: Vec<PodDisruptionBudget> = st
        .store
        .list(&pdb_key(), Some(ns))
        .filter_map(|b| serde_json::from_value::<PodDisruptionBudget>(b.clone()).ok())
        .filter(|b| disruption::selects(b, &pod))
        .collect();
    if budgets.len() > 1 {
        return Err(ApiError::failure(
            500,
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some(mut budget) = budgets.pop() else {
        delete(st, ns, name, &opts)?;
        return Ok((success(), warnings));
    };
    let status = budget.status.clone().unwrap_or_default();
    if !is_pod_ready(&pod)
        && status.current_healthy >= status.desired_healthy
        && status.desired_healthy > 0
    {
        // An unready pod does not count as healthy: evicting it costs no disruption.
        delete(st, ns, name, &opts)?;
        return Ok((success(), warnings));
    }
    check_and_decrement(st, name, &mut budget, opts.dry_run)?;
    delete(st, ns, name, &opts)?;
    Ok((success(), warnings))
}

/// `canIgnorePDB`: terminal or pending pods, or pods already being deleted.
fn can_ignore_budget(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
        || pod.metadata.deletion_timestamp.is_some()
}

fn delete(st: &mut State, ns: &str, name: &str, opts: &DeleteOpts) -> ApiResult<()> {
    gc::delete(st, &pod_key(), ns, name, opts)?;
    if !opts.dry_run {
        disruption::sync_namespace(st, ns);
    }
    Ok(())
}

fn too_many_requests(retry_after: u32, cause: String) -> ApiError {
    let mut e = ApiError::too_many_requests(TOO_MANY, retry_after);
    e.details.causes.push(Cause {
        field: String::new(),
        message: cause,
        reason: "DisruptionBudget".into(),
    });
    e
}

/// `checkAndDecrement`: refuse, or take one disruption from the budget and record the pod.
fn check_and_decrement(
    st: &mut State,
    pod_name: &str,
    budget: &mut PodDisruptionBudget,
    dry_run: bool,
) -> ApiResult<()> {
    let budget_name = budget.metadata.name.clone().unwrap_or_default();
    let mut status = budget.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < budget.metadata.generation.unwrap_or(0) {
        return Err(too_many_requests(
            10,
            format!("The disruption budget {budget_name} is still being processed by the server."),
        ));
    }
    if status.disruptions_allowed < 0 {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            &budget_name,
            "pdb disruptions allowed is negative",
        ));
    }
    if status.disrupted_pods.as_ref().map_or(0, |m| m.len()) > MAX_DISRUPTED_POD_SIZE {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            &budget_name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if status.disruptions_allowed == 0 {
        tracing::debug!(budget = %budget_name, pod = %pod_name, "eviction refused by the disruption budget");
        return Err(too_many_requests(
            0,
            format!(
                "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
                status.desired_healthy, status.current_healthy
            ),
        ));
    }
    let now = Timestamp::now();
    status.disruptions_allowed -= 1;
    if status.disruptions_allowed == 0 {
        disruption::refresh_condition(budget, &mut status, now);
    }
    if dry_run {
        return Ok(());
    }
    status
        .disrupted_pods
        .get_or_insert_default()
        .insert(pod_name.to_string(), Time(now));
    let ns = budget.metadata.namespace.clone().unwrap_or_default();
    let mut stored = st
        .store
        .get(&pdb_key(), &ns, &budget_name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("policy", "poddisruptionbudgets", &budget_name))?;
    stored["status"] = serde_json::to_value(&status)
        .map_err(|e| ApiError::internal(format!("budget status does not serialise: {e}")))?;
    st.store.put(&pdb_key(), stored);
    tracing::debug!(budget = %budget_name, pod = %pod_name, remaining = status.disruptions_allowed, "disruption granted");
    Ok(())
}
