//! Prometheus probes against a real Prometheus (Debian's, installed by
//! scripts/setup-prometheus.sh) scraping a metrics endpoint this test serves.
//!
//! Each test starts its own Prometheus on a free 127.0.0.1 port with its own config and data
//! directory, and kills it by PID when the test ends, pass or fail. A missing `prometheus`
//! binary fails the test: CI installs it, so a skip would only hide a broken setup.

mod common;

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, extract::State, routing::get};
use faultline::{
    api::Probe,
    probes::{CheckOutcome, MAX_ANSWER_BYTES, ProbeRunner},
};
use tokio::net::TcpListener;

/// The value the metrics endpoint serves, as f64 bits.
#[derive(Clone, Default)]
struct Gauge(Arc<AtomicU64>);

impl Gauge {
    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::SeqCst);
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
}

/// Serves `/metrics` in the text exposition format: `checkout_errors` (the gauge) and two
/// `checkout_ready` series. Returns `host:port`.
async fn serve_metrics(gauge: Gauge) -> String {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(gauge): State<Gauge>| async move {
                format!(
                    "# TYPE checkout_errors gauge\ncheckout_errors {}\n\
                     # TYPE checkout_ready gauge\n\
                     checkout_ready{{zone=\"a\"}} 3\ncheckout_ready{{zone=\"b\"}} 1\n",
                    gauge.get()
                )
            }),
        )
        .with_state(gauge);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

/// A running Prometheus; killed by PID on drop, printing its log if the test failed.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"));
            eprintln!("--- prometheus log ---\n{}", log.unwrap_or_default());
        }
    }
}

fn prometheus_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .expect("the prometheus binary is missing: run scripts/setup.sh")
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second and waits until it is ready.
    async fn start(target: &str) -> Prometheus {
        let binary = prometheus_binary();
        let mut dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: shop\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        // A port free a moment ago: another process may take it first, so a Prometheus that
        // exits before it is ready is started again on another.
        for _attempt in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting prometheus");
            let mut prometheus = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                dir,
            };
            let ready = format!("{}/-/ready", prometheus.url);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                if matches!(reqwest::get(&ready).await, Ok(r) if r.status().is_success()) {
                    return prometheus;
                }
                if prometheus.child.try_wait().unwrap().is_some() {
                    break;
                }
                // On panic, dropping `prometheus` prints its log.
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Prometheus was not ready within 30 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let log = std::fs::read_to_string(prometheus.dir.path().join("prometheus.log"))
                .unwrap_or_default();
            eprintln!(
                "Prometheus exited before it was ready, trying another port; its log:\n{log}"
            );
            dir = std::mem::replace(&mut prometheus.dir, tempfile::tempdir().unwrap());
        }
        panic!("Prometheus exited before it was ready five times; see the logs above")
    }

    /// A runner for a Prometheus probe named `checkout-errors`; `rest` is more YAML for the
    /// `prometheus` map (query, operator, value, onEmpty).
    fn probe(&self, rest: &str) -> ProbeRunner {
        let probe: Probe = serde_yaml::from_str(&format!(
            "{{name: checkout-errors, timeout: 10s, prometheus: {{url: '{}', {rest}}}}}",
            self.url
        ))
        .unwrap();
        ProbeRunner::new(&probe, "shop", None).unwrap()
    }

    /// Waits until `query` (which must return one sample) returns `value`: the next scrape
    /// has happened.
    async fn wait_for(&self, query: &str, value: &str) {
        let probe = self.probe(&format!("query: '{query}', operator: '==', value: 0"));
        eventually(&format!("{query} to be {value}"), || async {
            probe.run_once().await.value.as_deref() == Some(value)
        })
        .await;
    }
}

/// Polls `condition` every 100ms for up to 30s.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "waited 30s for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn error(outcome: &CheckOutcome) -> &str {
    assert!(!outcome.ok, "expected a failure, got {outcome:?}");
    outcome.error.as_deref().unwrap()
}

#[tokio::test]
async fn a_threshold_probe_passes_then_fails_with_the_value_after_the_metric_changes() {
    faultline::cli::install_crypto_provider();
    let gauge = Gauge::default();
    gauge.set(2.0);
    let target = serve_metrics(gauge.clone()).await;
    let prometheus = Prometheus::start(&target).await;
    prometheus.wait_for("checkout_errors", "2").await;

    let probe = prometheus.probe("query: checkout_errors, operator: '<', value: 5");
    let outcome = probe.run_once().await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.value.as_deref(), Some("2"));

    gauge.set(7.0);
    prometheus.wait_for("checkout_errors", "7").await;
    let outcome = probe.run_once().await;
    assert_eq!(
        error(&outcome),
        format!(
            "probe checkout-errors: query \"checkout_errors\" returned 7 for \
             checkout_errors{{instance=\"{target}\", job=\"shop\"}}, expected < 5"
        )
    );
    assert_eq!(outcome.value.as_deref(), Some("7"));

    // A scalar result is compared the same way.
    let scalar = prometheus.probe("query: 'scalar(checkout_errors)', operator: '>=', value: 7");
    let outcome = scalar.run_once().await;
    assert!(outcome.ok, "{outcome:?}");
}

#[tokio::test]
async fn every_sample_of_a_vector_must_pass() {
    faultline::cli::install_crypto_provider();
    let target = serve_metrics(Gauge::default()).await;
    let prometheus = Prometheus::start(&target).await;
    prometheus.wait_for("count(checkout_ready)", "2").await;

    // zone a has 3 ready, zone b has 1.
    let outcome = prometheus
        .probe("query: checkout_ready, operator: '>=', value: 1")
        .run_once()
        .await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.value.as_deref(), Some("2 samples, min 1, max 3"));
    let outcome = prometheus
        .probe("query: checkout_ready, operator: '>=', value: 2")
        .run_once()
        .await;
    let message = error(&outcome);
    assert!(
        message.contains("returned 1 for checkout_ready{")
            && message.contains("zone=\"b\"}, expected >= 2"),
        "{message}"
    );
}

#[tokio::test]
async fn empty_results_nan_and_bad_queries_are_reported_in_prometheus_words() {
    faultline::cli::install_crypto_provider();
    // Nothing to scrape is needed here; point Prometheus at a metrics endpoint anyway.
    let target = serve_metrics(Gauge::default()).await;
    let prometheus = Prometheus::start(&target).await;

    // No series has this name: onEmpty decides.
    let empty = "query: no_such_metric, operator: '==', value: 0";
    let outcome = prometheus.probe(empty).run_once().await;
    assert_eq!(
        error(&outcome),
        "probe checkout-errors: query \"no_such_metric\" returned no samples (onEmpty: Fail)"
    );
    let outcome = prometheus
        .probe(&format!("{empty}, onEmpty: Pass"))
        .run_once()
        .await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.value.as_deref(), Some("no samples"));

    // 0/0 is what an error ratio gives with no traffic: no data, judged by onEmpty.
    let nan = "query: '0/0', operator: '!=', value: 1";
    let outcome = prometheus.probe(nan).run_once().await;
    assert_eq!(
        error(&outcome),
        "probe checkout-errors: query \"0/0\" returned NaN (onEmpty: Fail)"
    );
    let outcome = prometheus
        .probe(&format!("{nan}, onEmpty: Pass"))
        .run_once()
        .await;
    assert!(outcome.ok, "{outcome:?}");

    // A syntax error comes back with Prometheus's own text.
    let outcome = prometheus
        .probe("query: 'sum(checkout_errors', operator: '==', value: 0")
        .run_once()
        .await;
    let message = error(&outcome);
    assert!(
        message.starts_with(
            "probe checkout-errors: Prometheus rejected query \"sum(checkout_errors\": bad_data: "
        ) && message.contains("parse error"),
        "{message}"
    );

    // A range vector cannot be compared with a number.
    let outcome = prometheus
        .probe("query: 'checkout_errors[1m]', operator: '==', value: 0")
        .run_once()
        .await;
    assert!(
        error(&outcome).contains("returned a range vector"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_unreachable_prometheus_fails_naming_the_server() {
    faultline::cli::install_crypto_provider();
    let (_refusing, port) = common::refusing_port();
    let probe: Probe = serde_yaml::from_str(&format!(
        "{{name: checkout-errors, prometheus: {{url: 'http://127.0.0.1:{port}', query: up, \
         operator: '==', value: 1}}}}"
    ))
    .unwrap();
    let outcome = ProbeRunner::new(&probe, "shop", None)
        .unwrap()
        .run_once()
        .await;
    assert_eq!(
        error(&outcome),
        format!("probe checkout-errors: connection refused (http://127.0.0.1:{port}/api/v1/query)")
    );
}

#[tokio::test]
async fn an_endless_answer_fails_at_4_mib_within_the_timeout_and_is_not_read_further() {
    faultline::cli::install_crypto_provider();
    // A "Prometheus" whose instant vector never ends.
    let server = common::endless::serve_endless(
        "/api/v1/query",
        r#"{"status":"success","data":{"resultType":"vector","result":["#,
        |i| format!(r#"{{"metric":{{"__name__":"up","pod":"p{i}"}},"value":[1700000000,"1"]}},"#),
    )
    .await;
    let probe: Probe = serde_yaml::from_str(&format!(
        "{{name: checkout-errors, timeout: 10s, prometheus: {{url: '{}', query: up, \
         operator: '==', value: 1}}}}",
        server.url
    ))
    .unwrap();
    let started = Instant::now();
    let outcome = ProbeRunner::new(&probe, "shop", None)
        .unwrap()
        .run_once()
        .await;
    assert_eq!(
        error(&outcome),
        format!(
            "probe checkout-errors: Prometheus's answer to query \"up\" exceeds 4 MiB ({}/api/v1/query); \
             make the query return fewer series, e.g. aggregate with sum, max or topk",
            server.url
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    common::endless::assert_reading_stopped(&server, MAX_ANSWER_BYTES).await;
}
