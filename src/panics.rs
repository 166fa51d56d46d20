//! Keeps a panic inside the reconcile of the one object that caused it.
//!
//! kube-runtime polls every reconcile inside the controller's own stream: a panic in one of
//! them unwinds through the whole controller, so no object is reconciled afterwards (aborts
//! included) and a standalone controller crash-loops. [`catch`] turns a panic into a value the
//! controller reports on that object's status, and the others go on.
//!
//! Caveats: a panic still prints its usual message (the previous panic hook runs), and state the
//! panicking code held is whatever it was: every lock the controllers share tolerates poisoning
//! (`unwrap_or_else(PoisonError::into_inner)`), and the object itself is quarantined.

use std::{
    any::Any,
    cell::RefCell,
    fmt,
    future::Future,
    panic::{self, AssertUnwindSafe},
    sync::Once,
};

use futures::FutureExt;

/// The `reason` (of a status, a condition) saying that reconciling the object panicked.
pub const PANICKED_REASON: &str = "ReconcilePanicked";

/// What a panic said, and where in faultline's code it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Panic {
    pub message: String,
    /// `src/file.rs:line:column`, when the panic hook saw it.
    pub location: Option<String>,
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "panicked at {location}: {}", self.message),
            None => write!(f, "panicked: {}", self.message),
        }
    }
}

thread_local! {
    /// Where the last panic on this thread happened. The hook writes it on the panicking
    /// thread; `catch` reads it on the same thread, in the poll the panic unwound out of.
    static LAST_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records panic locations (the payload carries only the message), then lets the previous hook
/// print the panic as usual. Installed once per process.
fn install_location_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LAST_LOCATION.with(|last| *last.borrow_mut() = location);
            previous(info);
        }));
    });
}

/// Runs `future` to its end, or returns the panic it raised instead of unwinding further.
pub async fn catch<F: Future>(future: F) -> Result<F::Output, Panic> {
    install_location_hook();
    LAST_LOCATION.with(|last| last.borrow_mut().take());
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| Panic {
            message: payload_text(payload.as_ref()),
            location: LAST_LOCATION.with(|last| last.borrow_mut().take()),
        })
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_a_value_with_its_message_and_location() {
        let caught = catch(async { panic!("boom {}", 42) }).await.unwrap_err();
        assert_eq!(caught.message, "boom 42");
        let location = caught.location.clone().unwrap();
        assert!(location.starts_with("src/panics.rs:"), "{location}");
        assert!(caught.to_string().starts_with("panicked at src/panics.rs:"));
    }

    #[tokio::test]
    async fn a_future_that_does_not_panic_gives_its_output() {
        assert_eq!(catch(async { 7 }).await, Ok(7));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_after_an_await_is_caught_on_whichever_thread_polls_it() {
        let caught = catch(async {
            tokio::task::yield_now().await;
            let values: Vec<u8> = Vec::new();
            values[3]
        })
        .await
        .unwrap_err();
        assert!(caught.message.contains("index out of bounds"), "{caught}");
        assert!(caught.location.is_some());
    }
}
