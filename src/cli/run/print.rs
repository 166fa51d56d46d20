//! What `faultline run` prints while it follows a run and when it ends.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};

use kube::ResourceExt;

use crate::api::{ChaosExperiment, GameDay, GoDuration, Phase, Verdict};
use crate::cli::stdout::{self, out, outln};

/// What has been printed about one experiment.
pub(super) struct Seen {
    pub namespace: String,
    pub name: String,
    pub latest: Option<ChaosExperiment>,
    pub phase: Option<Phase>,
    pub events: HashSet<(DateTime<Utc>, String, String)>,
    pub last_sample: HashMap<String, DateTime<Utc>>,
    pub targets_printed: bool,
}

impl Seen {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn done(&self) -> bool {
        self.phase.is_some_and(|p| p.is_terminal())
    }
}

/// Writes lines, and keeps the progress bar under them on a terminal.
pub(super) struct Printer {
    pub tty: bool,
    pub bar: String,
}

impl Printer {
    /// A line about something happening now.
    pub fn line(&mut self, text: &str) {
        self.line_at(Utc::now(), text);
    }

    /// A line stamped with when it happened (a probe's check, a timeline entry), which may be
    /// a moment before it is printed. Milliseconds when stdout is not a terminal (CI logs).
    pub fn line_at(&mut self, at: DateTime<Utc>, text: &str) {
        if self.tty {
            out!("\r\x1b[2K{} {text}\n{}", at.format("%H:%M:%S"), self.bar);
        } else {
            outln!("{} {text}", at.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        }
        stdout::flush();
    }

    pub fn bar(&mut self, bar: String) {
        if !self.tty {
            return;
        }
        self.bar = bar;
        out!("\r\x1b[2K{}", self.bar);
        stdout::flush();
    }

    pub fn clear(&mut self) {
        if self.tty && !self.bar.is_empty() {
            self.bar.clear();
            out!("\r\x1b[2K");
            stdout::flush();
        }
    }
}

/// Whole seconds, as a Go duration.
pub(super) fn short(duration: Duration) -> String {
    GoDuration::from_duration(Duration::from_secs(duration.as_secs())).0
}

/// What is new in `experiment` since `seen`, as lines stamped with when each thing happened
/// (`now` for what has no time of its own: a phase change, the targets), oldest first;
/// updates `seen`.
pub(super) fn news(
    seen: &mut Seen,
    experiment: &ChaosExperiment,
    now: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, String)> {
    let key = seen.key();
    let mut lines = Vec::new();
    let Some(status) = &experiment.status else {
        return lines;
    };
    if seen.phase != Some(status.phase) {
        lines.push((
            now,
            match seen.phase {
                Some(from) => format!("{key} phase {from:?} -> {:?}", status.phase),
                None => format!("{key} phase {:?}", status.phase),
            },
        ));
        seen.phase = Some(status.phase);
    }
    for entry in &status.timeline {
        let id = (entry.time, entry.reason.clone(), entry.message.clone());
        if seen.events.insert(id) {
            lines.push((
                entry.time,
                format!("{key} {}: {}", entry.reason, entry.message),
            ));
        }
    }
    if !seen.targets_printed && !status.targets.is_empty() {
        seen.targets_printed = true;
        let mut names: Vec<String> = status
            .targets
            .iter()
            .take(10)
            .map(|t| {
                let node = t.node_name.as_deref().unwrap_or("no node");
                format!("{}/{} ({node}, {})", t.namespace, t.name, t.fault)
            })
            .collect();
        if status.targets.len() > 10 {
            names.push(format!("and {} more", status.targets.len() - 10));
        }
        lines.push((
            now,
            format!(
                "{key} targets ({}): {}",
                status.target_count,
                names.join(", ")
            ),
        ));
    }
    for probe in &status.probes {
        let last = seen.last_sample.get(&probe.name).copied();
        let fresh: Vec<_> = probe
            .samples
            .iter()
            .filter(|s| last.is_none_or(|l| s.time > l))
            .collect();
        for (i, sample) in fresh.iter().enumerate() {
            let value = sample.value.as_deref().unwrap_or("-");
            let mut line = format!(
                "{key} probe {} {} {value}",
                probe.name,
                if sample.ok { "pass" } else { "FAIL" }
            );
            if !sample.ok
                && i + 1 == fresh.len()
                && let Some(error) = &probe.last_error
            {
                line.push_str(&format!(" ({error})"));
            }
            lines.push((sample.time, line));
        }
        if let Some(newest) = fresh.last() {
            seen.last_sample.insert(probe.name.clone(), newest.time);
        }
    }
    // In the order things happened (a stable sort: lines of one time keep their order); the
    // verdict comes last.
    lines.sort_by_key(|(at, _)| *at);
    if status.phase.is_terminal()
        && seen
            .latest
            .as_ref()
            .is_none_or(|l| !l.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
    {
        lines.push((
            status.finished_at.unwrap_or(now),
            format!(
                "{key} finished: {} ({}): {}",
                status
                    .verdict
                    .map_or_else(|| "no verdict".into(), |v| format!("{v:?}")),
                status.reason.as_deref().unwrap_or("-"),
                status.message.as_deref().unwrap_or("")
            ),
        ));
    }
    lines
}

/// The closing lines: each experiment's verdict, numbers, and for a dry run the plan.
pub(super) fn print_results(experiments: &[ChaosExperiment], gamedays: &[GameDay], dry_run: bool) {
    // A game day's verdict is the day's (its exit code counts with its experiments'): said
    // first, or a day Aborted at its second stage reads as the first stage's Passed.
    for gameday in gamedays {
        let status = gameday.status.clone().unwrap_or_default();
        let verdict = status.verdict.map_or_else(
            || {
                format!(
                    "no verdict ({})",
                    status.phase.as_deref().unwrap_or("not started")
                )
            },
            |v| format!("{v:?}"),
        );
        outln!(
            "gameday {}/{}: {verdict}: {}",
            gameday.namespace().unwrap_or_default(),
            gameday.name_any(),
            status.message.as_deref().unwrap_or("")
        );
        if !matches!(status.verdict, Some(Verdict::Passed)) {
            outln!(
                "  the full story: faultline report fgd/{} -n {} -o html --output day.html",
                gameday.name_any(),
                gameday.namespace().unwrap_or_default()
            );
        }
    }
    for experiment in experiments {
        let s = crate::report::summarize(experiment);
        let verdict = s.verdict.map_or_else(
            || format!("no verdict ({:?})", s.phase),
            |v| format!("{v:?}"),
        );
        outln!(
            "{}/{}: {verdict} ({}) {}",
            s.namespace,
            s.name,
            s.reason.as_deref().unwrap_or("-"),
            s.message.as_deref().unwrap_or("")
        );
        if let Some(failure) = &s.failure {
            outln!("  {failure}");
        }
        for (label, value) in [
            ("elapsed", &s.elapsed),
            ("abort latency", &s.abort_latency),
            ("recovery time", &s.recovery_time),
        ] {
            if let Some(value) = value {
                outln!("  {label}: {value}");
            }
        }
        if dry_run || s.dry_run {
            let status = experiment.status.clone().unwrap_or_default();
            outln!("  targets ({}):", status.target_count);
            for t in &status.targets {
                outln!(
                    "    {}/{} node {} ip {} fault {}",
                    t.namespace,
                    t.name,
                    t.node_name.as_deref().unwrap_or("-"),
                    t.pod_ip.as_deref().unwrap_or("-"),
                    t.fault
                );
            }
            for entry in status.timeline.iter().filter(|e| e.reason == "WouldInject") {
                outln!("  would inject: {}", entry.message);
            }
            for p in &s.probes {
                outln!(
                    "  preflight probe {}: {} passes, {} failures, last value {}",
                    p.name,
                    p.passes,
                    p.failures,
                    p.last_value.as_deref().unwrap_or("-")
                );
            }
        }
        if !matches!(s.verdict, Some(Verdict::Passed | Verdict::DryRun)) {
            outln!(
                "  the full story: faultline report {} -n {} -o html --output report.html",
                s.name,
                s.namespace
            );
        }
    }
}
