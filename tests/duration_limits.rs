//! The duration rules against the API server: the four CRDs install (on a real server, their
//! estimated CEL cost is within its budget), and for every bounded field the server accepts and
//! rejects exactly what `faultline validate` does: at each limit, a nanosecond past it, the
//! poison values, every unit spelling. Rejections name the field and are 422s, never 500s.
//! Runs against the sandbox and, in the real control plane's pass, against kube-apiserver.

mod common;

use std::time::Duration;

use faultline::{
    api::{
        all_crds,
        duration_bounds::{BOUNDED_FIELDS, DurationBounds, Minimum},
        format_go_duration,
    },
    validate::{Severity, validate_documents},
};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, PostParams},
};
use serde_json::{Value, json};

use common::cluster::TestCluster;

const NAMESPACE: &str = "faultline-duration-bounds";

/// A valid experiment spec in which no cross-field check fires for any value of one field
/// within its limits (a probe that does not run during the faults, so any duration fits its
/// 1h interval; a timeout below any interval, a jitter below any latency, each the other's
/// limit at most).
fn experiment_spec() -> Value {
    json!({
        "duration": "24h",
        "faults": [
            {"podKill": {"interval": "30s"}},
            {"networkLatency": {"latency": "1m", "jitter": "0", "to": {"cidrs": ["10.0.0.0/8"]}}},
        ],
        "steadyState": {
            "recoveryTimeout": "60s",
            "probes": [{"name": "web", "http": {"url": "http://web/", "maxLatency": "300ms"},
                        "interval": "1h", "timeout": "1ns", "phases": ["before", "after"]}],
        },
        "abort": {"revertTimeout": "30s"},
    })
}

/// Every bounded field, as (kind, JSON pointer into the object, field path as messages give
/// it).
fn fields() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("ChaosExperiment", "/spec/duration", "spec.duration"),
        (
            "ChaosExperiment",
            "/spec/faults/0/podKill/interval",
            "spec.faults[0].podKill.interval",
        ),
        (
            "ChaosExperiment",
            "/spec/faults/1/networkLatency/latency",
            "spec.faults[1].networkLatency.latency",
        ),
        (
            "ChaosExperiment",
            "/spec/faults/1/networkLatency/jitter",
            "spec.faults[1].networkLatency.jitter",
        ),
        (
            "ChaosExperiment",
            "/spec/steadyState/recoveryTimeout",
            "spec.steadyState.recoveryTimeout",
        ),
        (
            "ChaosExperiment",
            "/spec/steadyState/probes/0/interval",
            "spec.steadyState.probes[0].interval",
        ),
        (
            "ChaosExperiment",
            "/spec/steadyState/probes/0/timeout",
            "spec.steadyState.probes[0].timeout",
        ),
        (
            "ChaosExperiment",
            "/spec/steadyState/probes/0/http/maxLatency",
            "spec.steadyState.probes[0].http.maxLatency",
        ),
        (
            "ChaosExperiment",
            "/spec/abort/revertTimeout",
            "spec.abort.revertTimeout",
        ),
        (
            "GameDay",
            "/spec/stages/0/pauseAfter",
            "spec.stages[0].pauseAfter",
        ),
        (
            "GameDay",
            "/spec/stages/0/experiments/0/spec/duration",
            "spec.stages[0].experiments[0].spec.duration",
        ),
        (
            "ChaosSchedule",
            "/spec/experimentTemplate/spec/faults/0/podKill/interval",
            "spec.experimentTemplate.spec.faults[0].podKill.interval",
        ),
    ]
}

fn object(kind: &str) -> Value {
    let spec = match kind {
        "ChaosExperiment" => experiment_spec(),
        "GameDay" => json!({"stages": [{"name": "one", "pauseAfter": "5m",
                                        "experiments": [{"name": "a", "spec": experiment_spec()}]}]}),
        "ChaosSchedule" => json!({"schedule": "@daily",
                                  "experimentTemplate": {"spec": experiment_spec()}}),
        other => panic!("{other}"),
    };
    json!({"apiVersion": "faultline.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "bounds", "namespace": NAMESPACE}, "spec": spec})
}

/// The values to try on a field: its limits and a nanosecond past them, zero, the poison
/// values, every unit spelling, and what the CRD's pattern refuses although Go reads it.
fn values(bounds: &DurationBounds) -> Vec<String> {
    let ns = Duration::from_nanos(1);
    let mut values: Vec<String> = vec![
        format_go_duration(bounds.max),
        format_go_duration(bounds.max + ns),
        format!("{}ns", bounds.max.as_nanos()),
        format!("{}ns", bounds.max.as_nanos() + 1),
        format!("{}s", bounds.max.as_secs_f64()),
    ];
    match bounds.min {
        Minimum::AtLeast(min) => {
            values.push(format_go_duration(min));
            values.push(format_go_duration(min - ns));
        }
        Minimum::AboveZero | Minimum::Zero => {
            values.extend(["1ns".to_string(), "0".to_string(), "0s".to_string()]);
        }
    }
    values.extend(
        [
            "999999999999999999999h",
            "5000000000000000h",
            "100000000h",
            "2562048h",
            "99999h",
            "100000h",
            "1h23h0.0000000001s",
            "24h0.000000001s",
            "1500ms",
            "5µs",
            "5μs",
            "5us",
            "1.5s",
            "fast",
            "",
            "+5s",
            "-5s",
            ".5s",
            "5.s",
            "0000000000001s",
            "1h 30m",
            "1d",
        ]
        .map(String::from),
    );
    values
}

/// `faultline validate`'s problems at `path`.
fn validate_at(object: &Value, path: &str) -> Vec<String> {
    let text = serde_json::to_string_pretty(object).unwrap();
    validate_documents("bounds.yaml", &text)
        .into_iter()
        .filter(|p| p.severity == Severity::Error && p.path == path)
        .map(|p| p.message)
        .collect()
}

#[tokio::test]
async fn the_api_server_and_faultline_validate_agree_on_every_duration_at_its_limits() {
    let cluster = TestCluster::start().await;
    // All four CRDs install: the server refuses a CRD whose estimated CEL cost is over budget.
    cluster.install_crds(&all_crds()).await;
    let client = cluster.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}})).unwrap();
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("{e}"),
    }

    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut disagreements = Vec::new();
    let (mut checked, mut accepted) = (0, 0);
    for (kind, pointer, path) in fields() {
        let bounds = faultline::api::duration_bounds::bounds_at(path)
            .unwrap_or_else(|| panic!("{path} has no limits"));
        assert!(BOUNDED_FIELDS.iter().any(|(_, _, b)| *b == bounds));
        let crd = all_crds()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        let resource = ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("faultline.dev", "v1alpha1", kind),
            &crd.spec.names.plural,
        );
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
        for value in values(bounds) {
            let mut object = object(kind);
            *object.pointer_mut(pointer).unwrap() = Value::String(value.clone());
            let ours = validate_at(&object, path);
            let dynamic: DynamicObject = serde_json::from_value(object).unwrap();
            let server = match api.create(&dry_run, &dynamic).await {
                Ok(_) => None,
                Err(kube::Error::Api(status)) => {
                    assert_eq!(status.code, 422, "{path} = {value:?}: {status:?}");
                    assert!(
                        status.message.contains(&format!("{path}: ")),
                        "{path} = {value:?}: the server's message does not name the field: {}",
                        status.message
                    );
                    assert!(
                        !status.message.contains("evaluating rule"),
                        "{path} = {value:?}: the rule failed to evaluate: {}",
                        status.message
                    );
                    Some(status.message)
                }
                Err(e) => panic!("{path} = {value:?}: {e}"),
            };
            if server.is_some() == ours.is_empty() {
                disagreements.push(format!(
                    "{path} = {value:?}: server {server:?}, faultline validate {ours:?}"
                ));
            }
            checked += 1;
            accepted += usize::from(server.is_none());
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {checked} disagree:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    // Both verdicts happen for every field: the limits themselves pass, a nanosecond past fails.
    assert!(accepted >= 3 * fields().len() && checked - accepted >= 20 * fields().len());
    println!(
        "{checked} values agree: {accepted} accepted, {} rejected",
        checked - accepted
    );
    cluster.shutdown().await;
}
