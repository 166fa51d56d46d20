//! Qdiscs through rtnetlink: tbf for bandwidth caps, netem for latency and loss, htb with u32
//! filters when a fault is scoped to some peers. We speak netlink ourselves over a
//! `NETLINK_ROUTE` socket opened inside the target namespace; no `tc` process runs on the
//! apply path. Every request is encoded byte for byte as iproute2's `tc` encodes it (checked
//! against captured requests in `tests/fixtures/tc/`).
//!
//! What gets installed on an interface, always as its root qdisc with handle `fa17:`:
//!
//! ```text
//! unscoped:  fa17: tbf | netem
//! scoped:    fa17: htb default 1
//!            ├── fa17:1 htb, unlimited ──────── 1: pfifo   (everything else)
//!            └── fa17:2 htb, capped ─────────── 2: bfifo   (u32 filters: the peers)
//!                     or htb, unlimited ─────── 2: netem
//! ```
//!
//! Direction: a qdisc shapes what an interface *sends*. Traffic leaving a pod ([`Flow::Egress`])
//! is shaped on the pod's `eth0`; traffic entering it ([`Flow::Ingress`]) on the host side of
//! its veth, whose sends are the pod's receives. The caller names the namespace and interface.
//!
//! # Guarantees
//! - Ownership: a root qdisc with handle `fa17:` ([`HANDLE`]) is ours; anything else is not.
//!   `apply_*` refuses to replace a root qdisc that is neither ours nor a kernel default, and
//!   [`remove`] deletes only a root whose handle is `fa17:` (the kernel checks the handle too).
//! - Desired state: `apply_*` leaves exactly the requested tree, whatever of ours was there;
//!   applying the same fault twice leaves one tree. A scoped tree that fails halfway is removed.
//! - Removing our root makes the kernel attach its default qdisc again: the interface is as it
//!   was before the fault (when it had a default root, the only case we install on).
//!
//! # Caveats
//! - Changing an unscoped qdisc of the same kind happens in place; any other change deletes our
//!   root and installs the new tree, leaving the interface unshaped for the moment in between.
//! - Port matches read a fixed offset (no IPv4 options, no IPv6 extension headers), as tc's.

use std::fmt;
use std::io;

use nix::errno::Errno;

use crate::agent::netns::Netns;
use crate::api::NetworkFault;

mod detect;
mod filter;
#[cfg(test)]
mod fixture;
mod htb;
mod netem;
mod netlink;
mod psched;
mod tbf;

pub use detect::{htb_available, netem_available, tbf_available};

use filter::{Cidr, PeerEnd, Selector};
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
/// Scoped tree: the class of unmatched traffic (`fa17:1`, htb's default) and its leaf (`1:`).
const DEFAULT_CLASS: u32 = HANDLE | 1;
const DEFAULT_LEAF: u32 = 0x0001_0000;
/// Scoped tree: the class the filters steer the peers into (`fa17:2`) and its leaf (`2:`).
const SCOPED_CLASS: u32 = HANDLE | 2;
const SCOPED_LEAF: u32 = 0x0002_0000;
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

impl Flow {
    fn peer_end(self) -> PeerEnd {
        match self {
            Flow::Egress => PeerEnd::Destination,
            Flow::Ingress => PeerEnd::Source,
        }
    }
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

/// Caps the bandwidth of `ifname` in `ns` as `fault.bandwidth` says: tbf as the root, or, when
/// the fault names peers or ports, an htb class with that cap for the matching traffic only.
pub fn apply_bandwidth(
    ns: &Netns,
    ifname: &str,
    flow: Flow,
    fault: &NetworkFault,
) -> io::Result<()> {
    let bandwidth = fault.bandwidth.as_ref().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "apply_bandwidth needs a bandwidth fault",
        )
    })?;
    let shaper = Shaper::Tbf(Tbf::from_fault(bandwidth)?);
    apply(ns, ifname, shaper, scope(fault, flow)?)
}

/// Delays or drops packets on `ifname` in `ns` as `fault.latency` or `fault.loss` says, with
/// netem: as the root, or under htb for the matching traffic when the fault is scoped.
/// Idempotent. Fails with [`io::ErrorKind::Unsupported`] ("kernel has no sch_netem") where the
/// kernel lacks netem, leaving the interface as it was (or without our qdisc).
pub fn apply_netem(ns: &Netns, ifname: &str, flow: Flow, fault: &NetworkFault) -> io::Result<()> {
    let shaper = Shaper::Netem(Netem::from_fault(fault)?);
    apply(ns, ifname, shaper, scope(fault, flow)?)
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
    fn kind(&self) -> &'static str {
        match self {
            Shaper::Tbf(_) => "tbf",
            Shaper::Netem(_) => "netem",
        }
    }

    /// The unscoped root qdisc.
    fn root(&self, tcm: TcHeader, ifname: &str, psched: &Psched) -> Message {
        let what = format!("replace {} root qdisc fa17: on {ifname}", self.kind());
        let mut msg = Message::new_qdisc(Verb::Replace, tcm, self.kind(), what);
        match self {
            Shaper::Tbf(tbf) => tbf.write_options(&mut msg, psched),
            Shaper::Netem(netem) => netem.write_options(&mut msg),
        }
        msg
    }

    /// The scoped class `fa17:2`: capped for bandwidth (the bucket's rate and size).
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

/// The filters for a fault's scope; `None` when it names no peers and no ports.
fn scope(fault: &NetworkFault, flow: Flow) -> io::Result<Option<Vec<Selector>>> {
    if fault.peer_cidrs.is_empty() && fault.ports.is_empty() {
        return Ok(None);
    }
    let cidrs = fault
        .peer_cidrs
        .iter()
        .map(|c| Cidr::parse(c))
        .collect::<io::Result<Vec<_>>>()?;
    let ports = fault
        .ports
        .iter()
        .map(|&p| {
            u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("port {p} is not between 1 and 65535"),
                )
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    filter::selectors(&cidrs, &ports, flow.peer_end()).map(Some)
}

fn apply(ns: &Netns, ifname: &str, shaper: Shaper, scope: Option<Vec<Selector>>) -> io::Result<()> {
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
        let ours = current.filter(QdiscInfo::is_ours);
        match scope {
            None => {
                // Same kind: the kernel changes it in place. Another kind under our handle
                // would be refused ("Invalid qdisc name"), so ours goes first.
                if ours.as_ref().is_some_and(|q| q.kind != shaper.kind()) {
                    delete_ours(&mut socket, ifindex, ifname)?;
                }
                let tcm = TcHeader {
                    ifindex,
                    handle: HANDLE,
                    parent: TC_H_ROOT,
                    info: 0,
                };
                socket
                    .execute(&[shaper.root(tcm, ifname, &psched)])
                    .map_err(|e| shaper.explain(e))
            }
            Some(selectors) => {
                if ours.is_some() {
                    delete_ours(&mut socket, ifindex, ifname)?;
                }
                let tree = scoped_tree(ifindex, ifname, &shaper, &selectors, &psched);
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
            }
        }
    })?
}

/// The requests that build a scoped tree, in order.
fn scoped_tree(
    ifindex: u32,
    ifname: &str,
    shaper: &Shaper,
    selectors: &[Selector],
    psched: &Psched,
) -> Vec<Message> {
    let tcm = |handle, parent| TcHeader {
        ifindex,
        handle,
        parent,
        info: 0,
    };
    let mut out = Vec::with_capacity(5 + selectors.len());
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
        (SCOPED_CLASS, "fa17:2", shaper.scoped_class()),
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
    out.push(shaper.scoped_leaf(tcm(SCOPED_LEAF, SCOPED_CLASS), ifname));
    let total = selectors.len();
    for (i, selector) in selectors.iter().enumerate() {
        out.push(selector.message(
            ifindex,
            HANDLE,
            SCOPED_CLASS,
            format!(
                "add u32 filter {} of {total} (to fa17:2) on {ifname}",
                i + 1
            ),
        ));
    }
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
    fn a_scoped_bandwidth_tree_is_made_of_tc_s_requests() {
        let fixture = load("htb_class_capped");
        let shaper = Shaper::Tbf(Tbf {
            rate: 1_000_000,
            burst: 16_384,
            limit: 116_384,
        });
        let selectors = filter::selectors(
            &[Cidr::parse("10.77.0.3/32").unwrap()],
            &[],
            PeerEnd::Destination,
        )
        .unwrap();
        let tree = scoped_tree(1, "lo", &shaper, &selectors, &fixture.psched);
        let kinds: Vec<&str> = tree.iter().map(Message::what).collect();
        assert_eq!(
            kinds,
            [
                "add htb root qdisc fa17: on lo",
                "add htb class fa17:1 on lo",
                "add htb class fa17:2 on lo",
                "add pfifo qdisc 1: under fa17:1 on lo",
                "add bfifo qdisc 2: under fa17:2 on lo",
                "add u32 filter 1 of 1 (to fa17:2) on lo",
            ]
        );
        // Each request of the tree is the one tc sends.
        assert_same_request(&load("htb_root"), &tree[0]);
        assert_same_request(&load("htb_class_unlimited"), &tree[1]);
        assert_same_request(&fixture, &tree[2]);
        assert_same_request(&load("pfifo_leaf"), &tree[3]);
        assert_same_request(&load("bfifo_leaf"), &tree[4]);
        assert_same_request(&load("u32_ip_dst"), &tree[5]);
    }

    #[test]
    fn a_scoped_netem_tree_is_made_of_tc_s_requests() {
        let fixture = load("netem_leaf");
        let fault = NetworkFault {
            latency: Some(crate::api::LatencyFault {
                latency: "20ms".into(),
                ..Default::default()
            }),
            ..NetworkFault::default()
        };
        let shaper = Shaper::Netem(Netem::from_fault(&fault).unwrap());
        let tree = scoped_tree(1, "lo", &shaper, &[], &fixture.psched);
        assert_eq!(tree.len(), 5);
        assert_same_request(&load("htb_class_scoped"), &tree[2]);
        assert_same_request(&fixture, &tree[4]);
    }

    #[test]
    fn an_empty_scope_is_unscoped_and_ports_must_be_ports() {
        let mut fault = NetworkFault::default();
        assert!(scope(&fault, Flow::Egress).unwrap().is_none());
        fault.ports = vec![80];
        assert_eq!(scope(&fault, Flow::Egress).unwrap().unwrap().len(), 2);
        fault.ports = vec![0];
        assert_eq!(
            scope(&fault, Flow::Egress).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        fault.ports = vec![70_000];
        assert!(scope(&fault, Flow::Ingress).is_err());
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
