//! The one place that talks to the kernel: a `NETLINK_NETFILTER` socket in the calling
//! thread's network namespace (open it inside [`Netns::run`](crate::agent::netns::Netns::run)).
//!
//! A batch is sent as `nft` sends it: no acknowledgement requested per message. The kernel
//! processes a batch inside our `sendmsg` (nfnetlink runs in the sender's context), so by the
//! time it returns, an error for any message of the batch is waiting on the socket; none means
//! the whole transaction was committed.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto,
    setsockopt, socket, sockopt,
};
use nix::sys::time::{TimeVal, TimeValLike};

use super::expr::{Family, nfqueue_numbers};
use super::table::comment_of;
use super::wire::{
    self, Msg, NFGENMSG_LEN, NFT_MSG_GETRULE, NFT_MSG_GETTABLE, NFT_MSG_NEWRULE, NFT_MSG_NEWTABLE,
    NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS,
    NFTA_RULE_TABLE, NFTA_TABLE_NAME, NFTA_TABLE_USERDATA, NLM_F_ACK, NLM_F_DUMP, NLMSG_DONE,
    NLMSG_ERROR,
};

/// The answers to a request: each message's family and attributes.
type Answers = Vec<(u8, Vec<u8>)>;

const RECV_BUFFER: usize = 256 * 1024;
/// Socket buffers large enough for a batch of a thousand-CIDR table and its errors.
const SOCKET_BUFFER: usize = 4 << 20;
const RECV_TIMEOUT_SECS: i64 = 10;

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("nf_tables refused to {what}: {errno}")]
    Refused { what: String, errno: Errno },
    #[error("nf_tables: {0}")]
    Io(#[from] io::Error),
}

impl NftError {
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NftError::Refused { errno, .. } => Some(*errno),
            NftError::Io(e) => e.raw_os_error().map(Errno::from_raw),
        }
    }
}

impl From<NftError> for io::Error {
    fn from(err: NftError) -> Self {
        match err {
            NftError::Io(e) => e,
            refused @ NftError::Refused { errno, .. } => {
                io::Error::new(io::Error::from(errno).kind(), refused.to_string())
            }
        }
    }
}

impl From<Errno> for NftError {
    fn from(errno: Errno) -> Self {
        NftError::Io(errno.into())
    }
}

/// A table found by [`NftSocket::tables`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
}

/// What faultline reads back from a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleInfo {
    pub chain: String,
    /// Packets its `counter` counted.
    pub packets: Option<u64>,
    /// The first queue and the number of queues of its `NFQUEUE` target.
    pub queues: Option<(u16, u16)>,
}

pub struct NftSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl NftSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        // Best effort: without CAP_NET_ADMIN the default sizes remain (small batches fit).
        let _ = setsockopt(&fd, sockopt::SndBufForce, &SOCKET_BUFFER);
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &SOCKET_BUFFER);
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &TimeVal::seconds(RECV_TIMEOUT_SECS),
        )?;
        let seq = u32::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() & 0xffff_ffff)
                .unwrap_or(1),
        )
        .unwrap_or(1);
        Ok(Self {
            fd,
            seq,
            buf: vec![0; RECV_BUFFER],
        })
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NftError> {
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

    /// Sends `messages` as one transaction: all of them take effect, or none.
    pub fn commit(&mut self, messages: &[Msg]) -> Result<(), NftError> {
        if messages.is_empty() {
            return Ok(());
        }
        let first = self.seq;
        self.seq = self
            .seq
            .wrapping_add(2 + u32::try_from(messages.len()).unwrap_or(u32::MAX));
        let (bytes, seqs) = wire::encode_batch(messages, first);
        self.send(&bytes)?;
        let mut refused: Option<NftError> = None;
        loop {
            let len = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
                Ok(len) => len,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            };
            for (kind, _, seq, body) in wire::messages(&self.buf[..len]) {
                // A kept socket may still hold an answer to an earlier request: only this
                // batch's count.
                let ours = seq.wrapping_sub(first) < self.seq.wrapping_sub(first);
                if kind != NLMSG_ERROR || body.len() < 4 || !ours {
                    continue;
                }
                let code = i32::from_ne_bytes(body[0..4].try_into().expect("4 bytes"));
                if code == 0 || refused.is_some() {
                    continue;
                }
                let what = seqs.iter().position(|s| *s == seq).map_or_else(
                    || "commit the batch".to_string(),
                    |i| describe(&messages[i]),
                );
                refused = Some(NftError::Refused {
                    what,
                    errno: Errno::from_raw(-code),
                });
            }
        }
        match refused {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Sends a request (a dump, or a get with an acknowledgement) and returns the bodies (after
    /// the netlink header) of the answers.
    fn dump(&mut self, msg: &Msg) -> Result<Answers, NftError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send(&msg.encode(seq))?;
        let mut out = Vec::new();
        loop {
            let len = match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::empty()) {
                Ok(len) => len,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("nf_tables did not answer a dump in {RECV_TIMEOUT_SECS}s"),
                    )
                    .into());
                }
                Err(e) => return Err(e.into()),
            };
            for (kind, _, reply_seq, body) in wire::messages(&self.buf[..len]) {
                if reply_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .unwrap_or(0);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(NftError::Refused {
                            what: "list".into(),
                            errno: Errno::from_raw(-code),
                        });
                    }
                    _ if body.len() >= NFGENMSG_LEN => {
                        out.push((body[0], body[NFGENMSG_LEN..].to_vec()));
                    }
                    _ => {}
                }
            }
        }
    }

    /// [`Self::dump`] of a request about a table that may not exist: `None` when it does not.
    fn dump_of_existing(&mut self, msg: &Msg) -> Result<Option<Answers>, NftError> {
        match self.dump(msg) {
            Ok(answers) => Ok(Some(answers)),
            Err(NftError::Refused {
                errno: Errno::ENOENT,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every table in the namespace, of every family.
    pub fn tables(&mut self) -> Result<Vec<TableInfo>, NftError> {
        let request = Msg::new(NFT_MSG_GETTABLE, 0, NLM_F_DUMP);
        Ok(self
            .dump(&request)?
            .into_iter()
            .filter_map(|(family, attrs)| {
                Some(TableInfo {
                    family: Family::from_nfproto(family)?,
                    name: wire::as_str(wire::find(&attrs, NFTA_TABLE_NAME)?),
                    comment: wire::find(&attrs, NFTA_TABLE_USERDATA).and_then(comment_of),
                })
            })
            .collect())
    }

    /// The table `name` of `family`, if there is one: asked for by name, so its cost does not
    /// grow with the other tables of the namespace (the node's holds one per injection).
    pub fn table(&mut self, family: Family, name: &str) -> Result<Option<TableInfo>, NftError> {
        let mut request = Msg::new(NFT_MSG_GETTABLE, family.nfproto(), NLM_F_ACK);
        request.str(NFTA_TABLE_NAME, name);
        let Some(answers) = self.dump_of_existing(&request)? else {
            return Ok(None);
        };
        Ok(answers.into_iter().find_map(|(nfproto, attrs)| {
            let found = wire::as_str(wire::find(&attrs, NFTA_TABLE_NAME)?);
            (nfproto == family.nfproto() && found == name).then(|| TableInfo {
                family,
                name: found,
                comment: wire::find(&attrs, NFTA_TABLE_USERDATA).and_then(comment_of),
            })
        }))
    }

    /// Every rule of every table, with its table's family and name: one dump, however many
    /// tables the namespace holds.
    pub fn all_rules(&mut self) -> Result<Vec<(Family, String, RuleInfo)>, NftError> {
        let request = Msg::new(NFT_MSG_GETRULE, 0, NLM_F_DUMP);
        Ok(self
            .dump(&request)?
            .into_iter()
            .filter_map(|(family, attrs)| {
                let table = wire::as_str(wire::find(&attrs, NFTA_RULE_TABLE)?);
                Some((Family::from_nfproto(family)?, table, parse_rule(&attrs)))
            })
            .collect())
    }

    /// The rules of one table.
    pub fn rules(&mut self, family: Family, table: &str) -> Result<Vec<RuleInfo>, NftError> {
        let mut request = Msg::new(NFT_MSG_GETRULE, family.nfproto(), NLM_F_DUMP);
        request.str(NFTA_RULE_TABLE, table);
        // No such table: no rules.
        let Some(answers) = self.dump_of_existing(&request)? else {
            return Ok(Vec::new());
        };
        Ok(answers
            .into_iter()
            .filter(|(f, attrs)| {
                *f == family.nfproto()
                    && wire::find(attrs, NFTA_RULE_TABLE)
                        .map(wire::as_str)
                        .as_deref()
                        == Some(table)
            })
            .map(|(_, attrs)| parse_rule(&attrs))
            .collect())
    }
}

fn parse_rule(attrs: &[u8]) -> RuleInfo {
    let mut info = RuleInfo {
        chain: wire::find(attrs, NFTA_RULE_CHAIN)
            .map(wire::as_str)
            .unwrap_or_default(),
        ..RuleInfo::default()
    };
    let Some(list) = wire::find(attrs, NFTA_RULE_EXPRESSIONS) else {
        return info;
    };
    for (kind, expr) in wire::attributes(list) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let name = wire::find(expr, NFTA_EXPR_NAME).map(wire::as_str);
        let data = wire::find(expr, NFTA_EXPR_DATA).unwrap_or_default();
        match name.as_deref() {
            // NFTA_COUNTER_PACKETS
            Some("counter") => info.packets = wire::find(data, 2).and_then(wire::as_be64),
            Some("target")
                if wire::find(data, 1).map(wire::as_str).as_deref() == Some("NFQUEUE") =>
            {
                info.queues = wire::find(data, 3).and_then(nfqueue_numbers);
            }
            _ => {}
        }
    }
    info
}

/// "add rule to chain X of table ip Y", from a message's type and first attributes.
fn describe(msg: &Msg) -> String {
    let bytes = msg.encode(0);
    let family = Family::from_nfproto(bytes[16]).map_or("?", Family::name);
    let attrs = &bytes[wire::NLMSG_HDRLEN + NFGENMSG_LEN..];
    let names: Vec<String> = wire::attributes(attrs)
        .take(2)
        .map(|(_, p)| wire::as_str(p))
        .collect();
    let table = names.first().cloned().unwrap_or_default();
    let second = names.get(1).cloned().unwrap_or_default();
    match msg.msg_type() {
        NFT_MSG_NEWTABLE => format!("create table {family} {table}"),
        wire::NFT_MSG_DELTABLE => format!("delete table {family} {table}"),
        wire::NFT_MSG_NEWCHAIN => format!("add chain {second} to table {family} {table}"),
        NFT_MSG_NEWRULE => format!("add a rule to chain {second} of table {family} {table}"),
        wire::NFT_MSG_NEWSET => format!("add set {second} to table {family} {table}"),
        wire::NFT_MSG_NEWSETELEM => {
            format!("add elements to set {second} of table {family} {table}")
        }
        other => format!("apply message {other} to table {family} {table}"),
    }
}
