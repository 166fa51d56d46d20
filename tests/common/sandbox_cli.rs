//! `faultline sandbox` as a user runs it, for the tests that start, kill and stop whole
//! sandboxes (attached to a cluster with `--cluster`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `faultline sandbox --state-dir STATE ARGS...`, run from the repository (so that
/// `--apply experiments/...` finds the examples).
pub fn sandbox(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("sandbox")
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("faultline runs")
}

/// `sandbox up --detach --cluster KUBECONFIG EXTRA...`, asserted to succeed; returns the pid
/// of the sandbox process.
pub fn up_attached(state: &Path, kubeconfig: &Path, extra: &[&str]) -> u32 {
    let mut args = vec!["up", "--detach", "--cluster", kubeconfig.to_str().unwrap()];
    args.extend_from_slice(extra);
    let up = sandbox(state, &args);
    assert!(
        up.status.success(),
        "sandbox up: {}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    u32::try_from(state["pid"].as_u64().unwrap()).unwrap()
}

/// Stops the sandbox of this state directory when dropped, also when an assertion fails
/// halfway.
pub struct Down(pub PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = sandbox(&self.0, &["down"]);
    }
}
