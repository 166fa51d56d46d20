//! `faultline validate` as a user runs it: the built binary on the fixtures in
//! `tests/fixtures/validate/`. Every invalid fixture has a companion `.expected` file with the
//! exact `FILE:LINE: path: message` lines the command must print.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate")
}

fn faultline(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .current_dir(dir)
        .arg("validate")
        .args(args)
        .output()
        .expect("run faultline")
}

fn with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("validate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn faultline");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for faultline")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_invalid_fixture_prints_exactly_its_expected_lines_and_exits_1() {
    let dir = fixtures().join("invalid");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let Some(ext) = path.extension() else {
            continue;
        };
        if ext != "yaml" && ext != "yml" {
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let expected = std::fs::read_to_string(path.with_extension("expected"))
            .unwrap_or_else(|_| panic!("{name} needs a .expected file"));
        let output = faultline(&dir, &[name]);
        assert_eq!(stdout(&output), expected, "output for {name}");
        assert_eq!(output.status.code(), Some(1), "exit code for {name}");
        assert!(stderr(&output).contains("invalid"), "{}", stderr(&output));
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} invalid fixtures found");
}

#[test]
fn the_example_from_the_issue_is_printed_as_file_line_path_message() {
    let output = faultline(&fixtures().join("invalid"), &["bad-duration.yaml"]);
    assert!(
        stdout(&output).contains(
            "bad-duration.yaml:9: spec.faults[0].networkLatency.latency: \"fast\" is not a duration (try 200ms)\n"
        ),
        "{}",
        stdout(&output)
    );
}

#[test]
fn valid_fixtures_pass_with_no_errors_and_exit_0() {
    let output = faultline(&fixtures(), &["valid"]);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    // The only line is the note about the Deployment that shares a file with an experiment.
    assert_eq!(
        stdout(&output),
        "valid/mixed-with-deployment.yaml:2: note: skipping kind Deployment (apps/v1): not a faultline resource\n"
    );
    assert_eq!(
        stderr(&output).trim(),
        "7 documents checked, 0 invalid, 1 skipped (not faultline resources)"
    );
}

#[test]
fn line_numbers_in_a_multi_document_file_point_into_the_bad_document() {
    let output = faultline(&fixtures().join("invalid"), &["second-document-bad.yaml"]);
    let out = stdout(&output);
    // Document 2 starts on line 10; its problems are on lines 16 and 22, none in document 1.
    assert!(out.lines().all(|l| {
        let line: usize = l
            .split(':')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        line >= 10
    }));
    assert!(out.contains("second-document-bad.yaml:22: spec.faults[0].networkLoss.percent: 150 is too large; it must be at most 100"));
    assert_eq!(stderr(&output).trim(), "2 documents checked, 1 invalid");
}

#[test]
fn a_directory_is_searched_recursively_and_summarised() {
    let output = faultline(&fixtures(), &["."]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(out.contains("./invalid/probes.yaml:29: "), "{out}");
    assert!(
        out.contains("./valid/mixed-with-deployment.yaml:2: note: "),
        "{out}"
    );
    let summary = stderr(&output);
    assert!(
        summary
            .trim()
            .ends_with("1 skipped (not faultline resources)"),
        "{summary}"
    );
    assert!(
        summary.contains("26 documents checked, 18 invalid"),
        "{summary}"
    );
}

#[test]
fn stdin_is_read_with_a_dash_and_named_stdin() {
    let bad = "apiVersion: faultline.dev/v1alpha1\nkind: ChaosExperiment\nmetadata:\n  name: x\nspec:\n  duration: 60\n  faults:\n  - podKill: {}\n";
    let output = with_stdin(&["-"], bad);
    assert_eq!(
        stdout(&output),
        "<stdin>:6: spec.duration: \"60\" is not a duration (try 60s)\n"
    );
    assert_eq!(output.status.code(), Some(1));
    let good = bad.replace("duration: 60\n", "duration: 60s\n");
    let output = with_stdin(&["-"], &good);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert_eq!(stderr(&output).trim(), "1 document checked, 0 invalid");
}

#[test]
fn a_missing_path_is_a_usage_error_that_says_what_to_do() {
    let output = faultline(&fixtures(), &["valid", "does-not-exist.yaml"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stdout(&output).is_empty());
    let err = stderr(&output);
    assert!(err.contains("does-not-exist.yaml does not exist"), "{err}");
    assert!(err.contains("- to read stdin"), "{err}");
}

#[test]
fn json_output_carries_every_problem_and_the_counts() {
    let output = faultline(
        &fixtures().join("invalid"),
        &["-o", "json", "bad-duration.yaml"],
    );
    assert_eq!(output.status.code(), Some(1));
    let body: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(body["documents"], 1);
    assert_eq!(body["invalid"], 1);
    assert_eq!(body["problems"][1]["line"], 9);
    assert_eq!(
        body["problems"][1]["path"],
        "spec.faults[0].networkLatency.latency"
    );
    assert_eq!(body["problems"][1]["severity"], "error");
}

#[test]
fn bytes_that_are_not_utf8_are_an_error_not_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bin.yaml"), b"kind: a\n\xff\xfe\n").expect("write");
    let output = faultline(dir.path(), &["bin.yaml"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "bin.yaml:2: not UTF-8 text; save the file as UTF-8\n"
    );
}

#[test]
fn the_poison_durations_exit_1_naming_each_field_and_its_limit_instead_of_panicking() {
    let output = faultline(&fixtures().join("invalid"), &["poison-durations.yaml"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with(
            "poison-durations.yaml:8: spec.duration: \"999999999999999999999h\" is longer than the maximum of 24h\n"
        ),
        "{}",
        stdout(&output)
    );
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

#[test]
fn a_manifest_over_64_mib_is_a_usage_error_naming_the_file_and_the_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.yaml");
    // Sparse: one byte over the limit without writing 64 MiB.
    std::fs::File::create(&big)
        .expect("create")
        .set_len(64 * 1024 * 1024 + 1)
        .expect("set_len");
    let exact = dir.path().join("exact.yaml");
    std::fs::File::create(&exact)
        .expect("create")
        .set_len(64 * 1024 * 1024)
        .expect("set_len");
    let output = faultline(dir.path(), &["big.yaml"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "error: big.yaml is larger than 64 MiB, the most faultline reads from one manifest: split it into several files"
        ),
        "{}",
        stderr(&output)
    );
    // Exactly the limit is read (and found not to be a manifest), not refused for its size.
    let output = faultline(dir.path(), &["exact.yaml"]);
    assert!(
        !stderr(&output).contains("larger than"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_endless_input_stops_at_the_limit_instead_of_filling_memory() {
    let output = faultline(Path::new("/"), &["/dev/zero"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("/dev/zero is larger than 64 MiB"),
        "{}",
        stderr(&output)
    );
    let endless = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let output = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["validate", "-"])
        .stdin(endless)
        .output()
        .expect("run faultline");
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("<stdin> is larger than 64 MiB"),
        "{}",
        stderr(&output)
    );
}
