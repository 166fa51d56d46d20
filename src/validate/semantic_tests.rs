//! One test per validate-only check, on small typed objects built from JSON.

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
        .map(|f| {
            assert!(
                f.validate_only
                    .is_some_and(|id| VALIDATE_ONLY.iter().any(|(c, _)| *c == id))
                    || f.message.starts_with("the object cannot be read"),
                "every semantic finding names its VALIDATE_ONLY check: {f:?}"
            );
            format!("{}: {}", f.path, f.message)
        })
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

#[test]
fn a_plain_experiment_has_no_findings() {
    assert!(experiment(json!({"duration": "60s", "faults": [{"podKill": {}}]})).is_empty());
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
fn body_regex_must_compile() {
    let found = experiment(json!({
        "duration": "1m",
        "faults": [{"podKill": {}}],
        "steadyState": {"probes": [{"name": "p", "http": {"url": "http://x/", "bodyRegex": "a[b"}}]},
    }));
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(
            "spec.steadyState.probes[0].http.bodyRegex: \"a[b\" is not a regular expression ("
        ),
        "{found:?}"
    );
}

#[test]
fn selectors_that_can_never_match_are_found_in_targets_and_scopes() {
    let never = json!({"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["a"]}]});
    let found = experiment(json!({
        "duration": "1m",
        "target": {"labelSelector": never},
        "faults": [{"networkPartition": {"peers": {"selector": {"matchExpressions": [
            {"key": "db", "operator": "Exists"}, {"key": "db", "operator": "DoesNotExist"}]}}}}],
    }));
    assert_eq!(
        found,
        [
            "spec.faults[0].networkPartition.peers.selector.matchExpressions[1]: this requirement on key \"db\" contradicts the ones before it: the selector can never match any pod",
            "spec.target.labelSelector.matchExpressions[0]: this requirement on key \"app\" contradicts the ones before it: the selector can never match any pod",
        ]
    );
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
    for bad in ["61 25 * * *", "*/0 * * * *", "0 10 * *"] {
        assert_eq!(schedule(bad, "UTC").len(), 1, "{bad}");
    }
    // Year fields are not part of a Kubernetes-style schedule.
    assert_eq!(schedule("0 0 0 1 1 * 2030", "UTC").len(), 1);
}

#[test]
fn game_days_check_their_schedule_and_their_experiments() {
    let found = findings(
        "GameDay",
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay", "metadata": {"name": "g"},
        "spec": {"schedule": "0 0 30 2 *", "timeZone": "europe/berlin", "stages": [
            {"name": "a", "experiments": [{"name": "x", "spec": {"duration": "1m", "faults": [{"podKill": {}}],
                "steadyState": {"probes": [{"name": "p", "http": {"url": "http://x/", "bodyRegex": "("}}]}}}]},
        ]}}),
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].starts_with("spec.schedule: \"0 0 30 2 *\" never fires"));
    assert!(
        found[1].starts_with(
            "spec.stages[0].experiments[0].spec.steadyState.probes[0].http.bodyRegex:"
        )
    );
    assert!(found[2].starts_with(
        "spec.timeZone: \"europe/berlin\" is not an IANA time zone (did you mean Europe/Berlin?)"
    ));
}

#[test]
fn other_kinds_have_no_semantic_checks() {
    assert_eq!(findings("Deployment", json!({})), ["<no semantic checks>"]);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 300, ..Default::default() })]

    /// Cron, time zone and duration parsing see user text; none may panic.
    #[test]
    fn text_checks_never_panic(text in "[0-9*/,LW#?@A-Za-z\\-\\[\\]'. ]{0,40}") {
        let mut out = Vec::new();
        check_cron(&text, "spec.schedule", &mut out);
        check_time_zone(Some(&text), "spec.timeZone", &mut out);
        let _ = duration_problem(&text, "latency");
        proptest::prop_assert!(out.len() <= 3);
    }
}
