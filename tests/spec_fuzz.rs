//! Fuzz-style property tests: arbitrary specs (random strings and numbers in every duration
//! field, huge numbers, values nested where a string belongs) go through `faultline validate`'s
//! entry point and through the checks the controllers make before acting on a spec (the
//! experiment spec check, the probe runner, the GameDay and ChaosSchedule planners). Nothing may
//! panic, and the controller never refuses what `faultline validate` accepted.
//!
//! Bounded: a few hundred cases, a few seconds (most of it the local CEL evaluation).

use chrono::{TimeZone, Utc};
use faultline::{
    api::{
        ChaosExperimentSpec, ChaosScheduleSpec, GameDaySpec,
        duration_bounds::{EXPERIMENT_DURATION, RECOVERY_TIMEOUT, REVERT_TIMEOUT},
    },
    controller::spec_check::check_spec,
    gameday,
    probes::ProbeRunner,
    schedule,
    validate::{Severity, validate_documents},
};
use proptest::prelude::*;
use serde_json::{Value, json};

/// What a user, a broken generator or an attacker could put in a duration field.
fn nasty_duration() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        // Duration-like text with the usual mistakes: signs, huge numbers, unknown units.
        4 => proptest::string::string_regex(
            r"[-+]?[0-9]{0,25}(\.[0-9]{0,12})?(ns|us|µs|μs|ms|s|m|h|d| |)([0-9]{0,8}(h|m|s|ms))?"
        )
        .unwrap()
        .prop_map(Value::String),
        // The values of the issue, and the limits.
        2 => prop::sample::select(vec![
            "999999999999999999999h", "5000000000000000h", "100000000h", "2562047h47m16.854775807s",
            "2562048h", "0", "0s", "1ms", "24h", "24h0.000000001s", "1h23h0.0000000001s",
            "99999h", "5µs", "5μs", "", " ", "NaN", "inf", "1e400s",
        ])
        .prop_map(|s| Value::String(s.into())),
        1 => any::<String>().prop_map(Value::String),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid value, or a nasty one.
fn duration_or(valid: &'static str) -> impl Strategy<Value = Value> {
    prop_oneof![3 => Just(Value::String(valid.into())), 1 => nasty_duration()]
}

fn probe() -> impl Strategy<Value = Value> {
    (duration_or("5s"), duration_or("1s"), duration_or("300ms")).prop_map(
        |(interval, timeout, max_latency)| {
            json!({"name": "web", "http": {"url": "http://web/", "maxLatency": max_latency},
                   "interval": interval, "timeout": timeout})
        },
    )
}

fn experiment_spec() -> impl Strategy<Value = Value> {
    (
        duration_or("60s"),
        duration_or("30s"),
        duration_or("100ms"),
        duration_or("10ms"),
        duration_or("60s"),
        duration_or("30s"),
        probe(),
    )
        .prop_map(
            |(duration, kill_every, latency, jitter, recovery, revert, probe)| {
                json!({
                    "duration": duration,
                    "faults": [
                        {"podKill": {"interval": kill_every}},
                        {"networkLatency": {"latency": latency, "jitter": jitter,
                                            "to": {"cidrs": ["10.0.0.0/8"]}}},
                    ],
                    "steadyState": {"probes": [probe], "recoveryTimeout": recovery},
                    "abort": {"revertTimeout": revert},
                })
            },
        )
}

fn document(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "faultline.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "fuzz", "namespace": "shop"}, "spec": spec})
}

/// `faultline validate`'s verdict on one document: its error lines.
fn validate(object: &Value) -> Vec<String> {
    // JSON is YAML: the document goes through the same reader as a file does.
    let text = serde_json::to_string_pretty(object).unwrap();
    validate_documents("fuzz.yaml", &text)
        .into_iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| p.to_string())
        .collect()
}

/// The controller's checks on an experiment spec; the durations it returns are within limits.
fn controller_checks(spec: &ChaosExperimentSpec) -> Result<(), String> {
    let times = check_spec(spec)?;
    EXPERIMENT_DURATION
        .check_value("", times.duration)
        .expect("an accepted duration is within its limits");
    RECOVERY_TIMEOUT
        .check_value("", times.recovery_timeout)
        .expect("an accepted recovery timeout is within its limits");
    REVERT_TIMEOUT
        .check_value("", times.revert_timeout)
        .expect("an accepted revert timeout is within its limits");
    for probe in spec.steady_state.iter().flat_map(|s| &s.probes) {
        ProbeRunner::new(probe, "shop", None).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn experiments_never_panic_and_the_controller_accepts_what_validate_accepts(
        spec in experiment_spec()
    ) {
        faultline::cli::install_crypto_provider();
        let object = document("ChaosExperiment", spec.clone());
        let problems = validate(&object);
        // An object that bypassed the schema still reaches the controller if it deserializes.
        if let Ok(typed) = serde_json::from_value::<ChaosExperimentSpec>(spec) {
            let verdict = controller_checks(&typed);
            if problems.is_empty() {
                prop_assert_eq!(verdict, Ok(()), "validate accepted {}", object);
            }
        }
    }

    #[test]
    fn game_days_and_schedules_never_panic(
        spec in experiment_spec(),
        pause in duration_or("5m"),
        day_probe in probe(),
    ) {
        let day = json!({
            "steadyState": {"probes": [day_probe]},
            "stages": [{"name": "one", "pauseAfter": pause,
                        "experiments": [{"name": "a", "spec": spec.clone()}]},
                       {"name": "two", "experiments": [{"name": "b", "spec": spec.clone()}]}],
        });
        let object = document("GameDay", day.clone());
        let problems = validate(&object);
        if let Ok(typed) = serde_json::from_value::<GameDaySpec>(day) {
            let plan = gameday::plan::plan(&gameday::plan::Observed {
                name: "fuzz",
                spec: &typed,
                status: Default::default(),
                generation: Some(1),
                created_at: now(),
                abort_requested: None,
                approved_stage: None,
                children: vec![],
                paused: false,
                now: now(),
            });
            if problems.is_empty() {
                prop_assert!(plan.status.verdict.is_none(), "validate accepted {}: {:?}", object, plan.status);
                prop_assert!(!plan.create.is_empty());
            }
        }

        let schedule = json!({"schedule": "*/5 * * * *", "experimentTemplate": {"spec": spec}});
        let object = document("ChaosSchedule", schedule.clone());
        let problems = validate(&object);
        if let Ok(typed) = serde_json::from_value::<ChaosScheduleSpec>(schedule) {
            let plan = schedule::plan::plan(&schedule::plan::Observed {
                name: "fuzz",
                spec: &typed,
                status: Default::default(),
                generation: Some(1),
                created_at: now(),
                children: vec![],
                paused: false,
                now: now(),
            });
            let invalid = plan.status.conditions.iter().any(|c| c.reason == "InvalidSpec");
            if problems.is_empty() {
                prop_assert!(!invalid, "validate accepted {}: {:?}", object, plan.status);
            }
        }
    }
}
