//! The `faultline status` table: one row per experiment, unfinished ones first.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use crate::api::{ChaosExperiment, Phase};

const HEADERS: [&str; 7] = [
    "NAME",
    "NAMESPACE",
    "PHASE",
    "VERDICT",
    "TARGETS",
    "AGE",
    "ELAPSED/REMAINING",
];

/// The table, aligned in columns, with a header line; `now` is the clock the ages are read on.
pub fn status_table(experiments: &[ChaosExperiment], now: DateTime<Utc>) -> String {
    let mut sorted: Vec<&ChaosExperiment> = experiments.iter().collect();
    // Unfinished first (they are what an operator looks for), then newest first.
    sorted.sort_by(|a, b| {
        let finished =
            |e: &ChaosExperiment| e.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        finished(a)
            .cmp(&finished(b))
            .then_with(|| created(b).cmp(&created(a)))
            .then_with(|| (a.namespace(), a.name_any()).cmp(&(b.namespace(), b.name_any())))
    });
    let rows: Vec<[String; 7]> = sorted.iter().map(|e| row(e, now)).collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(String::from);
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn row(experiment: &ChaosExperiment, now: DateTime<Utc>) -> [String; 7] {
    let status = experiment.status.clone().unwrap_or_default();
    let age = created(experiment).map_or_else(|| "-".into(), |t| human(now - t));
    let verdict = status
        .verdict
        .map_or_else(|| "-".into(), |v| format!("{v:?}"));
    [
        experiment.name_any(),
        experiment.namespace().unwrap_or_default(),
        format!("{:?}", status.phase),
        verdict,
        status.target_count.to_string(),
        age,
        progress(experiment, now),
    ]
}

/// `metadata.creationTimestamp` as a chrono time (k8s-openapi keeps it as a jiff timestamp).
fn created(experiment: &ChaosExperiment) -> Option<DateTime<Utc>> {
    let at = experiment.creation_timestamp()?;
    DateTime::from_timestamp_millis(at.0.as_millisecond())
}

/// How long it ran (finished), or how long it has run and how much of the fault window is left.
fn progress(experiment: &ChaosExperiment, now: DateTime<Utc>) -> String {
    let Some(status) = &experiment.status else {
        return "-".into();
    };
    let Some(started) = status.started_at else {
        return "-".into();
    };
    if status.phase.is_terminal() {
        return status
            .finished_at
            .map_or_else(|| "-".into(), |end| human(end - started));
    }
    let elapsed = human(now - started);
    match (
        status.phase,
        status.injected_at,
        experiment.spec.duration.parse(),
    ) {
        (Phase::Injecting | Phase::Running, Some(injected), Ok(duration)) => {
            let end = injected + chrono::Duration::from_std(duration).unwrap_or_default();
            format!("{elapsed} / {} left", human(end - now))
        }
        _ => elapsed,
    }
}

/// `45s`, `3m20s`, `12m`, `5h12m`, `3d4h`: kubectl's style of age.
pub fn human(span: chrono::Duration) -> String {
    let secs = span.num_seconds().max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match secs {
        0..60 => format!("{s}s"),
        60..600 => format!("{m}m{s}s"),
        600..3600 => format!("{m}m"),
        3600..86_400 => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let d = chrono::Duration::seconds;
        assert_eq!(human(d(45)), "45s");
        assert_eq!(human(d(200)), "3m20s");
        assert_eq!(human(d(720)), "12m");
        assert_eq!(human(d(5 * 3600 + 720)), "5h12m");
        assert_eq!(human(d(3 * 86_400 + 4 * 3600)), "3d4h");
        assert_eq!(human(d(-5)), "0s");
    }
}
