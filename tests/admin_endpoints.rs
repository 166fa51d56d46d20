//! The controller's admin port: /healthz, /readyz (leadership known, caches synced on the
//! leader) and /metrics in the OpenMetrics text format.

use std::sync::Arc;

use faultline::{admin, metrics::Metrics};

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("admin port answers");
    let code = response.status().as_u16();
    (code, response.text().await.unwrap())
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_as_their_state_changes() {
    faultline::cli::install_crypto_provider();
    let readiness = Arc::new(admin::Readiness::default());
    let metrics = Metrics::default();
    metrics.reconciliations.inc();
    let addr = admin::serve(
        "127.0.0.1:0".parse().unwrap(),
        readiness.clone(),
        metrics.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{addr}");

    assert_eq!(get(&format!("{base}/healthz")).await, (200, "ok".into()));
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        503,
        "leadership not known yet"
    );
    readiness.set_leader(false);
    assert_eq!(
        get(&format!("{base}/readyz")).await,
        (200, "standby".into())
    );
    readiness.set_leader(true);
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        503,
        "leader without synced caches"
    );
    readiness.set_caches_synced(true);
    assert_eq!(get(&format!("{base}/readyz")).await, (200, "leader".into()));

    let (code, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200);
    assert!(text.contains("faultline_reconciliations_total 1"), "{text}");
    assert!(
        text.contains("# TYPE faultline_abort_latency_seconds histogram"),
        "{text}"
    );
}
