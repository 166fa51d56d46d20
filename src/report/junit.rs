//! JUnit XML, the format every CI system shows as test results.
//!
//! One `<testsuite>` per run; in it one `<testcase>` per experiment (classname
//! `faultline.<namespace>`) and one per probe (classname `faultline.<namespace>.<experiment>`,
//! name `probe <name>`). A failed or aborted experiment is a `<failure>` whose message names the
//! probe and the value that broke the hypothesis; an experiment faultline could not carry out
//! (verdict Error), or one that had not finished when the report was written, is an `<error>`.
//! An experiment in which no fault went in (verdict Inconclusive: the hypothesis was not
//! tested) and a probe that was never checked are `<skipped>`.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::{
    ExperimentSummary, ProbeSummary, summarize,
    text::{escape_xml as esc, offset, or_dash, seconds, time},
};
use crate::api::{ChaosExperiment, Verdict};

#[derive(Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

/// The JUnit XML of one run: `suite` names the test suite.
pub fn render(suite: &str, experiments: &[ChaosExperiment], generated_at: DateTime<Utc>) -> String {
    let mut cases = String::new();
    let mut counts = Counts::default();
    let mut total = 0.0;
    let mut first_start: Option<DateTime<Utc>> = None;
    for experiment in experiments {
        let s = summarize(experiment);
        let end = s.finished_at.unwrap_or(generated_at);
        let elapsed = s.started_at.map_or(0.0, |start| seconds(start, end));
        total += elapsed;
        first_start = match (first_start, s.started_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        experiment_case(&mut cases, &mut counts, experiment, &s, elapsed);
        for probe in &s.probes {
            probe_case(&mut cases, &mut counts, &s, probe, experiment);
        }
    }
    let timestamp = first_start.unwrap_or(generated_at);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let attrs = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{total:.3}\"",
        counts.tests, counts.failures, counts.errors, counts.skipped
    );
    let _ = writeln!(out, "<testsuites name=\"faultline\" {attrs}>");
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" {attrs} timestamp=\"{}\">",
        esc(suite),
        // JUnit's timestamp is ISO 8601 without a zone; ours is UTC.
        timestamp.format("%Y-%m-%dT%H:%M:%S")
    );
    out.push_str(&cases);
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn experiment_case(
    out: &mut String,
    counts: &mut Counts,
    experiment: &ChaosExperiment,
    s: &ExperimentSummary,
    elapsed: f64,
) {
    counts.tests += 1;
    let _ = writeln!(
        out,
        "    <testcase classname=\"faultline.{}\" name=\"{}\" time=\"{elapsed:.3}\">",
        esc(&s.namespace),
        esc(&s.name)
    );
    let message = s.message.clone().unwrap_or_default();
    let detail = story(experiment, s);
    let reason = or_dash(s.reason.as_deref());
    match s.verdict {
        Some(Verdict::Passed | Verdict::DryRun) => {}
        Some(verdict @ (Verdict::Failed | Verdict::Aborted)) => {
            counts.failures += 1;
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"{verdict:?}:{}\">{}</failure>",
                esc(s.failure.as_deref().unwrap_or(&message)),
                esc(reason),
                esc(&detail)
            );
        }
        Some(Verdict::Inconclusive) => {
            counts.skipped += 1;
            let _ = writeln!(
                out,
                "      <skipped message=\"{}\"/>",
                esc(&format!("Inconclusive ({reason}): {message}"))
            );
        }
        Some(Verdict::Error) => {
            counts.errors += 1;
            let _ = writeln!(
                out,
                "      <error message=\"{}\" type=\"Error:{}\">{}</error>",
                esc(&message),
                esc(reason),
                esc(&detail)
            );
        }
        None => {
            counts.errors += 1;
            let _ = writeln!(
                out,
                "      <error message=\"did not finish: still in phase {:?} when the report was written\" type=\"Unfinished\">{}</error>",
                s.phase,
                esc(&detail)
            );
        }
    }
    let _ = writeln!(out, "      <system-out>{}</system-out>", esc(&detail));
    out.push_str("    </testcase>\n");
}

fn probe_case(
    out: &mut String,
    counts: &mut Counts,
    s: &ExperimentSummary,
    probe: &ProbeSummary,
    experiment: &ChaosExperiment,
) {
    counts.tests += 1;
    let samples = experiment
        .status
        .as_ref()
        .and_then(|st| st.probes.iter().find(|p| p.name == probe.name))
        .map(|p| p.samples.as_slice())
        .unwrap_or_default();
    let span = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => seconds(a.time, b.time),
        _ => 0.0,
    };
    let _ = writeln!(
        out,
        "    <testcase classname=\"faultline.{}.{}\" name=\"probe {}\" time=\"{span:.3}\">",
        esc(&s.namespace),
        esc(&s.name),
        esc(&probe.name)
    );
    let mut detail = format!(
        "{} probe {} ({}): {} passes, {} failures; last value {}",
        probe.kind,
        probe.name,
        probe.check,
        probe.passes,
        probe.failures,
        or_dash(probe.last_value.as_deref())
    );
    for sample in samples {
        let _ = write!(
            detail,
            "\n{} {} {}",
            time(sample.time),
            if sample.ok { "pass" } else { "FAIL" },
            or_dash(sample.value.as_deref())
        );
    }
    if probe.violated {
        counts.failures += 1;
        let at = probe.first_violation_at.map_or_else(String::new, |at| {
            s.started_at.map_or_else(
                || format!(" at {}", time(at)),
                |o| format!(" at {}", offset(o, at)),
            )
        });
        let error = probe
            .last_error
            .as_deref()
            .or(s.message.as_deref())
            .unwrap_or("the failure threshold was exceeded");
        let message = format!(
            "probe {} failed with value {}{at}: {error}",
            probe.name,
            or_dash(
                probe
                    .violation_value
                    .as_deref()
                    .or(probe.last_value.as_deref())
            )
        );
        let _ = writeln!(
            out,
            "      <failure message=\"{}\" type=\"ProbeFailed\">{}</failure>",
            esc(&message),
            esc(&detail)
        );
    } else if probe.passes + probe.failures == 0 {
        counts.skipped += 1;
        out.push_str("      <skipped message=\"the probe was never checked\"/>\n");
    }
    let _ = writeln!(out, "      <system-out>{}</system-out>", esc(&detail));
    out.push_str("    </testcase>\n");
}

/// The experiment's verdict and timeline as plain text, for `<system-out>` and failure bodies.
fn story(experiment: &ChaosExperiment, s: &ExperimentSummary) -> String {
    let mut text = format!(
        "{}/{}: phase {:?}, verdict {}, reason {}\n{}",
        s.namespace,
        s.name,
        s.phase,
        s.verdict
            .map_or_else(|| "none".into(), |v| format!("{v:?}")),
        or_dash(s.reason.as_deref()),
        or_dash(s.message.as_deref())
    );
    if let Some(latency) = &s.abort_latency {
        let _ = write!(text, "\nabort latency {latency}");
    }
    if let Some(recovery) = &s.recovery_time {
        let _ = write!(text, "\nrecovery time {recovery}");
    }
    for entry in experiment.status.iter().flat_map(|st| &st.timeline) {
        let _ = write!(
            text,
            "\n{} {}: {}",
            time(entry.time),
            entry.reason,
            entry.message
        );
    }
    text
}
