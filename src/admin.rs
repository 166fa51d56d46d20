//! The admin port: `/healthz` (the process is alive), `/readyz` (leadership is known and, on the
//! leader, the watch caches are synced) and `/metrics`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::metrics::Metrics;

/// What `/readyz` reports on.
#[derive(Default)]
pub struct Readiness {
    leadership_known: AtomicBool,
    leader: AtomicBool,
    caches_synced: AtomicBool,
}

impl Readiness {
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
        self.leadership_known.store(true, Ordering::SeqCst);
        if !leader {
            self.caches_synced.store(false, Ordering::SeqCst);
        }
    }

    pub fn set_caches_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::SeqCst);
    }

    /// `Ok` with a word, or `Err` with what is missing.
    pub fn check(&self) -> Result<&'static str, &'static str> {
        if !self.leadership_known.load(Ordering::SeqCst) {
            return Err("leadership not known yet");
        }
        if !self.leader.load(Ordering::SeqCst) {
            return Ok("standby");
        }
        if self.caches_synced.load(Ordering::SeqCst) {
            Ok("leader")
        } else {
            Err("leader, caches not synced yet")
        }
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Arc<Readiness>,
    metrics: Metrics,
}

pub fn router(readiness: Arc<Readiness>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { readiness, metrics })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    match state.readiness.check() {
        Ok(word) => (StatusCode::OK, word),
        Err(missing) => (StatusCode::SERVICE_UNAVAILABLE, missing),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Serves the admin port until the process ends.
pub async fn serve(
    addr: SocketAddr,
    readiness: Arc<Readiness>,
    metrics: Metrics,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router(readiness, metrics)).await {
            tracing::error!(%error, "admin server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_leadership_known_and_a_synced_leader() {
        let r = Readiness::default();
        assert!(r.check().is_err());
        r.set_leader(false);
        assert_eq!(r.check(), Ok("standby"));
        r.set_leader(true);
        assert!(r.check().is_err());
        r.set_caches_synced(true);
        assert_eq!(r.check(), Ok("leader"));
        r.set_leader(false);
        assert_eq!(r.check(), Ok("standby"));
    }
}
