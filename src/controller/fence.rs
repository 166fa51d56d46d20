//! Fencing a replica that stalled. A replica that stops running for a while (SIGSTOP, a VM
//! paused for a migration, a node starved of CPU) and wakes up still believes it holds the
//! lease until its next renewal fails, and its timers and in-flight reconciles fire at once.
//! With a cache from before the stall they would act on work that the replica which took over
//! meanwhile owns now: an abort from a probe whose timeout ran out while the process stood
//! still, a scheduled run started beside the one the new leader started.
//!
//! So the controller's clients pass no write while the replica may have lost its lease: from a
//! stall at least as long as the lease's grace (the renewal comes that long before expiry, so
//! a shorter stall cannot have cost the lease) until a read of the Lease shows this replica as
//! its holder, which it is again at once if it kept the lease, or once it wins it back. Reads
//! pass: they change nothing and the reconciles need fresh ones. Kubernetes' own leader
//! election (client-go) leaves this window open; a chaos controller that acts on a stale view
//! aborts or starts what it should not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How often the replica notes that it runs, so that a stall shows as a gap.
const TICK: Duration = Duration::from_millis(100);

/// Whether a gap between two signs of life is a stall that may have cost the lease. Pure.
pub fn stalled(previous_ms: u64, now_ms: u64, stall: Duration) -> bool {
    now_ms.saturating_sub(previous_ms) >= stall.as_millis() as u64
}

/// The fence: open while the replica surely holds its lease.
pub struct Fence {
    epoch: Instant,
    last_seen_ms: AtomicU64,
    closed: AtomicBool,
    stall: Duration,
}

impl Fence {
    /// A fence closed by stalls of `stall` or more (the lease's grace).
    pub fn new(stall: Duration) -> Arc<Fence> {
        Arc::new(Fence {
            epoch: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stall,
        })
    }

    /// Notes that the replica runs now, closing the fence if it had not for a stall's length.
    /// Returns whether writes pass.
    pub fn admits_writes(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let previous = self.last_seen_ms.swap(now, Ordering::SeqCst);
        if stalled(previous, now, self.stall) && !self.closed.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                stalled_for_ms = now - previous,
                "this replica stood still long enough to have lost its lease: no writes until the Lease shows it as the holder"
            );
        }
        !self.closed.load(Ordering::SeqCst)
    }

    fn reopen(&self) {
        if self.closed.swap(false, Ordering::SeqCst) {
            tracing::info!("the Lease shows this replica as its holder: writes pass again");
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Keeps the fence: notes every [`TICK`] that the replica runs, and when the fence closes,
    /// reads the Lease (through `client`, which is not fenced) until it names `identity` as
    /// the holder. Runs until dropped.
    pub async fn keep(
        self: Arc<Self>,
        client: Client,
        namespace: String,
        lease: String,
        identity: String,
    ) {
        let leases: Api<Lease> = Api::namespaced(client, &namespace);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.admits_writes();
            if !self.is_closed() {
                continue;
            }
            match leases.get_opt(&lease).await {
                Ok(Some(found))
                    if found
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.as_deref())
                        == Some(identity.as_str()) =>
                {
                    self.reopen();
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot read the Lease to see whether this replica still holds it");
                }
            }
        }
    }

    /// Layers a client so that its writes wait behind this fence (fail while it is closed).
    pub fn layer(self: &Arc<Self>) -> FenceLayer {
        FenceLayer {
            fence: Arc::clone(self),
        }
    }
}

pub struct FenceLayer {
    fence: Arc<Fence>,
}

impl<S> tower_layer::Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: Arc::clone(&self.fence),
        }
    }
}

#[derive(Clone)]
pub struct Fenced<S> {
    inner: S,
    fence: Arc<Fence>,
}

impl<S, B> tower_service::Service<http::Request<B>> for Fenced<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let admitted = self.fence.admits_writes();
        let read = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        if !read && !admitted {
            let what = format!("{} {}", request.method(), request.uri().path());
            return Box::pin(async move {
                Err(format!(
                    "not sent ({what}): this replica stood still long enough to have lost its lease, and writes wait until the Lease shows it still holds it"
                )
                .into())
            });
        }
        let response = self.inner.call(request);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gap_as_long_as_the_grace_is_a_stall() {
        let grace = Duration::from_secs(5);
        assert!(!stalled(1_000, 1_100, grace), "a tick");
        assert!(!stalled(1_000, 5_999, grace), "a slow moment");
        assert!(stalled(1_000, 6_000, grace));
        assert!(
            !stalled(6_000, 1_000, grace),
            "clock order never underflows"
        );
    }

    #[tokio::test]
    async fn a_stall_closes_the_fence_until_it_is_reopened() {
        let fence = Fence::new(Duration::from_millis(50));
        assert!(fence.admits_writes());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!fence.admits_writes(), "closed by the stall");
        assert!(!fence.admits_writes(), "and stays closed without a stall");
        fence.reopen();
        assert!(fence.admits_writes());
    }
}
