//! `faultline abort / pause / resume` against the embedded API server, run as a user runs them.

mod common;

use std::process::Command;

use faultline::api::{ChaosExperiment, ChaosExperimentSpec, GameDay, all_crds};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
};

fn faultline(kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("faultline runs")
}

// Multi-threaded: the CLI runs as a blocking child process while this runtime serves its API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_annotates_and_pause_resume_flip_the_switch() {
    faultline::cli::install_crypto_provider();
    let server = common::server().await;
    server.install_crds(&all_crds()).await.unwrap();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig_yaml()).unwrap();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("ops".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), "default");
    let spec: ChaosExperimentSpec =
        serde_json::from_value(serde_json::json!({"duration": "1m", "faults": [{"podKill": {}}]}))
            .unwrap();
    experiments
        .create(
            &PostParams::default(),
            &ChaosExperiment::new("one", spec.clone()),
        )
        .await
        .unwrap();
    experiments
        .create(&PostParams::default(), &ChaosExperiment::new("two", spec))
        .await
        .unwrap();

    let out = faultline(
        &kubeconfig,
        &[
            "abort",
            "one",
            "-n",
            "default",
            "--reason",
            "pager went off",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let one = experiments.get("one").await.unwrap();
    assert_eq!(
        one.annotations()
            .get("faultline.dev/abort")
            .map(String::as_str),
        Some("pager went off")
    );
    assert!(
        experiments
            .get("two")
            .await
            .unwrap()
            .annotations()
            .get("faultline.dev/abort")
            .is_none()
    );

    // A game day still going is stopped too: no next stage may start after an emergency stop.
    let gamedays: Api<GameDay> = Api::namespaced(client.clone(), "default");
    let day: GameDay = serde_json::from_value(serde_json::json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
        "metadata": {"name": "drill"},
        "spec": {"stages": [{"name": "kill", "experiments": [
            {"name": "x", "spec": {"duration": "1m", "faults": [{"podKill": {}}]}}]}]},
    }))
    .unwrap();
    gamedays.create(&PostParams::default(), &day).await.unwrap();

    let out = faultline(&kubeconfig, &["abort", "--all"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("abort requested: default/two"), "{stdout}");
    assert!(
        stdout.contains("abort requested: gameday default/drill"),
        "{stdout}"
    );
    assert!(
        gamedays
            .get("drill")
            .await
            .unwrap()
            .annotations()
            .contains_key("faultline.dev/abort")
    );

    // `status` lists the game day under the experiments.
    let out = faultline(&kubeconfig, &["status", "-A"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("drill") && l.contains("Pending")),
        "{stdout}"
    );

    let out = faultline(&kubeconfig, &["abort", "missing", "-n", "default"]);
    assert!(
        !out.status.success(),
        "aborting a missing experiment says so"
    );

    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ops");
    let out = faultline(&kubeconfig, &["pause", "--controller-namespace", "ops"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = maps.get("faultline-pause").await.unwrap().data.unwrap();
    assert_eq!(data["paused"], "true");
    let out = faultline(&kubeconfig, &["resume", "--controller-namespace", "ops"]);
    assert!(out.status.success());
    assert_eq!(
        maps.get("faultline-pause").await.unwrap().data.unwrap()["paused"],
        "false"
    );
    server.shutdown().await;
}
