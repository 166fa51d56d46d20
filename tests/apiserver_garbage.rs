//! Malformed requests at every route get a Status error (never a panic, never a 5xx), and the
//! server keeps answering.

mod common;

use common::server;
use http::{Method, Request};
use serde_json::Value;

const PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/v1",
    "/apis",
    "/apis/apps",
    "/apis/apps/v1",
    "/apis/nope/v1",
    "/version",
    "/openapi/v2",
    "/openapi/v3",
    "/openapi/v3/api/v1",
    "/openapi/v3/apis/nope/v9",
    "/api/v1/pods",
    "/api/v1/namespaces",
    "/api/v1/namespaces/default",
    "/api/v1/namespaces/default/status",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/pods/x",
    "/api/v1/namespaces/default/pods/x/status",
    "/api/v1/namespaces/default/pods/x/log",
    "/api/v1/namespaces/default/pods/x/status/extra",
    "/api/v1/namespaces/nope/configmaps",
    "/api/v1/nodes/n1",
    "/api/v1/namespaces/default/nodes/n1",
    "/apis/apps/v1/namespaces/default/deployments/d/status",
    "/apis/apps/v1/namespaces/default/deployments/d/scale",
    "/apis/apps/v1/namespaces/default/replicasets/r/scale",
    "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
    "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
    "/apis/events.k8s.io/v1/events",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x",
    "/api/v1/namespaces//pods",
    "/api/v9/pods",
    "/apis/apps/v1/namespaces/default/unknowns",
    "/%00/%ff",
];

const QUERIES: &[&str] = &[
    "",
    "?watch=true&timeoutSeconds=0",
    "?watch=true&resourceVersion=abc",
    "?watch=1&resourceVersion=99999999999999999999",
    "?labelSelector=a%20in%20(b",
    "?labelSelector=%3D%3D%3D",
    "?fieldSelector=spec.foo%3Dbar",
    "?fieldSelector=!!",
    "?limit=-1",
    "?limit=x&continue=nope",
    "?continue=a/b",
    "?dryRun=Maybe",
    "?fieldValidation=Loud",
    "?propagationPolicy=Nope",
    "?timeoutSeconds=9999999999999999999999",
];

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let huge_selector = format!("{{\"metadata\":{{\"name\":\"{}\"}}}}", "a".repeat(100_000));
    vec![
        ("application/json", b"".to_vec()),
        ("application/json", b"{not json".to_vec()),
        ("application/json", b"[1,2,3]".to_vec()),
        ("application/json", b"\"str\"".to_vec()),
        (
            "application/json",
            br#"{"kind":"Wrong","apiVersion":"v1","metadata":{"name":"x"}}"#.to_vec(),
        ),
        (
            "application/json",
            br#"{"apiVersion":"v9","metadata":{"name":"x"}}"#.to_vec(),
        ),
        ("application/json", br#"{"metadata":"nope"}"#.to_vec()),
        ("application/json", br#"{"metadata":{"name":7}}"#.to_vec()),
        (
            "application/json",
            br#"{"metadata":{"name":"x","resourceVersion":"zz"},"status":{"phase":1}}"#.to_vec(),
        ),
        ("application/json", huge_selector.into_bytes()),
        (
            "application/json-patch+json",
            br#"[{"op":"remove","path":"/nope/x"}]"#.to_vec(),
        ),
        ("application/json-patch+json", br#"{"op":"add"}"#.to_vec()),
        ("application/merge-patch+json", b"[]".to_vec()),
        (
            "application/strategic-merge-patch+json",
            br#"{"spec":{"containers":[{"image":"x"}],"$patch":"bogus"}}"#.to_vec(),
        ),
        ("application/apply-patch+yaml", b"a: [unclosed".to_vec()),
        (
            "application/apply-patch+yaml",
            b"- just\n- a list\n".to_vec(),
        ),
        (
            "application/vnd.kubernetes.protobuf",
            b"k8s\x00\x01\x02".to_vec(),
        ),
        ("text/plain", b"hello".to_vec()),
        ("application/json", vec![0xff, 0xfe, 0x00]),
    ]
}

#[tokio::test]
async fn garbage_never_panics() {
    let srv = server().await;
    let client = srv.client().await;
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ];
    let bodies = bodies();
    let mut count = 0usize;
    for path in PATHS {
        for (qi, query) in QUERIES.iter().enumerate() {
            for method in &methods {
                // every body for one query, the first two bodies for the others (keeps it fast)
                let take = if qi == 0 { bodies.len() } else { 2 };
                for (ctype, body) in bodies.iter().take(take) {
                    let uri = format!("{path}{query}");
                    let req = Request::builder()
                        .method(method.clone())
                        .uri(&uri)
                        .header("content-type", *ctype)
                        .body(body.clone())
                        .unwrap();
                    let resp = client.send(req.map(Into::into)).await;
                    let resp = match resp {
                        Ok(r) => r,
                        Err(e) => panic!("{method} {uri}: transport error {e}"),
                    };
                    let code = resp.status().as_u16();
                    assert!(code < 500, "{method} {uri} ({ctype}) -> {code}");
                    let is_watch_ok = code == 200 && query.contains("watch");
                    if code >= 400 && !is_watch_ok {
                        let bytes = http_body_util::BodyExt::collect(resp.into_body())
                            .await
                            .unwrap()
                            .to_bytes();
                        let status: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                            panic!("{method} {uri} -> {code} without a Status body ({e})")
                        });
                        assert_eq!(status["kind"], "Status", "{method} {uri}");
                        assert_eq!(status["code"], code, "{method} {uri}");
                    }
                    count += 1;
                }
            }
        }
    }
    assert!(count > 3000, "{count} requests");
    // still alive and consistent
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    assert_eq!(ns.list(&Default::default()).await.unwrap().items.len(), 3);
    srv.shutdown().await;
}
