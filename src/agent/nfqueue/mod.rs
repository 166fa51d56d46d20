//! The userspace latency and loss path, for kernels without `sch_netem`: nftables sends the
//! pod's packets to NFQUEUE queues, workers of ours hold each one for its delay (or drop it)
//! and hand it back to the kernel.
//!
//! ```text
//!  pod netns            node netns (host)                         agent
//!  eth0 ──veth──▶ vethN ─▶ ip faultline_<tag> prerouting ─▶ NFQUEUE n..n+k ─▶ workers: heaps of
//!                          (gate: iifname, physdev match)    (bypass)         release times
//!  eth0 ◀── ingress: pod netns ip faultline_<tag> prerouting ─▶ NFQUEUE m..m+k ─▶ workers
//! ```
//!
//! Where packets are queued matters. Egress (`to`) is queued where the pod's packets arrive on
//! the node, on the node side of its veth: there the packet has left the pod's socket (veth
//! orphans it), so holding it does not stall TCP Small Queues in the pod, which would collapse
//! throughput if we queued in the pod's OUTPUT chain. Ingress (`from`) is queued in the pod's
//! own prerouting, again on the receive side. `both` does both, with queues in each namespace
//! (queues, like their sockets, belong to a network namespace).
//!
//! How packets get to the queue ([`steer`]): a table per injection and family, written through
//! our own netlink, whose rules use the xtables `NFQUEUE` target; where the kernel lacks
//! nft_compat (nf_tables without xtables targets, or no nf_tables) the iptables fallback in
//! [`rules`] writes the same as a chain with `iptables-restore`.
//!
//! Guarantees:
//! - The queueing rules are reached only through a set element (nftables) or a `time` match
//!   (iptables fallback, to the second) that ends at the injection's `expiresAt`: after it no
//!   packet is queued, whether or not an agent runs.
//! - Every rule says `--queue-bypass` and every queue is bound fail-open: a dead agent, a
//!   stopped worker or a full queue lets packets through undelayed; the fault weakens, the pod
//!   is never cut off. Such packets are counted as `bypassed`.
//! - [`NfqueueEngine::apply`] takes the desired state and is idempotent: afterwards the tables
//!   hold exactly the fault's rules and workers are bound to their queues. A restarted agent
//!   recovers the queue numbers from the rules.
//! - [`NfqueueEngine::remove`] deletes rules before stopping the workers, which then release
//!   every packet they hold.
//! - Several injections on the same traffic compose: each has its own table and base chain, and
//!   a packet a worker accepts goes on to the next base chain of the hook, so delays add up
//!   (loss too: each drops its share of what reaches it).
//!
//! Caveats:
//! - `bypassed` is computed: packets that hit our queueing rules minus packets our workers
//!   read, since the workers started (the kernel counts nothing when it fails open). Packets
//!   that bypassed while no agent ran are not counted.
//! - Bridged pods need br_netfilter (see [`hostveth`]).
//! - The delay is measured from when we read the packet (microseconds after the kernel queued
//!   it); timer wake-ups add tens of microseconds.
//! - A flow is hashed to one queue: one flow is at most as fast as one worker.

use crate::agent::netns::Netns;
use crate::api::Direction;

mod engine;
pub mod hostveth;
pub mod impair;
mod installed;
pub mod netlink;
mod queues;
mod release;
pub mod rules;
pub mod steer;
mod steering;
pub mod traffic;
mod worker;

pub use hostveth::{HostPort, host_veth};
pub use impair::Impairment;
pub use installed::{owned, owned_on_node, remove_legacy_chain};
pub use queues::default_queues;
pub use steering::{Steering, available};

pub use engine::NfqueueEngine;

/// A pod's network namespace and the node's (where the pod's veth peer is).
#[derive(Debug)]
pub struct PodNet {
    pub pod: Netns,
    pub host: Netns,
}

/// Which namespace a queue is in, which is also which way its packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The node's namespace, packets from the pod's veth: the pod's egress.
    Node,
    /// The pod's namespace, packets arriving at the pod: its ingress.
    Pod,
}

impl Side {
    fn wanted(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (Side::Node, Direction::To | Direction::Both)
                | (Side::Pod, Direction::From | Direction::Both)
        )
    }
}

impl PodNet {
    fn ns(&self, side: Side) -> &Netns {
        match side {
            Side::Node => &self.host,
            Side::Pod => &self.pod,
        }
    }
}

/// Packet counts of an injection, all queues together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NfqueueStats {
    /// Packets the fault's rules sent to our queues (including those that bypassed them).
    pub matched: u64,
    /// Packets held for a delay and then released.
    pub delayed: u64,
    /// Packets dropped for loss.
    pub dropped: u64,
    /// Packets that passed undelayed because the queue was full, our socket overflowed or no
    /// worker was bound.
    pub bypassed: u64,
}

/// One queue (or a balanced range of queues) of an applied injection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedQueue {
    pub side: Side,
    /// The first queue number.
    pub queue: u16,
    /// How many consecutive queues the side balances flows over.
    pub queues: u16,
    /// The pod's veth on the node, for [`Side::Node`].
    pub port: Option<HostPort>,
}

/// What [`NfqueueEngine::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NfqueueApplied {
    pub queues: Vec<AppliedQueue>,
    /// Whether any rule was written (false: everything was already in place).
    pub rules_written: bool,
    /// Whether rules of a previous agent were found and workers bound to their queues.
    pub recovered: bool,
    /// Things the user should know (a bridge option turned on, IPv6 left out).
    pub notes: Vec<String>,
}

impl NfqueueApplied {
    /// One line for the injection's status message.
    pub fn summary(&self) -> String {
        let name = |q: &AppliedQueue| {
            if q.queues > 1 {
                format!("nfqueue {}-{}", q.queue, q.queue + q.queues - 1)
            } else {
                format!("nfqueue {}", q.queue)
            }
        };
        let mut parts: Vec<String> = self
            .queues
            .iter()
            .map(|q| match (&q.side, &q.port) {
                (Side::Node, Some(HostPort::Bridged { veth, bridge })) => format!(
                    "egress queued ({}) on {veth}, a port of bridge {bridge}",
                    name(q)
                ),
                (Side::Node, _) => format!(
                    "egress queued ({}) on {}",
                    name(q),
                    q.port.as_ref().map_or("the pod's veth", HostPort::veth)
                ),
                (Side::Pod, _) => format!("ingress queued ({}) in the pod", name(q)),
            })
            .collect();
        parts.extend(self.notes.iter().cloned());
        parts.join("; ")
    }
}
