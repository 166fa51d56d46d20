//! The checks only `faultline validate` (and the controller, before anything starts) can make:
//! what the CRD cannot say in its schema or in CEL. Runs on the typed object, once the
//! structure is right. Pure.
//!
//! Everything else `validate` reports comes from the CRD itself (its schema and CEL rules, run
//! locally), so that the API server refuses the same manifests. What stays here, and why:
//!
//! - [`VALIDATE_ONLY`] lists each check with the reason it cannot live in the CRD; the README's
//!   "Validation" section and the differential test (tests/differential.rs) use the same list.

use serde_json::Value;

use super::{
    Finding,
    labels::check_selector,
    yaml_lines::{join_index, join_key},
};
use crate::api::{
    ChaosExperiment, ChaosExperimentSpec, ChaosSchedule, FaultInjection, GameDay, NetworkScope,
    SteadyState,
};

/// The checks that live only in `faultline validate` and the controller, with why the CRD
/// cannot make them. The `id` is what a [`Finding`] of the check carries.
pub const VALIDATE_ONLY: &[(&str, &str)] = &[
    (
        "cron",
        "`schedule` must be a cron expression that fires: CEL has no cron parser, and a regex \
         cannot tell `0 0 30 2 *` (never fires) from `0 0 28 2 *`. The controller sets \
         Active=False (ChaosSchedule) or fails the GameDay, with an Event naming the field",
    ),
    (
        "timeZone",
        "`timeZone` must be an IANA time zone: CEL has no time zone database (a list of 600 names \
         in a rule would cost more than the budget allows). The controller reports it like cron",
    ),
    (
        "bodyRegex",
        "`http.bodyRegex` must compile: CEL cannot compile a regular expression it is given as \
         data. The probe fails with InvalidSpec when it first runs",
    ),
    (
        "selectorNeverMatches",
        "a label selector whose requirements contradict each other is well-formed (Kubernetes \
         accepts it in a Deployment too); only validate reasons about what it can match. The \
         controller finds no target and says so",
    ),
];

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
        check_steady_state(steady, "spec.steadyState", out);
    }
    for (i, stage) in spec.stages.iter().enumerate() {
        let experiments = sub(&join_index("spec.stages", i), "experiments");
        for (j, experiment) in stage.experiments.iter().enumerate() {
            let path = sub(&join_index(&experiments, j), "spec");
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

fn check_experiment(spec: &ChaosExperimentSpec, path: &str, out: &mut Vec<Finding>) {
    if let Some(selector) = &spec.target.label_selector {
        check_selector(selector, &sub(path, "target.labelSelector"), out);
    }
    for (i, fault) in spec.faults.iter().enumerate() {
        let fault_path = join_index(&sub(path, "faults"), i);
        let scopes = [
            (
                "networkLatency.to",
                fault.network_latency.as_ref().and_then(|f| f.to.as_ref()),
            ),
            (
                "networkLoss.to",
                fault.network_loss.as_ref().and_then(|f| f.to.as_ref()),
            ),
            (
                "networkBandwidth.to",
                fault.network_bandwidth.as_ref().and_then(|f| f.to.as_ref()),
            ),
            (
                "networkPartition.peers",
                fault.network_partition.as_ref().map(|f| &f.peers),
            ),
        ];
        for (at, scope) in scopes {
            check_scope(scope, &sub(&fault_path, at), out);
        }
    }
    if let Some(steady) = &spec.steady_state {
        check_steady_state(steady, &sub(path, "steadyState"), out);
    }
}

fn check_scope(scope: Option<&NetworkScope>, path: &str, out: &mut Vec<Finding>) {
    if let Some(selector) = scope.and_then(|s| s.selector.as_ref()) {
        check_selector(selector, &sub(path, "selector"), out);
    }
}

fn check_steady_state(steady: &SteadyState, path: &str, out: &mut Vec<Finding>) {
    let probes = sub(path, "probes");
    for (i, probe) in steady.probes.iter().enumerate() {
        if let Some(pattern) = probe.http.as_ref().and_then(|h| h.body_regex.as_ref())
            && let Some(problem) = crate::controller::spec_check::regex_problem(pattern)
        {
            out.push(Finding::validate_only(
                "bodyRegex",
                &sub(&join_index(&probes, i), "http.bodyRegex"),
                problem,
            ));
        }
    }
}

fn check_cron(expression: &str, path: &str, out: &mut Vec<Finding>) {
    if let Some(problem) = crate::calendar::cron_problem(expression) {
        out.push(Finding::validate_only("cron", path, problem));
    }
}

fn check_time_zone(zone: Option<&str>, path: &str, out: &mut Vec<Finding>) {
    if let Some(zone) = zone.filter(|z| !crate::calendar::is_time_zone(z)) {
        out.push(Finding::validate_only(
            "timeZone",
            path,
            crate::calendar::time_zone_problem(zone),
        ));
    }
}

#[cfg(test)]
#[path = "semantic_tests.rs"]
mod tests;
