//! The kind end-to-end suite's experiments and assertions, run here as root with real pods in
//! network namespaces, the real node agent and real rules. What `make e2e` checks on kind
//! (experiments/e2e/expectations.yaml: each runnable example's `faultline run --wait` exit code
//! and verdict) is checked the same way, through the same CLI, on the cluster of this run:
//!
//! - the sandbox (default): `faultline sandbox up` runs the embedded API server, simulated
//!   controllers, the node agent and the controller in one process;
//! - the real control plane (`FAULTLINE_TEST_CLUSTER=real`): kube-apiserver,
//!   kube-controller-manager and kube-scheduler run the cluster; `faultline sandbox up --cluster`
//!   plays the kubelets only; the chart's ServiceAccounts and RBAC (from `helm template`) are
//!   applied, and `faultline controller` and `faultline agent` run as separate processes with the
//!   args the chart gives them and with tokens of their own ServiceAccounts, not as admin: a
//!   single 403 in their logs fails the test.
//!
//! After every run no pod namespace holds a faultline rule, and `sandbox down` leaves nothing.

mod common;
mod k8s_objects;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{real_cluster_requested, real_kubeconfig};
use faultline::agent::testnet::root_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_faultline");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run_with(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(repo().join(".tools/bin/kubectl"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap()
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `sandbox down` removed the pod namespaces it had (`ours`, listed before). Only
/// those: a sandbox of a test running beside this one may claim the freed slot, and so the
/// same prefix, at once.
fn assert_gone_after_down(prefix: &str, ours: Vec<String>) {
    assert!(
        !ours.is_empty(),
        "no pod namespace under {prefix} before down"
    );
    let left: Vec<String> = netns_with_prefix(prefix)
        .into_iter()
        .filter(|n| ours.contains(n))
        .collect();
    assert!(
        left.is_empty(),
        "sandbox down left pod namespaces behind: {left:?}"
    );
}

fn faultline_tables_in_pods(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for ns in netns_with_prefix(prefix) {
        for (tool, args, marker) in [
            ("nft", &["list", "tables"][..], "faultline_"),
            ("iptables-save", &[][..], "FL-"),
        ] {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, tool])
                .args(args)
                .output()
                .unwrap();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.contains(marker) {
                    found.push(format!("{ns}: {line}"));
                }
            }
        }
    }
    found
}

/// A sandbox in the background (`faultline sandbox up --detach`); `down` when dropped.
struct Sandbox {
    state: PathBuf,
    /// The kubeconfig users (and `faultline run`) use.
    kubeconfig: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let dir = self.state.display().to_string();
        let out = run_with(&self.kubeconfig, &["sandbox", "--state-dir", &dir, "down"]);
        eprintln!("sandbox down: {}", String::from_utf8_lossy(&out.stdout));
    }
}

impl Sandbox {
    /// Starts a sandbox with its state in `state`, attached to the cluster of `cluster`'s
    /// kubeconfig when given, applying the demo workloads.
    fn up(state: PathBuf, cluster: Option<&Path>, extra: &[&str]) -> Sandbox {
        let dir = state.display().to_string();
        let kubeconfig = cluster.map_or_else(|| state.join("kubeconfig"), Path::to_path_buf);
        let cluster_arg = cluster.map(|c| c.display().to_string());
        let mut args = vec!["sandbox", "--state-dir", &dir, "up", "--detach"];
        if let Some(cluster) = &cluster_arg {
            args.extend(["--cluster", cluster]);
        }
        args.extend_from_slice(extra);
        args.extend(["--apply", "experiments/workloads/"]);
        let up = run_with(&kubeconfig, &args);
        let sandbox = Sandbox { state, kubeconfig };
        assert!(
            up.status.success(),
            "sandbox up failed: {}{}",
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        );
        sandbox
    }

    /// The prefix of the real pods' network namespaces, from the slot the sandbox holds.
    fn netns_prefix(&self) -> String {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.state.join("sandbox.json")).unwrap(),
        )
        .unwrap();
        match state["pod_slot"]
            .as_u64()
            .expect("as root the sandbox runs real pods")
        {
            0 => "flsbx-".to_string(),
            slot => format!("flsbx{slot}-"),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expectations {
    examples: Vec<Example>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Example {
    file: String,
    run: bool,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    verdict: Option<String>,
}

fn expectations() -> Expectations {
    serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("experiments/e2e/expectations.yaml")).unwrap(),
    )
    .unwrap()
}

fn wait_for_ready_pods(kubeconfig: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = String::from_utf8_lossy(
            &kubectl(
                kubeconfig,
                &["get", "pods", "-n", "default", "--no-headers"],
            )
            .stdout,
        )
        .to_string();
        let ready = text
            .lines()
            .filter(|l| l.contains("Running") && l.split_whitespace().nth(1) == Some("1/1"))
            .count();
        if ready >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {ready} of {count} demo pods became ready:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs every runnable example as a user would and compares with expectations.yaml.
fn run_every_expectation(kubeconfig: &Path, junit_dir: &Path, pod_netns_prefix: &str) {
    for example in expectations().examples.iter().filter(|e| e.run) {
        let junit = junit_dir.join(format!("{}.xml", example.file.replace('/', "_")));
        let started = Instant::now();
        let run = run_with(
            kubeconfig,
            &[
                "run",
                "-f",
                &example.file,
                "--wait",
                "--timeout",
                "4m",
                "--junit",
                junit.to_str().unwrap(),
            ],
        );
        eprintln!(
            "{}: exit {:?} after {:.1?}\n{}\n{}",
            example.file,
            run.status.code(),
            started.elapsed(),
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            run.status.code(),
            example.exit_code,
            "{} ended with another exit code than expectations.yaml says (verdict {:?} expected)",
            example.file,
            example.verdict
        );
        let junit = std::fs::read_to_string(&junit).unwrap();
        if let Some(verdict) = &example.verdict {
            assert!(
                junit.contains(verdict.as_str()) || verdict == "Passed",
                "{junit}"
            );
        }
        let left = faultline_tables_in_pods(pod_netns_prefix);
        assert!(
            left.is_empty(),
            "{} left rules behind: {left:?}",
            example.file
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_e2e_expectations_hold() {
    if !root_or_skip("e2e_expectations::the_kind_e2e_expectations_hold") {
        return;
    }
    if real_cluster_requested() {
        on_the_real_control_plane().await;
    } else {
        in_the_sandbox();
    }
}

fn in_the_sandbox() {
    let work = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::up(work.path().join("sandbox"), None, &[]);
    wait_for_ready_pods(&sandbox.kubeconfig, 9);
    let prefix = sandbox.netns_prefix();
    run_every_expectation(&sandbox.kubeconfig, work.path(), &prefix);
    let status = run_with(&sandbox.kubeconfig, &["status", "-A"]);
    eprintln!("{}", String::from_utf8_lossy(&status.stdout));
    let ours = netns_with_prefix(&prefix);
    drop(sandbox);
    assert_gone_after_down(&prefix, ours);
}

/// A faultline process started by the test, its log kept for the 403 check; killed when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &'static str, args: &[String], kubeconfig: &Path, dir: &Path) -> Process {
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = dir.join(format!("{name}-{n}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("FAULTLINE_LOG", "faultline=info,warn")
            .env("RUST_LOG", "faultline=info,warn")
            .env("POD_NAME", format!("{name}-0"))
            .env("POD_NAMESPACE", "faultline-system")
            .env(
                faultline::probes::hosts::PROBE_HOSTS_FILE_ENV,
                dir.join("sandbox/probe-hosts"),
            )
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Process { name, child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The container args the chart gives `kind/name`, with `$(VAR)` filled in, our own flags
/// (addresses, paths, the node list) in place of what only a pod has.
fn chart_args(
    chart: &[serde_json::Value],
    kind: &str,
    name: &str,
    overrides: &[(&str, String)],
) -> Vec<String> {
    let workload = chart
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"));
    let args = workload["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap();
    args.iter()
        .map(|a| a.as_str().unwrap().to_string())
        .map(|arg| {
            overrides
                .iter()
                .find(|(flag, _)| arg.starts_with(&format!("{flag}=")))
                .map(|(flag, value)| format!("{flag}={value}"))
                .unwrap_or(arg)
                .replace("$(POD_NAMESPACE)", "faultline-system")
                .replace("$(POD_NAME)", &format!("{}-0", name))
        })
        .collect()
}

/// A kubeconfig that authenticates as `serviceaccount` with a token the API server issues,
/// bound to pod `bound_pod` (name, uid; in faultline-system) when given: such a token carries
/// the pod's node, as a DaemonSet pod's projected token does.
fn token_kubeconfig(
    admin: &Path,
    serviceaccount: &str,
    bound_pod: Option<(&str, &str)>,
    out: &Path,
) -> PathBuf {
    let mut args: Vec<String> = ["create", "token", serviceaccount, "-n", "faultline-system"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.push("--duration=1h".into());
    if let Some((name, uid)) = bound_pod {
        args.push("--bound-object-kind=Pod".into());
        args.push(format!("--bound-object-name={name}"));
        args.push(format!("--bound-object-uid={uid}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let token = kubectl_ok(admin, &args);
    let admin_config: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(admin).unwrap()).unwrap();
    let cluster = &admin_config["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": serviceaccount, "user": {"token": token.trim()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": serviceaccount}}],
        "current-context": "c",
    });
    let file = bound_pod.map_or_else(|| serviceaccount.to_string(), |(pod, _)| pod.to_string());
    let path = out.join(format!("{file}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// The agent's DaemonSet pod on `node`, as the API knows it (its container is our separate
/// `faultline agent` process; the pod is marked finished so that the sandbox's kubelet does not
/// run it). Its UID binds the agent's token to the node. Returns (name, uid).
fn agent_pod(admin: &Path, node: &str, dir: &Path) -> (String, String) {
    let name = format!("faultline-agent-{}", node.rsplit('-').next().unwrap());
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "faultline-system"},
        "spec": {"nodeName": node, "serviceAccountName": "faultline-agent", "hostNetwork": true,
                 "containers": [{"name": "agent", "image": "faultline:dev"}]}});
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, pod.to_string()).unwrap();
    kubectl_ok(admin, &["create", "-f", file.to_str().unwrap()]);
    let finished = r#"{"status":{"phase":"Succeeded"}}"#;
    kubectl_ok(
        admin,
        &[
            "patch",
            "pod",
            &name,
            "-n",
            "faultline-system",
            "--subresource=status",
            "--type=merge",
            "-p",
            finished,
        ],
    );
    let uid = kubectl_ok(
        admin,
        &[
            "get",
            "pod",
            &name,
            "-n",
            "faultline-system",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    (name, uid)
}

async fn on_the_real_control_plane() {
    let cluster = common::TestCluster::start().await;
    let admin = real_kubeconfig();
    let work = tempfile::tempdir().unwrap();

    // The chart's identities and permissions, applied as a cluster admin would with helm.
    common::cluster::apply_namespace(&cluster.client().await, "faultline-system", false).await;
    let chart = k8s_objects::rendered_chart("faultline-system");
    let rbac: Vec<&serde_json::Value> = chart
        .iter()
        .filter(|o| k8s_objects::is_access_object(o))
        .collect();
    assert!(
        rbac.len() >= 10,
        "the chart renders its ServiceAccounts, RBAC and admission policies"
    );
    for object in &rbac {
        let file = work.path().join("object.json");
        std::fs::write(&file, object.to_string()).unwrap();
        kubectl_ok(
            &admin,
            &["apply", "--server-side", "-f", file.to_str().unwrap()],
        );
    }

    let sandbox = Sandbox::up(
        work.path().join("sandbox"),
        Some(&admin),
        &["--no-controller", "--no-agent"],
    );
    wait_for_ready_pods(&admin, 9);

    let controller_kubeconfig = token_kubeconfig(&admin, "faultline-controller", None, work.path());
    let controller = Process::start(
        "controller",
        &chart_args(
            &chart,
            "Deployment",
            "faultline-controller",
            &[("--admin-addr", "127.0.0.1:0".into())],
        ),
        &controller_kubeconfig,
        work.path(),
    );
    // One agent per node, as the DaemonSet runs them, each with a token bound to its node's
    // agent pod (the admission policy lets an agent change only its own Node).
    let mut agents = Vec::new();
    for node in ["sandbox-node-1", "sandbox-node-2", "sandbox-node-3"] {
        let (pod, uid) = agent_pod(&admin, node, work.path());
        let kubeconfig =
            token_kubeconfig(&admin, "faultline-agent", Some((&pod, &uid)), work.path());
        let journal = work.path().join(format!("journal-{node}"));
        agents.push(Process::start(
            "agent",
            &chart_args(
                &chart,
                "DaemonSet",
                "faultline-agent",
                &[
                    ("--admin-addr", "127.0.0.1:0".into()),
                    ("--node", node.to_string()),
                    ("--journal-dir", journal.display().to_string()),
                ],
            ),
            &kubeconfig,
            work.path(),
        ));
    }

    let prefix = sandbox.netns_prefix();
    run_every_expectation(&admin, work.path(), &prefix);

    for process in std::iter::once(&controller).chain(&agents) {
        let log = process.log();
        let forbidden: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("code: 403") || l.to_lowercase().contains("forbidden"))
            .collect();
        assert!(
            forbidden.is_empty(),
            "the {} was refused something its chart RBAC should allow:\n{}",
            process.name,
            forbidden.join("\n")
        );
    }
    drop(controller);
    drop(agents);
    let ours = netns_with_prefix(&prefix);
    drop(sandbox);
    assert_gone_after_down(&prefix, ours);
    cluster.shutdown().await;
}
