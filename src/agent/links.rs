//! A namespace's network interfaces through rtnetlink (no `ip` process): names, indexes, the
//! peer of a veth, the bridge a port belongs to.

use std::io;

use super::netns::Netns;
use super::tc::netlink::{Message, RTM_NEWLINK, RouteSocket, attr_string, attributes};

const IFINFOMSG_LEN: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_SLAVE_KIND: u16 = 4;

/// One interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The other end's index (veth), in the namespace `peer_netnsid` names when set.
    pub peer_index: Option<u32>,
    pub peer_netnsid: Option<i32>,
    /// The index of the bridge (or bond) this is a port of.
    pub master: Option<u32>,
    /// `veth`, `bridge`, ...
    pub kind: Option<String>,
    /// What kind of device its master is (`bridge`), for a port.
    pub slave_kind: Option<String>,
}

/// Every interface of `ns`.
pub fn links(ns: &Netns) -> io::Result<Vec<Link>> {
    ns.run(links_here)?
}

/// Every interface of the calling thread's namespace.
pub fn links_here() -> io::Result<Vec<Link>> {
    let mut socket = RouteSocket::open()?;
    let answers = socket.dump(&Message::dump_links(), RTM_NEWLINK)?;
    Ok(answers.iter().filter_map(|a| parse(a)).collect())
}

/// The interface of `ns` with this index, if there is one.
pub fn link_by_index(ns: &Netns, index: u32) -> io::Result<Option<Link>> {
    ns.run(|| {
        let mut socket = RouteSocket::open()?;
        match socket.get(&Message::get_link(index), RTM_NEWLINK) {
            Ok(answers) => Ok(answers.iter().find_map(|a| parse(a))),
            Err(error) if error.errno() == Some(nix::errno::Errno::ENODEV) => Ok(None),
            Err(error) => Err(io::Error::from(error)),
        }
    })?
}

/// The interfaces of `ns` but `lo`, by name.
pub fn names_but_lo(ns: &Netns) -> io::Result<Vec<String>> {
    Ok(links(ns)?
        .into_iter()
        .filter(|l| l.name != "lo")
        .map(|l| l.name)
        .collect())
}

fn parse(payload: &[u8]) -> Option<Link> {
    if payload.len() < IFINFOMSG_LEN {
        return None;
    }
    let mut link = Link {
        index: u32::from_ne_bytes(payload[4..8].try_into().ok()?),
        ..Link::default()
    };
    let u32_of = |p: &[u8]| {
        p.get(..4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")))
    };
    for (kind, value) in attributes(&payload[IFINFOMSG_LEN..]) {
        match kind {
            IFLA_IFNAME => link.name = attr_string(value),
            IFLA_LINK => link.peer_index = u32_of(value),
            IFLA_MASTER => link.master = u32_of(value),
            IFLA_LINK_NETNSID => link.peer_netnsid = u32_of(value).map(|v| v as i32),
            IFLA_LINKINFO => {
                for (info, value) in attributes(value) {
                    match info {
                        IFLA_INFO_KIND => link.kind = Some(attr_string(value)),
                        IFLA_INFO_SLAVE_KIND => link.slave_kind = Some(attr_string(value)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (!link.name.is_empty()).then_some(link)
}
