//! Which traffic a fault acts on: its peers (CIDRs, both families) and ports, parsed once and
//! written into nftables sets and matches the same way by every mechanism (partitions,
//! NFQUEUE steering, qdisc steering).

use std::net::IpAddr;

use super::nftables::{AddrFamily, Elements, End, Match, Net, Table};

/// The peers and ports of a fault; empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub v4: Vec<Net<std::net::Ipv4Addr>>,
    pub v6: Vec<Net<std::net::Ipv6Addr>>,
    pub ports: Vec<u16>,
}

impl Scope {
    /// Parses `10.0.0.0/8`, `10.1.2.3` (a host), `fd00::/64`, and ports 1-65535.
    pub fn parse(cidrs: &[String], ports: &[i32]) -> Result<Self, String> {
        let mut scope = Scope::default();
        for text in cidrs {
            let (addr, prefix) = match text.split_once('/') {
                Some((addr, prefix)) => (addr, Some(prefix)),
                None => (text.as_str(), None),
            };
            let addr: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("{text} is not an address or CIDR"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                Some(p) => p
                    .trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{text} has an invalid prefix length"))?,
                None => max,
            };
            match addr {
                IpAddr::V4(addr) => scope.v4.push(Net { addr, prefix }),
                IpAddr::V6(addr) => scope.v6.push(Net { addr, prefix }),
            }
        }
        for &port in ports {
            scope.ports.push(
                u16::try_from(port)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("port {port} is not between 1 and 65535"))?,
            );
        }
        scope.ports.sort_unstable();
        scope.ports.dedup();
        Ok(scope)
    }

    pub fn has_peers(&self) -> bool {
        !self.v4.is_empty() || !self.v6.is_empty()
    }

    /// The address families the fault touches: those of its peers, or both without peers.
    pub fn families(&self) -> Vec<AddrFamily> {
        if !self.has_peers() {
            return vec![AddrFamily::V4, AddrFamily::V6];
        }
        let mut out = Vec::new();
        if !self.v4.is_empty() {
            out.push(AddrFamily::V4);
        }
        if !self.v6.is_empty() {
            out.push(AddrFamily::V6);
        }
        out
    }

    /// Declares the scope's sets in `table` (peers4, peers6, ports, l4: those needed for
    /// `families`) and returns a way to write its matches.
    pub fn declare(&self, table: &mut Table, families: &[AddrFamily]) -> ScopeSets {
        let peers4 = (!self.v4.is_empty() && families.contains(&AddrFamily::V4))
            .then(|| table.set("peers4", Elements::Ipv4(self.v4.clone())));
        let peers6 = (!self.v6.is_empty() && families.contains(&AddrFamily::V6))
            .then(|| table.set("peers6", Elements::Ipv6(self.v6.clone())));
        let ports = (!self.ports.is_empty()).then(|| {
            let ports = table.set("ports", Elements::Ports(self.ports.clone()));
            // TCP and UDP: the ports of other protocols mean nothing.
            let l4 = table.set("l4", Elements::Protocols(vec![6, 17]));
            (ports, l4)
        });
        ScopeSets {
            peers4,
            peers6,
            ports,
            any_peers: self.has_peers(),
        }
    }
}

/// A scope's sets in one table.
#[derive(Clone, Debug)]
pub struct ScopeSets {
    peers4: Option<super::nftables::SetRef>,
    peers6: Option<super::nftables::SetRef>,
    ports: Option<(super::nftables::SetRef, super::nftables::SetRef)>,
    /// Whether the scope names peers at all (then a family without peers matches nothing).
    any_peers: bool,
}

impl ScopeSets {
    /// The match lists (one per rule) for traffic whose peer is at `peer_end` of the packet and
    /// whose peer port (when the scope has ports) is at `port_end`, in `families` (of those the
    /// scope has; all of them when it names no peers).
    pub fn matches(
        &self,
        peer_end: End,
        port_end: End,
        families: &[AddrFamily],
    ) -> Vec<Vec<Match>> {
        let port = self.ports.as_ref().map(|(ports, l4)| Match::Ports {
            end: port_end,
            l4: l4.clone(),
            ports: ports.clone(),
        });
        let mut out = Vec::new();
        if !self.any_peers {
            // No peers: everything, or everything on the ports.
            out.push(port.into_iter().collect());
            return out;
        }
        for (family, set) in [
            (AddrFamily::V4, &self.peers4),
            (AddrFamily::V6, &self.peers6),
        ] {
            let Some(set) = set else { continue };
            if !families.contains(&family) {
                continue;
            }
            let mut rule = vec![Match::Address {
                family,
                end: peer_end,
                set: set.clone(),
            }];
            rule.extend(port.clone());
            out.push(rule);
        }
        out
    }

    pub fn has_ports(&self) -> bool {
        self.ports.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_split_by_family_and_bad_input_is_refused() {
        let scope = Scope::parse(
            &["10.1.2.3".into(), "10.0.0.0/8".into(), "fd00::/64".into()],
            &[443, 80, 80],
        )
        .unwrap();
        assert_eq!(scope.v4.len(), 2);
        assert_eq!(scope.v4[0].prefix, 32);
        assert_eq!(scope.v6.len(), 1);
        assert_eq!(scope.ports, vec![80, 443]);
        assert_eq!(scope.families(), vec![AddrFamily::V4, AddrFamily::V6]);
        for bad in ["10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/x"] {
            assert!(Scope::parse(&[bad.into()], &[]).is_err(), "{bad}");
        }
        assert!(Scope::parse(&[], &[0]).is_err());
        assert!(Scope::parse(&[], &[70000]).is_err());
        assert_eq!(Scope::parse(&[], &[]).unwrap().families().len(), 2);
    }
}
