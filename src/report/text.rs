//! Small formatting helpers every renderer shares: escaping, times, durations.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::api::{GoDuration, ProbePhase};

/// Escapes text for HTML and XML content and attribute values (both quote styles).
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 forbids most control characters even as references; a probe's error text
            // may carry them (a binary body), so they become spaces.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a Markdown table cell: pipes would end the cell, newlines the row; the rest as
/// [`escape_markdown`].
pub fn escape_cell(text: &str) -> String {
    escape_markdown(&text.replace("\r\n", " ").replace(['\n', '\r'], " ")).replace('|', "\\|")
}

/// Escapes Markdown text that may come from a probed server or a status anyone could write:
/// raw HTML (`<img src=x onerror=...>`) would be rendered by a viewer that allows it, so `<`,
/// `>` and `&` become entities (a viewer shows the characters; a terminal shows the entity,
/// never a tag); control characters, which would drive a terminal showing the file, become
/// visible escapes (`\u{1b}`).
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in crate::probes::redact::printable(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of Markdown text (a quoted message): its line breaks become spaces, the rest as
/// [`escape_markdown`].
pub fn escape_markdown_line(text: &str) -> String {
    escape_markdown(&text.replace("\r\n", " ").replace(['\n', '\r'], " "))
}

/// `2025-05-01T12:00:03.120Z`: UTC, milliseconds, the same in every format.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `12:00:03.120`: the time of day, for tables where the date is in the summary.
pub fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S%.3f").to_string()
}

/// The span between two times as a Go duration (`1.5s`, `2m0s`); negative spans are zero.
pub fn span(from: DateTime<Utc>, to: DateTime<Utc>) -> String {
    GoDuration::from_duration(positive(from, to)).0
}

/// `+12.3s` relative to `origin` (one decimal), for offsets in tables and the timeline.
pub fn offset(origin: DateTime<Utc>, at: DateTime<Utc>) -> String {
    let millis = (at - origin).num_milliseconds();
    let sign = if millis < 0 { "-" } else { "+" };
    let millis = millis.unsigned_abs();
    if millis >= 60_000 {
        format!("{sign}{}m{:02}s", millis / 60_000, (millis % 60_000) / 1000)
    } else {
        format!("{sign}{}.{}s", millis / 1000, (millis % 1000) / 100)
    }
}

/// Seconds between two times, never negative, for JUnit `time` attributes.
pub fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    positive(from, to).as_secs_f64()
}

fn positive(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// A gap in the probe checks, in words: `+4.1s to +20.3s (16.2s without checks): the
/// controller changed (failover or restart)`.
pub fn gap_text(gap: &crate::api::ProbeGap, origin: Option<DateTime<Utc>>) -> String {
    let at = |t: DateTime<Utc>| origin.map_or_else(|| time(t), |o| offset(o, t));
    let why = match gap.reason.as_str() {
        "ControllerChanged" => "the controller that ran the probes stopped (failover or restart)",
        other => other,
    };
    match gap.to {
        Some(to) => format!(
            "{} to {} ({} without checks): {why}",
            at(gap.from),
            at(to),
            span(gap.from, to)
        ),
        None => format!("since {}: {why}; no check since", at(gap.from)),
    }
}

/// ` (12 faults went in over all rounds)` when a repeating pod kill put in more faults than
/// the records of its last round show; empty otherwise.
pub fn rounds_text(s: &super::ExperimentSummary) -> String {
    let recorded = i32::try_from(s.targets_injected).unwrap_or(i32::MAX);
    if s.faults_injected > recorded {
        format!(" ({} faults went in over all rounds)", s.faults_injected)
    } else {
        String::new()
    }
}

/// `-` for a missing value, so table cells are never empty.
pub fn or_dash(value: Option<&str>) -> &str {
    match value {
        Some(v) if !v.is_empty() => v,
        _ => "-",
    }
}

/// `before, during, after`.
pub fn phases_text(phases: &[ProbePhase]) -> String {
    if phases.is_empty() {
        return "-".into();
    }
    phases
        .iter()
        .map(|p| format!("{p:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `, 1 left mid-run` when targets left while their fault ran (pod gone, consent withdrawn);
/// empty otherwise.
pub fn left_text(s: &super::ExperimentSummary) -> String {
    if s.targets_left == 0 {
        String::new()
    } else {
        format!(", {} left mid-run", s.targets_left)
    }
}

/// A probe's first violation as both reports show it: when (from the experiment's start) and
/// the value then; `-` when it never failed.
pub fn first_violation(s: &super::ExperimentSummary, p: &super::ProbeSummary) -> String {
    match p.first_violation_at {
        Some(at) => format!(
            "{} (value {})",
            s.started_at.map_or_else(|| time(at), |o| offset(o, at)),
            or_dash(p.violation_value.as_deref())
        ),
        None => "-".into(),
    }
}

/// The summary's rows, in the order both reports show them; `verdict` as the format writes it.
pub fn summary_rows(s: &super::ExperimentSummary, verdict: String) -> Vec<(&'static str, String)> {
    let when = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".into(), time);
    let mut rows: Vec<(&str, String)> = vec![
        ("Verdict", verdict),
        ("Reason", or_dash(s.reason.as_deref()).into()),
        ("Phase", format!("{:?}", s.phase)),
        ("Duration", s.duration.clone()),
        (
            "Targets",
            format!(
                "{} selected, {} injected, {} skipped, {} failed{}{}",
                s.target_count,
                s.targets_injected,
                s.targets_skipped,
                s.targets_failed,
                left_text(s),
                rounds_text(s)
            ),
        ),
        ("Started", when(s.started_at)),
        ("Faults injected", when(s.injected_at)),
        ("Faults reverted", when(s.reverted_at)),
        ("Finished", when(s.finished_at)),
        ("Elapsed", or_dash(s.elapsed.as_deref()).into()),
        ("Fault window", or_dash(s.fault_window.as_deref()).into()),
        ("Abort started", when(s.abort_started_at)),
        ("Abort reason", or_dash(s.abort_reason.as_deref()).into()),
        ("Abort latency", or_dash(s.abort_latency.as_deref()).into()),
        ("Recovery time", or_dash(s.recovery_time.as_deref()).into()),
    ];
    for gap in &s.probe_gaps {
        rows.push(("Gap in the probe checks", gap_text(gap, s.started_at)));
    }
    if s.dry_run {
        rows.insert(1, ("Dry run", "yes: nothing was injected".into()));
    }
    if let Some(failure) = &s.failure {
        rows.insert(1, ("Failure", failure.clone()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            escape_xml("a<b & \"c\" 'd'\u{1}"),
            "a&lt;b &amp; &quot;c&quot; &#39;d&#39; "
        );
        assert_eq!(escape_cell("a|b\nc"), "a\\|b c");
        assert_eq!(
            escape_cell("<img src=x onerror=alert(1)> & \u{1b}[2J|"),
            "&lt;img src=x onerror=alert(1)&gt; &amp; \\u{1b}[2J\\|"
        );
        assert_eq!(escape_markdown_line("a\nb\u{7}"), "a b\\u{7}");
    }

    #[test]
    fn offsets_read_as_seconds_then_minutes() {
        let t0 = Utc.with_ymd_and_hms(2025, 5, 1, 12, 0, 0).unwrap();
        assert_eq!(
            offset(t0, t0 + chrono::Duration::milliseconds(1250)),
            "+1.2s"
        );
        assert_eq!(offset(t0, t0 + chrono::Duration::seconds(75)), "+1m15s");
        assert_eq!(offset(t0, t0 - chrono::Duration::seconds(2)), "-2.0s");
        assert_eq!(span(t0, t0 + chrono::Duration::seconds(90)), "1m30s");
        assert_eq!(span(t0, t0 - chrono::Duration::seconds(90)), "0s");
        assert_eq!(time(t0), "2025-05-01T12:00:00.000Z");
    }
}
