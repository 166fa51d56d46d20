//! u32 filters that steer a fault's peers (CIDRs, ports) into the scoped htb class.
//!
//! Each filter is what `tc filter add ... protocol ip prio 1 u32 match ip dst CIDR match ip
//! dport PORT 0xffff flowid fa17:2` sends: `TCA_U32_CLASSID` and a `struct tc_u32_sel` of
//! 32-bit keys (mask and value in network byte order, offset from the network header).
//!
//! Caveats, shared with tc's `match ip dport`: ports are read at a fixed offset (IPv4 without
//! options, IPv6 without extension headers), for TCP and UDP alike (and for any other protocol
//! whose bytes happen to sit there).

use std::io;
use std::net::IpAddr;

use super::netlink::{Message, TCA_OPTIONS, TcHeader, Verb};

const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_SEL: u16 = 5;
/// `TC_U32_TERMINAL`: a match ends classification.
const TC_U32_TERMINAL: u8 = 1;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// Filter priorities: the kernel wants one protocol per priority.
const PRIO_IPV4: u16 = 1;
const PRIO_IPV6: u16 = 2;

/// More filters than this make every packet walk a long list: ask for a narrower scope.
pub(crate) const MAX_FILTERS: usize = 4096;

/// Which end of a packet the peers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerEnd {
    /// Match destination address and port (traffic to the peers).
    Destination,
    /// Match source address and port (traffic from the peers).
    Source,
}

/// A CIDR, with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `fd00::/64`, or a bare address (one host).
    pub(crate) fn parse(text: &str) -> io::Result<Self> {
        let invalid = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{text:?} is not a CIDR such as 10.0.0.0/8 or fd00::/64"),
            )
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| invalid())?,
            None => max,
        };
        if prefix > max {
            return Err(invalid());
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Self { addr, prefix })
    }
}

/// `struct tc_u32_key`: packet bytes at `off` (a multiple of 4), masked, equal `val`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    mask: u32,
    val: u32,
    off: i32,
}

/// One filter: every key must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Selector {
    ipv6: bool,
    keys: Vec<Key>,
}

impl Selector {
    fn address(cidr: &Cidr, end: PeerEnd) -> Self {
        match cidr.addr {
            IpAddr::V4(a) => {
                let off = if end == PeerEnd::Destination { 16 } else { 12 };
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(cidr.prefix))
                    .unwrap_or(0);
                // A /0 keeps one key with a zero mask, as tc writes it.
                Selector {
                    ipv6: false,
                    keys: vec![Key {
                        mask,
                        val: u32::from(a) & mask,
                        off,
                    }],
                }
            }
            IpAddr::V6(a) => {
                let base = if end == PeerEnd::Destination { 24 } else { 8 };
                let words = a.octets();
                let mut keys = Vec::new();
                // One key per 32-bit word the prefix touches; a /0 has none, as tc writes it.
                for (i, word) in words.chunks(4).enumerate() {
                    let bits = (i32::from(cidr.prefix) - 32 * i as i32).clamp(0, 32) as u32;
                    if bits == 0 {
                        break;
                    }
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    let val = u32::from_be_bytes([word[0], word[1], word[2], word[3]]) & mask;
                    keys.push(Key {
                        mask,
                        val,
                        off: base + 4 * i as i32,
                    });
                }
                Selector { ipv6: true, keys }
            }
        }
    }

    fn with_port(mut self, port: u16, end: PeerEnd) -> Self {
        // Ports sit right after a header without options: source then destination, 16 bits
        // each, in the 32-bit word at offset 20 (IPv4) or 40 (IPv6).
        let off = if self.ipv6 { 40 } else { 20 };
        let (mask, val) = match end {
            PeerEnd::Destination => (0x0000_ffff, u32::from(port)),
            PeerEnd::Source => (0xffff_0000, u32::from(port) << 16),
        };
        self.keys.push(Key { mask, val, off });
        self
    }

    fn port_only(ipv6: bool, port: u16, end: PeerEnd) -> Self {
        Selector {
            ipv6,
            keys: Vec::new(),
        }
        .with_port(port, end)
    }

    fn sel_bytes(&self) -> Vec<u8> {
        let nkeys = u8::try_from(self.keys.len()).expect("at most 5 keys");
        let mut sel = vec![TC_U32_TERMINAL, 0, nkeys, 0];
        sel.extend_from_slice(&[0; 12]); // offmask, off, offoff, hoff, hmask: no hashing
        for key in &self.keys {
            sel.extend_from_slice(&key.mask.to_be_bytes());
            sel.extend_from_slice(&key.val.to_be_bytes());
            sel.extend_from_slice(&key.off.to_ne_bytes());
            sel.extend_from_slice(&0i32.to_ne_bytes()); // offmask
        }
        sel
    }

    /// The `RTM_NEWTFILTER` request adding this filter under `parent`, sending matches to
    /// `classid`.
    pub(crate) fn message(&self, ifindex: u32, parent: u32, classid: u32, what: String) -> Message {
        let (prio, protocol) = if self.ipv6 {
            (PRIO_IPV6, ETH_P_IPV6)
        } else {
            (PRIO_IPV4, ETH_P_IP)
        };
        // tcm_info: priority above, protocol (network byte order, as stored in memory) below.
        let info = (u32::from(prio) << 16) | u32::from(u16::from_ne_bytes(protocol.to_be_bytes()));
        let tcm = TcHeader {
            ifindex,
            handle: 0,
            parent,
            info,
        };
        let mut msg = Message::new_filter(Verb::Add, tcm, "u32", what);
        let nest = msg.begin_nest(TCA_OPTIONS);
        msg.attr_u32(TCA_U32_CLASSID, classid);
        msg.attr(TCA_U32_SEL, &self.sel_bytes());
        msg.end_nest(nest);
        msg
    }
}

/// The filters for a scope: one per (CIDR, port) pair, one per CIDR without ports, or one per
/// port and IP family without CIDRs. Empty scope: no filters (the caller shapes everything).
pub(crate) fn selectors(cidrs: &[Cidr], ports: &[u16], end: PeerEnd) -> io::Result<Vec<Selector>> {
    let count = cidrs.len().max(1) * ports.len().max(1) * if cidrs.is_empty() { 2 } else { 1 };
    if count > MAX_FILTERS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the fault's scope needs {count} filters ({} CIDRs x {} ports), more than {MAX_FILTERS}; \
                 narrow it down",
                cidrs.len(),
                ports.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(count);
    if cidrs.is_empty() {
        for &port in ports {
            out.push(Selector::port_only(false, port, end));
            out.push(Selector::port_only(true, port, end));
        }
        return Ok(out);
    }
    for cidr in cidrs {
        let address = Selector::address(cidr, end);
        if ports.is_empty() {
            out.push(address);
        } else {
            for &port in ports {
                out.push(address.clone().with_port(port, end));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{assert_same_request, load};
    use super::*;

    const PARENT: u32 = 0xfa17_0000;
    const CLASS: u32 = 0xfa17_0002;

    fn check(fixture: &str, selector: Selector) {
        let fixture = load(fixture);
        assert_same_request(&fixture, &selector.message(1, PARENT, CLASS, "t".into()));
    }

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap()
    }

    fn one(cidrs: &[&str], ports: &[u16], end: PeerEnd) -> Selector {
        let cidrs: Vec<Cidr> = cidrs.iter().map(|c| cidr(c)).collect();
        let mut all = selectors(&cidrs, ports, end).unwrap();
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    #[test]
    fn ipv4_filters_are_encoded_as_tc_encodes_them() {
        // ... u32 match ip dst 10.77.0.3/32 flowid fa17:2
        check(
            "u32_ip_dst",
            one(&["10.77.0.3/32"], &[], PeerEnd::Destination),
        );
        // ... u32 match ip dst 10.0.0.0/8 match ip dport 8080 0xffff flowid fa17:2
        check(
            "u32_ip_dst_dport",
            one(&["10.0.0.0/8"], &[8080], PeerEnd::Destination),
        );
        // ... u32 match ip src 192.168.1.0/24 match ip sport 53 0xffff flowid fa17:2
        check(
            "u32_ip_src_sport",
            one(&["192.168.1.0/24"], &[53], PeerEnd::Source),
        );
        // ... u32 match ip dst 0.0.0.0/0 flowid fa17:2
        check("u32_ip_all", one(&["0.0.0.0/0"], &[], PeerEnd::Destination));
    }

    #[test]
    fn ipv6_filters_are_encoded_as_tc_encodes_them() {
        // ... protocol ipv6 prio 2 u32 match ip6 dst fd00:10::/64 match ip6 dport 8080 0xffff
        check(
            "u32_ip6_dst_dport",
            one(&["fd00:10::/64"], &[8080], PeerEnd::Destination),
        );
        // ... protocol ipv6 prio 2 u32 match ip6 src 2001:db8::7/128 flowid fa17:2
        check("u32_ip6_src", one(&["2001:db8::7"], &[], PeerEnd::Source));
        // ... protocol ipv6 prio 2 u32 match ip6 dst ::/0 flowid fa17:2
        check("u32_ip6_all", one(&["::/0"], &[], PeerEnd::Destination));
    }

    #[test]
    fn ports_without_cidrs_get_one_filter_per_family_as_tc_encodes_them() {
        let all = selectors(&[], &[443], PeerEnd::Destination).unwrap();
        assert_eq!(all.len(), 2);
        // ... protocol ip prio 1 u32 match ip dport 443 0xffff flowid fa17:2
        check("u32_ip_dport", all[0].clone());
        // ... protocol ipv6 prio 2 u32 match ip6 sport 53 0xffff flowid fa17:2
        check(
            "u32_ip6_sport",
            selectors(&[], &[53], PeerEnd::Source).unwrap()[1].clone(),
        );
    }

    #[test]
    fn cidrs_and_ports_multiply() {
        let cidrs = [cidr("10.0.0.0/8"), cidr("fd00::/8")];
        let all = selectors(&cidrs, &[80, 443, 8080], PeerEnd::Destination).unwrap();
        assert_eq!(all.len(), 6);
        let cidrs = vec![cidr("10.0.0.1"); 1000];
        let ports: Vec<u16> = (1..=5).collect();
        let err = selectors(&cidrs, &ports, PeerEnd::Destination).unwrap_err();
        assert!(err.to_string().contains("narrow"), "{err}");
    }

    #[test]
    fn cidrs_lose_their_host_bits_and_bad_ones_are_refused() {
        assert_eq!(cidr("10.1.2.3/8"), cidr("10.0.0.0/8"));
        assert_eq!(cidr("10.1.2.3").prefix, 32);
        assert_eq!(cidr("fd00::1/16"), cidr("fd00::/16"));
        for bad in ["10.0.0.0/33", "fd00::/129", "ten/8", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
