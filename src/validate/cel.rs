//! The CEL rules (`x-kubernetes-validations`) of the CRDs, evaluated locally with kube-cel, after
//! applying the schema's defaults as the API server does. Pure; no IO.
//!
//! Two adjustments to the raw results:
//! - a duration rule is judged as the API server judges it, with Go's parser and the field's
//!   limits (`durations`): kube-cel reads durations as `f64` and does not know `µs`, so its
//!   verdict can be off at the limits; the message names the value and suggests a fix
//!   (`"fast" is not a duration (try 200ms)`, `"25h" is longer than the maximum of 24h`);
//! - any other rule the local evaluator cannot run is reported as such (it is either a faultline
//!   bug or a gap in kube-cel), so that nobody mistakes it for a problem in the manifest.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use kube::core::cel::ErrorKind;
use serde_json::Value;

use super::{Finding, durations};
use crate::api::duration_bounds::is_duration_rule;
use crate::crd_validation::cel::LocalRules;

thread_local! {
    // Compiling the ~100 rules of a CRD costs more than evaluating them; a CLI run checks many
    // documents of few kinds. kube-cel's compiled rules are not `Sync`, hence per thread.
    static COMPILED: RefCell<HashMap<String, Rc<LocalRules>>> = RefCell::new(HashMap::new());
}

/// Runs the CEL rules of `schema` (the kind's `openAPIV3Schema`) against `object`.
pub fn check(kind: &str, schema: &Value, object: &Value) -> Vec<Finding> {
    let rules = COMPILED.with(|cache| {
        cache
            .borrow_mut()
            .entry(kind.to_string())
            .or_insert_with(|| Rc::new(LocalRules::compile(schema)))
            .clone()
    });
    rules
        .evaluate(object, None)
        .into_iter()
        .filter_map(|error| {
            let path = error.field_path.clone();
            let duration = is_duration_rule(&error.rule)
                .then(|| lookup(object, &path).and_then(Value::as_str))
                .flatten();
            let message = match (duration, &error.kind) {
                // `None`: Go reads it as the API server does and accepts it; kube-cel's failure
                // is its own gap.
                (Some(text), _) => durations::problem(&path, text)?,
                (None, ErrorKind::ValidationFailure) => error.message.clone(),
                (None, _) => format!(
                    "could not evaluate the CRD rule `{}` locally ({}); this is a faultline bug, \
                     please report it; the API server may still accept the object",
                    error.rule, error.message
                ),
            };
            let mut finding = Finding::new(&path, message);
            finding.evaluation_failed =
                duration.is_none() && error.kind != ErrorKind::ValidationFailure;
            Some(finding)
        })
        .collect()
}

/// Follows a kube-cel field path (`spec.faults[0].networkLatency.latency`) into `object`.
fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = object;
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let index: usize = index.trim_end_matches(']').parse().ok()?;
            current = current.get(index)?;
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validate::kind_schema;

    fn experiment_spec(spec: Value) -> Vec<String> {
        let Some(schema) = kind_schema("ChaosExperiment") else {
            panic!("no ChaosExperiment schema");
        };
        let mut found: Vec<String> = check(
            "ChaosExperiment",
            schema,
            &json!({"metadata": {"name": "e"}, "spec": spec}),
        )
        .into_iter()
        .map(|f| format!("{}: {}", f.path, f.message))
        .collect();
        found.sort();
        found
    }

    #[test]
    fn a_valid_spec_passes_every_rule() {
        let found = experiment_spec(json!({
            "duration": "60s",
            "target": {"mode": "Fixed", "value": 2, "maxTargets": 3},
            "faults": [
                {"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"], "ports": [80]}}},
                {"networkPartition": {"peers": {"cidrs": ["10.1.0.0/16"]}}},
            ],
        }));
        assert_eq!(found, Vec::<String>::new());
    }

    #[test]
    fn cross_field_rules_fail_with_their_message_and_path() {
        let found = experiment_spec(json!({
            "duration": "60s",
            "target": {"mode": "Fixed", "value": 5, "maxTargets": 3},
            "faults": [{"podKill": {}, "networkLoss": {"percent": 5}}],
        }));
        assert_eq!(
            found,
            [
                "spec.faults[0]: each fault must set exactly one of podKill, networkLatency, networkLoss, networkBandwidth or networkPartition",
                "spec.target: target.value asks for more pods than target.maxTargets allows",
            ]
        );
    }

    #[test]
    fn defaults_are_applied_before_the_rules_run() {
        // `mode` defaults to All, for which no value is needed; `Fixed` without value fails.
        assert_eq!(
            experiment_spec(json!({"duration": "1m", "faults": [{"podKill": {}}]})),
            Vec::<String>::new()
        );
        assert_eq!(
            experiment_spec(
                json!({"duration": "1m", "target": {"mode": "Fixed"}, "faults": [{"podKill": {}}]})
            ),
            [
                "spec.target: target.value is required when mode is Fixed, FixedPercent or RandomMaxPercent"
            ]
        );
    }

    #[test]
    fn bad_durations_name_the_value_and_suggest_a_fix() {
        let found = experiment_spec(json!({
            "duration": "5 min",
            "faults": [{"networkLatency": {"latency": "fast"}}],
        }));
        assert_eq!(
            found,
            [
                "spec.duration: \"5 min\" is not a duration (try 5m)",
                "spec.faults[0].networkLatency.latency: \"fast\" is not a duration (try 200ms)",
            ]
        );
    }

    #[test]
    fn cidr_rule_rejects_non_cidrs() {
        let found = experiment_spec(json!({
            "duration": "60s",
            "faults": [{"networkLoss": {"percent": 5, "to": {"cidrs": ["10.0.0.0/8", "nope"]}}}],
        }));
        assert_eq!(
            found,
            [
                "spec.faults[0].networkLoss.to.cidrs[1]: must be a CIDR such as 10.0.0.0/8 or 192.168.1.10/32 (no leading zeros)"
            ]
        );
    }

    #[test]
    fn lookup_follows_names_and_indexes() {
        let v = json!({"spec": {"faults": [{"a": {"b": "x"}}]}});
        assert_eq!(lookup(&v, "spec.faults[0].a.b"), Some(&json!("x")));
        assert_eq!(lookup(&v, "spec.faults[3]"), None);
    }
}
