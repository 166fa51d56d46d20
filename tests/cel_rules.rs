//! The CEL rules in the CRDs, evaluated by kube's client-side CEL engine: the examples pass,
//! and each rule rejects what it is meant to with its own message.

use faultline::api::all_crds;
use serde_json::{Value, json};

fn schema_for(kind: &str) -> Value {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// The messages of every failed rule, after applying schema defaults as the API server does.
fn cel_errors(object: &Value) -> Vec<String> {
    let kind = object["kind"].as_str().unwrap();
    let schema = schema_for(kind);
    let defaulted = kube::core::cel::apply_defaults(&schema, object);
    match kube::core::cel::Validator::new().validate(&schema, &defaulted, None) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn load_example(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn every_example_satisfies_the_cel_rules() {
    for path in [
        "experiments/pod-kill-http.yaml",
        "experiments/latency-prometheus-slo.yaml",
        "experiments/partition-two-tiers.yaml",
        "experiments/schedule-weekly-gameday.yaml",
        "experiments/gameday-three-stages.yaml",
        "experiments/reference/faultinjection.yaml",
    ] {
        assert_eq!(
            cel_errors(&load_example(path)),
            Vec::<String>::new(),
            "{path}"
        );
    }
}

fn experiment(spec: Value) -> Value {
    json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
           "metadata": {"name": "x", "namespace": "default"}, "spec": spec})
}

fn rejected_with(spec: Value, expected: &str) {
    let errors = cel_errors(&experiment(spec.clone()));
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected a rule failing with {expected:?} for {spec}, got {errors:?}"
    );
}

#[test]
fn a_fault_must_set_exactly_one_kind() {
    rejected_with(
        json!({"duration": "30s", "faults": [{}]}),
        "each fault must set exactly one of podKill",
    );
    rejected_with(
        json!({"duration": "30s", "faults": [{"podKill": {}, "networkLoss": {"percent": 5}}]}),
        "each fault must set exactly one of podKill",
    );
}

#[test]
fn durations_must_parse() {
    rejected_with(
        json!({"duration": "fast", "faults": [{"podKill": {}}]}),
        "must be a duration",
    );
    rejected_with(
        json!({"duration": "30s", "faults": [{"networkLatency": {"latency": "100 ms"}}]}),
        "must be a duration",
    );
    assert!(
        cel_errors(&experiment(
            json!({"duration": "1h2m3.5s", "faults": [{"podKill": {}}]})
        ))
        .is_empty()
    );
}

#[test]
fn selection_mode_value_is_required_and_in_range() {
    let with_target =
        |target: Value| json!({"duration": "30s", "target": target, "faults": [{"podKill": {}}]});
    rejected_with(
        with_target(json!({"mode": "Fixed"})),
        "target.value is required",
    );
    rejected_with(
        with_target(json!({"mode": "FixedPercent", "value": 150})),
        "percentage from 1 to 100",
    );
    rejected_with(
        with_target(json!({"mode": "Fixed", "value": 5, "maxTargets": 2})),
        "more pods than target.maxTargets",
    );
    rejected_with(
        with_target(json!({"fieldSelectors": {"spec.hostIP": "x"}})),
        "fieldSelectors supports only",
    );
    assert!(
        cel_errors(&experiment(with_target(
            json!({"mode": "RandomMaxPercent", "value": 30})
        )))
        .is_empty()
    );
}

#[test]
fn probes_set_exactly_one_check() {
    rejected_with(
        json!({"duration": "30s", "faults": [{"podKill": {}}],
               "steadyState": {"probes": [{"name": "a"}]}}),
        "each probe must set exactly one of http, kubernetes or prometheus",
    );
    rejected_with(
        json!({"duration": "30s", "faults": [{"podKill": {}}],
               "steadyState": {"probes": [{"name": "k", "kubernetes": {"apiVersion": "v1", "kind": "Pod", "name": "p"}}]}}),
        "set at least one check",
    );
}

#[test]
fn network_scopes_are_checked() {
    rejected_with(
        json!({"duration": "30s", "faults": [{"networkPartition": {"peers": {"ports": [80]}}}]}),
        "must name CIDRs or a pod selector",
    );
    rejected_with(
        json!({"duration": "30s", "faults": [{"networkLoss": {"percent": 5, "to": {"cidrs": ["10.0.0.0/33"]}}}]}),
        "must be a CIDR",
    );
}

/// Names that must be unique are list-map keys: the API server checks them itself (a CEL rule
/// comparing every pair costs too much for a real server's budget inside a GameDay).
#[test]
fn names_that_must_be_unique_are_list_map_keys() {
    let experiment = schema_for("ChaosExperiment");
    let probes =
        &experiment["properties"]["spec"]["properties"]["steadyState"]["properties"]["probes"];
    let gameday = schema_for("GameDay");
    let stages = &gameday["properties"]["spec"]["properties"]["stages"];
    let stage_experiments = &stages["items"]["properties"]["experiments"];
    for list in [probes, stages, stage_experiments] {
        assert_eq!(list["x-kubernetes-list-type"], "map", "{list}");
        assert_eq!(
            list["x-kubernetes-list-map-keys"],
            json!(["name"]),
            "{list}"
        );
    }
}
