//! Steering a pod's packets into our queues with nftables: per injection and family, a table
//! `ip|ip6 faultline_<tag>` in the namespace of the queue, written through our own netlink in
//! one transaction:
//!
//! ```text
//! table ip faultline_<tag> {
//!   comment "faultline pod=<uid> until=<expiresAt> port=<veth>"
//!   set gate { type ifname; flags timeout; elements = { "<veth|bridge|eth0>" timeout <left> } }
//!   [set peers4 ...; set ports ...; set l4 { tcp, udp }]
//!   chain enqueue { [xt physdev --physdev-in <veth>] [ip daddr @peers4] [th dport @ports]
//!                   counter  xt NFQUEUE --queue-balance N:N+k --queue-bypass }
//!   chain pre { type filter hook prerouting priority -90; iifname @gate jump enqueue }
//! }
//! ```
//!
//! The `NFQUEUE` target is the xtables one through nft_compat (this kernel family has no nft
//! `queue` statement; iptables-nft writes the same expression), so no iptables process and no
//! packet mark are involved: nothing can collide with a CNI's or kube-proxy's mark bits, and
//! the whole fault of one side is one table, replaced or deleted in one transaction.
//!
//! The gate's element times out at `expiresAt`: from then on no packet is queued, whether or
//! not an agent runs. `--queue-bypass` covers the other failure: while no worker is bound
//! (agent dead), packets pass unqueued.
//!
//! Priority -90 puts the chain after DNAT (-100): a peer named by its pod IP matches traffic
//! sent to its Service too.

use std::time::Duration;

use crate::agent::nft::Comment;
use crate::agent::nftables::{
    AddrFamily, End, Expr, Family, Hook, HookPoint, Match, Table, expr::nfqueue,
};
use crate::agent::scope::Scope;
use crate::agent::tag::InjectionTag;

use super::hostveth::HostPort;

/// Priority of the steering chain (after DNAT at -100).
pub const STEER_PRIORITY: i32 = -90;
/// The chain holding the queueing rules.
pub const ENQUEUE_CHAIN: &str = "enqueue";

/// Where packets enter the queue, which is also which way they go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The node's namespace, packets from the pod's veth: the pod's egress.
    Node(HostPort),
    /// The pod's namespace, packets arriving on these interfaces: the pod's ingress.
    Pod(Vec<String>),
}

impl Entry {
    /// The interface names the gate holds (what `iifname` is in prerouting) and the bridge
    /// port to match, if any.
    fn gate_and_port(&self) -> (Vec<String>, Option<String>) {
        match self {
            Entry::Node(HostPort::Routed { veth }) => (vec![veth.clone()], None),
            // Bridged frames reach IP prerouting with the bridge as input device.
            Entry::Node(HostPort::Bridged { veth, bridge }) => {
                (vec![bridge.clone()], Some(veth.clone()))
            }
            Entry::Pod(interfaces) => (interfaces.clone(), None),
        }
    }

    fn egress(&self) -> bool {
        matches!(self, Entry::Node(_))
    }
}

/// The tables of one side (pure): one per address family the scope touches.
pub fn tables(
    tag: &InjectionTag,
    entry: &Entry,
    scope: &Scope,
    queues: (u16, u16),
    gate: Duration,
    comment: &Comment,
    families: &[AddrFamily],
) -> Vec<Table> {
    let (gate_names, port) = entry.gate_and_port();
    // Egress matches where packets go, ingress where they come from: `both` on a connection to
    // peer:port delays both halves of that same connection.
    let end = if entry.egress() {
        End::Destination
    } else {
        End::Source
    };
    families
        .iter()
        .map(|&family| {
            let mut table = Table::new(
                match family {
                    AddrFamily::V4 => Family::Ip,
                    AddrFamily::V6 => Family::Ip6,
                },
                tag.nft_table(),
                Some(comment.render()),
            );
            let enqueue = table.chain(ENQUEUE_CHAIN, None);
            let pre = table.chain(
                "pre",
                Some(Hook {
                    point: HookPoint::Prerouting,
                    priority: STEER_PRIORITY,
                    device: None,
                }),
            );
            let gate_set = table.set(
                "gate",
                crate::agent::nftables::Elements::Interfaces(
                    gate_names.iter().map(|n| (n.clone(), gate)).collect(),
                ),
            );
            let sets = scope.declare(&mut table, &[family]);
            for mut matches in sets.matches(end, end, &[family]) {
                if let Some(port) = &port {
                    matches.insert(0, Match::PhysdevIn(port.clone()));
                }
                table.rule(
                    enqueue,
                    &matches,
                    &[Expr::Counter, nfqueue(queues.0, queues.1, false)],
                    None,
                );
            }
            table.rule(
                pre,
                &[Match::Interface {
                    outgoing: false,
                    set: gate_set,
                }],
                &[],
                Some(crate::agent::nftables::Verdict::Jump(ENQUEUE_CHAIN.into())),
            );
            table
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> InjectionTag {
        InjectionTag::from_uid("0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37").unwrap()
    }

    fn comment() -> Comment {
        Comment {
            pod: "p".into(),
            until: "2026-01-01T00:00:00.000Z".into(),
            port: Some("veth3".into()),
            qdisc: None,
            queues: None,
        }
    }

    fn enqueue_rules(table: &Table) -> &Vec<Vec<Expr>> {
        &table
            .chains
            .iter()
            .find(|c| c.name == ENQUEUE_CHAIN)
            .unwrap()
            .rules
    }

    #[test]
    fn a_bridged_port_is_gated_on_its_bridge_and_matched_as_a_physdev() {
        let entry = Entry::Node(HostPort::Bridged {
            veth: "veth3".into(),
            bridge: "br0".into(),
        });
        let scope = Scope::parse(&["10.0.0.0/8".into()], &[]).unwrap();
        let tables = tables(
            &tag(),
            &entry,
            &scope,
            (16384, 2),
            Duration::from_secs(30),
            &comment(),
            &scope.families(),
        );
        assert_eq!(tables.len(), 1, "IPv4 peers only: one ip table");
        let table = &tables[0];
        assert_eq!(table.family, Family::Ip);
        let rules = enqueue_rules(table);
        assert_eq!(rules.len(), 1);
        assert!(matches!(&rules[0][0], Expr::XtMatch { name, .. } if name == "physdev"));
        assert_eq!(rules[0][rules[0].len() - 2], Expr::Counter);
        assert_eq!(*rules[0].last().unwrap(), nfqueue(16384, 2, false));
        let gate = table.sets.iter().find(|s| s.name == "gate").unwrap();
        assert_eq!(
            gate.elements,
            crate::agent::nftables::Elements::Interfaces(vec![(
                "br0".into(),
                Duration::from_secs(30)
            )])
        );
    }

    #[test]
    fn the_pod_side_queues_everything_arriving_in_both_families_without_peers() {
        let scope = Scope::parse(&[], &[53]).unwrap();
        let tables = tables(
            &tag(),
            &Entry::Pod(vec!["eth0".into()]),
            &scope,
            (20000, 1),
            Duration::from_secs(30),
            &comment(),
            &scope.families(),
        );
        assert_eq!(
            tables.iter().map(|t| t.family).collect::<Vec<_>>(),
            vec![Family::Ip, Family::Ip6]
        );
        for table in &tables {
            assert_eq!(enqueue_rules(table).len(), 1);
        }
    }
}
