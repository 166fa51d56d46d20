//! The kind end-to-end suite's experiments and assertions, run here in the sandbox (root: real
//! pods in network namespaces, the real node agent, real rules). What `make e2e` checks on kind
//! (experiments/e2e/expectations.yaml: each runnable example's `faultline run --wait` exit code
//! and verdict) is checked the same way, through the same CLI; afterwards no pod namespace holds
//! a faultline rule and `sandbox down` leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use faultline::agent::testnet::root_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_faultline");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn faultline(state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(repo())
        .env("KUBECONFIG", state.join("kubeconfig"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
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

fn faultline_tables_in_pods(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for ns in netns_with_prefix(prefix) {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "nft", "list", "tables"])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains("faultline_") {
                found.push(format!("{ns}: {line}"));
            }
        }
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "iptables-save"])
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.contains("FL-") {
                found.push(format!("{ns}: {line}"));
            }
        }
    }
    found
}

struct Sandbox {
    state: tempfile::TempDir,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = faultline(
            self.state.path(),
            &["sandbox", "--state-dir", &self.dir(), "down"],
        );
        eprintln!("sandbox down: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Sandbox {
    fn dir(&self) -> String {
        self.state.path().display().to_string()
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

#[test]
fn the_kind_e2e_expectations_hold_in_the_sandbox() {
    if !root_or_skip("sandbox_e2e::the_kind_e2e_expectations_hold_in_the_sandbox") {
        return;
    }
    let expectations: Expectations = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("experiments/e2e/expectations.yaml")).unwrap(),
    )
    .unwrap();
    let sandbox = Sandbox {
        state: tempfile::tempdir().unwrap(),
    };
    let state = sandbox.state.path().to_path_buf();
    let up = faultline(
        &state,
        &[
            "sandbox",
            "--state-dir",
            &sandbox.dir(),
            "up",
            "--detach",
            "--apply",
            "experiments/workloads/",
        ],
    );
    assert!(
        up.status.success(),
        "sandbox up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    wait_for_ready_pods(&state, 9);
    // The real-pod slot this sandbox got decides its names (slot 0: `flsbx-`, bridge `flsbx0`).
    let sandbox_state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    let slot = sandbox_state["pod_slot"]
        .as_u64()
        .expect("as root the sandbox runs real pods");
    let (prefix, bridge) = if slot == 0 {
        ("flsbx-".to_string(), "flsbx0".to_string())
    } else {
        (format!("flsbx{slot}-"), format!("flsbx{slot}"))
    };

    for example in expectations.examples.iter().filter(|e| e.run) {
        let junit = state.join(format!("{}.xml", example.file.replace('/', "_")));
        let started = Instant::now();
        let run = faultline(
            &state,
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
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        eprintln!(
            "{}: exit {:?} after {:.1?}\n{stdout}\n{stderr}",
            example.file,
            run.status.code(),
            started.elapsed()
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
        // After every run: no fault left in any pod.
        let left = faultline_tables_in_pods(&prefix);
        assert!(
            left.is_empty(),
            "{} left rules behind: {left:?}",
            example.file
        );
        let out = faultline(&state, &["status", "-A"]);
        eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    }

    drop(sandbox);
    assert!(
        netns_with_prefix(&prefix).is_empty(),
        "sandbox down left pod namespaces behind"
    );
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "sandbox down left the bridge behind"
    );
}

fn wait_for_ready_pods(state: &Path, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = Command::new(repo().join(".tools/bin/kubectl"))
            .args(["get", "pods", "-n", "default", "--no-headers"])
            .env("KUBECONFIG", state.join("kubeconfig"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
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
