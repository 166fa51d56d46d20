//! Every manifest in experiments/ passes `faultline validate`: users copy these.

use std::process::Command;

#[test]
fn every_example_passes_faultline_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("validate")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "faultline validate experiments/ failed:\n{stdout}{stderr}"
    );
    assert!(stderr.contains("0 invalid"), "{stderr}");
    // One example per CRD at least.
    for kind in [
        "ChaosExperiment",
        "ChaosSchedule",
        "GameDay",
        "FaultInjection",
    ] {
        let found = std::fs::read_dir(&dir)
            .unwrap()
            .chain(std::fs::read_dir(dir.join("reference")).unwrap())
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .any(|text| text.contains(&format!("kind: {kind}\n")));
        assert!(found, "no example of {kind} in experiments/");
    }
}
