//! The delay/verdict loop of one queue: two threads around one bound [`QueueSocket`].
//!
//! - The reader blocks on the socket, decides each packet's [`Fate`] as it arrives (arrival =
//!   when we read it, microseconds after the kernel queued it), issues DROP and zero-delay
//!   ACCEPT verdicts at once (batched per burst of reads), and pushes delayed packets onto a
//!   timer heap.
//! - The releaser sleeps until the earliest release time (a condvar wait: futex timeouts have
//!   microsecond resolution, unlike `SO_RCVTIMEO` or `poll`'s milliseconds) and sends ACCEPT
//!   for every due packet in one datagram.
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
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::impair::{Fate, Impairer, Impairment};
use super::netlink::{
    Incoming, QueueConfig, QueueSocket, VERDICT_MESSAGE_LEN, Verdict, parse, push_verdict,
    reconfigure_message,
};

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
    /// Set once the releaser has flushed and left: the reader accepts at once from then on.
    closed: bool,
}

#[derive(Debug)]
struct Shared {
    socket: QueueSocket,
    impairer: Mutex<Impairer>,
    schedule: Mutex<Schedule>,
    wake: Condvar,
    stop: AtomicBool,
    counters: Counters,
}

/// A running worker; [`Worker::stop`] (or drop) ends it.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
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
                closed: false,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            counters: Counters::default(),
        });
        let mut worker = Self {
            shared: Arc::clone(&shared),
            threads: Vec::with_capacity(2),
        };
        let releaser = Arc::clone(&shared);
        worker.threads.push(
            std::thread::Builder::new()
                .name(format!("nfq{queue}-rel"))
                .spawn(move || release_loop(&releaser))?,
        );
        worker.threads.push(
            std::thread::Builder::new()
                .name(format!("nfq{queue}-rd"))
                .spawn(move || read_loop(&shared))?,
        );
        Ok(worker)
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

    /// Releases every delayed packet and returns once they are released. The reader, which
    /// notices the stop when a packet comes or within the socket's read timeout (and then
    /// accepts whatever is still queued), and the socket, whose close waits for the kernel,
    /// finish in the background.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Tells the worker to release every delayed packet and stop, without waiting for it: a
    /// pass that stops many workers tells them all first, so they release at once, and then
    /// [`stop`](Self::stop)s each. Only once no packet can be queued to it any more.
    pub fn begin_stop(&self) {
        {
            // Under the schedule lock, so the releaser cannot miss the wake-up between its
            // check of `stop` and its wait.
            let _schedule = lock(&self.shared.schedule);
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.wake.notify_all();
    }

    fn shutdown(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.begin_stop();
        let mut threads = self.threads.drain(..);
        if let Some(releaser) = threads.next() {
            let _ = releaser.join();
        }
        closer::drop_later(Lingering {
            readers: threads.collect(),
            _shared: Arc::clone(&self.shared),
        });
    }
}

/// A stopped worker's reader and its socket, joined and closed off the caller's path.
struct Lingering {
    readers: Vec<JoinHandle<()>>,
    _shared: Arc<Shared>,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        for reader in self.readers.drain(..) {
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

fn read_loop(shared: &Shared) {
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
                let earliest = schedule.heap.peek().map(|Reverse((at, _, _))| *at);
                let mut wake = false;
                for (at, id) in delayed.drain(..) {
                    wake |= earliest.is_none_or(|earliest| at < earliest);
                    let seq = schedule.next_seq;
                    schedule.next_seq += 1;
                    schedule.heap.push(Reverse((at, seq, id)));
                    shared.counters.delayed.fetch_add(1, Ordering::Relaxed);
                }
                drop(schedule);
                if wake {
                    shared.wake.notify_one();
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

fn release_loop(shared: &Shared) {
    let mut due: Vec<(u32, Verdict)> = Vec::new();
    let mut schedule = lock(&shared.schedule);
    loop {
        let stopping = shared.stop.load(Ordering::SeqCst);
        let now = Instant::now();
        while let Some(Reverse((at, _, id))) = schedule.heap.peek().copied() {
            if at > now && !stopping {
                break;
            }
            schedule.heap.pop();
            due.push((id, Verdict::Accept));
        }
        if stopping {
            schedule.closed = true;
        }
        if !due.is_empty() {
            drop(schedule);
            send_verdicts(shared, &due);
            due.clear();
            if stopping {
                return;
            }
            schedule = lock(&shared.schedule);
            continue;
        }
        if stopping {
            return;
        }
        schedule = match schedule.heap.peek() {
            Some(Reverse((at, _, _))) => {
                let wait = at.saturating_duration_since(now);
                shared
                    .wake
                    .wait_timeout(schedule, wait)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0
            }
            None => shared
                .wake
                .wait(schedule)
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        };
    }
}
