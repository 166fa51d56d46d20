//! `faultline run`, `report` and `status` run as a user (or CI) runs them: the binary, a
//! kubeconfig pointing at the embedded API server, and the controller with its real probe hub
//! in this test process, probing HTTP servers on 127.0.0.1.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use common::harness::{Harness, shop_with_web_pods};
use faultline::api::{Phase, Verdict};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A service whose health the test controls.
struct Service {
    status: Arc<AtomicU16>,
    url: String,
}

impl Service {
    async fn start(code: u16) -> Service {
        let status = Arc::new(AtomicU16::new(code));
        let app = Router::new()
            .route(
                "/healthz",
                get(|State(s): State<Arc<AtomicU16>>| async move {
                    StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
                }),
            )
            .with_state(status.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Service { status, url }
    }

    fn set(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

/// The harness, two web pods in the opted-in namespace `shop`, and a kubeconfig for the CLI.
struct Bed {
    h: Harness,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Bed {
    async fn start() -> Bed {
        let h = Harness::start_with_real_probes().await;
        shop_with_web_pods(&h, 2).await;
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, h.cluster.kubeconfig_yaml()).unwrap();
        Bed { h, dir, kubeconfig }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn manifest(&self, file: &str, text: &str) -> String {
        let path = self.path(file);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"));
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("FAULTLINE_LOG", "warn")
            .kill_on_drop(true);
        command
    }

    async fn faultline(&self, args: &[&str]) -> Output {
        self.command(args).output().await.expect("faultline runs")
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_exit(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// A pod kill of one web pod for `duration` under an HTTP hypothesis on `url`.
fn pod_kill(name: &str, duration: &str, url: &str) -> String {
    format!(
        r#"apiVersion: faultline.dev/v1alpha1
kind: ChaosExperiment
metadata:
  name: {name}
spec:
  duration: {duration}
  target:
    labelSelector:
      matchLabels:
        app: web
    mode: One
  faults:
    - podKill:
        method: delete
        gracePeriodSeconds: 0
  steadyState:
    recoveryTimeout: 10s
    probes:
      - name: web-healthy
        http:
          url: {url}
          expectedStatus: [200]
        interval: 500ms
        timeout: 450ms
        failureThreshold: 2
"#
    )
}

fn junit(path: &Path) -> String {
    let xml = std::fs::read_to_string(path).expect("the JUnit file is written");
    roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    xml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_pod_kill_exits_0_with_junit_and_report_and_shows_in_status_and_report() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest("kill.yaml", &pod_kill("kill-one", "1s", &service.url));
    let junit_path = bed.path("out.xml");
    let html_path = bed.path("report.html");
    let out = bed
        .faultline(&[
            "run",
            "-f",
            &manifest,
            "-n",
            "shop",
            "--wait",
            "--junit",
            junit_path.to_str().unwrap(),
            "--report",
            html_path.to_str().unwrap(),
        ])
        .await;
    let (stdout, _) = assert_exit(&out, 0);
    assert!(
        stdout.contains("created chaosexperiment shop/kill-one"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop/kill-one phase Verifying -> Injecting"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop/kill-one probe web-healthy pass 200"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop/kill-one finished: Passed (Passed)"),
        "{stdout}"
    );
    // Not a terminal: plain lines, each with a UTC timestamp.
    assert!(!stdout.contains('\r'));
    let waiting = stdout
        .lines()
        .find(|l| l.contains("waiting up to"))
        .unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(waiting.split(' ').next().unwrap()).is_ok(),
        "{waiting}"
    );
    let xml = junit(&junit_path);
    assert!(xml.contains("name=\"kill-one\"") && xml.contains("name=\"probe web-healthy\""));
    assert!(!xml.contains("<failure"), "{xml}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.contains("<svg class=\"timeline\"") && html.contains("v-passed"));

    // The same manifest again: the finished run keeps its name, the new one gets a fresh one.
    let out = bed.faultline(&["run", "-f", &manifest, "-n", "shop"]).await;
    let (stdout, _) = assert_exit(&out, 0);
    assert!(
        stdout.contains("exists from an earlier run (phase Succeeded)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("created chaosexperiment shop/kill-one-"),
        "{stdout}"
    );
    let out = bed.faultline(&["status", "-n", "shop"]).await;
    let (table, _) = assert_exit(&out, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("ELAPSED/REMAINING"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("kill-one ") && l.contains("Passed")),
        "{table}"
    );

    let out = bed
        .faultline(&["report", "kill-one", "-n", "shop", "-o", "json"])
        .await;
    let (json, _) = assert_exit(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["summary"]["verdict"], "Passed");
    assert!(json["summary"]["probes"][0]["passes"].as_i64().unwrap() >= 2);
    let out = bed.faultline(&["report", "kill-one", "-n", "shop"]).await;
    let (markdown, _) = assert_exit(&out, 0);
    assert!(
        markdown.starts_with("# shop/kill-one: **Passed**"),
        "{markdown}"
    );
    let page = bed.path("kill-one.html");
    let out = bed
        .faultline(&[
            "report",
            "kill-one",
            "-n",
            "shop",
            "--output",
            page.to_str().unwrap(),
        ])
        .await;
    assert_exit(&out, 0);
    assert!(std::fs::read_to_string(&page).unwrap().contains("<svg"));
    let out = bed.faultline(&["report", "nope", "-n", "shop"]).await;
    let (_, stderr) = assert_exit(&out, 3);
    assert!(
        stderr.contains("experiment shop/nope not found: `faultline status -n shop`"),
        "{stderr}"
    );
    bed.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_fails_mid_run_aborts_and_exits_2_with_the_probe_in_junit() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest("breaks.yaml", &pod_kill("breaks", "30s", &service.url));
    let junit_path = bed.path("out.xml");
    let run = bed
        .command(&[
            "run",
            "-f",
            &manifest,
            "-n",
            "shop",
            "--wait",
            "--junit",
            junit_path.to_str().unwrap(),
        ])
        .output();
    let breaker = async {
        bed.h.wait_phase("shop", "breaks", Phase::Running).await;
        service.set(500);
    };
    let (out, ()) = tokio::join!(run, breaker);
    let (stdout, _) = assert_exit(&out.unwrap(), 2);
    assert!(
        stdout.contains("shop/breaks probe web-healthy FAIL 500"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop/breaks finished: Aborted (ProbeFailed)"),
        "{stdout}"
    );
    assert!(stdout.contains("abort latency: "), "{stdout}");
    let xml = junit(&junit_path);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let failures: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .filter_map(|n| n.attribute("message"))
        .collect();
    assert_eq!(failures.len(), 2, "{xml}");
    for message in failures {
        assert!(
            message.starts_with("probe web-healthy failed with value 500"),
            "{message}"
        );
    }
    bed.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_manifest_exits_3_with_the_problems_and_creates_nothing() {
    let bed = Bed::start().await;
    let manifest = bed.manifest(
        "bad.yaml",
        "apiVersion: faultline.dev/v1alpha1\nkind: ChaosExperiment\nmetadata:\n  name: bad\nspec:\n  duration: soon\n  faults: []\n",
    );
    let out = bed
        .faultline(&["run", "-f", &manifest, "-n", "shop", "--wait"])
        .await;
    let (_, stderr) = assert_exit(&out, 3);
    assert!(stderr.contains("bad.yaml:6: spec.duration:"), "{stderr}");
    assert!(
        stderr.contains("is invalid (1 of 1 documents): fix the problems above"),
        "{stderr}"
    );
    let list = bed
        .h
        .experiments("shop")
        .list(&Default::default())
        .await
        .unwrap();
    assert!(list.items.is_empty());

    let out = bed.faultline(&["run", "-f", "/no/such/file.yaml"]).await;
    let (_, stderr) = assert_exit(&out, 3);
    assert!(
        stderr.contains("cannot read /no/such/file.yaml"),
        "{stderr}"
    );
    bed.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hypothesis_that_fails_before_injection_exits_1() {
    let bed = Bed::start().await;
    let service = Service::start(503).await;
    let manifest = bed.manifest("sick.yaml", &pod_kill("sick", "30s", &service.url));
    let junit_path = bed.path("out.xml");
    let out = bed
        .faultline(&[
            "run",
            "-f",
            &manifest,
            "-n",
            "shop",
            "--junit",
            junit_path.to_str().unwrap(),
        ])
        .await;
    let (stdout, _) = assert_exit(&out, 1);
    assert!(
        stdout.contains("finished: Failed (SteadyStateNotMet)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("faultline report sick -n shop -o html"),
        "{stdout}"
    );
    assert!(junit(&junit_path).contains("probe web-healthy failed with value 503"));
    bed.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_targets_and_exits_0_without_injecting() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest("kill.yaml", &pod_kill("rehearse", "30s", &service.url));
    let out = bed
        .faultline(&["run", "-f", &manifest, "-n", "shop", "--dry-run"])
        .await;
    let (stdout, _) = assert_exit(&out, 0);
    assert!(
        stdout.contains("shop/rehearse: DryRun (DryRun)"),
        "{stdout}"
    );
    assert!(stdout.contains("  targets (1):"), "{stdout}");
    assert!(stdout.contains("    shop/web-"), "{stdout}");
    assert!(
        stdout.contains("would inject: podKill of pod shop/web-"),
        "{stdout}"
    );
    assert!(stdout.contains("preflight probe web-healthy:"), "{stdout}");
    let experiment = bed.h.experiments("shop").get("rehearse").await.unwrap();
    assert!(experiment.spec.dry_run);
    assert!(experiment.status.unwrap().injected_at.is_none());
    bed.h.stop().await;
}

// `run --wait | head -3`: the reader goes after a few lines; the run still follows the
// experiment to its verdict and exits with it (it used to panic on the summary, exit 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_stdout_reader_has_gone_still_exits_with_the_verdict() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest("kill.yaml", &pod_kill("unread", "1s", &service.url));
    let dry = bed.manifest("dry.yaml", &pod_kill("unread-dry", "1s", &service.url));
    for args in [
        ["run", "-f", &manifest, "-n", "shop", "--wait"],
        ["run", "-f", &dry, "-n", "shop", "--dry-run"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bed
            .command(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .unwrap();
        let (_, stderr) = assert_exit(&out, 0);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let ended = bed.h.experiments("shop").get("unread").await.unwrap();
    assert_eq!(ended.status.unwrap().verdict, Some(Verdict::Passed));
    bed.h.stop().await;
}

// The report's directory goes away during the run: the verdict is printed and is the exit
// code, and the error says how to write the report again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_cannot_be_written_after_the_run_keeps_the_verdict_and_says_how_to_redo_it() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest("kill.yaml", &pod_kill("unwritten", "2s", &service.url));
    let gone = bed.path("gone");
    std::fs::create_dir(&gone).unwrap();
    let report = gone.join("r.html");
    let run = bed
        .command(&[
            "run",
            "-f",
            &manifest,
            "-n",
            "shop",
            "--report",
            report.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let experiments = bed.h.experiments("shop");
    common::wait_for("the experiment is created", Duration::from_secs(20), || {
        let experiments = experiments.clone();
        async move { experiments.get_opt("unwritten").await.ok().flatten() }
    })
    .await;
    std::fs::remove_dir(&gone).unwrap();
    let out = run.wait_with_output().await.unwrap();
    let (stdout, stderr) = assert_exit(&out, 0);
    assert!(
        stdout.contains("shop/unwritten finished: Passed (Passed)"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("error: cannot write {}", report.display()))
            && stderr.contains(&format!(
                "write the report again with: faultline report unwritten -n shop --output {}",
                report.display()
            )),
        "{stderr}"
    );
    bed.h.stop().await;
}

/// A network latency fault on one web pod, 30 s, no hypothesis.
fn latency(name: &str, dry_run: bool) -> String {
    format!(
        r#"apiVersion: faultline.dev/v1alpha1
kind: ChaosExperiment
metadata:
  name: {name}
spec:
  duration: 30s
  dryRun: {dry_run}
  target:
    labelSelector:
      matchLabels:
        app: web
    mode: One
  faults:
    - networkLatency:
        latency: 100ms
        to:
          cidrs: [10.0.0.0/8]
"#
    )
}

// A dry run of a fault that could not be applied (no agent has reported on the target's node)
// says why and exits 5, the code for "could not run"; once an agent has reported, it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_that_could_not_run_exits_5_and_says_why() {
    let bed = Bed::start().await;
    let manifest = bed.manifest("dry.yaml", &latency("rehearse-latency", true));
    let out = bed
        .faultline(&["run", "-f", &manifest, "-n", "shop", "--dry-run"])
        .await;
    let (stdout, _) = assert_exit(&out, 5);
    assert!(
        stdout.contains("shop/rehearse-latency: Failed (PreflightFailed) preflight failed, nothing was injected: no faultline agent has reported on node node-1"),
        "{stdout}"
    );
    assert_eq!(bed.h.injection_count("shop").await, 0);

    common::cluster::node_with_agent(&bed.h.client, "node-1").await;
    let out = bed
        .faultline(&["run", "-f", &manifest, "-n", "shop", "--dry-run"])
        .await;
    let (stdout, _) = assert_exit(&out, 0);
    assert!(stdout.contains(": DryRun (DryRun)"), "{stdout}");
    assert!(
        stdout.contains("would inject: networkLatency on pod shop/web-"),
        "{stdout}"
    );
    bed.h.stop().await;
}

// Every eviction refused by the budget: nothing went in, so the run is Inconclusive (exit 4),
// not Passed, and JUnit marks the experiment skipped with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_injected_exits_4_inconclusive_and_junit_says_skipped() {
    let bed = Bed::start().await;
    let budgets: kube::Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        kube::Api::namespaced(bed.h.client.clone(), "shop");
    let budget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-pdb"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}
    }))
    .unwrap();
    budgets.create(&Default::default(), &budget).await.unwrap();
    // The budget's status must say it allows no disruption before the kill is tried.
    common::wait_for("the budget's status", Duration::from_secs(15), || async {
        let b = budgets.get("web-pdb").await.ok()?;
        (b.status?.current_healthy == 2).then_some(())
    })
    .await;
    let manifest = bed.manifest(
        "refused.yaml",
        "apiVersion: faultline.dev/v1alpha1\nkind: ChaosExperiment\nmetadata:\n  name: refused\nspec:\n  duration: 1s\n  target:\n    labelSelector:\n      matchLabels:\n        app: web\n  faults:\n    - podKill:\n        method: evict\n",
    );
    let junit_path = bed.path("refused.xml");
    let out = bed
        .faultline(&[
            "run",
            "-f",
            &manifest,
            "-n",
            "shop",
            "--junit",
            junit_path.to_str().unwrap(),
        ])
        .await;
    let (stdout, _) = assert_exit(&out, 4);
    assert!(
        stdout.contains("shop/refused finished: Inconclusive (NothingInjected): no fault was injected, so the hypothesis was not tested: every target was skipped: pod shop/web-"),
        "{stdout}"
    );
    assert!(stdout.contains("web-pdb"), "{stdout}");
    let xml = junit(&junit_path);
    assert!(
        xml.contains("<skipped message=\"Inconclusive (NothingInjected): no fault was injected"),
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");
    bed.h.stop().await;
}

// `faultline abort NAME --reason`: the reason is in status and in the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_reason_is_in_status_and_the_report() {
    let bed = Bed::start().await;
    let manifest = bed.manifest("long.yaml", &latency("by-hand", false));
    let out = bed.faultline(&["run", "-f", &manifest, "-n", "shop"]).await;
    assert_exit(&out, 0);
    bed.h.wait_phase("shop", "by-hand", Phase::Running).await;
    let out = bed
        .faultline(&[
            "abort",
            "by-hand",
            "-n",
            "shop",
            "--reason",
            "db migration window",
        ])
        .await;
    assert_exit(&out, 0);
    let aborted = bed.h.wait_phase("shop", "by-hand", Phase::Aborted).await;
    let status = aborted.status.unwrap();
    assert_eq!(
        status.abort_reason.as_deref(),
        Some("aborted on request: db migration window")
    );
    let page = bed.path("by-hand.html");
    let out = bed
        .faultline(&[
            "report",
            "by-hand",
            "-n",
            "shop",
            "--output",
            page.to_str().unwrap(),
        ])
        .await;
    assert_exit(&out, 0);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("<dt>Abort reason</dt><dd>aborted on request: db migration window</dd>"),
        "{html}"
    );
    let out = bed
        .faultline(&["report", "by-hand", "-n", "shop", "-o", "json"])
        .await;
    let (json, _) = assert_exit(&out, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        json["summary"]["abortReason"],
        "aborted on request: db migration window"
    );
    bed.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_exits_3_and_says_how_to_abort() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest("long.yaml", &pod_kill("long", "1m", &service.url));
    let out = bed
        .faultline(&[
            "run",
            "-f",
            &manifest,
            "-n",
            "shop",
            "--wait",
            "--timeout",
            // Ample time to reach Running even on a loaded machine; the point is the message.
            "15s",
        ])
        .await;
    let (_, stderr) = assert_exit(&out, 3);
    assert!(
        stderr.contains(
            "timed out after 15s waiting for shop/long in phase Running; the experiment keeps running: faultline abort long -n shop"
        ),
        "{stderr}"
    );
    let experiment = bed.h.experiments("shop").get("long").await.unwrap();
    assert_eq!(experiment.status.unwrap().phase, Phase::Running);
    // A second run of it while it runs is refused.
    let out = bed.faultline(&["run", "-f", &manifest, "-n", "shop"]).await;
    let (_, stderr) = assert_exit(&out, 3);
    assert!(
        stderr.contains("already exists and is still going (phase Running)"),
        "{stderr}"
    );
    bed.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_aborts_the_experiment_waits_for_the_revert_and_exits_2() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest("long.yaml", &pod_kill("stopped", "1m", &service.url));
    let mut child = bed
        .command(&["run", "-f", &manifest, "-n", "shop", "--wait"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read its output as it comes; "waiting up to" says it now handles Ctrl-C.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    while !stdout.contains("waiting up to") {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("faultline keeps running");
        stdout.push_str(&line);
        stdout.push('\n');
    }
    bed.h.wait_phase("shop", "stopped", Phase::Running).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let rest = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
        }
    };
    let (out, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(child.wait_with_output(), rest)
    })
    .await
    .expect("faultline exits after the abort");
    let out = out.unwrap();
    let (_, stderr) = assert_exit(&out, 2);
    assert!(stdout.contains("abort requested: shop/stopped"), "{stdout}");
    assert!(
        stdout.contains("finished: Aborted (AbortRequested)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("interrupted: every experiment has finished and its faults are reverted")
    );
    let experiment = bed.h.experiments("shop").get("stopped").await.unwrap();
    let status = experiment.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert!(status.reverted_at.is_some());
    bed.h.stop().await;
}

// `faultline run --wait` streams: each probe check is printed within about two seconds of the
// check, stamped with the check's own time (not all at the end with one timestamp).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_prints_each_probe_check_within_two_seconds_stamped_with_its_time() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let manifest = bed.manifest(
        "stream.yaml",
        &format!(
            r#"apiVersion: faultline.dev/v1alpha1
kind: ChaosExperiment
metadata:
  name: stream
spec:
  duration: 10s
  target:
    labelSelector:
      matchLabels:
        app: web
    mode: One
  faults:
    - podKill:
        method: delete
        gracePeriodSeconds: 0
  steadyState:
    recoveryTimeout: 10s
    probes:
      - name: web-healthy
        http:
          url: {}
        interval: 1s
        timeout: 900ms
"#,
            service.url
        ),
    );
    let mut child = bed
        .command(&["run", "-f", &manifest, "-n", "shop", "--wait"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // (arrived, stamped) of each probe line printed while the faults were in.
    let mut during = Vec::new();
    let mut running = false;
    let mut stdout = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let arrived = chrono::Utc::now();
            stdout.push_str(&line);
            stdout.push('\n');
            if line.contains("phase Injecting -> Running") {
                running = true;
            } else if line.contains("phase Running -> Recovering") {
                running = false;
            } else if running && line.contains("shop/stream probe web-healthy pass") {
                let stamp = line.split(' ').next().unwrap();
                let stamped = chrono::DateTime::parse_from_rfc3339(stamp)
                    .unwrap_or_else(|e| panic!("{e}: {line}"))
                    .with_timezone(&chrono::Utc);
                assert_eq!(stamp.len(), "2026-01-01T00:00:00.000Z".len(), "{line}");
                during.push((arrived, stamped));
            }
        }
    };
    let (status, ()) = tokio::time::timeout(Duration::from_secs(90), async {
        tokio::join!(child.wait(), read)
    })
    .await
    .expect("the run ends");
    assert_eq!(status.unwrap().code(), Some(0), "{stdout}");
    let delays: Vec<f64> = during
        .iter()
        .map(|(arrived, stamped)| (*arrived - *stamped).num_milliseconds() as f64 / 1000.0)
        .collect();
    eprintln!("probe lines while Running, seconds from check to print: {delays:?}");
    assert!(during.len() >= 7, "{stdout}");
    // Streaming means about two seconds from check to print (a status write at most a second
    // after the check, then the watch); lines held to the end of the run would be 10 s late. A
    // write slowed by a loaded API server may take one line past 2 s, never past 4.
    let mut sorted = delays.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        median <= 2.0 && delays.iter().all(|d| *d <= 4.0 && *d >= -0.05),
        "checks printed about 2 s after they were made: {delays:?}\n{stdout}"
    );
    // One stamp per check, about a second apart: the checks' own times, not the print time (lines
    // printed together would share one). A check that timed out prints FAIL, not counted here.
    assert!(
        during.windows(2).all(|w| {
            let gap = (w[1].1 - w[0].1).num_milliseconds();
            (500..=3000).contains(&gap)
        }),
        "{during:?}"
    );
    bed.h.stop().await;
}

#[tokio::test]
async fn an_unreachable_cluster_exits_3_and_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    // Port 9 (discard) on loopback: nothing listens there.
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let manifest = dir.path().join("kill.yaml");
    std::fs::write(&manifest, pod_kill("x", "1s", "http://127.0.0.1:1/")).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", "-f", manifest.to_str().unwrap(), "--wait"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap();
    let (_, stderr) = assert_exit(&out, 3);
    assert!(
        stderr.contains("cannot reach the cluster at http://127.0.0.1:9/: is your kubeconfig right? (kubectl cluster-info)"),
        "{stderr}"
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["status", "-A"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .await
        .unwrap();
    assert_exit(&out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_day_runs_its_stages_and_the_report_leads_with_them() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    // Two one-second pod-kill stages; the day's probe is the service's health.
    let stage = |name: &str| {
        format!(
            "    - name: {name}\n      experiments:\n        - name: kill\n          spec:\n            duration: 1s\n            target: {{labelSelector: {{matchLabels: {{app: web}}}}, mode: One}}\n            faults: [{{podKill: {{method: delete, gracePeriodSeconds: 0}}}}]\n"
        )
    };
    let manifest = bed.manifest(
        "day.yaml",
        &format!(
            "apiVersion: faultline.dev/v1alpha1\nkind: GameDay\nmetadata:\n  name: drill\nspec:\n  steadyState:\n    recoveryTimeout: 10s\n    probes:\n      - name: web-healthy\n        http: {{url: \"{url}\"}}\n        interval: 500ms\n        timeout: 450ms\n  stages:\n{}{}",
            stage("first"),
            stage("second"),
            url = service.url
        ),
    );
    let report = bed.path("day.md");
    let out = bed
        .faultline(&[
            "run",
            "-f",
            &manifest,
            "-n",
            "shop",
            "--wait",
            "--report",
            report.to_str().unwrap(),
        ])
        .await;
    let (stdout, _) = assert_exit(&out, 0);
    assert!(stdout.contains("created gameday shop/drill"), "{stdout}");
    assert!(
        stdout.contains("gameday shop/drill stage first: Running"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gameday shop/drill stage second: Succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("shop/drill-second-kill probe web-healthy pass 200"),
        "the day's probe runs in the stage's experiment: {stdout}"
    );
    assert!(
        stdout.contains("gameday shop/drill finished: Passed: 2 of 2 stages passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gameday shop/drill: Passed: 2 of 2 stages passed"),
        "the summary leads with the day's verdict: {stdout}"
    );
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("## Game day shop/drill: **Passed**"), "{md}");
    assert!(
        md.contains("| first | Succeeded | Passed | drill-first-kill | - |"),
        "{md}"
    );
    assert!(
        md.contains("| second | Succeeded | Passed | drill-second-kill | - |"),
        "{md}"
    );

    // Afterwards, from the cluster: `faultline report` of the game day writes the same day and
    // its stages' experiments.
    let out = bed.faultline(&["report", "fgd/drill", "-n", "shop"]).await;
    let (later, _) = assert_exit(&out, 0);
    assert!(
        later.contains("## Game day shop/drill: **Passed**"),
        "{later}"
    );
    for stage in ["first", "second"] {
        let row = format!("| {stage} | Succeeded | Passed | drill-{stage}-kill | - |");
        assert!(later.contains(&row), "{later}");
        assert!(later.contains(&format!("drill-{stage}-kill")), "{later}");
    }
    let html = bed.path("later.html");
    let out = bed
        .faultline(&[
            "report",
            "gameday/drill",
            "-n",
            "shop",
            "--output",
            html.to_str().unwrap(),
        ])
        .await;
    assert_exit(&out, 0);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Game day shop/drill"), "{page}");
    assert!(page.contains("drill-second-kill"), "{page}");
    let out = bed.faultline(&["report", "fgd/nope", "-n", "shop"]).await;
    let (_, stderr) = assert_exit(&out, 3);
    assert!(
        stderr.contains("game day shop/nope not found: `kubectl get fgd -n shop`"),
        "{stderr}"
    );
    bed.h.stop().await;
}

/// `faultline report fsched/NAME`: the runs a schedule keeps, oldest scheduled first, whatever
/// order they were created in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedules_report_shows_its_kept_runs_oldest_first() {
    let bed = Bed::start().await;
    let service = Service::start(200).await;
    let schedule = serde_json::json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule",
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "suspend": true, "experimentTemplate": {"spec": {
            "duration": "1s", "faults": [{"podKill": {}}]}}},
    });
    common::cluster::apply_object(&bed.h.client, &schedule, "shop").await;
    let out = bed
        .faultline(&["report", "fsched/nightly", "-n", "shop"])
        .await;
    let (_, stderr) = assert_exit(&out, 3);
    assert!(
        stderr.contains("schedule shop/nightly has no runs kept"),
        "{stderr}"
    );

    // Two runs as the schedule labels and annotates them, the later one created first.
    // Each kills its own pod, so that both pass.
    let run = |name: &str, day: u32| {
        pod_kill(name, "1s", &service.url)
            .replace(
                &format!("  name: {name}\n"),
                &format!(
                    "  name: {name}\n  labels: {{faultline.dev/schedule: nightly}}\n  annotations: {{faultline.dev/scheduled-at: \"2026-12-0{day}T03:00:00Z\"}}\n"
                ),
            )
            .replace(
                "    mode: One\n",
                &format!("    mode: One\n    fieldSelectors: {{metadata.name: web-{}}}\n", day - 1),
            )
    };
    let runs = bed.manifest(
        "runs.yaml",
        &format!(
            "{}---\n{}",
            run("nightly-second", 2),
            run("nightly-first", 1)
        ),
    );
    let out = bed
        .faultline(&["run", "-f", &runs, "-n", "shop", "--wait"])
        .await;
    assert_exit(&out, 0);
    let out = bed
        .faultline(&["report", "fsched/nightly", "-n", "shop"])
        .await;
    let (md, _) = assert_exit(&out, 0);
    assert!(
        md.starts_with("# faultline report schedule shop/nightly\n"),
        "{md}"
    );
    let first = md
        .find("nightly-first")
        .expect("the first run is in the report");
    let second = md
        .find("nightly-second")
        .expect("the second run is in the report");
    assert!(first < second, "{md}");
    let out = bed
        .faultline(&[
            "report",
            "chaosschedules/nightly",
            "-n",
            "shop",
            "-o",
            "junit",
        ])
        .await;
    let (xml, _) = assert_exit(&out, 0);
    for run in ["nightly-first", "nightly-second"] {
        assert!(xml.contains(&format!("name=\"{run}\"")), "{xml}");
    }
    bed.h.stop().await;
}
