//! Revert verification: what a fault's namespaces held before it (a snapshot kept in the
//! journal), compared with what they hold after its revert. Only what belongs to the injection
//! being judged counts: its own tables and chains (named with its tag), and, for a qdisc fault,
//! our root qdisc on the interfaces it used. Another experiment's fault on the same pod, or a
//! CNI rewriting its own rules meanwhile, is not this injection's residue.
//!
//! A snapshot lists, through netlink (no process), every nftables table of the pod's namespace
//! and of the node's (name and family) and every root qdisc (kind, handle, interface) of the
//! pod's namespace and of the pod's veth on the node; the iptables fallback adds its `FL-`
//! chains (that one runs `iptables-save`, as its rules do).

use std::collections::BTreeMap;
use std::io;

use super::netns::Netns;
use super::tag::InjectionTag;
use super::{nftables, tc};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    lines: Vec<String>,
}

/// Where to look: the pod's namespace, and the node's with the pod's veth there (when known).
pub struct Places<'a> {
    pub pod: &'a Netns,
    pub node: Option<(&'a Netns, Option<&'a str>)>,
    /// Include iptables chains (the fallback mechanisms).
    pub iptables: bool,
    /// Include the veth's root qdisc on the node (qdisc mechanisms). Listing it reads every
    /// qdisc of the node, which has one or more per pod; and only a qdisc mechanism's residue
    /// can be a qdisc (see [`residual`]).
    pub node_qdisc: bool,
}

/// Takes a snapshot.
pub fn snapshot(places: &Places<'_>) -> io::Result<Snapshot> {
    let mut lines = Vec::new();
    lines.extend(lines_of("pod", places.pod, Qdiscs::All, places.iptables)?);
    if let Some((node, veth)) = places.node {
        let qdiscs = match veth {
            Some(veth) if places.node_qdisc => Qdiscs::Of(veth),
            _ => Qdiscs::None,
        };
        lines.extend(lines_of("node", node, qdiscs, places.iptables)?);
    }
    lines.sort();
    Ok(Snapshot { lines })
}

/// Which root qdiscs a snapshot lists.
#[derive(Clone, Copy)]
enum Qdiscs<'a> {
    All,
    /// One interface's (the pod's veth on the node, which has many).
    Of(&'a str),
    None,
}

fn lines_of(
    place: &str,
    ns: &Netns,
    qdiscs: Qdiscs<'_>,
    iptables: bool,
) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    let tables = nftables::with_socket(ns, |socket| socket.tables())?;
    for table in tables {
        lines.push(format!(
            "{place}: nft table {} {}",
            table.family.name(),
            table.name
        ));
    }
    let roots = match qdiscs {
        Qdiscs::None => Vec::new(),
        _ => tc::root_qdiscs(ns)?,
    };
    for (ifname, root) in roots {
        if let Qdiscs::Of(only) = qdiscs
            && only != ifname
        {
            continue;
        }
        if root.is_default() {
            continue;
        }
        lines.push(format!("{place}: tc root {root} on {ifname}"));
    }
    if iptables {
        for tool in ["iptables-save", "ip6tables-save"] {
            if let Ok(out) = ns.command(tool, &[], None) {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    if let Some(chain) = line
                        .strip_prefix(':')
                        .and_then(|l| l.split_whitespace().next())
                        && chain.starts_with(super::tag::IPTABLES_CHAIN_PREFIX)
                    {
                        lines.push(format!("{place}: {tool} chain {chain}"));
                    }
                }
            }
        }
    }
    Ok(lines)
}

impl Snapshot {
    /// The snapshot as text (kept in the agent's journal).
    pub fn to_text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn from_text(text: &str) -> Option<Self> {
        Some(Self {
            lines: text.lines().map(str::to_string).collect(),
        })
    }
}

/// What `tag`'s fault left behind: lines present after and not before (as a multiset) that
/// are its own: naming its tag, or (`qdisc`: it installed our root qdisc) an `fa17:` root.
pub fn residual(
    before: &Snapshot,
    after: &Snapshot,
    tag: &InjectionTag,
    qdisc: bool,
) -> Vec<String> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &before.lines {
        *counts.entry(line).or_default() += 1;
    }
    let table = tag.nft_table();
    let chain = tag.iptables_chain();
    let ours = |line: &str| {
        line.split_whitespace()
            .any(|word| word == table || word == chain)
            || (qdisc && line.contains(" tc root ") && line.contains(" fa17: "))
    };
    let mut left = Vec::new();
    for line in &after.lines {
        let count = counts.entry(line).or_default();
        if *count > 0 {
            *count -= 1;
        } else if ours(line) {
            left.push(line.clone());
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(lines: &[&str]) -> Snapshot {
        Snapshot {
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    const TAG_UID: &str = "0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37";

    #[test]
    fn another_injections_rules_and_foreign_changes_are_not_this_ones_residue() {
        let tag = InjectionTag::from_uid(TAG_UID).unwrap();
        let before = snap(&["pod: nft table inet filter"]);
        // Meanwhile another experiment partitioned the pod, and a CNI added a table.
        let after = snap(&[
            "pod: nft table inet filter",
            "pod: nft table netdev faultline_aaaaaaaaaaaaaaaaaaaaaaaa",
            "pod: nft table inet cni_rules",
        ]);
        assert_eq!(residual(&before, &after, &tag, false), Vec::<String>::new());
        assert_eq!(residual(&before, &after, &tag, true), Vec::<String>::new());
    }

    #[test]
    fn its_own_table_or_its_qdisc_left_behind_is_the_residue() {
        let tag = InjectionTag::from_uid(TAG_UID).unwrap();
        let before = snap(&[]);
        let after = snap(&[
            "node: nft table ip faultline_0f3c2a9e7b1d4c559a0e2b6f",
            "pod: tc root htb fa17: on eth0",
        ]);
        assert_eq!(
            residual(&before, &after, &tag, false),
            vec!["node: nft table ip faultline_0f3c2a9e7b1d4c559a0e2b6f".to_string()]
        );
        assert_eq!(residual(&before, &after, &tag, true).len(), 2);
        let text = after.to_text();
        assert_eq!(Snapshot::from_text(&text).unwrap(), after);
    }
}
