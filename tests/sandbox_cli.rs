//! `faultline sandbox up --detach / status / down`, run as a user runs them: the real binary,
//! a state directory of its own, and the kube client against the kubeconfig it writes.

use std::{path::Path, process::Command};

use faultline::api::ChaosExperiment;
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
};

fn faultline(state_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("sandbox")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("faultline runs")
}

/// Stops the sandbox even when an assertion fails halfway.
struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = faultline(self.0, &["down"]);
    }
}

#[tokio::test]
async fn detached_sandbox_serves_the_crds_and_applied_examples_until_down() {
    faultline::cli::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/pod-kill-http.yaml");

    let up = faultline(
        state,
        &["up", "--detach", "--apply", example.to_str().unwrap()],
    );
    let _down = Down(state);
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "up failed: {stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(
        stdout.contains("applied chaosexperiment/checkout-pod-kill"),
        "{stdout}"
    );
    assert!(stdout.contains("export KUBECONFIG="), "{stdout}");

    let status = faultline(state, &["status"]);
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("sandbox running"));

    // A second `up` must refuse rather than start a second server over the same state.
    let again = faultline(state, &["up", "--detach"]);
    assert!(!again.status.success());

    let kubeconfig = Kubeconfig::read_from(state.join("kubeconfig")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let experiments: Api<ChaosExperiment> = Api::namespaced(client, "default");
    let list = experiments.list(&ListParams::default()).await.unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|e| e.metadata.name.clone())
        .collect();
    assert_eq!(names, ["checkout-pod-kill"]);
    assert_eq!(list.items[0].spec.duration.as_str(), "30s");

    let down = faultline(state, &["down"]);
    assert!(down.status.success());
    assert!(
        !state.join("sandbox.json").exists(),
        "down removes the state file"
    );
    let status = faultline(state, &["status"]);
    assert_eq!(
        status.status.code(),
        Some(1),
        "status after down says not running"
    );
}

#[tokio::test]
async fn sandbox_up_runs_workloads_on_the_requested_nodes() {
    faultline::cli::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let manifest = state.join("web.yaml");
    let deployment =
        faultline::sandbox::workloads::deployment("default", "web", 2, &[("app", "web")]);
    std::fs::write(&manifest, serde_yaml::to_string(&deployment).unwrap()).unwrap();

    let up = faultline(
        state,
        &[
            "up",
            "--detach",
            "--nodes",
            "2",
            "--apply",
            manifest.to_str().unwrap(),
        ],
    );
    let _down = Down(state);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let kubeconfig = Kubeconfig::read_from(state.join("kubeconfig")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "2 running pods within 10s, got {running}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(faultline(state, &["down"]).status.success());
}

#[tokio::test]
async fn the_sandbox_controller_runs_an_experiment_applied_with_its_targets() {
    faultline::cli::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let manifest = state.join("shop.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: checkout, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: checkout}}
  template:
    metadata: {labels: {app: checkout}}
    spec: {containers: [{name: app, image: demo}]}
---
apiVersion: faultline.dev/v1alpha1
kind: ChaosExperiment
metadata: {name: kill-one, namespace: default}
spec:
  duration: 1s
  target: {labelSelector: {matchLabels: {app: checkout}}, mode: One}
  faults: [{podKill: {}}]
"#,
    )
    .unwrap();
    let up = faultline(
        state,
        &["up", "--detach", "--apply", manifest.to_str().unwrap()],
    );
    let _down = Down(state);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );

    let kubeconfig = Kubeconfig::read_from(state.join("kubeconfig")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let experiments: Api<ChaosExperiment> =
        Api::namespaced(Client::try_from(config).unwrap(), "default");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        let status = experiments
            .get("kill-one")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if status.phase.is_terminal() || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        status.verdict,
        Some(faultline::api::Verdict::Passed),
        "{status:?}"
    );
    assert_eq!(status.target_count, 1);
}
