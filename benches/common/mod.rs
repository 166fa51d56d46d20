//! Shared by the benchmarks: a test bed (embedded API server, the controller as it runs in
//! production, scripted probes, the stand-in agent), cluster builders, an API-call counter and
//! table printing. Benchmarks measure; they never assert speed.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use faultline::{
    api::{ChaosExperiment, ChaosExperimentSpec, all_crds},
    controller::{self, Clients, HypothesisSource, Settings, Telemetry, probe_hub::ProbeHub},
    sandbox::{
        apiserver::{ApiServer, ApiServerOptions},
        testkit::{ScriptedProbes, stand_in_agent},
    },
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    runtime::reflector::ObjectRef,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    Layer, filter::filter_fn, layer::Context as LayerContext, prelude::*, registry::LookupSpan,
};

pub const OPT_IN: (&str, &str) = ("faultline.dev/chaos", "enabled");

/// The embedded API server with the CRDs, the controller (scripted probes, its own metrics)
/// and the stand-in node agent, all in this process.
pub struct Bed {
    pub server: ApiServer,
    pub client: Client,
    pub probes: Arc<ScriptedProbes>,
    pub trigger: mpsc::UnboundedSender<ObjectRef<ChaosExperiment>>,
    pub telemetry: Telemetry,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Bed {
    /// The bed with scripted probes (set their verdicts with `probes.set`).
    pub async fn start() -> Bed {
        Self::start_with(false).await
    }

    /// The bed with the controller's real probe hub: probes make real checks.
    pub async fn start_with_probe_hub() -> Bed {
        Self::start_with(true).await
    }

    async fn start_with(probe_hub: bool) -> Bed {
        faultline::cli::install_crypto_provider();
        let server = start_server().await;
        let client = server.client().await;
        let probes = Arc::new(ScriptedProbes::default());
        let (trigger, triggers) = mpsc::unbounded_channel();
        let telemetry = Telemetry::default();
        let defaults = Settings::default();
        let settings = Settings {
            injection_timeout: Duration::from_secs(60),
            // `FAULTLINE_BENCH_CONCURRENCY`: reconciles at once (the controller's default if unset).
            concurrency: std::env::var("FAULTLINE_BENCH_CONCURRENCY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.concurrency),
            ..defaults
        };
        let clients = Clients::from_config(server.client_config()).expect("clients");
        let (stop_controller, controller_stopped) = oneshot::channel::<()>();
        let hypotheses: Arc<dyn HypothesisSource> = if probe_hub {
            Arc::new(ProbeHub::new(
                clients.main.clone(),
                trigger.clone(),
                telemetry.metrics.clone(),
            ))
        } else {
            probes.clone()
        };
        let controller = tokio::spawn(controller::run(
            clients,
            settings,
            hypotheses,
            triggers,
            telemetry.clone(),
            async move {
                let _ = controller_stopped.await;
            },
        ));
        let (stop_agent, agent_stopped) = oneshot::channel::<()>();
        let agent = tokio::spawn(stand_in_agent(client.clone(), agent_stopped));
        Bed {
            server,
            client,
            probes,
            trigger,
            telemetry,
            stop: vec![stop_controller, stop_agent],
            tasks: vec![controller, agent],
        }
    }

    pub fn experiments(&self, namespace: &str) -> Api<ChaosExperiment> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// `faultline_reconciliations_total` from the controller's metrics.
    pub fn reconciliations(&self) -> u64 {
        metric(
            &self.telemetry.metrics.render(),
            "faultline_reconciliations_total",
        )
    }

    /// Total seconds spent in reconciles so far.
    pub fn reconcile_seconds(&self) -> f64 {
        metric_f64(
            &self.telemetry.metrics.render(),
            "faultline_reconcile_duration_seconds_sum",
        )
    }

    pub async fn stop(mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.server.shutdown().await;
    }
}

/// The embedded API server with the CRDs installed and a watch history large enough that no
/// watcher of a benchmark falls off its end (a 410 would make it relist, which is not what is
/// being measured).
pub async fn start_server() -> ApiServer {
    let server = ApiServer::start_with_options(ApiServerOptions {
        event_history: 100_000,
        ..Default::default()
    })
    .await
    .expect("start the embedded API server");
    server
        .install_crds(&all_crds())
        .await
        .expect("install the CRDs");
    server
}

pub async fn namespace(client: &Client, name: &str, opted_in: bool) {
    let labels = opted_in.then(|| BTreeMap::from([(OPT_IN.0.to_string(), OPT_IN.1.to_string())]));
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels,
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create a namespace");
}

/// One pod to create: Running and Ready on `node-1`, labelled `app`.
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub app: String,
    pub ip: String,
}

/// Creates the pods (create, then a status patch: the API server ignores status on create),
/// a few requests in flight at a time.
pub async fn create_pods(client: &Client, pods: Vec<PodSpec>) {
    futures::stream::iter(pods)
        .map(|p| {
            let client = client.clone();
            async move {
                let api: Api<Pod> = Api::namespaced(client, &p.namespace);
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": p.name, "labels": {"app": p.app}},
                    "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "demo"}]},
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                let status = json!({"status": {"phase": "Running", "podIP": p.ip,
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                api.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .expect("create the pods");
}

/// A distinct pod IP for pod number `i`.
pub fn pod_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 100 + i / 65_536, (i / 256) % 256, i % 256)
}

pub async fn create_experiments(
    client: Client,
    experiments: Vec<(String, String, serde_json::Value)>,
) {
    futures::stream::iter(experiments)
        .map(|(namespace, name, spec)| {
            let client = client.clone();
            async move {
                let spec: ChaosExperimentSpec = serde_json::from_value(spec)?;
                let api: Api<ChaosExperiment> = Api::namespaced(client, &namespace);
                api.create(&PostParams::default(), &ChaosExperiment::new(&name, spec))
                    .await?;
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .expect("create the experiments");
}

/// A network latency fault towards a CIDR on the pods labelled `app`.
pub fn latency_spec(app: &str, duration: &str) -> serde_json::Value {
    json!({
        "duration": duration,
        "target": {"labelSelector": {"matchLabels": {"app": app}}},
        "faults": [{"networkLatency": {"latency": "100ms", "to": {"cidrs": ["10.0.0.0/8"]}}}],
    })
}

/// [`latency_spec`] under an HTTP probe of `url` every `interval`, in every phase.
pub fn latency_with_probe_spec(
    app: &str,
    duration: &str,
    url: &str,
    interval: &str,
) -> serde_json::Value {
    let mut spec = latency_spec(app, duration);
    spec["steadyState"] = json!({
        "recoveryTimeout": "30s",
        "probes": [{"name": "web", "http": {"url": url}, "interval": interval, "timeout": "900ms"}],
    });
    spec
}

/// An HTTP server on 127.0.0.1 that answers 200 to every request, for probes; returns its URL.
pub async fn healthy_service() -> String {
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the probe target");
    let url = format!("http://{}/healthz", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A pod kill by delete (no grace period) of the pods labelled `app`.
pub fn pod_kill_spec(app: &str, duration: &str) -> serde_json::Value {
    json!({
        "duration": duration,
        "target": {"labelSelector": {"matchLabels": {"app": app}}},
        "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0}}],
    })
}

/// The value of an unlabelled counter or gauge in an OpenMetrics text exposition.
pub fn metric(text: &str, name: &str) -> u64 {
    metric_f64(text, name) as u64
}

pub fn metric_f64(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// Figures

/// `nproc` and the CPU model, for the header of every table.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, m)| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("nproc={cores}, {model}")
}

/// p50 / p90 / p99 / max of `values` (nearest rank).
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn percentiles(values: &[f64]) -> Percentiles {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[i]
    };
    Percentiles {
        p50: rank(0.50),
        p90: rank(0.90),
        p99: rank(0.99),
        max: sorted.last().copied().unwrap_or(f64::NAN),
    }
}

/// Prints a titled two-column-or-more table in Markdown, so it can be pasted into a report.
pub fn print_table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut out = String::new();
    let _ = writeln!(out, "\n## {title}\n");
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    println!("{out}");
}

// ---------------------------------------------------------------------------------------------
// API calls made by reconciles

/// Counts the HTTP requests kube-client sends from inside a controller `reconcile` span, by
/// verb and resource (`GET pods (list)`, `DELETE faultinjections`, ...), with the time each
/// took (span open to close: request sent to response body read). kube-client opens an `HTTP`
/// span per request (under its retry layer, so a retried request counts twice); watches and
/// requests of the bench itself or of the stand-in agent are not inside a reconcile and are not
/// counted.
#[derive(Clone, Default)]
pub struct ApiCalls {
    counts: Arc<Mutex<HashMap<String, Calls>>>,
}

/// How many calls of one kind, and the seconds they took in all.
#[derive(Clone, Copy, Debug, Default)]
pub struct Calls {
    pub count: u64,
    pub seconds: f64,
}

impl Calls {
    pub fn mean_ms(&self) -> f64 {
        self.seconds * 1e3 / self.count.max(1) as f64
    }
}

impl ApiCalls {
    /// Installs the counter as the process's tracing subscriber (once; later calls return it).
    pub fn install() -> ApiCalls {
        static CALLS: OnceLock<ApiCalls> = OnceLock::new();
        CALLS
            .get_or_init(|| {
                let calls = ApiCalls::default();
                let layer = CountLayer {
                    calls: calls.clone(),
                }
                .with_filter(filter_fn(|m| {
                    m.is_span() && matches!(m.name(), "HTTP" | "reconcile")
                }));
                let _ = tracing_subscriber::registry().with(layer).try_init();
                calls
            })
            .clone()
    }

    /// The calls since the last `take`, by kind.
    pub fn take(&self) -> BTreeMap<String, Calls> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.drain().collect()
    }
}

struct CountLayer {
    calls: ApiCalls,
}

/// Kept in a counted request's span until it closes.
struct Started {
    kind: String,
    at: std::time::Instant,
}

#[derive(Default)]
struct Request {
    method: String,
    url: String,
}

impl Visit for Request {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "http.method" => self.method = format!("{value:?}"),
            "http.url" => self.url = format!("{value:?}"),
            _ => {}
        }
    }
}

impl<S> Layer<S> for CountLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() != "HTTP" {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let in_reconcile = span
            .parent()
            .is_some_and(|p| p.scope().any(|s| s.name() == "reconcile"));
        if !in_reconcile {
            return;
        }
        let mut request = Request::default();
        attrs.record(&mut request);
        span.extensions_mut().insert(Started {
            kind: request_kind(&request.method, &request.url),
            at: std::time::Instant::now(),
        });
    }

    fn on_close(&self, id: span::Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let Some(started) = extensions.get::<Started>() else {
            return;
        };
        let mut counts = self.calls.counts.lock().unwrap_or_else(|p| p.into_inner());
        let calls = counts.entry(started.kind.clone()).or_default();
        calls.count += 1;
        calls.seconds += started.at.elapsed().as_secs_f64();
    }
}

/// `GET pods (list)`, `PATCH chaosexperiments/status`, ... from a method and a request path.
fn request_kind(method: &str, url: &str) -> String {
    // kube-client records the full URL: drop the scheme and the host.
    let url = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or(url);
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/... or /apis/group/version/...
    let rest: &[&str] = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or_default(),
        Some(&"apis") => segments.get(3..).unwrap_or_default(),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let kind = match rest {
        [plural] if method == "GET" => format!("{plural} (list)"),
        [plural] if method == "DELETE" => format!("{plural} (collection)"),
        [plural] => plural.to_string(),
        [plural, _name] => plural.to_string(),
        [plural, _name, sub, ..] => format!("{plural}/{sub}"),
        [] => path.to_string(),
    };
    let method = if query.contains("watch=true") {
        "WATCH"
    } else {
        method
    };
    format!("{method} {kind}")
}
