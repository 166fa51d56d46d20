//! The Markdown report: the HTML report's content as text tables (for a PR comment, a CI job
//! summary, a terminal).

use std::fmt::Write;

use super::{
    ExperimentSummary, summarize,
    text::{
        clock, escape_cell, escape_markdown_line, first_violation, offset, or_dash, phases_text,
    },
};
use crate::api::{ChaosExperiment, ChaosExperimentStatus, GameDay};

/// The report of one experiment.
pub fn render(experiment: &ChaosExperiment) -> String {
    let mut out = String::new();
    write_experiment(&mut out, experiment, "#");
    out
}

/// The report of several experiments (one run, a schedule's runs, a game day's stages) under
/// the heading `title`: an overview table, then each experiment; game days and their stages
/// come first.
pub fn render_run(title: &str, experiments: &[ChaosExperiment], gamedays: &[GameDay]) -> String {
    if let ([one], []) = (experiments, gamedays) {
        return render(one);
    }
    let mut out = format!("# {}\n\n", escape_markdown_line(title.trim()));
    out.push_str(&super::gameday::markdown(gamedays));
    let _ = writeln!(
        out,
        "| Experiment | Verdict | Reason |\n| --- | --- | --- |"
    );
    for experiment in experiments {
        let s = summarize(experiment);
        let _ = writeln!(
            out,
            "| {}/{} | {} | {} |",
            cell(&s.namespace),
            cell(&s.name),
            verdict_text(&s),
            cell(or_dash(s.reason.as_deref()))
        );
    }
    out.push('\n');
    for experiment in experiments {
        write_experiment(&mut out, experiment, "##");
    }
    out
}

/// Every cell may hold text a probed server or a status writer chose: see [`escape_cell`].
fn cell(text: &str) -> String {
    escape_cell(text)
}

/// `**Passed**`, or the phase while there is no verdict yet.
fn verdict_text(s: &ExperimentSummary) -> String {
    match s.verdict {
        Some(v) => format!("**{v:?}**"),
        None => format!("{:?} (no verdict yet)", s.phase),
    }
}

fn write_experiment(out: &mut String, experiment: &ChaosExperiment, h: &str) {
    let s = summarize(experiment);
    let _ = writeln!(
        out,
        "{h} {}/{}: {}\n",
        s.namespace,
        s.name,
        verdict_text(&s)
    );
    if let Some(message) = &s.message {
        let _ = writeln!(out, "> {}\n", escape_markdown_line(message));
    }
    for partly in &s.partly_applied {
        let _ = writeln!(out, "> **Warning:** {}\n", escape_markdown_line(partly));
    }
    write_summary(out, &s);
    let status = experiment.status.clone().unwrap_or_default();
    let origin = s.started_at;
    write_probes(out, &s, h);
    write_targets(out, &status, h);
    let _ = writeln!(out, "{h}# Timeline\n");
    if status.timeline.is_empty() {
        out.push_str("No events recorded.\n\n");
    } else {
        out.push_str("| # | Time | Offset | Reason | Message |\n| --- | --- | --- | --- | --- |\n");
        for (i, entry) in status.timeline.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                i + 1,
                clock(entry.time),
                origin.map_or_else(|| "-".into(), |o| offset(o, entry.time)),
                cell(&entry.reason),
                cell(&entry.message)
            );
        }
        out.push('\n');
    }
}

fn write_summary(out: &mut String, s: &ExperimentSummary) {
    let rows = super::text::summary_rows(s, verdict_text(s));
    out.push_str("| | |\n| --- | --- |\n");
    for (key, value) in rows {
        let _ = writeln!(out, "| {key} | {} |", cell(&value));
    }
    out.push('\n');
}

fn write_probes(out: &mut String, s: &ExperimentSummary, h: &str) {
    let _ = writeln!(out, "{h}# Probes\n");
    if s.probes.is_empty() {
        out.push_str("No probes: the experiment had no steady-state hypothesis.\n\n");
        return;
    }
    out.push_str(
        "| Probe | Kind | Phases | Passes | Failures | Last value | Last error | First violation |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for p in &s.probes {
        let violation = first_violation(s, p);
        let name = if p.violated {
            format!("**{}** ✗", p.name)
        } else {
            p.name.clone()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&name),
            cell(&p.kind),
            phases_text(&p.phases),
            p.passes,
            p.failures,
            cell(or_dash(p.last_value.as_deref())),
            cell(or_dash(p.last_error.as_deref())),
            cell(&violation)
        );
    }
    out.push('\n');
}

fn write_targets(out: &mut String, status: &ChaosExperimentStatus, h: &str) {
    let _ = writeln!(out, "{h}# Targets\n");
    if status.targets.is_empty() {
        out.push_str("No targets recorded.\n\n");
        return;
    }
    out.push_str(
        "| Pod | Node | Fault | State | Injected | Reverted | Message |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for t in &status.targets {
        let _ = writeln!(
            out,
            "| {}/{} | {} | {} | {:?} | {} | {} | {} |",
            cell(&t.namespace),
            cell(&t.name),
            cell(or_dash(t.node_name.as_deref())),
            cell(&t.fault),
            t.state,
            t.injected_at.map_or_else(|| "-".into(), clock),
            t.reverted_at.map_or_else(|| "-".into(), clock),
            cell(&target_message(t))
        );
    }
    out.push('\n');
}

/// The record's message, and how much of its fault was in place when packets escaped it.
fn target_message(t: &crate::api::TargetRecord) -> String {
    match (t.message.as_deref(), t.partly_applied()) {
        (Some(m), Some(p)) => format!("{m}; {p}"),
        (None, Some(p)) => p,
        (m, None) => or_dash(m).to_string(),
    }
}
