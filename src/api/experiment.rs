//! `ChaosExperiment`: one fault campaign against a set of pods under a steady-state hypothesis.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{
    common::GoDuration, duration_bounds, fault::Fault, probe::Probe, selector::TargetSelector,
    status::ChaosExperimentStatus,
};

/// A chaos experiment: select targets, check the steady-state hypothesis, inject the faults for
/// `duration` while the probes keep watching, revert, and check that the system recovers.
/// The experiment aborts and reverts everything the moment the hypothesis breaks.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "ChaosExperiment",
    doc = "A chaos experiment: faults injected into selected pods for a duration, under a steady-state hypothesis that aborts and reverts them when it breaks.",
    plural = "chaosexperiments",
    singular = "chaosexperiment",
    shortname = "fex",
    category = "chaos",
    namespaced,
    status = "ChaosExperimentStatus",
    derive = "Default",
    derive = "PartialEq",
    // The spec is what the experiment does; once the controller has started it (status is
    // written), an edit could not be applied to faults already in, and ignoring it would let
    // status claim what is not happening. So the API server refuses it. (Before the first
    // status, the controller has acted on nothing and reads the edited spec.)
    validation = kube::core::Rule::new("!has(oldSelf.status) || self.spec == oldSelf.spec")
        .message("spec cannot change once the experiment has started: its faults and targets are already chosen. Abort it (faultline abort NAME) and create a new experiment (faultline run creates a fresh one each time)")
        .reason(kube::core::Reason::FieldValueForbidden)
        .field_path(".spec"),
    validation = super::rules::experiment_name_fits(),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the experiment is in its lifecycle"
    ),
    printcolumn(
        name = "Verdict",
        type_ = "string",
        json_path = ".status.verdict",
        description = "Passed, Failed, Aborted, Error, Inconclusive or DryRun"
    ),
    printcolumn(
        name = "Hypothesis",
        type_ = "string",
        json_path = ".status.hypothesis",
        description = "What the probes say now: Holding, Violated, Undecided or NotChecked"
    ),
    printcolumn(
        name = "Last-Check",
        type_ = "date",
        json_path = ".status.lastCheckedAt",
        description = "How long ago a probe last checked"
    ),
    printcolumn(
        name = "Checks",
        type_ = "string",
        json_path = ".status.checks",
        priority = 1,
        description = "Probe checks passed and failed so far"
    ),
    printcolumn(
        name = "Targets",
        type_ = "integer",
        json_path = ".status.targetCount",
        description = "Pods selected as targets"
    ),
    printcolumn(
        name = "Injected",
        type_ = "integer",
        json_path = ".status.faultsInjected",
        priority = 1,
        description = "Faults that went in (each round of a repeating pod kill counts)"
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".spec.duration",
        description = "How long faults stay injected"
    ),
    printcolumn(
        name = "Abort-Latency",
        type_ = "string",
        json_path = ".status.abortLatency",
        priority = 1,
        description = "From the hypothesis violation to every fault confirmed reverted"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        priority = 1,
        description = "Why the experiment ended as it did"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = super::rules::during_probes_run())]
pub struct ChaosExperimentSpec {
    /// How long the faults stay injected, e.g. `60s` or `5m`: at least 1s, at most 24h (run
    /// longer campaigns as a ChaosSchedule). The node agent enforces this deadline by itself
    /// even if the controller is gone.
    #[schemars(transform = duration_bounds::EXPERIMENT_DURATION.in_schema())]
    pub duration: GoDuration,
    /// Which pods to target.
    #[serde(default)]
    pub target: TargetSelector,
    /// The faults to inject into every target, at the same time. At least one.
    #[schemars(length(min = 1, max = 16))]
    pub faults: Vec<Fault>,
    /// The steady-state hypothesis: probes that must hold before, during and after the faults.
    /// Without it the experiment only injects and reverts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<SteadyState>,
    /// When and how to abort.
    #[serde(default)]
    pub abort: AbortPolicy,
    /// Resolve targets, run preflight checks and the before-hypothesis, record what would be
    /// done, and inject nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Succeed without injecting when no pod matches, instead of failing preflight.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty_targets: bool,
}

/// The steady-state hypothesis (Chaos Toolkit's term): what "healthy" means, as probes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SteadyState {
    /// The probes; every one must hold in the phases it runs in. Names are unique.
    #[schemars(length(min = 1, max = 32), transform = super::bounds::list_map_by_name)]
    pub probes: Vec<Probe>,
    /// After the faults are reverted, how long the after-probes have to hold again before the
    /// experiment fails. Default 60s; at least 1s, at most 1h.
    #[serde(default = "default_recovery_timeout")]
    #[schemars(transform = duration_bounds::RECOVERY_TIMEOUT.in_schema())]
    pub recovery_timeout: GoDuration,
}

fn default_recovery_timeout() -> GoDuration {
    GoDuration::from("60s")
}

/// When the experiment aborts (AWS FIS calls these stop conditions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortPolicy {
    /// Abort and revert as soon as a during-probe exceeds its failure threshold. Default true;
    /// false records the violation and keeps the faults in until the duration ends.
    #[serde(default = "yes")]
    pub on_hypothesis_failure: bool,
    /// How long reverting may take before the experiment is marked Error and every remaining
    /// fault is reported by name. Default 30s; at least 1s, at most 1h.
    #[serde(default = "default_revert_timeout")]
    #[schemars(transform = duration_bounds::REVERT_TIMEOUT.in_schema())]
    pub revert_timeout: GoDuration,
}

impl Default for AbortPolicy {
    fn default() -> Self {
        AbortPolicy {
            on_hypothesis_failure: true,
            revert_timeout: default_revert_timeout(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_revert_timeout() -> GoDuration {
    GoDuration::from("30s")
}

impl ChaosExperimentSpec {
    /// The steady-state probes (none without `steadyState`).
    pub fn probes(&self) -> &[Probe] {
        self.steady_state
            .as_ref()
            .map(|s| s.probes.as_slice())
            .unwrap_or_default()
    }
}

impl ChaosExperiment {
    /// Whether someone asked for this experiment to stop (`faultline abort`).
    pub fn abort_requested(&self) -> bool {
        self.abort_reason().is_some()
    }

    /// The abort a controller began (the agents told, see [`super::ABORTING_ANNOTATION`]);
    /// `None` when there is none or its annotation does not parse.
    pub fn abort_begun(&self) -> Option<AbortBegun> {
        let labelled = self
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(super::REVERTING_LABEL))
            .is_some_and(|v| v == "true");
        let text = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::ABORTING_ANNOTATION))?;
        labelled.then(|| serde_json::from_str(text).ok()).flatten()
    }

    /// The reason given with the abort request (the annotation's value, possibly empty), if
    /// someone asked for this experiment to stop.
    pub fn abort_reason(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(super::ABORT_ANNOTATION))
            .map(String::as_str)
    }
}

/// An abort as the controller announces it with the reverting label (the value of
/// [`super::ABORTING_ANNOTATION`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortBegun {
    /// The PascalCase reason the status will carry, e.g. `ProbeFailed`.
    pub reason: String,
    pub message: String,
    /// When the abort began (for a broken hypothesis: when the violation was seen).
    pub since: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod abort_begun_tests {
    use super::*;
    use crate::api::{ABORTING_ANNOTATION, REVERTING_LABEL};

    fn experiment(label: Option<&str>, annotation: Option<&str>) -> ChaosExperiment {
        let mut experiment = ChaosExperiment::new("x", ChaosExperimentSpec::default());
        if let Some(label) = label {
            experiment.metadata.labels =
                Some([(REVERTING_LABEL.to_string(), label.to_string())].into());
        }
        if let Some(annotation) = annotation {
            experiment.metadata.annotations =
                Some([(ABORTING_ANNOTATION.to_string(), annotation.to_string())].into());
        }
        experiment
    }

    #[test]
    fn an_abort_is_begun_only_with_the_label_and_a_readable_cause() {
        let begun = AbortBegun {
            reason: "ProbeFailed".into(),
            message: "probe web: status 503".into(),
            since: "2026-12-05T08:00:00Z".parse().unwrap(),
        };
        let text = serde_json::to_string(&begun).unwrap();
        assert_eq!(
            experiment(Some("true"), Some(&text)).abort_begun(),
            Some(begun)
        );
        assert_eq!(experiment(None, Some(&text)).abort_begun(), None);
        assert_eq!(experiment(Some("false"), Some(&text)).abort_begun(), None);
        assert_eq!(experiment(Some("true"), None).abort_begun(), None);
        assert_eq!(
            experiment(Some("true"), Some("{not json")).abort_begun(),
            None
        );
    }
}
