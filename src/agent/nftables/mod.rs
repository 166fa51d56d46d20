//! nf_tables through our own netlink messages: no `nft` process on the apply or revert path.
//!
//! Every table faultline writes goes to the kernel as one batch (one transaction: all of it or
//! nothing) from a socket opened inside the target namespace. Messages are encoded byte for
//! byte as `nft` 1.0.6 (libnftnl) encodes the same ruleset, which the tests check against
//! batches captured from `nft -f` (`tests/fixtures/nft/`, `capture.sh` there); the two
//! xtables expressions nft cannot write (the `NFQUEUE` target and the `physdev` match, through
//! nft_compat) are checked against what iptables-nft sends for them.
//!
//! Why our own encoder: the tc code already speaks rtnetlink itself, so the crate has no netlink
//! dependency; `netlink-packet-netfilter` 0.4 would bring `netlink-packet-core`/`-sys` for the
//! subset we need (tables, chains, sets with timeouts, six expressions), which is ~600 lines
//! here, pinned to real captures.
//!
//! - [`wire`]: headers, attributes, batches, parsing of answers.
//! - [`expr`]: expressions and the matches faultline writes.
//! - [`table`]: a table (sets, chains, rules) and the batch that replaces it atomically.
//! - [`socket`]: commit and list.

pub mod expr;
pub mod socket;
pub mod table;
pub mod wire;

pub use expr::{AddrFamily, End, Expr, Family, Match, SetRef, Verdict};
pub use socket::{NftError, NftSocket, RuleInfo, TableInfo};
pub use table::{Elements, Hook, HookPoint, Net, Table};

use std::io;

use crate::agent::netns::Netns;

/// Opens a socket inside `ns` and runs `work` with it (on a thread inside the namespace).
pub fn with_socket<R: Send>(
    ns: &Netns,
    work: impl FnOnce(&mut NftSocket) -> Result<R, NftError> + Send,
) -> io::Result<R> {
    ns.run(|| {
        let mut socket = NftSocket::open()?;
        work(&mut socket).map_err(io::Error::from)
    })?
}

/// Whether the kernel speaks nf_tables here (a table can be listed).
pub fn available() -> bool {
    match NftSocket::open().and_then(|mut s| s.tables().map_err(io::Error::from)) {
        Ok(_) => true,
        Err(error) => {
            tracing::info!(%error, "nf_tables is not available");
            false
        }
    }
}

#[cfg(test)]
mod fixture_tests;
