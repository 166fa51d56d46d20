//! Qdiscs through rtnetlink: an htb tree whose capped class caps bandwidth, or whose class with
//! a netem leaf delays and drops. We speak netlink ourselves over a `NETLINK_ROUTE` socket
//! opened inside the target namespace; no `tc` process runs on the apply path. Every request is
//! encoded byte for byte as iproute2's `tc` encodes it (checked against captured requests in
//! `tests/fixtures/tc/`).
//!
//! What gets installed on an interface, always as its root qdisc with handle `fa17:`:
//!
//! ```text
//! fa17: htb default 1
//! ├── fa17:1 htb, unlimited ──────── 1: pfifo   (every packet by default)
//! └── fa17:2 htb, capped ─────────── 2: bfifo   (bandwidth)
//!          or htb, unlimited ─────── 2: netem   (latency, loss)
//! ```
//!
//! Nothing reaches `fa17:2` by itself: htb takes a packet whose `skb->priority` names one of
//! its classes into that class, and only the fault's steering table ([`steer`]) sets that
//! priority, for the fault's peers and ports, through a gate that closes at the injection's
//! deadline. After the deadline every packet goes to the unlimited default class, with no
//! process of ours running; the tree that remains is inert and the agent removes it at its next
//! converge.
//!
//! Direction: a qdisc shapes what an interface *sends*. Traffic leaving a pod ([`Flow::Egress`])
//! is shaped on the pod's `eth0`; traffic entering it ([`Flow::Ingress`]) on the host side of
//! its veth, whose sends are the pod's receives. The caller names the namespace and interface.
//!
//! # Guarantees
//! - Ownership: a root qdisc with handle `fa17:` ([`HANDLE`]) is ours; anything else is not.
//!   `apply_tree` refuses to replace a root qdisc that is neither ours nor a kernel default, and
//!   [`remove`] deletes only a root whose handle is `fa17:` (the kernel checks the handle too).
//! - Desired state: `apply_tree` leaves exactly the requested tree, whatever of ours was there;
//!   applying the same fault twice leaves one tree. A tree that fails halfway is removed.
//! - Removing our root makes the kernel attach its default qdisc again: the interface is as it
//!   was before the fault (when it had a default root, the only case we install on).
//!
//! # Caveats
//! - Re-applying rebuilds the tree, dropping what the old one held at that moment.
//! - Packets the capped class holds when the deadline passes still drain at the cap: at most
//!   the class's queue (100 ms at the rate by default) after the deadline.

use std::fmt;
use std::io;

use nix::errno::Errno;

use crate::agent::deadline::Deadline;
use crate::agent::netns::Netns;
use crate::agent::nft::{self, Comment};
use crate::agent::scope::Scope;
use crate::agent::tag::InjectionTag;
use crate::api::{NetworkFault, NetworkFaultKind};

mod detect;
#[cfg(test)]
mod fixture;
mod htb;
mod netem;
pub(crate) mod netlink;
mod psched;
pub mod steer;
mod tbf;

pub use detect::{htb_available, netem_available, tbf_available};

use htb::HtbClass;
use netem::Netem;
use netlink::{
    Message, NetlinkError, RTM_NEWLINK, RTM_NEWQDISC, RouteSocket, TC_H_ROOT, TcHeader, Verb,
};
use psched::Psched;
use tbf::Tbf;

/// The handle of every root qdisc faultline installs (`fa17:`): how the agent recognises its
/// own and leaves everyone else's alone.
pub const HANDLE: u32 = 0xfa17_0000;
/// The class of unmatched traffic (`fa17:1`, htb's default) and its leaf (`1:`).
const DEFAULT_CLASS: u32 = HANDLE | 1;
const DEFAULT_LEAF: u32 = 0x0001_0000;
/// The class the steering table puts the fault's packets in (`fa17:2`) and its leaf (`2:`).
pub const FAULT_CLASS: u32 = HANDLE | 2;
const FAULT_LEAF: u32 = 0x0002_0000;
/// Packets the default class queues (the usual `txqueuelen`).
const DEFAULT_LEAF_LIMIT: u32 = 1000;

/// Which traffic of a pod a qdisc shapes, and so which end of a packet the fault's peers are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Traffic the pod sends: install on the pod's `eth0`; peers are destinations.
    Egress,
    /// Traffic the pod receives: install on the host-side veth of the pod; peers are sources
    /// (and `ports` are the peers' source ports).
    Ingress,
}

/// An interface's root qdisc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdiscInfo {
    pub kind: String,
    pub handle: u32,
}

impl QdiscInfo {
    /// A qdisc the kernel attached by itself: `noqueue` (veths), `pfifo_fast`, `mq` and its
    /// children, or whatever `net.core.default_qdisc` names (`fq_codel`). The kernel gives
    /// exactly these handle `0:`; a qdisc someone added has a non-zero handle.
    pub fn is_default(&self) -> bool {
        self.handle == 0
    }

    /// Whether faultline installed it.
    pub fn is_ours(&self) -> bool {
        self.handle == HANDLE
    }
}

impl fmt::Display for QdiscInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:x}:", self.kind, self.handle >> 16)
    }
}

/// The root qdisc of `ifname` in `ns`, `None` when the kernel lists none. The agent refuses a
/// fault when this is neither [`QdiscInfo::is_default`] nor [`QdiscInfo::is_ours`].
pub fn root_qdisc(ns: &Netns, ifname: &str) -> io::Result<Option<QdiscInfo>> {
    ns.run(|| {
        let ifindex = ifindex(ns, ifname)?;
        let mut socket = RouteSocket::open()?;
        root_of(&mut socket, ifindex)
    })?
}

/// Installs the fault's tree on `ifname` in `ns` (bandwidth: a capped class; latency or loss:
/// a class with netem), with nothing steered into it yet. Idempotent. Fails with
/// [`io::ErrorKind::Unsupported`] ("kernel has no sch_netem") where the kernel lacks netem,
/// leaving the interface as it was (or without our qdisc).
pub fn apply_tree(ns: &Netns, ifname: &str, fault: &NetworkFault) -> io::Result<()> {
    let shaper = match fault.kind() {
        Some(NetworkFaultKind::Bandwidth(bandwidth)) => Shaper::Tbf(Tbf::from_fault(bandwidth)?),
        Some(NetworkFaultKind::Latency(_) | NetworkFaultKind::Loss(_)) => {
            Shaper::Netem(Netem::from_fault(fault)?)
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a qdisc tree carries bandwidth, latency or loss",
            ));
        }
    };
    apply(ns, ifname, shaper)
}

/// Everything a qdisc fault puts on one interface: the tree ([`apply_tree`]) and, next to
/// it, the gated steering table ([`steer::table`]) that sends the fault's packets into it
/// until `deadline`. `netdev`: the kernel has the netdev egress hook.
#[allow(clippy::too_many_arguments)]
pub fn apply_fault(
    ns: &Netns,
    ifname: &str,
    flow: Flow,
    fault: &NetworkFault,
    tag: &InjectionTag,
    deadline: &Deadline,
    comment: &Comment,
    netdev: bool,
) -> io::Result<()> {
    let scope = Scope::parse(&fault.peer_cidrs, &fault.ports)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let gate = deadline
        .remaining()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    apply_tree(ns, ifname, fault)?;
    let table = steer::table(tag, ifname, flow, &scope, gate, comment, netdev);
    nft::replace(ns, &[table])
}

/// Removes a qdisc fault from one interface: its steering table, then our root qdisc.
/// `Ok(false)` when neither was there.
pub fn remove_fault(ns: &Netns, ifname: &str, tag: &InjectionTag) -> io::Result<bool> {
    let table = nft::remove(ns, tag)?;
    Ok(remove(ns, ifname)? || table)
}

/// Deletes our root qdisc from `ifname` in `ns`: `Ok(true)` when there was one, `Ok(false)`
/// when the root is not ours or the interface is gone. Never touches another root qdisc.
pub fn remove(ns: &Netns, ifname: &str) -> io::Result<bool> {
    ns.run(|| {
        let ifindex = match nix::net::if_::if_nametoindex(ifname) {
            Ok(index) => index,
            Err(Errno::ENODEV) => return Ok(false),
            Err(e) => return Err(no_interface(ns, ifname, e)),
        };
        let mut socket = RouteSocket::open()?;
        if !root_of(&mut socket, ifindex)?.is_some_and(|q| q.is_ours()) {
            return Ok(false);
        }
        match delete_ours(&mut socket, ifindex, ifname) {
            Ok(()) => Ok(true),
            // The kernel refuses (EINVAL, "Invalid handle") when the root's handle is not ours:
            // someone replaced it since we looked, and it is theirs now.
            Err(e) if e.errno() == Some(Errno::EINVAL) => match root_of(&mut socket, ifindex)? {
                Some(q) if q.is_ours() => Err(e.into()),
                _ => Ok(false),
            },
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(false),
            Err(e) => Err(e.into()),
        }
    })?
}

/// Every interface's root qdisc in `ns` (interfaces the kernel lists none for are left out).
pub fn root_qdiscs(ns: &Netns) -> io::Result<Vec<(String, QdiscInfo)>> {
    ns.run(|| {
        let mut socket = RouteSocket::open()?;
        let links = socket.dump(&Message::dump_links(), RTM_NEWLINK)?;
        let names: Vec<(u32, String)> = links
            .iter()
            .filter_map(|l| netlink::parse_link(l))
            .collect();
        let qdiscs = socket.dump(&Message::dump_qdiscs(), RTM_NEWQDISC)?;
        let mut out: Vec<(String, QdiscInfo)> = qdiscs
            .iter()
            .filter_map(|q| netlink::parse_qdisc(q))
            .filter(|q| q.parent == TC_H_ROOT)
            .filter_map(|q| {
                let name = names
                    .iter()
                    .find(|(index, _)| *index == q.ifindex)?
                    .1
                    .clone();
                Some((
                    name,
                    QdiscInfo {
                        kind: q.kind,
                        handle: q.handle,
                    },
                ))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    })?
}

/// The interfaces in `ns` whose root qdisc is ours, by name.
pub fn owned(ns: &Netns) -> io::Result<Vec<String>> {
    ns.run(|| {
        let mut socket = RouteSocket::open()?;
        let links = socket.dump(&Message::dump_links(), RTM_NEWLINK)?;
        let names: Vec<(u32, String)> = links
            .iter()
            .filter_map(|l| netlink::parse_link(l))
            .collect();
        let qdiscs = socket.dump(&Message::dump_qdiscs(), RTM_NEWQDISC)?;
        let mut out: Vec<String> = qdiscs
            .iter()
            .filter_map(|q| netlink::parse_qdisc(q))
            .filter(|q| q.parent == TC_H_ROOT && q.handle == HANDLE)
            .filter_map(|q| {
                names
                    .iter()
                    .find(|(index, _)| *index == q.ifindex)
                    .map(|(_, name)| name.clone())
            })
            .collect();
        out.sort();
        Ok(out)
    })?
}

/// What a fault does: the root qdisc when unscoped; class `fa17:2` and its leaf when scoped.
enum Shaper {
    Tbf(Tbf),
    Netem(Netem),
}

impl Shaper {
    /// The fault's class `fa17:2`: capped for bandwidth (the bucket's rate and size).
    fn scoped_class(&self) -> HtbClass {
        match self {
            Shaper::Tbf(tbf) => HtbClass::capped(tbf.rate, tbf.burst),
            Shaper::Netem(_) => HtbClass::UNLIMITED,
        }
    }

    /// The leaf of `fa17:2`: the bucket's queue (bytes), or netem.
    fn scoped_leaf(&self, tcm: TcHeader, ifname: &str) -> Message {
        let kind = match self {
            Shaper::Tbf(_) => "bfifo",
            Shaper::Netem(_) => "netem",
        };
        let what = format!("add {kind} qdisc 2: under fa17:2 on {ifname}");
        let mut msg = Message::new_qdisc(Verb::Add, tcm, kind, what);
        match self {
            Shaper::Tbf(tbf) => htb::write_fifo_options(&mut msg, tbf.limit),
            Shaper::Netem(netem) => netem.write_options(&mut msg),
        }
        msg
    }

    /// A refusal, said in terms of what to do about it.
    fn explain(&self, err: NetlinkError) -> io::Error {
        if let NetlinkError::Refused {
            qdisc_kind: Some(kind),
            errno: Errno::ENOENT,
            ..
        } = &err
            && kind == "netem"
        {
            return io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "kernel has no sch_netem ({err}); load it with `modprobe sch_netem`, or let \
                     the agent use its NFQUEUE path"
                ),
            );
        }
        err.into()
    }
}

fn apply(ns: &Netns, ifname: &str, shaper: Shaper) -> io::Result<()> {
    let psched = Psched::read();
    ns.run(|| {
        let ifindex = ifindex(ns, ifname)?;
        let mut socket = RouteSocket::open()?;
        let current = root_of(&mut socket, ifindex)?;
        if let Some(root) = &current
            && !root.is_default()
            && !root.is_ours()
        {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{ifname} in {} already has a root qdisc ({root}) that faultline did not \
                     install; refusing to replace it",
                    ns.path().display()
                ),
            ));
        }
        if current.is_some_and(|q| q.is_ours()) {
            delete_ours(&mut socket, ifindex, ifname)?;
        }
        let tree = fault_tree(ifindex, ifname, &shaper, &psched);
        if let Err(e) = socket.execute(&tree) {
            // Leave nothing half-built; the root (if it got made) is ours.
            if let Err(cleanup) = delete_ours(&mut socket, ifindex, ifname)
                && cleanup.errno() != Some(Errno::EINVAL)
            {
                tracing::warn!(interface = ifname, error = %cleanup, "cannot remove a half-built qdisc tree");
            }
            return Err(shaper.explain(e));
        }
        Ok(())
    })?
}

/// The requests that build a fault's tree, in order.
fn fault_tree(ifindex: u32, ifname: &str, shaper: &Shaper, psched: &Psched) -> Vec<Message> {
    let tcm = |handle, parent| TcHeader {
        ifindex,
        handle,
        parent,
        info: 0,
    };
    let mut out = Vec::with_capacity(5);
    let mut root = Message::new_qdisc(
        Verb::Add,
        tcm(HANDLE, TC_H_ROOT),
        "htb",
        format!("add htb root qdisc fa17: on {ifname}"),
    );
    htb::write_root_options(&mut root, DEFAULT_CLASS & 0xffff);
    out.push(root);
    for (class, name, options) in [
        (DEFAULT_CLASS, "fa17:1", HtbClass::UNLIMITED),
        (FAULT_CLASS, "fa17:2", shaper.scoped_class()),
    ] {
        let mut msg = Message::new_class(
            Verb::Add,
            tcm(class, HANDLE),
            "htb",
            format!("add htb class {name} on {ifname}"),
        );
        options.write_options(&mut msg, psched);
        out.push(msg);
    }
    let mut fifo = Message::new_qdisc(
        Verb::Add,
        tcm(DEFAULT_LEAF, DEFAULT_CLASS),
        "pfifo",
        format!("add pfifo qdisc 1: under fa17:1 on {ifname}"),
    );
    htb::write_fifo_options(&mut fifo, DEFAULT_LEAF_LIMIT);
    out.push(fifo);
    out.push(shaper.scoped_leaf(tcm(FAULT_LEAF, FAULT_CLASS), ifname));
    out
}

fn delete_ours(socket: &mut RouteSocket, ifindex: u32, ifname: &str) -> Result<(), NetlinkError> {
    let tcm = TcHeader {
        ifindex,
        handle: HANDLE,
        parent: TC_H_ROOT,
        info: 0,
    };
    socket.execute(&[Message::del_qdisc(
        tcm,
        format!("delete root qdisc fa17: on {ifname}"),
    )])
}

fn root_of(socket: &mut RouteSocket, ifindex: u32) -> io::Result<Option<QdiscInfo>> {
    let qdiscs = socket.dump(&Message::dump_qdiscs(), RTM_NEWQDISC)?;
    Ok(qdiscs
        .iter()
        .filter_map(|q| netlink::parse_qdisc(q))
        .find(|q| q.ifindex == ifindex && q.parent == TC_H_ROOT)
        .map(|q| QdiscInfo {
            kind: q.kind,
            handle: q.handle,
        }))
}

/// The index of `ifname` in the calling thread's namespace.
fn ifindex(ns: &Netns, ifname: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(ifname).map_err(|e| no_interface(ns, ifname, e))
}

fn no_interface(ns: &Netns, ifname: &str, errno: Errno) -> io::Error {
    io::Error::new(
        io::Error::from(errno).kind(),
        format!(
            "no interface {ifname} in network namespace {}: {errno}",
            ns.path().display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::fixture::{assert_same_request, load};
    use super::*;

    #[test]
    fn deleting_our_root_is_encoded_as_tc_encodes_it() {
        // tc qdisc del dev lo root handle fa17:
        let fixture = load("qdisc_delete_root");
        let tcm = TcHeader {
            ifindex: 1,
            handle: HANDLE,
            parent: TC_H_ROOT,
            info: 0,
        };
        assert_same_request(&fixture, &Message::del_qdisc(tcm, "t".into()));
    }

    #[test]
    #[should_panic(expected = "differs from tc's in fixture qdisc_delete_root at byte 26")]
    fn a_request_that_differs_from_tc_s_fails_its_fixture_comparison() {
        // The comparison ignores seq, pid and ifindex only: another handle is a difference.
        let tcm = TcHeader {
            ifindex: 1,
            handle: 0x0001_0000,
            parent: TC_H_ROOT,
            info: 0,
        };
        assert_same_request(
            &load("qdisc_delete_root"),
            &Message::del_qdisc(tcm, "t".into()),
        );
    }

    #[test]
    fn a_bandwidth_tree_is_made_of_tc_s_requests() {
        let fixture = load("htb_class_capped");
        let shaper = Shaper::Tbf(Tbf {
            rate: 1_000_000,
            burst: 16_384,
            limit: 116_384,
        });
        let tree = fault_tree(1, "lo", &shaper, &fixture.psched);
        let kinds: Vec<&str> = tree.iter().map(Message::what).collect();
        assert_eq!(
            kinds,
            [
                "add htb root qdisc fa17: on lo",
                "add htb class fa17:1 on lo",
                "add htb class fa17:2 on lo",
                "add pfifo qdisc 1: under fa17:1 on lo",
                "add bfifo qdisc 2: under fa17:2 on lo",
            ]
        );
        // Each request of the tree is the one tc sends.
        assert_same_request(&load("htb_root"), &tree[0]);
        assert_same_request(&load("htb_class_unlimited"), &tree[1]);
        assert_same_request(&fixture, &tree[2]);
        assert_same_request(&load("pfifo_leaf"), &tree[3]);
        assert_same_request(&load("bfifo_leaf"), &tree[4]);
    }

    #[test]
    fn a_netem_tree_is_made_of_tc_s_requests() {
        let fixture = load("netem_leaf");
        let fault = NetworkFault {
            latency: Some(crate::api::LatencyFault {
                latency: "20ms".into(),
                ..Default::default()
            }),
            ..NetworkFault::default()
        };
        let shaper = Shaper::Netem(Netem::from_fault(&fault).unwrap());
        let tree = fault_tree(1, "lo", &shaper, &fixture.psched);
        assert_eq!(tree.len(), 5);
        assert_same_request(&load("htb_class_scoped"), &tree[2]);
        assert_same_request(&fixture, &tree[4]);
    }

    #[test]
    fn kernel_default_qdiscs_have_handle_zero_and_ours_has_fa17() {
        let noqueue = QdiscInfo {
            kind: "noqueue".into(),
            handle: 0,
        };
        assert!(noqueue.is_default() && !noqueue.is_ours());
        let ours = QdiscInfo {
            kind: "tbf".into(),
            handle: HANDLE,
        };
        assert!(ours.is_ours() && !ours.is_default());
        assert_eq!(ours.to_string(), "tbf fa17:");
        let foreign = QdiscInfo {
            kind: "fq_codel".into(),
            handle: 0x8001_0000,
        };
        assert!(!foreign.is_default() && !foreign.is_ours());
    }

    #[test]
    fn a_netem_refusal_for_an_unknown_kind_says_the_kernel_lacks_sch_netem() {
        let shaper = Shaper::Netem(Netem::default());
        let err = shaper.explain(NetlinkError::Refused {
            what: "replace netem root qdisc fa17: on eth0".into(),
            qdisc_kind: Some("netem".into()),
            errno: Errno::ENOENT,
        });
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("kernel has no sch_netem"), "{err}");
        // Another request's ENOENT is not about netem.
        let err = shaper.explain(NetlinkError::Refused {
            what: "add htb class fa17:2 on eth0".into(),
            qdisc_kind: None,
            errno: Errno::ENOENT,
        });
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
