//! Checks beyond the CRD schema, on the typed objects: things the API server would accept but
//! that cannot work (a during-probe that never runs, a selector that never matches, a cron
//! expression that does not parse). Runs only once the structure is right. Pure.

use std::{collections::HashMap, str::FromStr, time::Duration};

use croner::parser::{CronParser, Seconds, Year};
use serde_json::Value;

use super::{
    Finding, durations,
    labels::{check_selector, dns_label_problem},
    yaml_lines::{join_index, join_key},
};
use crate::api::{
    ChaosExperiment, ChaosExperimentSpec, ChaosSchedule, ComparisonOperator, FaultInjection,
    GameDay, GoDuration, NetworkScope, Probe, ProbePhase, SteadyState,
};

/// What the semantic pass found.
pub struct SemanticReport {
    pub findings: Vec<Finding>,
}

/// Deserializes the whole object as `kind` and checks it. `None` for a kind without semantic
/// checks.
pub fn check(kind: &str, object: &Value) -> Option<SemanticReport> {
    let mut out = Vec::new();
    let read = |err: serde_json::Error| {
        Finding::new("", format!("the object cannot be read as a {kind}: {err}"))
    };
    match kind {
        "ChaosExperiment" => match serde_json::from_value::<ChaosExperiment>(object.clone()) {
            Ok(exp) => check_experiment(&exp.spec, "spec", &mut out),
            Err(err) => out.push(read(err)),
        },
        "ChaosSchedule" => match serde_json::from_value::<ChaosSchedule>(object.clone()) {
            Ok(schedule) => {
                let spec = &schedule.spec;
                let name = schedule.metadata.name.as_deref().unwrap_or_default();
                let example = crate::schedule::plan::run_name(name, chrono::Utc::now());
                if example.len() > 63 {
                    out.push(Finding::new(
                        "metadata.name",
                        format!(
                            "its runs would be named like {example} ({} characters, over Kubernetes' 63): shorten the name to at most {} characters",
                            example.len(),
                            63 - (example.len() - name.len())
                        ),
                    ));
                }
                check_cron(&spec.schedule, "spec.schedule", &mut out);
                check_time_zone(spec.time_zone.as_deref(), "spec.timeZone", &mut out);
                check_experiment(
                    &spec.experiment_template.spec,
                    "spec.experimentTemplate.spec",
                    &mut out,
                );
            }
            Err(err) => out.push(read(err)),
        },
        "GameDay" => match serde_json::from_value::<GameDay>(object.clone()) {
            Ok(day) => check_game_day(&day, &mut out),
            Err(err) => out.push(read(err)),
        },
        "FaultInjection" => {
            if let Err(err) = serde_json::from_value::<FaultInjection>(object.clone()) {
                out.push(read(err));
            }
        }
        _ => return None,
    }
    Some(SemanticReport { findings: out })
}

fn check_game_day(day: &GameDay, out: &mut Vec<Finding>) {
    let spec = &day.spec;
    if let Some(schedule) = &spec.schedule {
        check_cron(schedule, "spec.schedule", out);
    }
    check_time_zone(spec.time_zone.as_deref(), "spec.timeZone", out);
    if let Some(steady) = &spec.steady_state {
        check_steady_state(steady, None, "spec.steadyState", out);
    }
    let stage_names = spec.stages.iter().map(|s| s.name.as_str());
    duplicates(stage_names, "spec.stages", "stage", out);
    for (i, stage) in spec.stages.iter().enumerate() {
        let stage_path = join_index("spec.stages", i);
        if let Some(pause) = &stage.pause_after {
            durations::check(pause, &sub(&stage_path, "pauseAfter"), out);
        }
        let experiments_path = sub(&stage_path, "experiments");
        let names = stage.experiments.iter().map(|e| e.name.as_str());
        duplicates(names, &experiments_path, "experiment", out);
        for (j, experiment) in stage.experiments.iter().enumerate() {
            let experiment_path = join_index(&experiments_path, j);
            let created = crate::gameday::stage::experiment_name(
                day.metadata.name.as_deref().unwrap_or_default(),
                &stage.name,
                &experiment.name,
            );
            if created.len() > 63 {
                out.push(Finding::new(
                    &sub(&experiment_path, "name"),
                    format!(
                        "the experiment would be named {created} ({} characters, over Kubernetes' 63): shorten the game day, stage or experiment name",
                        created.len()
                    ),
                ));
            }
            if let Err(problem) = crate::gameday::stage::experiment_spec(spec, &experiment.spec) {
                out.push(Finding::new(
                    &sub(&experiment_path, "spec.steadyState"),
                    problem,
                ));
            }
            let path = sub(&experiment_path, "spec");
            check_experiment(&experiment.spec, &path, out);
        }
    }
}

/// `base` joined with a relative dotted path of plain field names (`http.bodyRegex`).
fn sub(base: &str, relative: &str) -> String {
    relative
        .split('.')
        .fold(base.to_string(), |path, key| join_key(&path, key))
}

/// Reports every entry whose `name` an earlier entry of `list` already uses.
fn duplicates<'a>(
    names: impl Iterator<Item = &'a str>,
    list: &str,
    what: &str,
    out: &mut Vec<Finding>,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = seen.get(name) {
            out.push(Finding::new(
                &sub(&join_index(list, i), "name"),
                format!("{what} name {name:?} is already used by {list}[{first}]; {what} names must be unique"),
            ));
        } else {
            seen.insert(name, i);
        }
    }
}

fn check_experiment(spec: &ChaosExperimentSpec, path: &str, out: &mut Vec<Finding>) {
    let total = durations::check(&spec.duration, &sub(path, "duration"), out);
    durations::check(
        &spec.abort.revert_timeout,
        &sub(path, "abort.revertTimeout"),
        out,
    );
    let target = sub(path, "target");
    for (i, namespace) in spec.target.namespaces.iter().enumerate() {
        if let Some(problem) = dns_label_problem(namespace) {
            out.push(Finding::new(
                &join_index(&sub(&target, "namespaces"), i),
                problem,
            ));
        }
    }
    if let Some(selector) = &spec.target.label_selector {
        check_selector(selector, &sub(&target, "labelSelector"), out);
    }
    for (i, fault) in spec.faults.iter().enumerate() {
        let fault_path = join_index(&sub(path, "faults"), i);
        if let Some(kill) = &fault.pod_kill
            && let Some(interval) = &kill.interval
        {
            durations::check(interval, &sub(&fault_path, "podKill.interval"), out);
        }
        if let Some(latency) = &fault.network_latency {
            let at = sub(&fault_path, "networkLatency");
            let delay = durations::check(&latency.latency, &sub(&at, "latency"), out);
            let jitter = latency
                .jitter
                .as_ref()
                .and_then(|j| durations::check(j, &sub(&at, "jitter"), out));
            if let (Some(delay), Some(jitter)) = (delay, jitter)
                && jitter > delay
            {
                out.push(Finding::new(
                    &sub(&at, "jitter"),
                    format!(
                        "jitter {} is larger than latency {}: delays would go below zero; use a jitter of at most the latency",
                        latency.jitter.as_ref().map_or("", GoDuration::as_str),
                        latency.latency
                    ),
                ));
            }
            check_scope(latency.to.as_ref(), &sub(&at, "to"), out);
        }
        if let Some(loss) = &fault.network_loss {
            check_scope(loss.to.as_ref(), &sub(&fault_path, "networkLoss.to"), out);
        }
        if let Some(bandwidth) = &fault.network_bandwidth {
            let to = sub(&fault_path, "networkBandwidth.to");
            check_scope(bandwidth.to.as_ref(), &to, out);
        }
        if let Some(partition) = &fault.network_partition {
            let peers = sub(&fault_path, "networkPartition.peers");
            check_scope(Some(&partition.peers), &peers, out);
        }
    }
    if let Some(steady) = &spec.steady_state {
        check_steady_state(steady, total, &sub(path, "steadyState"), out);
    }
}

fn check_scope(scope: Option<&NetworkScope>, path: &str, out: &mut Vec<Finding>) {
    let Some(scope) = scope else { return };
    if let Some(selector) = &scope.selector {
        check_selector(selector, &sub(path, "selector"), out);
    }
    for (i, namespace) in scope.namespaces.iter().enumerate() {
        if let Some(problem) = dns_label_problem(namespace) {
            out.push(Finding::new(
                &join_index(&sub(path, "namespaces"), i),
                problem,
            ));
        }
    }
}

/// `total` is the experiment's duration (None for a GameDay's hypothesis, which has none).
fn check_steady_state(
    steady: &SteadyState,
    total: Option<Duration>,
    path: &str,
    out: &mut Vec<Finding>,
) {
    durations::check(&steady.recovery_timeout, &sub(path, "recoveryTimeout"), out);
    let probes_path = sub(path, "probes");
    duplicates(
        steady.probes.iter().map(|p| p.name.as_str()),
        &probes_path,
        "probe",
        out,
    );
    for (i, probe) in steady.probes.iter().enumerate() {
        check_probe(probe, total, &join_index(&probes_path, i), out);
    }
}

fn check_probe(probe: &Probe, total: Option<Duration>, path: &str, out: &mut Vec<Finding>) {
    let interval = durations::check(&probe.interval, &sub(path, "interval"), out);
    let timeout = durations::check(&probe.timeout, &sub(path, "timeout"), out);
    if let (Some(interval), Some(timeout)) = (interval, timeout)
        && timeout >= interval
        && interval > Duration::ZERO
    {
        out.push(Finding::new(
            &sub(path, "timeout"),
            format!(
                "timeout {} is not shorter than interval {}: checks would overlap; make the timeout shorter than the interval",
                probe.timeout, probe.interval
            ),
        ));
    }
    if let (Some(interval), Some(total)) = (interval, total)
        && probe.runs_in(ProbePhase::During)
        && interval > total
    {
        out.push(Finding::new(
            &sub(path, "interval"),
            format!(
                "interval {} is longer than the experiment's duration ({}): this during-probe would never run while the faults are in; shorten the interval or lengthen the duration",
                probe.interval,
                GoDuration::from_duration(total)
            ),
        ));
    }
    if let Some(http) = &probe.http {
        if let Some(max) = &http.max_latency {
            durations::check(max, &sub(path, "http.maxLatency"), out);
        }
        if let Some(pattern) = &http.body_regex
            && let Err(err) = regex::Regex::new(pattern)
        {
            let reason = err.to_string();
            let reason = reason.lines().last().unwrap_or("invalid").trim();
            out.push(Finding::new(
                &sub(path, "http.bodyRegex"),
                format!("{pattern:?} is not a regular expression ({reason})"),
            ));
        }
    }
    if let Some(kube) = &probe.kubernetes {
        let at = sub(path, "kubernetes");
        if !api_version_ok(&kube.api_version) {
            out.push(Finding::new(
                &sub(&at, "apiVersion"),
                format!(
                    "{:?} is not an apiVersion (try apps/v1, or v1 for core kinds)",
                    kube.api_version
                ),
            ));
        }
        if let Some(field) = &kube.field {
            if let Some(problem) = field_path_problem(&field.path) {
                out.push(Finding::new(&sub(&at, "field.path"), problem));
            }
            let ordering = !matches!(
                field.operator,
                ComparisonOperator::Equal | ComparisonOperator::NotEqual
            );
            if ordering && field.value.trim().parse::<f64>().is_err() {
                out.push(Finding::new(
                    &sub(&at, "field.value"),
                    format!(
                        "{:?} is not a number, but operator {} compares numbers",
                        field.value,
                        field.operator.symbol()
                    ),
                ));
            }
        }
    }
}

fn api_version_ok(text: &str) -> bool {
    let version_ok =
        |v: &str| v.starts_with('v') && v.len() > 1 && v.chars().all(|c| c.is_ascii_alphanumeric());
    match text.split_once('/') {
        None => version_ok(text),
        Some((group, version)) => {
            super::labels::dns_subdomain_problem(group).is_none() && version_ok(version)
        }
    }
}

/// A field path into an object, in the probe's dotted syntax: `.status.readyReplicas`,
/// `.status.conditions[0].status`, `.metadata.annotations['example.com/x']`.
pub fn field_path_problem(path: &str) -> Option<String> {
    let bad = || {
        Some(format!(
            "{path:?} is not a field path (try .status.readyReplicas or .status.conditions[0].status)"
        ))
    };
    let mut rest = path;
    if rest.is_empty() {
        return bad();
    }
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(after.len());
            if end == 0 {
                return bad();
            }
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(close) = after.find(']') else {
                return bad();
            };
            let inner = &after[..close];
            let quoted = inner.len() >= 2
                && ((inner.starts_with('\'') && inner.ends_with('\''))
                    || (inner.starts_with('"') && inner.ends_with('"')));
            if !(quoted || (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_digit()))) {
                return bad();
            }
            rest = &after[close + 1..];
        } else {
            return bad();
        }
    }
    None
}

fn check_cron(expression: &str, path: &str, out: &mut Vec<Finding>) {
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    match parser.parse(expression) {
        Err(err) => out.push(Finding::new(
            path,
            format!(
                "{expression:?} is not a cron expression ({err}); use 5 fields (minute hour day-of-month month day-of-week) such as \"0 10 * * TUE\", or @daily"
            ),
        )),
        Ok(cron) => {
            // Feb 30 and friends parse but never fire: the schedule would silently never run.
            let start = chrono::DateTime::<chrono::Utc>::from_timestamp(1_767_225_600, 0);
            if let Some(start) = start
                && cron.find_next_occurrence(&start, false).is_err()
            {
                out.push(Finding::new(
                    path,
                    format!("{expression:?} never fires (no such date); check the day-of-month and month fields"),
                ));
            }
        }
    }
}

fn check_time_zone(zone: Option<&str>, path: &str, out: &mut Vec<Finding>) {
    let Some(zone) = zone else { return };
    if chrono_tz::Tz::from_str(zone).is_err() {
        let hint = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(zone))
            .map(|tz| format!(" (did you mean {}?)", tz.name()))
            .unwrap_or_default();
        out.push(Finding::new(
            path,
            format!(
                "{zone:?} is not an IANA time zone{hint}; use a name such as Europe/Berlin or UTC"
            ),
        ));
    }
}

#[cfg(test)]
#[path = "semantic_tests.rs"]
mod tests;
