//! Offline checks of Kubernetes manifests, shared by tests/helm_chart.rs and
//! tests/e2e_manifests.rs.
//!
//! `kubectl apply --dry-run=client` cannot check anything offline: it asks the API server for
//! discovery and the OpenAPI schema first, and our sandbox API server does not serve DaemonSets
//! or RBAC. So each manifest goes through k8s-openapi's typed structs and back instead, and must
//! come back unchanged: a field of the wrong type fails to deserialize, and a misspelt or
//! misplaced field (which k8s-openapi skips silently) is missing from the way back.
#![allow(dead_code)]

use k8s_openapi::{
    api::{
        admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
        apps::v1::{DaemonSet, Deployment},
        core::v1::{ConfigMap, Namespace, Service, ServiceAccount},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The chart as `helm template` renders it with default values, release `faultline` in
/// `namespace` (helm from `.tools/bin`, which `make tools` installs).
pub fn rendered_chart(namespace: &str) -> Vec<Value> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let home = std::env::temp_dir().join(format!("faultline-helm-{}", std::process::id()));
    let out = std::process::Command::new(repo.join(".tools/bin/helm"))
        .args(["template", "faultline", "charts/faultline", "-n", namespace])
        .current_dir(repo)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_documents(&String::from_utf8_lossy(&out.stdout), "helm template")
}

/// The chart's identities, permissions and admission policies ([`is_access_object`]) as
/// `helm template` renders them with default values in `namespace`.
pub fn chart_access_objects(namespace: &str) -> Vec<Value> {
    rendered_chart(namespace)
        .into_iter()
        .filter(is_access_object)
        .collect()
}

/// Whether `object` is one of the chart's identities, permissions or admission policies, or
/// the revert signal's ConfigMap, which the controller's permissions presuppose (it may write
/// that one ConfigMap, not create it): what an admin applies before the workloads.
pub fn is_access_object(object: &Value) -> bool {
    let signal = object["kind"] == "ConfigMap"
        && object["metadata"]["name"] == faultline::controller::REVERTING_CONFIGMAP;
    signal
        || matches!(
            object["kind"].as_str(),
            Some(
                "ServiceAccount"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "Role"
                    | "RoleBinding"
                    | "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
            )
        )
}

/// Every non-empty document of a multi-document YAML stream, as JSON values.
pub fn parse_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .filter_map(|(i, document)| {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{origin}: document {i} is not YAML: {e}"));
            (!value.is_null()).then_some(value)
        })
        .collect()
}

/// `kind/name` for messages.
pub fn describe(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Checks one object through its typed struct; `Ok(false)` for a kind this module does not know
/// (the caller checks those itself).
pub fn check_typed(object: &Value) -> Result<bool, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(object),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(object),
        ("v1", "Service") => round_trip::<Service>(object),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(object),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(object),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(object),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(object),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            round_trip::<ValidatingAdmissionPolicy>(object)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<ValidatingAdmissionPolicyBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<ClusterRoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(object),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            round_trip::<CustomResourceDefinition>(object)
        }
        _ => return Ok(false),
    }
    .map(|()| true)
}

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(object.clone())
        .map_err(|e| format!("{} does not deserialize: {e}", describe(object)))?;
    let back = serde_json::to_value(&typed).expect("typed objects serialize");
    let mut problems = Vec::new();
    diff(object, &back, "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} changed on a typed round trip (unknown or misplaced fields?):\n  {}",
            describe(object),
            problems.join("\n  ")
        ))
    }
}

/// Where `back` differs from `original`.
fn diff(original: &Value, back: &Value, path: &str, problems: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    Some(other) => diff(value, other, &here, problems),
                    None if value.is_null() => {}
                    None => problems.push(format!("{here} was dropped")),
                }
            }
            for key in b.keys().filter(|k| !a.contains_key(*k)) {
                problems.push(format!("{path}.{key} appeared"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff(x, y, &format!("{path}[{i}]"), problems);
            }
        }
        // 1 and 1.0 are the same number to the API server.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
        (a, b) if a == b => {}
        (a, b) => problems.push(format!("{path}: {a} came back as {b}")),
    }
}

/// The pod template's containers of a Deployment or DaemonSet.
pub fn containers(workload: &Value) -> &Vec<Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap_or_else(|| panic!("{} has no containers", describe(workload)))
}

/// A container's args as strings.
pub fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether `labels` has every pair of `selector` (a `matchLabels` map).
pub fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}
