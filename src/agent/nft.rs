//! faultline's nftables tables, and partitions with them, inside the pod's network namespace.
//!
//! Every table faultline creates is named `faultline_<tag>` (one per injection and family) and
//! carries a comment `faultline pod=<uid> until=<expiresAt>[ port=<veth>]`. Tables go to the
//! kernel through our own netlink ([`super::nftables`]): one transaction per table (or per
//! pod, for removals), no process.
//!
//! A partition is one `netdev` table with an `ingress` and an `egress` chain bound to each of
//! the pod's interfaces (never `lo`: a pod is never cut off from itself). The netdev hooks sit
//! below the IP stack: a dropped packet never arrives or never leaves, before conntrack, so
//! established connections stall too. (A sender whose own packets are dropped at its egress
//! hook sees them as lost locally: TCP gives up on a connection after about 8 s of a
//! partition, where a cut cable would leave it retrying.) Kernels older than 5.16 have no
//! netdev egress hook; there the table is `inet` with prerouting/output chains (and senders
//! see `EPERM`).
//!
//! The drop chains are reached only through the table's `gate` set, whose elements (the
//! interfaces) time out at the injection's `expiresAt` ([`super::deadline`]): the partition
//! ends then by itself, whatever happens to the agent. What remains is an inert table that the
//! agent removes at its next converge or start.
//!
//! What each direction drops, seen from the pod, with `peers` the fault's peer CIDRs and `P`
//! its ports (no ports: every port):
//!
//! | direction | leaving the pod                         | arriving at the pod                    |
//! |-----------|-----------------------------------------|----------------------------------------|
//! | `to`      | to peers (dport in P)                   | with ports: replies from peers (sport in P) |
//! | `from`    | with ports: replies to peers (sport in P) | from peers (dport in P)              |
//! | `both`    | both of the above                       | both of the above                      |

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;

use super::deadline::Deadline;
use super::netns::Netns;
use super::nftables::{
    self, AddrFamily, Elements, End, Family, Hook, HookPoint, Match, NftError, NftSocket, Table,
    TableInfo, Verdict,
};
use super::scope::Scope;
use super::tag::{InjectionTag, NFT_TABLE_PREFIX};
use crate::api::{Direction, NetworkFault};

/// Priority of the partition's hooks: before everything else on the device.
const PARTITION_PRIORITY: i32 = -300;

/// Whether nf_tables answers here.
pub fn available() -> bool {
    nftables::available()
}

/// Whether the kernel has the netdev egress hook (5.16+), probed once in a throwaway namespace.
pub fn netdev_egress_available() -> bool {
    static PROBED: OnceLock<bool> = OnceLock::new();
    *PROBED.get_or_init(|| {
        let probe = std::thread::spawn(|| -> io::Result<()> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut table = Table::new(Family::Netdev, "faultline_probe", None);
            table.chain(
                "egress",
                Some(Hook {
                    point: HookPoint::Egress,
                    priority: 0,
                    device: Some("lo".into()),
                }),
            );
            let mut socket = NftSocket::open()?;
            socket.commit(&table.create()).map_err(io::Error::from)
        });
        match probe.join() {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::info!(%error, "no netdev egress hook (kernel before 5.16): partitions use inet chains");
                false
            }
            Err(_) => false,
        }
    })
}

/// What faultline writes into each of its tables' comments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comment {
    pub pod: String,
    pub until: String,
    /// The pod's veth on the node, for tables in the node's namespace.
    pub port: Option<String>,
    /// The interface whose qdisc tree the table steers into (qdisc faults).
    pub qdisc: Option<String>,
    /// The NFQUEUE queues the table's rules name (first, how many), for another injection's
    /// choice of free queues: read with the table, not from a dump of every rule.
    pub queues: Option<(u16, u16)>,
}

impl Comment {
    pub fn new(pod: &str, deadline: &Deadline, port: Option<&str>) -> Self {
        Self {
            pod: pod.to_string(),
            until: deadline.stamp(),
            port: port.map(str::to_string),
            qdisc: None,
            queues: None,
        }
    }

    pub fn with_qdisc(mut self, ifname: &str) -> Self {
        self.qdisc = Some(ifname.to_string());
        self
    }

    pub fn with_queues(mut self, (first, count): (u16, u16)) -> Self {
        self.queues = Some((first, count));
        self
    }

    pub fn render(&self) -> String {
        let mut text = format!("faultline pod={} until={}", self.pod, self.until);
        if let Some(port) = &self.port {
            text.push_str(&format!(" port={port}"));
        }
        if let Some(qdisc) = &self.qdisc {
            text.push_str(&format!(" qdisc={qdisc}"));
        }
        if let Some((first, count)) = self.queues {
            text.push_str(&format!(" queues={first}+{count}"));
        }
        text
    }

    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("faultline ")?;
        let mut comment = Comment::default();
        for word in rest.split_whitespace() {
            match word.split_once('=') {
                Some(("pod", v)) => comment.pod = v.to_string(),
                Some(("until", v)) => comment.until = v.to_string(),
                Some(("port", v)) => comment.port = Some(v.to_string()),
                Some(("qdisc", v)) => comment.qdisc = Some(v.to_string()),
                Some(("queues", v)) => {
                    comment.queues = v.split_once('+').and_then(|(first, count)| {
                        Some((first.parse().ok()?, count.parse().ok()?))
                    });
                }
                _ => {}
            }
        }
        Some(comment)
    }
}

/// One of our tables, found in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedTable {
    pub tag: InjectionTag,
    pub family: Family,
    pub comment: Option<Comment>,
}

/// Our tables in `ns`, every family. Anyone else's table is not listed.
pub fn owned_tables(ns: &Netns) -> io::Result<Vec<OwnedTable>> {
    nftables::with_socket(ns, |socket| Ok(ours(&socket.tables()?)))
}

fn ours(tables: &[TableInfo]) -> Vec<OwnedTable> {
    tables
        .iter()
        .filter_map(|t| {
            Some(OwnedTable {
                tag: InjectionTag::from_nft_table(&t.name)?,
                family: t.family,
                comment: t.comment.as_deref().and_then(Comment::parse),
            })
        })
        .collect()
}

/// The injections whose tables are in `ns` (each once).
pub fn owned(ns: &Netns) -> io::Result<Vec<InjectionTag>> {
    let mut tags: Vec<InjectionTag> = owned_tables(ns)?.into_iter().map(|t| t.tag).collect();
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Deletes every table of these injections in `ns`, all families, in one transaction.
/// Returns the tags that had a table.
pub fn remove_all(ns: &Netns, tags: &[InjectionTag]) -> io::Result<Vec<InjectionTag>> {
    nftables::with_socket(ns, |socket| {
        let present = ours(&socket.tables()?);
        let doomed: Vec<&OwnedTable> = present.iter().filter(|t| tags.contains(&t.tag)).collect();
        let batch: Vec<_> = doomed
            .iter()
            .map(|t| nftables::table::delete_existing(t.family, &t.tag.nft_table()))
            .collect();
        match socket.commit(&batch) {
            Ok(()) => {}
            // Removed meanwhile by someone else (a second agent's cleanup): check again below.
            Err(NftError::Refused {
                errno: Errno::ENOENT,
                ..
            }) => {
                for table in &doomed {
                    socket.commit(&nftables::table::delete(
                        table.family,
                        &table.tag.nft_table(),
                    ))?;
                }
            }
            Err(e) => return Err(e),
        }
        let mut removed: Vec<InjectionTag> = doomed.iter().map(|t| t.tag.clone()).collect();
        removed.sort();
        removed.dedup();
        Ok(removed)
    })
}

/// Deletes the injection's tables in `ns`; `Ok(false)` when there were none.
pub fn remove(ns: &Netns, tag: &InjectionTag) -> io::Result<bool> {
    Ok(!remove_all(ns, std::slice::from_ref(tag))?.is_empty())
}

/// Replaces these tables in `ns`, all in one transaction.
pub fn replace(ns: &Netns, tables: &[Table]) -> io::Result<()> {
    replace_and_delete(ns, tables, &[])
}

/// Replaces these tables and deletes these (whether or not they exist), all in one
/// transaction (merged with other threads' where `ns` keeps a socket: see
/// [`nftables::commit`]).
pub fn replace_and_delete(
    ns: &Netns,
    tables: &[Table],
    doomed: &[(nftables::Family, String)],
) -> io::Result<()> {
    let batch: Vec<_> = tables
        .iter()
        .flat_map(Table::replace)
        .chain(
            doomed
                .iter()
                .flat_map(|(family, name)| nftables::table::delete(*family, name)),
        )
        .collect();
    nftables::commit(ns, batch)
}

/// Applies (or replaces: desired state, one transaction) the partition of this injection,
/// gated until `deadline`.
pub fn apply_partition(
    ns: &Netns,
    tag: &InjectionTag,
    fault: &NetworkFault,
    deadline: &Deadline,
    comment: &Comment,
) -> io::Result<()> {
    let direction = fault
        .partition
        .ok_or_else(|| io::Error::other("the injection is not a partition"))?;
    let scope = Scope::parse(&fault.peer_cidrs, &fault.ports).map_err(invalid)?;
    let devices = super::links::names_but_lo(ns)?;
    if devices.is_empty() {
        return Err(io::Error::other(
            "the pod's network namespace has no interface but lo",
        ));
    }
    let gate = deadline.remaining().map_err(|e| invalid(e.to_string()))?;
    let table = partition_table(
        tag,
        &devices,
        direction,
        &scope,
        gate,
        comment,
        netdev_egress_available(),
    )
    .map_err(invalid)?;
    replace(ns, &[table])
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The partition's table (pure). `netdev`: hooks on the devices; otherwise inet
/// prerouting/output.
pub fn partition_table(
    tag: &InjectionTag,
    devices: &[String],
    direction: Direction,
    scope: &Scope,
    gate: Duration,
    comment: &Comment,
    netdev: bool,
) -> Result<Table, String> {
    if !scope.has_peers() {
        return Err("a partition needs at least one peer CIDR".into());
    }
    let name = tag.nft_table();
    debug_assert!(name.starts_with(NFT_TABLE_PREFIX));
    let family = if netdev { Family::Netdev } else { Family::Inet };
    let mut table = Table::new(family, name, Some(comment.render()));
    let egress_drop = table.chain("egress_drop", None);
    let ingress_drop = table.chain("ingress_drop", None);
    let hooks: Vec<(usize, bool)> = if netdev {
        devices
            .iter()
            .enumerate()
            .flat_map(|(i, device)| {
                let mut hook = |name: String, point| {
                    table.chain(
                        &name,
                        Some(Hook {
                            point,
                            priority: PARTITION_PRIORITY,
                            device: Some(device.clone()),
                        }),
                    )
                };
                let egress = hook(format!("egress{i}"), HookPoint::Egress);
                let ingress = hook(format!("ingress{i}"), HookPoint::Ingress);
                [(egress, true), (ingress, false)]
            })
            .collect()
    } else {
        let mut hook = |name: &str, point| {
            table.chain(
                name,
                Some(Hook {
                    point,
                    priority: PARTITION_PRIORITY,
                    device: None,
                }),
            )
        };
        let egress = hook("egress", HookPoint::Output);
        let ingress = hook("ingress", HookPoint::Prerouting);
        vec![(egress, true), (ingress, false)]
    };
    let gate = table.set(
        "gate",
        Elements::Interfaces(devices.iter().map(|d| (d.clone(), gate)).collect()),
    );
    let sets = scope.declare(&mut table, &[AddrFamily::V4, AddrFamily::V6]);
    let (to, from) = match direction {
        Direction::To => (true, false),
        Direction::From => (false, true),
        Direction::Both => (true, true),
    };
    let families = [AddrFamily::V4, AddrFamily::V6];
    let mut egress_rules = Vec::new();
    let mut ingress_rules = Vec::new();
    if to {
        // Requests to the peers (to their ports) and, with ports, their replies.
        egress_rules.extend(sets.matches(End::Destination, End::Destination, &families));
        if sets.has_ports() {
            ingress_rules.extend(sets.matches(End::Source, End::Source, &families));
        }
    }
    if from {
        ingress_rules.extend(sets.matches(End::Source, End::Destination, &families));
        if sets.has_ports() {
            egress_rules.extend(sets.matches(End::Destination, End::Source, &families));
        }
    }
    // Order the rules by family as nft lists them: IPv4 first.
    for (chain, rules) in [(egress_drop, &egress_rules), (ingress_drop, &ingress_rules)] {
        for matches in rules {
            table.rule(chain, matches, &[], Some(Verdict::Drop));
        }
    }
    for (chain, outgoing) in hooks {
        let (target, rules) = if outgoing {
            ("egress_drop", &egress_rules)
        } else {
            ("ingress_drop", &ingress_rules)
        };
        if rules.is_empty() {
            continue;
        }
        table.rule(
            chain,
            &[Match::Interface {
                outgoing,
                set: gate.clone(),
            }],
            &[],
            Some(Verdict::Jump(target.into())),
        );
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::nftables::Expr;

    fn tag() -> InjectionTag {
        InjectionTag::from_uid("01234567-89ab-cdef-0123-456789abcdef").unwrap()
    }

    fn comment() -> Comment {
        Comment {
            pod: "p".into(),
            until: "2026-01-01T00:00:00.000Z".into(),
            ..Comment::default()
        }
    }

    fn scope(ports: &[i32]) -> Scope {
        Scope::parse(&["10.0.0.5/32".into(), "fd00::/64".into()], ports).unwrap()
    }

    fn rules_of<'a>(table: &'a Table, chain: &str) -> &'a Vec<Vec<Expr>> {
        &table.chains.iter().find(|c| c.name == chain).unwrap().rules
    }

    #[test]
    fn both_directions_gate_every_interface_and_drop_below_the_ip_stack() {
        let t = partition_table(
            &tag(),
            &["eth0".into()],
            Direction::Both,
            &scope(&[]),
            Duration::from_secs(60),
            &comment(),
            true,
        )
        .unwrap();
        assert_eq!(t.family, Family::Netdev);
        assert_eq!(t.name, "faultline_0123456789abcdef01234567");
        // v4 and v6 peers, each one rule per direction.
        assert_eq!(rules_of(&t, "egress_drop").len(), 2);
        assert_eq!(rules_of(&t, "ingress_drop").len(), 2);
        // The base chains reach the drops only through the gate.
        for chain in ["egress0", "ingress0"] {
            let rules = rules_of(&t, chain);
            assert_eq!(rules.len(), 1);
            assert!(matches!(rules[0][1], Expr::Lookup(ref s) if s.name == "gate"));
        }
        let gate = t.sets.iter().find(|s| s.name == "gate").unwrap();
        assert_eq!(
            gate.elements,
            Elements::Interfaces(vec![("eth0".into(), Duration::from_secs(60))])
        );
    }

    #[test]
    fn to_without_ports_leaves_arriving_packets_alone_and_with_ports_drops_replies() {
        let t = partition_table(
            &tag(),
            &["eth0".into()],
            Direction::To,
            &scope(&[]),
            Duration::from_secs(60),
            &comment(),
            true,
        )
        .unwrap();
        assert!(rules_of(&t, "ingress_drop").is_empty());
        assert!(rules_of(&t, "ingress0").is_empty());
        let t = partition_table(
            &tag(),
            &["eth0".into()],
            Direction::To,
            &scope(&[5432]),
            Duration::from_secs(60),
            &comment(),
            true,
        )
        .unwrap();
        assert_eq!(rules_of(&t, "ingress_drop").len(), 2);
    }

    #[test]
    fn the_inet_fallback_gates_on_interface_names_so_loopback_is_spared() {
        let t = partition_table(
            &tag(),
            &["eth0".into(), "net1".into()],
            Direction::From,
            &scope(&[]),
            Duration::from_secs(5),
            &comment(),
            false,
        )
        .unwrap();
        assert_eq!(t.family, Family::Inet);
        let hooks: Vec<_> = t
            .chains
            .iter()
            .filter_map(|c| c.hook.as_ref().map(|h| h.point))
            .collect();
        assert_eq!(hooks, vec![HookPoint::Output, HookPoint::Prerouting]);
        let gate = t.sets.iter().find(|s| s.name == "gate").unwrap();
        assert!(matches!(&gate.elements, Elements::Interfaces(i) if i.len() == 2));
    }

    #[test]
    fn a_partition_without_peers_is_refused() {
        let none = Scope::parse(&[], &[80]).unwrap();
        assert!(
            partition_table(
                &tag(),
                &[],
                Direction::To,
                &none,
                Duration::from_secs(1),
                &comment(),
                true
            )
            .is_err()
        );
    }

    #[test]
    fn comments_round_trip() {
        let c = Comment {
            pod: "0f3c-uid".into(),
            until: "2026-01-01T00:00:00.000Z".into(),
            port: Some("veth3".into()),
            qdisc: Some("eth0".into()),
            queues: Some((16_390, 2)),
        };
        assert_eq!(Comment::parse(&c.render()), Some(c));
        assert_eq!(Comment::parse("someone else's"), None);
        // An older agent's comment (no queues) still parses; a malformed count is no count.
        let older = Comment::parse("faultline pod=p until=u port=veth3").unwrap();
        assert_eq!((older.port.as_deref(), older.queues), (Some("veth3"), None));
        assert_eq!(
            Comment::parse("faultline pod=p until=u queues=9+x")
                .unwrap()
                .queues,
            None
        );
    }
}
