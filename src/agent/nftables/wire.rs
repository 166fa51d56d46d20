//! The nf_tables netlink wire format: message headers, attributes, nests and batches, laid out
//! exactly as libnftnl lays them out for `nft` (pinned by the fixtures in
//! `tests/fixtures/nft/`).
//!
//! ```text
//! nlmsghdr  { len: u32, type: u16 = NFNL_SUBSYS_NFTABLES << 8 | msg, flags: u16, seq, pid }
//! nfgenmsg  { family: u8, version: u8 (0), res_id: be16 (0; the subsystem in batch markers) }
//! nlattr*   { len: u16, type: u16 (| NLA_F_NESTED), payload, padding to 4 bytes }
//! ```
//!
//! Header fields are in host byte order, attribute payloads (numbers) in network byte order,
//! except where the kernel says otherwise (register values are raw bytes).

pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NFGENMSG_LEN: usize = 4;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
pub(crate) const NLM_F_ACK: u16 = 0x4;
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
pub(crate) const NLM_F_APPEND: u16 = 0x800;
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type bits that are flags (nested, byte order), not the type.
pub(crate) const NLA_TYPE_MASK: u16 = 0x3fff;

pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;

// enum nf_tables_msg_types
pub(crate) const NFT_MSG_NEWTABLE: u16 = 0;
pub(crate) const NFT_MSG_GETTABLE: u16 = 1;
pub(crate) const NFT_MSG_DELTABLE: u16 = 2;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
pub(crate) const NFT_MSG_NEWRULE: u16 = 6;
pub(crate) const NFT_MSG_GETRULE: u16 = 7;
pub(crate) const NFT_MSG_NEWSET: u16 = 9;
pub(crate) const NFT_MSG_NEWSETELEM: u16 = 12;

// NFTA_TABLE_*
pub(crate) const NFTA_TABLE_NAME: u16 = 1;
pub(crate) const NFTA_TABLE_FLAGS: u16 = 2;
pub(crate) const NFTA_TABLE_USERDATA: u16 = 6;
// NFTA_CHAIN_*
pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
pub(crate) const NFTA_CHAIN_HOOK: u16 = 4;
pub(crate) const NFTA_CHAIN_POLICY: u16 = 5;
pub(crate) const NFTA_CHAIN_TYPE: u16 = 7;
// NFTA_HOOK_*
pub(crate) const NFTA_HOOK_HOOKNUM: u16 = 1;
pub(crate) const NFTA_HOOK_PRIORITY: u16 = 2;
pub(crate) const NFTA_HOOK_DEV: u16 = 3;
// NFTA_RULE_*
pub(crate) const NFTA_RULE_TABLE: u16 = 1;
pub(crate) const NFTA_RULE_CHAIN: u16 = 2;
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
// NFTA_LIST_ELEM, NFTA_EXPR_*
pub(crate) const NFTA_LIST_ELEM: u16 = 1;
pub(crate) const NFTA_EXPR_NAME: u16 = 1;
pub(crate) const NFTA_EXPR_DATA: u16 = 2;
// NFTA_SET_*
pub(crate) const NFTA_SET_TABLE: u16 = 1;
pub(crate) const NFTA_SET_NAME: u16 = 2;
pub(crate) const NFTA_SET_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_KEY_TYPE: u16 = 4;
pub(crate) const NFTA_SET_KEY_LEN: u16 = 5;
pub(crate) const NFTA_SET_ID: u16 = 10;
pub(crate) const NFTA_SET_USERDATA: u16 = 13;
// NFTA_SET_ELEM_LIST_*, NFTA_SET_ELEM_*
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
pub(crate) const NFTA_SET_ELEM_USERDATA: u16 = 6;
// NFTA_DATA_*, NFTA_VERDICT_*
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
pub(crate) const NFTA_DATA_VERDICT: u16 = 2;
pub(crate) const NFTA_VERDICT_CODE: u16 = 1;
pub(crate) const NFTA_VERDICT_CHAIN: u16 = 2;

/// `NFT_SET_INTERVAL`, `NFT_SET_TIMEOUT`.
pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_TIMEOUT: u32 = 0x10;
/// `NFT_SET_ELEM_INTERVAL_END`.
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

/// One netlink message being built; attributes are appended in call order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    buf: Vec<u8>,
}

/// An open nest: the offset of its attribute header.
#[must_use = "close the nest with Msg::end"]
pub(crate) struct Nest(usize);

impl Msg {
    /// A message of nf_tables type `msg` for `family`, with `flags` (REQUEST is added).
    pub(crate) fn new(msg: u16, family: u8, flags: u16) -> Self {
        Self::raw(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            family,
            flags | NLM_F_REQUEST,
            0,
        )
    }

    /// A batch marker (`NFNL_MSG_BATCH_BEGIN` / `_END`): family 0, res_id the subsystem.
    pub(crate) fn batch_marker(kind: u16) -> Self {
        Self::raw(kind, 0, NLM_F_REQUEST, NFNL_SUBSYS_NFTABLES)
    }

    fn raw(kind: u16, family: u8, flags: u16, res_id: u16) -> Self {
        let mut buf = vec![0; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&flags.to_ne_bytes());
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Self { buf }
    }

    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + payload.len()).expect("netlink attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    /// A NUL-terminated string.
    pub(crate) fn str(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut payload = Vec::with_capacity(value.len() + 1);
        payload.extend_from_slice(value.as_bytes());
        payload.push(0);
        self.attr(kind, &payload)
    }

    /// A 32-bit number in network byte order.
    pub(crate) fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// A 64-bit number in network byte order.
    pub(crate) fn be64(&mut self, kind: u16, value: u64) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    pub(crate) fn begin(&mut self, kind: u16) -> Nest {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        Nest(start)
    }

    pub(crate) fn end(&mut self, nest: Nest) {
        let len = u16::try_from(self.buf.len() - nest.0).expect("netlink nest under 64 KiB");
        self.buf[nest.0..nest.0 + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// Bytes so far (to keep a message under the attribute size limit).
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The message on the wire with its length and `seq`.
    pub(crate) fn encode(&self, seq: u32) -> Vec<u8> {
        let mut bytes = self.buf.clone();
        let len = u32::try_from(bytes.len()).expect("netlink message under 4 GiB");
        bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        bytes
    }

    /// The message type without the subsystem.
    pub(crate) fn msg_type(&self) -> u16 {
        u16::from_ne_bytes([self.buf[4], self.buf[5]]) & 0xff
    }
}

/// Builds the `nftnl_udata` TLV list libnftnl writes into `*_USERDATA` attributes: one byte type,
/// one byte length, the value.
pub(crate) fn udata(items: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, value) in items {
        out.push(*kind);
        out.push(u8::try_from(value.len()).expect("userdata item under 256 bytes"));
        out.extend_from_slice(value);
    }
    out
}

/// A batch on the wire: BEGIN, the messages, END, with sequence numbers from `first_seq` on.
/// Returns the bytes and the sequence number of each message (in order), so errors can be
/// attributed.
pub(crate) fn encode_batch(messages: &[Msg], first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut out = Vec::new();
    let mut seqs = Vec::with_capacity(messages.len());
    out.extend(Msg::batch_marker(NFNL_MSG_BATCH_BEGIN).encode(first_seq));
    for (i, msg) in messages.iter().enumerate() {
        let seq = first_seq.wrapping_add(1 + u32::try_from(i).expect("fewer than 4G messages"));
        seqs.push(seq);
        out.extend(msg.encode(seq));
    }
    let end = first_seq.wrapping_add(1 + u32::try_from(messages.len()).expect("few messages"));
    out.extend(Msg::batch_marker(NFNL_MSG_BATCH_END).encode(end));
    (out, seqs)
}

/// Walks the attributes of `buf`: (type without flags, payload).
pub(crate) fn attributes(mut rest: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        Some((kind, payload))
    })
}

/// The first attribute of type `kind`.
pub(crate) fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(buf).find(|(k, _)| *k == kind).map(|(_, p)| p)
}

/// A NUL-terminated string payload.
pub(crate) fn as_str(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

pub(crate) fn as_be64(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Splits a datagram into messages: (type, flags, seq, body after the 16-byte header).
pub(crate) fn messages(mut rest: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
    let mut out = Vec::new();
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let flags = u16::from_ne_bytes([rest[6], rest[7]]);
        let seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
        out.push((kind, flags, seq, &rest[NLMSG_HDRLEN..len]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}
