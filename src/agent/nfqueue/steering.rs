//! How packets reach the queues on this node: our own nftables tables with the xtables
//! NFQUEUE target, or the `iptables-restore` fallback; which of them the kernel offers is
//! probed once, in a throwaway network namespace.

use std::io;
use std::sync::OnceLock;

use super::netlink::{QueueConfig, QueueSocket};
use super::rules::{self, Family};
use super::steer::{self, Entry};
use crate::agent::netns::Netns;
use crate::agent::nft::{self, Comment};
use crate::agent::nftables::AddrFamily;
use crate::agent::scope::Scope;
use crate::agent::tag::InjectionTag;

/// How packets are sent to the queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// Our own nftables tables with the xtables NFQUEUE target (no process, no mark).
    Nftables,
    /// `iptables-restore` chains with a `time` match: kernels without nft_compat.
    Iptables,
}

impl Steering {
    /// What this node's kernel offers, probed once in a throwaway namespace (nftables first).
    pub fn detect() -> Option<Steering> {
        static DETECTED: OnceLock<Option<Steering>> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            match probe(Steering::Nftables) {
                Ok(()) => return Some(Steering::Nftables),
                Err(error) => {
                    tracing::info!(%error, "NFQUEUE through nftables (nft_compat) is not available; trying iptables")
                }
            }
            match probe(Steering::Iptables) {
                Ok(()) => Some(Steering::Iptables),
                Err(error) => {
                    tracing::info!(%error, "the nfqueue path is not available");
                    None
                }
            }
        })
    }
}

/// Whether this node can run the NFQUEUE path (either steering).
pub fn available() -> bool {
    Steering::detect().is_some()
}

/// In a throwaway network namespace: the steering's rule can be written and a queue bound.
/// Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
fn probe(steering: Steering) -> io::Result<()> {
    std::thread::spawn(move || -> io::Result<()> {
        // This thread alone moves to a new namespace, which vanishes when the thread ends.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        let ns = Netns::current()?;
        match steering {
            Steering::Nftables => {
                let tag = InjectionTag::from_uid("00000000-0000-4000-8000-000000000000")
                    .expect("a valid uid");
                let tables = steer::tables(
                    &tag,
                    &Entry::Pod(vec!["lo".into()]),
                    &Scope::default(),
                    (1, 1),
                    std::time::Duration::from_secs(1),
                    &Comment::default(),
                    &[AddrFamily::V4],
                );
                nft::replace(&ns, &tables)?;
            }
            Steering::Iptables => {
                let chain = "FL-nfqueueprobe";
                rules::restore(
                    &ns,
                    Family::V4,
                    &format!(
                        "*{table}\n:{chain} - [0:0]\n-A {chain} -m time --datestop 2037-01-01T00:00:00 -j NFQUEUE --queue-num 1 --queue-bypass\nCOMMIT\n",
                        table = rules::TABLE
                    ),
                )?;
            }
        }
        drop(QueueSocket::open_in(
            &ns,
            1,
            &QueueConfig::for_delay(std::time::Duration::ZERO),
        )?);
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the nfqueue probe panicked"))?
}
