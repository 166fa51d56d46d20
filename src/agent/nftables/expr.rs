//! Rule expressions, encoded as libnftnl encodes them (`nftnl_expr_*_build`), and the
//! matches faultline writes, expanded into expressions as `nft` expands them (the protocol
//! dependency a family needs, payload offsets).

use super::wire::{
    Msg, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM,
    NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE,
};

/// A table's family (`NFPROTO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Inet,
    Ip,
    Netdev,
    Ip6,
}

impl Family {
    /// Every family a table of ours is in (and that a listing of the tables shows).
    pub const ALL: [Family; 4] = [Family::Inet, Family::Ip, Family::Netdev, Family::Ip6];

    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Netdev => 5,
            Family::Ip6 => 10,
        }
    }

    pub fn from_nfproto(value: u8) -> Option<Self> {
        match value {
            1 => Some(Family::Inet),
            2 => Some(Family::Ip),
            5 => Some(Family::Netdev),
            10 => Some(Family::Ip6),
            _ => None,
        }
    }

    /// As `nft` names it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Netdev => "netdev",
            Family::Ip6 => "ip6",
        }
    }
}

/// IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrFamily {
    V4,
    V6,
}

/// Which end of a packet a match looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// A set of the same table, by name and by its id in the batch that creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetRef {
    pub name: String,
    pub id: u32,
}

/// What a rule does when it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    Jump(String),
}

// enum nft_meta_keys
const NFT_META_PROTOCOL: u32 = 1;
const NFT_META_PRIORITY: u32 = 2;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
// enum nft_payload_bases
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
/// `NFT_REG_1`: nft writes every expression through the first 16-byte register.
const REG_1: u32 = 1;
const REG_VERDICT: u32 = 0;
const NFT_CMP_EQ: u32 = 0;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_JUMP: i32 = -3;

/// One expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    MetaLoad {
        key: u32,
    },
    MetaSet {
        key: u32,
    },
    Cmp {
        data: Vec<u8>,
    },
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    Lookup(SetRef),
    Verdict(Verdict),
    /// A value into register 1.
    Immediate(Vec<u8>),
    Counter,
    /// An xtables match through nft_compat (what iptables-nft writes).
    XtMatch {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// An xtables target through nft_compat.
    XtTarget {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
}

impl Expr {
    /// Appends this expression as one `NFTA_LIST_ELEM` of a rule's expression list.
    pub(crate) fn encode(&self, msg: &mut Msg) {
        let elem = msg.begin(NFTA_LIST_ELEM);
        msg.str(NFTA_EXPR_NAME, self.name());
        let data = msg.begin(NFTA_EXPR_DATA);
        match self {
            Expr::MetaLoad { key } => {
                msg.be32(2, *key).be32(1, REG_1); // KEY, DREG
            }
            Expr::MetaSet { key } => {
                msg.be32(2, *key).be32(3, REG_1); // KEY, SREG
            }
            Expr::Cmp { data } => {
                msg.be32(1, REG_1).be32(2, NFT_CMP_EQ); // SREG, OP
                let value = msg.begin(3); // NFTA_CMP_DATA
                msg.attr(NFTA_DATA_VALUE, data);
                msg.end(value);
            }
            Expr::Payload { base, offset, len } => {
                msg.be32(1, REG_1)
                    .be32(2, *base)
                    .be32(3, *offset)
                    .be32(4, *len);
            }
            Expr::Lookup(set) => {
                msg.be32(2, REG_1).str(1, &set.name).be32(4, set.id); // SREG, SET, SET_ID
            }
            Expr::Verdict(verdict) => {
                msg.be32(1, REG_VERDICT); // DREG
                let data = msg.begin(2); // NFTA_IMMEDIATE_DATA
                let v = msg.begin(NFTA_DATA_VERDICT);
                match verdict {
                    Verdict::Drop => {
                        msg.be32(NFTA_VERDICT_CODE, NF_DROP);
                    }
                    Verdict::Accept => {
                        msg.be32(NFTA_VERDICT_CODE, NF_ACCEPT);
                    }
                    Verdict::Jump(chain) => {
                        msg.be32(NFTA_VERDICT_CODE, NFT_JUMP as u32)
                            .str(NFTA_VERDICT_CHAIN, chain);
                    }
                }
                msg.end(v);
                msg.end(data);
            }
            Expr::Immediate(value) => {
                msg.be32(1, REG_1);
                let data = msg.begin(2);
                msg.attr(NFTA_DATA_VALUE, value);
                msg.end(data);
            }
            Expr::Counter => {}
            Expr::XtMatch { name, rev, info } | Expr::XtTarget { name, rev, info } => {
                msg.str(1, name).be32(2, *rev).attr(3, info);
            }
        }
        msg.end(data);
        msg.end(elem);
    }

    fn name(&self) -> &'static str {
        match self {
            Expr::MetaLoad { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Lookup(_) => "lookup",
            Expr::Verdict(_) | Expr::Immediate(_) => "immediate",
            Expr::Counter => "counter",
            Expr::XtMatch { .. } => "match",
            Expr::XtTarget { .. } => "target",
        }
    }
}

/// The matches faultline writes. Each expands to expressions for the table's family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// `iifname @set` / `oifname @set` (the deadline gate).
    Interface { outgoing: bool, set: SetRef },
    /// `ip daddr @set`, `ip6 saddr @set`, ...
    Address {
        family: AddrFamily,
        end: End,
        set: SetRef,
    },
    /// `meta l4proto @l4 th dport @ports`.
    Ports { end: End, l4: SetRef, ports: SetRef },
    /// xt `physdev --physdev-in NAME` (a bridge port; ip and ip6 tables only).
    PhysdevIn(String),
}

impl Match {
    pub fn expand(&self, table: Family, out: &mut Vec<Expr>) {
        match self {
            Match::Interface { outgoing, set } => {
                let key = if *outgoing {
                    NFT_META_OIFNAME
                } else {
                    NFT_META_IIFNAME
                };
                out.push(Expr::MetaLoad { key });
                out.push(Expr::Lookup(set.clone()));
            }
            Match::Address { family, end, set } => {
                match (table, family) {
                    (Family::Netdev, AddrFamily::V4) => {
                        out.push(Expr::MetaLoad {
                            key: NFT_META_PROTOCOL,
                        });
                        out.push(Expr::Cmp {
                            data: 0x0800u16.to_be_bytes().to_vec(),
                        });
                    }
                    (Family::Netdev, AddrFamily::V6) => {
                        out.push(Expr::MetaLoad {
                            key: NFT_META_PROTOCOL,
                        });
                        out.push(Expr::Cmp {
                            data: 0x86ddu16.to_be_bytes().to_vec(),
                        });
                    }
                    (Family::Inet, _) => {
                        out.push(Expr::MetaLoad {
                            key: NFT_META_NFPROTO,
                        });
                        let nfproto = match family {
                            AddrFamily::V4 => Family::Ip.nfproto(),
                            AddrFamily::V6 => Family::Ip6.nfproto(),
                        };
                        out.push(Expr::Cmp {
                            data: vec![nfproto],
                        });
                    }
                    _ => {}
                }
                let (offset, len) = match (family, end) {
                    (AddrFamily::V4, End::Source) => (12, 4),
                    (AddrFamily::V4, End::Destination) => (16, 4),
                    (AddrFamily::V6, End::Source) => (8, 16),
                    (AddrFamily::V6, End::Destination) => (24, 16),
                };
                out.push(Expr::Payload {
                    base: NFT_PAYLOAD_NETWORK_HEADER,
                    offset,
                    len,
                });
                out.push(Expr::Lookup(set.clone()));
            }
            Match::Ports { end, l4, ports } => {
                out.push(Expr::MetaLoad {
                    key: NFT_META_L4PROTO,
                });
                out.push(Expr::Lookup(l4.clone()));
                out.push(Expr::Payload {
                    base: NFT_PAYLOAD_TRANSPORT_HEADER,
                    offset: match end {
                        End::Source => 0,
                        End::Destination => 2,
                    },
                    len: 2,
                });
                out.push(Expr::Lookup(ports.clone()));
            }
            Match::PhysdevIn(port) => out.push(physdev_in(port)),
        }
    }
}

/// `meta priority set <classid>`: htb puts the packet in that class.
pub fn set_priority(classid: u32) -> [Expr; 2] {
    [
        Expr::Immediate(classid.to_ne_bytes().to_vec()),
        Expr::MetaSet {
            key: NFT_META_PRIORITY,
        },
    ]
}

/// `XT_PHYSDEV_OP_IN`.
const XT_PHYSDEV_OP_IN: u8 = 0x01;

/// xt `physdev` revision 0 with `--physdev-in port` (struct xt_physdev_info, aligned to 8):
/// `physindev[16]`, `in_mask[16]` (0xff over the name and its NUL), `physoutdev[16]`,
/// `out_mask[16]`, `invert`, `bitmask`.
fn physdev_in(port: &str) -> Expr {
    let mut info = vec![0u8; 72];
    let name = &port.as_bytes()[..port.len().min(15)];
    info[..name.len()].copy_from_slice(name);
    for byte in &mut info[16..16 + name.len() + 1] {
        *byte = 0xff;
    }
    info[65] = XT_PHYSDEV_OP_IN;
    Expr::XtMatch {
        name: "physdev".into(),
        rev: 0,
        info,
    }
}

/// `NFQ_FLAG_BYPASS`, `NFQ_FLAG_CPU_FANOUT`.
const NFQ_FLAG_BYPASS: u16 = 0x01;
const NFQ_FLAG_CPU_FANOUT: u16 = 0x02;

/// xt `NFQUEUE` revision 3 (struct xt_NFQ_info_v3 { queuenum, queues_total, flags }, host
/// byte order, aligned to 8), always with `--queue-bypass`: packets go through unqueued when
/// nothing listens. With several queues the kernel spreads flows over them by hash (or by CPU
/// with `cpu_fanout`).
pub fn nfqueue(first: u16, total: u16, cpu_fanout: bool) -> Expr {
    let mut flags = NFQ_FLAG_BYPASS;
    if cpu_fanout {
        flags |= NFQ_FLAG_CPU_FANOUT;
    }
    let mut info = Vec::with_capacity(8);
    info.extend_from_slice(&first.to_ne_bytes());
    info.extend_from_slice(&total.max(1).to_ne_bytes());
    info.extend_from_slice(&flags.to_ne_bytes());
    info.extend_from_slice(&[0, 0]);
    Expr::XtTarget {
        name: "NFQUEUE".into(),
        rev: 3,
        info,
    }
}

/// The queue numbers in an `NFQUEUE` target's info: (first, total).
pub fn nfqueue_numbers(info: &[u8]) -> Option<(u16, u16)> {
    let first = u16::from_ne_bytes(info.get(0..2)?.try_into().ok()?);
    let total = u16::from_ne_bytes(info.get(2..4)?.try_into().ok()?);
    Some((first, total.max(1)))
}
