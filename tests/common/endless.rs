//! An HTTP server whose answer never ends, for the probes' body caps: it streams as fast as the
//! client reads and counts every byte it hands to the socket, so a test can show that the
//! client stopped reading (and closed the connection) instead of buffering without end.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, body::Body, routing::get};
use futures::stream;
use tokio::net::TcpListener;

pub struct Endless {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    sent: Arc<AtomicUsize>,
}

impl Endless {
    /// Bytes handed to the socket so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Serves `path`: `head`, then `item(0)`, `item(1)`, ... without end, in 64 KiB chunks.
pub async fn serve_endless(path: &str, head: &'static str, item: fn(usize) -> String) -> Endless {
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let app = Router::new().route(
        path,
        get(move || {
            let counter = counter.clone();
            async move {
                let chunks = stream::unfold(0usize, move |next| {
                    let counter = counter.clone();
                    async move {
                        let mut chunk = if next == 0 {
                            head.to_string()
                        } else {
                            String::new()
                        };
                        let mut i = next;
                        while chunk.len() < 64 << 10 {
                            chunk.push_str(&item(i));
                            i += 1;
                        }
                        counter.fetch_add(chunk.len(), Ordering::SeqCst);
                        Some((Ok::<_, std::io::Error>(chunk), i.max(1)))
                    }
                });
                Body::from_stream(chunks)
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Endless {
        url: format!("http://{addr}"),
        sent,
    }
}

/// Asserts that the client read a bounded amount and then let go: a reader without a cap pulls
/// hundreds of megabytes a second on loopback. The slack above the cap is what the kernel's
/// socket buffers hold.
pub async fn assert_reading_stopped(server: &Endless, cap: usize) {
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sent = server.sent();
    assert!(
        sent < cap + (32 << 20),
        "the server handed {sent} bytes to a client capped at {cap}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        server.sent(),
        sent,
        "the client kept the connection open and reading"
    );
}
