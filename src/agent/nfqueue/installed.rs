//! The queueing rules of ours a namespace holds: read (with their packet counts), removed,
//! and found again after a crash (orphans).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use super::Steering;
use super::rules::{self, Family, Saved};
use super::steer;
use crate::agent::netns::Netns;
use crate::agent::nft;
use crate::agent::nftables::{self, Family as NftFamily};
use crate::agent::tag::InjectionTag;

/// The queueing rules of our tables for `tag` in `ns` (both families).
pub(super) fn nft_queue_rules(
    ns: &Netns,
    tag: &InjectionTag,
) -> io::Result<Vec<nftables::RuleInfo>> {
    nftables::with_socket(ns, |socket| {
        let mut out = Vec::new();
        for family in [NftFamily::Ip, NftFamily::Ip6] {
            out.extend(
                socket
                    .rules(family, &tag.nft_table())?
                    .into_iter()
                    .filter(|r| r.chain == steer::ENQUEUE_CHAIN),
            );
        }
        Ok(out)
    })
}

pub(super) fn read_all(ns: &Netns) -> io::Result<BTreeMap<Family, Saved>> {
    Family::ALL
        .into_iter()
        .map(|family| Ok((family, rules::read(ns, family)?)))
        .collect()
}

pub(super) fn queued_packets_iptables(ns: &Netns, tag: &InjectionTag) -> io::Result<u64> {
    let chain = tag.iptables_chain();
    Ok(read_all(ns)?
        .values()
        .map(|s| s.queued_packets(&chain))
        .sum())
}

/// Deletes the injection's queueing rules in `ns`: our tables (every family), and with the
/// iptables fallback its chain. `Ok(false)` when there were none.
pub(super) fn remove_rules(ns: &Netns, tag: &InjectionTag, steering: Steering) -> io::Result<bool> {
    let mut found = nft::remove(ns, tag)?;
    if steering == Steering::Iptables {
        found |= remove_legacy_chain(ns, tag)?;
    }
    Ok(found)
}

/// Deletes an iptables NFQUEUE chain of ours and its jumps (the fallback's, or an older
/// agent's), when iptables is installed. Runs `iptables-save`: for orphan cleanup and the
/// fallback only.
pub fn remove_legacy_chain(ns: &Netns, tag: &InjectionTag) -> io::Result<bool> {
    let mut found = false;
    for family in Family::ALL {
        let saved = match rules::read(ns, family) {
            Ok(saved) => saved,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some(script) = rules::removal_script(&saved, tag) {
            rules::restore(ns, family, &script)?;
            found = true;
        }
    }
    Ok(found)
}

/// The faultline NFQUEUE rules present in a namespace as iptables chains (the fallback's, or
/// an older agent's), for orphan cleanup. Our nftables tables are found by
/// [`nft::owned_tables`].
pub fn owned(net_ns: &Netns) -> io::Result<Vec<InjectionTag>> {
    let tags: BTreeSet<InjectionTag> = read_all(net_ns)?
        .values()
        .flat_map(Saved::nfqueue_tags)
        .collect();
    Ok(tags.into_iter().collect())
}

/// The faultline NFQUEUE rules in the node's namespace that may be this agent's: those whose
/// jumps (iptables) or comment (nftables) name only `our_veths` (the host sides of this node's
/// pods) or interfaces that no longer exist (their pod is gone). Rules for an interface of
/// someone else's pod (a second agent on the same kernel, as with several sandboxes on one
/// machine) are left alone.
pub fn owned_on_node(host: &Netns, our_veths: &BTreeSet<String>) -> io::Result<Vec<InjectionTag>> {
    let existing: BTreeSet<String> = crate::agent::links::links(host)?
        .into_iter()
        .map(|l| l.name)
        .collect();
    let foreign = |ifname: &String| existing.contains(ifname) && !our_veths.contains(ifname);
    let mut tags = BTreeSet::new();
    for table in nft::owned_tables(host)? {
        let port = table.comment.as_ref().and_then(|c| c.port.clone());
        match port {
            Some(port) if foreign(&port) => {}
            // A table of ours in the node's namespace without a port is not an NFQUEUE one;
            // its owner is unknown: leave it.
            None => {}
            Some(_) => {
                tags.insert(table.tag);
            }
        }
    }
    let saved = match read_all(host) {
        Ok(saved) => saved,
        Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e),
    };
    for tables in saved.values() {
        for tag in tables.nfqueue_tags() {
            let is_foreign = tables
                .jumps_to(&tag.iptables_chain())
                .iter()
                .flat_map(|rule| rules::interfaces(&rule.line))
                .any(|ifname| foreign(&ifname));
            if !is_foreign {
                tags.insert(tag);
            }
        }
    }
    Ok(tags.into_iter().collect())
}
