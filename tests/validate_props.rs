//! Property tests for `faultline::validate`: whatever the input, it returns problems instead of
//! panicking, and input that is not a valid manifest always gets at least one problem. Also pins
//! that every example in `tests/fixtures/validate/valid/` passes (the checker must not reject
//! valid input).

use std::path::Path;

use faultline::validate::{Severity, check_bytes, check_text, validate_documents};
use proptest::prelude::*;

/// Valid, and built so that every truncation before its last character is invalid: `duration`
/// comes last (without it the spec misses a required field; `6` and `60` lack a unit).
const SMALL: &str = "apiVersion: faultline.dev/v1alpha1
kind: ChaosExperiment
metadata:
  name: cut
spec:
  faults:
  - podKill: {}
  duration: 60s
";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/validate/valid")
        .join(name);
    std::fs::read_to_string(path).expect("fixture")
}

#[test]
fn every_valid_fixture_has_zero_problems() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate/valid");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("valid fixtures") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let report = check_text(&path.display().to_string(), &text);
        let errors: Vec<String> = report
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{errors:#?}");
        assert_eq!(report.invalid, 0);
        // Notes only for the other kinds that share a file with ours.
        assert_eq!(
            report.problems.len(),
            report.skipped,
            "{:#?}",
            report.problems
        );
        files += 1;
    }
    assert!(files >= 5);
    assert!(validate_documents("small.yaml", SMALL).is_empty());
}

#[test]
fn every_truncation_of_a_valid_manifest_is_reported() {
    let end = SMALL.trim_end().len();
    for cut in 0..end {
        let text = &SMALL[..cut];
        let problems = validate_documents("cut.yaml", text);
        assert!(
            !problems.is_empty(),
            "no problem for a cut at {cut}: {text:?}"
        );
    }
}

#[test]
fn truncations_of_a_large_manifest_are_handled() {
    // Every line start, line middle and line end (the CEL evaluator costs ~10 ms per document
    // in a debug build, so every byte of a 1.7 kB manifest would take ~15 s; SMALL above is
    // cut at every byte).
    let text = fixture("experiment-latency.yaml");
    let mut cuts = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        cuts.extend([start, start + line.len() / 2, start + line.len() - 1]);
        start += line.len();
    }
    for cut in cuts.into_iter().filter(|i| text.is_char_boundary(*i)) {
        let problems = validate_documents("cut.yaml", &text[..cut]);
        for p in &problems {
            assert!(p.line >= 1 && p.line <= cut.max(1) + 1, "{p} at cut {cut}");
        }
    }
}

/// Lines made of the words manifests use, in shapes YAML parsers find tricky.
fn yamlish() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "spec",
        "faults",
        "duration",
        "podKill",
        "networkLatency",
        "latency",
        "target",
        "mode",
        "value",
        "steadyState",
        "probes",
        "faultline.dev/v1alpha1",
        "ChaosExperiment",
        "GameDay",
        "ChaosSchedule",
        "60s",
        "fast",
        "-",
        "---",
        "...",
        ":",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a",
        "*a",
        "!!str",
        "'",
        "\"",
        "#",
        "|",
        ">",
        "?",
        "~",
        "null",
        "yes",
        "1e9",
        "-1",
        "0x1F",
        "<<",
        "\t",
        "é",
        "\u{feff}",
    ]);
    let line = (0usize..8, prop::collection::vec(word, 0..6))
        .prop_map(|(indent, words)| format!("{}{}", " ".repeat(indent), words.join(" ")));
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_always_get_a_problem(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let report = check_bytes("random.yaml", &bytes);
        prop_assert!(!report.problems.is_empty());
        prop_assert!(report.problems.iter().all(|p| p.line >= 1));
    }

    #[test]
    fn yaml_like_text_never_panics_and_always_gets_a_problem(text in yamlish()) {
        let problems = validate_documents("yamlish.yaml", &text);
        prop_assert!(!problems.is_empty(), "no problem for {text:?}");
        let lines = text.lines().count().max(1);
        prop_assert!(problems.iter().all(|p| p.line >= 1 && p.line <= lines + 1), "{problems:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn single_byte_mutations_of_valid_manifests_never_panic(
        which in 0usize..3,
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        kind in 0u8..3,
    ) {
        let text = match which {
            0 => SMALL.to_string(),
            1 => fixture("experiment-latency.yaml"),
            _ => fixture("gameday.yml"),
        };
        let mut bytes = text.into_bytes();
        let at = position.index(bytes.len());
        match kind {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => { bytes.remove(at); }
        }
        let first = check_bytes("mutated.yaml", &bytes);
        // Deterministic: the same input gives the same report.
        prop_assert_eq!(&first, &check_bytes("mutated.yaml", &bytes));
        // A mutation may leave the manifest valid; if so it has no errors and counts no invalid.
        let errors = first.problems.iter().filter(|p| p.severity == Severity::Error).count();
        prop_assert_eq!(errors == 0, first.invalid == 0);
    }
}
