//! HTTP probes against real servers on 127.0.0.1: every HttpProbe option passes and fails as
//! it should, with the message a person reads in status. Also the scheduler, which runs real
//! checks on an interval.
//!
//! Time limits here are wide on purpose (a route sleeping 1s against a 200ms maxLatency), so a
//! busy machine does not make the tests flaky.

mod common;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode},
    routing::{any, get},
};
use faultline::{
    api::{Probe, ProbePhase},
    probes::{CheckOutcome, MAX_BODY_BYTES, ProbeReport, ProbeRunner, run_probes},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, watch},
};
use tokio_util::sync::CancellationToken;

/// The test service: answers fast, slow, never, with a status or a body; `/echo` repeats the
/// method, the `x-token` header and the body.
async fn serve() -> String {
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/created", get(|| async { (StatusCode::CREATED, "made") }))
        .route(
            "/unavailable",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "ok"
            }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(600)).await;
                "too late"
            }),
        )
        .route("/status", get(|| async { "checkout: green\nqueue: 3" }))
        .route(
            "/echo",
            any(
                |method: Method, headers: HeaderMap, body: Bytes| async move {
                    let token = headers
                        .get("x-token")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    format!(
                        "method={method} token={token} body={}",
                        String::from_utf8_lossy(&body)
                    )
                },
            ),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn runner(yaml: &str) -> ProbeRunner {
    faultline::cli::install_crypto_provider();
    let probe: Probe = serde_yaml::from_str(yaml).unwrap();
    ProbeRunner::new(&probe, "shop", None).unwrap()
}

/// Runs one check of an HTTP probe named `checkout-healthy` with a 10s timeout; `extra` is
/// more YAML for the `http` map.
async fn check(url: &str, extra: &str) -> CheckOutcome {
    runner(&format!(
        "{{name: checkout-healthy, timeout: 10s, http: {{url: '{url}', {extra}}}}}"
    ))
    .run_once()
    .await
}

fn error(outcome: &CheckOutcome) -> &str {
    assert!(!outcome.ok, "expected a failure, got {outcome:?}");
    outcome.error.as_deref().unwrap()
}

#[tokio::test]
async fn any_2xx_passes_when_no_status_is_listed() {
    let base = serve().await;
    for path in ["/ok", "/created"] {
        let outcome = check(&format!("{base}{path}"), "").await;
        assert!(outcome.ok, "{path}: {outcome:?}");
        assert_eq!(outcome.error, None);
    }
    let outcome = check(&format!("{base}/created"), "").await;
    assert!(outcome.value.unwrap().starts_with("201 in "));
}

#[tokio::test]
async fn a_503_fails_naming_the_status_and_what_was_expected() {
    let base = serve().await;
    let outcome = check(&format!("{base}/unavailable"), "").await;
    assert_eq!(
        error(&outcome),
        "probe checkout-healthy: status 503, expected 2xx"
    );
    assert!(outcome.value.unwrap().starts_with("503 in "));
    let outcome = check(&format!("{base}/unavailable"), "expectedStatus: [200]").await;
    assert_eq!(
        error(&outcome),
        "probe checkout-healthy: status 503, expected 200"
    );
}

#[tokio::test]
async fn expected_status_accepts_exactly_the_listed_codes() {
    let base = serve().await;
    let outcome = check(&format!("{base}/unavailable"), "expectedStatus: [500, 503]").await;
    assert!(outcome.ok, "{outcome:?}");
    let outcome = check(&format!("{base}/created"), "expectedStatus: [200]").await;
    assert_eq!(
        error(&outcome),
        "probe checkout-healthy: status 201, expected 200"
    );
}

#[tokio::test]
async fn an_answer_slower_than_max_latency_fails_with_the_latency() {
    let base = serve().await;
    let outcome = check(&format!("{base}/slow"), "maxLatency: 200ms").await;
    let message = error(&outcome);
    assert!(
        message.starts_with("probe checkout-healthy: latency ")
            && message.ends_with("ms over maxLatency 200ms"),
        "{message}"
    );
    assert!(outcome.latency >= Duration::from_secs(1));
    let outcome = check(&format!("{base}/ok"), "maxLatency: 5s").await;
    assert!(outcome.ok, "{outcome:?}");
}

#[tokio::test]
async fn the_body_must_match_the_regex() {
    let base = serve().await;
    let outcome = check(
        &format!("{base}/status"),
        r"bodyRegex: 'checkout: (green|yellow)'",
    )
    .await;
    assert!(outcome.ok, "{outcome:?}");
    let outcome = check(&format!("{base}/status"), "bodyRegex: '^ok$'").await;
    assert_eq!(
        error(&outcome),
        r#"probe checkout-healthy: body did not match /^ok$/ (body: "checkout: green\nqueue: 3")"#
    );
}

#[tokio::test]
async fn an_endless_body_fails_the_regex_at_1_mib_within_the_timeout_and_is_not_read_further() {
    let server = common::endless::serve_endless("/stream", "", |i| format!("line {i}\n")).await;
    let started = std::time::Instant::now();
    let outcome = check(
        &format!("{}/stream", server.url),
        "bodyRegex: 'never there'",
    )
    .await;
    assert_eq!(
        error(&outcome),
        format!(
            "probe checkout-healthy: status 200, response body exceeds 1 MiB; bodyRegex is only \
             matched against bodies up to 1 MiB ({}/stream)",
            server.url
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    common::endless::assert_reading_stopped(&server, MAX_BODY_BYTES).await;
}

#[tokio::test]
async fn without_a_regex_an_endless_body_is_read_up_to_the_cap_and_the_status_decides() {
    let server = common::endless::serve_endless("/stream", "", |i| format!("line {i}\n")).await;
    let outcome = check(&format!("{}/stream", server.url), "").await;
    assert!(outcome.ok, "{outcome:?}");
    assert!(outcome.value.unwrap().starts_with("200 in "));
    common::endless::assert_reading_stopped(&server, MAX_BODY_BYTES).await;
}

#[tokio::test]
async fn a_body_announced_over_the_cap_is_refused_before_it_is_read() {
    let app = Router::new().route("/big", get(|| async { "x".repeat(MAX_BODY_BYTES + 1) }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let outcome = check(&format!("http://{addr}/big"), "bodyRegex: x").await;
    assert!(
        error(&outcome).contains("response body exceeds 1 MiB"),
        "{outcome:?}"
    );
    // One byte under the cap is matched as usual.
    let app = Router::new().route("/fits", get(|| async { "x".repeat(MAX_BODY_BYTES) }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let outcome = check(&format!("http://{addr}/fits"), "bodyRegex: 'x$'").await;
    assert!(outcome.ok, "{:?}", outcome.error);
}

#[tokio::test]
async fn every_failed_expectation_is_in_the_message() {
    let base = serve().await;
    let outcome = check(
        &format!("{base}/unavailable"),
        "expectedStatus: [200], bodyRegex: ok",
    )
    .await;
    assert_eq!(
        error(&outcome),
        r#"probe checkout-healthy: status 503, expected 200; body did not match /ok/ (body: "down")"#
    );
}

#[tokio::test]
async fn method_headers_and_body_are_sent() {
    let base = serve().await;
    let outcome = check(
        &format!("{base}/echo"),
        "method: POST, headers: {x-token: s3cret}, body: '{\"order\": 1}', \
         bodyRegex: '^method=POST token=s3cret body=\\{\"order\": 1\\}$'",
    )
    .await;
    assert!(outcome.ok, "{outcome:?}");
    for method in ["PUT", "PATCH", "DELETE", "OPTIONS"] {
        let outcome = check(
            &format!("{base}/echo"),
            &format!("method: {method}, bodyRegex: '^method={method} '"),
        )
        .await;
        assert!(outcome.ok, "{method}: {outcome:?}");
    }
    // HEAD has no body to match, but its status still counts.
    let outcome = check(&format!("{base}/echo"), "method: HEAD").await;
    assert!(outcome.ok, "{outcome:?}");
}

#[tokio::test]
async fn a_refused_connection_fails_naming_the_url() {
    let (_refusing, port) = common::refusing_port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let outcome = check(&url, "").await;
    assert_eq!(
        error(&outcome),
        format!("probe checkout-healthy: connection refused ({url})")
    );
    assert_eq!(outcome.value, None);
}

#[tokio::test]
async fn a_check_over_its_timeout_fails_and_says_so() {
    let base = serve().await;
    let probe = runner(&format!(
        "{{name: checkout-healthy, timeout: 300ms, http: {{url: '{base}/hang'}}}}"
    ));
    let outcome = tokio::time::timeout(Duration::from_secs(30), probe.run_once())
        .await
        .expect("the probe's own timeout must end the check");
    assert_eq!(
        error(&outcome),
        format!("probe checkout-healthy: timed out after 300ms (GET {base}/hang)")
    );
    assert_eq!(outcome.latency, Duration::from_millis(300));
}

/// A minimal HTTPS server with a self-signed certificate (tests/fixtures, for 127.0.0.1): it
/// reads the request head and answers `200 ok`.
async fn serve_self_signed_tls() -> String {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    let cert = CertificateDer::from_pem_file("tests/fixtures/self-signed.crt").unwrap();
    let key = PrivateKeyDer::from_pem_file("tests/fixtures/self-signed.key").unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A failed handshake (the verifying client hangs up) is expected.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://127.0.0.1:{}", addr.port())
}

#[tokio::test]
async fn a_self_signed_certificate_fails_unless_insecure_skip_verify() {
    let base = serve_self_signed_tls().await;
    let outcome = check(&format!("{base}/healthz"), "").await;
    // What exactly the verifier says depends on the machine's trust store; that it rejects the
    // certificate does not.
    let message = error(&outcome);
    assert!(
        message.starts_with(
            "probe checkout-healthy: TLS certificate rejected: invalid peer certificate: ",
        ) && message.ends_with(&format!("({base}/healthz)")),
        "{message}"
    );
    let outcome = check(
        &format!("{base}/healthz"),
        "insecureSkipVerify: true, bodyRegex: '^ok$'",
    )
    .await;
    assert!(outcome.ok, "{outcome:?}");
}

/// Waits for the next report, at most 10s.
async fn next(reports: &mut mpsc::Receiver<ProbeReport>) -> ProbeReport {
    tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("a report within 10s")
        .expect("the scheduler is still running")
}

#[tokio::test]
async fn the_scheduler_checks_each_probe_at_its_interval_until_cancelled() {
    let base = serve().await;
    let probes = vec![
        runner(&format!(
            "{{name: up, interval: 100ms, http: {{url: '{base}/ok'}}}}"
        )),
        runner(&format!(
            "{{name: down, interval: 100ms, http: {{url: '{base}/unavailable'}}}}"
        )),
    ];
    let (_phase_tx, phase) = watch::channel(Some(ProbePhase::During));
    let (tx, mut reports) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let scheduler = tokio::spawn(run_probes(probes, phase, tx, cancel.clone()));

    let (mut up, mut down) = (0, 0);
    while up < 3 || down < 3 {
        let report = next(&mut reports).await;
        assert_eq!(report.phase, ProbePhase::During);
        match report.probe.as_str() {
            "up" => {
                assert!(report.outcome.ok, "{report:?}");
                up += 1;
            }
            "down" => {
                assert!(!report.outcome.ok, "{report:?}");
                down += 1;
            }
            other => panic!("unexpected probe {other}"),
        }
    }
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), scheduler)
        .await
        .expect("the scheduler stops when cancelled")
        .unwrap();
}

#[tokio::test]
async fn the_scheduler_runs_only_the_phases_probes_and_starts_at_once_on_a_change() {
    let base = serve().await;
    // The after-probe's interval is an hour: a report from it soon after the phase changes
    // can only come from the immediate check on the change.
    let probes = vec![
        runner(&format!(
            "{{name: after-only, interval: 1h, phases: [after], http: {{url: '{base}/ok'}}}}"
        )),
        runner(&format!(
            "{{name: during-only, interval: 100ms, phases: [during], http: {{url: '{base}/ok'}}}}"
        )),
    ];
    let (phase_tx, phase) = watch::channel(Some(ProbePhase::During));
    let (tx, mut reports) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let scheduler = tokio::spawn(run_probes(probes, phase, tx, cancel.clone()));

    for _ in 0..3 {
        assert_eq!(next(&mut reports).await.probe, "during-only");
    }
    phase_tx.send(Some(ProbePhase::After)).unwrap();
    loop {
        // A during-only check already under way may still report; then only after-only.
        let report = next(&mut reports).await;
        if report.probe == "after-only" {
            assert_eq!(report.phase, ProbePhase::After);
            break;
        }
    }
    // Dropping the receiver also stops the scheduler.
    drop(reports);
    phase_tx.send(Some(ProbePhase::During)).unwrap();
    tokio::time::timeout(Duration::from_secs(10), scheduler)
        .await
        .expect("the scheduler stops when nobody listens")
        .unwrap();
    drop(cancel);
}
