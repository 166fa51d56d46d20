//! Target selection: which pods an experiment may touch. Pure: the caller lists pods and
//! namespaces; this module decides. No client, no clock, no global randomness (the seed is an
//! input and is recorded in status so a run can be reproduced).
//!
//! Safety rules applied here, whatever the experiment says:
//! - a namespace is eligible only when labelled `faultline.dev/chaos=enabled`, unless the
//!   controller runs with `--allow-all-namespaces`;
//! - `kube-system`, the controller's own namespace and `--protected-namespace`s are never
//!   eligible;
//! - pods labelled `faultline.dev/protected=true` are never targets;
//! - a selection larger than the experiment's `maxTargets` or the controller's cap is refused
//!   as a whole (nothing is injected), never silently truncated.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::{
    NAMESPACE_OPT_IN_LABEL, NAMESPACE_OPT_IN_VALUE, PROTECTED_LABEL, SelectionMode, TargetSelector,
};

/// The controller-wide safety settings.
#[derive(Clone, Debug, Default)]
pub struct SafetyPolicy {
    /// Skip the namespace opt-in label check (`--allow-all-namespaces`).
    pub allow_all_namespaces: bool,
    /// The controller's own namespace, never a target.
    pub controller_namespace: String,
    /// A cap on targets per experiment that applies on top of the experiment's `maxTargets`.
    pub max_targets: Option<usize>,
    /// More namespaces that are never targets (`--protected-namespace`), as the chart's
    /// admission policies refuse them too.
    pub protected_namespaces: Vec<String>,
}

/// A selected pod, with what later steps need to act on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node_name: Option<String>,
    pub pod_ip: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The chosen targets, sorted by namespace and name.
    pub targets: Vec<Target>,
    /// How many pods matched before the mode picked among them.
    pub matched: usize,
}

/// Why no selection could be made. Each message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    #[error("namespace {namespace} is not opted in to chaos: label it with {label}={value} (kubectl label namespace {namespace} {label}={value})", label = NAMESPACE_OPT_IN_LABEL, value = NAMESPACE_OPT_IN_VALUE)]
    NamespaceNotOptedIn { namespace: String },
    #[error("namespace {namespace} is never a chaos target ({why})")]
    NamespaceForbidden {
        namespace: String,
        why: &'static str,
    },
    #[error("spec.target.labelSelector: {0}")]
    InvalidSelector(String),
    #[error("spec.target.fieldSelectors: {0}")]
    InvalidFieldSelector(String),
    #[error("spec.target.value: mode {mode:?} needs a value")]
    MissingValue { mode: SelectionMode },
    #[error(
        "the selection has {selected} pods, over the cap of {cap} ({source_of_cap}); narrow the selector or raise the cap"
    )]
    OverCap {
        selected: usize,
        cap: usize,
        source_of_cap: &'static str,
    },
}

/// Selects the targets among `pods`. `namespaces` are the Namespace objects the experiment's
/// target namespaces resolve to (for the opt-in label); `experiment_namespace` is used when the
/// selector names none.
pub fn select_targets(
    spec: &TargetSelector,
    experiment_namespace: &str,
    namespaces: &[Namespace],
    pods: &[Pod],
    policy: &SafetyPolicy,
    seed: u64,
) -> Result<Selection, SelectionError> {
    let wanted = target_namespaces(spec, experiment_namespace);
    for namespace in &wanted {
        check_namespace(namespace, namespaces, policy)?;
    }
    let selector = spec
        .label_selector
        .as_ref()
        .map(LabelMatcher::new)
        .transpose()?;
    for key in spec.field_selectors.keys() {
        if !matches!(
            key.as_str(),
            "spec.nodeName" | "status.phase" | "metadata.name"
        ) {
            return Err(SelectionError::InvalidFieldSelector(format!(
                "{key} is not supported (use spec.nodeName, status.phase or metadata.name)"
            )));
        }
    }

    let mut candidates: Vec<Target> = pods
        .iter()
        .filter(|pod| {
            let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
            wanted.iter().any(|w| w == ns)
        })
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| !is_protected(pod))
        .filter(|pod| {
            selector
                .as_ref()
                .is_none_or(|s| s.matches(pod.metadata.labels.as_ref()))
        })
        .filter(|pod| matches_fields(pod, &spec.field_selectors))
        .filter(|pod| spec.include_not_ready || is_running_and_ready(pod))
        .map(to_target)
        .collect();
    candidates.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let matched = candidates.len();

    let count = count_for_mode(spec, matched, seed)?;
    let mut chosen = if count >= matched {
        candidates
    } else {
        pick(candidates, count, seed)
    };
    chosen.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));

    let caps = [
        (
            spec.max_targets.and_then(|m| usize::try_from(m).ok()),
            "spec.target.maxTargets",
        ),
        (policy.max_targets, "the controller's --max-targets"),
    ];
    for (cap, source_of_cap) in caps {
        if let Some(cap) = cap.filter(|cap| chosen.len() > *cap) {
            return Err(SelectionError::OverCap {
                selected: chosen.len(),
                cap,
                source_of_cap,
            });
        }
    }
    Ok(Selection {
        targets: chosen,
        matched,
    })
}

/// The namespaces a selector covers: its own list, or the experiment's namespace.
pub fn target_namespaces(spec: &TargetSelector, experiment_namespace: &str) -> Vec<String> {
    if spec.namespaces.is_empty() {
        vec![experiment_namespace.to_string()]
    } else {
        let mut namespaces = spec.namespaces.clone();
        namespaces.sort();
        namespaces.dedup();
        namespaces
    }
}

fn check_namespace(
    namespace: &str,
    namespaces: &[Namespace],
    policy: &SafetyPolicy,
) -> Result<(), SelectionError> {
    if namespace == "kube-system" {
        return Err(SelectionError::NamespaceForbidden {
            namespace: namespace.into(),
            why: "the cluster's own components run there",
        });
    }
    if namespace == policy.controller_namespace {
        return Err(SelectionError::NamespaceForbidden {
            namespace: namespace.into(),
            why: "faultline's own controller runs there",
        });
    }
    if policy.protected_namespaces.iter().any(|p| p == namespace) {
        return Err(SelectionError::NamespaceForbidden {
            namespace: namespace.into(),
            why: "the controller runs with --protected-namespace for it",
        });
    }
    if policy.allow_all_namespaces {
        return Ok(());
    }
    let opted_in = namespaces.iter().any(|ns| {
        ns.metadata.name.as_deref() == Some(namespace)
            && ns
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NAMESPACE_OPT_IN_LABEL))
                .is_some_and(|v| v == NAMESPACE_OPT_IN_VALUE)
    });
    if opted_in {
        Ok(())
    } else {
        Err(SelectionError::NamespaceNotOptedIn {
            namespace: namespace.into(),
        })
    }
}

fn is_protected(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(PROTECTED_LABEL))
        .is_some_and(|v| v == "true")
}

/// Running, and the `Ready` condition is True.
pub fn is_running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn matches_fields(pod: &Pod, fields: &BTreeMap<String, String>) -> bool {
    fields.iter().all(|(key, want)| {
        let actual = match key.as_str() {
            "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            "status.phase" => pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            "metadata.name" => pod.metadata.name.as_deref(),
            _ => None,
        };
        actual == Some(want.as_str())
    })
}

fn to_target(pod: &Pod) -> Target {
    Target {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
    }
}

/// How many pods the mode asks for, given `matched` candidates.
fn count_for_mode(
    spec: &TargetSelector,
    matched: usize,
    seed: u64,
) -> Result<usize, SelectionError> {
    let value = || {
        spec.value
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(SelectionError::MissingValue { mode: spec.mode })
    };
    let percent_of = |percent: usize| (matched * percent.min(100) / 100).max(1).min(matched);
    Ok(match spec.mode {
        SelectionMode::All => matched,
        SelectionMode::One => matched.min(1),
        SelectionMode::Fixed => value()?.min(matched),
        SelectionMode::FixedPercent => percent_of(value()?),
        SelectionMode::RandomMaxPercent => {
            let max = percent_of(value()?);
            if max == 0 {
                0
            } else {
                1 + (SplitMix64(seed ^ 0x5eed).next() as usize) % max
            }
        }
    })
}

/// A seeded partial Fisher-Yates shuffle. The generator is defined here (SplitMix64) rather
/// than taken from a crate so that a recorded seed reproduces the same choice forever.
fn pick(mut candidates: Vec<Target>, count: usize, seed: u64) -> Vec<Target> {
    let mut rng = SplitMix64(seed);
    for i in 0..count {
        let remaining = (candidates.len() - i) as u64;
        let j = i + (rng.next() % remaining) as usize;
        candidates.swap(i, j);
    }
    candidates.truncate(count);
    candidates
}

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// A compiled `metav1.LabelSelector`.
#[derive(Clone, Debug)]
pub struct LabelMatcher {
    requirements: Vec<(String, Requirement)>,
}

#[derive(Clone, Debug)]
enum Requirement {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

impl LabelMatcher {
    pub fn new(selector: &LabelSelector) -> Result<Self, SelectionError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            requirements.push((key.clone(), Requirement::In(vec![value.clone()])));
        }
        for expression in selector.match_expressions.iter().flatten() {
            let values = expression.values.clone().unwrap_or_default();
            let requirement = match expression.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectionError::InvalidSelector(format!(
                        "matchExpressions key {}: operator {} needs at least one value",
                        expression.key, expression.operator
                    )));
                }
                "In" => Requirement::In(values),
                "NotIn" => Requirement::NotIn(values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectionError::InvalidSelector(format!(
                        "matchExpressions key {}: operator {} takes no values",
                        expression.key, expression.operator
                    )));
                }
                "Exists" => Requirement::Exists,
                "DoesNotExist" => Requirement::DoesNotExist,
                other => {
                    return Err(SelectionError::InvalidSelector(format!(
                        "matchExpressions key {}: unknown operator {other:?} (use In, NotIn, Exists or DoesNotExist)",
                        expression.key
                    )));
                }
            };
            requirements.push((expression.key.clone(), requirement));
        }
        Ok(LabelMatcher { requirements })
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.requirements.iter().all(|(key, requirement)| {
            let value = labels.and_then(|l| l.get(key));
            match requirement {
                Requirement::In(values) => value.is_some_and(|v| values.contains(v)),
                Requirement::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Requirement::Exists => value.is_some(),
                Requirement::DoesNotExist => value.is_none(),
            }
        })
    }
}

#[cfg(test)]
#[path = "selection_tests.rs"]
mod tests;
