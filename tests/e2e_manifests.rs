//! What the kind end-to-end (scripts/e2e-kind.sh) runs, checked offline: the demo workloads are
//! well-formed Kubernetes objects, experiments/e2e/expectations.yaml covers every example and
//! names valid files, the runnable examples' probes and selectors point at what the workloads
//! define (so they can work in a cluster), and the image carries the agent's tools.

mod k8s_objects;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use k8s_objects::{check_typed, containers, describe, labels_match, parse_documents};
use serde::Deserialize;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// experiments/e2e/expectations.yaml (its header documents the fields).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expectations {
    api_version: String,
    kind: String,
    examples: Vec<Example>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Example {
    file: String,
    run: bool,
    exit_code: Option<i32>,
    verdict: Option<String>,
    #[serde(default)]
    needs: Vec<String>,
    what: Option<String>,
    reason: Option<String>,
}

const EXPECTATIONS: &str = "experiments/e2e/expectations.yaml";

fn expectations() -> Expectations {
    serde_yaml::from_str(&read(EXPECTATIONS)).unwrap_or_else(|e| panic!("{EXPECTATIONS}: {e}"))
}

/// Every object in experiments/workloads/*.yaml.
fn workloads() -> Vec<Value> {
    let dir = repo().join("experiments/workloads");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("experiments/workloads/ exists")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "experiments/workloads/ holds no manifests"
    );
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            parse_documents(&text, &f.display().to_string())
        })
        .collect()
}

fn namespace_of(object: &Value) -> &str {
    object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
}

fn pod_labels(workload: &Value) -> &Value {
    &workload["spec"]["template"]["metadata"]["labels"]
}

/// Deployments in `namespace` whose pods `match_labels` selects.
fn selected<'a>(workloads: &'a [Value], namespace: &str, match_labels: &Value) -> Vec<&'a Value> {
    workloads
        .iter()
        .filter(|o| o["kind"] == "Deployment" && namespace_of(o) == namespace)
        .filter(|d| labels_match(match_labels, pod_labels(d)))
        .collect()
}

#[test]
fn the_workloads_parse_as_kubernetes_objects() {
    let objects = workloads();
    for object in &objects {
        assert!(
            object["metadata"]["name"].is_string(),
            "every object has a name: {object}"
        );
        match check_typed(object) {
            Ok(true) => {}
            Ok(false) => panic!("{}: a kind the e2e does not expect", describe(object)),
            Err(problem) => panic!("{problem}"),
        }
    }
    for deployment in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let name = describe(deployment);
        assert!(
            labels_match(
                &deployment["spec"]["selector"]["matchLabels"],
                pod_labels(deployment)
            ),
            "{name}: the selector matches its own pods"
        );
        // Every pod is the faultline image's demo app, the image `make image` builds.
        for c in containers(deployment) {
            assert_eq!(c["image"], "faultline:dev", "{name}");
            assert_eq!(c["args"][0], "demo-app", "{name}");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz", "{name}");
        }
    }
    for service in objects.iter().filter(|o| o["kind"] == "Service") {
        let backends = selected(
            &objects,
            namespace_of(service),
            &service["spec"]["selector"],
        );
        assert!(
            !backends.is_empty(),
            "{} selects no pods",
            describe(service)
        );
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = &port["targetPort"];
            for backend in &backends {
                assert!(
                    containers(backend).iter().any(|c| {
                        c["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|p| &p["name"] == target || &p["containerPort"] == target)
                    }),
                    "{}: port {target} is not a port of {}",
                    describe(service),
                    describe(backend)
                );
            }
        }
    }
    for pdb in objects
        .iter()
        .filter(|o| o["kind"] == "PodDisruptionBudget")
    {
        assert!(
            !selected(
                &objects,
                namespace_of(pdb),
                &pdb["spec"]["selector"]["matchLabels"]
            )
            .is_empty(),
            "{} covers no pods",
            describe(pdb)
        );
    }
}

#[test]
fn the_demo_namespaces_opt_in_to_chaos() {
    let objects = workloads();
    let used: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .map(namespace_of)
        .collect();
    for namespace in used {
        let object = objects
            .iter()
            .find(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == namespace)
            .unwrap_or_else(|| panic!("no Namespace {namespace} in experiments/workloads/"));
        assert_eq!(
            object["metadata"]["labels"]["faultline.dev/chaos"], "enabled",
            "namespace {namespace} must opt in, or the controller refuses every target in it"
        );
    }
}

/// Every file under experiments/ that holds a faultline resource, but the workloads and the
/// expectations themselves.
fn example_files() -> BTreeSet<String> {
    fn walk(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let relative = path.strip_prefix(repo()).unwrap().display().to_string();
                if parse_documents(&text, &relative).iter().any(|d| {
                    d["apiVersion"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("faultline.dev/"))
                }) {
                    found.insert(relative);
                }
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(&repo().join("experiments"), &mut found);
    found
}

#[test]
fn the_expectations_list_every_example_once_and_each_passes_faultline_validate() {
    let expectations = expectations();
    assert_eq!(expectations.api_version, "e2e.faultline.dev/v1alpha1");
    assert_eq!(expectations.kind, "Expectations");
    let listed: Vec<&str> = expectations
        .examples
        .iter()
        .map(|e| e.file.as_str())
        .collect();
    let unique: BTreeSet<String> = listed.iter().map(|f| f.to_string()).collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "a file is listed twice: {listed:?}"
    );
    assert_eq!(
        unique,
        example_files(),
        "{EXPECTATIONS} must list every example in experiments/ (with run: false and a reason \
         for those the e2e does not run)"
    );
    for example in &expectations.examples {
        let file = &example.file;
        assert!(repo().join(file).is_file(), "{file} does not exist");
        for need in &example.needs {
            assert!(
                ["pods", "agent"].contains(&need.as_str()),
                "{file}: unknown need {need:?}"
            );
        }
        if example.run {
            let (Some(code), Some(verdict)) = (example.exit_code, example.verdict.as_deref())
            else {
                panic!("{file}: a runnable example needs exitCode and verdict");
            };
            // `faultline run --wait` exits 0 on Passed and 2 on Aborted.
            let expected = match verdict {
                "Passed" => 0,
                "Aborted" => 2,
                other => panic!("{file}: add verdict {other}'s exit code to this test"),
            };
            assert_eq!(code, expected, "{file}: exit code of {verdict}");
            assert!(example.what.is_some(), "{file}: say what the run proves");
            assert!(example.reason.is_none(), "{file}: runs, so no reason");
        } else {
            assert!(
                example
                    .reason
                    .as_deref()
                    .is_some_and(|r| !r.trim().is_empty()),
                "{file}: run: false needs a reason"
            );
            assert!(
                example.exit_code.is_none() && example.verdict.is_none(),
                "{file}"
            );
        }
    }
    assert!(expectations.examples.iter().any(|e| e.run));

    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("validate")
        .args(listed.iter().map(|f| repo().join(f)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "faultline validate failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(service, namespace, port)` of an in-cluster URL `http://svc.ns.svc[.cluster.local]:port/...`.
fn service_of(url: &str) -> Option<(String, String, u16)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (authority, if url.starts_with("https") { 443 } else { 80 }),
    };
    let host = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))?;
    let (service, namespace) = host.split_once('.')?;
    Some((service.into(), namespace.into(), port))
}

#[test]
fn in_cluster_urls_are_recognised() {
    assert_eq!(
        service_of("http://web.default.svc:8080/healthz"),
        Some(("web".into(), "default".into(), 8080))
    );
    assert_eq!(
        service_of("https://api.shop.svc.cluster.local/x"),
        Some(("api".into(), "shop".into(), 443))
    );
    assert_eq!(service_of("http://127.0.0.1:18080/healthz"), None);
}

/// The `matchLabels` of every network fault's peers (`to` of latency, loss and bandwidth,
/// `peers` of a partition), with the ports it names.
fn fault_peers(experiment: &Value) -> Vec<(Value, Vec<u64>)> {
    let mut peers = Vec::new();
    for fault in experiment["spec"]["faults"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for (kind, field) in [
            ("networkLatency", "to"),
            ("networkLoss", "to"),
            ("networkBandwidth", "to"),
            ("networkPartition", "peers"),
        ] {
            let scope = &fault[kind][field];
            if let Some(labels) = scope["selector"]["matchLabels"].as_object() {
                let ports = scope["ports"]
                    .as_array()
                    .map(|p| p.iter().filter_map(Value::as_u64).collect())
                    .unwrap_or_default();
                peers.push((Value::Object(labels.clone()), ports));
            }
        }
    }
    peers
}

#[test]
fn runnable_examples_probe_and_select_what_the_workloads_define() {
    let objects = workloads();
    let opted_in: BTreeSet<&str> = objects
        .iter()
        .filter(|o| {
            o["kind"] == "Namespace" && o["metadata"]["labels"]["faultline.dev/chaos"] == "enabled"
        })
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    let services: BTreeMap<(String, String), &Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Service")
        .map(|s| {
            let name = s["metadata"]["name"].as_str().unwrap().to_string();
            ((namespace_of(s).to_string(), name), s)
        })
        .collect();

    for example in expectations().examples.iter().filter(|e| e.run) {
        let file = &example.file;
        let documents = parse_documents(&read(file), file);
        assert!(!documents.is_empty(), "{file} is empty");
        let experiments: Vec<Value> = documents
            .iter()
            .flat_map(|d| as_experiments(d, file))
            .collect();
        for experiment in &experiments {
            let namespace = namespace_of(experiment);
            assert!(
                opted_in.contains(namespace),
                "{file}: namespace {namespace} does not opt in"
            );
            let targets = selected(
                &objects,
                namespace,
                &experiment["spec"]["target"]["labelSelector"]["matchLabels"],
            );
            assert!(
                !targets.is_empty(),
                "{file}: the target selector matches no workload"
            );

            for (labels, ports) in fault_peers(experiment) {
                let peers = selected(&objects, namespace, &labels);
                assert!(
                    !peers.is_empty(),
                    "{file}: peers {labels} match no workload"
                );
                for port in ports {
                    assert!(
                        peers.iter().all(|p| containers(p).iter().any(|c| {
                            c["ports"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|cp| cp["containerPort"] == port)
                        })),
                        "{file}: peers {labels} do not listen on port {port}"
                    );
                }
                // Faults name peers by pod IP, inside the pod's network namespace: a Service in
                // front of peers must be headless, or its callers' traffic (to a ClusterIP)
                // never matches.
                for service in services.values().filter(|s| namespace_of(s) == namespace) {
                    let fronts_peers = peers
                        .iter()
                        .any(|p| labels_match(&service["spec"]["selector"], pod_labels(p)));
                    if fronts_peers {
                        assert_eq!(
                            service["spec"]["clusterIP"],
                            "None",
                            "{file}: {} fronts fault peers and must be headless",
                            describe(service)
                        );
                    }
                }
            }

            for probe in experiment["spec"]["steadyState"]["probes"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let probe_name = probe["name"].as_str().unwrap_or("?");
                assert!(
                    probe.get("prometheus").is_none(),
                    "{file}: probe {probe_name} needs a Prometheus; the e2e installs none"
                );
                if let Some(url) = probe["http"]["url"].as_str() {
                    // The controller runs the probes, in its own pod: only a Service name
                    // reaches the demo app from there (127.0.0.1 is the controller itself).
                    let (service, ns, port) = service_of(url).unwrap_or_else(|| {
                        panic!("{file}: probe {probe_name}: {url} is not a Service URL (http://SVC.NS.svc:PORT/...)")
                    });
                    let object = services.get(&(ns.clone(), service.clone())).unwrap_or_else(|| {
                        panic!("{file}: probe {probe_name}: no Service {ns}/{service} in experiments/workloads/")
                    });
                    assert!(
                        object["spec"]["ports"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|p| p["port"] == port),
                        "{file}: probe {probe_name}: Service {service} has no port {port}"
                    );
                }
                if let Some(name) = probe["kubernetes"]["name"].as_str() {
                    let kind = probe["kubernetes"]["kind"].as_str().unwrap();
                    assert!(
                        objects.iter().any(|o| o["kind"] == kind
                            && o["metadata"]["name"] == name
                            && namespace_of(o) == namespace),
                        "{file}: probe {probe_name} reads {kind}/{name}, which the workloads lack"
                    );
                }
            }
        }
    }
}

/// The experiments a document makes: itself, or a GameDay's stage experiments each with the
/// day's probes added (as the controller creates them).
fn as_experiments(document: &Value, file: &str) -> Vec<Value> {
    match document["kind"].as_str() {
        Some("ChaosExperiment") => vec![document.clone()],
        Some("GameDay") => {
            let day_probes = document["spec"]["steadyState"]["probes"].clone();
            let mut out = Vec::new();
            for stage in document["spec"]["stages"].as_array().unwrap() {
                for experiment in stage["experiments"].as_array().unwrap() {
                    let mut spec = experiment["spec"].clone();
                    let mut probes = spec["steadyState"]["probes"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    probes.extend(day_probes.as_array().cloned().unwrap_or_default());
                    spec["steadyState"] = serde_json::json!({ "probes": probes });
                    out.push(serde_json::json!({
                        "kind": "ChaosExperiment",
                        "metadata": document["metadata"].clone(),
                        "spec": spec,
                    }));
                }
            }
            out
        }
        other => {
            panic!("{file}: `faultline run` runs ChaosExperiments and GameDays, not {other:?}")
        }
    }
}

#[test]
fn the_image_carries_the_agents_tools() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (stages[0], stages[1]);
    assert!(build.starts_with("rust:1-bookworm AS build"), "{build}");
    assert!(build.contains("cargo build --release --locked"));
    assert!(runtime.starts_with("debian:bookworm-slim"), "{runtime}");
    // The packages that bring the binaries the agent runs.
    let install = runtime
        .lines()
        .find(|l| l.contains("apt-get install"))
        .expect("the runtime stage installs packages");
    for (binary, package) in [
        ("nft", "nftables"),
        ("iptables", "iptables"),
        ("tc", "iproute2"),
        ("(HTTPS probes)", "ca-certificates"),
    ] {
        assert!(
            install.split_whitespace().any(|w| w == package),
            "{binary} comes from {package}, which the runtime stage does not install: {install}"
        );
    }
    assert!(runtime.contains("COPY --from=build"));
    assert!(runtime.contains(r#"ENTRYPOINT ["/usr/local/bin/faultline"]"#));
    // Unprivileged unless the chart says otherwise (the agent).
    assert!(runtime.contains("USER 65532:65532"));
    // The build context holds what the build copies.
    let ignore = read(".dockerignore");
    for kept in ["!Cargo.toml", "!Cargo.lock", "!src/", "!benches/"] {
        assert!(
            ignore.lines().any(|l| l == kept),
            ".dockerignore keeps {kept}"
        );
    }
}

#[test]
fn the_e2e_script_and_workflow_fit_together() {
    let syntax = Command::new("bash")
        .args(["-n", "scripts/e2e-kind.sh"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "scripts/e2e-kind.sh: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    let script = read("scripts/e2e-kind.sh");
    assert!(script.contains(&format!("expectations={EXPECTATIONS}")));
    assert!(script.contains("kubectl\" apply -f experiments/workloads/"));

    let workflow: Value = serde_yaml::from_str(&read(".github/workflows/e2e.yml")).unwrap();
    let steps = workflow["jobs"]["kind"]["steps"]
        .as_array()
        .expect("jobs.kind.steps");
    assert!(steps.iter().any(|s| s["run"] == "make e2e"));
    for action in ["actions/upload-artifact@", "mikepenz/action-junit-report@"] {
        let step = steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(action)))
            .unwrap_or_else(|| panic!("a step uses {action}"));
        assert_eq!(
            step["if"], "always()",
            "{action} runs when the e2e fails too"
        );
    }
    let makefile = read("Makefile");
    assert!(makefile.contains("scripts/e2e-kind.sh"));
}
