//! Letting go of netlink sockets (and the threads around them) off the apply and revert path.
//!
//! Closing a `NETLINK_NETFILTER` socket is slow right after a transaction: the kernel's
//! release notifier for nf_tables takes the namespace's commit mutex and waits for the pending
//! destroy work of earlier transactions, which waits for an RCU grace period (10-25 ms on a
//! 2-core VM, measured with `strace -T` on `close`). One close per apply or revert made that
//! wait the largest part of each, and in the node's namespace, where every pod's steering
//! lives, the waits queued behind one another. Here the close happens on a few background
//! threads instead; nothing on the hot path waits for it, and the faults are already gone
//! when it runs (the sockets only listed, committed, or held a queue whose rules are removed).

use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

/// Threads doing the closing: concurrent closes share one grace period, so a few threads keep
/// up with hundreds of reverts a second.
const CLOSERS: usize = 4;

type Doomed = Box<dyn Send>;

fn queue() -> &'static Mutex<Option<Sender<Doomed>>> {
    static QUEUE: OnceLock<Mutex<Option<Sender<Doomed>>>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        let (send, receive) = channel::<Doomed>();
        let receive = std::sync::Arc::new(Mutex::new(receive));
        let mut started = 0;
        for n in 0..CLOSERS {
            let receive = std::sync::Arc::clone(&receive);
            let spawned = std::thread::Builder::new()
                .name(format!("fl-closer{n}"))
                .spawn(move || {
                    loop {
                        let next = match receive.lock() {
                            Ok(receive) => receive.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match next {
                            Ok(doomed) => drop(doomed),
                            Err(_) => return,
                        }
                    }
                });
            if spawned.is_ok() {
                started += 1;
            }
        }
        Mutex::new((started > 0).then_some(send))
    })
}

/// Drops `value` on a background thread; inline when no such thread can run.
pub fn drop_later<T: Send + 'static>(value: T) {
    let doomed: Doomed = Box::new(value);
    let sender = queue().lock().ok().and_then(|s| s.clone());
    match sender {
        Some(sender) => {
            if let Err(returned) = sender.send(doomed) {
                drop(returned.0);
            }
        }
        None => drop(doomed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    struct Flag(Arc<AtomicBool>);

    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn what_is_handed_over_is_dropped_soon_on_another_thread() {
        let dropped = Arc::new(AtomicBool::new(false));
        drop_later(Flag(Arc::clone(&dropped)));
        let started = Instant::now();
        while !dropped.load(Ordering::SeqCst) {
            assert!(started.elapsed() < Duration::from_secs(10), "never dropped");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
