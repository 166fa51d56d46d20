use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::api::{all_crds, duration::LONGEST_GO_DURATION};

#[test]
fn limits_are_described_as_the_docs_give_them() {
    assert_eq!(EXPERIMENT_DURATION.describe(), "at least 1s, at most 24h");
    assert_eq!(PROBE_TIMEOUT.describe(), "more than 0s, at most 5m");
    assert_eq!(PAUSE_AFTER.describe(), "at most 24h");
    assert_eq!(PROBE_INTERVAL.describe(), "at least 100ms, at most 1h");
}

#[test]
fn checks_name_the_value_and_the_limit_it_breaks() {
    let check = |bounds: &DurationBounds, text: &str| bounds.check(text);
    assert_eq!(
        check(&EXPERIMENT_DURATION, "999999999999999999999h").unwrap_err(),
        "\"999999999999999999999h\" is longer than the maximum of 24h"
    );
    assert_eq!(
        check(&EXPERIMENT_DURATION, "24h0.000000001s").unwrap_err(),
        "\"24h0.000000001s\" is longer than the maximum of 24h"
    );
    assert_eq!(
        check(&EXPERIMENT_DURATION, "1h23h0.0000000001s"),
        Ok(Duration::from_secs(86_400)),
        "Go truncates the tenth of a nanosecond; so do we"
    );
    assert_eq!(
        check(&POD_KILL_INTERVAL, "1ms").unwrap_err(),
        "\"1ms\" is shorter than the minimum of 1s"
    );
    assert_eq!(
        check(&PROBE_TIMEOUT, "0s").unwrap_err(),
        "\"0s\" is zero; it must be more than 0s (e.g. 2s)"
    );
    assert_eq!(check(&JITTER, "0"), Ok(Duration::ZERO));
    assert!(
        check(&LATENCY, "fast")
            .unwrap_err()
            .contains("is not a duration")
    );
}

#[test]
fn fields_are_found_by_path() {
    let at = |path| bounds_at(path).copied();
    assert_eq!(at("spec.duration"), Some(EXPERIMENT_DURATION));
    assert_eq!(
        at("spec.stages[0].experiments[1].spec.faults[2].podKill.interval"),
        Some(POD_KILL_INTERVAL)
    );
    assert_eq!(
        at("spec.steadyState.probes[3].interval"),
        Some(PROBE_INTERVAL)
    );
    assert_eq!(at("spec.fault.latency.latency"), Some(LATENCY));
    assert_eq!(at("status.abortLatency"), None);
    assert_eq!(at("spec.faults[0].networkLatency.correlation"), None);
}

#[test]
fn the_pattern_is_what_the_rules_match() {
    for ok in [
        "0",
        "1h30m",
        "5µs",
        "5μs",
        "1.5s",
        "99999h",
        "999999999999999999ns",
    ] {
        assert!(written_as_crd_expects(ok), "{ok}");
    }
    for bad in ["", "-1s", "+1s", ".5s", "5.s", "100000h", "1 h", "1d", "00"] {
        assert!(!written_as_crd_expects(bad), "{bad}");
    }
}

/// Every duration field of every CRD, with its schema: `(path, schema)`.
fn duration_fields() -> Vec<(String, Value)> {
    fn walk(path: &str, schema: &Value, out: &mut Vec<(String, Value)>) {
        let rules = schema["x-kubernetes-validations"].as_array();
        if rules.is_some_and(|rules| {
            rules.iter().any(|r| {
                r["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(DURATION_MESSAGE_PREFIX))
            })
        }) {
            out.push((path.to_string(), schema.clone()));
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, child) in properties {
                walk(&format!("{path}.{name}"), child, out);
            }
        }
        if schema.get("items").is_some() {
            walk(&format!("{path}[0]"), &schema["items"], out);
        }
    }
    let mut out = Vec::new();
    for crd in all_crds() {
        let version = &crd.spec.versions[0];
        let schema =
            serde_json::to_value(&version.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        walk(&crd.spec.names.kind, &schema, &mut out);
    }
    out
}

#[test]
fn every_bounded_field_carries_its_rule_and_documents_its_limits() {
    let fields = duration_fields();
    let mut bounded = 0;
    for (path, schema) in &fields {
        let rules = schema["x-kubernetes-validations"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{path}: one duration rule");
        let Some(bounds) = bounds_at(path) else {
            assert!(
                path.contains(".status."),
                "{path}: a spec duration without limits"
            );
            continue;
        };
        bounded += 1;
        assert_eq!(rules[0]["rule"], bounds.cel_rule(), "{path}");
        assert_eq!(rules[0]["message"], bounds.cel_message(), "{path}");
        assert_eq!(schema["maxLength"], 32, "{path}");
        let description = schema["description"].as_str().unwrap_or_default();
        assert!(
            description
                .to_lowercase()
                .contains(&bounds.describe().to_lowercase()),
            "{path}: the description {description:?} must say {:?}",
            bounds.describe()
        );
    }
    // ChaosExperiment, ChaosSchedule's template and GameDay's stages each have the experiment's
    // nine; GameDay adds pauseAfter and its day's steady state (four); FaultInjection has
    // latency and jitter.
    assert_eq!(bounded, 3 * 9 + 1 + 4 + 2);
}

#[test]
fn defaults_are_within_their_limits() {
    let probe: crate::api::Probe =
        serde_json::from_value(serde_json::json!({"name": "p", "http": {"url": "http://x/"}}))
            .unwrap();
    PROBE_INTERVAL.check(probe.interval.as_str()).unwrap();
    PROBE_TIMEOUT.check(probe.timeout.as_str()).unwrap();
    let abort = crate::api::AbortPolicy::default();
    REVERT_TIMEOUT.check(abort.revert_timeout.as_str()).unwrap();
    let steady: crate::api::SteadyState =
        serde_json::from_value(serde_json::json!({"probes": []})).unwrap();
    RECOVERY_TIMEOUT
        .check(steady.recovery_timeout.as_str())
        .unwrap();
}

/// The largest value of each unit the pattern allows: (unit, digits).
const UNIT_CAPS: [(&str, usize); 8] = [
    ("ns", 18),
    ("us", 15),
    ("µs", 15),
    ("μs", 15),
    ("ms", 12),
    ("s", 9),
    ("m", 7),
    ("h", 5),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Why the pattern caps digits: whatever fits a field (32 characters), CEL's duration()
    /// can convert. Components of nines (the largest each unit allows, or fewer digits) are
    /// packed until the next would not fit.
    #[test]
    fn nothing_written_as_the_crd_expects_overflows(
        components in prop::collection::vec((0..8usize, 1..=18usize, any::<bool>()), 1..16)
    ) {
        let mut text = String::new();
        for (unit, digits, fraction) in components {
            let (name, cap) = UNIT_CAPS[unit];
            let mut component = "9".repeat(digits.min(cap));
            if fraction {
                component.push_str(".999");
            }
            component.push_str(name);
            if text.chars().count() + component.chars().count() > 32 {
                break;
            }
            text.push_str(&component);
        }
        prop_assume!(!text.is_empty());
        prop_assert!(written_as_crd_expects(&text), "{}", text);
        let parsed = parse_go_duration(&text);
        prop_assert!(matches!(parsed, Ok(d) if d <= LONGEST_GO_DURATION), "{}: {:?}", text, parsed);
    }
}
