//! Partitions with nftables, inside the pod's network namespace.
//!
//! One table per injection, `netdev faultline_<tag>`, with an `ingress` and an `egress` chain
//! bound to each of the pod's interfaces (not `lo`: a pod is never cut off from itself). The
//! netdev hooks sit below the IP stack: a dropped packet simply never arrives or never leaves,
//! as on a cut cable. Established connections stall too (the hooks run before conntrack), and
//! the application sees silence and timeouts, never the `EPERM` that a drop in the `output`
//! hook returns to the sender. Kernels older than 5.16 have no netdev egress hook; there the
//! table falls back to `inet` prerouting/output chains (and senders see `EPERM`).
//!
//! What each direction drops, seen from the pod, with `peers` the fault's peer CIDRs and `P`
//! its ports (no ports: every port):
//!
//! | direction | leaving the pod                         | arriving at the pod                    |
//! |-----------|-----------------------------------------|----------------------------------------|
//! | `to`      | to peers (dport in P)                   | with ports: replies from peers (sport in P) |
//! | `from`    | with ports: replies to peers (sport in P) | from peers (dport in P)              |
//! | `both`    | both of the above                       | both of the above                      |
//!
//! Without ports, `to` leaves arriving packets alone (every TCP flow to a peer stalls anyway,
//! its ACKs cannot leave); with ports, the replies of those flows are dropped too, so an
//! established connection goes silent both ways at once.

use std::io;
use std::net::IpAddr;

use super::netns::{Netns, run_command};
use super::tag::{InjectionTag, NFT_TABLE_PREFIX};
use crate::api::{Direction, NetworkFault};

/// Whether `nft` runs here (and the kernel has nf_tables).
pub fn available() -> bool {
    run_command("nft", &["list", "tables"], None).is_ok()
}

/// Applies (or replaces: desired state, one transaction) the partition of this injection.
pub fn apply_partition(ns: &Netns, tag: &InjectionTag, fault: &NetworkFault) -> io::Result<()> {
    let direction = fault
        .partition
        .ok_or_else(|| io::Error::other("the injection is not a partition"))?;
    let devices = interfaces(ns)?;
    if devices.is_empty() {
        return Err(io::Error::other(
            "the pod's network namespace has no interface but lo",
        ));
    }
    let netdev = partition_ruleset(&tag.nft_table(), &devices, direction, fault, true)
        .map_err(io::Error::other)?;
    match ns.command("nft", &["-f", "-"], Some(&netdev)) {
        Ok(_) => Ok(()),
        Err(error) if error.to_string().contains("egress") => {
            tracing::info!(%error, "no netdev egress hook on this kernel; using inet output");
            let inet = partition_ruleset(&tag.nft_table(), &devices, direction, fault, false)
                .map_err(io::Error::other)?;
            ns.command("nft", &["-f", "-"], Some(&inet)).map(|_| ())
        }
        Err(error) => Err(error),
    }
}

/// Deletes the injection's table; `Ok(false)` when there was none.
pub fn remove(ns: &Netns, tag: &InjectionTag) -> io::Result<bool> {
    let name = tag.nft_table();
    // One process in the common case: the table is where apply puts it.
    match ns.command("nft", &["delete", "table", "netdev", &name], None) {
        Ok(_) => return Ok(true),
        Err(error) if error.to_string().contains("No such file") => {}
        Err(error) => return Err(error),
    }
    let mut removed = false;
    for (family, table) in tables(ns)? {
        if table == name {
            ns.command("nft", &["delete", "table", &family, &table], None)?;
            removed = true;
        }
    }
    Ok(removed)
}

/// The injections whose tables are in this namespace. Anyone else's table is not listed.
pub fn owned(ns: &Netns) -> io::Result<Vec<InjectionTag>> {
    Ok(tables(ns)?
        .into_iter()
        .filter_map(|(_, table)| InjectionTag::from_nft_table(&table))
        .collect())
}

fn tables(ns: &Netns) -> io::Result<Vec<(String, String)>> {
    let out = ns.command("nft", &["list", "tables"], None)?;
    Ok(parse_tables(&String::from_utf8_lossy(&out.stdout)))
}

/// `table inet filter` lines → (family, name).
fn parse_tables(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "table").then_some(())?;
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// The namespace's interfaces but `lo`.
pub fn interfaces(ns: &Netns) -> io::Result<Vec<String>> {
    let out = ns.command("ip", &["-o", "link", "show"], None)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "2: eth0@if7: <BROADCAST,...>"
            let name = line.split(':').nth(1)?.trim();
            let name = name.split('@').next()?;
            (name != "lo").then(|| name.to_string())
        })
        .collect())
}

/// The `nft -f` text for a partition (pure). `netdev`: hooks on the devices; otherwise inet
/// prerouting/output.
pub fn partition_ruleset(
    table: &str,
    devices: &[String],
    direction: Direction,
    fault: &NetworkFault,
    netdev: bool,
) -> Result<String, String> {
    if !table.starts_with(NFT_TABLE_PREFIX) {
        return Err(format!("{table} is not a faultline table name"));
    }
    let (v4, v6) = split_peers(&fault.peer_cidrs)?;
    if v4.is_empty() && v6.is_empty() {
        return Err("a partition needs at least one peer CIDR".into());
    }
    let ports: Vec<String> = fault.ports.iter().map(i32::to_string).collect();
    let ports = (!ports.is_empty()).then(|| format!("{{ {} }}", ports.join(", ")));
    let (to, from) = match direction {
        Direction::To => (true, false),
        Direction::From => (false, true),
        Direction::Both => (true, true),
    };
    let mut egress = Vec::new();
    let mut ingress = Vec::new();
    for (family, peers) in [("ip", &v4), ("ip6", &v6)] {
        if peers.is_empty() {
            continue;
        }
        let set = format!("{{ {} }}", peers.join(", "));
        let port = |which: &str| match &ports {
            Some(p) => format!(" meta l4proto {{ tcp, udp }} th {which} {p}"),
            None => String::new(),
        };
        if to {
            egress.push(format!("{family} daddr {set}{} drop", port("dport")));
            if ports.is_some() {
                ingress.push(format!("{family} saddr {set}{} drop", port("sport")));
            }
        }
        if from {
            ingress.push(format!("{family} saddr {set}{} drop", port("dport")));
            if ports.is_some() {
                egress.push(format!("{family} daddr {set}{} drop", port("sport")));
            }
        }
    }
    let mut text = String::new();
    let family = if netdev { "netdev" } else { "inet" };
    // Declare, delete, recreate: one atomic transaction whether or not the table existed.
    text.push_str(&format!(
        "table {family} {table}\ndelete table {family} {table}\ntable {family} {table} {{\n"
    ));
    let chain =
        |name: &str, hook: &str, device: Option<&str>, rules: &[String], text: &mut String| {
            if rules.is_empty() {
                return;
            }
            let device = device
                .map(|d| format!(" device \"{d}\""))
                .unwrap_or_default();
            text.push_str(&format!(
            "  chain {name} {{\n    type filter hook {hook}{device} priority -300; policy accept;\n"
        ));
            if device.is_empty() {
                let lo = if hook == "output" {
                    "oifname"
                } else {
                    "iifname"
                };
                text.push_str(&format!("    {lo} \"lo\" accept\n"));
            }
            for rule in rules {
                text.push_str(&format!("    {rule}\n"));
            }
            text.push_str("  }\n");
        };
    if netdev {
        for (i, device) in devices.iter().enumerate() {
            chain(
                &format!("egress{i}"),
                "egress",
                Some(device),
                &egress,
                &mut text,
            );
            chain(
                &format!("ingress{i}"),
                "ingress",
                Some(device),
                &ingress,
                &mut text,
            );
        }
    } else {
        chain("egress", "output", None, &egress, &mut text);
        chain("ingress", "prerouting", None, &ingress, &mut text);
    }
    text.push_str("}\n");
    Ok(text)
}

fn split_peers(cidrs: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for cidr in cidrs {
        let addr = cidr.split('/').next().unwrap_or_default();
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => v4.push(cidr.clone()),
            Ok(IpAddr::V6(_)) => v6.push(cidr.clone()),
            Err(_) => return Err(format!("{cidr} is not an address or CIDR")),
        }
    }
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(ports: Vec<i32>) -> NetworkFault {
        NetworkFault {
            partition: Some(Direction::Both),
            peer_cidrs: vec!["10.0.0.5/32".into(), "fd00::/64".into()],
            ports,
            ..Default::default()
        }
    }

    #[test]
    fn both_directions_drop_on_every_interface_below_the_ip_stack() {
        let text = partition_ruleset(
            "faultline_0123456789abcdef01234567",
            &["eth0".into()],
            Direction::Both,
            &fault(vec![]),
            true,
        )
        .unwrap();
        assert!(text.starts_with("table netdev faultline_0123456789abcdef01234567\ndelete table"));
        assert!(text.contains("type filter hook egress device \"eth0\" priority -300"));
        assert!(text.contains("ip daddr { 10.0.0.5/32 } drop"));
        assert!(text.contains("ip saddr { 10.0.0.5/32 } drop"));
        assert!(text.contains("ip6 daddr { fd00::/64 } drop"));
    }

    #[test]
    fn to_with_ports_drops_requests_and_their_replies_only() {
        let text = partition_ruleset(
            "faultline_0123456789abcdef01234567",
            &["eth0".into()],
            Direction::To,
            &fault(vec![5432]),
            true,
        )
        .unwrap();
        assert!(
            text.contains(
                "ip daddr { 10.0.0.5/32 } meta l4proto { tcp, udp } th dport { 5432 } drop"
            )
        );
        assert!(
            text.contains(
                "ip saddr { 10.0.0.5/32 } meta l4proto { tcp, udp } th sport { 5432 } drop"
            )
        );
        assert!(
            !text.contains("th dport { 5432 } drop\n    ip saddr"),
            "{text}"
        );
    }

    #[test]
    fn to_without_ports_leaves_arriving_packets_alone() {
        let text = partition_ruleset(
            "faultline_0123456789abcdef01234567",
            &["eth0".into()],
            Direction::To,
            &fault(vec![]),
            true,
        )
        .unwrap();
        assert!(!text.contains("ingress"), "{text}");
    }

    #[test]
    fn the_inet_fallback_spares_loopback_and_foreign_names_are_refused() {
        let text = partition_ruleset(
            "faultline_0123456789abcdef01234567",
            &["eth0".into()],
            Direction::From,
            &fault(vec![]),
            false,
        )
        .unwrap();
        assert!(text.contains("hook prerouting priority -300"));
        assert!(text.contains("iifname \"lo\" accept"));
        assert!(partition_ruleset("filter", &[], Direction::To, &fault(vec![]), true).is_err());
        let mut bad = fault(vec![]);
        bad.peer_cidrs = vec!["not-an-ip".into()];
        assert!(
            partition_ruleset(
                "faultline_0123456789abcdef01234567",
                &[],
                Direction::To,
                &bad,
                true
            )
            .is_err()
        );
    }

    #[test]
    fn table_listings_parse() {
        let tables =
            parse_tables("table inet filter\ntable netdev faultline_0123456789abcdef01234567\n");
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[1].0, "netdev");
    }
}
