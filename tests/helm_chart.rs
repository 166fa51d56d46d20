//! The Helm chart (charts/faultline), checked with the real helm binary (v4, from
//! scripts/fetch-tools.sh): lint, render with default and with non-default values, and assert on
//! what would be applied: the controller's leader election, the agent's privileges, RBAC without
//! wildcards and exactly the permissions the code uses, the CRDs, the ServiceMonitor.
//!
//! Every rendered object also goes through a strict typed round trip (see tests/k8s_objects),
//! which is what stands in for `kubectl apply --dry-run=client`: that one needs an API server.

mod k8s_objects;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use k8s_objects::{args, check_typed, containers, describe, labels_match, parse_documents};
use serde_json::{Value, json};

const NAMESPACE: &str = "faultline-system";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn helm_bin() -> PathBuf {
    let bin = repo().join(".tools/bin/helm");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup.sh (or make setup)",
        bin.display()
    );
    bin
}

fn chart() -> PathBuf {
    repo().join("charts/faultline")
}

fn custom_values() -> PathBuf {
    repo().join("tests/fixtures/helm/values-custom.yaml")
}

/// Runs helm; `Ok(stdout)` or `Err(stdout + stderr)`.
fn helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm_bin())
        .args(args)
        // helm reads and writes its own config and cache; keep them out of the user's home.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("faultline-helm-test/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("faultline-helm-test/cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("faultline-helm-test/data"),
        )
        .output()
        .expect("helm runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("helm {args:?} failed:\n{stdout}{stderr}"))
    }
}

/// The chart rendered as `helm install faultline -n faultline-system` would apply it, CRDs
/// included.
struct Rendered {
    objects: Vec<Value>,
}

impl Rendered {
    fn with(extra: &[&str]) -> Rendered {
        let chart = chart();
        let mut args = vec![
            "template",
            "faultline",
            chart.to_str().unwrap(),
            "--namespace",
            NAMESPACE,
            "--include-crds",
        ];
        args.extend_from_slice(extra);
        let text = helm(&args).unwrap_or_else(|e| panic!("{e}"));
        Rendered {
            objects: parse_documents(&text, "helm template"),
        }
    }

    fn defaults() -> Rendered {
        Rendered::with(&[])
    }

    fn custom() -> Rendered {
        let values = custom_values();
        Rendered::with(&["-f", values.to_str().unwrap()])
    }

    fn of_kind<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
        let kind = kind.to_string();
        self.objects
            .iter()
            .filter(move |o| o["kind"] == kind.as_str())
    }

    fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<_> = self
            .of_kind(kind)
            .filter(|o| o["metadata"]["name"] == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {kind}/{name}, found {found:?}"
        );
        found[0]
    }

    fn controller(&self) -> &Value {
        self.one("Deployment", "faultline-controller")
    }

    fn agent(&self) -> &Value {
        self.one("DaemonSet", "faultline-agent")
    }
}

/// The one container of a workload.
fn container(workload: &Value) -> &Value {
    let all = containers(workload);
    assert_eq!(all.len(), 1, "{} runs one container", describe(workload));
    &all[0]
}

/// A role's rules as `apiGroup/resource -> verbs` (and `resourceNames` when set, after `@`).
fn permissions(role: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |field: &str| -> Vec<String> {
            rule[field]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        let names = strings("resourceNames");
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                let mut key = format!("{group}/{resource}");
                if !names.is_empty() {
                    key.push_str(&format!("@{}", names.join(",")));
                }
                map.entry(key).or_default().extend(strings("verbs"));
            }
        }
    }
    map
}

fn perms(entries: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    entries
        .iter()
        .map(|(k, verbs)| (k.to_string(), verbs.iter().map(|v| v.to_string()).collect()))
        .collect()
}

fn env_field_ref<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["valueFrom"]["fieldRef"]["fieldPath"]
        .as_str()
}

#[test]
fn helm_lint_strict_passes_with_default_values() {
    let chart = chart();
    let out =
        helm(&["lint", "--strict", chart.to_str().unwrap()]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn helm_lint_strict_passes_with_non_default_values() {
    let (chart, values) = (chart(), custom_values());
    let out = helm(&[
        "lint",
        "--strict",
        chart.to_str().unwrap(),
        "-f",
        values.to_str().unwrap(),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn a_misspelt_value_fails_the_lint() {
    // values.schema.json refuses unknown keys: `replica` instead of `replicas` must not pass
    // silently with the default.
    let chart = chart();
    let err = helm(&[
        "lint",
        "--strict",
        chart.to_str().unwrap(),
        "--set",
        "controller.replica=3",
    ])
    .expect_err("an unknown value is refused");
    assert!(err.contains("replica"), "{err}");
}

#[test]
fn every_rendered_object_survives_a_strict_typed_round_trip() {
    for (values, rendered) in [
        ("default", Rendered::defaults()),
        ("custom", Rendered::custom()),
    ] {
        let mut untyped = Vec::new();
        for object in &rendered.objects {
            match check_typed(object) {
                Ok(true) => {}
                Ok(false) => untyped.push(describe(object)),
                Err(problem) => panic!("{values} values: {problem}"),
            }
            if object["kind"] != "CustomResourceDefinition"
                && !matches!(
                    object["kind"].as_str(),
                    Some(
                        "ClusterRole"
                            | "ClusterRoleBinding"
                            | "ValidatingAdmissionPolicy"
                            | "ValidatingAdmissionPolicyBinding"
                    )
                )
            {
                assert_eq!(
                    object["metadata"]["namespace"],
                    NAMESPACE,
                    "{values} values: {} is in the release namespace",
                    describe(object)
                );
            }
        }
        // Only the ServiceMonitor has no k8s-openapi type; it is checked field by field below.
        let expected: Vec<String> = if values == "custom" {
            vec!["ServiceMonitor/faultline".into()]
        } else {
            vec![]
        };
        assert_eq!(untyped, expected, "{values} values");
    }
}

#[test]
fn the_controller_runs_two_leader_elected_replicas_by_default() {
    let rendered = Rendered::defaults();
    let deployment = rendered.controller();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "faultline-controller");
    let c = container(deployment);
    assert_eq!(
        c["image"], "faultline:0.1.0",
        "the tag defaults to appVersion"
    );
    assert_eq!(
        args(c),
        [
            "controller",
            "--namespace=$(POD_NAMESPACE)",
            "--identity=$(POD_NAME)",
            "--admin-addr=0.0.0.0:8080",
            "--lease-name=faultline-controller",
            "--lease-duration-seconds=15",
            "--lease-grace-seconds=5",
            "--injection-timeout=30s",
            "--max-targets=20",
        ],
        "no --allow-all-namespaces by default"
    );
    // The $(VAR)s above expand from these.
    assert_eq!(env_field_ref(c, "POD_NAME"), Some("metadata.name"));
    assert_eq!(
        env_field_ref(c, "POD_NAMESPACE"),
        Some("metadata.namespace")
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        c["ports"][0],
        json!({"name": "metrics", "containerPort": 8080, "protocol": "TCP"})
    );
    // Requests and limits, both.
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "{kind}.{resource}"
            );
        }
    }
    // Unprivileged.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}));
    // Two replicas: a budget keeps one during drains.
    let pdb = rendered.one("PodDisruptionBudget", "faultline-controller");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        &pod_labels(deployment)
    ));
}

fn pod_labels(workload: &Value) -> Value {
    workload["spec"]["template"]["metadata"]["labels"].clone()
}

#[test]
fn non_default_values_reach_the_controller() {
    let rendered = Rendered::custom();
    let deployment = rendered.controller();
    assert_eq!(deployment["spec"]["replicas"], 3);
    let c = container(deployment);
    assert_eq!(c["image"], "registry.example.com/chaos/faultline:1.2.3");
    assert_eq!(c["imagePullPolicy"], "Always");
    let a = args(c);
    for expected in [
        "--allow-all-namespaces",
        "--max-targets=5",
        "--lease-name=chaos-leader",
        "--lease-duration-seconds=20",
        "--lease-grace-seconds=4",
        "--injection-timeout=1m",
        "--protected-namespace=payments",
        "--protected-namespace=identity",
    ] {
        assert!(a.contains(&expected), "{expected} in {a:?}");
    }
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}})
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "platform-critical");
    assert_eq!(
        pod["imagePullSecrets"],
        json!([{"name": "registry-credentials"}])
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["annotations"]["example.com/team"],
        "platform"
    );
    // The Lease the controller may touch follows the lease name.
    let role = rendered.one("Role", "faultline-controller");
    assert!(permissions(role).contains_key("coordination.k8s.io/leases@chaos-leader"));
    // The extra probe kinds are readable.
    let cluster_role = rendered.one("ClusterRole", "faultline-controller");
    assert_eq!(
        permissions(cluster_role)["argoproj.io/rollouts"],
        ["get", "list"].map(String::from).into()
    );
}

#[test]
fn max_targets_zero_removes_the_cap() {
    let rendered = Rendered::with(&["--set", "safety.maxTargets=0"]);
    let a = args(container(rendered.controller()))
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(!a.iter().any(|x| x.starts_with("--max-targets")), "{a:?}");
}

#[test]
fn the_agent_shares_the_hosts_pids_and_network_with_exactly_three_capabilities() {
    for rendered in [Rendered::defaults(), Rendered::custom()] {
        let daemonset = rendered.agent();
        let pod = &daemonset["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        assert_eq!(pod["serviceAccountName"], "faultline-agent");
        let c = container(daemonset);
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(
            sc["runAsUser"], 0,
            "capabilities are effective only for root"
        );
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        let added: BTreeSet<&str> = sc["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            added,
            BTreeSet::from(["NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE"]),
            "the documented set, nothing more"
        );
        // Its node, from the downward API.
        assert!(args(c).contains(&"--node=$(NODE_NAME)"));
        assert!(args(c).contains(&"--proc-root=/proc"));
        assert_eq!(env_field_ref(c, "NODE_NAME"), Some("spec.nodeName"));
        // The journal survives the agent: a hostPath, mounted where --journal-dir points.
        let journal_dir = args(c)
            .iter()
            .find_map(|a| a.strip_prefix("--journal-dir="))
            .expect("--journal-dir")
            .to_string();
        let mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == journal_dir.as_str())
            .expect("the journal is mounted");
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        assert_eq!(volume["hostPath"]["path"], journal_dir.as_str());
        // No other host paths than the journal and the xtables lock.
        let host_paths: BTreeSet<&str> = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["hostPath"]["path"].as_str())
            .collect();
        assert_eq!(
            host_paths,
            BTreeSet::from([journal_dir.as_str(), "/run/xtables.lock"])
        );
        // The admin port from --admin-addr is the container's metrics port.
        let admin_port: u64 = args(c)
            .iter()
            .find_map(|a| a.strip_prefix("--admin-addr="))
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .expect("--admin-addr=HOST:PORT");
        assert_eq!(c["ports"][0]["containerPort"], admin_port);
        for kind in ["requests", "limits"] {
            assert!(c["resources"][kind]["memory"].is_string(), "{kind}");
        }
    }
    // By default every node gets an agent, tainted ones included.
    let defaults = Rendered::defaults();
    assert_eq!(
        defaults.agent()["spec"]["template"]["spec"]["tolerations"],
        json!([{"operator": "Exists"}])
    );
    let custom = Rendered::custom();
    assert_eq!(
        custom.agent()["spec"]["template"]["spec"]["tolerations"],
        json!([{"key": "dedicated", "operator": "Equal", "value": "chaos", "effect": "NoSchedule"}])
    );
}

#[test]
fn no_rbac_rule_uses_a_wildcard() {
    for rendered in [Rendered::defaults(), Rendered::custom()] {
        let roles: Vec<&Value> = rendered
            .of_kind("ClusterRole")
            .chain(rendered.of_kind("Role"))
            .collect();
        assert!(
            roles.len() >= 3,
            "controller, agent and the namespaced role"
        );
        for role in roles {
            for rule in role["rules"].as_array().unwrap() {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    for entry in rule[field].as_array().into_iter().flatten() {
                        let entry = entry.as_str().unwrap();
                        assert!(
                            !entry.contains('*'),
                            "{}: {field} has {entry:?}",
                            describe(role)
                        );
                    }
                }
                assert!(rule.get("nonResourceURLs").is_none(), "{}", describe(role));
            }
        }
    }
}

#[test]
fn a_wildcard_in_probe_read_rules_is_refused() {
    let chart = chart();
    let err = helm(&[
        "template",
        "faultline",
        chart.to_str().unwrap(),
        "--set",
        "controller.probeReadRules[0].apiGroups[0]=*",
        "--set",
        "controller.probeReadRules[0].resources[0]=pods",
    ])
    .expect_err("a wildcard is refused");
    assert!(err.contains("wildcards"), "{err}");
}

#[test]
fn the_controller_may_do_exactly_what_its_code_does() {
    let rendered = Rendered::defaults();
    assert_eq!(
        permissions(rendered.one("ClusterRole", "faultline-controller")),
        perms(&[
            (
                "faultline.dev/chaosexperiments",
                &["get", "list", "watch", "create", "patch", "delete"]
            ),
            ("faultline.dev/gamedays", &["get", "list", "watch"]),
            ("faultline.dev/chaosschedules", &["get", "list", "watch"]),
            ("faultline.dev/gamedays/status", &["update", "patch"]),
            ("faultline.dev/chaosschedules/status", &["update", "patch"]),
            ("faultline.dev/gamedays/finalizers", &["update"]),
            ("faultline.dev/chaosschedules/finalizers", &["update"]),
            ("faultline.dev/chaosexperiments/status", &["patch"]),
            ("faultline.dev/chaosexperiments/finalizers", &["update"]),
            (
                "faultline.dev/faultinjections",
                &[
                    "get",
                    "list",
                    "watch",
                    "create",
                    "patch",
                    "delete",
                    "deletecollection"
                ]
            ),
            ("/pods", &["get", "list", "delete"]),
            ("/pods/eviction", &["create"]),
            ("/namespaces", &["get", "list", "watch"]),
            ("/nodes", &["get"]),
            ("events.k8s.io/events", &["create", "patch"]),
            // Kubernetes probes (controller.probeReadRules).
            ("apps/deployments", &["get", "list"]),
            ("apps/replicasets", &["get", "list"]),
            ("apps/statefulsets", &["get", "list"]),
            ("apps/daemonsets", &["get", "list"]),
            ("/services", &["get", "list"]),
            ("discovery.k8s.io/endpointslices", &["get", "list"]),
            ("policy/poddisruptionbudgets", &["get", "list"]),
            ("batch/jobs", &["get", "list"]),
        ])
    );
    // In its own namespace: its Lease and, by name only, the pause switch and the revert
    // signal (which the chart creates: no right to create ConfigMaps).
    let role = rendered.one("Role", "faultline-controller");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        permissions(role),
        perms(&[
            ("coordination.k8s.io/leases", &["create"]),
            (
                "coordination.k8s.io/leases@faultline-controller",
                &["get", "patch"]
            ),
            ("/configmaps@faultline-pause", &["get", "list", "watch"]),
            (
                "/configmaps@faultline-reverting",
                &["get", "list", "watch", "patch"]
            ),
        ])
    );
    let signal = rendered.one("ConfigMap", "faultline-reverting");
    assert_eq!(signal["metadata"]["namespace"], NAMESPACE);
    assert!(
        signal.get("data").is_none_or(Value::is_null),
        "the chart sets no key: an upgrade must leave the controller's alone"
    );
    assert_bound(&rendered, "ClusterRoleBinding", "faultline-controller");
    assert_bound(&rendered, "RoleBinding", "faultline-controller");
}

#[test]
fn the_agent_touches_only_pods_its_node_fault_injections_receipts_and_events() {
    let rendered = Rendered::defaults();
    assert_eq!(
        permissions(rendered.one("ClusterRole", "faultline-agent")),
        perms(&[
            ("/pods", &["get", "list", "watch"]),
            // The opt-in label, before applying and while a fault runs.
            ("/namespaces", &["get", "list", "watch"]),
            // The experiment behind each work item, read when it is about to be applied;
            // watched once labelled reverting, and its node's revert receipt written.
            ("faultline.dev/chaosexperiments", &["get", "list", "watch"]),
            ("faultline.dev/chaosexperiments/status", &["patch"]),
            ("/nodes", &["get", "patch"]),
            (
                "faultline.dev/faultinjections",
                &["get", "list", "watch", "update", "patch"]
            ),
            ("faultline.dev/faultinjections/status", &["update", "patch"]),
            ("events.k8s.io/events", &["create", "patch"]),
        ])
    );
    assert_bound(&rendered, "ClusterRoleBinding", "faultline-agent");
    // In the release namespace: the pause switch and the revert signal, by name only; its
    // node's revert receipts are left in the signal's ConfigMap (narrowed by a policy).
    let role = rendered.one("Role", "faultline-agent");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        permissions(role),
        perms(&[
            ("/configmaps@faultline-pause", &["get", "list", "watch"]),
            (
                "/configmaps@faultline-reverting",
                &["get", "list", "watch", "patch"]
            ),
        ])
    );
    assert_bound(&rendered, "RoleBinding", "faultline-agent");
}

#[test]
fn the_agent_checks_work_items_against_the_controllers_safety_settings() {
    let agent_args = |rendered: &Rendered| -> Vec<String> {
        args(container(rendered.agent()))
            .into_iter()
            .map(String::from)
            .collect()
    };
    let defaults = agent_args(&Rendered::defaults());
    assert!(
        defaults.contains(&"--controller-namespace=$(POD_NAMESPACE)".to_string()),
        "{defaults:?}"
    );
    assert!(!defaults.iter().any(|a| a == "--allow-all-namespaces"));
    assert!(
        !defaults
            .iter()
            .any(|a| a.starts_with("--protected-namespace"))
    );
    let custom = agent_args(&Rendered::custom());
    for expected in [
        "--allow-all-namespaces",
        "--protected-namespace=payments",
        "--protected-namespace=identity",
    ] {
        assert!(
            custom.iter().any(|a| a == expected),
            "{expected} in {custom:?}"
        );
    }
}

/// The binding `name` gives the role `name` to the service account `name` of the release.
fn assert_bound(rendered: &Rendered, kind: &str, name: &str) {
    let binding = rendered.one(kind, name);
    assert_eq!(binding["roleRef"]["name"], name);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}])
    );
    rendered.one("ServiceAccount", name);
}

#[test]
fn the_agent_can_be_left_out() {
    let rendered = Rendered::with(&["--set", "agent.enabled=false"]);
    assert!(
        rendered
            .objects
            .iter()
            .all(|o| !o["metadata"]["name"].as_str().unwrap().contains("agent")),
        "no agent objects"
    );
    rendered.controller();
}

#[test]
fn the_chart_ships_the_crds_of_crds_dir_byte_for_byte() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let source = repo().join("crds");
    let shipped = chart().join("crds");
    assert_eq!(
        names(&shipped),
        names(&source),
        "charts/faultline/crds/ is not crds/: run `make chart-crds`"
    );
    for name in names(&source) {
        assert!(
            std::fs::read(source.join(&name)).unwrap()
                == std::fs::read(shipped.join(&name)).unwrap(),
            "charts/faultline/crds/{name} differs from crds/{name}: run `make chart-crds`"
        );
    }
    // And helm installs exactly those.
    let rendered = Rendered::defaults();
    let rendered_crds: Vec<&Value> = rendered.of_kind("CustomResourceDefinition").collect();
    let mut from_files = Vec::new();
    for name in names(&source) {
        let text = std::fs::read_to_string(source.join(&name)).unwrap();
        from_files.extend(parse_documents(&text, &name));
    }
    assert_eq!(rendered_crds.len(), from_files.len());
    for crd in from_files {
        let name = crd["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            rendered.one("CustomResourceDefinition", name),
            &crd,
            "rendered CRD {name}"
        );
    }
}

#[test]
fn metrics_services_select_the_pods_and_the_service_monitor_selects_them() {
    let rendered = Rendered::custom();
    let controller_svc = rendered.one("Service", "faultline-controller-metrics");
    assert!(labels_match(
        &controller_svc["spec"]["selector"],
        &pod_labels(rendered.controller())
    ));
    assert_eq!(controller_svc["spec"]["ports"][0]["targetPort"], "metrics");
    let agent_svc = rendered.one("Service", "faultline-agent-metrics");
    assert_eq!(agent_svc["spec"]["clusterIP"], "None");
    assert!(labels_match(
        &agent_svc["spec"]["selector"],
        &pod_labels(rendered.agent())
    ));
    assert_eq!(agent_svc["spec"]["ports"][0]["port"], 9191);

    let monitor = rendered.one("ServiceMonitor", "faultline");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let selector = &monitor["spec"]["selector"];
    for svc in [controller_svc, agent_svc] {
        let labels = &svc["metadata"]["labels"];
        assert!(
            labels_match(&selector["matchLabels"], labels),
            "{}",
            describe(svc)
        );
        let component = labels["app.kubernetes.io/component"].clone();
        assert!(
            selector["matchExpressions"][0]["values"]
                .as_array()
                .unwrap()
                .contains(&component)
        );
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([NAMESPACE])
    );
    assert_eq!(
        monitor["spec"]["endpoints"],
        json!([{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}])
    );
    // Off by default.
    assert_eq!(Rendered::defaults().of_kind("ServiceMonitor").count(), 0);
}

#[test]
fn aggregated_roles_are_opt_in_and_never_let_users_write_fault_injections() {
    assert_eq!(
        Rendered::defaults()
            .of_kind("ClusterRole")
            .filter(|r| r["metadata"]["labels"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to")))
            .count(),
        0
    );
    let rendered = Rendered::custom();
    let edit = permissions(rendered.one("ClusterRole", "faultline-edit"));
    assert!(!edit.contains_key("faultline.dev/faultinjections"));
    assert!(edit.contains_key("faultline.dev/chaosexperiments"));
    let view = permissions(rendered.one("ClusterRole", "faultline-view"));
    assert_eq!(
        view["faultline.dev/faultinjections"],
        ["get", "list", "watch"].map(String::from).into()
    );
}

#[test]
fn the_admission_policies_follow_the_safety_values() {
    // Defaults: the opt-in label is required, kube-system and the release namespace protected.
    let defaults = Rendered::defaults();
    let policy = defaults.one("ValidatingAdmissionPolicy", "faultline-pod-disruption");
    let rules = policy["spec"]["validations"].to_string();
    assert!(
        rules.contains("['kube-system', 'faultline-system']"),
        "{rules}"
    );
    assert!(rules.contains("faultline.dev/chaos"), "{rules}");
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == \"system:serviceaccount:faultline-system:faultline-controller\""
    );
    for name in [
        "faultline-pod-disruption",
        "faultline-agent-node",
        "faultline-agent-receipts",
        "faultline-agent-receipt-keys",
        "faultline-fault-injections",
    ] {
        let binding = defaults.one("ValidatingAdmissionPolicyBinding", name);
        assert_eq!(binding["spec"]["policyName"], name);
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    }
    // Custom: every namespace allowed (no opt-in rule), two more protected.
    let custom = Rendered::custom();
    let policy = custom.one("ValidatingAdmissionPolicy", "faultline-pod-disruption");
    let rules = policy["spec"]["validations"].to_string();
    assert!(
        rules.contains("['kube-system', 'faultline-system', 'payments', 'identity']"),
        "{rules}"
    );
    assert!(!rules.contains("faultline.dev/chaos"), "{rules}");
    // Switched off, none is rendered.
    let off = Rendered::with(&["--set", "admissionPolicies.enabled=false"]);
    assert_eq!(off.of_kind("ValidatingAdmissionPolicy").count(), 0);
}
