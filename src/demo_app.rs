//! `faultline demo-app`: the small HTTP service that the sandbox's real pods run, so that a
//! fault has something to hurt and a probe something to measure.
//!
//! - `GET /healthz`: 200 `ok` (what the sandbox kubelet polls before reporting a pod Ready).
//! - `GET /work`: a little CPU work, then one GET to every configured downstream URL (all at
//!   once, each with a timeout). 200 with a JSON body listing each downstream's status and
//!   latency; 502 naming the first failing downstream when any fails (no answer, timeout, or a
//!   status other than 2xx), so a fault deep in a chain shows at its entrance.
//! - `GET /metrics`: OpenMetrics text: requests by path and code, the latency of `/work`, and
//!   downstream calls by outcome.
//!
//! A downstream URL is called exactly as given (e.g. `http://10.244.1.3:8080/work`). The server
//! stops gracefully when `shutdown` resolves (SIGTERM from the CLI).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use serde::Serialize;

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Shown in `/work` answers, so a chain of services tells who answered.
    pub name: String,
    /// URLs that `/work` calls.
    pub downstreams: Vec<String>,
    /// How long one downstream call may take before it counts as failed.
    pub downstream_timeout: Duration,
    /// A `name address` file consulted before DNS (the sandbox's stand-in for cluster DNS).
    pub hosts_file: Option<std::path::PathBuf>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            name: "demo-app".into(),
            downstreams: Vec::new(),
            downstream_timeout: Duration::from_secs(2),
            hosts_file: None,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    path: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DownstreamLabels {
    downstream: String,
    outcome: String,
}

struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    work_duration: Histogram,
    downstream_calls: Family<DownstreamLabels, Counter>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("demo");
        let requests = Family::<RequestLabels, Counter>::default();
        let work_duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let downstream_calls = Family::<DownstreamLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests, by path and status code",
            requests.clone(),
        );
        registry.register(
            "work_duration_seconds",
            "Time to answer GET /work, downstream calls included",
            work_duration.clone(),
        );
        registry.register(
            "downstream_calls",
            "Calls to downstream services, by URL and outcome (ok or failed)",
            downstream_calls.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            work_duration,
            downstream_calls,
        }
    }

    fn count(&self, path: &str, code: StatusCode) {
        self.requests
            .get_or_create(&RequestLabels {
                path: path.into(),
                code: code.as_u16().to_string(),
            })
            .inc();
    }

    fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = encode(&mut out, &registry);
        out
    }
}

struct AppState {
    config: DemoConfig,
    client: reqwest::Client,
    metrics: Metrics,
}

/// What `/work` says about one downstream call.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DownstreamResult {
    pub url: String,
    /// The HTTP status, absent when no answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DownstreamResult {
    fn ok(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkAnswer {
    name: String,
    /// The result of the CPU work (so it cannot be optimised away).
    checksum: u32,
    downstreams: Vec<DownstreamResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_downstream: Option<String>,
}

/// The service's routes (fails only when no HTTP client can be built).
pub fn router(config: DemoConfig) -> Result<Router, reqwest::Error> {
    // reqwest is built without a bundled crypto provider (kube brings ring); building a client
    // with none installed would panic, so make sure the process has one.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    // A fresh connection per call: a downstream cut off by a fault must look cut off, not
    // answer over a connection kept alive from before.
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(config.downstream_timeout);
    if let Some(path) = &config.hosts_file {
        builder = builder.dns_resolver(Arc::new(HostsFile(path.clone())));
    }
    let client = builder.build()?;
    let state = Arc::new(AppState {
        config,
        client,
        metrics: Metrics::new(),
    });
    Ok(Router::new()
        .route("/healthz", get(healthz))
        .route("/work", get(work))
        .route("/metrics", get(metrics))
        .with_state(state))
}

/// Serves on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: DemoConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(config).map_err(std::io::Error::other)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(state): State<Arc<AppState>>) -> &'static str {
    state.metrics.count("/healthz", StatusCode::OK);
    "ok"
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.metrics.count("/metrics", StatusCode::OK);
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn work(State(state): State<Arc<AppState>>) -> Response {
    let started = Instant::now();
    let checksum = busy_work();
    let calls = state
        .config
        .downstreams
        .iter()
        .map(|url| call(&state.client, url));
    let downstreams = futures::future::join_all(calls).await;
    for result in &downstreams {
        let outcome = if result.ok() { "ok" } else { "failed" };
        state
            .metrics
            .downstream_calls
            .get_or_create(&DownstreamLabels {
                downstream: result.url.clone(),
                outcome: outcome.into(),
            })
            .inc();
    }
    let failed = downstreams.iter().find(|d| !d.ok());
    let code = if failed.is_some() {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    };
    let answer = WorkAnswer {
        name: state.config.name.clone(),
        checksum,
        error: failed.map(|d| {
            format!(
                "downstream {} failed: {}",
                d.url,
                d.error.as_deref().unwrap_or_default()
            )
        }),
        failed_downstream: failed.map(|d| d.url.clone()),
        downstreams,
    };
    state.metrics.count("/work", code);
    state
        .metrics
        .work_duration
        .observe(started.elapsed().as_secs_f64());
    (code, Json(answer)).into_response()
}

/// FNV-1a over a few kilobytes: microseconds of CPU, enough to show up under a CPU fault.
fn busy_work() -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for i in 0..16_384u32 {
        hash ^= i & 0xff;
        hash = hash.wrapping_mul(0x0100_0193);
    }
    std::hint::black_box(hash)
}

async fn call(client: &reqwest::Client, url: &str) -> DownstreamResult {
    let started = Instant::now();
    let answer = client.get(url).send().await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (status, error) = match answer {
        Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
        Ok(response) => (
            Some(response.status().as_u16()),
            Some(format!("answered {}", response.status())),
        ),
        Err(e) if e.is_timeout() => (None, Some(format!("timed out after {latency_ms:.0}ms"))),
        Err(e) => (None, Some(innermost(&e))),
    };
    DownstreamResult {
        url: url.to_string(),
        status,
        latency_ms,
        error,
    }
}

/// "Connection refused (os error 111)" rather than reqwest's outer "error sending request".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

/// Names from a `name address` file (re-read on every lookup: the sandbox rewrites it as
/// Services change), then the system resolver.
struct HostsFile(std::path::PathBuf);

impl reqwest::dns::Resolve for HostsFile {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let host = name.as_str().trim_end_matches('.').to_string();
        let found: Vec<std::net::SocketAddr> = text
            .lines()
            .filter_map(|line| {
                let (n, ip) = line.split_once(' ')?;
                (n == host).then(|| ip.trim().parse::<std::net::IpAddr>().ok())?
            })
            .map(|ip| std::net::SocketAddr::new(ip, 0))
            .collect();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = if found.is_empty() {
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect()
            } else {
                found
            };
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}
