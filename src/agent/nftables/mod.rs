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
pub use wire::Msg;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::agent::closer;
use crate::agent::netns::{Netns, NetnsId};

/// Runs `work` with a socket in `ns`: the namespace's kept socket (see [`keep_open`]) or its
/// lingering one (see [`LINGER`]) on the calling thread, or a new one opened on a thread
/// inside the namespace, which then lingers.
pub fn with_socket<R: Send>(
    ns: &Netns,
    work: impl FnOnce(&mut NftSocket) -> Result<R, NftError> + Send,
) -> io::Result<R> {
    let id = ns.id()?;
    let kept = lock(kept()).get(&id).map(|k| Arc::clone(&k.socket));
    if let Some(slot) = kept {
        let mut slot = lock(&slot);
        if slot.is_none() {
            *slot = Some(ns.run(NftSocket::open)??);
        }
        let socket = slot.as_mut().expect("opened above");
        let result = work(socket);
        if let Err(NftError::Io(_)) = &result {
            // Unknown state (the rest of a dump may still come): a fresh socket next time.
            if let Some(old) = slot.take() {
                closer::drop_later(old);
            }
        }
        return result.map_err(io::Error::from);
    }
    let reused = lock(idle()).remove(&id);
    let (result, socket) = match reused {
        Some(Idle { mut socket, .. }) => {
            let result = work(&mut socket);
            (result, socket)
        }
        None => ns.run(|| -> io::Result<_> {
            let mut socket = NftSocket::open()?;
            let result = work(&mut socket);
            Ok((result, socket))
        })??,
    };
    match &result {
        Err(NftError::Io(_)) => closer::drop_later(socket),
        _ => linger(id, socket),
    }
    result.map_err(io::Error::from)
}

/// How long a namespace's socket stays open after its last use. A close right after a
/// transaction holds the namespace's commit mutex for a grace period (see [`closer`]), so the
/// next transaction there (the revert after an apply, the second fault on one pod) would wait
/// for it; a socket that lingers is reused instead and closed once the namespace goes quiet.
/// An open socket keeps its namespace alive, so no longer than this after a pod is gone.
const LINGER: Duration = Duration::from_secs(3);

struct Idle {
    socket: NftSocket,
    since: Instant,
}

fn idle() -> &'static Mutex<HashMap<NetnsId, Idle>> {
    static IDLE: OnceLock<Mutex<HashMap<NetnsId, Idle>>> = OnceLock::new();
    IDLE.get_or_init(Mutex::default)
}

/// Keeps `socket` for the next transaction in its namespace, for [`LINGER`] at most.
fn linger(id: NetnsId, socket: NftSocket) {
    static REAPER: OnceLock<bool> = OnceLock::new();
    let reaping = *REAPER.get_or_init(|| {
        std::thread::Builder::new()
            .name("fl-nft-linger".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(LINGER / 3);
                    close_quiet_sockets(LINGER);
                }
            })
            .is_ok()
    });
    if !reaping {
        closer::drop_later(socket);
        return;
    }
    let displaced = lock(idle()).insert(
        id,
        Idle {
            socket,
            since: Instant::now(),
        },
    );
    if let Some(displaced) = displaced {
        closer::drop_later(displaced.socket);
    }
}

/// Closes (in the background) every lingering socket now: the next transaction in each
/// namespace opens a fresh one, as one far apart from the last does.
pub fn close_lingering_sockets() {
    close_quiet_sockets(Duration::ZERO);
}

/// Closes (in the background) every lingering socket unused for `quiet` or longer.
fn close_quiet_sockets(quiet: Duration) {
    let mut idle = lock(idle());
    let quiet_ones: Vec<NetnsId> = idle
        .iter()
        .filter(|(_, i)| i.since.elapsed() >= quiet)
        .map(|(id, _)| *id)
        .collect();
    for id in quiet_ones {
        if let Some(gone) = idle.remove(&id) {
            closer::drop_later(gone.socket);
        }
    }
}

/// Commits `batch` in `ns` as one transaction of its own, or, in a namespace with a kept
/// socket, merged with the batches of other threads that arrive meanwhile. Why merge: a
/// transaction holding an xtables expression (the `NFQUEUE` target, the `physdev` match) waits
/// in the kernel for the destroy work of the previous transactions, an RCU grace period
/// (nft_compat's wait for destructors), under the namespace's commit mutex. One transaction per
/// pod made the node's namespace a queue of grace periods; merged, the pods applied together
/// share one. A merged batch the kernel refuses is committed again batch by batch, so each
/// caller gets its own answer and one bad batch fails only itself.
pub fn commit(ns: &Netns, batch: Vec<Msg>) -> io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let id = ns.id()?;
    let group = lock(kept()).get(&id).map(|k| Arc::clone(&k.group));
    let Some(group) = group else {
        return with_socket(ns, |socket| socket.commit(&batch));
    };
    let ticket = Arc::new(Ticket::default());
    let leading = {
        let mut state = lock(&group.state);
        state.pending.push((batch, Arc::clone(&ticket)));
        !std::mem::replace(&mut state.committing, true)
    };
    if leading {
        commit_pending(ns, &group);
    }
    ticket.wait()
}

/// Commits what is pending, merged, until nothing is.
fn commit_pending(ns: &Netns, group: &Group) {
    loop {
        let taken = {
            let mut state = lock(&group.state);
            if state.pending.is_empty() {
                state.committing = false;
                return;
            }
            let mut size = 0;
            let mut count = 0;
            for (batch, _) in &state.pending {
                size += batch.iter().map(Msg::len).sum::<usize>();
                count += 1;
                if size >= MERGED_BYTES {
                    break;
                }
            }
            state.pending.drain(..count).collect::<Vec<_>>()
        };
        let (batches, tickets): (Vec<Vec<Msg>>, Vec<Arc<Ticket>>) = taken.into_iter().unzip();
        for (ticket, answer) in tickets.iter().zip(commit_merged(ns, &batches)) {
            ticket.answer(answer);
        }
    }
}

/// Commits `batches` as one transaction, or, when the kernel refuses that, one by one: an
/// answer per batch, each batch's own.
pub fn commit_merged(ns: &Netns, batches: &[Vec<Msg>]) -> Vec<io::Result<()>> {
    let merged: Vec<Msg> = batches.iter().flatten().cloned().collect();
    match with_socket(ns, |socket| socket.commit(&merged)) {
        Ok(()) => batches.iter().map(|_| Ok(())).collect(),
        Err(error) if batches.len() == 1 => vec![Err(error)],
        Err(_) => batches
            .iter()
            .map(|batch| with_socket(ns, |socket| socket.commit(batch)))
            .collect(),
    }
}

/// A merged transaction's size at most (the socket buffers hold 4 MiB).
const MERGED_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
}

#[derive(Default)]
struct GroupState {
    pending: Vec<(Vec<Msg>, Arc<Ticket>)>,
    /// A thread is committing (and will take what is pending).
    committing: bool,
}

/// One caller's batch's answer.
#[derive(Default)]
struct Ticket {
    answer: Mutex<Option<io::Result<()>>>,
    answered: Condvar,
}

impl Ticket {
    fn answer(&self, result: io::Result<()>) {
        *lock(&self.answer) = Some(result);
        self.answered.notify_all();
    }

    fn wait(&self) -> io::Result<()> {
        let mut answer = lock(&self.answer);
        loop {
            if let Some(result) = answer.take() {
                return result;
            }
            answer = self
                .answered
                .wait(answer)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

/// Keeps a socket open in `ns` for as long as the returned guard lives, for a namespace that
/// sees a transaction per apply and per revert (the node's, where every pod's steering
/// lives): no close, so no wait for the kernel, on its path. Not for a pod's namespace: an
/// open socket keeps its namespace alive.
pub fn keep_open(ns: &Netns) -> io::Result<KeptSocket> {
    let id = ns.id()?;
    let mut all = lock(kept());
    all.entry(id)
        .or_insert_with(|| Kept {
            holders: 0,
            socket: Arc::new(Mutex::new(None)),
            group: Arc::default(),
        })
        .holders += 1;
    Ok(KeptSocket { id })
}

/// Keeps its namespace's socket open until dropped.
#[derive(Debug)]
pub struct KeptSocket {
    id: NetnsId,
}

impl Drop for KeptSocket {
    fn drop(&mut self) {
        let mut all = lock(kept());
        let Some(kept) = all.get_mut(&self.id) else {
            return;
        };
        kept.holders -= 1;
        if kept.holders == 0
            && let Some(kept) = all.remove(&self.id)
        {
            closer::drop_later(kept.socket);
        }
    }
}

struct Kept {
    holders: usize,
    socket: Arc<Mutex<Option<NftSocket>>>,
    group: Arc<Group>,
}

fn kept() -> &'static Mutex<HashMap<NetnsId, Kept>> {
    static KEPT: OnceLock<Mutex<HashMap<NetnsId, Kept>>> = OnceLock::new();
    KEPT.get_or_init(Mutex::default)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
