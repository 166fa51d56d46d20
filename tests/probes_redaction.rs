//! What failing probes say, against real sockets: no URL secret (a userinfo password, a
//! `token` parameter) in any message, no control character a probed server sent, and a hint
//! for an `https://` URL to a plain-HTTP port.

use std::time::Duration;

use faultline::{api::Probe, probes::ProbeRunner};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const PASSWORD: &str = "s3cretPassw0rd";
const TOKEN: &str = "TOPSECRETTOKEN";

fn runner(yaml: &str) -> ProbeRunner {
    faultline::cli::install_crypto_provider();
    let probe: Probe = serde_yaml::from_str(yaml).unwrap();
    ProbeRunner::new(&probe, "shop", None).unwrap()
}

/// A server on a free port that answers every connection with `answer` (or, with `None`, reads
/// the request and never answers).
async fn serve(answer: Option<String>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                match answer {
                    Some(answer) => {
                        let _ = socket.write_all(answer.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    port
}

fn http_answer(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn assert_no_secret(error: &str) {
    assert!(!error.contains(PASSWORD), "password in {error:?}");
    assert!(!error.contains(TOKEN), "token in {error:?}");
}

fn assert_printable(text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\t'),
        "control character in {text:?}"
    );
}

#[tokio::test]
async fn a_refused_probe_names_its_url_without_the_password_or_token() {
    // A port nothing listens on: bind one, then let it go.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let probe = runner(&format!(
        "{{name: hostile, timeout: 1s, http: {{url: 'http://admin:{PASSWORD}@127.0.0.1:{port}/healthz?token={TOKEN}&x=1'}}}}"
    ));
    let outcome = probe.run_once().await;
    let error = outcome.error.unwrap();
    assert_no_secret(&error);
    assert!(
        error.contains(&format!(
            "http://admin:xxxxx@127.0.0.1:{port}/healthz?token=xxxxx&x=1"
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_probe_that_times_out_names_its_url_without_the_password() {
    let port = serve(None).await;
    let probe = runner(&format!(
        "{{name: hostile, interval: 5s, timeout: 300ms, \
          http: {{url: 'http://admin:{PASSWORD}@127.0.0.1:{port}/healthz?token={TOKEN}'}}}}"
    ));
    let error = probe.run_once().await.error.unwrap();
    assert_no_secret(&error);
    assert!(
        error.contains("timed out after 300ms (GET http://admin:xxxxx@"),
        "{error}"
    );
}

#[tokio::test]
async fn a_probe_whose_status_is_wrong_says_so_without_the_password() {
    let port = serve(Some(http_answer(
        "503 Service Unavailable",
        "text/plain",
        "down",
    )))
    .await;
    let probe = runner(&format!(
        "{{name: hostile, timeout: 1s, \
          http: {{url: 'http://admin:{PASSWORD}@127.0.0.1:{port}/?api_key={TOKEN}', bodyRegex: ok}}}}"
    ));
    let outcome = probe.run_once().await;
    assert_no_secret(&outcome.error.unwrap());
}

#[tokio::test]
async fn a_prometheus_server_with_a_password_is_named_without_it() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let probe = runner(&format!(
        "{{name: hostile, timeout: 1s, prometheus: {{url: 'http://admin:{PASSWORD}@127.0.0.1:{port}/', \
          query: up, operator: '==', value: 1}}}}"
    ));
    let error = probe.run_once().await.error.unwrap();
    assert_no_secret(&error);
    assert!(error.contains("http://admin:xxxxx@127.0.0.1"), "{error}");
}

#[tokio::test]
async fn control_characters_in_a_prometheus_error_are_escaped() {
    let body = r#"{"status":"error","errorType":"bad_data","error":"boom\u001b[2J\u001b[31m\u0007\u0000\u0008 <img src=x onerror=alert(1)>"}"#;
    let port = serve(Some(http_answer(
        "400 Bad Request",
        "application/json",
        body,
    )))
    .await;
    let probe = runner(&format!(
        "{{name: hostile, timeout: 1s, prometheus: {{url: 'http://127.0.0.1:{port}', \
          query: up, operator: '==', value: 1}}}}"
    ));
    let error = probe.run_once().await.error.unwrap();
    assert_printable(&error);
    assert!(
        error.contains(r"boom\u{1b}[2J\u{1b}[31m\u{7}\u{0}\u{8}"),
        "{error}"
    );
}

#[tokio::test]
async fn control_characters_in_a_prometheus_sample_are_escaped() {
    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job\u001b[31m":"a"},"value":[1,"5\u001b[2J"]}]}}"#;
    let port = serve(Some(http_answer("200 OK", "application/json", body))).await;
    let probe = runner(&format!(
        "{{name: hostile, timeout: 1s, prometheus: {{url: 'http://127.0.0.1:{port}', \
          query: up, operator: '==', value: 1}}}}"
    ));
    let outcome = probe.run_once().await;
    assert_printable(&outcome.error.unwrap());
    assert_printable(&outcome.value.unwrap());
}

#[tokio::test]
async fn control_characters_in_an_http_body_are_escaped() {
    let port = serve(Some(http_answer(
        "200 OK",
        "text/plain",
        "\u{1b}[2J\u{1b}[31mnope\u{7}",
    )))
    .await;
    let probe = runner(&format!(
        "{{name: hostile, timeout: 1s, http: {{url: 'http://127.0.0.1:{port}/', bodyRegex: '^ok$'}}}}"
    ));
    let error = probe.run_once().await.error.unwrap();
    assert_printable(&error);
    assert!(error.contains("body did not match"), "{error}");
}

#[tokio::test]
async fn https_to_a_plain_http_port_suggests_http() {
    let port = serve(Some(http_answer("200 OK", "text/plain", "ok"))).await;
    let probe = runner(&format!(
        "{{name: hostile, timeout: 1s, http: {{url: 'https://127.0.0.1:{port}/'}}}}"
    ));
    let error = probe.run_once().await.error.unwrap();
    assert!(
        error.contains("does not speak TLS on this port (use http://?)"),
        "{error}"
    );
}
