//! A kube client on a bad network: a share of its requests fail, chosen at random from a seed.
//! Half of the failures never reach the server (a refused connection); the other half reach
//! it, are carried out, and lose their answer on the way back, the nastiest case for a
//! client: it cannot tell whether the change it asked for happened.
//!
//! Watch requests are spared: a broken watch is re-listed by kube's watcher after a backoff of
//! seconds, which would only slow a test down without reaching a new code path.

use std::future::Future;
use std::pin::Pin;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};
use std::task::{Context, Poll};

use kube::Client;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Fails `percent` of the requests of the clients it makes (see the module doc), or only the
/// first few of one kind (see [`LostResponses::first`]).
#[derive(Clone)]
pub struct LostResponses {
    percent: u64,
    state: Arc<Mutex<u64>>,
    lost_before: Arc<AtomicU64>,
    lost_after: Arc<AtomicU64>,
    /// When not empty: only requests whose method and URI contain every one of these fail,
    /// before reaching the server, while `times_left` lasts.
    only: Arc<Vec<String>>,
    times_left: Arc<AtomicU64>,
}

impl LostResponses {
    pub fn new(percent: u64, seed: u64) -> Self {
        Self {
            percent,
            state: Arc::new(Mutex::new(seed | 1)),
            lost_before: Arc::default(),
            lost_after: Arc::default(),
            only: Arc::default(),
            times_left: Arc::default(),
        }
    }

    /// Refuses the first `times` requests whose method and URI (`"DELETE https://..."`)
    /// contain every one of `matching`, before they reach the server; every other goes
    /// through.
    pub fn first(matching: &[&str], times: u64) -> Self {
        Self {
            only: Arc::new(matching.iter().map(|m| m.to_string()).collect()),
            times_left: Arc::new(AtomicU64::new(times)),
            // A chosen request rolls 0, refused before it is sent; the others roll 100.
            ..Self::new(2, 1)
        }
    }

    /// A client with `config` whose requests fail as described.
    pub fn client_of(&self, config: kube::Config) -> Client {
        kube::client::ClientBuilder::try_from(config)
            .unwrap()
            .with_layer(self)
            .build()
    }

    /// How many requests failed before reaching the server, and how many after.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.lost_before.load(Ordering::Relaxed),
            self.lost_after.load(Ordering::Relaxed),
        )
    }

    /// 0 to 99, from xorshift64*.
    fn roll(&self) -> u64 {
        let mut state = self.state.lock().unwrap();
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % 100
    }
}

impl<S> tower_layer::Layer<S> for LostResponses {
    type Service = Lossy<S>;

    fn layer(&self, inner: S) -> Lossy<S> {
        Lossy {
            inner,
            losses: self.clone(),
        }
    }
}

pub struct Lossy<S> {
    inner: S,
    losses: LostResponses,
}

impl<S, B> tower_service::Service<http::Request<B>> for Lossy<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.contains("watch=true"));
        let what = format!("{} {}", request.method(), request.uri());
        let roll = if watch {
            100
        } else if !self.losses.only.is_empty() {
            let chosen = self.losses.only.iter().all(|m| what.contains(m.as_str()))
                && self
                    .losses
                    .times_left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
            if chosen { 0 } else { 100 }
        } else {
            self.losses.roll()
        };
        if roll < self.losses.percent / 2 {
            self.losses.lost_before.fetch_add(1, Ordering::Relaxed);
            return Box::pin(async move {
                Err(format!("injected: connection refused before sending {what}").into())
            });
        }
        let response = self.inner.call(request);
        let lose_answer = roll < self.losses.percent;
        let lost_after = self.losses.lost_after.clone();
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            if lose_answer {
                lost_after.fetch_add(1, Ordering::Relaxed);
                drop(response);
                return Err(format!("injected: connection reset after sending {what}").into());
            }
            Ok(response)
        })
    }
}
