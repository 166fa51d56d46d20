//! rtnetlink, as much of it as traffic control needs: a `NETLINK_ROUTE` socket, request messages
//! built the way iproute2 builds them (header, `struct tcmsg`, 4-byte aligned attributes, nests),
//! acknowledgements, and dumps.
//!
//! The socket belongs to the network namespace of the thread that opens it: open it inside
//! [`Netns::run`](crate::agent::netns::Netns::run) to talk to a pod's namespace.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
#[cfg(test)]
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// Attribute type bits that are flags (nested, byte order), not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;

// linux/rtnetlink.h
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_NEWQDISC: u16 = 36;
pub(crate) const RTM_DELQDISC: u16 = 37;
pub(crate) const RTM_GETQDISC: u16 = 38;
pub(crate) const RTM_NEWTCLASS: u16 = 40;
pub(crate) const TCA_KIND: u16 = 1;
pub(crate) const TCA_OPTIONS: u16 = 2;
// linux/if_link.h
pub(crate) const IFLA_IFNAME: u16 = 3;
// linux/pkt_sched.h
pub(crate) const TC_H_ROOT: u32 = 0xffff_ffff;

/// Size of `struct tcmsg` and of `struct ifinfomsg`.
const TCMSG_LEN: usize = 20;
const IFINFOMSG_LEN: usize = 16;

/// Datagrams we send hold at most this much; a batch larger than that goes in several.
const SEND_CHUNK: usize = 32 * 1024;
/// ... and at most this many requests: the kernel queues one acknowledgement per request on
/// our socket before we read any, each costing about a kilobyte of the receive buffer
/// (208 KiB by default); more would overflow it (ENOBUFS) and lose acknowledgements.
const SEND_CHUNK_MESSAGES: usize = 64;
/// Large enough for any datagram the kernel sends us (dump parts are at most 32 KiB).
const RECV_BUFFER: usize = 64 * 1024;
/// The kernel answers rtnetlink at once; a silent socket for this long is a bug, not load.
const RECV_TIMEOUT_SECS: i64 = 10;

/// How a `RTM_NEW*` request treats an existing object, as `tc add` and `tc replace` do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    /// Create; fail if it exists (`NLM_F_CREATE | NLM_F_EXCL`).
    Add,
    /// Create or change in place (`NLM_F_CREATE | NLM_F_REPLACE`): what the captured root
    /// qdisc fixtures (`tc qdisc replace`) use, in tests.
    #[cfg(test)]
    Replace,
}

impl Verb {
    fn flags(self) -> u16 {
        NLM_F_REQUEST
            | NLM_F_ACK
            | match self {
                Verb::Add => NLM_F_CREATE | NLM_F_EXCL,
                #[cfg(test)]
                Verb::Replace => NLM_F_CREATE | NLM_F_REPLACE,
            }
    }
}

/// One request, built in place. `what` names it in errors ("add tbf qdisc fa17: on eth0").
#[derive(Clone, Debug)]
pub(crate) struct Message {
    buf: Vec<u8>,
    what: String,
    /// The kind of qdisc a `RTM_NEWQDISC` request adds, to explain its failures.
    qdisc_kind: Option<String>,
}

/// An open nest: the offset of its attribute header.
#[must_use = "close the nest with Message::end_nest"]
pub(crate) struct Nest(usize);

impl Message {
    fn new(msg_type: u16, flags: u16, what: String) -> Self {
        let mut buf = vec![0; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        Self {
            buf,
            what,
            qdisc_kind: None,
        }
    }

    /// A traffic-control request: `struct tcmsg` (family AF_UNSPEC) follows the header.
    pub(crate) fn tc(msg_type: u16, flags: u16, tcm: TcHeader, what: String) -> Self {
        let mut msg = Self::new(msg_type, flags, what);
        msg.buf.extend_from_slice(&[0; 4]); // family, padding
        msg.buf.extend_from_slice(&tcm.ifindex.to_ne_bytes());
        msg.buf.extend_from_slice(&tcm.handle.to_ne_bytes());
        msg.buf.extend_from_slice(&tcm.parent.to_ne_bytes());
        msg.buf.extend_from_slice(&tcm.info.to_ne_bytes());
        msg
    }

    /// `RTM_NEWQDISC` with `TCA_KIND`; the caller adds `TCA_OPTIONS`.
    pub(crate) fn new_qdisc(verb: Verb, tcm: TcHeader, kind: &str, what: String) -> Self {
        let mut msg = Self::tc(RTM_NEWQDISC, verb.flags(), tcm, what);
        msg.attr_str(TCA_KIND, kind);
        msg.qdisc_kind = Some(kind.to_string());
        msg
    }

    /// `RTM_NEWTCLASS` with `TCA_KIND`; the caller adds `TCA_OPTIONS`.
    pub(crate) fn new_class(verb: Verb, tcm: TcHeader, kind: &str, what: String) -> Self {
        let mut msg = Self::tc(RTM_NEWTCLASS, verb.flags(), tcm, what);
        msg.attr_str(TCA_KIND, kind);
        msg
    }

    /// `RTM_DELQDISC` of the qdisc with `handle` at `parent`: the kernel refuses (ENOENT) when
    /// the qdisc there has another handle, so this never deletes someone else's qdisc.
    pub(crate) fn del_qdisc(tcm: TcHeader, what: String) -> Self {
        Self::tc(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, tcm, what)
    }

    /// A dump of every qdisc in the namespace.
    pub(crate) fn dump_qdiscs() -> Self {
        Self::tc(
            RTM_GETQDISC,
            NLM_F_REQUEST | NLM_F_DUMP,
            TcHeader::default(),
            "list qdiscs".into(),
        )
    }

    /// A dump of every link in the namespace.
    pub(crate) fn dump_links() -> Self {
        let mut msg = Self::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, "list links".into());
        msg.buf.extend_from_slice(&[0; IFINFOMSG_LEN]);
        msg
    }

    /// One link by its index (a request, not a dump: no walk over every interface).
    pub(crate) fn get_link(index: u32) -> Self {
        let mut msg = Self::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, "get a link".into());
        let mut header = [0u8; IFINFOMSG_LEN];
        header[4..8].copy_from_slice(&index.to_ne_bytes());
        msg.buf.extend_from_slice(&header);
        msg
    }

    pub(crate) fn what(&self) -> &str {
        &self.what
    }

    /// Appends raw bytes, padded to 4 (a struct at the start of a nest, as netem's options).
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.pad();
    }

    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) {
        let len = u16::try_from(4 + payload.len()).expect("netlink attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.put(payload);
    }

    pub(crate) fn attr_u32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_ne_bytes());
    }

    pub(crate) fn attr_u64(&mut self, kind: u16, value: u64) {
        self.attr(kind, &value.to_ne_bytes());
    }

    /// A NUL-terminated string attribute.
    pub(crate) fn attr_str(&mut self, kind: u16, value: &str) {
        let mut payload = Vec::with_capacity(value.len() + 1);
        payload.extend_from_slice(value.as_bytes());
        payload.push(0);
        self.attr(kind, &payload);
    }

    pub(crate) fn begin_nest(&mut self, kind: u16) -> Nest {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        Nest(start)
    }

    pub(crate) fn end_nest(&mut self, nest: Nest) {
        let len = u16::try_from(self.buf.len() - nest.0).expect("netlink nest under 64 KiB");
        self.buf[nest.0..nest.0 + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// The bytes on the wire, with `nlmsg_len` and `nlmsg_seq` filled in (`nlmsg_pid` 0: the
    /// kernel).
    pub(crate) fn encode(&self, seq: u32) -> Vec<u8> {
        let mut bytes = self.buf.clone();
        let len = u32::try_from(bytes.len()).expect("netlink message under 4 GiB");
        bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        bytes
    }
}

/// The fields of `struct tcmsg` a request sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcHeader {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    /// Filters: priority in the upper 16 bits, protocol (network byte order) in the lower.
    pub info: u32,
}

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetlinkError {
    #[error("{what}: the kernel refused it ({errno})")]
    Refused {
        what: String,
        /// The kind of qdisc the refused request added, if it added one.
        qdisc_kind: Option<String>,
        errno: Errno,
    },
    #[error("rtnetlink: {0}")]
    Io(#[from] io::Error),
}

impl NetlinkError {
    pub(crate) fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Refused { errno, .. } => Some(*errno),
            NetlinkError::Io(e) => e.raw_os_error().map(Errno::from_raw),
        }
    }
}

impl From<NetlinkError> for io::Error {
    fn from(err: NetlinkError) -> Self {
        match err {
            NetlinkError::Io(e) => e,
            refused @ NetlinkError::Refused { errno, .. } => {
                io::Error::new(io::Error::from(errno).kind(), refused.to_string())
            }
        }
    }
}

impl From<Errno> for NetlinkError {
    fn from(errno: Errno) -> Self {
        NetlinkError::Io(errno.into())
    }
}

/// A `NETLINK_ROUTE` socket in the calling thread's network namespace.
pub(crate) struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteSocket {
    pub(crate) fn open() -> Result<Self, NetlinkError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::seconds(RECV_TIMEOUT_SECS),
        )?;
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NetlinkError> {
        let sent = sendto(
            self.fd.as_raw_fd(),
            bytes,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        if sent != bytes.len() {
            return Err(io::Error::other(format!("sent {sent} of {} bytes", bytes.len())).into());
        }
        Ok(())
    }

    /// Receives one datagram and returns its messages (type, flags, seq, payload).
    fn receive(&mut self) -> Result<Vec<Reply>, NetlinkError> {
        let len = loop {
            match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel in {RECV_TIMEOUT_SECS}s"),
                    )
                    .into());
                }
                other => break other?,
            }
        };
        split_messages(&self.buf[..len])
    }

    /// Sends every request (batched into datagrams) and waits for each acknowledgement. The
    /// kernel carries out each request even when an earlier one in the batch failed; the error
    /// returned is the first failure, naming its request.
    pub(crate) fn execute(&mut self, messages: &[Message]) -> Result<(), NetlinkError> {
        let mut first_error = None;
        let mut index = 0;
        while index < messages.len() {
            let mut datagram = Vec::new();
            let mut pending = Vec::new();
            while index < messages.len() {
                let seq = self.seq.wrapping_add(1);
                let bytes = messages[index].encode(seq);
                if !datagram.is_empty()
                    && (datagram.len() + bytes.len() > SEND_CHUNK
                        || pending.len() == SEND_CHUNK_MESSAGES)
                {
                    break;
                }
                self.seq = seq;
                datagram.extend_from_slice(&bytes);
                pending.push((seq, index));
                index += 1;
            }
            self.send(&datagram)?;
            while !pending.is_empty() {
                for reply in self.receive()? {
                    let Some(at) = pending.iter().position(|(seq, _)| *seq == reply.seq) else {
                        continue; // an answer to an earlier, abandoned request
                    };
                    if reply.msg_type != NLMSG_ERROR {
                        continue;
                    }
                    let (_, message) = pending.swap_remove(at);
                    let errno = ack_errno(&reply.payload)?;
                    if errno != 0 && first_error.is_none() {
                        first_error = Some(NetlinkError::Refused {
                            what: messages[message].what().to_string(),
                            qdisc_kind: messages[message].qdisc_kind.clone(),
                            errno: Errno::from_raw(errno),
                        });
                    }
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sends a request that asks for an acknowledgement and returns the payload of every
    /// answer of `reply_type` before it.
    pub(crate) fn get(
        &mut self,
        request: &Message,
        reply_type: u16,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.collect(request, reply_type)
    }

    /// Sends a dump request and returns the payload of every message of the answer.
    pub(crate) fn dump(
        &mut self,
        request: &Message,
        reply_type: u16,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        self.collect(request, reply_type)
    }

    /// The answers of `reply_type` to `request`, until the dump's end or the acknowledgement
    /// (an error code of 0); any other code is the refusal.
    fn collect(
        &mut self,
        request: &Message,
        reply_type: u16,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let seq = self.next_seq();
        self.send(&request.encode(seq))?;
        let mut out = Vec::new();
        loop {
            for reply in self.receive()? {
                if reply.seq != seq {
                    continue;
                }
                match reply.msg_type {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = ack_errno(&reply.payload)?;
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(NetlinkError::Refused {
                            what: request.what().to_string(),
                            qdisc_kind: None,
                            errno: Errno::from_raw(errno),
                        });
                    }
                    t if t == reply_type => out.push(reply.payload),
                    _ => {}
                }
            }
        }
    }
}

struct Reply {
    msg_type: u16,
    seq: u32,
    payload: Vec<u8>,
}

fn malformed(what: &str) -> NetlinkError {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed netlink answer: {what}"),
    )
    .into()
}

fn split_messages(mut data: &[u8]) -> Result<Vec<Reply>, NetlinkError> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32_at(data, 0) as usize;
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(malformed("message length"));
        }
        out.push(Reply {
            msg_type: u16::from_ne_bytes([data[4], data[5]]),
            seq: u32_at(data, 8),
            payload: data[NLMSG_HDRLEN..len].to_vec(),
        });
        data = &data[align4(len).min(data.len())..];
    }
    Ok(out)
}

/// The (positive) errno of an `NLMSG_ERROR` payload; 0 is an acknowledgement.
fn ack_errno(payload: &[u8]) -> Result<i32, NetlinkError> {
    if payload.len() < 4 {
        return Err(malformed("short NLMSG_ERROR"));
    }
    Ok(-i32::from_ne_bytes([
        payload[0], payload[1], payload[2], payload[3],
    ]))
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// The attributes in `data`: (type without flag bits, payload).
pub(crate) fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        if len < 4 || len > data.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([data[2], data[3]]) & NLA_TYPE_MASK;
        let payload = &data[4..len];
        data = &data[align4(len).min(data.len())..];
        Some((kind, payload))
    })
}

/// A NUL-terminated string attribute's text.
pub(crate) fn attr_string(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// One qdisc from a `RTM_NEWQDISC` dump answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QdiscEntry {
    pub ifindex: u32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
}

pub(crate) fn parse_qdisc(payload: &[u8]) -> Option<QdiscEntry> {
    if payload.len() < TCMSG_LEN {
        return None;
    }
    let kind = attributes(&payload[TCMSG_LEN..])
        .find(|(kind, _)| *kind == TCA_KIND)
        .map(|(_, value)| attr_string(value))
        .unwrap_or_default();
    Some(QdiscEntry {
        ifindex: u32_at(payload, 4),
        handle: u32_at(payload, 8),
        parent: u32_at(payload, 12),
        kind,
    })
}

/// (ifindex, name) from a `RTM_NEWLINK` dump answer.
pub(crate) fn parse_link(payload: &[u8]) -> Option<(u32, String)> {
    if payload.len() < IFINFOMSG_LEN {
        return None;
    }
    let name = attributes(&payload[IFINFOMSG_LEN..])
        .find(|(kind, _)| *kind == IFLA_IFNAME)
        .map(|(_, value)| attr_string(value))?;
    Some((u32_at(payload, 4), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_to_four_bytes_and_nests_count_their_contents() {
        let mut msg = Message::tc(
            RTM_NEWQDISC,
            Verb::Add.flags(),
            TcHeader::default(),
            "t".into(),
        );
        msg.attr_str(TCA_KIND, "netem");
        let nest = msg.begin_nest(TCA_OPTIONS);
        msg.attr_u32(1, 7);
        msg.end_nest(nest);
        let bytes = msg.encode(9);
        assert_eq!(bytes.len(), 16 + 20 + 12 + 12);
        assert_eq!(u32_at(&bytes, 0) as usize, bytes.len());
        assert_eq!(u32_at(&bytes, 8), 9);
        let attrs: Vec<_> = attributes(&bytes[36..]).collect();
        assert_eq!(attrs[0], (TCA_KIND, &b"netem\0"[..]));
        assert_eq!(attrs[1].0, TCA_OPTIONS);
        assert_eq!(
            attributes(attrs[1].1).collect::<Vec<_>>(),
            [(1, &7u32.to_ne_bytes()[..])]
        );
    }

    #[test]
    fn a_qdisc_dump_entry_gives_interface_handle_parent_and_kind() {
        let mut msg = Message::tc(
            RTM_NEWQDISC,
            0,
            TcHeader {
                ifindex: 3,
                handle: 0xfa17_0000,
                parent: TC_H_ROOT,
                info: 1,
            },
            "t".into(),
        );
        msg.attr_str(TCA_KIND, "tbf");
        let bytes = msg.encode(1);
        let entry = parse_qdisc(&bytes[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(
            entry,
            QdiscEntry {
                ifindex: 3,
                handle: 0xfa17_0000,
                parent: TC_H_ROOT,
                kind: "tbf".into()
            }
        );
    }

    #[test]
    fn refusals_keep_the_errno_kind_and_name_the_request() {
        let err: io::Error = NetlinkError::Refused {
            what: "add tbf qdisc fa17: on eth0".into(),
            qdisc_kind: Some("tbf".into()),
            errno: Errno::EEXIST,
        }
        .into();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            err.to_string().contains("add tbf qdisc fa17: on eth0"),
            "{err}"
        );
    }
}
