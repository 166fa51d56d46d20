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
pub mod agent_world;
pub mod cluster;
pub mod disturbed;
pub mod endless;
pub mod harness;
pub mod held_responses;
pub mod lost_responses;
pub mod real_slot;
pub mod replicas;
pub mod sandbox_cli;

pub use cluster::TestCluster;

/// A port on 127.0.0.1 that refuses connections for as long as the returned socket lives. The
/// socket is bound but never listens (Linux answers a SYN to it with a reset), so no other test
/// running at the same time can take the port, as one could after a bind-and-release.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind("127.0.0.1:0".parse().unwrap())
        .expect("bind 127.0.0.1:0");
    let port = socket.local_addr().expect("its address").port();
    (socket, port)
}
