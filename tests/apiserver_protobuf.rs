//! `application/vnd.kubernetes.protobuf` over HTTP: what kubectl sends is created as sent, a
//! body with a field the server does not know is refused (never created without it), custom
//! resources stay JSON-only, and a client that accepts only protobuf gets protobuf. The scale
//! subresource takes a protobuf Scale too.

mod common;

use common::server;
use reqwest::StatusCode;
use serde_json::{Value, json};

const CONFIGMAP: &[u8] =
    include_bytes!("../src/sandbox/apiserver/protobuf/testdata/kubectl-create-configmap.pb");
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let field = |n: u8, bytes: &[u8]| {
        let mut out = vec![(n << 3) | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    };
    let mut type_meta = field(1, api_version.as_bytes());
    type_meta.extend(field(2, kind.as_bytes()));
    let mut body = b"k8s\0".to_vec();
    body.extend(field(1, &type_meta));
    body.extend(field(2, raw));
    body
}

/// `metadata: {name}` (ObjectMeta is field 1 of every object).
fn named(name: &str) -> Vec<u8> {
    let mut meta = vec![0x0a, name.len() as u8];
    meta.extend_from_slice(name.as_bytes());
    let mut raw = vec![0x0a, meta.len() as u8];
    raw.extend(meta);
    raw
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    accept: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, String, Vec<u8>) {
    let mut req = http.request(method, url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    if let Some((ctype, bytes)) = body {
        req = req.header("content-type", ctype).body(bytes);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.bytes().await.unwrap().to_vec())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[tokio::test]
async fn protobuf_bodies_and_answers() {
    faultline::cli::install_crypto_provider();
    let srv = server().await;
    let http = reqwest::Client::new();
    let base = srv.url();
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let (status, _, _) = send(
        &http,
        post.clone(),
        &format!("{base}/api/v1/namespaces"),
        None,
        Some((
            "application/json",
            br#"{"metadata":{"name":"shop"}}"#.to_vec(),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // kubectl create configmap settings --from-literal=color=blue --from-literal=size=10 -n shop
    let cms = format!("{base}/api/v1/namespaces/shop/configmaps");
    let (status, ctype, body) = send(
        &http,
        post.clone(),
        &cms,
        Some("application/vnd.kubernetes.protobuf, application/json"),
        Some((PROTOBUF, CONFIGMAP.to_vec())),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    // kubectl accepts JSON too, and gets JSON.
    assert_eq!(ctype, "application/json");
    let created = json_of(&body);
    assert_eq!(created["data"], json!({"color": "blue", "size": "10"}));
    assert_eq!(created["metadata"]["name"], "settings");

    // A client that takes only protobuf gets protobuf.
    let (status, ctype, body) = send(
        &http,
        get.clone(),
        &format!("{cms}/settings"),
        Some(PROTOBUF),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, PROTOBUF);
    assert!(
        body.starts_with(b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap"),
        "{body:?}"
    );
    assert!(body.windows(4).any(|w| w == b"blue"));
    // ... errors included (a Status in protobuf).
    let (status, ctype, body) = send(
        &http,
        get.clone(),
        &format!("{cms}/nope"),
        Some(PROTOBUF),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(ctype, PROTOBUF);
    assert!(body.windows(6).any(|w| w == b"Status"));

    // A field the tables do not know (1000, varint) is refused, and nothing is created.
    let mut raw = named("odd");
    raw.extend([0xc0, 0x3e, 0x01]);
    let (status, _, body) = send(
        &http,
        post.clone(),
        &cms,
        None,
        Some((PROTOBUF, envelope("v1", "ConfigMap", &raw))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = json_of(&body)["message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap: protobuf field 1000 of core.v1.ConfigMap is not known"),
        "{message}"
    );
    let (status, _, _) = send(&http, get.clone(), &format!("{cms}/odd"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Not protobuf at all.
    let (status, _, body) = send(
        &http,
        post.clone(),
        &cms,
        None,
        Some((PROTOBUF, b"garbage".to_vec())),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(&body)["message"],
        "the object provided is unrecognized (must be of type ConfigMap): provided data does not \
         appear to be a protobuf message, expected prefix [107 56 115 0] (67617262616765)"
    );

    // Custom resources are JSON-only: 415 for a protobuf body, 406 for a protobuf-only Accept.
    srv.install_crds(&faultline::api::all_crds()).await.unwrap();
    let experiments =
        format!("{base}/apis/faultline.dev/v1alpha1/namespaces/shop/chaosexperiments");
    let (status, _, _) = send(
        &http,
        post.clone(),
        &experiments,
        None,
        Some((
            PROTOBUF,
            envelope("faultline.dev/v1alpha1", "ChaosExperiment", &named("x")),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _, _) = send(&http, get.clone(), &experiments, Some(PROTOBUF), None).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    let (status, _, _) = send(&http, get.clone(), &cms, Some("text/html"), None).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);

    // PUT of a Scale in protobuf: {metadata: {name: web}, spec: {replicas: 5}}.
    let deployment = faultline::sandbox::workloads::deployment("shop", "web", 1, &[("app", "web")]);
    let (status, _, _) = send(
        &http,
        post,
        &format!("{base}/apis/apps/v1/namespaces/shop/deployments"),
        None,
        Some(("application/json", serde_json::to_vec(&deployment).unwrap())),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let scale_url = format!("{base}/apis/apps/v1/namespaces/shop/deployments/web/scale");
    let mut raw = named("web");
    raw.extend([0x12, 0x02, 0x08, 0x05]);
    let (status, _, body) = send(
        &http,
        reqwest::Method::PUT,
        &scale_url,
        None,
        Some((PROTOBUF, envelope("autoscaling/v1", "Scale", &raw))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let scale = json_of(&body);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let (_, _, body) = send(
        &http,
        get,
        &format!("{base}/apis/apps/v1/namespaces/shop/deployments/web"),
        None,
        None,
    )
    .await;
    let stored = json_of(&body);
    assert_eq!(stored["spec"]["replicas"], 5);
    assert_eq!(stored["metadata"]["generation"], 2);
    let managers: Vec<&str> = stored["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["subresource"].as_str())
        .collect();
    assert_eq!(managers, ["scale"]);
    srv.shutdown().await;
}
