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

/// `/readyz` on a leader turns 200 once the running controller's watch caches have listed
/// (it used to wait on `Store::wait_until_ready`, which never woke it: the controller's own
/// runner waits on the same store, and only the last waiter is woken).
#[tokio::test]
async fn a_running_leader_becomes_ready_once_its_caches_have_listed() {
    use std::time::Duration;

    use faultline::{
        api::all_crds,
        controller::{self, Clients, HypothesisSource, Settings, Telemetry},
        sandbox::{apiserver::ApiServer, testkit::ScriptedProbes},
    };

    faultline::cli::install_crypto_provider();
    let server = ApiServer::start(0).await.unwrap();
    server.install_crds(&all_crds()).await.unwrap();
    let telemetry = Telemetry::default();
    telemetry.readiness.set_leader(true);
    assert!(telemetry.readiness.check().is_err(), "not listed yet");
    let (_trigger, triggers) = tokio::sync::mpsc::unbounded_channel();
    let hypotheses: Arc<dyn HypothesisSource> = Arc::new(ScriptedProbes::default());
    let controller = tokio::spawn(controller::run(
        Clients::counted(server.client_config(), &telemetry.metrics).unwrap(),
        Settings::default(),
        hypotheses,
        triggers,
        telemetry.clone(),
        std::future::pending(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while telemetry.readiness.check() != Ok("leader") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {:?} after 15s",
            telemetry.readiness.check()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its caches' lists and watches went through the counted client. Ready means listed; a
    // cache's watch is counted once its answer is in, which can come a moment later.
    let series = [
        r#"faultline_api_requests_total{verb="list",resource="chaosexperiments",code="200"}"#,
        r#"faultline_api_requests_total{verb="watch",resource="faultinjections",code="200"}"#,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = telemetry.metrics.render();
        let missing: Vec<&str> = series
            .iter()
            .copied()
            .filter(|s| !metrics.contains(s))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {missing:?} in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    controller.abort();
    server.shutdown().await;
}

/// Every request is counted once its answer is in, under the verb and resource the API
/// server's audit log would name, and the answer's code, refusals included.
#[tokio::test]
async fn api_requests_are_counted_by_verb_resource_and_answer() {
    use faultline::api_requests::{RequestCounts, counted_client};
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::{Api, ListParams, PostParams};

    faultline::cli::install_crypto_provider();
    let server = faultline::sandbox::apiserver::ApiServer::start(0)
        .await
        .unwrap();
    let counts = RequestCounts::default();
    let client = counted_client(server.client_config(), counts.clone()).unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.list(&ListParams::default()).await.unwrap();
    pods.list(&ListParams::default()).await.unwrap();
    assert!(pods.get("nobody").await.is_err(), "no such pod");
    let config_maps: Api<ConfigMap> = Api::namespaced(client, "default");
    let map: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "counted"}})).unwrap();
    config_maps
        .create(&PostParams::default(), &map)
        .await
        .unwrap();
    assert!(
        config_maps
            .create(&PostParams::default(), &map)
            .await
            .is_err(),
        "it exists"
    );

    let mut registry = prometheus_client::registry::Registry::with_prefix("faultline");
    registry.register("api_requests", "", counts);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for series in [
        r#"faultline_api_requests_total{verb="list",resource="pods",code="200"} 2"#,
        r#"faultline_api_requests_total{verb="get",resource="pods",code="404"} 1"#,
        r#"faultline_api_requests_total{verb="create",resource="configmaps",code="201"} 1"#,
        r#"faultline_api_requests_total{verb="create",resource="configmaps",code="409"} 1"#,
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }
    server.shutdown().await;
}
