//! The faultline API: the custom resources users write and the controller and agent exchange.
//!
//! This module is the contract. It holds types, constants and tiny accessors only: no client,
//! no tokio, no IO. Every doc comment on a field becomes `kubectl explain` text, so write them
//! for an SRE reading a terminal. Validation that one field cannot express alone lives next to
//! the field as a CEL rule (`x-kubernetes-validations`), so the API server, `faultline
//! validate` and the sandbox all enforce the same rules.

// kube's `printcolumn(name = .., type_ = ..)` repeats keys across columns by design; clippy
// reads the repeats as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod bounds;
mod common;
mod duration;
pub mod duration_bounds;
mod experiment;
mod fault;
mod gameday;
mod injection;
pub mod packed_records;
mod probe;
pub mod rules;
mod schedule;
mod selector;
mod status;

pub use common::{Condition, ConditionStatus, GoDuration, ObjectRef, PodRef};
pub use duration::{
    DurationError, LONGEST_GO_DURATION, format_go_duration, format_short, parse_go_duration,
};
pub use experiment::{AbortBegun, AbortPolicy, ChaosExperiment, ChaosExperimentSpec, SteadyState};
pub use fault::{
    BandwidthFault, Direction, Fault, FaultKind, LatencyFault, LossFault, NetworkScope,
    PartitionFault, PodKillFault, PodKillMethod,
};
pub use gameday::{
    GameDay, GameDaySpec, GameDayStage, GameDayStageStatus, GameDayStatus, OnFailure,
    StageExperiment,
};
pub use injection::{
    ADMITTED_CONDITION, FaultInjection, FaultInjectionSpec, FaultInjectionStatus, InjectionPhase,
    NetworkFault, NetworkFaultKind,
};
pub use probe::{
    ComparisonOperator, ConditionCheck, EmptyResultPolicy, FieldCheck, HttpProbe, KubernetesProbe,
    Probe, ProbeCheck, ProbePhase, PrometheusProbe, ReadyPodsCheck,
};
pub use schedule::{
    AllowedWindow, ChaosSchedule, ChaosScheduleSpec, ChaosScheduleStatus, ConcurrencyPolicy,
    ExperimentTemplate, TemplateMetadata, Weekday,
};
pub use selector::{SelectionMode, TargetSelector};
pub use status::{
    ChaosExperimentStatus, HypothesisState, Phase, ProbeGap, ProbeSample, ProbeStatus,
    RevertReceipt, TargetRecord, TargetState, TimelineEntry, Verdict,
};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every faultline resource.
pub const API_GROUP: &str = "faultline.dev";
/// The one served and stored version.
pub const API_VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const GROUP_VERSION: &str = "faultline.dev/v1alpha1";
/// Held by the controller on experiments until every fault is confirmed reverted.
pub const EXPERIMENT_FINALIZER: &str = "faultline.dev/revert";
/// Held by the node agent on a FaultInjection until its rules are gone from the kernel.
pub const AGENT_FINALIZER: &str = "faultline.dev/agent-cleanup";
/// The field manager for every server-side apply the controller makes.
pub const FIELD_MANAGER: &str = "faultline-controller";
/// Namespace label that opts a namespace in to chaos (unless `--allow-all-namespaces`).
pub const NAMESPACE_OPT_IN_LABEL: &str = "faultline.dev/chaos";
/// The value of [`NAMESPACE_OPT_IN_LABEL`] that opts in.
pub const NAMESPACE_OPT_IN_VALUE: &str = "enabled";
/// Pods with this label set to `"true"` are never targets.
pub const PROTECTED_LABEL: &str = "faultline.dev/protected";
/// Setting this annotation (any value) on an experiment asks the controller to abort it.
pub const ABORT_ANNOTATION: &str = "faultline.dev/abort";
/// FaultInjections carry the node they must be applied on in this label, so that each agent
/// can watch only its own work.
pub const NODE_LABEL: &str = "faultline.dev/node";
/// Annotation the node agent writes on its Node: the mechanisms the node's kernel offers, comma
/// separated, from `netem`, `nfqueue`, `tbf`, `nftables`, `iptables`. The controller refuses a
/// fault the target's node cannot do before injecting anything.
pub const NODE_CAPABILITIES_ANNOTATION: &str = "faultline.dev/capabilities";
/// Label the controller puts on an experiment (`"true"`) when its faults are to come out (it
/// is Recovering or Aborting). The node agents watch for it: each reverts the experiment's
/// faults on its node in one pass and writes one [`RevertReceipt`] for the node, instead of
/// waiting for a deletion per FaultInjection.
pub const REVERTING_LABEL: &str = "faultline.dev/reverting";
/// Annotation the controller writes together with [`REVERTING_LABEL`] when it aborts, before
/// the abort is recorded in status (the agents start reverting one status write sooner): the
/// abort's reason, message and start as JSON ([`AbortBegun`]). A controller that stopped
/// between the two finds the abort there and carries it on.
pub const ABORTING_ANNOTATION: &str = "faultline.dev/aborting";
/// The field manager of a node agent's server-side apply of its revert receipt (the node is
/// appended: each agent owns its own entry).
pub const AGENT_FIELD_MANAGER: &str = "faultline-agent";
/// Label on objects created for an experiment, pointing back to it by name.
pub const EXPERIMENT_LABEL: &str = "faultline.dev/experiment";
/// Label on a FaultInjection: the index of the experiment's fault it carries.
pub const FAULT_INDEX_LABEL: &str = "faultline.dev/fault-index";
/// Label on experiments a GameDay created: the GameDay's name.
pub const GAMEDAY_LABEL: &str = "faultline.dev/gameday";
/// Label on experiments a GameDay created: the stage they belong to.
pub const STAGE_LABEL: &str = "faultline.dev/stage";
/// Label on experiments a GameDay created: which run of the GameDay (1, 2, ... for a scheduled
/// one) they belong to.
pub const GAMEDAY_RUN_LABEL: &str = "faultline.dev/gameday-run";
/// Annotation on a GameDay that approves the stage it names (`requireApproval`).
pub const APPROVE_STAGE_ANNOTATION: &str = "faultline.dev/approve-stage";
/// Label on experiments a ChaosSchedule created: the schedule's name.
pub const SCHEDULE_LABEL: &str = "faultline.dev/schedule";
/// Annotation on experiments a ChaosSchedule created: the scheduled time (RFC 3339) they ran
/// for.
pub const SCHEDULED_AT_ANNOTATION: &str = "faultline.dev/scheduled-at";
/// Category every faultline CRD belongs to: `kubectl get chaos` lists them all.
pub const CATEGORY: &str = "chaos";

/// Every CRD faultline defines, in a stable order (the order `faultline crds` prints).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    [
        ChaosExperiment::crd(),
        ChaosSchedule::crd(),
        GameDay::crd(),
        FaultInjection::crd(),
    ]
    .into_iter()
    .map(unwrap_descriptions)
    .collect()
}

/// Doc comments are wrapped at 100 columns in the source; `kubectl explain` wraps text itself,
/// so a source line break inside a paragraph would show up as a ragged break. Paragraph breaks
/// (blank lines) stay.
fn unwrap_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if key == "description" => {
                            *text = unwrap_paragraphs(text);
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

fn unwrap_paragraphs(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_crd_generates_with_status_subresource_and_chaos_category() {
        for crd in all_crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            assert!(name.ends_with(".faultline.dev"), "{name}");
            let names = &crd.spec.names;
            assert_eq!(
                names.categories.as_deref(),
                Some(&[CATEGORY.to_string()][..]),
                "{name}"
            );
            assert!(
                names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
                "{name}"
            );
            let version = &crd.spec.versions[0];
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
            assert!(
                version
                    .additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| c.len() >= 2)
            );
        }
    }

    #[test]
    fn descriptions_are_unwrapped_paragraphs() {
        assert_eq!(
            unwrap_paragraphs("one\ntwo\n\nthree\n four"),
            "one two\n\nthree four"
        );
        let text = serde_json::to_string(&all_crds()).unwrap();
        assert!(text.contains("Supported keys: `spec.nodeName`, `status.phase`, `metadata.name`."));
    }

    #[test]
    fn short_names_do_not_collide_with_chaos_mesh_or_litmus() {
        // Chaos Mesh and LitmusChaos CRDs either declare no short names or use these; a user
        // with both installed must still get ours unambiguously.
        let taken = [
            "podchaos",
            "networkchaos",
            "chaosengine",
            "ce",
            "chaosresult",
            "cr",
            "ces",
        ];
        for crd in all_crds() {
            for short in crd.spec.names.short_names.unwrap_or_default() {
                assert!(!taken.contains(&short.as_str()), "{short} is taken");
            }
        }
    }
}
