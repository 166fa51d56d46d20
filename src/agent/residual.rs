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

use std::collections::{BTreeMap, BTreeSet};
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
    let pod = pod_lines(places.pod, places.iptables)?;
    let Some((node, veth)) = places.node else {
        return Ok(Snapshot::sorted(pod));
    };
    let veths: BTreeSet<String> = veth
        .filter(|_| places.node_qdisc)
        .map(str::to_string)
        .into_iter()
        .collect();
    Ok(node_lines(node, &veths, places.iptables)?.with_pod(pod, veth))
}

/// What [`snapshot`]`(places).`[`about`](Snapshot::about)`(tag)` holds, the baseline kept
/// before `tag`'s fault is applied, without listing the node's namespace: of its tables only
/// `tag`'s are asked for, by name (the node holds one or two per injection: at 500 a listing
/// of them cost 0.4 ms per apply).
pub fn baseline(places: &Places<'_>, tag: &InjectionTag) -> io::Result<Snapshot> {
    let mut lines = pod_lines(places.pod, places.iptables)?;
    let Some((node, veth)) = places.node else {
        return Ok(Snapshot::sorted(lines));
    };
    let name = tag.nft_table();
    let found = nftables::with_socket(node, |socket| {
        let mut found = Vec::new();
        for family in nftables::Family::ALL {
            found.extend(socket.table(family, &name)?);
        }
        Ok(found)
    })?;
    for table in found {
        lines.push(table_line("node", &table));
    }
    if places.iptables {
        let chain = tag.iptables_chain();
        lines.extend(
            chain_lines("node", node)
                .into_iter()
                .filter(|line| line.ends_with(&format!(" chain {chain}"))),
        );
    }
    let veths: BTreeSet<String> = veth
        .filter(|_| places.node_qdisc)
        .map(str::to_string)
        .into_iter()
        .collect();
    lines.extend(veth_qdiscs(node, &veths)?.into_values().flatten());
    Ok(Snapshot::sorted(lines))
}

/// The pod's part of a snapshot: its tables, every root qdisc, (`iptables`) its chains.
pub fn pod_lines(pod: &Netns, iptables: bool) -> io::Result<Vec<String>> {
    let mut lines = lines_of("pod", pod, iptables)?;
    for (ifname, root) in tc::root_qdiscs(pod)? {
        if !root.is_default() {
            lines.push(qdisc_line("pod", &root.to_string(), &ifname));
        }
    }
    Ok(lines)
}

/// The node's part of the snapshots of many pods, read once: its tables, (`iptables`) its
/// chains, and the root qdiscs of `veths` only (the node has one or more per pod).
pub fn node_lines(node: &Netns, veths: &BTreeSet<String>, iptables: bool) -> io::Result<NodeLines> {
    let shared = lines_of("node", node, iptables)?;
    let qdiscs = veth_qdiscs(node, veths)?;
    Ok(NodeLines { shared, qdiscs })
}

/// The root qdiscs (other than the default) of `veths` on the node, as snapshot lines by
/// interface; the node's qdiscs are not listed at all for no veth.
fn veth_qdiscs(
    node: &Netns,
    veths: &BTreeSet<String>,
) -> io::Result<BTreeMap<String, Vec<String>>> {
    let mut qdiscs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !veths.is_empty() {
        for (ifname, root) in tc::root_qdiscs(node)? {
            if veths.contains(&ifname) && !root.is_default() {
                let line = qdisc_line("node", &root.to_string(), &ifname);
                qdiscs.entry(ifname).or_default().push(line);
            }
        }
    }
    Ok(qdiscs)
}

/// What the node's namespace holds, as snapshot lines (see [`node_lines`]).
pub struct NodeLines {
    shared: Vec<String>,
    qdiscs: BTreeMap<String, Vec<String>>,
}

impl NodeLines {
    /// One pod's snapshot: its own lines, the node's, and the root qdisc of its veth there.
    pub fn with_pod(&self, pod: Vec<String>, veth: Option<&str>) -> Snapshot {
        let mut lines = pod;
        lines.extend(self.shared.iter().cloned());
        if let Some(qdiscs) = veth.and_then(|v| self.qdiscs.get(v)) {
            lines.extend(qdiscs.iter().cloned());
        }
        Snapshot::sorted(lines)
    }
}

fn qdisc_line(place: &str, root: &str, ifname: &str) -> String {
    format!("{place}: tc root {root} on {ifname}")
}

/// Tables and (`iptables`) chains of a namespace.
fn lines_of(place: &str, ns: &Netns, iptables: bool) -> io::Result<Vec<String>> {
    let tables = nftables::with_socket(ns, |socket| socket.tables())?;
    let mut lines: Vec<String> = tables.iter().map(|t| table_line(place, t)).collect();
    if iptables {
        lines.extend(chain_lines(place, ns));
    }
    Ok(lines)
}

fn table_line(place: &str, table: &nftables::TableInfo) -> String {
    format!("{place}: nft table {} {}", table.family.name(), table.name)
}

/// Our iptables chains in `ns`, as snapshot lines (none where iptables is not installed).
fn chain_lines(place: &str, ns: &Netns) -> Vec<String> {
    let mut lines = Vec::new();
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
    lines
}

impl Snapshot {
    fn sorted(mut lines: Vec<String>) -> Self {
        lines.sort();
        Self { lines }
    }

    /// Only the lines that could ever count as `tag`'s residue (see [`residual`]): what the
    /// pod's namespace holds, and of the node's only what names `tag` and the qdiscs. The
    /// node holds a table per injection; a baseline kept per injection in the journal would
    /// otherwise grow with their number.
    pub fn about(&self, tag: &InjectionTag) -> Self {
        let table = tag.nft_table();
        let chain = tag.iptables_chain();
        let lines = self
            .lines
            .iter()
            .filter(|line| {
                !line.starts_with("node: ")
                    || line.contains(" tc root ")
                    || line
                        .split_whitespace()
                        .any(|word| word == table || word == chain)
            })
            .cloned()
            .collect();
        Self { lines }
    }

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
    fn a_baseline_keeps_of_the_node_only_what_could_be_its_residue() {
        let tag = InjectionTag::from_uid(TAG_UID).unwrap();
        let full = snap(&[
            "node: nft table ip faultline_aaaaaaaaaaaaaaaaaaaaaaaa",
            "node: nft table ip faultline_0f3c2a9e7b1d4c559a0e2b6f",
            "node: tc root htb fa17: on flv0f3c2a9e",
            "pod: nft table inet filter",
        ]);
        let kept = full.about(&tag);
        assert_eq!(
            kept,
            snap(&[
                "node: nft table ip faultline_0f3c2a9e7b1d4c559a0e2b6f",
                "node: tc root htb fa17: on flv0f3c2a9e",
                "pod: nft table inet filter",
            ])
        );
        // Judged against either, an after-image with the same leftovers says the same.
        let after = snap(&[
            "node: nft table ip faultline_0f3c2a9e7b1d4c559a0e2b6f",
            "node: nft table ip faultline_0f3c2a9e7b1d4c559a0e2b6f",
        ]);
        assert_eq!(
            residual(&full, &after, &tag, true),
            residual(&kept, &after, &tag, true)
        );
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
