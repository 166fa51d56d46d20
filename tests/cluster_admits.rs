//! What we ship, through kubectl, against the cluster of this run (the embedded API server, or
//! the real control plane with `FAULTLINE_TEST_CLUSTER=real`): the CRDs install and kubectl
//! knows them (explain, short names, the `chaos` category, printer columns); every example and
//! every valid fixture is admitted; every invalid fixture is refused, except the checks that live
//! only in `faultline validate` (listed below, with why); on a real cluster, the chart installs
//! and uninstalls with helm.
//!
//! Requests are server-side dry runs where they can be: the server runs admission and
//! validation in full and stores nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::TestCluster;
use serde::Deserialize;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// kubectl 1.35 from scripts/fetch-tools.sh, with its own kubeconfig for the cluster.
struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(cluster: &TestCluster) -> Kubectl {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), cluster.kubeconfig_yaml()).unwrap();
        Kubectl { dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let bin = repo().join(".tools/bin/kubectl");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/setup.sh",
            bin.display()
        );
        let mut command = Command::new(bin);
        command
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sends one object as a server-side dry run.
    fn dry_run(&self, object: &serde_json::Value) -> Output {
        let file = self.dir.path().join("object.json");
        std::fs::write(&file, object.to_string()).unwrap();
        let file = file.to_str().unwrap();
        // Server-side apply needs a name; an object with generateName is created instead.
        if object["metadata"]["name"].is_null() {
            self.run(&["create", "--dry-run=server", "-f", file])
        } else {
            self.run(&["apply", "--server-side", "--dry-run=server", "-f", file])
        }
    }
}

/// The YAML documents of `path` (empty ones skipped), up to the first that does not parse.
fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    // After a syntax error the document stream does not end: stop at the first one.
    serde_yaml::Deserializer::from_str(&text)
        .map_while(|d| serde_json::Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Creates the namespaces the documents of `files` name, so that a refusal is about the object
/// itself and never about a missing namespace.
async fn namespaces_of(cluster: &TestCluster, files: &[PathBuf]) {
    let client = cluster.client().await;
    let mut names: Vec<String> = files
        .iter()
        .flat_map(|f| documents(f))
        .filter_map(|o| o["metadata"]["namespace"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        common::cluster::apply_namespace(&client, &name, true).await;
    }
}

fn is_faultline(object: &serde_json::Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("faultline.dev/"))
}

fn describe(path: &Path, object: &serde_json::Value) -> String {
    format!(
        "{} ({} {})",
        path.strip_prefix(repo()).unwrap_or(path).display(),
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

// Multi-threaded: kubectl blocks this thread while the embedded API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crds_install_and_kubectl_knows_them() {
    let cluster = TestCluster::start().await;
    let kubectl = Kubectl::new(&cluster);
    let crds = repo().join("crds");
    kubectl.ok(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
    for crd in [
        "chaosexperiments.faultline.dev",
        "chaosschedules.faultline.dev",
        "gamedays.faultline.dev",
        "faultinjections.faultline.dev",
    ] {
        kubectl.ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("crd/{crd}"),
        ]);
    }
    let explained = kubectl.ok(&["explain", "chaosexperiment.spec.faults.networkLatency.to"]);
    assert!(
        explained.contains("Destination networks in CIDR notation"),
        "{explained}"
    );
    // Short names, the category and the printer columns.
    let example = repo().join("experiments/pod-kill-http.yaml");
    kubectl.ok(&["apply", "--server-side", "-f", example.to_str().unwrap()]);
    let listed = kubectl.ok(&["get", "fex"]);
    let header = listed.lines().next().unwrap_or_default();
    for column in ["NAME", "PHASE", "VERDICT", "TARGETS", "DURATION", "AGE"] {
        assert!(header.contains(column), "{column} missing from {header:?}");
    }
    assert!(listed.contains("checkout-pod-kill"), "{listed}");
    let everything = kubectl.ok(&["get", "chaos"]);
    assert!(
        everything.contains("chaosexperiment.faultline.dev/checkout-pod-kill"),
        "{everything}"
    );
    kubectl.ok(&["get", "fsched,fgd,finj"]);
    kubectl.ok(&["delete", "-f", example.to_str().unwrap()]);
    cluster.shutdown().await;
}

// Multi-threaded: kubectl blocks this thread while the embedded API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_and_valid_fixture_is_admitted() {
    let cluster = TestCluster::start().await;
    cluster.install_crds(&faultline::api::all_crds()).await;
    let kubectl = Kubectl::new(&cluster);
    let mut refused = Vec::new();
    let examples: Vec<PathBuf> = yaml_files(&repo().join("experiments"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "expectations.yaml"))
        .collect();
    // The valid fixtures of `faultline validate` carry other kinds it skips on purpose (a
    // Deployment with only what it looks at): the faultline objects are what is tested here.
    let fixtures = yaml_files(&repo().join("tests/fixtures/validate/valid"));
    namespaces_of(&cluster, &[examples.clone(), fixtures.clone()].concat()).await;
    for (path, only_faultline) in examples
        .into_iter()
        .map(|p| (p, false))
        .chain(fixtures.into_iter().map(|p| (p, true)))
    {
        for object in documents(&path) {
            if only_faultline && !is_faultline(&object) {
                continue;
            }
            let out = kubectl.dry_run(&object);
            if !out.status.success() {
                refused.push(format!(
                    "{}: {}",
                    describe(&path, &object),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    cluster.shutdown().await;
}

/// Invalid fixtures the API server accepts, because what is wrong with them only
/// `faultline validate` (and the controller, before anything starts) can tell: the checks of
/// `faultline::validate::VALIDATE_ONLY`, each listed there with why.
const VALIDATE_ONLY: &[(&str, &str)] = &[
    (
        "selector-never-matches.yaml",
        "a selector whose requirements contradict each other is well-formed; only validate reasons about what it can match",
    ),
    (
        "validate-only.yaml",
        "cron syntax, IANA time zones and a probe's bodyRegex: CEL can check none of them",
    ),
];

// Multi-threaded: kubectl blocks this thread while the embedded API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_fixture_is_refused_unless_only_validate_can_tell() {
    let cluster = TestCluster::start().await;
    cluster.install_crds(&faultline::api::all_crds()).await;
    let kubectl = Kubectl::new(&cluster);
    let mut admitted = Vec::new();
    let fixtures = yaml_files(&repo().join("tests/fixtures/validate/invalid"));
    namespaces_of(&cluster, &fixtures).await;
    for path in fixtures {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // A file kubectl cannot read at all (bad YAML, no kind) never reaches a server.
        let out = kubectl.run(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            path.to_str().unwrap(),
        ]);
        let refused = !out.status.success();
        match (refused, VALIDATE_ONLY.iter().find(|(f, _)| *f == name)) {
            (true, None) | (false, Some(_)) => {}
            (false, None) => admitted.push(format!(
                "{name}: admitted: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            )),
            (true, Some((_, why))) => admitted.push(format!(
                "{name}: now refused by the server; take it off VALIDATE_ONLY ({why}): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }
    assert!(admitted.is_empty(), "{}", admitted.join("\n"));
    cluster.shutdown().await;
}

fn helm(args: &[&str], kubeconfig: &Path) -> Output {
    let home = std::env::temp_dir().join("faultline-helm-cluster-test");
    Command::new(repo().join(".tools/bin/helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap()
}

// Multi-threaded: kubectl blocks this thread while the embedded API server answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installs_and_uninstalls_with_helm() {
    let cluster = TestCluster::start().await;
    if !cluster.is_real() {
        // The embedded server serves no RBAC and no DaemonSets; the chart's objects are checked
        // offline in tests/helm_chart.rs, and here against the real control plane.
        eprintln!(
            "the_chart_installs_and_uninstalls_with_helm: runs with FAULTLINE_TEST_CLUSTER=real"
        );
        return;
    }
    let kubectl = Kubectl::new(&cluster);
    let kubeconfig = kubectl.dir.path().join("kubeconfig");
    let chart = repo().join("charts/faultline");
    let ns = "faultline-system";
    let install = helm(
        &[
            "install",
            "faultline",
            chart.to_str().unwrap(),
            "-n",
            ns,
            "--create-namespace",
        ],
        &kubeconfig,
    );
    assert!(
        install.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    // Every kind of the chart exists where the chart put it.
    let deployed = kubectl.ok(&[
        "get",
        "deployment,daemonset,serviceaccount,role,rolebinding,service",
        "-n",
        ns,
        "-o",
        "name",
    ]);
    for expected in [
        "deployment.apps/faultline-controller",
        "daemonset.apps/faultline-agent",
        "serviceaccount/faultline-controller",
        "serviceaccount/faultline-agent",
    ] {
        assert!(
            deployed.contains(expected),
            "{expected} missing:\n{deployed}"
        );
    }
    let crds = kubectl.ok(&["get", "crd", "-o", "name"]);
    assert!(crds.contains("chaosexperiments.faultline.dev"), "{crds}");
    let uninstall = helm(&["uninstall", "faultline", "-n", ns, "--wait"], &kubeconfig);
    assert!(
        uninstall.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&uninstall.stderr)
    );
    cluster.shutdown().await;
}
