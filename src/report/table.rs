//! The `faultline status` tables: experiments (unfinished first), game days and schedules.

use chrono::{DateTime, Utc};
use kube::ResourceExt;

use crate::api::{ChaosExperiment, ChaosSchedule, GameDay, Phase};

const HEADERS: [&str; 10] = [
    "NAME",
    "NAMESPACE",
    "PHASE",
    "VERDICT",
    "HYPOTHESIS",
    "CHECKS",
    "LAST CHECK",
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
    aligned(&HEADERS, sorted.iter().map(|e| row(e, now).to_vec()))
}

/// Game days: where each is, unfinished first.
pub fn gameday_table(gamedays: &[GameDay], now: DateTime<Utc>) -> String {
    let mut sorted: Vec<&GameDay> = gamedays.iter().collect();
    sorted.sort_by_key(|g| {
        (
            g.status.as_ref().is_some_and(|s| s.verdict.is_some()),
            g.namespace(),
            g.name_any(),
        )
    });
    let rows = sorted.iter().map(|g| {
        let status = g.status.clone().unwrap_or_default();
        let done = status
            .stages
            .iter()
            .filter(|s| matches!(s.phase.as_str(), "Succeeded" | "Failed" | "Skipped"))
            .count();
        let stage = match (&status.current_stage, status.next_start_time) {
            (Some(stage), _) => {
                let phase = status
                    .stages
                    .iter()
                    .find(|s| &s.name == stage)
                    .map_or("", |s| s.phase.as_str());
                format!("{stage} ({phase})")
            }
            (None, Some(next)) => format!("starts in {}", human(next - now)),
            (None, None) => "-".into(),
        };
        vec![
            g.name_any(),
            g.namespace().unwrap_or_default(),
            status.phase.unwrap_or_else(|| "Pending".into()),
            stage,
            format!("{done}/{}", g.spec.stages.len()),
            status
                .verdict
                .map_or_else(|| "-".into(), |v| format!("{v:?}")),
        ]
    });
    aligned(
        &[
            "GAMEDAY",
            "NAMESPACE",
            "PHASE",
            "STAGE",
            "STAGES DONE",
            "VERDICT",
        ],
        rows,
    )
}

/// Schedules: when each runs next and how its runs went.
pub fn schedule_table(schedules: &[ChaosSchedule], now: DateTime<Utc>) -> String {
    let rows = schedules.iter().map(|s| {
        let status = s.status.clone().unwrap_or_default();
        let state = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Active")
            .map_or_else(|| "-".into(), |c| c.reason.clone());
        vec![
            s.name_any(),
            s.namespace().unwrap_or_default(),
            s.spec.schedule.clone(),
            state,
            status
                .next_schedule_time
                .map_or_else(|| "-".into(), |t| format!("in {}", human(t - now))),
            status
                .last_verdict
                .map_or_else(|| "-".into(), |v| format!("{v:?}")),
            status.consecutive_failures.to_string(),
            status.missed_runs.to_string(),
            status.active.len().to_string(),
        ]
    });
    aligned(
        &[
            "SCHEDULE",
            "NAMESPACE",
            "CRON",
            "STATE",
            "NEXT",
            "LAST VERDICT",
            "FAILURES IN A ROW",
            "MISSED",
            "ACTIVE",
        ],
        rows,
    )
}

fn aligned(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn row(experiment: &ChaosExperiment, now: DateTime<Utc>) -> [String; 10] {
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
        status
            .hypothesis
            .map_or_else(|| "-".into(), |h| format!("{h:?}")),
        status.checks.clone().unwrap_or_else(|| "-".into()),
        status
            .last_checked_at
            .map_or_else(|| "-".into(), |t| format!("{} ago", human(now - t))),
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
    fn game_days_and_schedules_show_where_they_are() {
        let now = Utc::now();
        let day: GameDay = serde_json::from_value(serde_json::json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
            "metadata": {"name": "drill", "namespace": "shop"},
            "spec": {"stages": [
                {"name": "kill", "experiments": [{"name": "x", "spec": {"duration": "1m", "faults": [{"podKill": {}}]}}]},
                {"name": "split", "experiments": [{"name": "y", "spec": {"duration": "1m", "faults": [{"podKill": {}}]}}]},
            ]},
            "status": {"phase": "Running", "currentStage": "split", "stages": [
                {"name": "kill", "phase": "Succeeded"}, {"name": "split", "phase": "WaitingForApproval"}]},
        }))
        .unwrap();
        let table = gameday_table(&[day], now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1]
                .split("   ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>(),
            [
                "drill",
                "shop",
                "Running",
                "split (WaitingForApproval)",
                "1/2",
                "-"
            ]
        );

        let schedule: ChaosSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule",
            "metadata": {"name": "weekly", "namespace": "shop"},
            "spec": {"schedule": "0 10 * * TUE",
                     "experimentTemplate": {"spec": {"duration": "1m", "faults": [{"podKill": {}}]}}},
            "status": {"nextScheduleTime": (now + chrono::Duration::hours(5)).to_rfc3339(),
                       "lastVerdict": "Failed", "consecutiveFailures": 1, "missedRuns": 2,
                       "conditions": [{"type": "Active", "status": "True", "reason": "Scheduled"}]},
        }))
        .unwrap();
        let table = schedule_table(&[schedule], now);
        assert!(table.starts_with("SCHEDULE"), "{table}");
        let row: Vec<&str> = table
            .lines()
            .nth(1)
            .unwrap()
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(row[..4], ["weekly", "shop", "0 10 * * TUE", "Scheduled"]);
        assert!(row[4] == "in 4h59m" || row[4] == "in 5h0m", "{row:?}");
        assert_eq!(row[5..], ["Failed", "1", "2", "0"]);
    }

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
