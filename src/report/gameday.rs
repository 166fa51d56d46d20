//! The game day part of a run's report: the day's verdict and message, then one row per stage
//! (phase, verdict, its experiments, why it ended as it did). The experiments themselves follow
//! in the report as usual.

use std::fmt::Write;

use super::text::{escape_cell, escape_markdown_line, escape_xml as esc, or_dash};
use crate::api::{GameDay, Verdict};
use kube::ResourceExt;

fn verdict_text(verdict: Option<Verdict>) -> String {
    verdict.map_or_else(|| "-".into(), |v| format!("{v:?}"))
}

/// A Markdown section per game day.
pub fn markdown(days: &[GameDay]) -> String {
    let mut out = String::new();
    for day in days {
        let status = day.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "## Game day {}/{}: **{}**\n",
            day.namespace().unwrap_or_default(),
            day.name_any(),
            status
                .verdict
                .map_or_else(|| "no verdict yet".into(), |v| format!("{v:?}"))
        );
        if let Some(message) = &status.message {
            let _ = writeln!(out, "> {}\n", escape_markdown_line(message));
        }
        let _ = writeln!(
            out,
            "| Stage | Phase | Verdict | Experiments | Why |\n| --- | --- | --- | --- | --- |"
        );
        for stage in &status.stages {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                escape_cell(&stage.name),
                escape_cell(&stage.phase),
                verdict_text(stage.verdict),
                escape_cell(&stage.experiments.join(", ")),
                escape_cell(or_dash(stage.message.as_deref()))
            );
        }
        out.push('\n');
    }
    out
}

/// An HTML section per game day; `badge` draws a verdict the way the rest of the page does.
pub fn html(days: &[GameDay], badge: impl Fn(Option<Verdict>) -> String) -> String {
    let mut out = String::new();
    for day in days {
        let status = day.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "<section class=\"gameday\"><h1>Game day {}/{} {}</h1>",
            esc(&day.namespace().unwrap_or_default()),
            esc(&day.name_any()),
            badge(status.verdict)
        );
        if let Some(message) = &status.message {
            let bad = !matches!(status.verdict, Some(Verdict::Passed | Verdict::DryRun));
            let _ = writeln!(
                out,
                "<p class=\"message{}\">{}</p>",
                if bad { " bad" } else { "" },
                esc(message)
            );
        }
        out.push_str("<table class=\"stages\"><thead><tr><th>Stage</th><th>Phase</th><th>Verdict</th><th>Experiments</th><th>Why</th></tr></thead><tbody>\n");
        for stage in &status.stages {
            let bad = stage.phase == "Failed";
            let experiments: Vec<String> = stage
                .experiments
                .iter()
                .map(|e| {
                    let anchor = esc(&format!("{}-{e}", day.namespace().unwrap_or_default()));
                    format!("<a href=\"#{anchor}\">{}</a>", esc(e))
                })
                .collect();
            let _ = writeln!(
                out,
                "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if bad { " class=\"bad\"" } else { "" },
                esc(&stage.name),
                esc(&stage.phase),
                esc(&verdict_text(stage.verdict)),
                experiments.join(", "),
                esc(or_dash(stage.message.as_deref()))
            );
        }
        out.push_str("</tbody></table></section>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> GameDay {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
            "metadata": {"name": "drill", "namespace": "shop"},
            "spec": {"stages": [
                {"name": "kill", "experiments": [{"name": "x", "spec": {"duration": "1m", "faults": [{"podKill": {}}]}}]},
                {"name": "split", "experiments": [{"name": "y", "spec": {"duration": "1m", "faults": [{"podKill": {}}]}}]},
            ]},
            "status": {"phase": "Aborted", "verdict": "Aborted",
                       "message": "1 of 2 stages passed; stage split failed: drill-split-y Aborted: probe up <failed>",
                       "stages": [
                {"name": "kill", "phase": "Succeeded", "verdict": "Passed", "experiments": ["drill-kill-x"]},
                {"name": "split", "phase": "Failed", "verdict": "Aborted", "experiments": ["drill-split-y"],
                 "message": "drill-split-y Aborted: probe up <failed>"}]},
        }))
        .unwrap()
    }

    #[test]
    fn each_stage_is_a_row_with_why_it_ended() {
        let md = markdown(&[day()]);
        assert!(
            md.starts_with("## Game day shop/drill: **Aborted**\n"),
            "{md}"
        );
        assert!(
            md.contains("| kill | Succeeded | Passed | drill-kill-x | - |"),
            "{md}"
        );
        assert!(
            // `<failed>` would be an (invisible) HTML tag to a Markdown viewer: it is escaped.
            md.contains("| split | Failed | Aborted | drill-split-y | drill-split-y Aborted: probe up &lt;failed&gt; |"),
            "{md}"
        );

        let html = html(&[day()], |v| format!("[{v:?}]"));
        assert!(
            html.contains("<h1>Game day shop/drill [Some(Aborted)]</h1>"),
            "{html}"
        );
        assert!(html.contains("<p class=\"message bad\">"), "{html}");
        assert!(html.contains("<tr class=\"bad\"><td>split</td>"), "{html}");
        assert!(
            html.contains("<a href=\"#shop-drill-split-y\">drill-split-y</a>"),
            "{html}"
        );
        assert!(html.contains("probe up &lt;failed&gt;"), "{html}");
    }
}
