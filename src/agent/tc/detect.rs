//! Which qdiscs the kernel has: add one on `lo` of a throwaway network namespace and see
//! whether the kernel knows its kind.
//!
//! The probe runs on a dedicated thread that `unshare(CLONE_NEWNET)`s itself into a fresh
//! namespace (network namespaces are per thread), so nothing the machine or a pod uses is
//! touched; the namespace disappears with the thread. The kernel answers ENOENT ("Specified
//! qdisc kind is unknown") for a kind it has no scheduler (and no loadable module) for; we
//! checked on 6.18 that this is ENOENT, not EINVAL. Any other failure (no CAP_SYS_ADMIN, no
//! netlink) also counts as absent, with a warning: the agent cannot use the qdisc either way.

use std::io;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};

use super::htb::write_root_options;
use super::netem::Netem;
use super::netlink::{Message, NetlinkError, RouteSocket, TC_H_ROOT, TcHeader, Verb};
use super::psched::Psched;
use super::tbf::Tbf;

/// Whether the kernel has `sch_netem` (latency and loss through netem). Where it does not,
/// latency and loss take the userspace NFQUEUE path.
pub fn netem_available() -> bool {
    available("netem")
}

/// Whether the kernel has `sch_tbf` (bandwidth caps).
pub fn tbf_available() -> bool {
    available("tbf")
}

/// Whether the kernel has `sch_htb` (faults scoped to some destinations).
pub fn htb_available() -> bool {
    available("htb")
}

fn available(kind: &'static str) -> bool {
    match probe(kind) {
        Ok(present) => {
            tracing::debug!(qdisc = kind, present, "probed the kernel for a qdisc");
            present
        }
        Err(error) => {
            tracing::warn!(qdisc = kind, %error, "cannot probe for the qdisc; counting it as absent");
            false
        }
    }
}

/// Adds a `kind` root qdisc on `lo` in a fresh namespace: Ok(false) when the kernel does not
/// know the kind.
fn probe(kind: &'static str) -> io::Result<bool> {
    std::thread::spawn(move || -> io::Result<bool> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot make a throwaway network namespace to probe for {kind}: {e}"),
            )
        })?;
        let ifindex = nix::net::if_::if_nametoindex("lo")?;
        let tcm = TcHeader {
            ifindex,
            handle: super::HANDLE,
            parent: TC_H_ROOT,
            info: 0,
        };
        let what = format!("add probe {kind} qdisc on lo");
        let mut msg = Message::new_qdisc(Verb::Add, tcm, kind, what);
        match kind {
            "netem" => Netem {
                limit: 1000,
                ..Netem::default()
            }
            .write_options(&mut msg),
            // A bucket above lo's 64 KiB MTU, or the kernel logs that it is too small.
            "tbf" => Tbf {
                rate: 125_000,
                burst: 128 * 1024,
                limit: 256 * 1024,
            }
            .write_options(&mut msg, &Psched::read()),
            "htb" => write_root_options(&mut msg, 1),
            other => unreachable!("no probe for qdisc {other}"),
        }
        let mut socket = RouteSocket::open()?;
        match socket.execute(&[msg]) {
            Ok(()) => Ok(true),
            Err(NetlinkError::Refused {
                errno: Errno::ENOENT,
                ..
            }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    })
    .join()
    .map_err(|_| io::Error::other(format!("the {kind} probe thread panicked")))?
}
