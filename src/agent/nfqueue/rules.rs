//! The iptables rules that send a pod's packets to a queue, rendered and parsed as pure text
//! (unit-tested), and applied with `iptables-restore --noflush` inside a namespace.
//!
//! Each injection owns one chain in the `mangle` table of each namespace it queues in, named
//! `FL-<tag>`, with one jump to it appended to `PREROUTING`:
//!
//! ```text
//! -A PREROUTING -m physdev --physdev-in veth3 -j FL-<tag>          node side, bridge port
//! -A PREROUTING -i veth3 -j FL-<tag>                               node side, routed
//! -A PREROUTING ! -i lo -j FL-<tag>                                pod side (ingress)
//! -A FL-<tag> [-d CIDR] [-p tcp -m multiport --dports P,...] -j NFQUEUE --queue-num N --queue-bypass
//! ```
//!
//! The queue number lives in the rules, so a restarted agent recovers it from the kernel.
//! Rules are written in the exact form `iptables-save` prints them, so the desired set can be
//! compared with what is there and an unchanged injection is left alone (its counters too).
//! A change is one `iptables-restore` transaction: the chain is declared (which flushes it),
//! refilled, stale jumps deleted and the jump appended, all or nothing.
//!
//! Scope: peers are the other end of the traffic. Egress (node side) matches destination
//! CIDRs and destination ports; ingress (pod side) matches source CIDRs and source ports, so
//! `both` on a connection to `peer:port` delays both halves of that same connection.
//!
//! Caveat: an accepted packet leaves the `mangle PREROUTING` chain (a verdict ends the hook),
//! so `mangle PREROUTING` rules after our jump do not see queued packets; we append our jump
//! after everyone else's.
//!
//! Never touches a chain that is not `FL-<tag>`, and never another rule than the jumps to it.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::IpAddr;

use crate::agent::netns::Netns;
use crate::agent::tag::InjectionTag;

use super::hostveth::HostPort;

pub const TABLE: &str = "mangle";
const HOOK_CHAIN: &str = "PREROUTING";
/// multiport takes at most 15 ports per rule.
const PORTS_PER_RULE: usize = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    pub fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
}

/// A network in the form iptables-save prints: network address (host bits cleared) / prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `10.1.2.3` (a host), `fd00::/64`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a CIDR such as 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
            None => max,
        };
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(u32::from(32 - prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(u32::from(128 - prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Self { addr, prefix })
    }

    pub fn family(&self) -> Family {
        if self.addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which packets of the hooked interface are queued.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Peers; empty means everyone.
    pub cidrs: Vec<Cidr>,
    /// Peer ports (TCP and UDP); empty means every port and protocol.
    pub ports: Vec<u16>,
}

impl Scope {
    pub fn parse(cidrs: &[String], ports: &[i32]) -> Result<Self, String> {
        let mut cidrs = cidrs
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<Vec<_>, _>>()?;
        cidrs.sort();
        cidrs.dedup();
        let mut ports = ports
            .iter()
            .map(|&p| {
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("port {p} is not between 1 and 65535"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        ports.sort_unstable();
        ports.dedup();
        Ok(Self { cidrs, ports })
    }

    /// The families this scope needs rules for: those of its CIDRs, or both when it has none.
    pub fn families(&self) -> BTreeSet<Family> {
        if self.cidrs.is_empty() {
            Family::ALL.into_iter().collect()
        } else {
            self.cidrs.iter().map(Cidr::family).collect()
        }
    }
}

/// Where a chain is hooked, which is also which way packets go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// In the node's namespace, packets arriving from the pod's veth: the pod's egress.
    Node(HostPort),
    /// In the pod's namespace, packets arriving at the pod: its ingress.
    Pod,
}

impl Hook {
    fn egress(&self) -> bool {
        matches!(self, Hook::Node(_))
    }

    /// `-A PREROUTING ... -j FL-<tag>`
    pub fn jump(&self, tag: &InjectionTag) -> String {
        let chain = tag.iptables_chain();
        match self {
            Hook::Node(HostPort::Routed { veth }) => {
                format!("-A {HOOK_CHAIN} -i {veth} -j {chain}")
            }
            Hook::Node(HostPort::Bridged { veth, .. }) => {
                format!("-A {HOOK_CHAIN} -m physdev --physdev-in {veth} -j {chain}")
            }
            Hook::Pod => format!("-A {HOOK_CHAIN} ! -i lo -j {chain}"),
        }
    }
}

/// The `--datestop` of a deadline: the last whole second (UTC) that still ends before the
/// next one after `expiresAt`. The `time` match compares whole seconds of the kernel's clock,
/// so the rule stops matching within a second after the deadline.
pub fn datestop(deadline: &crate::agent::deadline::Deadline) -> String {
    let at = deadline.expires_at;
    let whole = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0) - 1;
    chrono::DateTime::from_timestamp(whole, 0)
        .unwrap_or(at)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// The rules of our chain for one family, as iptables-save prints them, matching until
/// `datestop` ([`datestop`]).
pub fn chain_rules(
    tag: &InjectionTag,
    family: Family,
    hook: &Hook,
    scope: &Scope,
    queue: u16,
    datestop: &str,
) -> Vec<String> {
    let chain = tag.iptables_chain();
    let (addr_flag, port_flag) = if hook.egress() {
        ("-d", "--dports")
    } else {
        ("-s", "--sports")
    };
    let cidrs: Vec<Option<&Cidr>> = if scope.cidrs.is_empty() {
        vec![None]
    } else {
        scope
            .cidrs
            .iter()
            .filter(|c| c.family() == family)
            .map(Some)
            .collect()
    };
    let ports: Vec<Option<(&str, String)>> = if scope.ports.is_empty() {
        vec![None]
    } else {
        ["tcp", "udp"]
            .into_iter()
            .flat_map(|proto| {
                scope.ports.chunks(PORTS_PER_RULE).map(move |chunk| {
                    let list: Vec<String> = chunk.iter().map(u16::to_string).collect();
                    Some((proto, list.join(",")))
                })
            })
            .collect()
    };
    let mut rules = Vec::with_capacity(cidrs.len() * ports.len());
    for cidr in &cidrs {
        for port in &ports {
            let mut rule = format!("-A {chain}");
            if let Some(cidr) = cidr {
                rule.push_str(&format!(" {addr_flag} {cidr}"));
            }
            if let Some((proto, list)) = port {
                rule.push_str(&format!(" -p {proto} -m multiport {port_flag} {list}"));
            }
            rule.push_str(&format!(
                " -m time --datestop {datestop} -j NFQUEUE --queue-num {queue} --queue-bypass"
            ));
            rules.push(rule);
        }
    }
    rules
}

/// One rule of an iptables-save listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// The whole line without counters: `-A CHAIN ...`
    pub line: String,
    pub packets: u64,
}

/// The interfaces a saved rule matches on (`-i`, `-o`, `--physdev-in`, `--physdev-out`).
pub fn interfaces(line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| matches!(w[0], "-i" | "-o" | "--physdev-in" | "--physdev-out"))
        .map(|w| w[1].to_string())
        .collect()
}

/// The parts of one table's iptables-save output we need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub chains: BTreeSet<String>,
    pub rules: Vec<SavedRule>,
}

/// Parses `iptables-save [-c]` output; with several tables, all of them together (used for
/// queue numbers in use).
pub fn parse_save(text: &str) -> Saved {
    let mut saved = Saved::default();
    for line in text.lines().map(str::trim) {
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                saved.chains.insert(name.to_string());
            }
            continue;
        }
        let (packets, rule) = match line.strip_prefix('[') {
            Some(rest) => match rest.split_once(']') {
                Some((counters, rule)) => (
                    counters
                        .split(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    rule.trim(),
                ),
                None => continue,
            },
            None => (0, line),
        };
        let Some(spec) = rule.strip_prefix("-A ") else {
            continue;
        };
        let Some(chain) = spec.split_whitespace().next() else {
            continue;
        };
        saved.rules.push(SavedRule {
            chain: chain.to_string(),
            line: rule.to_string(),
            packets,
        });
    }
    saved
}

impl Saved {
    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.contains(chain)
    }

    /// The rules of `chain`, in order.
    pub fn rules_of(&self, chain: &str) -> Vec<&SavedRule> {
        self.rules.iter().filter(|r| r.chain == chain).collect()
    }

    /// Rules in other chains that jump to `chain`.
    pub fn jumps_to(&self, chain: &str) -> Vec<&SavedRule> {
        self.rules
            .iter()
            .filter(|r| r.chain != chain && target(&r.line) == Some(chain))
            .collect()
    }

    /// The queue number of `chain`'s NFQUEUE rules (the first one found).
    pub fn queue_of(&self, chain: &str) -> Option<u16> {
        self.rules_of(chain)
            .iter()
            .find_map(|r| queue_numbers(&r.line).into_iter().next())
    }

    /// Packets that hit `chain`'s NFQUEUE rules (each packet hits at most one: it is queued).
    pub fn queued_packets(&self, chain: &str) -> u64 {
        self.rules_of(chain)
            .iter()
            .filter(|r| target(&r.line) == Some("NFQUEUE"))
            .map(|r| r.packets)
            .sum()
    }

    /// Every queue number any rule sends to.
    pub fn queue_numbers(&self) -> BTreeSet<u16> {
        self.rules
            .iter()
            .flat_map(|r| queue_numbers(&r.line))
            .collect()
    }

    /// Tags of our NFQUEUE chains: `FL-<tag>` chains holding nothing but NFQUEUE rules (an
    /// empty one too: left by an interrupted apply).
    pub fn nfqueue_tags(&self) -> Vec<InjectionTag> {
        self.chains
            .iter()
            .filter_map(|chain| {
                let tag = InjectionTag::from_iptables_chain(chain)?;
                self.rules_of(chain)
                    .iter()
                    .all(|r| target(&r.line) == Some("NFQUEUE"))
                    .then_some(tag)
            })
            .collect()
    }
}

/// The `-j` target of a rule line.
fn target(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-j" || word == "--jump" {
            return words.next();
        }
    }
    None
}

/// Queue numbers named by a rule: `--queue-num N`, or every queue of `--queue-balance A:B`.
fn queue_numbers(line: &str) -> Vec<u16> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut numbers = Vec::new();
    for pair in words.windows(2) {
        match pair[0] {
            "--queue-num" => numbers.extend(pair[1].parse::<u16>().ok()),
            "--queue-balance" => {
                if let Some((a, b)) = pair[1].split_once(':')
                    && let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>())
                {
                    numbers.extend(a..=b);
                }
            }
            _ => {}
        }
    }
    if numbers.is_empty() && target(line) == Some("NFQUEUE") {
        numbers.push(0); // NFQUEUE without a number is queue 0
    }
    numbers
}

/// An `iptables-restore --noflush` input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub script: String,
    /// Whether the chain is declared anew (flushed and refilled: its counters restart at 0).
    pub chain_rewritten: bool,
}

/// The change that makes our chain hold exactly `rules` and the hook chain jump to it exactly
/// once with `jump`. `None` when everything is already so.
pub fn restore_script(
    saved: &Saved,
    tag: &InjectionTag,
    rules: &[String],
    jump: &str,
) -> Option<Change> {
    let chain = tag.iptables_chain();
    let current: Vec<&str> = saved
        .rules_of(&chain)
        .iter()
        .map(|r| r.line.as_str())
        .collect();
    let jumps: Vec<&str> = saved
        .jumps_to(&chain)
        .iter()
        .map(|r| r.line.as_str())
        .collect();
    let chain_ok = saved.has_chain(&chain) && current == rules;
    let jump_ok = jumps == [jump];
    if chain_ok && jump_ok {
        return None;
    }
    let mut script = format!("*{TABLE}\n");
    if !chain_ok {
        script.push_str(&format!(":{chain} - [0:0]\n"));
        for rule in rules {
            script.push_str(rule);
            script.push('\n');
        }
    }
    if !jump_ok {
        for stale in jumps {
            script.push_str(&delete_line(stale));
            script.push('\n');
        }
        script.push_str(jump);
        script.push('\n');
    }
    script.push_str("COMMIT\n");
    Some(Change {
        script,
        chain_rewritten: !chain_ok,
    })
}

/// The input that removes our chain and every jump to it. `None` when there is no chain.
pub fn removal_script(saved: &Saved, tag: &InjectionTag) -> Option<String> {
    let chain = tag.iptables_chain();
    if !saved.has_chain(&chain) {
        return None;
    }
    let mut script = format!("*{TABLE}\n");
    for jump in saved.jumps_to(&chain) {
        script.push_str(&delete_line(&jump.line));
        script.push('\n');
    }
    script.push_str(&format!("-F {chain}\n-X {chain}\nCOMMIT\n"));
    Some(script)
}

fn delete_line(line: &str) -> String {
    format!("-D {}", line.strip_prefix("-A ").unwrap_or(line))
}

/// Reads the mangle table of `family` in `ns`, with counters. A missing `ip6tables` reads as
/// an empty table (nothing of ours can be there).
pub fn read(ns: &Netns, family: Family) -> io::Result<Saved> {
    match ns.command(family.save(), &["-c", "-t", TABLE], None) {
        Ok(output) => Ok(parse_save(&String::from_utf8_lossy(&output.stdout))),
        Err(e) if family == Family::V6 && e.kind() == io::ErrorKind::NotFound => {
            Ok(Saved::default())
        }
        Err(e) => Err(e),
    }
}

/// Every queue number referenced by any rule of any table in `ns`, both families.
pub fn queue_numbers_in_use(ns: &Netns) -> io::Result<BTreeSet<u16>> {
    let mut numbers = BTreeSet::new();
    for family in Family::ALL {
        match ns.command(family.save(), &[], None) {
            Ok(output) => {
                numbers.extend(parse_save(&String::from_utf8_lossy(&output.stdout)).queue_numbers())
            }
            Err(e) if family == Family::V6 && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(numbers)
}

pub fn restore(ns: &Netns, family: Family, script: &str) -> io::Result<()> {
    ns.command(family.restore(), &["-w", "--noflush"], Some(script))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag() -> InjectionTag {
        InjectionTag::from_uid("0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37").unwrap()
    }

    const CHAIN: &str = "FL-0f3c2a9e7b1d4c559a0e2b6f";
    const UNTIL: &str = "2026-01-01T00:00:00";

    fn bridged() -> Hook {
        Hook::Node(HostPort::Bridged {
            veth: "veth3".into(),
            bridge: "br0".into(),
        })
    }

    #[test]
    fn cidrs_are_written_as_iptables_save_prints_them() {
        let cases = [
            ("10.1.2.3", "10.1.2.3/32"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            (" 192.168.1.0/24", "192.168.1.0/24"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00:0:0:1::5/64", "fd00:0:0:1::/64"),
            ("::1", "::1/128"),
        ];
        for (input, printed) in cases {
            assert_eq!(Cidr::parse(input).unwrap().to_string(), printed, "{input}");
        }
        for bad in ["10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn datestop_is_the_last_second_that_ends_by_the_deadline() {
        use crate::agent::deadline::Deadline;
        let at = |s: &str| Deadline::new(s.parse().unwrap());
        // On a whole second: the previous second is the last matching one.
        assert_eq!(datestop(&at("2026-01-01T00:00:05Z")), "2026-01-01T00:00:04");
        // Mid-second: the rule stops at the next whole second, within 1 s after.
        assert_eq!(
            datestop(&at("2026-01-01T00:00:05.300Z")),
            "2026-01-01T00:00:05"
        );
    }

    #[test]
    fn everything_is_one_rule_per_family() {
        let scope = Scope::default();
        assert_eq!(
            scope.families(),
            [Family::V4, Family::V6].into_iter().collect()
        );
        let rules = chain_rules(&tag(), Family::V4, &bridged(), &scope, 20001, UNTIL);
        assert_eq!(
            rules,
            [format!(
                "-A {CHAIN} -m time --datestop 2026-01-01T00:00:00 -j NFQUEUE --queue-num 20001 --queue-bypass"
            )]
        );
    }

    #[test]
    fn egress_matches_destination_peers_and_ports_per_protocol() {
        let scope = Scope::parse(
            &["10.77.0.3".into(), "fd00::/8".into(), "10.0.0.0/8".into()],
            &[443, 80, 80],
        )
        .unwrap();
        let rules = chain_rules(&tag(), Family::V4, &bridged(), &scope, 7, UNTIL);
        assert_eq!(
            rules,
            [
                format!(
                    "-A {CHAIN} -d 10.0.0.0/8 -p tcp -m multiport --dports 80,443 -m time --datestop 2026-01-01T00:00:00 -j NFQUEUE --queue-num 7 --queue-bypass"
                ),
                format!(
                    "-A {CHAIN} -d 10.0.0.0/8 -p udp -m multiport --dports 80,443 -m time --datestop 2026-01-01T00:00:00 -j NFQUEUE --queue-num 7 --queue-bypass"
                ),
                format!(
                    "-A {CHAIN} -d 10.77.0.3/32 -p tcp -m multiport --dports 80,443 -m time --datestop 2026-01-01T00:00:00 -j NFQUEUE --queue-num 7 --queue-bypass"
                ),
                format!(
                    "-A {CHAIN} -d 10.77.0.3/32 -p udp -m multiport --dports 80,443 -m time --datestop 2026-01-01T00:00:00 -j NFQUEUE --queue-num 7 --queue-bypass"
                ),
            ]
        );
        let v6 = chain_rules(&tag(), Family::V6, &bridged(), &scope, 7, UNTIL);
        assert_eq!(v6.len(), 2);
        assert!(v6[0].contains("-d fd00::/8 -p tcp"));
    }

    #[test]
    fn ingress_matches_source_peers_and_ports() {
        let scope = Scope::parse(&["10.77.0.3/32".into()], &[]).unwrap();
        assert_eq!(scope.families(), [Family::V4].into_iter().collect());
        let rules = chain_rules(&tag(), Family::V4, &Hook::Pod, &scope, 9, UNTIL);
        assert_eq!(
            rules,
            [format!(
                "-A {CHAIN} -s 10.77.0.3/32 -m time --datestop 2026-01-01T00:00:00 -j NFQUEUE --queue-num 9 --queue-bypass"
            )]
        );
        assert_eq!(
            Hook::Pod.jump(&tag()),
            format!("-A PREROUTING ! -i lo -j {CHAIN}")
        );
    }

    #[test]
    fn more_than_fifteen_ports_are_split_across_rules() {
        let ports: Vec<i32> = (1..=20).collect();
        let scope = Scope::parse(&[], &ports).unwrap();
        let rules = chain_rules(&tag(), Family::V4, &bridged(), &scope, 1, UNTIL);
        assert_eq!(rules.len(), 4);
        assert!(rules[0].contains("--dports 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15 "));
        assert!(rules[1].contains("-p tcp -m multiport --dports 16,17,18,19,20 "));
        assert!(rules[2].contains("-p udp"));
    }

    #[test]
    fn bad_ports_and_cidrs_are_refused() {
        assert!(Scope::parse(&[], &[0]).is_err());
        assert!(Scope::parse(&[], &[70000]).is_err());
        assert!(Scope::parse(&["300.0.0.1".into()], &[]).is_err());
    }

    #[test]
    fn jumps_name_the_port_the_way_the_attachment_needs() {
        assert_eq!(
            bridged().jump(&tag()),
            format!("-A PREROUTING -m physdev --physdev-in veth3 -j {CHAIN}")
        );
        let routed = Hook::Node(HostPort::Routed {
            veth: "cali12".into(),
        });
        assert_eq!(
            routed.jump(&tag()),
            format!("-A PREROUTING -i cali12 -j {CHAIN}")
        );
    }

    fn saved_with(chain_rules: &[&str], jumps: &[&str]) -> String {
        let mut text = String::from(
            "# Generated by iptables-save v1.8.9 (nf_tables)\n*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:KUBE-MARK - [0:0]\n",
        );
        text.push_str(&format!(":{CHAIN} - [0:0]\n"));
        text.push_str("[5:300] -A PREROUTING -j KUBE-MARK\n");
        for jump in jumps {
            text.push_str(&format!("[1:60] {jump}\n"));
        }
        for (i, rule) in chain_rules.iter().enumerate() {
            text.push_str(&format!("[{}:100] {rule}\n", 10 * (i + 1)));
        }
        text.push_str("COMMIT\n# Completed\n");
        text
    }

    #[test]
    fn saved_rules_give_back_queue_counters_and_jumps() {
        let rule = format!("-A {CHAIN} -d 10.0.0.0/8 -j NFQUEUE --queue-num 20001 --queue-bypass");
        let rule2 =
            format!("-A {CHAIN} -d 10.9.0.0/16 -j NFQUEUE --queue-num 20001 --queue-bypass");
        let jump = bridged().jump(&tag());
        let saved = parse_save(&saved_with(&[&rule, &rule2], &[&jump]));
        assert!(saved.has_chain(CHAIN));
        assert_eq!(saved.queue_of(CHAIN), Some(20001));
        assert_eq!(saved.queued_packets(CHAIN), 30);
        assert_eq!(
            saved
                .jumps_to(CHAIN)
                .iter()
                .map(|r| r.line.as_str())
                .collect::<Vec<_>>(),
            [jump.as_str()]
        );
        assert_eq!(saved.nfqueue_tags(), vec![tag()]);
        assert_eq!(saved.queue_numbers(), [20001].into_iter().collect());
    }

    #[test]
    fn queue_numbers_include_balanced_and_default_queues() {
        let saved = parse_save(
            "*mangle\n-A X -j NFQUEUE --queue-balance 3:5\n-A Y -j NFQUEUE\n-A Z -j NFQUEUE --queue-num 9 --queue-bypass\n-A W -j ACCEPT\nCOMMIT\n",
        );
        assert_eq!(saved.queue_numbers(), [0, 3, 4, 5, 9].into_iter().collect());
    }

    #[test]
    fn foreign_fl_chains_are_not_claimed() {
        let text = "*mangle\n:FL-0f3c2a9e7b1d4c559a0e2b6f - [0:0]\n:FL-aaaaaaaaaaaaaaaaaaaaaaaa - [0:0]\n:FL-short - [0:0]\n-A FL-0f3c2a9e7b1d4c559a0e2b6f -j DROP\nCOMMIT\n";
        // Our tag's chain with a DROP rule is someone else's (the partition fallback); the
        // empty one is an interrupted apply of ours.
        assert_eq!(
            parse_save(text).nfqueue_tags(),
            vec![InjectionTag::from_iptables_chain("FL-aaaaaaaaaaaaaaaaaaaaaaaa").unwrap()]
        );
    }

    #[test]
    fn restore_script_is_none_when_everything_is_in_place() {
        let rules = chain_rules(
            &tag(),
            Family::V4,
            &bridged(),
            &Scope::default(),
            20001,
            UNTIL,
        );
        let jump = bridged().jump(&tag());
        let rule_refs: Vec<&str> = rules.iter().map(String::as_str).collect();
        let saved = parse_save(&saved_with(&rule_refs, &[&jump]));
        assert_eq!(restore_script(&saved, &tag(), &rules, &jump), None);
    }

    #[test]
    fn restore_script_creates_chain_and_jump_from_nothing() {
        let rules = chain_rules(
            &tag(),
            Family::V4,
            &bridged(),
            &Scope::default(),
            20001,
            UNTIL,
        );
        let jump = bridged().jump(&tag());
        let change = restore_script(&Saved::default(), &tag(), &rules, &jump).unwrap();
        assert!(change.chain_rewritten);
        assert_eq!(
            change.script,
            format!(
                "*mangle\n:{CHAIN} - [0:0]\n-A {CHAIN} -m time --datestop 2026-01-01T00:00:00 -j NFQUEUE --queue-num 20001 --queue-bypass\n-A PREROUTING -m physdev --physdev-in veth3 -j {CHAIN}\nCOMMIT\n"
            )
        );
    }

    #[test]
    fn restore_script_rewrites_changed_rules_and_leaves_one_jump() {
        let old = format!("-A {CHAIN} -j NFQUEUE --queue-num 20001 --queue-bypass");
        let jump = bridged().jump(&tag());
        let stale_jump = format!("-A PREROUTING -i veth9 -j {CHAIN}");
        let saved = parse_save(&saved_with(&[&old], &[&jump, &jump, &stale_jump]));
        let scope = Scope::parse(&["10.0.0.0/8".into()], &[]).unwrap();
        let rules = chain_rules(&tag(), Family::V4, &bridged(), &scope, 20001, UNTIL);
        let change = restore_script(&saved, &tag(), &rules, &jump).unwrap();
        assert!(change.chain_rewritten);
        assert_eq!(
            change.script,
            format!(
                "*mangle\n:{CHAIN} - [0:0]\n{}\n-D PREROUTING -m physdev --physdev-in veth3 -j {CHAIN}\n-D PREROUTING -m physdev --physdev-in veth3 -j {CHAIN}\n-D PREROUTING -i veth9 -j {CHAIN}\n{jump}\nCOMMIT\n",
                rules[0]
            )
        );
        // Only the jump wrong: the chain is left alone (its counters too).
        let saved = parse_save(&saved_with(&[&old], &[]));
        let rules = vec![old.clone()];
        let change = restore_script(&saved, &tag(), &rules, &jump).unwrap();
        assert!(!change.chain_rewritten);
        assert_eq!(change.script, format!("*mangle\n{jump}\nCOMMIT\n"));
    }

    #[test]
    fn removal_deletes_jumps_then_the_chain_and_nothing_when_absent() {
        let rule = format!("-A {CHAIN} -j NFQUEUE --queue-num 1 --queue-bypass");
        let jump = Hook::Pod.jump(&tag());
        let saved = parse_save(&saved_with(&[&rule], &[&jump]));
        assert_eq!(
            removal_script(&saved, &tag()).unwrap(),
            format!("*mangle\n-D PREROUTING ! -i lo -j {CHAIN}\n-F {CHAIN}\n-X {CHAIN}\nCOMMIT\n")
        );
        assert_eq!(removal_script(&Saved::default(), &tag()), None);
    }
}
