//! A table as faultline writes it (sets, chains, rules) and the batch that puts it in the
//! kernel in one transaction, in the order and form `nft -f` sends for the same ruleset.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::expr::{Expr, Family, Match, SetRef, Verdict};
use super::wire::{
    Msg, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM,
    NFT_MSG_NEWTABLE, NFT_SET_ELEM_INTERVAL_END, NFT_SET_INTERVAL, NFT_SET_TIMEOUT,
    NFTA_CHAIN_HOOK, NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY, NFTA_CHAIN_TABLE, NFTA_CHAIN_TYPE,
    NFTA_DATA_VALUE, NFTA_HOOK_DEV, NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY, NFTA_RULE_CHAIN,
    NFTA_RULE_EXPRESSIONS, NFTA_RULE_TABLE, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_SET_ID,
    NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_USERDATA, NFTA_SET_FLAGS,
    NFTA_SET_ID, NFTA_SET_KEY_LEN, NFTA_SET_KEY_TYPE, NFTA_SET_NAME, NFTA_SET_TABLE,
    NFTA_SET_USERDATA, NFTA_TABLE_FLAGS, NFTA_TABLE_NAME, NFTA_TABLE_USERDATA, NLM_F_APPEND,
    NLM_F_CREATE, udata,
};

/// `IFNAMSIZ`: interface names are keys of 16 bytes, NUL-padded.
pub const IFNAMSIZ: usize = 16;

/// Hook numbers (`NF_INET_*`, `NF_NETDEV_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting,
    Output,
    Postrouting,
    /// netdev family, bound to one device.
    Ingress,
    /// netdev family, bound to one device (kernels 5.16 and later).
    Egress,
}

impl HookPoint {
    fn number(self) -> u32 {
        match self {
            HookPoint::Prerouting | HookPoint::Ingress => 0,
            HookPoint::Egress => 1,
            HookPoint::Output => 3,
            HookPoint::Postrouting => 4,
        }
    }
}

/// A base chain's hook: `type filter hook H [device D] priority P; policy accept;`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub point: HookPoint,
    pub priority: i32,
    pub device: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Vec<Expr>>,
}

/// A network: first address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Net<A> {
    pub addr: A,
    pub prefix: u8,
}

/// The elements (and so the type) of a set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Elements {
    /// `type ifname; flags timeout`: each interface for as long as its timeout.
    Interfaces(Vec<(String, Duration)>),
    /// `type ipv4_addr; flags interval`.
    Ipv4(Vec<Net<Ipv4Addr>>),
    /// `type ipv6_addr; flags interval`.
    Ipv6(Vec<Net<Ipv6Addr>>),
    /// `type inet_service`.
    Ports(Vec<u16>),
    /// `type inet_proto`.
    Protocols(Vec<u8>),
}

// Data types (`enum datatypes` of nftables) and their byte order as nft records it in the
// set's userdata (NFTNL_UDATA_SET_KEYBYTEORDER: 0 invalid, 1 host, 2 big endian).
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_IFNAME: u32 = 41;
const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
const NFTNL_UDATA_SET_ELEM_FLAGS: u8 = 1;
const NFTNL_SET_ELEM_F_INTERVAL_OPEN: u32 = 1;
const NFTNL_UDATA_TABLE_COMMENT: u8 = 0;

impl Elements {
    /// (set flags, key type, key length, key byte order)
    fn shape(&self) -> (u32, u32, u32, u32) {
        match self {
            Elements::Interfaces(_) => (NFT_SET_TIMEOUT, TYPE_IFNAME, IFNAMSIZ as u32, 1),
            Elements::Ipv4(_) => (NFT_SET_INTERVAL, TYPE_IPADDR, 4, 2),
            Elements::Ipv6(_) => (NFT_SET_INTERVAL, TYPE_IP6ADDR, 16, 2),
            Elements::Ports(_) => (0, TYPE_INET_SERVICE, 2, 2),
            Elements::Protocols(_) => (0, TYPE_INET_PROTOCOL, 1, 0),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Elements::Interfaces(v) => v.is_empty(),
            Elements::Ipv4(v) => v.is_empty(),
            Elements::Ipv6(v) => v.is_empty(),
            Elements::Ports(v) => v.is_empty(),
            Elements::Protocols(v) => v.is_empty(),
        }
    }

    /// The elements as nft sends them, each a list of (attribute writer) steps.
    fn encoded(&self) -> Vec<Element> {
        match self {
            Elements::Interfaces(items) => items
                .iter()
                .map(|(name, timeout)| Element {
                    key: ifname_key(name),
                    flags: None,
                    timeout: Some(*timeout),
                    open: false,
                })
                .collect(),
            Elements::Ipv4(nets) => intervals(
                nets.iter()
                    .map(|n| {
                        let start = u32::from(n.addr) & mask32(n.prefix);
                        (u128::from(start), u128::from(start | !mask32(n.prefix)))
                    })
                    .collect(),
                u128::from(u32::MAX),
                4,
            ),
            Elements::Ipv6(nets) => intervals(
                nets.iter()
                    .map(|n| {
                        let start = u128::from(n.addr) & mask128(n.prefix);
                        (start, start | !mask128(n.prefix))
                    })
                    .collect(),
                u128::MAX,
                16,
            ),
            Elements::Ports(ports) => {
                let mut ports = ports.clone();
                ports.sort_unstable();
                ports.dedup();
                ports
                    .into_iter()
                    .map(|p| Element::key(p.to_be_bytes().to_vec()))
                    .collect()
            }
            Elements::Protocols(protos) => {
                let mut protos = protos.clone();
                protos.sort_unstable();
                protos.dedup();
                protos.into_iter().map(|p| Element::key(vec![p])).collect()
            }
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

/// An interface name as a 16-byte key.
pub fn ifname_key(name: &str) -> Vec<u8> {
    let mut key = vec![0u8; IFNAMSIZ];
    let bytes = &name.as_bytes()[..name.len().min(IFNAMSIZ - 1)];
    key[..bytes.len()].copy_from_slice(bytes);
    key
}

struct Element {
    key: Vec<u8>,
    flags: Option<u32>,
    timeout: Option<Duration>,
    /// The last interval runs to the end of the address space (nft marks it in userdata).
    open: bool,
}

impl Element {
    fn key(key: Vec<u8>) -> Self {
        Self {
            key,
            flags: None,
            timeout: None,
            open: false,
        }
    }
}

/// Interval-set elements for inclusive ranges, as nft encodes them for the rbtree backend:
/// overlapping and adjacent ranges merged, then in ascending order an interval end at 0 (when
/// the first range does not start there), each range's start, and its end + 1 flagged as an
/// interval end (none for a range that reaches `max`, whose start is marked open instead).
fn intervals(mut ranges: Vec<(u128, u128)>, max: u128, width: usize) -> Vec<Element> {
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    let bytes = |value: u128| value.to_be_bytes()[16 - width..].to_vec();
    let mut out = Vec::with_capacity(merged.len() * 2 + 1);
    if merged.first().is_some_and(|(start, _)| *start != 0) {
        out.push(Element {
            key: bytes(0),
            flags: Some(NFT_SET_ELEM_INTERVAL_END),
            timeout: None,
            open: false,
        });
    }
    for (start, end) in merged {
        let open = end == max;
        out.push(Element {
            key: bytes(start),
            flags: None,
            timeout: None,
            open,
        });
        if !open {
            out.push(Element {
                key: bytes(end + 1),
                flags: Some(NFT_SET_ELEM_INTERVAL_END),
                timeout: None,
                open: false,
            });
        }
    }
    out
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub id: u32,
    pub elements: Elements,
}

/// A whole table. Build it with [`Table::new`], [`Table::set`] and [`Table::chain`]; put it in
/// the kernel with [`Table::replace`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// Largest `NFTA_SET_ELEM_LIST_ELEMENTS` nest we write in one message (attributes carry a
/// 16-bit length).
const ELEMENTS_PER_MESSAGE_BYTES: usize = 48 * 1024;

impl Table {
    pub fn new(family: Family, name: impl Into<String>, comment: Option<String>) -> Self {
        Self {
            family,
            name: name.into(),
            comment,
            sets: Vec::new(),
            chains: Vec::new(),
        }
    }

    /// Declares a set; ids are given in declaration order from 1, as nft does.
    pub fn set(&mut self, name: &str, elements: Elements) -> SetRef {
        let id = u32::try_from(self.sets.len() + 1).expect("few sets");
        self.sets.push(Set {
            name: name.to_string(),
            id,
            elements,
        });
        SetRef {
            name: name.to_string(),
            id,
        }
    }

    /// Declares a chain (a base chain with `hook`) and returns its index for [`Table::rule`].
    pub fn chain(&mut self, name: &str, hook: Option<Hook>) -> usize {
        self.chains.push(Chain {
            name: name.to_string(),
            hook,
            rules: Vec::new(),
        });
        self.chains.len() - 1
    }

    /// Appends a rule: the matches, then `extra` expressions (counter, a statement), then the
    /// verdict if any.
    pub fn rule(
        &mut self,
        chain: usize,
        matches: &[Match],
        extra: &[Expr],
        verdict: Option<Verdict>,
    ) {
        let mut exprs = Vec::new();
        for m in matches {
            m.expand(self.family, &mut exprs);
        }
        exprs.extend_from_slice(extra);
        if let Some(verdict) = verdict {
            exprs.push(Expr::Verdict(verdict));
        }
        self.chains[chain].rules.push(exprs);
    }

    /// The batch that makes the kernel hold exactly this table, whether or not a table of this
    /// name existed: declare it (a no-op if it exists), delete it, create it anew with its
    /// contents. One transaction: the old table and the new one are never both missing.
    pub fn replace(&self) -> Vec<Msg> {
        let mut out = delete(self.family, &self.name);
        let mut table = Msg::new(NFT_MSG_NEWTABLE, self.family.nfproto(), 0);
        table
            .str(NFTA_TABLE_NAME, &self.name)
            .be32(NFTA_TABLE_FLAGS, 0);
        if let Some(comment) = &self.comment {
            let mut text = comment.as_bytes()[..comment.len().min(250)].to_vec();
            text.push(0);
            table.attr(
                NFTA_TABLE_USERDATA,
                &udata(&[(NFTNL_UDATA_TABLE_COMMENT, &text)]),
            );
        }
        out.push(table);
        self.contents(&mut out);
        out
    }

    /// Creates the table with its contents (failing if it exists).
    pub fn create(&self) -> Vec<Msg> {
        let mut table = Msg::new(NFT_MSG_NEWTABLE, self.family.nfproto(), 0);
        table
            .str(NFTA_TABLE_NAME, &self.name)
            .be32(NFTA_TABLE_FLAGS, 0);
        let mut out = vec![table];
        self.contents(&mut out);
        out
    }

    fn contents(&self, out: &mut Vec<Msg>) {
        let family = self.family.nfproto();
        for chain in &self.chains {
            let mut msg = Msg::new(NFT_MSG_NEWCHAIN, family, NLM_F_CREATE);
            msg.str(NFTA_CHAIN_TABLE, &self.name)
                .str(NFTA_CHAIN_NAME, &chain.name);
            if let Some(hook) = &chain.hook {
                msg.str(NFTA_CHAIN_TYPE, "filter")
                    .be32(NFTA_CHAIN_POLICY, 1); // NF_ACCEPT
                let nest = msg.begin(NFTA_CHAIN_HOOK);
                msg.be32(NFTA_HOOK_HOOKNUM, hook.point.number())
                    .be32(NFTA_HOOK_PRIORITY, hook.priority as u32);
                if let Some(device) = &hook.device {
                    msg.str(NFTA_HOOK_DEV, device);
                }
                msg.end(nest);
            }
            out.push(msg);
        }
        for set in &self.sets {
            let (flags, key_type, key_len, byteorder) = set.elements.shape();
            let mut msg = Msg::new(NFT_MSG_NEWSET, family, NLM_F_CREATE);
            msg.str(NFTA_SET_TABLE, &self.name)
                .str(NFTA_SET_NAME, &set.name)
                .be32(NFTA_SET_FLAGS, flags)
                .be32(NFTA_SET_KEY_TYPE, key_type)
                .be32(NFTA_SET_KEY_LEN, key_len)
                .be32(NFTA_SET_ID, set.id)
                .attr(
                    NFTA_SET_USERDATA,
                    &udata(&[(NFTNL_UDATA_SET_KEYBYTEORDER, &byteorder.to_ne_bytes())]),
                );
            out.push(msg);
            if !set.elements.is_empty() {
                out.extend(self.element_messages(set));
            }
        }
        for chain in &self.chains {
            for rule in &chain.rules {
                let mut msg = Msg::new(NFT_MSG_NEWRULE, family, NLM_F_CREATE | NLM_F_APPEND);
                msg.str(NFTA_RULE_TABLE, &self.name)
                    .str(NFTA_RULE_CHAIN, &chain.name);
                let list = msg.begin(NFTA_RULE_EXPRESSIONS);
                for expr in rule {
                    expr.encode(&mut msg);
                }
                msg.end(list);
                out.push(msg);
            }
        }
    }

    fn element_messages(&self, set: &Set) -> Vec<Msg> {
        let family = self.family.nfproto();
        let start = || {
            let mut msg = Msg::new(NFT_MSG_NEWSETELEM, family, NLM_F_CREATE);
            msg.str(NFTA_SET_ELEM_LIST_TABLE, &self.name)
                .str(NFTA_SET_ELEM_LIST_SET, &set.name)
                .be32(NFTA_SET_ELEM_LIST_SET_ID, set.id);
            msg
        };
        let mut out = Vec::new();
        let mut msg = start();
        let mut list = msg.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        let mut list_start = msg.len();
        let mut index: u16 = 0;
        for element in set.elements.encoded() {
            if msg.len() - list_start > ELEMENTS_PER_MESSAGE_BYTES {
                msg.end(list);
                out.push(msg);
                msg = start();
                list = msg.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
                list_start = msg.len();
                index = 0;
            }
            // libnftnl numbers the elements of a message 1, 2, 3, ... as attribute types.
            index += 1;
            let nest = msg.begin(index);
            if let Some(timeout) = element.timeout {
                let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                msg.be64(NFTA_SET_ELEM_TIMEOUT, millis);
            }
            if let Some(flags) = element.flags {
                msg.be32(NFTA_SET_ELEM_FLAGS, flags);
            }
            let key = msg.begin(NFTA_SET_ELEM_KEY);
            msg.attr(NFTA_DATA_VALUE, &element.key);
            msg.end(key);
            if element.open {
                msg.attr(
                    NFTA_SET_ELEM_USERDATA,
                    &udata(&[(
                        NFTNL_UDATA_SET_ELEM_FLAGS,
                        &NFTNL_SET_ELEM_F_INTERVAL_OPEN.to_ne_bytes(),
                    )]),
                );
            }
            msg.end(nest);
        }
        msg.end(list);
        out.push(msg);
        out
    }
}

/// The messages that delete a table whether or not it exists (declare, then delete).
pub fn delete(family: Family, name: &str) -> Vec<Msg> {
    let mut declare = Msg::new(NFT_MSG_NEWTABLE, family.nfproto(), 0);
    declare.str(NFTA_TABLE_NAME, name).be32(NFTA_TABLE_FLAGS, 0);
    let mut del = Msg::new(NFT_MSG_DELTABLE, family.nfproto(), 0);
    del.str(NFTA_TABLE_NAME, name);
    vec![declare, del]
}

/// The message that deletes a table that exists (fails with ENOENT otherwise).
pub fn delete_existing(family: Family, name: &str) -> Msg {
    let mut del = Msg::new(NFT_MSG_DELTABLE, family.nfproto(), 0);
    del.str(NFTA_TABLE_NAME, name);
    del
}

/// The comment (`NFTNL_UDATA_TABLE_COMMENT`) in a table's userdata, if any.
pub fn comment_of(userdata: &[u8]) -> Option<String> {
    let mut rest = userdata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if kind == NFTNL_UDATA_TABLE_COMMENT {
            return Some(super::wire::as_str(value));
        }
        rest = &rest[2 + len..];
    }
    None
}
