//! Metadata-only reads (`Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;
//! v=v1`), as kube-rs's `Api::get_metadata*`, `Api::list_metadata` and metadata watchers send
//! them, against the sandbox API server and, with `FAULTLINE_TEST_CLUSTER=real`, the real
//! control plane (the referee): the same expectations on both.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{TestCluster, real_cluster_requested};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    core::PartialObjectMeta,
    runtime::watcher,
};
use serde_json::{Value, json};

/// Stays between runs, as the cluster helper keeps namespaces (deleting one takes the
/// namespace controller seconds, and the next run would wait for it); its pods go.
const NAMESPACE: &str = "metadata-reads";
const METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

/// Runs `check` against the sandbox API server, then against the real control plane when the
/// run asks for it (`TestCluster` waits for its turn there and cleans up after the test before;
/// it fails, naming `scripts/cluster.sh up`, when the cluster cannot be read).
async fn on_each_server(check: impl AsyncFn(&'static str, Client)) {
    let sandbox = common::server().await;
    check("sandbox", sandbox.client().await).await;
    sandbox.shutdown().await;
    if real_cluster_requested() {
        let real = TestCluster::start().await;
        check("real", real.client().await).await;
        real.shutdown().await;
    } else {
        eprintln!(
            "metadata_reads: sandbox only; FAULTLINE_TEST_CLUSTER=real (after scripts/cluster.sh \
             up) checks the real control plane too"
        );
    }
}

/// Pods `web-0` and `web-1` (`app=web`) and `db-0` (`app=db`) in [`NAMESPACE`]. No node
/// exists, so on the real cluster they stay Pending and are deleted at once.
async fn labelled_pods(client: &Client) -> Api<Pod> {
    common::cluster::apply_namespace(client, NAMESPACE, false).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    for (name, app) in [("web-0", "web"), ("web-1", "web"), ("db-0", "db")] {
        create_pod(&pods, name, app).await;
    }
    pods
}

async fn create_pod(pods: &Api<Pod>, name: &str, app: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "app", "image": "demo"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {name}: {e}"))
}

async fn remove_pods(pods: &Api<Pod>) {
    pods.delete_collection(
        &DeleteParams::default().grace_period(0),
        &ListParams::default(),
    )
    .await
    .unwrap();
}

/// A raw GET of `path` accepting only `accept`: the body, or the failure's Status.
async fn raw_get(client: &Client, path: &str, accept: &str) -> Result<Value, kube::Error> {
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, accept)
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(request).await?;
    Ok(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}")))
}

type MetadataEvents = futures::stream::BoxStream<
    'static,
    Result<watcher::Event<PartialObjectMeta<Pod>>, watcher::Error>,
>;

async fn next_event(
    server: &str,
    events: &mut MetadataEvents,
) -> watcher::Event<PartialObjectMeta<Pod>> {
    tokio::time::timeout(Duration::from_secs(10), events.try_next())
        .await
        .unwrap_or_else(|_| panic!("{server}: no watch event within 10 s"))
        .unwrap_or_else(|e| panic!("{server}: {e}"))
        .expect("the watch goes on")
}

fn collection_path() -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/pods")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// Multi-threaded: the embedded API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_metadata_answers_with_the_whole_metadata_and_nothing_else() {
    on_each_server(async |server, client| {
        let pods = labelled_pods(&client).await;
        let full = pods.get("web-0").await.unwrap();
        let meta = pods.get_metadata("web-0").await.unwrap();
        let types = meta.types.clone().expect("a kind and apiVersion");
        assert_eq!(
            (types.kind.as_str(), types.api_version.as_str()),
            ("PartialObjectMetadata", "meta.k8s.io/v1"),
            "{server}"
        );
        let (got, want) = (&meta.metadata, &full.metadata);
        assert_eq!(got.name.as_deref(), Some("web-0"), "{server}");
        assert_eq!(got.namespace.as_deref(), Some(NAMESPACE), "{server}");
        assert_eq!(got.uid, want.uid, "{server}");
        assert_eq!(got.creation_timestamp, want.creation_timestamp, "{server}");
        assert_eq!(got.labels, Some(labels(&[("app", "web")])), "{server}");
        assert!(
            got.managed_fields.as_ref().is_some_and(|m| !m.is_empty()),
            "{server}: the whole metadata, managedFields included: {got:?}"
        );

        let missing = pods.get_metadata_opt("no-such-pod").await.unwrap();
        assert!(missing.is_none(), "{server}: {missing:?}");
        let status = common::api_err(pods.get_metadata("no-such-pod").await);
        assert_eq!(
            (status.code, status.reason.as_str()),
            (404, "NotFound"),
            "{server}"
        );
        remove_pods(&pods).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_metadata_selects_by_label_and_pages_without_any_spec() {
    on_each_server(async |server, client| {
        let pods = labelled_pods(&client).await;
        let web = pods
            .list_metadata(&ListParams::default().labels("app=web"))
            .await
            .unwrap();
        assert_eq!(web.types.kind, "PartialObjectMetadataList", "{server}");
        assert_eq!(web.types.api_version, "meta.k8s.io/v1", "{server}");
        let mut names: Vec<String> = web.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        assert_eq!(names, ["web-0", "web-1"], "{server}");
        for item in &web.items {
            let kind = item.types.as_ref().map(|t| t.kind.as_str());
            assert_eq!(kind, Some("PartialObjectMetadata"), "{server}");
        }

        // What went over the wire: metadata only, no spec or status anywhere.
        let path = format!("{}?labelSelector=app%3Dweb", collection_path());
        let body = raw_get(&client, &path, METADATA_LIST).await.unwrap();
        assert_eq!(
            body["kind"], "PartialObjectMetadataList",
            "{server}: {body}"
        );
        assert!(body["metadata"]["resourceVersion"].is_string(), "{server}");
        let items = body["items"].as_array().expect("items");
        assert_eq!(items.len(), 2, "{server}: {body}");
        for item in items {
            let mut keys: Vec<&str> = item
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            keys.sort();
            assert_eq!(keys, ["apiVersion", "kind", "metadata"], "{server}: {item}");
        }
        assert!(!body.to_string().contains("\"spec\":"), "{server}: {body}");

        // Pages: a continue token; remainingItemCount only without a selector (the real server
        // counts what is left in storage, which a selector would make wrong).
        let first = pods
            .list_metadata(&ListParams::default().labels("app=web").limit(1))
            .await
            .unwrap();
        assert_eq!(first.items.len(), 1, "{server}");
        let token = first.metadata.continue_.clone().expect("a continue token");
        assert_eq!(first.metadata.remaining_item_count, None, "{server}");
        let second = pods
            .list_metadata(
                &ListParams::default()
                    .labels("app=web")
                    .limit(1)
                    .continue_token(&token),
            )
            .await
            .unwrap();
        let paged: Vec<String> = first
            .items
            .iter()
            .chain(&second.items)
            .map(|p| p.name_any())
            .collect();
        assert_eq!(paged.len(), 2, "{server}: {paged:?}");
        assert!(
            paged.contains(&"web-0".into()) && paged.contains(&"web-1".into()),
            "{server}"
        );
        assert_eq!(
            second.metadata.continue_.as_deref().unwrap_or(""),
            "",
            "{server}"
        );
        let unselected = pods
            .list_metadata(&ListParams::default().limit(1))
            .await
            .unwrap();
        assert_eq!(
            unselected.metadata.remaining_item_count,
            Some(2),
            "{server}"
        );

        // A selector that matches nothing: an empty list, which the real server writes as
        // `"items": null`.
        let none = raw_get(
            &client,
            &format!("{}?labelSelector=app%3Dnone", collection_path()),
            METADATA_LIST,
        )
        .await
        .unwrap();
        assert_eq!(none["kind"], "PartialObjectMetadataList", "{server}");
        assert_eq!(none["items"], Value::Null, "{server}: {none}");
        remove_pods(&pods).await;
    })
    .await;
}

/// Asserts that `answer` is the real server's 406 NotAcceptable, its message starting so.
fn not_acceptable(server: &str, answer: Result<Value, kube::Error>, starts: &str) {
    let status = common::api_err(answer);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (406, "NotAcceptable"),
        "{server}"
    );
    assert!(
        status.message.starts_with(starts),
        "{server}: {}",
        status.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_the_wrong_metadata_shape_is_not_acceptable() {
    on_each_server(async |server, client| {
        let pods = labelled_pods(&client).await;
        not_acceptable(
            server,
            raw_get(&client, &collection_path(), METADATA).await,
            "you requested PartialObjectMetadata, but the requested object is a list",
        );
        let one = format!("{}/web-0", collection_path());
        not_acceptable(
            server,
            raw_get(&client, &one, METADATA_LIST).await,
            "you requested PartialObjectMetadataList, but the requested object is not a list",
        );
        // A missing object is missing before it is the wrong shape.
        let missing = format!("{}/no-such-pod", collection_path());
        let status = common::api_err(raw_get(&client, &missing, METADATA_LIST).await);
        assert_eq!(status.code, 404, "{server}: {}", status.message);
        remove_pods(&pods).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_watcher_sees_a_new_labelled_pod_come_and_go_as_metadata() {
    on_each_server(async |server, client| {
        let pods = labelled_pods(&client).await;
        // `metadata_watcher` is deprecated in kube 5 for this, which sends the same requests:
        // a list with `as=PartialObjectMetadataList`, then a watch with `as=PartialObjectMetadata`.
        let metadata: Api<PartialObjectMeta<Pod>> = Api::namespaced(client.clone(), NAMESPACE);
        let mut events = watcher(metadata, watcher::Config::default().labels("app=cache")).boxed();
        // Nothing matches yet: the initial list is empty.
        loop {
            match next_event(server, &mut events).await {
                watcher::Event::Init => {}
                watcher::Event::InitDone => break,
                other => panic!("{server}: {other:?} before InitDone"),
            }
        }

        let created = create_pod(&pods, "cache-0", "cache").await;
        let applied = loop {
            if let watcher::Event::Apply(pod) = next_event(server, &mut events).await {
                break pod;
            }
        };
        assert_eq!(applied.name_any(), "cache-0", "{server}");
        assert_eq!(applied.metadata.uid, created.metadata.uid, "{server}");
        assert_eq!(
            applied.metadata.labels,
            Some(labels(&[("app", "cache")])),
            "{server}"
        );
        let kind = applied.types.as_ref().map(|t| t.kind.as_str());
        assert_eq!(kind, Some("PartialObjectMetadata"), "{server}");

        pods.delete("cache-0", &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
        let deleted = loop {
            match next_event(server, &mut events).await {
                watcher::Event::Delete(pod) => break pod,
                watcher::Event::Apply(_) => {}
                other => panic!("{server}: {other:?} while waiting for the deletion"),
            }
        };
        assert_eq!(deleted.name_any(), "cache-0", "{server}");
        let kind = deleted.types.as_ref().map(|t| t.kind.as_str());
        assert_eq!(kind, Some("PartialObjectMetadata"), "{server}");
        remove_pods(&pods).await;
    })
    .await;
}

/// Streaming lists (`sendInitialEvents=true`): the initial events and the bookmark that ends
/// them come as PartialObjectMetadata. Sandbox only: the real control plane of
/// scripts/cluster.sh refuses such watches ("the required storage feature RequestWatchProgress
/// is disabled": its etcd does not support it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_sandbox_a_streaming_metadata_watcher_lists_through_the_watch() {
    let sandbox = common::server().await;
    let client = sandbox.client().await;
    let pods = labelled_pods(&client).await;
    let metadata: Api<PartialObjectMeta<Pod>> = Api::namespaced(client.clone(), NAMESPACE);
    let config = watcher::Config::default()
        .labels("app=web")
        .streaming_lists();
    let mut events = watcher(metadata, config).boxed();
    let mut listed = Vec::new();
    loop {
        match next_event("sandbox", &mut events).await {
            watcher::Event::Init => {}
            watcher::Event::InitApply(pod) => {
                let kind = pod.types.as_ref().map(|t| t.kind.clone());
                assert_eq!(kind.as_deref(), Some("PartialObjectMetadata"));
                listed.push(pod.name_any());
            }
            watcher::Event::InitDone => break,
            other => panic!("{other:?} before InitDone"),
        }
    }
    listed.sort();
    assert_eq!(listed, ["web-0", "web-1"]);

    // The bookmark that ends the initial events, as the wire carries it.
    let path = format!(
        "{}?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&\
         resourceVersionMatch=NotOlderThan&labelSelector=app%3Dweb&timeoutSeconds=1",
        collection_path()
    );
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, METADATA)
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(request).await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    for line in &lines {
        assert_eq!(line["object"]["kind"], "PartialObjectMetadata", "{line}");
        assert!(line["object"].get("spec").is_none(), "{line}");
    }
    let bookmark = &lines[2];
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    remove_pods(&pods).await;
    sandbox.shutdown().await;
}

/// A watch that asks for lists gets none: the real server fails to convert the first event's
/// object, logs it and ends the stream (200, nothing written).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_asking_for_lists_ends_at_its_first_object() {
    on_each_server(async |server, client| {
        let pods = labelled_pods(&client).await;
        let rv = pods
            .list_metadata(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .expect("a resourceVersion");
        create_pod(&pods, "cache-0", "cache").await;
        // From the list's resourceVersion: the creation is the watch's first event.
        let path = format!(
            "{}?watch=1&resourceVersion={rv}&timeoutSeconds=10",
            collection_path()
        );
        let request = http::Request::get(path)
            .header(http::header::ACCEPT, METADATA_LIST)
            .body(Vec::new())
            .unwrap();
        let started = tokio::time::Instant::now();
        let text = client.request_text(request).await.unwrap();
        assert_eq!(text, "", "{server}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{server}: the stream ended at once, not at its timeout"
        );
        remove_pods(&pods).await;
    })
    .await;
}
