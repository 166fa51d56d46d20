//! What every `faultline` command owes a user whatever it does: exit codes as documented
//! (usage errors 3, never clap's 2, which reads as "aborted"), no panic when the reader of
//! stdout has gone, bounded input, and errors that say what to do. Commands that need a cluster
//! run against the embedded API server (no controller: these are about the CLI).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use faultline::api::{ChaosExperiment, GameDay, all_crds};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

fn faultline(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("FAULTLINE_LOG", "warn")
        .output()
        .expect("faultline runs")
}

/// Runs faultline with stdout a pipe whose read end is already closed, as `| head -c1` or
/// `| true` leave it: every write fails with EPIPE.
fn with_stdout_closed(kubeconfig: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("FAULTLINE_LOG", "warn")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("faultline runs")
}

fn exit(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn no_kubeconfig() -> PathBuf {
    PathBuf::from("/nonexistent/kubeconfig")
}

fn validate_fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/validate")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn usage_errors_exit_3_and_help_and_version_exit_0() {
    let usage_errors: [&[&str]; 6] = [
        &["run"],
        &["run", "-f", "x.yaml", "--bogus"],
        &["abort"],
        &["validate", "--output", "xml", "x.yaml"],
        &["no-such-command"],
        &[],
    ];
    for args in usage_errors {
        let (code, _, stderr) = exit(&faultline(&no_kubeconfig(), args));
        assert_eq!(code, Some(3), "faultline {args:?}: {stderr}");
        assert!(!stderr.is_empty(), "faultline {args:?} says what is wrong");
    }
    for args in [
        &["--help"][..],
        &["--version"],
        &["run", "--help"],
        &["help"],
    ] {
        let (code, stdout, stderr) = exit(&faultline(&no_kubeconfig(), args));
        assert_eq!(code, Some(0), "faultline {args:?}: {stderr}");
        assert!(!stdout.is_empty());
    }
}

#[test]
fn every_command_lists_its_exit_codes_in_its_help() {
    let commands = [
        "controller",
        "agent",
        "crds",
        "sandbox",
        "demo-app",
        "validate",
        "abort",
        "pause",
        "resume",
        "run",
        "report",
        "status",
    ];
    for command in commands {
        let (code, help, _) = exit(&faultline(&no_kubeconfig(), &[command, "--help"]));
        assert_eq!(code, Some(0));
        assert!(help.contains("Exit codes:"), "{command} --help:\n{help}");
        assert!(
            help.lines().any(|l| l.trim_start().starts_with("3 ")),
            "{command} --help names exit 3:\n{help}"
        );
    }
    let (_, run, _) = exit(&faultline(&no_kubeconfig(), &["run", "--help"]));
    for code in ["0", "1", "2", "3", "4", "5"] {
        assert!(
            run.lines()
                .any(|l| l.trim_start().starts_with(&format!("{code} "))),
            "run --help lists exit {code}:\n{run}"
        );
    }
    assert!(
        run.contains("Inconclusive") && run.contains("preflight"),
        "{run}"
    );
}

#[test]
fn a_closed_stdout_ends_the_output_quietly_and_keeps_the_exit_code() {
    let crds = with_stdout_closed(&no_kubeconfig(), &["crds"]);
    let (code, _, stderr) = exit(&crds);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // An invalid manifest: its problems go to the closed stdout, the exit code is still 1.
    let invalid = validate_fixture("invalid/bad-duration.yaml");
    let (code, _, stderr) = exit(&with_stdout_closed(
        &no_kubeconfig(),
        &["validate", &invalid],
    ));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (code, _, stderr) = exit(&with_stdout_closed(&no_kubeconfig(), &["run", "--help"]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_full_disk_behind_stdout_is_an_error_not_a_panic() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return; // no /dev/full here
    };
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("crds")
        .stdout(full)
        .output()
        .unwrap();
    let (code, _, stderr) = exit(&out);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("error: cannot write to stdout"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn run_refuses_a_manifest_over_the_size_limit_before_reaching_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    // Sparse: no disk is used for the 64 MiB.
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    let big = big.display().to_string();
    for file in [big.as_str(), "/dev/zero"] {
        let (code, _, stderr) = exit(&faultline(&no_kubeconfig(), &["run", "-f", file]));
        assert_eq!(code, Some(3), "{stderr}");
        assert!(
            stderr.contains(&format!("error: {file} is larger than 64 MiB")),
            "{stderr}"
        );
    }
}

/// The embedded API server with faultline's CRDs, a kubeconfig for it, and a client.
struct Bed {
    server: faultline::sandbox::apiserver::ApiServer,
    client: kube::Client,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Bed {
    async fn start() -> Bed {
        faultline::cli::install_crypto_provider();
        let server = common::server().await;
        server.install_crds(&all_crds()).await.unwrap();
        let client = server.client().await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig_yaml()).unwrap();
        Bed {
            server,
            client,
            dir,
            kubeconfig,
        }
    }

    fn experiments(&self) -> Api<ChaosExperiment> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn experiment(&self, name: &str) -> ChaosExperiment {
        let experiment: ChaosExperiment = serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": name},
            "spec": {"duration": "1m", "faults": [{"podKill": {}}]},
        }))
        .unwrap();
        self.experiments()
            .create(&PostParams::default(), &experiment)
            .await
            .unwrap()
    }

    /// Sets the experiment's status as the controller would.
    async fn set_status(&self, name: &str, status: serde_json::Value) {
        self.experiments()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .unwrap();
    }

    fn faultline(&self, args: &[&str]) -> (Option<i32>, String, String) {
        exit(&faultline(&self.kubeconfig, args))
    }

    fn manifest(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    async fn experiment_count(&self) -> usize {
        Api::<ChaosExperiment>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
    }

    fn abort_reason(experiment: &ChaosExperiment) -> Option<String> {
        experiment.annotations().get("faultline.dev/abort").cloned()
    }
}

// Multi-threaded: the CLI runs as a blocking child process while this runtime serves its API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_report_to_a_closed_stdout_exit_0_without_a_panic() {
    let bed = Bed::start().await;
    bed.experiment("listed").await;
    for args in [
        &["status", "-A"][..],
        &["report", "listed", "-n", "default", "-o", "html"],
    ] {
        let (code, _, stderr) = exit(&with_stdout_closed(&bed.kubeconfig, args));
        assert_eq!(code, Some(0), "faultline {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    bed.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_says_what_it_did_and_leaves_ended_and_aborting_experiments_alone() {
    let bed = Bed::start().await;

    // Not there: one sentence and how to list them, not a dump of the API's answer.
    let (code, _, stderr) = bed.faultline(&["abort", "nope", "-n", "default"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.starts_with(
            "error: experiment default/nope not found (faultline status -n default lists them"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("Status {"), "{stderr}");

    // Ended: nothing to abort, exit 3, the annotation is not written.
    bed.experiment("done").await;
    bed.set_status("done", json!({"phase": "Succeeded", "verdict": "Passed"}))
        .await;
    let (code, stdout, stderr) = bed.faultline(&["abort", "done", "-n", "default"]);
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "experiment default/done has already ended (phase Succeeded, verdict Passed)"
        ),
        "{stderr}"
    );
    let done = bed.experiments().get("done").await.unwrap();
    assert_eq!(Bed::abort_reason(&done), None);

    // Going: aborted; asked again, it says so and keeps the first reason.
    bed.experiment("going").await;
    let (code, stdout, stderr) = bed.faultline(&[
        "abort",
        "going",
        "-n",
        "default",
        "--reason",
        "pager went off",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("abort requested: default/going"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        bed.faultline(&["abort", "going", "-n", "default", "--reason", "second"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("experiment default/going is already aborting (reason: pager went off)"),
        "{stdout}"
    );
    let going = bed.experiments().get("going").await.unwrap();
    assert_eq!(Bed::abort_reason(&going).as_deref(), Some("pager went off"));

    // `--all` passes over the ended one and the one already aborting keeps its reason.
    let (code, stdout, stderr) = bed.faultline(&["abort", "--all", "--reason", "third"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stdout.contains("default/done"), "{stdout}");
    let going = bed.experiments().get("going").await.unwrap();
    assert_eq!(Bed::abort_reason(&going).as_deref(), Some("pager went off"));
    bed.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_fgd_aborts_a_game_day_and_a_schedule_is_refused_with_how_to_stop_it() {
    let bed = Bed::start().await;
    let gamedays: Api<GameDay> = Api::namespaced(bed.client.clone(), "default");
    let day: GameDay = serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
        "metadata": {"name": "drill"},
        "spec": {"stages": [{"name": "kill", "experiments": [
            {"name": "x", "spec": {"duration": "1m", "faults": [{"podKill": {}}]}}]}]},
    }))
    .unwrap();
    gamedays.create(&PostParams::default(), &day).await.unwrap();

    let (code, stdout, stderr) = bed.faultline(&["abort", "fgd/drill", "-n", "default"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("abort requested: gameday default/drill"),
        "{stdout}"
    );
    let drill = gamedays.get("drill").await.unwrap();
    assert!(drill.annotations().contains_key("faultline.dev/abort"));

    let (code, _, stderr) = bed.faultline(&["abort", "fgd/nope", "-n", "default"]);
    assert_eq!(code, Some(3));
    assert!(
        stderr.contains("game day default/nope not found (kubectl get fgd -n default"),
        "{stderr}"
    );

    let (code, _, stderr) = bed.faultline(&["abort", "fsched/weekly", "-n", "default"]);
    assert_eq!(code, Some(3));
    assert!(
        stderr.contains("\"suspend\":true") && stderr.contains("faultline status -n default"),
        "{stderr}"
    );
    bed.server.shutdown().await;
}

fn experiment_in(namespace: &str) -> String {
    format!(
        r#"apiVersion: faultline.dev/v1alpha1
kind: ChaosExperiment
metadata:
  name: placed
  namespace: {namespace}
spec:
  duration: 30s
  target:
    labelSelector:
      matchLabels:
        app: web
  faults:
    - podKill: {{}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_namespace_flag_that_contradicts_the_manifest_before_creating_anything() {
    let bed = Bed::start().await;
    let manifest = bed.manifest("placed.yaml", &experiment_in("nosuchns"));
    let (code, stdout, stderr) = bed.faultline(&["run", "-f", &manifest, "-n", "default"]);
    assert_eq!(code, Some(3), "{stdout}{stderr}");
    assert!(
        stderr.contains(
            "the namespace from the provided object \"nosuchns\" does not match the namespace \"default\": pass -n nosuchns or remove it from the manifest"
        ),
        "{stderr}"
    );
    assert_eq!(bed.experiment_count().await, 0);
    bed.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_refuses_a_report_path_it_cannot_write_before_creating_anything() {
    let bed = Bed::start().await;
    let manifest = bed.manifest("placed.yaml", &experiment_in("default"));
    let a_dir = bed.dir.path().display().to_string();
    let a_file = bed.manifest("plain-file", "");
    let refused = [
        (
            "--report",
            "/nonexistent/dir/r.html".to_string(),
            "/nonexistent/dir does not exist: create the directory",
        ),
        ("--junit", a_dir.clone(), "is a directory: give a file path"),
        (
            "--report",
            format!("{a_file}/r.html"),
            "plain-file is not a directory",
        ),
    ];
    for (flag, path, says) in refused {
        let (code, stdout, stderr) = bed.faultline(&["run", "-f", &manifest, flag, &path]);
        assert_eq!(code, Some(3), "{flag} {path}: {stdout}{stderr}");
        assert!(stderr.contains(says), "{flag} {path}: {stderr}");
        assert!(!stdout.contains("created"), "{stdout}");
    }
    assert_eq!(bed.experiment_count().await, 0);
    bed.server.shutdown().await;
}
