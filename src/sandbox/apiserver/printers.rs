//! The Table columns of the built-in kinds, after the real server's printers
//! (k8s.io/kubernetes/pkg/printers/internalversion): the columns `kubectl get` shows, and the
//! priority-1 ones `kubectl get -o wide` adds. NAME and AGE are added by `table`.
//!
//! Simplification: a pod's STATUS follows the main cases of the real printer (a waiting or
//! terminated container's reason, Terminating, the phase), not every init-container detail.

use serde_json::{Value, json};

/// A column: (name, type, priority).
pub type Column = (&'static str, &'static str, i64);

/// Columns between NAME and AGE, and columns after AGE (the real printers put some wide
/// columns there), for a built-in resource.
pub fn columns(group: &str, plural: &str) -> (Vec<Column>, Vec<Column>) {
    let wide_workload = vec![
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ];
    match (group, plural) {
        ("", "pods") => (
            vec![
                ("Ready", "string", 0),
                ("Status", "string", 0),
                ("Restarts", "string", 0),
            ],
            vec![
                ("IP", "string", 1),
                ("Node", "string", 1),
                ("Nominated Node", "string", 1),
                ("Readiness Gates", "string", 1),
            ],
        ),
        ("", "namespaces") => (vec![("Status", "string", 0)], vec![]),
        ("", "nodes") => (
            vec![("Status", "string", 0), ("Roles", "string", 0)],
            vec![
                ("Version", "string", 0),
                ("Internal-IP", "string", 1),
                ("External-IP", "string", 1),
                ("OS-Image", "string", 1),
                ("Kernel-Version", "string", 1),
                ("Container-Runtime", "string", 1),
            ],
        ),
        ("", "services") => (
            vec![
                ("Type", "string", 0),
                ("Cluster-IP", "string", 0),
                ("External-IP", "string", 0),
                ("Port(s)", "string", 0),
            ],
            vec![("Selector", "string", 1)],
        ),
        ("", "configmaps") => (vec![("Data", "integer", 0)], vec![]),
        ("", "secrets") => (vec![("Type", "string", 0), ("Data", "integer", 0)], vec![]),
        ("apps", "deployments") => (
            vec![
                ("Ready", "string", 0),
                ("Up-to-date", "integer", 0),
                ("Available", "integer", 0),
            ],
            wide_workload,
        ),
        ("apps", "replicasets") => (
            vec![
                ("Desired", "integer", 0),
                ("Current", "integer", 0),
                ("Ready", "integer", 0),
            ],
            wide_workload,
        ),
        ("coordination.k8s.io", "leases") => (vec![("Holder", "string", 0)], vec![]),
        ("policy", "poddisruptionbudgets") => (
            vec![
                ("Min Available", "string", 0),
                ("Max Unavailable", "string", 0),
                ("Allowed Disruptions", "integer", 0),
            ],
            vec![],
        ),
        _ => (vec![], vec![]),
    }
}

/// The cells of `obj` for [`columns`] (before AGE, after AGE).
pub fn cells(group: &str, plural: &str, obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let int = |v: &Value| json!(v.as_i64().unwrap_or(0));
    let (spec, status) = (&obj["spec"], &obj["status"]);
    match (group, plural) {
        ("", "pods") => pod(obj),
        ("", "namespaces") => (vec![text(&status["phase"])], vec![]),
        ("", "nodes") => node(obj),
        ("", "services") => service(obj),
        ("", "configmaps") => (vec![json!(count(obj, &["data", "binaryData"]))], vec![]),
        ("", "secrets") => (
            vec![text(&obj["type"]), json!(count(obj, &["data"]))],
            vec![],
        ),
        ("apps", "deployments") => (
            vec![
                json!(format!(
                    "{}/{}",
                    status["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(1)
                )),
                int(&status["updatedReplicas"]),
                int(&status["availableReplicas"]),
            ],
            workload_wide(spec),
        ),
        ("apps", "replicasets") => (
            vec![
                json!(spec["replicas"].as_i64().unwrap_or(1)),
                int(&status["replicas"]),
                int(&status["readyReplicas"]),
            ],
            workload_wide(spec),
        ),
        ("coordination.k8s.io", "leases") => (vec![text(&spec["holderIdentity"])], vec![]),
        ("policy", "poddisruptionbudgets") => {
            let or_na = |v: &Value| match v {
                Value::Null => json!("N/A"),
                Value::String(s) => json!(s),
                other => json!(other.to_string()),
            };
            (
                vec![
                    or_na(&spec["minAvailable"]),
                    or_na(&spec["maxUnavailable"]),
                    int(&status["disruptionsAllowed"]),
                ],
                vec![],
            )
        }
        _ => (vec![], vec![]),
    }
}

fn text(v: &Value) -> Value {
    json!(v.as_str().unwrap_or_default())
}

fn or_none(v: &Value) -> Value {
    json!(v.as_str().filter(|s| !s.is_empty()).unwrap_or("<none>"))
}

fn count(obj: &Value, keys: &[&str]) -> usize {
    keys.iter()
        .map(|k| obj[k].as_object().map_or(0, |m| m.len()))
        .sum()
}

/// `k=v,k2=v2` in key order, as `labels.FormatLabels` prints a map.
fn format_labels(labels: &Value) -> String {
    match labels.as_object().filter(|m| !m.is_empty()) {
        None => "<none>".into(),
        Some(m) => {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            pairs.sort();
            pairs.join(",")
        }
    }
}

/// CONTAINERS, IMAGES, SELECTOR of a Deployment or ReplicaSet.
fn workload_wide(spec: &Value) -> Vec<Value> {
    let containers = spec["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let join = |key: &str| {
        containers
            .iter()
            .map(|c| c[key].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(",")
    };
    let selector = super::scale::selector_string(&spec["selector"]);
    vec![
        json!(join("name")),
        json!(join("image")),
        json!(if selector.is_empty() {
            "<none>".to_string()
        } else {
            selector
        }),
    ]
}

fn pod(obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let containers = spec["containers"].as_array().map_or(0, Vec::len);
    let statuses = status["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    // "3 (5m ago)": how long ago the last restart was, when one was.
    let last_restart = statuses
        .iter()
        .filter_map(|s| s["lastState"]["terminated"]["finishedAt"].as_str())
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .max();
    let restarts = match last_restart {
        Some(t) if restarts > 0 => format!(
            "{restarts} ({} ago)",
            super::table::human_age((chrono::Utc::now() - t.to_utc()).num_seconds())
        ),
        _ => restarts.to_string(),
    };
    let mut reason = status["reason"]
        .as_str()
        .or(status["phase"].as_str())
        .unwrap_or("Unknown")
        .to_string();
    // The last container with a reason to show wins, as in the real printer.
    for s in statuses.iter().rev() {
        let state = &s["state"];
        if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if state["terminated"].is_object() {
            let t = &state["terminated"];
            reason = match (t["reason"].as_str(), t["signal"].as_i64()) {
                (Some(r), _) if !r.is_empty() => r.to_string(),
                (_, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                _ => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
            };
        }
    }
    if obj["metadata"].get("deletionTimestamp").is_some() {
        reason = if status["reason"] == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let gates = spec["readinessGates"].as_array().map_or(0, Vec::len);
    (
        vec![
            json!(format!("{ready}/{containers}")),
            json!(reason),
            json!(restarts),
        ],
        vec![
            or_none(&status["podIP"]),
            or_none(&spec["nodeName"]),
            or_none(&status["nominatedNodeName"]),
            json!(if gates == 0 {
                "<none>".to_string()
            } else {
                format!("0/{gates}")
            }),
        ],
    )
}

fn node(obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let status = &obj["status"];
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let mut state = match ready {
        Some(true) => "Ready",
        Some(false) => "NotReady",
        None => "Unknown",
    }
    .to_string();
    if obj["spec"]["unschedulable"] == true {
        state.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = obj["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort_unstable();
    let address = |kind: &str| {
        status["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == kind))
            .map_or(json!("<none>"), |x| text(&x["address"]))
    };
    let info = &status["nodeInfo"];
    (
        vec![
            json!(state),
            json!(if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            }),
        ],
        vec![
            text(&info["kubeletVersion"]),
            address("InternalIP"),
            address("ExternalIP"),
            text(&info["osImage"]),
            text(&info["kernelVersion"]),
            text(&info["containerRuntimeVersion"]),
        ],
    )
}

fn service(obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let spec = &obj["spec"];
    let type_ = spec["type"].as_str().unwrap_or("ClusterIP");
    let external = match type_ {
        "ExternalName" => text(&spec["externalName"]),
        "LoadBalancer" => {
            let ips: Vec<&str> = obj["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .collect();
            json!(if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.join(",")
            })
        }
        _ => {
            let ips: Vec<&str> = spec["externalIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            json!(if ips.is_empty() {
                "<none>".to_string()
            } else {
                ips.join(",")
            })
        }
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                None => format!("{}/{protocol}", p["port"]),
            }
        })
        .collect();
    (
        vec![
            json!(type_),
            or_none(&spec["clusterIP"]),
            external,
            json!(if ports.is_empty() {
                "<none>".to_string()
            } else {
                ports.join(",")
            }),
        ],
        vec![json!(format_labels(&spec["selector"]))],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_show_the_reason_a_container_waits() {
        let pod = json!({"spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
            "status": {"phase": "Pending", "podIP": "10.0.0.1", "containerStatuses": [
                {"name": "a", "ready": false, "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let (cells, wide) = cells("", "pods", &pod);
        assert_eq!(
            cells,
            vec![json!("0/1"), json!("CrashLoopBackOff"), json!("2")]
        );
        assert_eq!(
            wide,
            vec![
                json!("10.0.0.1"),
                json!("n1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn services_replicasets_and_secrets() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"tier": "web", "app": "shop"}}});
        assert_eq!(
            cells("", "services", &svc),
            (
                vec![
                    json!("NodePort"),
                    json!("10.96.0.10"),
                    json!("<none>"),
                    json!("80:30080/TCP,53/UDP")
                ],
                vec![json!("app=shop,tier=web")]
            )
        );
        let rs = json!({"spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}});
        assert_eq!(
            cells("apps", "replicasets", &rs),
            (
                vec![json!(3), json!(3), json!(2)],
                vec![json!("nginx"), json!("nginx:1.27"), json!("app=web")]
            )
        );
        let secret = json!({"type": "Opaque", "data": {"a": "", "b": ""}});
        assert_eq!(
            cells("", "secrets", &secret).0,
            vec![json!("Opaque"), json!(2)]
        );
    }
}
