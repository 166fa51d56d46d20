//! The faults an experiment injects. Each list entry sets exactly one fault kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{common::GoDuration, duration_bounds};

/// One fault. Set exactly one of `podKill`, `networkLatency`, `networkLoss`,
/// `networkBandwidth` or `networkPartition`; it applies to every selected target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.podKill), has(self.networkLatency), has(self.networkLoss), has(self.networkBandwidth), has(self.networkPartition)].filter(x, x).size() == 1").message("each fault must set exactly one of podKill, networkLatency, networkLoss, networkBandwidth or networkPartition"))]
pub struct Fault {
    /// Kill the target pods through the Eviction API (honouring PodDisruptionBudgets) or by
    /// deleting them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_kill: Option<PodKillFault>,
    /// Delay packets leaving the target pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_latency: Option<LatencyFault>,
    /// Drop a percentage of the target pods' packets, silently, as a lossy link would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_loss: Option<LossFault>,
    /// Limit the target pods' egress bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_bandwidth: Option<BandwidthFault>,
    /// Cut traffic between the target pods and a set of peers, established connections
    /// included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_partition: Option<PartitionFault>,
}

/// The one kind a [`Fault`] sets, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FaultKind<'a> {
    PodKill(&'a PodKillFault),
    NetworkLatency(&'a LatencyFault),
    NetworkLoss(&'a LossFault),
    NetworkBandwidth(&'a BandwidthFault),
    NetworkPartition(&'a PartitionFault),
}

impl Fault {
    /// The kinds this fault sets; a valid fault sets exactly one.
    pub fn kinds(&self) -> Vec<FaultKind<'_>> {
        let mut kinds = Vec::with_capacity(1);
        if let Some(f) = &self.pod_kill {
            kinds.push(FaultKind::PodKill(f));
        }
        if let Some(f) = &self.network_latency {
            kinds.push(FaultKind::NetworkLatency(f));
        }
        if let Some(f) = &self.network_loss {
            kinds.push(FaultKind::NetworkLoss(f));
        }
        if let Some(f) = &self.network_bandwidth {
            kinds.push(FaultKind::NetworkBandwidth(f));
        }
        if let Some(f) = &self.network_partition {
            kinds.push(FaultKind::NetworkPartition(f));
        }
        kinds
    }

    /// The single kind, or `None` when the fault sets none or several (invalid).
    pub fn kind(&self) -> Option<FaultKind<'_>> {
        match self.kinds().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

impl FaultKind<'_> {
    /// The fault's field name as written in manifests, for messages and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::PodKill(_) => "podKill",
            FaultKind::NetworkLatency(_) => "networkLatency",
            FaultKind::NetworkLoss(_) => "networkLoss",
            FaultKind::NetworkBandwidth(_) => "networkBandwidth",
            FaultKind::NetworkPartition(_) => "networkPartition",
        }
    }

    /// Whether the node agent carries this fault out (everything but pod kill).
    pub fn is_network(&self) -> bool {
        !matches!(self, FaultKind::PodKill(_))
    }
}

/// How a pod is killed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PodKillMethod {
    /// Through the Eviction API: a PodDisruptionBudget that forbids the disruption makes the
    /// kill a recorded skip instead of an outage. The default.
    #[default]
    Evict,
    /// Delete the pod outright, ignoring PodDisruptionBudgets.
    Delete,
}

/// Kill the target pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodKillFault {
    /// `evict` (default; honours PodDisruptionBudgets) or `delete`.
    #[serde(default)]
    pub method: PodKillMethod,
    /// Seconds the pod gets to shut down. Unset uses the pod's own
    /// terminationGracePeriodSeconds; 0 kills at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub grace_period_seconds: Option<i64>,
    /// Kill again every interval during the experiment's duration, selecting targets afresh
    /// each time: at least 1s, at most 24h. Unset kills once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = duration_bounds::POD_KILL_INTERVAL.in_schema())]
    pub interval: Option<GoDuration>,
}

/// Which traffic a network fault affects, seen from the target pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Traffic from the target to the peers (egress).
    #[default]
    To,
    /// Traffic from the peers to the target (ingress).
    From,
    /// Both directions.
    Both,
}

/// Restricts a network fault to some destinations. Empty means all traffic. Set entries are
/// combined: a packet is affected when it goes to one of the CIDRs or one of the selected pods,
/// and (if ports are given) to one of the ports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.namespaces) || size(self.namespaces) == 0 || has(self.selector)").message("namespaces only scopes a pod selector: set selector too, or remove namespaces"))]
pub struct NetworkScope {
    /// Destination networks in CIDR notation, e.g. `10.0.0.0/8` or `192.168.1.10/32`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = super::bounds::cidr_items)]
    pub cidrs: Vec<String>,
    /// Pods selected by labels; the controller resolves them to their IPs and keeps the list up
    /// to date while the fault lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = super::bounds::label_selector)]
    pub selector: Option<LabelSelector>,
    /// Namespaces the selector looks in. Empty means the experiment's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = super::bounds::namespace_items)]
    pub namespaces: Vec<String>,
    /// Destination ports (TCP and UDP). Empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = super::bounds::port_items)]
    pub ports: Vec<i32>,
}

impl NetworkScope {
    pub fn is_everything(&self) -> bool {
        self.cidrs.is_empty() && self.selector.is_none() && self.ports.is_empty()
    }
}

/// Delay packets. Carried out by the node agent with netem where the kernel has it, and with a
/// userspace queue (NFQUEUE) where it does not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = super::rules::jitter_within_latency())]
pub struct LatencyFault {
    /// The added delay, e.g. `100ms`: more than 0s, at most 1m (a longer delay is a dead
    /// link: use networkLoss or networkPartition).
    #[schemars(transform = duration_bounds::LATENCY.in_schema())]
    pub latency: GoDuration,
    /// Random variation added to or subtracted from the delay, e.g. `10ms`: at most 1m, and
    /// at most the latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = duration_bounds::JITTER.in_schema())]
    pub jitter: Option<GoDuration>,
    /// How much each packet's jitter depends on the previous one's, in percent (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub correlation: Option<i32>,
    /// `to` (egress, the default), `from` (ingress) or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Only delay traffic to these destinations. Unset delays everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NetworkScope>,
}

/// Drop a percentage of packets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LossFault {
    /// Percentage of packets dropped, 0-100 (fractions allowed, e.g. 0.5).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: f64,
    /// How much each packet's fate depends on the previous one's, in percent (0-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub correlation: Option<i32>,
    /// `to` (egress, the default), `from` (ingress) or `both`.
    #[serde(default)]
    pub direction: Direction,
    /// Only drop traffic to these destinations. Unset drops from all traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NetworkScope>,
}

/// Limit bandwidth: the pod's matching traffic goes through a capped htb class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BandwidthFault {
    /// The rate, as `tc` writes it: a number and a unit of bit, kbit, mbit, gbit (bits per
    /// second) or bps, kbps, mbps, gbps (bytes per second). For example `1mbit`. At least one
    /// byte per second (`8bit`, `1bps`): the kernel's shapers count whole bytes.
    #[schemars(
        length(max = 32),
        regex(pattern = super::bounds::RATE_PATTERN)
    )]
    #[x_kube(validation = super::rules::rate_at_least_one_byte())]
    pub rate: String,
    /// Bucket size in bytes: how much may pass at full speed before the rate applies. At
    /// most 4294967295 (the kernel's field is 32 bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4_294_967_295i64))]
    pub burst: Option<i64>,
    /// Bytes that may wait in the queue before packets are dropped. At most 4294967295 (the
    /// kernel's field is 32 bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4_294_967_295i64))]
    pub limit: Option<i64>,
    /// Only limit traffic to these destinations. Unset limits everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NetworkScope>,
}

/// Cut the target pods off from a set of peers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("(has(self.peers.cidrs) && size(self.peers.cidrs) > 0) || has(self.peers.selector)").message("networkPartition.peers must name CIDRs or a pod selector; a partition from everything is not allowed (it would also cut the pod off from its node)"))]
pub struct PartitionFault {
    /// `to` (the target cannot reach the peers), `from` (the peers cannot reach the target) or
    /// `both` (the default for a partition).
    #[serde(default = "both")]
    pub direction: Direction,
    /// The other side of the partition.
    pub peers: NetworkScope,
}

fn both() -> Direction {
    Direction::Both
}
