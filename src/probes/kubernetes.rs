//! The Kubernetes check: read one object (by name) or several (by label selector) and judge
//! a status condition, a field, and the number of Ready pods behind it.
//!
//! - apiVersion/kind become a resource through discovery (`pinned_kind`) on the first check;
//!   the answer is cached for the life of the checker. A failed discovery is not cached, so a
//!   CRD installed after the experiment started is found at the next check.
//! - Objects are read as `DynamicObject`s: the probe works on any kind, custom ones included.
//! - Every check that is set must hold for every object; one message lists every problem.
//! - A label selector that matches nothing fails: a hypothesis about no objects proves nothing.
//!
//! What is wrong with the spec (apiVersion, path syntax, a readyPods on a kind without pods) is
//! an error when the check is built; a check fails only because of what the cluster holds.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, ListParams},
    core::GroupVersionKind,
    discovery::{ApiCapabilities, Scope, pinned_kind},
};
use serde_json::Value;

use super::{
    Check, CheckContext, CheckOutcome,
    access::{self, Permission},
    field_path::{self, FieldPath},
};
use crate::{
    api::{ComparisonOperator, KubernetesProbe},
    selection::is_running_and_ready,
};

/// Kinds whose pods `readyPods` can count, and how it finds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PodSource {
    /// `spec.selector` is a `LabelSelector` (Deployment, ReplicaSet, StatefulSet).
    Workload,
    /// `spec.selector` is a plain map (Service).
    Service,
    /// The selected objects are the pods.
    Pods,
}

impl PodSource {
    fn of(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("apps", "Deployment" | "ReplicaSet" | "StatefulSet") => Some(Self::Workload),
            ("", "Service") => Some(Self::Service),
            ("", "Pod") => Some(Self::Pods),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
enum Selection {
    Name(String),
    Labels(String),
}

#[derive(Clone, Debug)]
struct FieldExpectation {
    path: FieldPath,
    operator: ComparisonOperator,
    value: String,
}

/// A ready-to-run [`KubernetesProbe`].
#[derive(Clone)]
pub struct KubernetesCheck {
    client: Client,
    gvk: GroupVersionKind,
    namespace: Option<String>,
    selection: Selection,
    condition: Option<(String, String)>,
    field: Option<FieldExpectation>,
    ready_pods: Option<(PodSource, usize)>,
    /// Discovery's answer, once it has been found.
    resolved: Arc<Mutex<Option<(ApiResource, ApiCapabilities)>>>,
}

impl std::fmt::Debug for KubernetesCheck {
    // `kube::Client` has no Debug; what the check looks at is what matters.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesCheck")
            .field("gvk", &self.gvk)
            .field("namespace", &self.namespace)
            .field("selection", &self.selection)
            .field("condition", &self.condition)
            .field("field", &self.field)
            .field("ready_pods", &self.ready_pods)
            .finish_non_exhaustive()
    }
}

impl KubernetesCheck {
    /// Parses the spec; the error names the field that is wrong.
    pub fn new(spec: &KubernetesProbe, client: Client) -> Result<Self, String> {
        let (group, version) = match spec.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", spec.api_version.as_str()),
        };
        if version.is_empty()
            || version.contains('/')
            || (spec.api_version.contains('/') && group.is_empty())
        {
            return Err(format!(
                "kubernetes.apiVersion {:?} is not group/version or version",
                spec.api_version
            ));
        }
        if spec.kind.is_empty() {
            return Err("kubernetes.kind must be set".into());
        }
        let selection = match (&spec.name, &spec.label_selector) {
            (Some(name), None) if !name.is_empty() => Selection::Name(name.clone()),
            (None, Some(labels)) if !labels.trim().is_empty() => Selection::Labels(labels.clone()),
            _ => return Err("kubernetes: set exactly one of name or labelSelector".into()),
        };
        let field = spec
            .field
            .as_ref()
            .map(|f| {
                FieldPath::parse(&f.path)
                    .map(|path| FieldExpectation {
                        path,
                        operator: f.operator,
                        value: f.value.clone(),
                    })
                    .map_err(|e| format!("kubernetes.field.path: {e}"))
            })
            .transpose()?;
        let ready_pods = spec
            .ready_pods
            .as_ref()
            .map(|r| {
                let source = PodSource::of(group, &spec.kind).ok_or_else(|| {
                    format!(
                        "kubernetes.readyPods counts the pods of a Deployment, ReplicaSet, \
                         StatefulSet or Service, or Pods themselves; not a {} of {}",
                        spec.kind, spec.api_version
                    )
                })?;
                let min = usize::try_from(r.min)
                    .map_err(|_| format!("kubernetes.readyPods.min {} is negative", r.min))?;
                Ok::<_, String>((source, min))
            })
            .transpose()?;
        let condition = spec
            .condition
            .as_ref()
            .map(|c| (c.type_.clone(), c.status.clone()));
        if condition.is_none() && field.is_none() && ready_pods.is_none() {
            return Err(
                "kubernetes: set at least one check (condition, field or readyPods)".into(),
            );
        }
        Ok(KubernetesCheck {
            client,
            gvk: GroupVersionKind::gvk(group, version, &spec.kind),
            namespace: spec.namespace.clone(),
            selection,
            condition,
            field,
            ready_pods,
            resolved: Arc::default(),
        })
    }

    fn api_version(&self) -> String {
        self.gvk.api_version()
    }

    /// The resource behind apiVersion/kind, from the cache or from discovery.
    async fn resource(&self) -> Result<(ApiResource, ApiCapabilities), String> {
        if let Some(found) = self
            .resolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(found);
        }
        let found = pinned_kind(&self.client, &self.gvk)
            .await
            .map_err(|e| self.describe_discovery_error(&e))?;
        *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = Some(found.clone());
        Ok(found)
    }

    fn describe_discovery_error(&self, error: &kube::Error) -> String {
        let (kind, api_version) = (&self.gvk.kind, self.api_version());
        match error {
            kube::Error::Discovery(kube::error::DiscoveryError::MissingKind(_)) => format!(
                "kind {kind} is not served in {api_version} (check the kind's spelling, or \
                 whether its CRD is installed)"
            ),
            kube::Error::Api(status) if status.code == 404 => format!(
                "apiVersion {api_version} is not served by the cluster, so kind {kind} cannot be \
                 found (check the apiVersion, or whether its CRD is installed)"
            ),
            other => format!(
                "cannot look up kind {kind} of {api_version}: {}",
                super::root_cause(other)
            ),
        }
    }

    /// The objects the probe is about, or why there are none.
    async fn objects(
        &self,
        api: &Api<DynamicObject>,
        resource: &ApiResource,
        namespace: &str,
    ) -> Result<Vec<DynamicObject>, CheckError> {
        let plural = &resource.plural;
        let place = if namespace.is_empty() {
            String::new()
        } else {
            format!(" in namespace {namespace}")
        };
        match &self.selection {
            Selection::Name(name) => match api.get_opt(name).await {
                Ok(Some(object)) => Ok(vec![object]),
                Ok(None) => Err(format!("{plural}/{name} not found{place}").into()),
                Err(e) => Err(CheckError::from_kube(
                    &e,
                    self.permission("get", &resource.group, plural, namespace),
                    format!("cannot read {plural}/{name}{place}"),
                )),
            },
            Selection::Labels(labels) => {
                let list = api
                    .list(&ListParams::default().labels(labels))
                    .await
                    .map_err(|e| {
                        CheckError::from_kube(
                            &e,
                            self.permission("list", &resource.group, plural, namespace),
                            format!("cannot list {plural} matching {labels:?}{place}"),
                        )
                    })?;
                if list.items.is_empty() {
                    return Err(format!("no {plural} match labelSelector {labels:?}{place}").into());
                }
                Ok(list.items)
            }
        }
    }

    /// The condition check of one object: `None` when it holds.
    fn judge_condition(&self, object: &Value) -> Option<String> {
        let (type_, want) = self.condition.as_ref()?;
        let condition = object["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"].as_str() == Some(type_)));
        let Some(condition) = condition else {
            return Some(format!("has no condition {type_} (expected {want})"));
        };
        let status = condition["status"].as_str().unwrap_or("Unknown");
        if status == want {
            return None;
        }
        let message = condition["message"]
            .as_str()
            .or(condition["reason"].as_str())
            .filter(|m| !m.is_empty());
        Some(match message {
            Some(m) => format!("condition {type_} is {status} (expected {want}): {m}"),
            None => format!("condition {type_} is {status} (expected {want})"),
        })
    }

    /// The field check of one object: `None` when it holds.
    fn judge_field(&self, object: &Value) -> Option<String> {
        let f = self.field.as_ref()?;
        let path = f.path.as_str();
        let Some(actual) = f.path.lookup(object) else {
            return Some(format!(
                "has no field {path} (expected {path} {} {})",
                f.operator.symbol(),
                f.value
            ));
        };
        match field_path::compare(actual, f.operator, &f.value) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "{path} is {}, expected {} {}",
                field_path::display(actual),
                f.operator.symbol(),
                f.value
            )),
            Err(why) => Some(format!("{path} cannot be compared: {why}")),
        }
    }

    /// Ready pods among `pods` (listed with `selector` in `namespace`), as `(ready, total)`.
    async fn count_ready(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<(usize, usize), CheckError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| {
                CheckError::from_kube(
                    &e,
                    Permission::new("list", "", "pods", Some(namespace)),
                    format!("cannot list pods matching {selector:?} in namespace {namespace}"),
                )
            })?;
        Ok(count(list.items.iter()))
    }

    fn permission(&self, verb: &str, group: &str, plural: &str, namespace: &str) -> Permission {
        Permission::new(verb, group, plural, Some(namespace))
    }

    /// Every request the check makes, for the controller's access review before injecting.
    /// `None` when discovery cannot find the kind (the check itself says so when it runs).
    pub async fn permissions(&self, default_namespace: &str) -> Option<Vec<Permission>> {
        let (resource, caps) = self.resource().await.ok()?;
        let namespace = match caps.scope {
            Scope::Cluster => None,
            Scope::Namespaced => Some(
                self.namespace
                    .clone()
                    .unwrap_or_else(|| default_namespace.to_string()),
            ),
        };
        Some(needed(
            &self.selection,
            self.ready_pods.map(|(source, _)| source),
            &resource.group,
            &resource.plural,
            namespace.as_deref(),
        ))
    }
}

/// What a check on `group`/`plural` reads: `get` by name or `list` by labels, and `list pods`
/// to count the pods behind a workload or Service.
fn needed(
    selection: &Selection,
    pods: Option<PodSource>,
    group: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Vec<Permission> {
    let verb = match selection {
        Selection::Name(_) => "get",
        Selection::Labels(_) => "list",
    };
    let mut needed = vec![Permission::new(verb, group, plural, namespace)];
    if matches!(pods, Some(PodSource::Workload | PodSource::Service)) {
        needed.push(Permission::new("list", "", "pods", namespace));
    }
    needed
}

/// Why a check could not judge anything.
#[derive(Debug)]
enum CheckError {
    /// What the cluster holds (or not) makes the check fail.
    Failed(String),
    /// The API server refused the controller the read (403): a configuration error.
    Forbidden(String),
}

impl From<String> for CheckError {
    fn from(message: String) -> Self {
        CheckError::Failed(message)
    }
}

impl CheckError {
    fn from_kube(error: &kube::Error, permission: Permission, what: String) -> Self {
        match error {
            kube::Error::Api(status) if status.code == 403 => CheckError::Forbidden(
                access::refused_at_run_time(&permission, &format!("403 {}", status.reason)),
            ),
            other => CheckError::Failed(format!("{what}: {}", super::root_cause(other))),
        }
    }
}

/// `(ready, total)`; a pod being deleted is on its way out and does not count as Ready.
fn count<'a>(pods: impl Iterator<Item = &'a Pod>) -> (usize, usize) {
    pods.fold((0, 0), |(ready, total), pod| {
        let counts = pod.metadata.deletion_timestamp.is_none() && is_running_and_ready(pod);
        (ready + usize::from(counts), total + 1)
    })
}

fn ready_problem(ready: usize, total: usize, min: usize) -> Option<String> {
    (ready < min).then(|| format!("{ready} of {total} pods Ready, expected at least {min}"))
}

/// The label selector of a workload's `spec.selector` (a `LabelSelector`) in list syntax.
pub(crate) fn workload_selector(selector: &Value) -> Result<String, String> {
    let mut terms: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => return Err(format!("selector operator {other:?} is not known")),
        });
    }
    if terms.is_empty() {
        return Err("spec.selector is empty".into());
    }
    Ok(terms.join(","))
}

/// A Service's `spec.selector` (a plain map) in list syntax.
fn service_selector(selector: &Value) -> Result<String, String> {
    let terms: Vec<String> = selector
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if terms.is_empty() {
        return Err("has no spec.selector, so it has no pods to count".into());
    }
    Ok(terms.join(","))
}

impl Check for KubernetesCheck {
    fn target(&self) -> String {
        let what = match &self.selection {
            Selection::Name(name) => name.clone(),
            Selection::Labels(labels) => format!("matching {labels:?}"),
        };
        format!("{} {} {what}", self.api_version(), self.gvk.kind)
    }

    async fn check(&self, ctx: &CheckContext<'_>) -> CheckOutcome {
        let started = Instant::now();
        let (value, problems) = match self.judge(ctx).await {
            Ok(judged) => judged,
            Err(CheckError::Failed(error)) => {
                return CheckOutcome::fail(error, None, started.elapsed());
            }
            Err(CheckError::Forbidden(error)) => {
                return CheckOutcome::forbidden(error, started.elapsed());
            }
        };
        let latency: Duration = started.elapsed();
        let value = value.join("; ");
        if problems.is_empty() {
            CheckOutcome::pass(value, latency)
        } else {
            CheckOutcome::fail(problems.join("; "), Some(value), latency)
        }
    }
}

impl KubernetesCheck {
    /// What was measured and what is wrong, object by object; `Err` when nothing could be
    /// judged (discovery failed, the object is missing).
    async fn judge(
        &self,
        ctx: &CheckContext<'_>,
    ) -> Result<(Vec<String>, Vec<String>), CheckError> {
        let (resource, caps) = self.resource().await?;
        let namespace = match caps.scope {
            Scope::Cluster => String::new(),
            Scope::Namespaced => self
                .namespace
                .clone()
                .unwrap_or_else(|| ctx.namespace.to_string()),
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
            Scope::Namespaced => Api::namespaced_with(self.client.clone(), &namespace, &resource),
        };
        let objects = self.objects(&api, &resource, &namespace).await?;
        let mut values = Vec::new();
        let mut problems = Vec::new();
        for object in &objects {
            let name = object.metadata.name.clone().unwrap_or_default();
            let id = format!("{}/{name}", resource.plural);
            // The whole object as JSON, so paths read `.metadata` and `.status` alike.
            let json = serde_json::to_value(object).unwrap_or_default();
            let mut facts = Vec::new();
            if let Some((type_, _)) = &self.condition {
                let status = json["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"].as_str() == Some(type_)))
                    .and_then(|c| c["status"].as_str())
                    .unwrap_or("absent");
                facts.push(format!("{type_}={status}"));
            }
            if let Some(f) = &self.field {
                let shown = f
                    .path
                    .lookup(&json)
                    .map(field_path::display)
                    .unwrap_or_else(|| "absent".into());
                facts.push(format!("{}={shown}", f.path.as_str()));
            }
            problems.extend(
                [self.judge_condition(&json), self.judge_field(&json)]
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{id} {p}")),
            );
            if let Some((source, min)) = self.ready_pods
                && source != PodSource::Pods
            {
                let selector = if source == PodSource::Service {
                    service_selector(&json["spec"]["selector"])
                } else {
                    workload_selector(&json["spec"]["selector"])
                };
                match selector {
                    Ok(selector) => {
                        let (ready, total) = self.count_ready(&namespace, &selector).await?;
                        facts.push(format!("{ready}/{total} pods Ready"));
                        problems
                            .extend(ready_problem(ready, total, min).map(|p| format!("{id}: {p}")));
                    }
                    Err(why) => problems.push(format!("{id} {why}")),
                }
            }
            values.push(format!("{id} {}", facts.join(", ")).trim_end().to_string());
        }
        if let Some((PodSource::Pods, min)) = self.ready_pods {
            // The selected objects are the pods: one count over all of them.
            let pods: Vec<Pod> = objects
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok())
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect();
            let (ready, total) = count(pods.iter());
            values.push(format!("{ready}/{total} pods Ready"));
            problems.extend(ready_problem(ready, total, min));
        }
        Ok((values, problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_needs_get_by_name_list_by_labels_and_list_pods_to_count_them() {
        let by_name = needed(
            &Selection::Name("web".into()),
            None,
            "policy",
            "poddisruptionbudgets",
            Some("shop"),
        );
        assert_eq!(
            by_name,
            vec![Permission::new(
                "get",
                "policy",
                "poddisruptionbudgets",
                Some("shop")
            )]
        );
        let counted = needed(
            &Selection::Labels("app=web".into()),
            Some(PodSource::Workload),
            "apps",
            "deployments",
            Some("shop"),
        );
        assert_eq!(
            counted,
            vec![
                Permission::new("list", "apps", "deployments", Some("shop")),
                Permission::new("list", "", "pods", Some("shop")),
            ]
        );
        // Pods themselves: the list of them is the count.
        let pods = needed(
            &Selection::Labels("app=web".into()),
            Some(PodSource::Pods),
            "",
            "pods",
            Some("shop"),
        );
        assert_eq!(pods.len(), 1);
    }
    use serde_json::json;

    #[test]
    fn workload_selectors_become_list_syntax() {
        let selector = json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "team", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"},
            ]
        });
        assert_eq!(
            workload_selector(&selector).unwrap(),
            "app=web,tier in (a,b),env notin (dev),team,!canary"
        );
        assert!(workload_selector(&json!({})).is_err());
        assert!(
            workload_selector(&json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}))
                .is_err()
        );
    }

    #[test]
    fn a_service_without_selector_has_no_pods_to_count() {
        assert_eq!(
            service_selector(&json!({"app": "web", "tier": "fe"})).unwrap(),
            "app=web,tier=fe"
        );
        assert!(service_selector(&Value::Null).is_err());
    }

    #[test]
    fn too_few_ready_pods_is_a_sentence() {
        assert_eq!(
            ready_problem(1, 3, 2).unwrap(),
            "1 of 3 pods Ready, expected at least 2"
        );
        assert_eq!(ready_problem(2, 3, 2), None);
    }
}
