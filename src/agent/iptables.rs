//! Partitions with iptables, where the kernel has no nf_tables: the same drops as
//! [`super::nft`] (see its table of directions), as one chain per injection (`FL-<tag>`) in the
//! raw table, jumped to from PREROUTING and OUTPUT, written with one
//! `iptables-restore --noflush` transaction. IPv4 only (an IPv6 peer is refused with that
//! reason).
//!
//! The deadline: every drop rule carries `-m time --datestop` ([`datestop`]): the kernel stops
//! matching within a second after `expiresAt` (the `time` match compares whole seconds), with
//! or without an agent.

use std::io;
use std::net::IpAddr;

use super::deadline::Deadline;
use super::netns::{Netns, run_command};
use super::nfqueue::rules::datestop;
use super::tag::InjectionTag;
use crate::api::{Direction, NetworkFault};

pub fn available() -> bool {
    run_command("iptables", &["-t", "raw", "-S"], None).is_ok()
}

pub fn apply_partition(
    ns: &Netns,
    tag: &InjectionTag,
    fault: &NetworkFault,
    deadline: &Deadline,
) -> io::Result<()> {
    let direction = fault
        .partition
        .ok_or_else(|| io::Error::other("the injection is not a partition"))?;
    deadline
        .remaining()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let chain = tag.iptables_chain();
    let present = chains(ns)?.contains(&chain);
    let rules = partition_rules(&chain, direction, fault, !present, &datestop(deadline))
        .map_err(io::Error::other)?;
    ns.command("iptables-restore", &["--noflush"], Some(&rules))
        .map(|_| ())
}

pub fn remove(ns: &Netns, tag: &InjectionTag) -> io::Result<bool> {
    let chain = tag.iptables_chain();
    if !chains(ns)?.contains(&chain) {
        return Ok(false);
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        while ns
            .command("iptables", &["-t", "raw", "-D", hook, "-j", &chain], None)
            .is_ok()
        {}
    }
    ns.command("iptables", &["-t", "raw", "-F", &chain], None)?;
    ns.command("iptables", &["-t", "raw", "-X", &chain], None)?;
    Ok(true)
}

pub fn owned(ns: &Netns) -> io::Result<Vec<InjectionTag>> {
    Ok(chains(ns)?
        .iter()
        .filter_map(|c| InjectionTag::from_iptables_chain(c))
        .collect())
}

fn chains(ns: &Netns) -> io::Result<Vec<String>> {
    let out = ns.command("iptables", &["-t", "raw", "-S"], None)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(str::to_string)
        .collect())
}

/// The `iptables-restore --noflush` input (pure). `create`: the chain and its jumps are new;
/// every drop matches until `until` (a `--datestop`).
pub fn partition_rules(
    chain: &str,
    direction: Direction,
    fault: &NetworkFault,
    create: bool,
    until: &str,
) -> Result<String, String> {
    let mut peers = Vec::new();
    for cidr in &fault.peer_cidrs {
        match cidr.split('/').next().unwrap_or_default().parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => peers.push(cidr.clone()),
            Ok(IpAddr::V6(_)) => {
                return Err(format!(
                    "the iptables fallback does not handle IPv6 peers ({cidr}); install nftables"
                ));
            }
            Err(_) => return Err(format!("{cidr} is not an address or CIDR")),
        }
    }
    if peers.is_empty() {
        return Err("a partition needs at least one peer CIDR".into());
    }
    let ports = fault
        .ports
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let (to, from) = match direction {
        Direction::To => (true, false),
        Direction::From => (false, true),
        Direction::Both => (true, true),
    };
    let mut out = String::from("*raw\n");
    if create {
        out.push_str(&format!(
            ":{chain} - [0:0]\n-A PREROUTING -j {chain}\n-A OUTPUT -j {chain}\n"
        ));
    } else {
        out.push_str(&format!("-F {chain}\n"));
    }
    out.push_str(&format!(
        "-A {chain} -i lo -j RETURN\n-A {chain} -o lo -j RETURN\n"
    ));
    let mut rule = |addr: &str, peer: &str, port: Option<&str>| match port {
        None => out.push_str(&format!(
            "-A {chain} {addr} {peer} -m time --datestop {until} -j DROP\n"
        )),
        Some(which) => {
            for proto in ["tcp", "udp"] {
                out.push_str(&format!(
                    "-A {chain} {addr} {peer} -p {proto} -m multiport --{which} {ports} -m time --datestop {until} -j DROP\n"
                ));
            }
        }
    };
    let with_ports = !fault.ports.is_empty();
    for peer in &peers {
        if to {
            rule("-d", peer, with_ports.then_some("dports"));
            if with_ports {
                rule("-s", peer, Some("sports"));
            }
        }
        if from {
            rule("-s", peer, with_ports.then_some("dports"));
            if with_ports {
                rule("-d", peer, Some("sports"));
            }
        }
    }
    out.push_str("COMMIT\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_one_chain_with_its_jumps() {
        let fault = NetworkFault {
            partition: Some(Direction::Both),
            peer_cidrs: vec!["10.0.0.5/32".into()],
            ..Default::default()
        };
        let until = "2026-01-01T00:00:00";
        let text = partition_rules(
            "FL-0123456789abcdef01234567",
            Direction::Both,
            &fault,
            true,
            until,
        )
        .unwrap();
        assert!(text.contains(":FL-0123456789abcdef01234567 - [0:0]\n-A PREROUTING -j FL-"));
        assert!(text.contains("-d 10.0.0.5/32 -m time --datestop 2026-01-01T00:00:00 -j DROP"));
        assert!(text.contains("-s 10.0.0.5/32 -m time --datestop 2026-01-01T00:00:00 -j DROP"));
        let again = partition_rules(
            "FL-0123456789abcdef01234567",
            Direction::Both,
            &fault,
            false,
            until,
        )
        .unwrap();
        assert!(again.contains("-F FL-") && !again.contains("-A PREROUTING"));
    }
}
