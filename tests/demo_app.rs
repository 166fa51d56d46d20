//! `faultline demo-app` on 127.0.0.1: health, `/work` through healthy and dead downstreams,
//! metrics, and (as a process) settings from the environment and a graceful SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use faultline::demo_app::{DemoConfig, serve};
use serde_json::Value;

/// Serves `config` on a free port of 127.0.0.1 until the test ends.
async fn start(config: DemoConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, config, std::future::pending()));
    addr
}

fn client() -> reqwest::Client {
    faultline::cli::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn healthz_answers_ok() {
    let addr = start(DemoConfig::default()).await;
    let answer = client()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn work_lists_each_healthy_downstream_with_its_status_and_latency() {
    let backend = start(DemoConfig {
        name: "backend".into(),
        ..Default::default()
    })
    .await;
    let downstream = format!("http://{backend}/work");
    let frontend = start(DemoConfig {
        name: "frontend".into(),
        downstreams: vec![downstream.clone()],
        ..Default::default()
    })
    .await;
    let answer = client()
        .get(format!("http://{frontend}/work"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["name"], "frontend");
    let calls = body["downstreams"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{body}");
    assert_eq!(calls[0]["url"], downstream.as_str());
    assert_eq!(calls[0]["status"], 200);
    assert!(calls[0]["latencyMs"].as_f64().unwrap() >= 0.0, "{body}");

    // The request and its latency show in the metrics.
    let metrics = client()
        .get(format!("http://{frontend}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"demo_requests_total{path="/work",code="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("demo_work_duration_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn work_answers_502_naming_a_dead_downstream() {
    let healthy = start(DemoConfig::default()).await;
    let (_refusing, dead_port) = common::refusing_port();
    let dead = format!("http://127.0.0.1:{dead_port}/work");
    let frontend = start(DemoConfig {
        downstreams: vec![format!("http://{healthy}/healthz"), dead.clone()],
        ..Default::default()
    })
    .await;
    let answer = client()
        .get(format!("http://{frontend}/work"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["failedDownstream"], dead.as_str(), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains(&dead),
        "the error names the downstream: {body}"
    );
    // The healthy one is still listed with its answer.
    assert_eq!(body["downstreams"][0]["status"], 200, "{body}");
    assert!(body["downstreams"][1]["status"].is_null(), "{body}");
}

#[tokio::test]
async fn a_downstream_slower_than_the_timeout_counts_as_failed() {
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let frontend = start(DemoConfig {
        downstreams: vec![format!("http://{silent_addr}/work")],
        downstream_timeout: Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let answer = client()
        .get(format!("http://{frontend}/work"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
}

/// The binary reads its settings from the environment (as a pod spec sets them) and stops
/// cleanly on SIGTERM.
#[tokio::test]
async fn the_command_takes_settings_from_the_environment_and_stops_on_sigterm() {
    let (_refusing, dead_port) = common::refusing_port();
    let dead = format!("http://127.0.0.1:{dead_port}/work");
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("demo-app")
        .env("DEMO_LISTEN", "127.0.0.1:0")
        .env("DEMO_DOWNSTREAM", format!("{dead},"))
        .env("DEMO_NAME", "from-env")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"));

    let answer = client()
        .get(format!("http://{addr}/work"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 502);
    let body: Value = serde_json::from_str(&answer.text().await.unwrap()).unwrap();
    assert_eq!(body["name"], "from-env");
    // The trailing comma of DEMO_DOWNSTREAM does not make an empty downstream.
    assert_eq!(body["downstreams"].as_array().unwrap().len(), 1, "{body}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo-app ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
