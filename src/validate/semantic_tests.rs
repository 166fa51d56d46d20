//! One test per semantic check, on small typed objects built from JSON.

use serde_json::{Value, json};

use super::*;
use crate::validate::durations::duration_problem;

fn findings(kind: &str, object: Value) -> Vec<String> {
    let Some(report) = check(kind, &object) else {
        return vec!["<no semantic checks>".into()];
    };
    let mut found: Vec<String> = report
        .findings
        .into_iter()
        .map(|f| format!("{}: {}", f.path, f.message))
        .collect();
    found.sort();
    found
}

fn experiment(spec: Value) -> Vec<String> {
    findings(
        "ChaosExperiment",
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
               "metadata": {"name": "x"}, "spec": spec}),
    )
}

fn with_probe(duration: &str, probe: Value) -> Vec<String> {
    experiment(json!({
        "duration": duration,
        "faults": [{"podKill": {}}],
        "steadyState": {"probes": [probe]},
    }))
}

#[test]
fn a_plain_experiment_has_no_findings() {
    assert!(experiment(json!({"duration": "60s", "faults": [{"podKill": {}}]})).is_empty());
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
    assert_eq!(
        experiment(json!({"duration": "999999999999999999999h",
                          "faults": [{"podKill": {"interval": "1ms"}}]})),
        [
            "spec.duration: \"999999999999999999999h\" is longer than the maximum of 24h",
            "spec.faults[0].podKill.interval: \"1ms\" is shorter than the minimum of 1s",
        ]
    );
}

#[test]
fn duration_hints_fix_common_spellings() {
    assert_eq!(
        duration_problem("fast", "latency"),
        "\"fast\" is not a duration (try 200ms)"
    );
    assert_eq!(
        duration_problem("30", "duration"),
        "\"30\" is not a duration (try 30s)"
    );
    assert_eq!(
        duration_problem("250", "timeout"),
        "\"250\" is not a duration (try 250ms)"
    );
    assert_eq!(
        duration_problem("5 minutes", "duration"),
        "\"5 minutes\" is not a duration (try 5m)"
    );
    assert_eq!(
        duration_problem("2 hrs", "duration"),
        "\"2 hrs\" is not a duration (try 2h)"
    );
    assert_eq!(
        duration_problem("1d", "duration"),
        "\"1d\" is not a duration (try 24h; Go durations have no days)"
    );
    assert_eq!(
        duration_problem("PT5M", "duration"),
        "\"PT5M\" is not a duration (try a Go duration such as 5m or 1h30m instead of ISO 8601)"
    );
    assert_eq!(
        duration_problem("-5s", "duration"),
        "\"-5s\" is negative; durations must be zero or more"
    );
}

#[test]
fn a_during_probe_slower_than_the_experiment_never_runs() {
    let probe =
        json!({"name": "p", "http": {"url": "http://x/"}, "interval": "2m", "timeout": "1s"});
    assert_eq!(
        with_probe("1m", probe.clone()),
        [
            "spec.steadyState.probes[0].interval: interval 2m is longer than the experiment's duration (1m0s): this during-probe would never run while the faults are in; shorten the interval or lengthen the duration"
        ]
    );
    // A probe that only runs before and after is fine.
    let mut before_after = probe;
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
}

#[test]
fn body_regex_must_compile() {
    let probe = json!({"name": "p", "http": {"url": "http://x/", "bodyRegex": "a[b"}});
    let found = with_probe("1m", probe);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(
            "spec.steadyState.probes[0].http.bodyRegex: \"a[b\" is not a regular expression ("
        ),
        "{found:?}"
    );
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
}

#[test]
fn field_path_syntax() {
    for ok in [
        ".status.readyReplicas",
        ".status.conditions[0].status",
        ".metadata.annotations['example.com/x']",
        ".a_b-c",
    ] {
        assert_eq!(field_path_problem(ok), None, "{ok}");
    }
    for bad in ["", "status", ".", ".a..b", ".a[", ".a[]", ".a[1", ".a b"] {
        assert!(field_path_problem(bad).is_some(), "{bad:?}");
    }
}

#[test]
fn duplicate_probe_names_point_at_the_second_one() {
    let probe = json!({"name": "same", "http": {"url": "http://x/"}});
    let found = experiment(json!({
        "duration": "1m",
        "faults": [{"podKill": {}}],
        "steadyState": {"probes": [probe.clone(), probe]},
    }));
    assert_eq!(
        found,
        [
            "spec.steadyState.probes[1].name: probe name \"same\" is already used by spec.steadyState.probes[0]; probe names must be unique"
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
fn selectors_in_targets_and_scopes_are_checked() {
    let never = json!({"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]});
    let found = experiment(json!({
        "duration": "1m",
        "target": {"labelSelector": never, "namespaces": ["Shop"]},
        "faults": [{"networkPartition": {"peers": {"selector": {"matchExpressions": [{"key": "db", "operator": "Exists", "values": ["x"]}]}}}}],
    }));
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("spec.faults[0].networkPartition.peers.selector.matchExpressions[0].values: operator Exists takes no values"));
    assert!(found[1].starts_with(
        "spec.target.labelSelector.matchExpressions[0]: this requirement on key \"app\" contradicts"
    ));
    assert!(found[2].starts_with("spec.target.namespaces[0]: \"Shop\" is not a valid name"));
}

fn schedule(cron: &str, zone: &str) -> Vec<String> {
    findings(
        "ChaosSchedule",
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule", "metadata": {"name": "s"},
               "spec": {"schedule": cron, "timeZone": zone,
                        "experimentTemplate": {"spec": {"duration": "1m", "faults": [{"podKill": {}}]}}}}),
    )
}

#[test]
fn cron_expressions_and_time_zones_are_checked() {
    assert!(schedule("0 10 * * TUE", "Europe/Berlin").is_empty());
    assert!(schedule("@daily", "UTC").is_empty());
    assert!(schedule("*/30 * * * * *", "America/New_York").is_empty());
    let found = schedule("every day", "Mars/Olympus");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].starts_with("spec.schedule: \"every day\" is not a cron expression"));
    assert_eq!(
        found[1],
        "spec.timeZone: \"Mars/Olympus\" is not an IANA time zone; use a name such as Europe/Berlin or UTC"
    );
    assert_eq!(
        schedule("0 0 31 2 *", "UTC"),
        [
            "spec.schedule: \"0 0 31 2 *\" never fires (no such date); check the day-of-month and month fields"
        ]
    );
    // Year fields are not part of a Kubernetes-style schedule.
    assert_eq!(schedule("0 0 0 1 1 * 2030", "UTC").len(), 1);
}

#[test]
fn game_day_stages_and_their_experiments_are_checked() {
    let exp =
        |name: &str| json!({"name": name, "spec": {"duration": "1m", "faults": [{"podKill": {}}]}});
    let found = findings(
        "GameDay",
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay", "metadata": {"name": "g"},
        "spec": {"stages": [
            {"name": "a", "experiments": [exp("x"), exp("x")], "pauseAfter": "soon"},
            {"name": "a", "experiments": [exp("y")]},
        ]}}),
    );
    assert_eq!(
        found,
        [
            "spec.stages[0].experiments[1].name: experiment name \"x\" is already used by spec.stages[0].experiments[0]; experiment names must be unique",
            "spec.stages[0].pauseAfter: \"soon\" is not a duration (try 30s)",
            "spec.stages[1].name: stage name \"a\" is already used by spec.stages[0]; stage names must be unique",
        ]
    );
}

#[test]
fn names_the_controller_would_create_must_fit_and_day_probes_must_not_clash() {
    let probe = json!({"name": "up", "http": {"url": "http://shop/"}});
    let found = findings(
        "GameDay",
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
        "metadata": {"name": "a-game-day-with-quite-a-long-name"},
        "spec": {"steadyState": {"probes": [probe]}, "stages": [
            {"name": "first-stage-of-the-long-day", "experiments": [
                {"name": "kill", "spec": {"duration": "1m", "faults": [{"podKill": {}}],
                                          "steadyState": {"probes": [probe]}}}]},
        ]}}),
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("spec.stages[0].experiments[0].name: the experiment would be named a-game-day-with-quite-a-long-name-first-stage-of-the-long-day-kill (66 characters"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("spec.stages[0].experiments[0].spec.steadyState: the game day's probe \"up\" has the same name"),
        "{}",
        found[1]
    );

    let long = "s".repeat(60);
    let found = findings(
        "ChaosSchedule",
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule", "metadata": {"name": long},
               "spec": {"schedule": "@daily",
                        "experimentTemplate": {"spec": {"duration": "1m", "faults": [{"podKill": {}}]}}}}),
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("shorten the name to at most 52 characters"),
        "{}",
        found[0]
    );
}

#[test]
fn other_kinds_have_no_semantic_checks() {
    assert_eq!(findings("Deployment", json!({})), ["<no semantic checks>"]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// Cron, time zone, field path and duration parsing see user text; none may panic.
    #[test]
    fn text_checks_never_panic(text in "[0-9*/,LW#?@A-Za-z\\-\\[\\]'. ]{0,40}") {
        let mut out = Vec::new();
        check_cron(&text, "spec.schedule", &mut out);
        check_time_zone(Some(&text), "spec.timeZone", &mut out);
        let _ = field_path_problem(&text);
        let _ = duration_problem(&text, "latency");
        proptest::prop_assert!(out.len() <= 3);
    }
}
