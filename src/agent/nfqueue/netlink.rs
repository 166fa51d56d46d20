//! The nfnetlink_queue protocol, spoken over a `NETLINK_NETFILTER` socket.
//!
//! Message encoding and decoding are pure functions, unit-tested byte for byte against what
//! libnetfilter_queue (`nfq_nlmsg_put`, `nfq_nlmsg_cfg_put_*`, `nfq_nlmsg_verdict_put`) sends.
//! [`QueueSocket`] is the one place that does IO: it binds a queue number and exchanges packet
//! and verdict messages.
//!
//! Layout of every message (kernel headers `linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nfnetlink_queue.h`):
//!
//! ```text
//! nlmsghdr  { len: u32, type: u16, flags: u16, seq: u32, pid: u32 }   host byte order
//! nfgenmsg  { family: u8, version: u8 (0), res_id: be16 = queue number }
//! nlattr*   { len: u16, type: u16, payload, padding to 4 bytes }      host byte order header
//! ```
//!
//! Attribute payloads are big-endian. A message's type is `NFNL_SUBSYS_QUEUE << 8 | msg`.
//!
//! Caveats: a socket lives in the network namespace it was created in, whatever thread later
//! uses it; queues are per namespace, so create the socket inside the namespace of the rule
//! ([`QueueSocket::open_in`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send,
    setsockopt, sockopt,
};
use nix::sys::time::TimeVal;

use crate::agent::netns::Netns;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

const NFQNL_CFG_CMD_BIND: u8 = 1;
/// `NFQNL_COPY_META`: the packet's metadata (its id), no payload.
pub const NFQNL_COPY_META: u8 = 1;
/// `NFQNL_COPY_PACKET`: metadata and up to `copy_range` bytes of the packet.
pub const NFQNL_COPY_PACKET: u8 = 2;

/// Accept packets instead of dropping them when the queue is full or our socket cannot take
/// more: a slow agent weakens the fault instead of cutting the pod off.
pub const NFQA_CFG_F_FAIL_OPEN: u32 = 0x1;
/// Hand GSO packets over whole instead of segmenting them (and skip checksum fix-ups): we never
/// look at the payload, and one queue entry per GSO packet keeps the queue short. Like netem,
/// one GSO packet is then one packet for loss.
pub const NFQA_CFG_F_GSO: u32 = 0x4;

const AF_INET: u16 = 2;
/// The `nlattr` type bits that carry flags rather than the attribute number.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// What the kernel does with a queued packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Drop = 0,
    Accept = 1,
}

/// How a queue is configured when bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// Bytes of each packet copied to us (headers only: we never read the payload).
    pub copy_range: u32,
    /// `NFQNL_COPY_META` or `NFQNL_COPY_PACKET` (never NONE: a bound queue copying nothing
    /// drops every packet).
    pub copy_mode: u8,
    /// Packets the kernel holds for us at most; beyond that they bypass (fail open).
    pub max_len: u32,
    /// `NFQA_CFG_F_*` flags to set.
    pub flags: u32,
}

impl QueueConfig {
    /// Our configuration for a queue that holds packets up to `max_delay`: metadata only (we
    /// decide by the packet id; no payload crosses to us, so more packets fit in our socket's
    /// buffer), fail-open and GSO, and room for [`ASSUMED_PEAK_PPS`] packets during the
    /// longest delay.
    pub fn for_delay(max_delay: Duration) -> Self {
        Self {
            copy_range: 0,
            copy_mode: NFQNL_COPY_META,
            max_len: queue_max_len(max_delay),
            flags: NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO,
        }
    }
}

/// The packet rate a queue is sized for. With GSO a packet is up to 64 KiB, so this covers a
/// multi-gigabit pod; beyond it packets bypass the fault (counted as `bypassed`).
pub const ASSUMED_PEAK_PPS: u64 = 100_000;
const MIN_QUEUE_LEN: u64 = 1024;
const MAX_QUEUE_LEN: u64 = 1 << 18;

/// Time a packet may wait in the queue before we read it (the reader falling behind a burst,
/// the machine busy): the queue holds it too.
pub const READ_SLACK: Duration = Duration::from_millis(100);

/// Queue length for rate x (delay + [`READ_SLACK`]), within [1024, 262144]: the queue counts
/// the packets we hold for their delay and those not read yet.
pub fn queue_max_len(max_delay: Duration) -> u32 {
    let held = max_delay.saturating_add(READ_SLACK);
    let packets = (u128::from(ASSUMED_PEAK_PPS) * held.as_micros()).div_ceil(1_000_000);
    let packets = u64::try_from(packets).unwrap_or(MAX_QUEUE_LEN);
    u32::try_from(packets.clamp(MIN_QUEUE_LEN, MAX_QUEUE_LEN)).expect("clamped below u32::MAX")
}

/// Builds one netlink message: header, nfgenmsg, attributes.
struct MessageBuilder<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> MessageBuilder<'a> {
    /// Starts a message of nfnetlink_queue type `msg` for `queue` at the end of `buf`, as
    /// `nfq_nlmsg_put2` does: family AF_UNSPEC, version 0, seq and pid 0.
    fn new(buf: &'a mut Vec<u8>, msg: u16, queue: u16, flags: u16) -> Self {
        let start = buf.len();
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by finish
        buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq
        buf.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        buf.push(0); // nfgen_family: AF_UNSPEC
        buf.push(0); // version: NFNETLINK_V0
        buf.extend_from_slice(&queue.to_be_bytes());
        Self { buf, start }
    }

    /// Appends an attribute, zero-padded to 4 bytes (`mnl_attr_put`).
    fn attr(self, kind: u16, payload: &[u8]) -> Self {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).expect("small attribute");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        let padded = self.buf.len().next_multiple_of(4);
        self.buf.resize(padded, 0);
        self
    }

    fn finish(self) {
        let len = u32::try_from(self.buf.len() - self.start).expect("small message");
        self.buf[self.start..self.start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// `NFQNL_MSG_CONFIG` binding `queue` and configuring it in one message, so that no packet
/// reaches the queue between the bind and the copy mode (a bound queue with copy mode "none"
/// drops packets instead of bypassing them). Asks for an ACK so errors such as EBUSY come back.
pub fn bind_message(queue: u16, config: &QueueConfig) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    let mut params = config.copy_range.to_be_bytes().to_vec();
    params.push(config.copy_mode);
    MessageBuilder::new(&mut buf, NFQNL_MSG_CONFIG, queue, NLM_F_REQUEST | NLM_F_ACK)
        .attr(NFQA_CFG_CMD, &config_cmd(NFQNL_CFG_CMD_BIND, AF_INET))
        .attr(NFQA_CFG_PARAMS, &params)
        .attr(NFQA_CFG_QUEUE_MAXLEN, &config.max_len.to_be_bytes())
        .attr(NFQA_CFG_FLAGS, &config.flags.to_be_bytes())
        .attr(NFQA_CFG_MASK, &config.flags.to_be_bytes())
        .finish();
    buf
}

/// `NFQNL_MSG_CONFIG` changing the queue length (and flags) of a queue we hold, without an
/// ACK: it goes out while the worker reads the socket, which would swallow the ACK; an error
/// still comes back and is counted there.
pub fn reconfigure_message(queue: u16, config: &QueueConfig) -> Vec<u8> {
    let mut buf = Vec::with_capacity(48);
    MessageBuilder::new(&mut buf, NFQNL_MSG_CONFIG, queue, NLM_F_REQUEST)
        .attr(NFQA_CFG_QUEUE_MAXLEN, &config.max_len.to_be_bytes())
        .attr(NFQA_CFG_FLAGS, &config.flags.to_be_bytes())
        .attr(NFQA_CFG_MASK, &config.flags.to_be_bytes())
        .finish();
    buf
}

/// `NFQNL_MSG_CONFIG` for a queue we hold, with no attribute and an ACK asked for: it changes
/// nothing (the kernel checks that the queue is ours and returns 0), and the ACK it answers
/// with lands in the socket, waking a reader blocked on it.
pub fn wake_message(queue: u16) -> Vec<u8> {
    let mut buf = Vec::with_capacity(20);
    MessageBuilder::new(&mut buf, NFQNL_MSG_CONFIG, queue, NLM_F_REQUEST | NLM_F_ACK).finish();
    buf
}

/// `struct nfqnl_msg_config_cmd { u8 command; u8 _pad; be16 pf; }`
fn config_cmd(command: u8, pf: u16) -> [u8; 4] {
    let pf = pf.to_be_bytes();
    [command, 0, pf[0], pf[1]]
}

/// Appends an `NFQNL_MSG_VERDICT` for packet `id` to `buf`. Several verdicts appended to one
/// buffer go to the kernel in one `send` (it processes every message of a datagram).
pub fn push_verdict(buf: &mut Vec<u8>, queue: u16, id: u32, verdict: Verdict) {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&(verdict as u32).to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    MessageBuilder::new(buf, NFQNL_MSG_VERDICT, queue, NLM_F_REQUEST)
        .attr(NFQA_VERDICT_HDR, &hdr)
        .finish();
}

/// Length of one verdict message: header, nfgenmsg, one 12-byte attribute.
pub const VERDICT_MESSAGE_LEN: usize = NLMSG_HDRLEN + NFGENMSG_LEN + NLA_HDRLEN + 8;

/// One message read from the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A queued packet, by its id in the queue.
    Packet { queue: u16, id: u32 },
    /// An ACK (`errno` 0) or the error of one of our requests (positive errno).
    Ack { errno: i32 },
    /// Anything else (other message types), ignored.
    Other,
}

/// Splits a datagram into its messages. Malformed trailing bytes end the walk.
pub fn parse(datagram: &[u8]) -> Vec<Incoming> {
    let mut messages = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
        messages.push(parse_one(kind, &rest[NLMSG_HDRLEN..len]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    messages
}

fn parse_one(kind: u16, body: &[u8]) -> Incoming {
    if kind == NLMSG_ERROR {
        return match body.get(0..4) {
            Some(code) => Incoming::Ack {
                errno: -i32::from_ne_bytes(code.try_into().expect("4 bytes")),
            },
            None => Incoming::Other,
        };
    }
    if kind != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET || body.len() < NFGENMSG_LEN {
        return Incoming::Other;
    }
    let queue = u16::from_be_bytes([body[2], body[3]]);
    let id = attributes(&body[NFGENMSG_LEN..])
        .find(|(kind, payload)| *kind == NFQA_PACKET_HDR && payload.len() >= 4)
        .map(|(_, payload)| u32::from_be_bytes(payload[..4].try_into().expect("4 bytes")));
    match id {
        Some(id) => Incoming::Packet { queue, id },
        None => Incoming::Other,
    }
}

/// The (type, payload) of each attribute. The last one may lack its padding (the kernel does
/// not pad `NFQA_PAYLOAD`).
fn attributes(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDRLEN {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            return None;
        }
        let payload = &rest[NLA_HDRLEN..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((kind, payload))
    })
}

/// Receive buffer we force on the socket: a burst of packets must fit while the reader is
/// busy, or the kernel bypasses them (fail-open) and reports ENOBUFS.
const RECEIVE_BUFFER: usize = 16 << 20;
/// How long the bind request waits for the kernel's answer. Once bound, reads block without a
/// timeout: a reader wakes for packets, and for the ACK of [`wake_message`] when it must stop
/// (a read timeout woke each of 1,000 idle readers 10 times a second).
const BIND_TIMEOUT: Duration = Duration::from_millis(100);

/// A netlink socket bound to one nfqueue.
#[derive(Debug)]
pub struct QueueSocket {
    fd: OwnedFd,
    queue: u16,
}

impl QueueSocket {
    /// Opens a socket inside `ns` (queues are per network namespace) and binds `queue` with
    /// `config`. Fails with EBUSY when another socket holds that queue number.
    pub fn open_in(ns: &Netns, queue: u16, config: &QueueConfig) -> io::Result<Self> {
        let fd = ns.run(open_socket)??;
        let socket = Self { fd, queue };
        socket.request(&bind_message(queue, config))?;
        setsockopt(&socket.fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 0))?;
        Ok(socket)
    }

    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Sends a request and waits for its ACK, skipping packet messages (none can arrive
    /// before the bind completes, but be safe).
    fn request(&self, message: &[u8]) -> io::Result<()> {
        self.send(message)?;
        let mut buf = vec![0u8; 8192];
        loop {
            let len = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(len) => len,
                Err(Errno::EINTR | Errno::ENOBUFS) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "nfnetlink_queue did not answer the bind request",
                    ));
                }
                Err(e) => return Err(e.into()),
            };
            for message in parse(&buf[..len]) {
                if let Incoming::Ack { errno } = message {
                    return match errno {
                        0 => Ok(()),
                        errno => Err(io::Error::from_raw_os_error(errno)),
                    };
                }
            }
        }
    }

    /// Sends one datagram (one or more messages).
    pub fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let mut attempts = 0;
        loop {
            match send(self.fd.as_raw_fd(), datagram, MsgFlags::empty()) {
                Ok(_) => return Ok(()),
                // The kernel could not allocate: try again a few times rather than leave
                // packets queued forever.
                Err(Errno::EINTR | Errno::ENOBUFS | Errno::EAGAIN) if attempts < 100 => {
                    attempts += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads one datagram into `buf`. `Ok(None)` when nothing was there (`nonblocking`) or the
    /// socket overflowed (ENOBUFS: those packets bypassed the queue;
    /// keep going).
    pub fn recv(&self, buf: &mut [u8], nonblocking: bool) -> io::Result<Option<usize>> {
        let flags = if nonblocking {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::empty()
        };
        match recv(self.fd.as_raw_fd(), buf, flags) {
            Ok(len) => Ok(Some(len)),
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ENOBUFS) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl QueueSocket {
    /// Reads up to `bufs.len()` datagrams in one `recvmmsg`, blocking for the first unless
    /// `nonblocking`; returns their lengths (empty when nothing was there, or on ENOBUFS).
    pub fn recv_many(&self, bufs: &mut [Vec<u8>], nonblocking: bool) -> io::Result<Vec<usize>> {
        let flags = if nonblocking {
            MsgFlags::MSG_DONTWAIT
        } else {
            // Block for the first datagram only, then take what is there.
            MsgFlags::MSG_WAITFORONE
        };
        let mut slices: Vec<[std::io::IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [std::io::IoSliceMut::new(b.as_mut_slice())])
            .collect();
        let mut headers =
            nix::sys::socket::MultiHeaders::<NetlinkAddr>::preallocate(slices.len(), None);
        match nix::sys::socket::recvmmsg(
            self.fd.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            flags,
            None,
        ) {
            Ok(results) => Ok(results.map(|m| m.bytes).collect()),
            Err(Errno::EAGAIN | Errno::EINTR | Errno::ENOBUFS) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for QueueSocket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn open_socket() -> io::Result<OwnedFd> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER)?;
    let timeout = TimeVal::new(
        0,
        i64::try_from(BIND_TIMEOUT.as_micros()).expect("short timeout"),
    );
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    // Port id 0: the kernel picks a unique one.
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    Ok(fd)
}

#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;

    /// What libnetfilter_queue's `nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, 7)` followed by
    /// `nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND)` writes (examples/nf-queue.c),
    /// except for NLM_F_ACK, which we add to learn about EBUSY.
    #[test]
    fn bind_message_starts_like_libnetfilter_queue_bind() {
        let config = QueueConfig {
            copy_range: 64,
            copy_mode: NFQNL_COPY_PACKET,
            max_len: 4096,
            flags: NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO,
        };
        let message = bind_message(7, &config);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            // nlmsghdr: len 64, type 0x0302 (queue subsystem, CONFIG), flags REQUEST|ACK,
            // seq 0, pid 0
            64, 0, 0, 0,   0x02, 0x03,   0x05, 0x00,   0, 0, 0, 0,   0, 0, 0, 0,
            // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id = htons(7)
            0, 0, 0, 7,
            // NFQA_CFG_CMD (len 8): command BIND, pad, pf = htons(AF_INET)
            8, 0, 1, 0,   1, 0, 0, 2,
            // NFQA_CFG_PARAMS (len 9, padded to 12): copy_range = htonl(64), mode PACKET
            9, 0, 2, 0,   0, 0, 0, 64,   2, 0, 0, 0,
            // NFQA_CFG_QUEUE_MAXLEN: htonl(4096)
            8, 0, 3, 0,   0, 0, 0x10, 0,
            // NFQA_CFG_FLAGS: htonl(FAIL_OPEN | GSO)
            8, 0, 5, 0,   0, 0, 0, 5,
            // NFQA_CFG_MASK: the same bits
            8, 0, 4, 0,   0, 0, 0, 5,
        ];
        assert_eq!(message, expected);
    }

    /// `nfq_nlmsg_put(buf, NFQNL_MSG_VERDICT, 7)` + `nfq_nlmsg_verdict_put(nlh, 0x01020304,
    /// NF_ACCEPT)`, byte for byte.
    #[test]
    fn verdict_message_matches_libnetfilter_queue() {
        let mut buf = Vec::new();
        push_verdict(&mut buf, 7, 0x0102_0304, Verdict::Accept);
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            32, 0, 0, 0,   0x01, 0x03,   0x01, 0x00,   0, 0, 0, 0,   0, 0, 0, 0,
            0, 0, 0, 7,
            // NFQA_VERDICT_HDR: verdict = htonl(NF_ACCEPT), id = htonl(0x01020304)
            12, 0, 2, 0,   0, 0, 0, 1,   1, 2, 3, 4,
        ];
        assert_eq!(buf, expected);
        assert_eq!(buf.len(), VERDICT_MESSAGE_LEN);
    }

    /// `nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, 7)` + `nfq_nlmsg_cfg_put_qmaxlen(nlh, 2048)` +
    /// the flags and mask as `mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(..))` writes them.
    #[test]
    fn reconfigure_message_matches_libnetfilter_queue() {
        let config = QueueConfig {
            copy_range: 64,
            copy_mode: NFQNL_COPY_PACKET,
            max_len: 2048,
            flags: NFQA_CFG_F_FAIL_OPEN,
        };
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            44, 0, 0, 0,   0x02, 0x03,   0x01, 0x00,   0, 0, 0, 0,   0, 0, 0, 0,
            0, 0, 0, 7,
            8, 0, 3, 0,   0, 0, 0x08, 0,
            8, 0, 5, 0,   0, 0, 0, 1,
            8, 0, 4, 0,   0, 0, 0, 1,
        ];
        assert_eq!(reconfigure_message(7, &config), expected);
    }

    /// `nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, 7)` alone, with NLM_F_ACK added.
    #[test]
    fn the_wake_message_is_an_empty_config_asking_for_an_ack() {
        #[rustfmt::skip]
        let expected: Vec<u8> = vec![
            20, 0, 0, 0,   0x02, 0x03,   0x05, 0x00,   0, 0, 0, 0,   0, 0, 0, 0,
            0, 0, 0, 7,
        ];
        assert_eq!(wake_message(7), expected);
    }

    #[test]
    fn verdicts_concatenate_into_one_datagram() {
        let mut buf = Vec::new();
        push_verdict(&mut buf, 300, 1, Verdict::Drop);
        push_verdict(&mut buf, 300, 2, Verdict::Accept);
        assert_eq!(buf.len(), 2 * VERDICT_MESSAGE_LEN);
        // res_id = htons(300) in both, NF_DROP then NF_ACCEPT.
        assert_eq!(&buf[18..20], &[0x01, 0x2c]);
        assert_eq!(&buf[24..28], &[0, 0, 0, 0]);
        assert_eq!(&buf[32 + 18..32 + 20], &[0x01, 0x2c]);
        assert_eq!(&buf[32 + 24..32 + 28], &[0, 0, 0, 1]);
    }

    /// A packet message as the kernel builds it (nfqnl_build_packet_message): PACKET_HDR first,
    /// then interface indexes, and an unpadded NFQA_PAYLOAD last.
    #[test]
    fn packet_messages_yield_their_queue_and_id() {
        #[rustfmt::skip]
        let mut message: Vec<u8> = vec![
            0, 0, 0, 0,   0x00, 0x03,   0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
            // nfgenmsg: NFPROTO_IPV4 (2), version 0, queue 300
            2, 0, 0x01, 0x2c,
            // NFQA_PACKET_HDR (len 11, padded): id 0x0a0b0c0d, hw_protocol 0x0800, hook 0
            11, 0, 1, 0,   0x0a, 0x0b, 0x0c, 0x0d,   0x08, 0x00, 0, 0,
            // NFQA_IFINDEX_INDEV: 5
            8, 0, 5, 0,   0, 0, 0, 5,
            // NFQA_PAYLOAD (len 7, no padding at the end of the message)
            7, 0, 10, 0,   0x45, 0x00, 0x00,
        ];
        let len = message.len() as u32;
        message[..4].copy_from_slice(&len.to_ne_bytes());
        // Two messages in one datagram: the first padded to 4 bytes.
        let mut datagram = message.clone();
        datagram.resize(datagram.len().next_multiple_of(4), 0);
        datagram.extend_from_slice(&message);
        assert_eq!(
            parse(&datagram),
            vec![
                Incoming::Packet {
                    queue: 300,
                    id: 0x0a0b_0c0d
                };
                2
            ]
        );
    }

    #[test]
    fn errors_and_acks_are_recognised() {
        #[rustfmt::skip]
        let ebusy: Vec<u8> = vec![
            36, 0, 0, 0,   0x02, 0x00,   0, 0,   0, 0, 0, 0,   0, 0, 0, 0,
            // error = -EBUSY (-16), then the offending request's header
            0xf0, 0xff, 0xff, 0xff,
            68, 0, 0, 0,   0x02, 0x03,   0x05, 0x00,   0, 0, 0, 0,   0, 0, 0, 0,
        ];
        assert_eq!(parse(&ebusy), vec![Incoming::Ack { errno: 16 }]);
        let mut ack = ebusy.clone();
        ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(parse(&ack), vec![Incoming::Ack { errno: 0 }]);
    }

    #[test]
    fn truncated_or_garbage_datagrams_yield_nothing() {
        assert_eq!(parse(&[]), vec![]);
        assert_eq!(parse(&[1, 2, 3]), vec![]);
        // Length field larger than the datagram.
        let mut bad = vec![0u8; 16];
        bad[..4].copy_from_slice(&100u32.to_ne_bytes());
        assert_eq!(parse(&bad), vec![]);
    }

    #[test]
    fn queue_length_scales_with_delay_within_bounds() {
        assert_eq!(queue_max_len(Duration::ZERO), 10_000);
        assert_eq!(queue_max_len(Duration::from_millis(50)), 15_000);
        assert_eq!(queue_max_len(Duration::from_millis(200)), 30_000);
        assert_eq!(queue_max_len(Duration::from_secs(3600)), 1 << 18);
    }
}
