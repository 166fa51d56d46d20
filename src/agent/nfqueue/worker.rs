//! The delay/verdict loop of one queue: a reader thread around one bound [`QueueSocket`], and
//! the agent's one release thread (see [`super::release`]) shared by every queue.
//!
//! - The reader blocks on the socket, decides each packet's [`Fate`] as it arrives (arrival =
//!   when we read it, microseconds after the kernel queued it), issues DROP and zero-delay
//!   ACCEPT verdicts at once (batched per burst of reads), and pushes delayed packets onto the
//!   queue's heap, asking the release thread to wake when the earliest is due.
//! - The release thread sleeps until the earliest release time of all queues (a condvar wait:
//!   futex timeouts have microsecond resolution, unlike `SO_RCVTIMEO` or `poll`'s
//!   milliseconds) and sends ACCEPT for every due packet of a queue in one datagram.
//!
//! A releaser thread per queue, as before, made an abort of 500 queued latencies stop 1,000
//! threads at once (two queues each on two CPUs): on two cores their wake-ups and exits took
//! most of the agent's revert pass (0.13-0.23 s of it). Stopping a worker now sends its
//! verdicts from the caller's thread and joins nothing.
//!
//! Order: packets are released by release time, so with jitter a later packet can overtake an
//! earlier one, exactly as netem's time-sorted queue does; without jitter order is kept.
//!
//! Guarantees: stopping a worker releases (ACCEPTs) every packet it holds, including those still
//! unread in the socket, before the socket closes; closing a socket with packets outstanding
//! would make the kernel drop them. A worker that dies with the agent (SIGKILL) leaves them to
//! the kernel, which drops the few in flight; new packets then bypass the queue
//! (`--queue-bypass`).

use crate::agent::closer;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::impair::{Fate, Impairer, Impairment};
use super::netlink::{
    Incoming, QueueConfig, QueueSocket, VERDICT_MESSAGE_LEN, Verdict, parse, push_verdict,
    reconfigure_message, wake_message,
};
use super::release;

/// At most this many verdicts per datagram (32 bytes each).
const VERDICTS_PER_SEND: usize = 1024;
/// At most this many datagrams read before the reader flushes its immediate verdicts.
const READS_PER_BURST: usize = 256;
/// Datagrams per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// Room for one packet message (metadata only: a few hundred bytes; GSO packets' too).
const RECV_SIZE: usize = 2048;

/// Packet counts of one queue since its worker started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets read from the queue.
    pub received: AtomicU64,
    /// Packets released after a delay.
    pub delayed: AtomicU64,
    /// Packets dropped (loss).
    pub dropped: AtomicU64,
    /// Requests the kernel refused (a verdict for an unknown packet id, for example); should
    /// stay 0.
    pub errors: AtomicU64,
}

#[derive(Debug)]
struct Schedule {
    /// (release time, arrival order, packet id)
    heap: BinaryHeap<Reverse<(Instant, u64, u32)>>,
    next_seq: u64,
    /// The release time the release thread will come back for (its alarm): a reader asks for
    /// an alarm only for an earlier one, and an alarm for another time is stale.
    armed: Option<Instant>,
    /// Set once the worker stopped and released everything: the reader accepts at once from
    /// then on.
    closed: bool,
}

#[derive(Debug)]
pub(super) struct Shared {
    socket: QueueSocket,
    impairer: Mutex<Impairer>,
    schedule: Mutex<Schedule>,
    stop: AtomicBool,
    counters: Counters,
}

/// A running worker; [`Worker::stop`] (or drop) ends it.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    /// The reader, until stopped (then joined off the caller's path).
    reader: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn start(socket: QueueSocket, impairment: Impairment) -> io::Result<Self> {
        let queue = socket.queue();
        let shared = Arc::new(Shared {
            socket,
            impairer: Mutex::new(Impairer::new(impairment)),
            schedule: Mutex::new(Schedule {
                heap: BinaryHeap::new(),
                next_seq: 0,
                armed: None,
                closed: false,
            }),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        release::start()?;
        let reading = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name(format!("nfq{queue}-rd"))
            .spawn(move || read_loop(&reading))?;
        Ok(Self {
            shared,
            reader: Some(reader),
        })
    }

    pub fn queue(&self) -> u16 {
        self.shared.socket.queue()
    }

    /// Applies new parameters to packets from now on.
    pub fn set_impairment(&self, impairment: Impairment) {
        lock(&self.shared.impairer).set(impairment);
    }

    pub fn impairment(&self) -> Impairment {
        lock(&self.shared.impairer).impairment().clone()
    }

    /// Changes the queue's length (for a longer delay) while the worker runs.
    pub fn configure(&self, config: &QueueConfig) -> io::Result<()> {
        self.shared
            .socket
            .send(&reconfigure_message(self.queue(), config))
    }

    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Releases every delayed packet and returns once they are released. The reader (woken by
    /// the kernel's answer to a request sent for that; it then accepts whatever is still
    /// queued) and the socket, whose close waits for the kernel, finish in the background.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Releases every delayed packet now and makes the reader accept whatever comes from now
    /// on: a pass that stops many workers does this for all of them first, and then
    /// [`stop`](Self::stop)s each. Only once no packet can be queued to it any more.
    pub fn begin_stop(&self) {
        release_all(&self.shared);
    }

    fn shutdown(&mut self) {
        let Some(reader) = self.reader.take() else {
            return;
        };
        release_all(&self.shared);
        closer::drop_later(Lingering {
            reader: Some(reader),
            shared: Arc::clone(&self.shared),
        });
    }
}

/// A stopped worker's reader and its socket, woken, joined and closed off the caller's path.
struct Lingering {
    reader: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        // Joined before the socket goes (with the last `Shared`): it accepts what is still
        // unread first.
        if let Some(reader) = self.reader.take() {
            wake_reader(&self.shared);
            let _ = reader.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in one thread must not stop the other from releasing packets.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn send_verdicts(shared: &Shared, verdicts: &[(u32, Verdict)]) {
    let queue = shared.socket.queue();
    for chunk in verdicts.chunks(VERDICTS_PER_SEND) {
        let mut buf = Vec::with_capacity(chunk.len() * VERDICT_MESSAGE_LEN);
        for &(id, verdict) in chunk {
            push_verdict(&mut buf, queue, id, verdict);
        }
        if let Err(error) = shared.socket.send(&buf) {
            tracing::warn!(queue, %error, "cannot send nfqueue verdicts");
        }
    }
}

fn read_loop(shared: &Arc<Shared>) {
    let mut rng = SmallRng::from_os_rng();
    // Metadata-only packet messages are small: a batch of them per system call.
    let mut bufs: Vec<Vec<u8>> = (0..RECV_BATCH).map(|_| vec![0u8; RECV_SIZE]).collect();
    let mut immediate: Vec<(u32, Verdict)> = Vec::with_capacity(READS_PER_BURST);
    let mut delayed: Vec<(Instant, u32)> = Vec::with_capacity(READS_PER_BURST);
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        // Block for the first batch of a burst; then take what is already there. When
        // stopping, drain without blocking and accept everything.
        for read in 0..READS_PER_BURST / RECV_BATCH {
            let lens = match shared.socket.recv_many(&mut bufs, stopping || read > 0) {
                Ok(lens) if lens.is_empty() => break,
                Ok(lens) => lens,
                Err(error) => {
                    tracing::error!(queue = shared.socket.queue(), %error, "nfqueue read failed");
                    break;
                }
            };
            let full = lens.len() == RECV_BATCH;
            let now = Instant::now();
            for (buf, len) in bufs.iter().zip(lens) {
                for message in parse(&buf[..len]) {
                    match message {
                        Incoming::Packet { id, .. } => {
                            shared.counters.received.fetch_add(1, Ordering::Relaxed);
                            let fate = if stopping {
                                Fate::Release(std::time::Duration::ZERO)
                            } else {
                                lock(&shared.impairer).fate(&mut rng)
                            };
                            match fate {
                                Fate::Drop => {
                                    shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                                    immediate.push((id, Verdict::Drop));
                                }
                                Fate::Release(delay) if delay.is_zero() => {
                                    immediate.push((id, Verdict::Accept));
                                }
                                Fate::Release(delay) => delayed.push((now + delay, id)),
                            }
                        }
                        Incoming::Ack { errno: 0 } | Incoming::Other => {}
                        Incoming::Ack { errno } => {
                            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(
                                queue = shared.socket.queue(),
                                error = %io::Error::from_raw_os_error(errno),
                                "nfqueue refused a request"
                            );
                        }
                    }
                }
            }
            if !full {
                break;
            }
        }
        if !delayed.is_empty() {
            let mut schedule = lock(&shared.schedule);
            if schedule.closed {
                immediate.extend(delayed.drain(..).map(|(_, id)| (id, Verdict::Accept)));
            } else {
                for (at, id) in delayed.drain(..) {
                    let seq = schedule.next_seq;
                    schedule.next_seq += 1;
                    schedule.heap.push(Reverse((at, seq, id)));
                    shared.counters.delayed.fetch_add(1, Ordering::Relaxed);
                }
                // The release thread is due back for an earlier packet already, otherwise.
                let arm = schedule
                    .heap
                    .peek()
                    .map(|Reverse((at, _, _))| *at)
                    .filter(|at| schedule.armed.is_none_or(|armed| *at < armed));
                if arm.is_some() {
                    schedule.armed = arm;
                }
                drop(schedule);
                if let Some(at) = arm {
                    release::wake_at(at, shared);
                }
            }
        }
        if !immediate.is_empty() {
            send_verdicts(shared, &immediate);
            immediate.clear();
        }
        if stopping {
            return;
        }
    }
}

/// For the release thread's alarm set for `alarm`: sends ACCEPT for every packet of `shared`
/// due at `now`, in release order, and returns when its next one is due, to set the next
/// alarm. `None` when nothing is left, the worker stopped, or the alarm is stale (another
/// one, earlier, is the queue's).
pub(super) fn release_due(shared: &Shared, alarm: Instant, now: Instant) -> Option<Instant> {
    let mut schedule = lock(&shared.schedule);
    if schedule.closed || schedule.armed != Some(alarm) {
        return None;
    }
    let mut due = Vec::new();
    while let Some(Reverse((at, _, id))) = schedule.heap.peek().copied() {
        if at > now {
            break;
        }
        schedule.heap.pop();
        due.push((id, Verdict::Accept));
    }
    let next = schedule.heap.peek().map(|Reverse((at, _, _))| *at);
    schedule.armed = next;
    drop(schedule);
    send_verdicts(shared, &due);
    next
}

/// Stops the worker's delaying: every packet it holds is accepted now, in release order, and
/// the reader accepts whatever it reads from now on (and then leaves).
fn release_all(shared: &Shared) {
    let mut schedule = lock(&shared.schedule);
    // Under the schedule lock: the reader decides between holding a packet and accepting it
    // under the same lock, so no packet is held after this.
    shared.stop.store(true, Ordering::SeqCst);
    schedule.closed = true;
    let mut due = Vec::with_capacity(schedule.heap.len());
    while let Some(Reverse((_, _, id))) = schedule.heap.pop() {
        due.push((id, Verdict::Accept));
    }
    drop(schedule);
    send_verdicts(shared, &due);
}

/// Wakes the reader of a stopped worker, which blocks until something comes: the kernel's ACK
/// of an empty request does (or, if the socket is full, the overflow's ENOBUFS). Sent on the
/// closer's thread, one reader after another: sent by the stop itself, an abort of 500
/// latencies woke 1,000 readers at once in the middle of its revert pass.
fn wake_reader(shared: &Shared) {
    let queue = shared.socket.queue();
    if let Err(error) = shared.socket.send(&wake_message(queue)) {
        tracing::warn!(queue, %error, "cannot wake the nfqueue reader; it stops with the next packet");
    }
}
