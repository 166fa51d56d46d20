//! `FaultInjection`: the work item the controller writes for a node agent.
//!
//! One object per target pod and network fault. The agent on `spec.nodeName` applies it,
//! reports in status, reverts it on deletion (holding a finalizer until its rules are gone) and,
//! whatever else happens, at `spec.expiresAt`.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{Condition, ObjectRef, PodRef},
    fault::{BandwidthFault, Direction, LatencyFault, LossFault},
};

/// A network fault for one pod on one node, written by the controller and carried out by that
/// node's agent. The agent reverts it at `expiresAt` on its own, even if it can no longer reach
/// the API server.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "FaultInjection",
    doc = "A network fault for one pod, written by the controller for the node agent on spec.nodeName.",
    plural = "faultinjections",
    singular = "faultinjection",
    shortname = "finj",
    category = "chaos",
    namespaced,
    status = "FaultInjectionStatus",
    derive = "Default",
    derive = "PartialEq",
    printcolumn(name = "Pod", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Mechanism",
        type_ = "string",
        json_path = ".status.mechanism",
        description = "How the agent applied the fault: netem, nfqueue, htb, nftables or iptables"
    ),
    // A printer column is a JSONPath rendered by the API server: a `date` column shows the time
    // *since* a timestamp (a real server prints `<invalid>` for one in the future), and nothing
    // can count down to one. So the deadline itself, in UTC, next to Age.
    printcolumn(
        name = "Expires",
        type_ = "string",
        json_path = ".spec.expiresAt",
        description = "When the fault ends (UTC): the agent reverts it then, and the kernel stops it by itself"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjectionSpec {
    /// The experiment this injection belongs to.
    pub experiment: ObjectRef,
    /// The pod to inject into. A pod with another UID (a replacement) is not followed.
    pub target: PodRef,
    /// The node the pod runs on; only that node's agent acts on this object.
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// The fault, with its destinations resolved to addresses.
    pub fault: NetworkFault,
    /// The agent reverts the fault at this time by itself, whatever else happens.
    pub expires_at: DateTime<Utc>,
}

/// One network fault, with peers resolved. Set exactly one of `latency`, `loss`, `bandwidth`
/// or `partition`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.latency), has(self.loss), has(self.bandwidth), has(self.partition)].filter(x, x).size() == 1").message("a fault injection sets exactly one of latency, loss, bandwidth or partition"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.partition) || (has(self.peerCidrs) && size(self.peerCidrs) > 0)").message("a partition needs at least one peer CIDR; a partition from everything would cut the pod off from its node"))]
pub struct NetworkFault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<BandwidthFault>,
    /// Cut traffic in `direction` to/from `peerCidrs` (and `ports`, when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Direction>,
    /// The destinations the fault applies to, as CIDRs: the fault's own CIDRs plus the current
    /// IPs of the pods its selector matches. Empty means all traffic (not allowed for a
    /// partition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024), transform = super::bounds::cidr_items)]
    pub peer_cidrs: Vec<String>,
    /// Destination ports the fault applies to. Empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = super::bounds::port_items)]
    pub ports: Vec<i32>,
}

/// The single kind a [`NetworkFault`] sets, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NetworkFaultKind<'a> {
    Latency(&'a LatencyFault),
    Loss(&'a LossFault),
    Bandwidth(&'a BandwidthFault),
    Partition(Direction),
}

impl NetworkFault {
    pub fn kind(&self) -> Option<NetworkFaultKind<'_>> {
        match (&self.latency, &self.loss, &self.bandwidth, self.partition) {
            (Some(l), None, None, None) => Some(NetworkFaultKind::Latency(l)),
            (None, Some(l), None, None) => Some(NetworkFaultKind::Loss(l)),
            (None, None, Some(b), None) => Some(NetworkFaultKind::Bandwidth(b)),
            (None, None, None, Some(d)) => Some(NetworkFaultKind::Partition(d)),
            _ => None,
        }
    }
}

/// The condition that says whether the node agent accepted the work item (False: refused,
/// and nothing of it was applied).
pub const ADMITTED_CONDITION: &str = "Admitted";

impl FaultInjectionStatus {
    /// Whether the node agent refused the work item (condition `Admitted=False`).
    pub fn refused(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == ADMITTED_CONDITION && c.status == super::ConditionStatus::False)
    }
}

/// Where an injection is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InjectionPhase {
    /// Written by the controller, not yet applied.
    #[default]
    Pending,
    /// The rules are in the pod's network namespace.
    Applied,
    /// The rules are gone (deleted, expired, or the target went away).
    Reverted,
    /// Applying or reverting failed, or the agent refused the work item (condition
    /// `Admitted=False`); `message` says why and what to do.
    Failed,
}

/// What the node agent did with an injection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultInjectionStatus {
    #[serde(default)]
    pub phase: InjectionPhase,
    /// netem, nfqueue, htb, nftables or iptables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<DateTime<Utc>>,
    /// A sentence a user can act on, for Failed; what was applied, for Applied; why, for
    /// Reverted (expired, deleted, target gone, consent withdrawn, chaos paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Rules left in the pod's network namespace after revert, compared with the snapshot taken
    /// before the fault. 0 when clean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residual_rules: Option<i32>,
    /// What was left, when residualRules is not 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub residual: Vec<String>,
    /// Packets that passed without the fault because the userspace queue was full (NFQUEUE
    /// path only): the fault was weaker than asked by this much. The `FullyApplied`
    /// condition turns False, with the share, when this is not 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypassed_packets: Option<i64>,
    /// Packets the fault's rules matched (NFQUEUE path only), those that bypassed included:
    /// with `bypassedPackets`, how much of the fault was in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_packets: Option<i64>,
    /// The generation of the spec the agent last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `FullyApplied` (False when packets passed without the fault), and `Admitted` (False when
    /// the node agent refused the work item: no running experiment recorded this pod, the
    /// namespace did not opt in or is protected, the pod is protected, or chaos is paused; the
    /// reason says which, and nothing was applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
