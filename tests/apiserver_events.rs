//! Events through both API versions of the sandbox API server: what kube's `Recorder` writes
//! (events.k8s.io/v1) is what `Api<core::v1::Event>` and kubectl read (core/v1), and back.

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{api_err, server};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::{core::v1 as core, events::v1 as events};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde_json::json;
use tokio::process::Command;

async fn pod(client: &Client, name: &str) -> core::Pod {
    let pod: core::Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "demo"}]},
    }))
    .unwrap();
    Api::<core::Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

fn recorder(client: &Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: "faultline".into(),
            instance: Some("faultline-0".into()),
        },
    )
}

fn injected() -> Event {
    Event {
        type_: EventType::Normal,
        reason: "FaultInjected".into(),
        note: Some("pod killed by experiment kill-one".into()),
        action: "Inject".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn an_event_from_the_recorder_reads_as_a_core_event_with_kubectls_field_selector() {
    let srv = server().await;
    let client = srv.client().await;
    let web = pod(&client, "web-1").await;
    let other = pod(&client, "web-2").await;
    let recorder = recorder(&client);
    recorder
        .publish(&injected(), &web.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&injected(), &other.object_ref(&()))
        .await
        .unwrap();

    let core_events: Api<core::Event> = Api::namespaced(client.clone(), "default");
    // What `kubectl describe pod web-1` asks for.
    let selector = format!(
        "involvedObject.name=web-1,involvedObject.namespace=default,involvedObject.kind=Pod,\
         involvedObject.uid={}",
        web.metadata.uid.clone().unwrap()
    );
    let list = core_events
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let event = &list.items[0];
    assert_eq!(event.involved_object.name.as_deref(), Some("web-1"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(
        event.message.as_deref(),
        Some("pod killed by experiment kill-one")
    );
    assert_eq!(event.reason.as_deref(), Some("FaultInjected"));
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    assert_eq!(event.action.as_deref(), Some("Inject"));
    assert_eq!(event.reporting_component.as_deref(), Some("faultline"));
    assert_eq!(event.reporting_instance.as_deref(), Some("faultline-0"));
    assert!(event.event_time.is_some());
    // The real conversion leaves the deprecated core fields empty for such an event.
    assert_eq!(event.count, None);
    assert_eq!(event.first_timestamp, None);
    assert!(event.source.as_ref().is_none_or(|s| s.component.is_none()));

    // `source` selects by the reporting controller when there is no source component;
    // `reason` and `type` select as well.
    for selector in [
        "source=faultline",
        "reason=FaultInjected,type=Normal",
        "reportingComponent=faultline",
    ] {
        let n = core_events
            .list(&ListParams::default().fields(selector))
            .await
            .unwrap()
            .items
            .len();
        assert_eq!(n, 2, "{selector}");
    }
    // events.k8s.io speaks of `regarding`, and refuses the core spelling, as the real server.
    let v1_events: Api<events::Event> = Api::namespaced(client.clone(), "default");
    let list = v1_events
        .list(&ListParams::default().fields("regarding.name=web-2"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.items[0].regarding.as_ref().unwrap().name.as_deref(),
        Some("web-2")
    );
    let refused = api_err(
        v1_events
            .list(&ListParams::default().fields("involvedObject.name=web-2"))
            .await,
    );
    assert_eq!(refused.code, 400);
    assert!(refused.message.contains("field label not supported"));

    // A repeat becomes a series (a merge patch through events.k8s.io), seen from core too.
    recorder
        .publish(&injected(), &web.object_ref(&()))
        .await
        .unwrap();
    let event = core_events
        .list(&ListParams::default().fields("involvedObject.name=web-1"))
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(event.series.map(|s| s.count), Some(Some(2)));
    srv.shutdown().await;
}

#[tokio::test]
async fn core_and_events_k8s_io_are_one_store_for_every_verb() {
    let srv = server().await;
    let client = srv.client().await;
    let core_events: Api<core::Event> = Api::namespaced(client.clone(), "default");
    let v1_events: Api<events::Event> = Api::namespaced(client.clone(), "default");
    let mut watch = v1_events
        .watch(&WatchParams::default().fields("regarding.name=db"), "0")
        .await
        .unwrap()
        .boxed();

    // Create through core, read through events.k8s.io.
    let event: core::Event = serde_json::from_value(json!({
        "metadata": {"name": "db.1"},
        "involvedObject": {"kind": "Pod", "name": "db", "namespace": "default"},
        "reason": "BackOff", "message": "restarting", "type": "Warning", "count": 4,
        "firstTimestamp": "2025-01-01T00:00:00Z", "lastTimestamp": "2025-01-01T00:10:00Z",
        "source": {"component": "kubelet", "host": "node-1"},
    }))
    .unwrap();
    core_events
        .create(&PostParams::default(), &event)
        .await
        .unwrap();
    let read = v1_events.get("db.1").await.unwrap();
    assert_eq!(read.regarding.as_ref().unwrap().name.as_deref(), Some("db"));
    assert_eq!(read.note.as_deref(), Some("restarting"));
    assert_eq!(read.deprecated_count, Some(4));
    assert_eq!(
        read.deprecated_source.as_ref().unwrap().host.as_deref(),
        Some("node-1")
    );
    assert!(read.deprecated_last_timestamp.is_some());

    // The events.k8s.io watcher saw the core create, converted.
    match next(&mut watch).await {
        WatchEvent::Added(e) => assert_eq!(e.note.as_deref(), Some("restarting")),
        other => panic!("expected ADDED, got {other:?}"),
    }

    // Patch through events.k8s.io (its field names), read through core.
    v1_events
        .patch(
            "db.1",
            &PatchParams::default(),
            &Patch::Merge(json!({"note": "still restarting", "deprecatedCount": 5})),
        )
        .await
        .unwrap();
    let read = core_events.get("db.1").await.unwrap();
    assert_eq!(read.message.as_deref(), Some("still restarting"));
    assert_eq!(read.count, Some(5));
    match next(&mut watch).await {
        WatchEvent::Modified(e) => assert_eq!(e.deprecated_count, Some(5)),
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // Replace through events.k8s.io keeps what it does not rename.
    let mut whole = v1_events.get("db.1").await.unwrap();
    whole.reason = Some("Started".into());
    v1_events
        .replace("db.1", &PostParams::default(), &whole)
        .await
        .unwrap();
    let read = core_events.get("db.1").await.unwrap();
    assert_eq!(read.reason.as_deref(), Some("Started"));
    assert_eq!(read.source.unwrap().component.as_deref(), Some("kubelet"));

    // Delete through events.k8s.io: gone from core.
    v1_events
        .delete("db.1", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(core_events.get("db.1").await).code, 404);
    srv.shutdown().await;
}

/// The next event of a watch, within 5 seconds.
async fn next<S, T>(watch: &mut S) -> WatchEvent<T>
where
    S: futures::Stream<Item = Result<WatchEvent<T>, kube::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), watch.try_next())
        .await
        .expect("a watch event in time")
        .unwrap()
        .expect("the watch is open")
}

fn kubectl() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/kubectl");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-tools.sh",
        p.display()
    );
    p
}

/// Runs kubectl against `kubeconfig` only: never the machine's ~/.kube.
async fn run_kubectl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(kubectl())
        .env_clear()
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("HOME", dir)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--request-timeout=10s")
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("kubectl finished in time")
        .expect("kubectl runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test]
async fn kubectl_get_events_shows_what_the_recorder_published() {
    let srv = server().await;
    let client = srv.client().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), srv.kubeconfig_yaml()).unwrap();
    let web = pod(&client, "web-1").await;
    pod(&client, "web-2").await;
    let recorder = recorder(&client);
    recorder
        .publish(&injected(), &web.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&injected(), &web.object_ref(&()))
        .await
        .unwrap();

    let out = run_kubectl(
        dir.path(),
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web-1",
        ],
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for column in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert!(lines[0].contains(column), "{out}");
    }
    for cell in [
        "Normal",
        "FaultInjected",
        "pod/web-1",
        "pod killed by experiment kill-one",
    ] {
        assert!(lines[1].contains(cell), "{cell}: {out}");
    }
    // -o wide: the source from the reporting controller and instance, the series count.
    let out = run_kubectl(
        dir.path(),
        &[
            "get",
            "events",
            "-o",
            "wide",
            "--field-selector",
            "involvedObject.name=web-1",
        ],
    )
    .await;
    assert!(out.contains("faultline, faultline-0"), "{out}");
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.split_whitespace().any(|cell| cell == "2"),
        "count 2: {out}"
    );
    // `kubectl describe` lists the pod's events (it asks core/v1 with the involvedObject
    // selector); the source is the reporting controller.
    let out = run_kubectl(dir.path(), &["describe", "pod", "web-1"]).await;
    let events = out.split("Events:").nth(1).unwrap_or_default();
    assert!(events.contains("FaultInjected"), "{out}");
    assert!(events.contains("faultline"), "{out}");
    assert!(
        events.contains("pod killed by experiment kill-one"),
        "{out}"
    );
    // Nothing about the other pod.
    let out = run_kubectl(
        dir.path(),
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=web-3",
        ],
    )
    .await;
    assert!(!out.contains("FaultInjected"), "{out}");
    srv.shutdown().await;
}
