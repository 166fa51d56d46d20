//! The steering table of a qdisc fault: the only way a packet gets into the fault's class.
//!
//! ```text
//! table netdev faultline_<tag> {
//!   comment "faultline pod=<uid> until=<expiresAt> qdisc=<ifname>"
//!   set gate { type ifname; flags timeout; elements = { "<ifname>" timeout <left> } }
//!   [set peers4 ...; set ports ...; set l4 { tcp, udp }]
//!   chain steer { [ip daddr @peers4] [th dport @ports] meta priority set fa17:2 }
//!   chain egress0 { type filter hook egress device "<ifname>" priority -300; policy accept;
//!                   oifname @gate jump steer }
//! }
//! ```
//!
//! The netdev egress hook runs before the root qdisc, and htb puts a packet whose priority
//! names one of its classes into that class: while the gate's element lives, the fault's
//! packets go to `fa17:2`; after `expiresAt` nothing sets the priority any more and every
//! packet takes the unlimited default class. Kernels before 5.16 have no netdev egress hook:
//! there the chain is an `inet` postrouting one (which runs before the qdisc too), which sees
//! routed and locally sent packets only, enough for a pod's own `eth0`.

use std::time::Duration;

use crate::agent::nft::Comment;
use crate::agent::nftables::{
    AddrFamily, End, Family, Hook, HookPoint, Match, Table, Verdict, expr::set_priority,
};
use crate::agent::scope::Scope;
use crate::agent::tag::InjectionTag;

use super::{FAULT_CLASS, Flow};

/// Priority of the steering chain: before anything else on the device.
const STEER_PRIORITY: i32 = -300;
/// inet postrouting fallback: after NAT (100), so peers match translated addresses.
const POSTROUTING_PRIORITY: i32 = 150;

/// The steering table (pure). `netdev`: an egress chain on `device`; otherwise inet
/// postrouting gated on the device's name.
pub fn table(
    tag: &InjectionTag,
    device: &str,
    flow: Flow,
    scope: &Scope,
    gate: Duration,
    comment: &Comment,
    netdev: bool,
) -> Table {
    let mut table = Table::new(
        if netdev { Family::Netdev } else { Family::Inet },
        tag.nft_table(),
        Some(comment.render()),
    );
    let steer = table.chain("steer", None);
    let hook = if netdev {
        Hook {
            point: HookPoint::Egress,
            priority: STEER_PRIORITY,
            device: Some(device.to_string()),
        }
    } else {
        Hook {
            point: HookPoint::Postrouting,
            priority: POSTROUTING_PRIORITY,
            device: None,
        }
    };
    let base = table.chain(if netdev { "egress0" } else { "post" }, Some(hook));
    let gate = table.set(
        "gate",
        crate::agent::nftables::Elements::Interfaces(vec![(device.to_string(), gate)]),
    );
    let families = [AddrFamily::V4, AddrFamily::V6];
    let sets = scope.declare(&mut table, &families);
    // Egress on the pod's eth0: peers are destinations; the pod's ingress, shaped on the host
    // side of its veth: peers are sources.
    let end = match flow {
        Flow::Egress => End::Destination,
        Flow::Ingress => End::Source,
    };
    for matches in sets.matches(end, end, &families) {
        table.rule(steer, &matches, &set_priority(FAULT_CLASS), None);
    }
    table.rule(
        base,
        &[Match::Interface {
            outgoing: true,
            set: gate,
        }],
        &[],
        Some(Verdict::Jump("steer".into())),
    );
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::nftables::Expr;

    #[test]
    fn the_fault_class_is_reached_through_the_gate_only() {
        let tag = InjectionTag::from_uid("0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37").unwrap();
        let scope = Scope::parse(&["10.77.0.3".into()], &[443]).unwrap();
        let comment = Comment::default();
        let t = table(
            &tag,
            "eth0",
            Flow::Egress,
            &scope,
            Duration::from_secs(10),
            &comment,
            true,
        );
        let steer = &t.chains[0];
        assert_eq!(steer.rules.len(), 1);
        assert_eq!(
            steer.rules[0].last(),
            Some(&Expr::MetaSet { key: 2 }),
            "ends with meta priority set"
        );
        let base = &t.chains[1];
        assert_eq!(base.hook.as_ref().unwrap().device.as_deref(), Some("eth0"));
        assert_eq!(base.rules.len(), 1);
        // Unscoped: every packet, one rule without matches.
        let all = table(
            &tag,
            "veth3",
            Flow::Ingress,
            &Scope::default(),
            Duration::from_secs(10),
            &comment,
            false,
        );
        assert_eq!(all.family, Family::Inet);
        assert_eq!(all.chains[0].rules.len(), 1);
        assert_eq!(all.chains[0].rules[0].len(), 2);
    }
}
