//! Which pods an experiment may touch.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How many of the matching pods become targets. The names follow Chaos Mesh's selector modes,
/// so its users read them without a manual.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum SelectionMode {
    /// Exactly one pod, chosen at random.
    One,
    /// Every matching pod.
    #[default]
    All,
    /// Exactly `value` pods, chosen at random (fewer if fewer match).
    Fixed,
    /// `value` percent of the matching pods, rounded down but at least one, chosen at random.
    FixedPercent,
    /// A random count between one and `value` percent of the matching pods.
    RandomMaxPercent,
}

/// The pods an experiment targets. Only pods that are Running and Ready are selected unless
/// `includeNotReady` is set. Namespaces must opt in with the label `faultline.dev/chaos=enabled`
/// (unless the controller runs with `--allow-all-namespaces`); `kube-system`, the controller's
/// own namespace and pods labelled `faultline.dev/protected=true` are never selected.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
// `mode` has a schema default, so the API server fills it in before these rules run; the
// `has()` guards keep the rules total when a client validates without defaulting.
#[x_kube(validation = kube::core::Rule::new("!has(self.mode) || self.mode in ['One', 'All'] || has(self.value)").message("target.value is required when mode is Fixed, FixedPercent or RandomMaxPercent"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.mode) || !has(self.value) || self.mode != 'Fixed' || self.value >= 1").message("target.value must be at least 1 when mode is Fixed"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.mode) || !has(self.value) || !(self.mode in ['FixedPercent', 'RandomMaxPercent']) || (self.value >= 1 && self.value <= 100)").message("target.value must be a percentage from 1 to 100 when mode is FixedPercent or RandomMaxPercent"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.mode) || !has(self.value) || !has(self.maxTargets) || self.mode != 'Fixed' || self.value <= self.maxTargets").message("target.value asks for more pods than target.maxTargets allows"))]
pub struct TargetSelector {
    /// Namespaces to select pods from. Empty means the experiment's own namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = super::bounds::namespace_items)]
    pub namespaces: Vec<String>,
    /// Pods must match this label selector (`matchLabels` and `matchExpressions`, as in a
    /// Deployment). Empty matches every pod in the namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::bounds::label_selector)]
    pub label_selector: Option<LabelSelector>,
    /// Pods must match these fields exactly. Supported keys: `spec.nodeName`, `status.phase`,
    /// `metadata.name`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = kube::core::Rule::new("self.all(k, k in ['spec.nodeName', 'status.phase', 'metadata.name'])").message("fieldSelectors supports only spec.nodeName, status.phase and metadata.name"))]
    #[schemars(transform = super::bounds::field_selector_map)]
    pub field_selectors: BTreeMap<String, String>,
    /// How many of the matching pods to target: One, All, Fixed, FixedPercent or
    /// RandomMaxPercent.
    #[serde(default)]
    pub mode: SelectionMode,
    /// The count for Fixed, or the percentage (1-100) for FixedPercent and RandomMaxPercent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub value: Option<i32>,
    /// The blast-radius cap: if the selection would exceed this many pods, the experiment fails
    /// before injecting anything. The controller also applies its own cluster-wide cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_targets: Option<i32>,
    /// Also select pods that are not Running and Ready (off by default: a fault on a pod that
    /// is already broken proves nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_not_ready: bool,
}
