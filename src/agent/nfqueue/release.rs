//! The agent's one release thread: it sleeps until the earliest delayed packet of any queue is
//! due and releases it (see [`super::worker`]), instead of a thread per queue. Each queue's
//! packets stay on the queue's own heap; this thread keeps a heap of alarms, one per queue and
//! release time a reader asked for, and after releasing a queue's due packets sets the
//! queue's next alarm itself. The queue remembers the one alarm it counts on: another (set
//! for a later packet before an earlier one came, say), or one for a queue that stopped
//! meanwhile, finds nothing to do. An alarm does not keep its queue alive: a stopped queue's
//! socket closes when its worker lets go of it, not when a stale alarm (an hour away, for an
//! hour of delay) would have fired.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use super::worker::{Shared, release_due};

struct Alarm {
    at: Instant,
    seq: u64,
    queue: Weak<Shared>,
}

impl PartialEq for Alarm {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Alarm {}

impl PartialOrd for Alarm {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Alarm {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Alarms {
    heap: BinaryHeap<Reverse<Alarm>>,
    next_seq: u64,
}

#[derive(Default)]
struct Releaser {
    alarms: Mutex<Alarms>,
    wake: Condvar,
}

fn releaser() -> &'static OnceLock<Result<Arc<Releaser>, String>> {
    static RELEASER: OnceLock<Result<Arc<Releaser>, String>> = OnceLock::new();
    &RELEASER
}

/// Starts the release thread once per process; an error when it cannot run (no queue can
/// delay a packet then).
pub fn start() -> io::Result<()> {
    let started = releaser().get_or_init(|| {
        let releaser = Arc::new(Releaser::default());
        let running = Arc::clone(&releaser);
        std::thread::Builder::new()
            .name("fl-nfq-release".into())
            .spawn(move || run(&running))
            .map(|_| releaser)
            .map_err(|e| e.to_string())
    });
    match started {
        Ok(_) => Ok(()),
        Err(error) => Err(io::Error::other(format!(
            "cannot start the nfqueue release thread: {error}"
        ))),
    }
}

/// Asks for `queue`'s packets due at `at` to be released then.
pub(super) fn wake_at(at: Instant, queue: &Arc<Shared>) {
    let Some(Ok(releaser)) = releaser().get() else {
        return;
    };
    let mut alarms = lock(&releaser.alarms);
    let earliest = alarms.heap.peek().map(|Reverse(alarm)| alarm.at);
    let seq = alarms.next_seq;
    alarms.next_seq += 1;
    alarms.heap.push(Reverse(Alarm {
        at,
        seq,
        queue: Arc::downgrade(queue),
    }));
    drop(alarms);
    if earliest.is_none_or(|earliest| at < earliest) {
        releaser.wake.notify_one();
    }
}

fn run(releaser: &Releaser) {
    let mut due = Vec::new();
    loop {
        let mut alarms = lock(&releaser.alarms);
        let now = loop {
            let now = Instant::now();
            alarms = match alarms.heap.peek() {
                Some(Reverse(alarm)) if alarm.at <= now => break now,
                Some(Reverse(alarm)) => {
                    let wait = alarm.at - now;
                    releaser
                        .wake
                        .wait_timeout(alarms, wait)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
                None => releaser
                    .wake
                    .wait(alarms)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
        };
        while alarms
            .heap
            .peek()
            .is_some_and(|Reverse(alarm)| alarm.at <= now)
        {
            if let Some(Reverse(alarm)) = alarms.heap.pop() {
                due.push(alarm);
            }
        }
        drop(alarms);
        for alarm in due.drain(..) {
            let Some(queue) = alarm.queue.upgrade() else {
                continue;
            };
            if let Some(next) = release_due(&queue, alarm.at, now) {
                wake_at(next, &queue);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
