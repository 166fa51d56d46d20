//! What the real API server fills in when built-in objects are written: its defaulting
//! functions (`SetDefaults_*` in k8s.io/kubernetes/pkg/apis/{core,apps}/v1) and, for new pods,
//! the admission plugins every cluster runs: ServiceAccount (the account name and its token
//! volume), Priority and DefaultTolerationSeconds. `kubectl describe` and `-o yaml` show these
//! fields, so a pod or Deployment reads the same here as on a cluster.
//!
//! Defaulting only adds what is missing, so applying it on every write (as the real server
//! does on every decode) changes nothing the second time. Pure: no store access.
//!
//! Simplifications: the token volume is only declared (nothing is mounted: the sandbox's pods
//! are demo-app processes); the ServiceAccount admission does not require the account to
//! exist (a real server refuses pods for a missing account, which only happens in the moment
//! after a namespace is created); of PriorityClasses only the two built-in ones exist; Service
//! cluster IPs are allocated by the sandbox's Services stand-in, not here.

use super::errors::{ApiError, ApiResult};
use super::resources::ResourceDef;
use serde_json::{Map, Value, json};

/// Where the ServiceAccount admission mounts the token volume.
const TOKEN_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether the real server keeps `metadata.generation` for the kind (kinds with a spec that
/// controllers observe; ConfigMaps, Secrets, Services, Namespaces and the like have none).
pub fn tracks_generation(def: &ResourceDef) -> bool {
    def.is_custom()
        || matches!(
            (def.group.as_str(), def.plural.as_str()),
            ("", "pods")
                | ("apps", _)
                | ("policy", "poddisruptionbudgets")
                | ("apiextensions.k8s.io", _)
        )
}

/// Fills in the defaults of `obj`, a built-in object of kind `def`. Parts that are missing
/// altogether (a Deployment without a template) stay missing: validation's business.
pub fn apply(def: &ResourceDef, obj: &mut Value) {
    let spec = obj.get_mut("spec").filter(|s| s.is_object());
    match (def.group.as_str(), def.plural.as_str(), spec) {
        ("", "pods", Some(spec)) => {
            pod_spec(spec);
            pod(spec);
        }
        ("apps", "deployments", Some(spec)) => deployment(spec),
        ("apps", "replicasets", Some(spec)) => {
            set(spec, "replicas", json!(1));
            if let Some(template) = template_spec(spec) {
                pod_spec(template);
            }
        }
        ("", "services", Some(spec)) => service(spec),
        ("", "secrets", _) => set(obj, "type", json!("Opaque")),
        ("", "namespaces", _) => {
            let name = obj["metadata"]["name"].clone();
            if name.is_string() {
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            }
            set(&mut obj["spec"], "finalizers", json!(["kubernetes"]));
        }
        _ => {}
    }
}

fn template_spec(spec: &mut Value) -> Option<&mut Value> {
    spec.get_mut("template")?
        .get_mut("spec")
        .filter(|s| s.is_object())
}

/// Sets `key` when it is absent (or null).
fn set(obj: &mut Value, key: &str, value: Value) {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    if obj[key].is_null() {
        obj[key] = value;
    }
}

fn items<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

fn deployment(spec: &mut Value) {
    set(spec, "replicas", json!(1));
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    set(spec, "strategy", json!({}));
    let strategy = &mut spec["strategy"];
    set(strategy, "type", json!("RollingUpdate"));
    if strategy["type"] == "RollingUpdate" {
        set(strategy, "rollingUpdate", json!({}));
        set(
            &mut strategy["rollingUpdate"],
            "maxUnavailable",
            json!("25%"),
        );
        set(&mut strategy["rollingUpdate"], "maxSurge", json!("25%"));
    }
    if let Some(template) = template_spec(spec) {
        pod_spec(template);
    }
}

fn service(spec: &mut Value) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    if spec["type"] != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
        set(spec, "ipFamilies", json!(["IPv4"]));
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
    }
    if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    for port in items(spec, "ports") {
        set(port, "protocol", json!("TCP"));
        let number = port["port"].clone();
        set(port, "targetPort", number);
    }
}

/// `SetDefaults_PodSpec` and the container, probe and volume defaults under it: what pods and
/// pod templates share.
fn pod_spec(spec: &mut Value) {
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    set(spec, "schedulerName", json!("default-scheduler"));
    for key in ["initContainers", "containers"] {
        for c in items(spec, key) {
            container(c);
        }
    }
    for volume in items(spec, "volumes") {
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if volume[source].is_object() {
                set(&mut volume[source], "defaultMode", json!(420));
            }
        }
        if let Some(downward) = volume.get_mut("downwardAPI") {
            items(downward, "items").for_each(field_ref);
        }
        if let Some(projected) = volume.get_mut("projected") {
            for projection in items(projected, "sources") {
                if let Some(downward) = projection.get_mut("downwardAPI") {
                    items(downward, "items").for_each(field_ref);
                }
            }
        }
    }
}

fn field_ref(holder: &mut Value) {
    if holder["fieldRef"].is_object() {
        set(&mut holder["fieldRef"], "apiVersion", json!("v1"));
    }
    if holder["resourceFieldRef"].is_object() {
        set(&mut holder["resourceFieldRef"], "divisor", json!("0"));
    }
}

fn container(c: &mut Value) {
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    let policy = pull_policy(c["image"].as_str().unwrap_or_default());
    set(c, "imagePullPolicy", json!(policy));
    set(c, "resources", json!({}));
    for port in items(c, "ports") {
        set(port, "protocol", json!("TCP"));
    }
    for env in items(c, "env") {
        if env["valueFrom"].is_object() {
            field_ref(&mut env["valueFrom"]);
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[key].is_object() {
            let probe = &mut c[key];
            set(probe, "timeoutSeconds", json!(1));
            set(probe, "periodSeconds", json!(10));
            set(probe, "successThreshold", json!(1));
            set(probe, "failureThreshold", json!(3));
            if probe["httpGet"].is_object() {
                set(&mut probe["httpGet"], "scheme", json!("HTTP"));
            }
        }
    }
}

/// `Always` for `:latest` or an untagged image, `IfNotPresent` otherwise.
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

/// `SetDefaults_Pod`: what a pod gets beyond its spec's defaults.
fn pod(spec: &mut Value) {
    set(spec, "enableServiceLinks", json!(true));
    let account = spec["serviceAccountName"].clone();
    if account.is_string() {
        set(spec, "serviceAccount", account);
    }
    // Requests default to the limits a container sets.
    for key in ["initContainers", "containers"] {
        for c in items(spec, key) {
            let limits = c["resources"].get("limits").cloned().unwrap_or_default();
            if let Some(limits) = limits.as_object() {
                for (name, quantity) in limits {
                    set(&mut c["resources"]["requests"], name, quantity.clone());
                }
            }
        }
    }
}

/// The admission plugins a new pod goes through. `account` is the pod's ServiceAccount, when
/// it exists; `token_suffix` names the token volume (`kube-api-access-<suffix>`).
pub fn admit_pod(obj: &mut Value, account: Option<&Value>, token_suffix: &str) -> ApiResult<()> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return Ok(());
    };
    // Priority: the built-in classes, or 0.
    let priority = match spec["priorityClassName"].as_str().unwrap_or_default() {
        "" => 0,
        "system-cluster-critical" => 2_000_000_000,
        "system-node-critical" => 2_000_001_000,
        other => {
            return Err(ApiError::forbidden(
                "",
                "pods",
                &name,
                &format!("no PriorityClass with name {other} was found"),
            ));
        }
    };
    set(spec, "priority", json!(priority));
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    // DefaultTolerationSeconds.
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = items(spec, "tolerations").any(|t| {
            (t["key"] == key || t["key"].is_null() && t["operator"] == "Exists")
                && (t["effect"] == "NoExecute" || t["effect"].is_null())
        });
        if !tolerated {
            set(spec, "tolerations", json!([]));
            if let Some(list) = spec["tolerations"].as_array_mut() {
                list.push(
                    json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                                 "tolerationSeconds": 300}),
                );
            }
        }
    }
    // ServiceAccount: the account, and its token as a projected volume in every container.
    set(spec, "serviceAccountName", json!("default"));
    let account_name = spec["serviceAccountName"].clone();
    spec["serviceAccount"] = account_name;
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account.and_then(|a| a["automountServiceAccountToken"].as_bool()))
        .unwrap_or(true);
    let mounted = ["initContainers", "containers"].iter().any(|k| {
        spec[k].as_array().into_iter().flatten().any(|c| {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["mountPath"] == TOKEN_MOUNT)
        })
    });
    if automount && !mounted {
        let volume = format!("kube-api-access-{token_suffix}");
        set(spec, "volumes", json!([]));
        if let Some(list) = spec["volumes"].as_array_mut() {
            list.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef":
                    {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}));
        }
        for key in ["initContainers", "containers"] {
            for c in items(spec, key) {
                set(c, "volumeMounts", json!([]));
                if let Some(mounts) = c["volumeMounts"].as_array_mut() {
                    mounts
                        .push(json!({"name": volume, "readOnly": true, "mountPath": TOKEN_MOUNT}));
                }
            }
        }
    }
    Ok(())
}

/// A pod's QoS class, as the real API server sets it on create (and never lets change):
/// Guaranteed when every container's requests equal its limits for cpu and memory, BestEffort
/// when no container asks for either, Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .collect();
    let resource =
        |c: &Value, kind: &str, name: &str| c["resources"][kind][name].as_str().map(str::to_owned);
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        for name in ["cpu", "memory"] {
            let limit = resource(c, "limits", name);
            // A limit without a request makes the request equal to the limit.
            let request = resource(c, "requests", name).or_else(|| limit.clone());
            any |= request.is_some() || limit.is_some();
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(group: &str, plural: &str) -> ResourceDef {
        super::super::resources::Registry::with_builtins()
            .by_key(&super::super::resources::ResKey {
                group: group.into(),
                plural: plural.into(),
            })
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_pod_from_kubectl_run_reads_as_on_a_cluster() {
        let mut pod = json!({"metadata": {"name": "shell"}, "spec": {"containers": [
            {"name": "shell", "image": "busybox", "resources": {}}]}});
        apply(&def("", "pods"), &mut pod);
        admit_pod(&mut pod, None, "5dz4j").unwrap();
        // What a v1.36 server stored for the same `kubectl run shell --image=busybox`.
        let real = json!({
            "containers": [{"image": "busybox", "imagePullPolicy": "Always", "name": "shell",
                "resources": {}, "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [{"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                                  "name": "kube-api-access-5dz4j", "readOnly": true}]}],
            "dnsPolicy": "ClusterFirst", "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority", "priority": 0, "restartPolicy": "Always",
            "schedulerName": "default-scheduler", "securityContext": {},
            "serviceAccount": "default", "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}],
            "volumes": [{"name": "kube-api-access-5dz4j", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}}]}}]
        });
        assert_eq!(pod["spec"], real);
        // Defaulting again changes nothing.
        let before = pod.clone();
        apply(&def("", "pods"), &mut pod);
        assert_eq!(pod.to_string(), before.to_string());
    }

    #[test]
    fn a_deployment_gets_the_rolling_update_defaults() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}});
        apply(&def("apps", "deployments"), &mut d);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let c = &spec["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        // Templates are not pods: no admission, no enableServiceLinks.
        assert!(spec["template"]["spec"].get("enableServiceLinks").is_none());
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply(&def("apps", "deployments"), &mut recreate);
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());
    }

    #[test]
    fn services_secrets_and_namespaces() {
        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply(&def("", "services"), &mut s);
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 80},
                   {"port": 53, "protocol": "UDP", "targetPort": "dns"}])
        );
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        let mut secret = json!({"data": {}});
        apply(&def("", "secrets"), &mut secret);
        assert_eq!(secret["type"], "Opaque");
        let mut ns = json!({"metadata": {"name": "shop"}});
        apply(&def("", "namespaces"), &mut ns);
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "shop"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    }

    #[test]
    fn admission_respects_opt_outs_and_refuses_unknown_priority_classes() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "automountServiceAccountToken": false,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": "x:1"}]}});
        admit_pod(&mut pod, None, "abcde").unwrap();
        assert!(pod["spec"].get("volumes").is_none());
        assert_eq!(pod["spec"]["tolerations"], json!([{"operator": "Exists"}]));
        let mut no_automount = json!({"spec": {"containers": [{"name": "c"}]}});
        admit_pod(
            &mut no_automount,
            Some(&json!({"automountServiceAccountToken": false})),
            "abcde",
        )
        .unwrap();
        assert!(no_automount["spec"].get("volumes").is_none());
        let mut critical = json!({"spec": {"priorityClassName": "system-node-critical"}});
        admit_pod(&mut critical, None, "abcde").unwrap();
        assert_eq!(critical["spec"]["priority"], 2_000_001_000);
        let mut unknown = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "gold"}});
        let e = admit_pod(&mut unknown, None, "abcde").unwrap_err();
        assert_eq!(e.code, 403);
        assert!(
            e.message
                .contains("no PriorityClass with name gold was found"),
            "{}",
            e.message
        );
    }

    #[test]
    fn pull_policies() {
        assert_eq!(pull_policy("busybox"), "Always");
        assert_eq!(pull_policy("busybox:latest"), "Always");
        assert_eq!(pull_policy("localhost:5000/app"), "Always");
        assert_eq!(pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(pull_policy("app@sha256:abc"), "IfNotPresent");
    }
}
