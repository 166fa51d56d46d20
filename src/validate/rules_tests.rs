//! The CRDs' own checks (schema and CEL rules) as `faultline validate` runs them locally: what
//! used to be validate-only and now lives in the CRD, so that the API server refuses it too.
//! tests/differential.rs holds the same cases against the servers.

use serde_json::{Value, json};

use super::check_document;

fn found(kind: &str, metadata: Value, spec: Value) -> Vec<String> {
    let object = json!({"apiVersion": "faultline.dev/v1alpha1", "kind": kind,
                        "metadata": metadata, "spec": spec});
    let mut found: Vec<String> = check_document(&object)
        .into_iter()
        .map(|f| {
            assert!(f.validate_only.is_none(), "{f:?}");
            format!("{}: {}", f.path, f.message)
        })
        .collect();
    found.sort();
    found
}

fn experiment(spec: Value) -> Vec<String> {
    found("ChaosExperiment", json!({"name": "x"}), spec)
}

fn with_probe(duration: &str, probe: Value) -> Vec<String> {
    experiment(json!({
        "duration": duration,
        "faults": [{"podKill": {}}],
        "steadyState": {"probes": [probe]},
    }))
}

#[test]
fn bad_zero_and_out_of_bounds_durations_are_reported_with_a_hint() {
    assert_eq!(
        experiment(json!({"duration": "0s", "faults": [{"networkLatency": {"latency": "fast"}}]})),
        [
            "spec.duration: \"0s\" is shorter than the minimum of 1s",
            "spec.faults[0].networkLatency.latency: \"fast\" is not a duration (try 200ms)",
        ]
    );
}

#[test]
fn a_during_probe_slower_than_the_experiment_never_runs() {
    let probe =
        json!({"name": "p", "http": {"url": "http://x/"}, "interval": "2m", "timeout": "1s"});
    assert_eq!(
        with_probe("1m", probe.clone()),
        [
            "spec.steadyState.probes: a probe that runs during the faults has an interval longer than the experiment's duration (1m): it would never run while the faults are in; shorten its interval or lengthen the duration"
        ]
    );
    // A probe that only runs before and after is fine; so is a microsecond interval.
    let mut before_after = probe.clone();
    before_after["phases"] = json!(["before", "after"]);
    assert!(with_probe("1m", before_after).is_empty());
}

#[test]
fn a_probe_timeout_must_be_shorter_than_its_interval() {
    let probe =
        json!({"name": "p", "http": {"url": "http://x/"}, "interval": "5s", "timeout": "10s"});
    assert_eq!(
        with_probe("1m", probe),
        [
            "spec.steadyState.probes[0].timeout: timeout 10s is not shorter than interval 5s: checks would overlap; make the timeout shorter than the interval"
        ]
    );
    let micro = json!({"name": "p", "http": {"url": "http://x/"}, "interval": "200ms", "timeout": "1500µs"});
    assert!(with_probe("1m", micro).is_empty());
}

#[test]
fn kubernetes_probe_field_paths_values_and_api_versions_are_checked() {
    let probe = json!({"name": "p", "kubernetes": {
        "apiVersion": "apps/v1/x", "kind": "Deployment", "name": "web",
        "field": {"path": ".status.conditions[x]", "operator": "<", "value": "ten"}}});
    assert_eq!(
        with_probe("1m", probe),
        [
            "spec.steadyState.probes[0].kubernetes.apiVersion: \"apps/v1/x\" is not an apiVersion (try apps/v1, or v1 for core kinds)",
            "spec.steadyState.probes[0].kubernetes.field.path: \".status.conditions[x]\" is not a field path (try .status.readyReplicas or .status.conditions[0].status)",
            "spec.steadyState.probes[0].kubernetes.field.value: \"ten\" is not a number, but operator < compares numbers",
        ]
    );
    for ok in [
        ".status.readyReplicas",
        ".status.conditions[0].status",
        ".metadata.annotations['example.com/x']",
        ".a_b-c",
    ] {
        let probe = json!({"name": "p", "kubernetes": {"apiVersion": "v1", "kind": "Pod", "name": "a",
            "field": {"path": ok, "operator": ">=", "value": "-1.5e3"}}});
        assert!(with_probe("1m", probe).is_empty(), "{ok}");
    }
}

#[test]
fn duplicate_names_point_at_the_second_entry() {
    let probe = json!({"name": "same", "http": {"url": "http://x/"}});
    let found = experiment(json!({
        "duration": "1m",
        "faults": [{"podKill": {}}],
        "steadyState": {"probes": [probe.clone(), probe]},
    }));
    assert_eq!(
        found,
        [
            "spec.steadyState.probes[1]: probe name \"same\" is already used by spec.steadyState.probes[0]; probe names must be unique"
        ]
    );
}

#[test]
fn jitter_larger_than_latency_is_an_error() {
    let found = experiment(
        json!({"duration": "1m", "faults": [{"networkLatency": {"latency": "10ms", "jitter": "50ms"}}]}),
    );
    assert_eq!(
        found,
        [
            "spec.faults[0].networkLatency.jitter: jitter 50ms is larger than latency 10ms: delays would go below zero; use a jitter of at most the latency"
        ]
    );
}

#[test]
fn selectors_say_what_kubernetes_says_of_a_deployments_selector() {
    let found = experiment(json!({
        "duration": "1m",
        "target": {"namespaces": ["Shop"], "labelSelector": {
            "matchLabels": {"app": "no good", "bad key": "x"},
            "matchExpressions": [
                {"key": "tier", "operator": "In"},
                {"key": "app\u{200b}", "operator": "Exists", "values": ["x"]},
            ]}},
        "faults": [{"networkPartition": {"peers": {"selector": {"matchExpressions": [{"key": "db", "operator": "Sorta", "values": ["x"]}]}}}}],
    }));
    assert_eq!(
        found,
        [
            "spec.faults[0].networkPartition.peers.selector.matchExpressions[0].operator: \"Sorta\" is not one of In, NotIn, Exists, DoesNotExist",
            "spec.target.labelSelector.matchExpressions[0].values: must be specified when `operator` is 'In' or 'NotIn'",
            "spec.target.labelSelector.matchExpressions[1].key: key \"app\\u{200b}\" is not a valid label key: the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "spec.target.labelSelector.matchExpressions[1].values: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            "spec.target.labelSelector.matchLabels.app: value \"no good\" is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "spec.target.labelSelector.matchLabels: every key must be a label key: an optional DNS subdomain prefix of at most 253 characters and '/', then 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (e.g. app.kubernetes.io/name)",
            "spec.target.namespaces[0]: \"Shop\" is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. \"shop\")",
        ]
    );
}

#[test]
fn cidrs_follow_gos_parser() {
    let cidr = |c: &str| {
        experiment(json!({"duration": "1m",
            "faults": [{"networkLoss": {"percent": 5, "to": {"cidrs": [c]}}}]}))
    };
    assert!(cidr("10.0.0.0/8").is_empty());
    assert_eq!(cidr("010.0.0.0/8").len(), 1);
    assert_eq!(cidr("10.0.0.0/08").len(), 1);
}

#[test]
fn integers_must_fit_their_format() {
    let found = experiment(
        json!({"duration": "1m", "target": {"mode": "Fixed", "value": 3_000_000_000u64,
        "maxTargets": 4_294_967_296u64}, "faults": [{"podKill": {"gracePeriodSeconds": 1e20}}]}),
    );
    assert_eq!(
        found,
        [
            "spec.faults[0].podKill.gracePeriodSeconds: must be a whole number, not a number (1e+20 is beyond what a JSON integer holds exactly)",
            "spec.target.maxTargets: 4294967296 does not fit this field (a int32: -2147483648 to 2147483647)",
            "spec.target.value: 3000000000 does not fit this field (a int32: -2147483648 to 2147483647)",
        ]
    );
}

#[test]
fn names_the_controller_would_create_must_fit() {
    let long = "s".repeat(53);
    let found = found(
        "ChaosSchedule",
        json!({"name": long}),
        json!({"schedule": "@daily",
               "experimentTemplate": {"spec": {"duration": "1m", "faults": [{"podKill": {}}]}}}),
    );
    assert_eq!(
        found,
        [
            ": metadata.name: the runs of a schedule are named <schedule>-<unix time> and must fit in 63 characters, so the schedule's name may have at most 52"
        ]
    );
    let probe = json!({"name": "up", "http": {"url": "http://shop/"}});
    let found = self::found(
        "GameDay",
        json!({"name": "a-game-day-with-quite-a-long-name"}),
        json!({"steadyState": {"probes": [probe]}, "stages": [
            {"name": "first-stage-of-the-long-day", "experiments": [
                {"name": "kill", "spec": {"duration": "1m", "faults": [{"podKill": {}}],
                                          "steadyState": {"probes": [probe]}}}]},
        ]}),
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0]
            .starts_with(": the game day's experiments are named <gameday>-<stage>-<experiment>"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with(
            "spec.steadyState.probes: the game day's probes are added to every experiment"
        ),
        "{}",
        found[1]
    );
}

#[test]
fn game_day_stage_and_experiment_names_are_unique() {
    let exp =
        |name: &str| json!({"name": name, "spec": {"duration": "1m", "faults": [{"podKill": {}}]}});
    let found = found(
        "GameDay",
        json!({"name": "g"}),
        json!({"stages": [
            {"name": "a", "experiments": [exp("x"), exp("x")], "pauseAfter": "soon"},
            {"name": "a", "experiments": [exp("y")]},
        ]}),
    );
    assert_eq!(
        found,
        [
            "spec.stages[0].experiments[1]: experiment name \"x\" is already used by spec.stages[0].experiments[0]; experiment names must be unique",
            "spec.stages[0].pauseAfter: \"soon\" is not a duration (try 30s)",
            "spec.stages[1]: stage name \"a\" is already used by spec.stages[0]; stage names must be unique",
        ]
    );
}
