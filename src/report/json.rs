//! The JSON report: the experiment's spec and status as the API serves them (target records
//! always a list, also where the API serves them packed), plus the computed
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
use crate::api::{ChaosExperiment, GROUP_VERSION};

/// The report of one experiment.
pub fn report(experiment: &ChaosExperiment) -> Value {
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "ExperimentReport",
        "name": experiment.name_any(),
        "namespace": experiment.namespace().unwrap_or_default(),
        "uid": experiment.uid(),
        "summary": summarize(experiment),
        "spec": experiment.spec,
        "status": experiment
            .status
            .clone()
            .unwrap_or_default()
            .to_plain_json()
            .unwrap_or_default(),
    })
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
