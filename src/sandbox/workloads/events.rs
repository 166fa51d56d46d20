//! The Events the simulated components publish, in the shape and wording of the real ones, so
//! that `kubectl get events` and `kubectl describe` read as on a cluster:
//!
//! | component | API | reasons |
//! | --- | --- | --- |
//! | deployment-controller | core/v1, `source.component` | ScalingReplicaSet |
//! | replicaset-controller | core/v1, `source.component` | SuccessfulCreate, SuccessfulDelete |
//! | default-scheduler | events.k8s.io/v1, action `Binding` | Scheduled |
//! | kubelet (per node) | core/v1, `source.{component,host}`, the container's `fieldPath` | Pulled, Created, Started, Killing, SandboxChanged |
//!
//! Publishing is best effort, as in the real components: a failure is logged, never returned.
//! Simplification: no aggregation into series or counts (each occurrence is its own Event).

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as V1Event;
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

/// Who reports an event, as `source` / `reportingComponent` show it.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    DeploymentController,
    ReplicaSetController,
    /// The kubelet of a node.
    Kubelet(&'a str),
}

impl Source<'_> {
    fn component(&self) -> &'static str {
        match self {
            Source::DeploymentController => "deployment-controller",
            Source::ReplicaSetController => "replicaset-controller",
            Source::Kubelet(_) => "kubelet",
        }
    }
}

/// The reference an Event keeps to its object (`involvedObject` / `regarding`).
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> Value {
    json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "namespace": obj.namespace(),
        "name": obj.name_any(),
        "uid": obj.uid(),
        "resourceVersion": obj.resource_version(),
    })
}

fn now_seconds() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Event names as client-go makes them: `<object>.<nanoseconds in hex>`.
fn event_name(object: &Value) -> String {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{}.{nanos:x}", object["name"].as_str().unwrap_or("event"))
}

/// A core/v1 Event from a controller of kube-controller-manager or a kubelet. `field_path`
/// names the container a kubelet event is about (`spec.containers{app}`).
pub async fn record(
    client: &Client,
    source: Source<'_>,
    regarding: Value,
    field_path: Option<&str>,
    reason: &str,
    message: &str,
) {
    publish(
        client, source, regarding, field_path, "Normal", reason, message,
    )
    .await;
}

async fn publish(
    client: &Client,
    source: Source<'_>,
    mut regarding: Value,
    field_path: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let namespace = regarding["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    if let Some(path) = field_path {
        regarding["fieldPath"] = json!(path);
    }
    let now = now_seconds();
    let mut source_json = json!({"component": source.component()});
    let mut instance = "";
    if let Source::Kubelet(node) = source {
        source_json["host"] = json!(node);
        instance = node;
    }
    let event = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event_name(&regarding), "namespace": namespace},
        "involvedObject": regarding,
        "reason": reason, "message": message, "type": type_,
        "source": source_json, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "reportingComponent": source.component(), "reportingInstance": instance,
    });
    let result = match serde_json::from_value::<CoreEvent>(event) {
        Ok(event) => Api::<CoreEvent>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop),
        Err(e) => Err(kube::Error::SerdeError(e)),
    };
    if let Err(error) = result {
        tracing::debug!(%error, reason, "could not publish an event");
    }
}

/// The scheduler's `Scheduled` Event (events.k8s.io/v1, as kube-scheduler writes it).
pub async fn scheduled(client: &Client, pod: Value, node: &str) {
    let namespace = pod["namespace"].as_str().unwrap_or("default").to_string();
    let note = format!(
        "Successfully assigned {namespace}/{} to {node}",
        pod["name"].as_str().unwrap_or_default()
    );
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": event_name(&pod), "namespace": namespace},
        "eventTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "regarding": pod, "reason": "Scheduled", "note": note, "type": "Normal",
        "action": "Binding", "reportingController": "default-scheduler",
        "reportingInstance": "default-scheduler-sandbox",
    });
    let result = match serde_json::from_value::<V1Event>(event) {
        Ok(event) => Api::<V1Event>::namespaced(client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(drop),
        Err(e) => Err(kube::Error::SerdeError(e)),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "could not publish the Scheduled event");
    }
}

/// A container's events when the kubelet starts it.
pub async fn container_started(client: &Client, pod: Value, node: &str, name: &str, image: &str) {
    let path = format!("spec.containers{{{name}}}");
    let kubelet = Source::Kubelet(node);
    // Nothing is pulled in the sandbox: the image counts as present.
    let pulled = format!("Container image \"{image}\" already present on machine");
    record(client, kubelet, pod.clone(), Some(&path), "Pulled", &pulled).await;
    let created = format!("Created container: {name}");
    record(
        client,
        kubelet,
        pod.clone(),
        Some(&path),
        "Created",
        &created,
    )
    .await;
    let started = format!("Started container {name}");
    record(client, kubelet, pod, Some(&path), "Started", &started).await;
}

/// The kubelet's event when it finds a pod's sandbox gone (its processes died with an earlier
/// kubelet) and makes a new one.
pub async fn sandbox_changed(client: &Client, pod: Value, node: &str) {
    let message = "Pod sandbox changed, it will be killed and re-created.";
    record(
        client,
        Source::Kubelet(node),
        pod,
        None,
        "SandboxChanged",
        message,
    )
    .await;
}

/// The kubelet's Warning when it cannot make a pod's sandbox (its network namespace, its
/// interface on the bridge, its cgroup): the pod stays Pending and the kubelet tries again.
pub async fn failed_create_pod_sandbox(client: &Client, pod: Value, node: &str, message: &str) {
    publish(
        client,
        Source::Kubelet(node),
        pod,
        None,
        "Warning",
        "FailedCreatePodSandBox",
        message,
    )
    .await;
}

/// A container's event when the kubelet stops it for a deleted pod.
pub async fn container_killed(client: &Client, pod: Value, node: &str, name: &str) {
    let path = format!("spec.containers{{{name}}}");
    let message = format!("Stopping container {name}");
    record(
        client,
        Source::Kubelet(node),
        pod,
        Some(&path),
        "Killing",
        &message,
    )
    .await;
}
