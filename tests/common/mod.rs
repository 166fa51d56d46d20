//! Helpers shared by the `apiserver_*` integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

#[allow(unused_imports)]
pub use faultline::sandbox::apiserver::{ApiServer, ApiServerOptions};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn server() -> ApiServer {
    init_tracing();
    ApiServer::start(0).await.expect("start sandbox API server")
}

/// Poll `check` until it returns Some, or panic after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `kube::Error::Api` status of a failed call (panics on success or another error kind).
pub fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
pub mod cluster;
pub mod endless;
pub mod harness;
pub mod held_responses;
pub mod real_slot;
pub mod sandbox_cli;

pub use cluster::TestCluster;
