//! The SVG timeline of the HTML report: x is time; a lane of phases and numbered events (the
//! numbers are the rows of the event table), then one lane per probe with a mark per check
//! (green pass, red fail). The fault window (injection to revert) is shaded across every lane,
//! an abort is a dashed vertical line with its label, and a gap in the probe checks (a
//! controller failover) is a grey band with a dashed border across the probe lanes, labelled
//! with how long no probe checked.
//!
//! Static SVG: no script, no external fonts or images; `<title>` children give tooltips.

use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};

use super::{
    ExperimentSummary,
    text::{escape_xml as esc, offset},
};
use crate::api::{ChaosExperimentStatus, ProbeSample};

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 160.0;
const RIGHT: f64 = 24.0;
const AXIS_Y: f64 = 40.0;
const PHASE_TOP: f64 = 46.0;
const PHASE_HEIGHT: f64 = 46.0;
const LANE_HEIGHT: f64 = 34.0;

/// The time axis: maps times into the plot's x range.
struct Axis {
    t0: DateTime<Utc>,
    span_ms: f64,
}

impl Axis {
    fn x(&self, at: DateTime<Utc>) -> f64 {
        let ms = (at - self.t0).num_milliseconds() as f64;
        LEFT + (ms / self.span_ms).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }
}

/// Every time the report knows, to fit the axis around.
fn known_times(s: &ExperimentSummary, status: &ChaosExperimentStatus) -> Vec<DateTime<Utc>> {
    let mut times: Vec<DateTime<Utc>> = [
        s.started_at,
        s.injected_at,
        s.reverted_at,
        s.finished_at,
        s.abort_started_at,
    ]
    .into_iter()
    .flatten()
    .collect();
    times.extend(status.timeline.iter().map(|e| e.time));
    times.extend(
        status
            .probes
            .iter()
            .flat_map(|p| p.samples.iter().map(|x| x.time)),
    );
    times.extend(
        status
            .probe_gaps
            .iter()
            .flat_map(|g| std::iter::once(g.from).chain(g.to)),
    );
    times
}

/// A round tick step that gives at most ten ticks.
fn tick_step(span_ms: f64) -> i64 {
    const STEPS_MS: [i64; 18] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 900_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000,
    ];
    STEPS_MS
        .into_iter()
        .find(|step| span_ms / *step as f64 <= 10.0)
        .unwrap_or(86_400_000)
}

/// Whether an event's reason reads as trouble (drawn red).
fn is_trouble(reason: &str) -> bool {
    [
        "Fail",
        "Abort",
        "NotMet",
        "NotRecovered",
        "Error",
        "Deleted",
        "Paused",
    ]
    .iter()
    .any(|word| reason.contains(word))
}

/// The timeline of one experiment as an `<svg>` element.
pub fn timeline(s: &ExperimentSummary, status: &ChaosExperimentStatus) -> String {
    let times = known_times(s, status);
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        return format!(
            "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} 40\" role=\"img\">\
             <title>No timeline yet</title><text x=\"12\" y=\"24\" class=\"muted\">No timeline yet: the experiment has not started.</text></svg>"
        );
    };
    // A little room on both sides so the first and last marks are not on the edge.
    let raw = (*last - *first).num_milliseconds().max(1000) as f64;
    let pad = Duration::milliseconds((raw * 0.03) as i64);
    let axis = Axis {
        t0: *first - pad,
        span_ms: raw + 2.0 * pad.num_milliseconds() as f64,
    };
    let origin = s.started_at.unwrap_or(*first);
    let lanes_top = PHASE_TOP + PHASE_HEIGHT + 6.0;
    let bottom = lanes_top + LANE_HEIGHT * s.probes.len() as f64;
    let height = bottom + 34.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" \
         width=\"100%\" role=\"img\" aria-labelledby=\"timeline-title-{id}\" font-family=\"sans-serif\" font-size=\"11\">\
         <title id=\"timeline-title-{id}\">Timeline of {name}: phases, events and probe checks</title>",
        id = esc(&s.name),
        name = esc(&format!("{}/{}", s.namespace, s.name)),
    );
    let end = s.finished_at.unwrap_or(*last);
    write_fault_window(&mut out, s, &axis, end, bottom, origin);
    write_axis(&mut out, &axis, origin, bottom);
    write_phases(&mut out, s, &axis, end);
    write_events(&mut out, status, &axis, origin);
    for (i, probe) in s.probes.iter().enumerate() {
        let top = lanes_top + LANE_HEIGHT * i as f64;
        let samples = status
            .probes
            .iter()
            .find(|p| p.name == probe.name)
            .map(|p| p.samples.as_slice())
            .unwrap_or_default();
        write_probe_lane(&mut out, &probe.name, samples, &axis, top, origin);
        if let Some(at) = probe.first_violation_at {
            let x = axis.x(at);
            let _ = writeln!(
                out,
                "<path class=\"violation\" d=\"M{:.1} {:.1} l-5 -7 h10 z\" fill=\"#b91c1c\"><title>{} first violated at {}</title></path>",
                x,
                top + 6.0,
                esc(&probe.name),
                offset(origin, at)
            );
        }
    }
    for gap in &status.probe_gaps {
        write_gap(&mut out, gap, &axis, lanes_top, bottom, end, origin);
    }
    if let Some(at) = s.abort_started_at {
        let x = axis.x(at);
        let latency = s
            .abort_latency
            .as_deref()
            .map_or_else(String::new, |l| format!(", reverted in {l}"));
        let (anchor, dx) = if x > WIDTH - 260.0 {
            ("end", -4.0)
        } else {
            ("start", 4.0)
        };
        let _ = writeln!(
            out,
            "<g class=\"abort\"><line x1=\"{x:.1}\" y1=\"16\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#dc2626\" stroke-width=\"2\" stroke-dasharray=\"6 3\"/>\
             <text x=\"{:.1}\" y=\"26\" fill=\"#b91c1c\" font-weight=\"bold\" text-anchor=\"{anchor}\">abort {}{}</text></g>",
            x + dx,
            offset(origin, at),
            esc(&latency)
        );
    }
    write_legend(&mut out, height - 12.0, !status.probe_gaps.is_empty());
    out.push_str("</svg>");
    out
}

fn write_fault_window(
    out: &mut String,
    s: &ExperimentSummary,
    axis: &Axis,
    end: DateTime<Utc>,
    bottom: f64,
    origin: DateTime<Utc>,
) {
    let Some(from) = s.injected_at else {
        return;
    };
    let to = s.faults_out_at.unwrap_or(end);
    let (x1, x2) = (axis.x(from), axis.x(to));
    let label = match s.faults_out_at {
        Some(r) => format!(
            "faults in {} → {} ({})",
            offset(origin, from),
            offset(origin, r),
            s.fault_window.as_deref().unwrap_or("")
        ),
        None => format!("faults in since {}", offset(origin, from)),
    };
    let _ = writeln!(
        out,
        "<g class=\"fault-window\"><rect x=\"{x1:.1}\" y=\"{AXIS_Y}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#f59e0b\" fill-opacity=\"0.18\" stroke=\"#d97706\" stroke-opacity=\"0.5\"/>\
         <text x=\"{x1:.1}\" y=\"12\" fill=\"#92400e\">{}</text></g>",
        (x2 - x1).max(1.0),
        bottom - AXIS_Y,
        esc(&label)
    );
}

fn write_axis(out: &mut String, axis: &Axis, origin: DateTime<Utc>, bottom: f64) {
    let step = tick_step(axis.span_ms);
    let t_end = axis.t0 + Duration::milliseconds(axis.span_ms as i64);
    // Ticks sit on whole steps from the experiment's start, on both sides of it.
    let before = (axis.t0 - origin).num_milliseconds().div_euclid(step);
    let mut k = before;
    loop {
        let at = origin + Duration::milliseconds(k * step);
        k += 1;
        if at < axis.t0 {
            continue;
        }
        if at > t_end {
            break;
        }
        let x = axis.x(at);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{AXIS_Y}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#e5e7eb\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#6b7280\">{}</text>",
            AXIS_Y - 3.0,
            offset(origin, at)
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{AXIS_Y}\" x2=\"{:.1}\" y2=\"{AXIS_Y}\" stroke=\"#9ca3af\"/>",
        WIDTH - RIGHT
    );
}

fn write_phases(out: &mut String, s: &ExperimentSummary, axis: &Axis, end: DateTime<Utc>) {
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-weight=\"bold\">phases</text>",
        LEFT - 8.0,
        PHASE_TOP + 13.0
    );
    let mut bands: Vec<(&str, &str, DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    if let Some(start) = s.started_at {
        bands.push(("verifying", "#93c5fd", start, s.injected_at.unwrap_or(end)));
    }
    if let Some(injected) = s.injected_at {
        let stop = s.abort_started_at.or(s.reverted_at).unwrap_or(end);
        bands.push(("faults in", "#fdba74", injected, stop));
        if let Some(abort) = s.abort_started_at {
            bands.push(("aborting", "#fca5a5", abort, s.reverted_at.unwrap_or(end)));
        } else if let Some(reverted) = s.reverted_at {
            bands.push(("recovering", "#86efac", reverted, end));
        }
    }
    for (label, colour, from, to) in bands {
        let (x1, x2) = (axis.x(from), axis.x(to));
        let width = (x2 - x1).max(2.0);
        let _ = write!(
            out,
            "<g class=\"phase\"><rect x=\"{x1:.1}\" y=\"{PHASE_TOP}\" width=\"{width:.1}\" height=\"18\" rx=\"3\" fill=\"{colour}\"><title>{label}</title></rect>"
        );
        // A label only where it fits.
        if width > label.len() as f64 * 6.5 + 6.0 {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1f2937\">{label}</text>",
                x1 + 4.0,
                PHASE_TOP + 13.0
            );
        }
        out.push_str("</g>\n");
    }
}

fn write_events(
    out: &mut String,
    status: &ChaosExperimentStatus,
    axis: &Axis,
    origin: DateTime<Utc>,
) {
    // Events closer than a marker's width share one marker ("3-5"), whose tooltip lists them
    // all; neighbouring markers alternate between two rows so that none hides another.
    let mut clusters: Vec<(f64, Vec<usize>)> = Vec::new();
    for (i, entry) in status.timeline.iter().enumerate() {
        let x = axis.x(entry.time);
        match clusters.last_mut() {
            Some((start, members)) if x - *start < 12.0 => members.push(i),
            _ => clusters.push((x, vec![i])),
        }
    }
    let mut row_end = [f64::MIN; 2];
    for (x, members) in clusters {
        let (first, last) = (members[0], members[members.len() - 1]);
        let label = if first == last {
            format!("{}", first + 1)
        } else {
            format!("{}-{}", first + 1, last + 1)
        };
        let half = if first == last {
            6.0
        } else {
            label.len() as f64 * 2.6 + 4.0
        };
        let row = usize::from(row_end[0] + 2.0 > x - half && row_end[1] < row_end[0]);
        row_end[row] = x + half;
        let y = PHASE_TOP + 28.0 + 12.0 * row as f64;
        let entries = &status.timeline[first..=last];
        let colour = if entries.iter().any(|e| is_trouble(&e.reason)) {
            "#dc2626"
        } else {
            "#4b5563"
        };
        let tip: Vec<String> = members
            .iter()
            .zip(entries)
            .map(|(i, e)| {
                format!(
                    "#{} {} {}: {}",
                    i + 1,
                    offset(origin, e.time),
                    e.reason,
                    e.message
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "<g class=\"event\"><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\" rx=\"6\" fill=\"{colour}\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"8\" fill=\"#fff\">{label}</text>\
             <title>{}</title></g>",
            x - half,
            y - 6.0,
            2.0 * half,
            y + 3.0,
            esc(&tip.join("\n"))
        );
    }
}

fn write_probe_lane(
    out: &mut String,
    name: &str,
    samples: &[ProbeSample],
    axis: &Axis,
    top: f64,
    origin: DateTime<Utc>,
) {
    let mid = top + LANE_HEIGHT / 2.0;
    let _ = writeln!(
        out,
        "<g class=\"probe-lane\"><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
         <line x1=\"{LEFT}\" y1=\"{mid:.1}\" x2=\"{:.1}\" y2=\"{mid:.1}\" stroke=\"#d1d5db\"/>",
        LEFT - 8.0,
        mid + 4.0,
        esc(name),
        WIDTH - RIGHT
    );
    for sample in samples {
        let x = axis.x(sample.time);
        let value = sample.value.as_deref().unwrap_or("no value");
        let tip = format!(
            "{name} {} at {}: {value}",
            if sample.ok { "pass" } else { "FAIL" },
            offset(origin, sample.time)
        );
        if sample.ok {
            let _ = writeln!(
                out,
                "<circle class=\"pass\" cx=\"{x:.1}\" cy=\"{mid:.1}\" r=\"4\" fill=\"#16a34a\"><title>{}</title></circle>",
                esc(&tip)
            );
        } else {
            let _ = writeln!(
                out,
                "<rect class=\"fail\" x=\"{:.1}\" y=\"{:.1}\" width=\"5\" height=\"16\" fill=\"#dc2626\"><title>{}</title></rect>",
                x - 2.5,
                mid - 8.0,
                esc(&tip)
            );
        }
    }
    out.push_str("</g>\n");
}

/// A gap in the probe checks: a grey band over the probe lanes, from the last check before it
/// to the first after it (or the end of the axis while it is open).
fn write_gap(
    out: &mut String,
    gap: &crate::api::ProbeGap,
    axis: &Axis,
    top: f64,
    bottom: f64,
    end: DateTime<Utc>,
    origin: DateTime<Utc>,
) {
    let to = gap.to.unwrap_or(end);
    let (x1, x2) = (axis.x(gap.from), axis.x(to));
    let width = (x2 - x1).max(2.0);
    let seconds = (to - gap.from).num_milliseconds() as f64 / 1000.0;
    let label = format!("no checks {seconds:.1}s");
    let tip = super::text::gap_text(gap, Some(origin));
    let _ = write!(
        out,
        "<g class=\"probe-gap\"><rect x=\"{x1:.1}\" y=\"{top:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"#9ca3af\" fill-opacity=\"0.3\" stroke=\"#4b5563\" stroke-dasharray=\"4 3\"/>",
        (bottom - top).max(LANE_HEIGHT)
    );
    if width > label.len() as f64 * 6.0 + 6.0 {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#374151\">{label}</text>",
            x1 + 4.0,
            top + 12.0
        );
    }
    let _ = writeln!(
        out,
        "<title>{}</title></g>",
        esc(&format!("gap in the probe checks: {tip}"))
    );
}

fn write_legend(out: &mut String, y: f64, gaps: bool) {
    let gap = gaps.then_some((
        "<rect x=\"0\" y=\"-11\" width=\"14\" height=\"12\" fill=\"#9ca3af\" fill-opacity=\"0.3\" stroke=\"#4b5563\" stroke-dasharray=\"3 2\"/>",
        "no probe checks",
    ));
    let items = [
        (
            "<circle cx=\"6\" cy=\"-4\" r=\"4\" fill=\"#16a34a\"/>",
            "probe passed",
        ),
        (
            "<rect x=\"3\" y=\"-12\" width=\"5\" height=\"14\" fill=\"#dc2626\"/>",
            "probe failed",
        ),
        (
            "<rect x=\"0\" y=\"-11\" width=\"14\" height=\"12\" fill=\"#f59e0b\" fill-opacity=\"0.3\" stroke=\"#d97706\"/>",
            "faults injected",
        ),
        (
            "<line x1=\"7\" y1=\"-14\" x2=\"7\" y2=\"3\" stroke=\"#dc2626\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/>",
            "abort",
        ),
        (
            "<circle cx=\"7\" cy=\"-4\" r=\"6\" fill=\"#4b5563\"/>",
            "event (see the event table)",
        ),
    ]
    .into_iter()
    .chain(gap);
    let mut x = LEFT;
    let _ = write!(out, "<g class=\"legend\" fill=\"#374151\">");
    for (mark, label) in items {
        let _ = write!(
            out,
            "<g transform=\"translate({x:.1} {y:.1})\">{mark}<text x=\"20\" y=\"0\">{label}</text></g>"
        );
        x += 24.0 + label.len() as f64 * 6.2;
    }
    out.push_str("</g>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(tick_step(3_000.0), 500);
        assert_eq!(tick_step(30_000.0), 5_000);
        assert_eq!(tick_step(300_000.0), 30_000);
        assert!(is_trouble("ProbeFailed") && is_trouble("SteadyStateNotMet"));
        assert!(!is_trouble("FaultsInjected"));
    }
}
