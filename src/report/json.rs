//! The JSON report: the experiment's spec and status as the API serves them (target records
//! always a list, also where the API serves them packed; probe URLs with their secrets masked,
//! see [`probes::redact`](crate::probes::redact)), plus the computed
//! [`ExperimentSummary`](super::ExperimentSummary).
//!
//! Shape (field names are stable; new fields may be added):
//! ```text
//! { "apiVersion": "faultline.dev/v1alpha1", "kind": "ExperimentReport",
//!   "name", "namespace", "uid", "summary": {...}, "spec": {...}, "status": {...} }
//! { "apiVersion": "faultline.dev/v1alpha1", "kind": "ExperimentReportList", "items": [...] }
//! ```

use kube::ResourceExt;
use serde_json::{Value, json};

use super::summarize;
use crate::api::{ChaosExperiment, ChaosExperimentSpec, GROUP_VERSION};
use crate::probes::redact;

/// The report of one experiment.
pub fn report(experiment: &ChaosExperiment) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "ExperimentReport",
        "name": experiment.name_any(),
        "namespace": experiment.namespace().unwrap_or_default(),
        "uid": experiment.uid(),
        "summary": summarize(experiment),
        "spec": shown_spec(&experiment.spec),
        "status": experiment
            .status
            .clone()
            .unwrap_or_default()
            .to_plain_json()
            .unwrap_or_default(),
    })
}

/// The spec with every probe URL and credential header redacted: a report travels further (CI
/// artifacts, PR comments) than the experiment is readable, and a URL may carry a password or a
/// token.
fn shown_spec(spec: &ChaosExperimentSpec) -> ChaosExperimentSpec {
    let mut spec = spec.clone();
    for probe in spec
        .steady_state
        .iter_mut()
        .flat_map(|s| s.probes.iter_mut())
    {
        if let Some(http) = &mut probe.http {
            http.url = redact::url_text(&http.url);
            for (name, value) in &mut http.headers {
                if redact::is_secret_header(name) {
                    *value = redact::MASK.to_string();
                }
            }
        }
        if let Some(prometheus) = &mut probe.prometheus {
            prometheus.url = redact::url_text(&prometheus.url);
        }
    }
    spec
}

/// The reports of several experiments (one run), in the order given.
pub fn report_list(experiments: &[ChaosExperiment]) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "ExperimentReportList",
        "items": experiments.iter().map(report).collect::<Vec<_>>(),
    })
}

/// Pretty-printed, with a final newline.
pub fn to_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}
