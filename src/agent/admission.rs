//! Whether the agent may act on a work item (pure: no IO; the facts are inputs).
//!
//! A FaultInjection is a request to impair a pod, and anyone allowed to create one could write
//! it. So before it applies anything the agent checks, from what it knows:
//! - the object is for this node (its node label names `spec.nodeName`, one of ours);
//! - chaos is not paused cluster-wide (`faultline pause`);
//! - the pod with the target UID runs on this node under the name and namespace the injection
//!   gives, is not labelled `faultline.dev/protected=true`, and its namespace is opted in
//!   (`faultline.dev/chaos=enabled`) and not protected (`kube-system`, faultline's own,
//!   `--protected-namespace`);
//! - (the work item itself, [`vouched`]) a ChaosExperiment of that name and UID exists in the
//!   injection's namespace, owns the injection, is injecting or running, and recorded that very
//!   pod, with this injection, among its targets.
//!
//! [`consent`] holds while a fault is in place too: a namespace that drops its opt-in label, a
//! pod that gains the protected label, or a pause, revert the fault at once.
//!
//! Guarantees: the answer is `Refused` only on facts that say so; a fact the agent does not
//! have (a cache that has not seen the pod yet) gives `Unknown`, and the runner neither applies
//! nor reverts on `Unknown`.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;

use crate::api::{
    ChaosExperiment, FaultInjection, NAMESPACE_OPT_IN_LABEL, NAMESPACE_OPT_IN_VALUE, NODE_LABEL,
    PROTECTED_LABEL, Phase, TargetState,
};

/// The safety settings the agent shares with the controller (same flags, same defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// faultline's own namespace: never a target.
    pub controller_namespace: String,
    /// More namespaces that are never targets (`--protected-namespace`).
    pub protected_namespaces: BTreeSet<String>,
    /// Namespaces need not carry the opt-in label (`--allow-all-namespaces`).
    pub allow_all_namespaces: bool,
}

impl Policy {
    /// The defaults: opt-in namespaces, nothing protected beyond kube-system and faultline's
    /// own namespace.
    pub fn new(controller_namespace: &str) -> Self {
        Policy {
            controller_namespace: controller_namespace.to_string(),
            ..Policy::default()
        }
    }

    /// Whether pods of `namespace` are never targets, whatever their labels say.
    pub fn protects(&self, namespace: &str) -> bool {
        namespace == "kube-system"
            || namespace == self.controller_namespace
            || self.protected_namespaces.contains(namespace)
    }
}

/// Why the agent will not act on an injection (or keep its fault in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The `faultline.dev/node` label is missing or names another node than `spec.nodeName`.
    NodeLabelMismatch,
    /// `faultline pause` is in force.
    ChaosPaused,
    /// No ChaosExperiment of that name (and UID) in the injection's namespace.
    ExperimentNotFound,
    /// The experiment does not own the injection (no controller owner reference to it).
    NotOwnedByExperiment,
    /// The experiment is not injecting or running (it has not started, or is reverting).
    ExperimentNotRunning,
    /// The experiment did not record this pod, with this injection, as a target being injected.
    TargetNotRecorded,
    /// No pod with the target's UID runs on this node under the name and namespace given.
    PodNotOnNode,
    /// The pod's namespace is kube-system, faultline's own, or a protected one.
    NamespaceProtected,
    /// The pod's namespace does not carry `faultline.dev/chaos=enabled`.
    NamespaceNotOptedIn,
    /// The pod carries `faultline.dev/protected=true`.
    PodProtected,
}

impl Refusal {
    /// PascalCase: the Event reason, the condition reason and the metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NodeLabelMismatch => "NodeLabelMismatch",
            Refusal::ChaosPaused => "ChaosPaused",
            Refusal::ExperimentNotFound => "ExperimentNotFound",
            Refusal::NotOwnedByExperiment => "NotOwnedByExperiment",
            Refusal::ExperimentNotRunning => "ExperimentNotRunning",
            Refusal::TargetNotRecorded => "TargetNotRecorded",
            Refusal::PodNotOnNode => "PodNotOnNode",
            Refusal::NamespaceProtected => "NamespaceProtected",
            Refusal::NamespaceNotOptedIn => "NamespaceNotOptedIn",
            Refusal::PodProtected => "PodProtected",
        }
    }

    /// What is wrong, about this injection, and what to do: for status and the Event.
    pub fn explain(&self, injection: &FaultInjection) -> String {
        let spec = &injection.spec;
        let pod = format!("{}/{}", spec.target.namespace, spec.target.name);
        let experiment = &spec.experiment.name;
        let namespace = injection.namespace().unwrap_or_default();
        match self {
            Refusal::NodeLabelMismatch => format!(
                "its {NODE_LABEL} label ({}) does not name spec.nodeName {}; the faultline controller writes both. Delete this FaultInjection and let the controller create its own",
                injection
                    .labels()
                    .get(NODE_LABEL)
                    .map_or("missing", String::as_str),
                spec.node_name
            ),
            Refusal::ChaosPaused => "chaos is paused cluster-wide (`faultline pause`); nothing is applied until `faultline resume`, and the experiment has to be run again".to_string(),
            Refusal::ExperimentNotFound => format!(
                "no ChaosExperiment {namespace}/{experiment}{} stands behind it; FaultInjections are written by the faultline controller for a running experiment: create a ChaosExperiment instead",
                spec.experiment
                    .uid
                    .as_deref()
                    .map(|u| format!(" with UID {u}"))
                    .unwrap_or_default()
            ),
            Refusal::NotOwnedByExperiment => format!(
                "it is not owned by ChaosExperiment {namespace}/{experiment}; FaultInjections are written by the faultline controller: create a ChaosExperiment instead"
            ),
            Refusal::ExperimentNotRunning => format!(
                "ChaosExperiment {namespace}/{experiment} is not injecting or running; run the experiment again"
            ),
            Refusal::TargetNotRecorded => format!(
                "ChaosExperiment {namespace}/{experiment} did not record pod {pod} (UID {}) with this injection among its targets; only the pods an experiment selected are faulted",
                spec.target.uid
            ),
            Refusal::PodNotOnNode => format!(
                "no pod {pod} with UID {} runs on node {}; a replacement pod is not followed: run the experiment again",
                spec.target.uid, spec.node_name
            ),
            Refusal::NamespaceProtected => format!(
                "namespace {} is protected (kube-system, faultline's own namespace or a --protected-namespace) and its pods are never faulted",
                spec.target.namespace
            ),
            Refusal::NamespaceNotOptedIn => format!(
                "namespace {} has not opted in to chaos; label it `kubectl label namespace {} {NAMESPACE_OPT_IN_LABEL}={NAMESPACE_OPT_IN_VALUE}` and run the experiment again",
                spec.target.namespace, spec.target.namespace
            ),
            Refusal::PodProtected => format!(
                "pod {pod} is labelled {PROTECTED_LABEL}=true and is never faulted; remove the label (if that is really meant) and run the experiment again"
            ),
        }
    }

    /// The Event reason when a fault in place is reverted for this reason.
    pub fn withdrawal_reason(&self) -> &'static str {
        match self {
            Refusal::ChaosPaused => "ChaosPaused",
            Refusal::NamespaceNotOptedIn | Refusal::PodProtected | Refusal::NamespaceProtected => {
                "ConsentWithdrawn"
            }
            other => other.reason(),
        }
    }

    /// For a fault that was in place and is reverted for this reason.
    pub fn withdrawn(&self) -> &'static str {
        match self {
            Refusal::ChaosPaused => {
                "reverted: chaos was paused cluster-wide (`faultline pause`); `faultline resume` lets experiments run again"
            }
            Refusal::NamespaceNotOptedIn => {
                "reverted: the pod's namespace no longer carries faultline.dev/chaos=enabled (consent withdrawn)"
            }
            Refusal::PodProtected => {
                "reverted: the pod is now labelled faultline.dev/protected=true (consent withdrawn)"
            }
            Refusal::NamespaceProtected => "reverted: the pod's namespace is protected",
            Refusal::NodeLabelMismatch => {
                "reverted: the injection's node label no longer names its node"
            }
            Refusal::PodNotOnNode => "reverted: the target pod is no longer on this node",
            Refusal::ExperimentNotFound
            | Refusal::NotOwnedByExperiment
            | Refusal::ExperimentNotRunning
            | Refusal::TargetNotRecorded => {
                "reverted: no running experiment stands behind this injection any more"
            }
        }
    }
}

/// The agent's answer for one injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused(Refusal),
    /// A fact is missing (a cache that has not seen the pod or namespace, an API read that
    /// failed): neither apply nor revert; ask again later.
    Unknown,
}

/// A pod as the agent sees it (from its watch of the node's pods, or a fresh read).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub node_name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What [`consent`] decides on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts<'a> {
    pub paused: bool,
    /// The pod with the injection's target UID, if the agent knows one.
    pub pod: Option<&'a PodFacts>,
    /// The labels of that pod's namespace, if the agent knows the namespace.
    pub namespace_labels: Option<&'a BTreeMap<String, String>>,
}

/// Whether the agent may put (or keep) this injection's fault on its target now: the node,
/// the pause switch, the pod and its namespace. Cheap: cached facts only.
pub fn consent(
    injection: &FaultInjection,
    nodes: &[String],
    facts: &Facts<'_>,
    policy: &Policy,
) -> Verdict {
    let spec = &injection.spec;
    let labelled = injection.labels().get(NODE_LABEL);
    if labelled != Some(&spec.node_name) || !nodes.contains(&spec.node_name) {
        return Verdict::Refused(Refusal::NodeLabelMismatch);
    }
    if facts.paused {
        return Verdict::Refused(Refusal::ChaosPaused);
    }
    if policy.protects(&spec.target.namespace) {
        return Verdict::Refused(Refusal::NamespaceProtected);
    }
    let Some(pod) = facts.pod else {
        return Verdict::Unknown;
    };
    // The UID decides which pod the agent would touch: its real name, namespace and node must
    // be the ones the injection names (and the namespace checks below are about that pod).
    if pod.namespace != spec.target.namespace
        || pod.name != spec.target.name
        || pod.node_name.as_deref() != Some(spec.node_name.as_str())
    {
        return Verdict::Refused(Refusal::PodNotOnNode);
    }
    if pod.labels.get(PROTECTED_LABEL).is_some_and(|v| v == "true") {
        return Verdict::Refused(Refusal::PodProtected);
    }
    if policy.allow_all_namespaces {
        return Verdict::Allowed;
    }
    match facts.namespace_labels {
        None => Verdict::Unknown,
        Some(labels)
            if labels
                .get(NAMESPACE_OPT_IN_LABEL)
                .is_some_and(|v| v == NAMESPACE_OPT_IN_VALUE) =>
        {
            Verdict::Allowed
        }
        Some(_) => Verdict::Refused(Refusal::NamespaceNotOptedIn),
    }
}

/// Whether a running experiment stands behind the work item: `experiment` is the
/// ChaosExperiment named by `spec.experiment` in the injection's namespace (`None`: there is
/// none).
pub fn vouched(
    injection: &FaultInjection,
    experiment: Option<&ChaosExperiment>,
) -> Result<(), Refusal> {
    let spec = &injection.spec;
    let Some(experiment) = experiment else {
        return Err(Refusal::ExperimentNotFound);
    };
    let uid = experiment.uid();
    if experiment.namespace() != injection.namespace()
        || experiment.name_any() != spec.experiment.name
        || spec
            .experiment
            .uid
            .as_ref()
            .is_some_and(|u| Some(u) != uid.as_ref())
    {
        // Another object of that name (an earlier experiment's leftover, or a forgery).
        return Err(Refusal::ExperimentNotFound);
    }
    let owned = injection.owner_references().iter().any(|o| {
        o.controller == Some(true)
            && o.kind == "ChaosExperiment"
            && o.api_version == crate::api::GROUP_VERSION
            && Some(&o.uid) == uid.as_ref()
    });
    if !owned {
        return Err(Refusal::NotOwnedByExperiment);
    }
    let Some(status) = &experiment.status else {
        return Err(Refusal::ExperimentNotRunning);
    };
    if !matches!(status.phase, Phase::Injecting | Phase::Running) {
        return Err(Refusal::ExperimentNotRunning);
    }
    let name = injection.name_any();
    let recorded = status.targets.iter().any(|t| {
        t.uid == spec.target.uid
            && t.namespace == spec.target.namespace
            && t.name == spec.target.name
            && t.injection.as_deref() == Some(name.as_str())
            && matches!(t.state, TargetState::Injecting | TargetState::Injected)
    });
    if !recorded {
        return Err(Refusal::TargetNotRecorded);
    }
    Ok(())
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
