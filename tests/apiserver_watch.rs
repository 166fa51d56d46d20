//! Watch semantics through kube::Api::watch and kube-runtime's watcher / reflector.

mod common;

use common::{ApiServer, ApiServerOptions, init_tracing, wait_for};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}})).unwrap()
}

fn name_of(ev: &WatchEvent<ConfigMap>) -> (String, String) {
    match ev {
        WatchEvent::Added(o) => ("ADDED".into(), o.metadata.name.clone().unwrap()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.metadata.name.clone().unwrap()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.metadata.name.clone().unwrap()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(e) => ("ERROR".into(), e.code.to_string()),
    }
}

async fn next_n<S>(stream: &mut S, n: usize, keep_bookmarks: bool) -> Vec<(String, String)>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("no error");
        if !matches!(ev, WatchEvent::Bookmark(_)) || keep_bookmarks {
            out.push(name_of(&ev));
        }
    }
    out
}

#[tokio::test]
async fn watch_from_resource_version_with_selectors() {
    let srv = common::server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    let first = cms
        .create(&PostParams::default(), &cm("before", "web"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();

    // Resume from rv: everything after it, including changes made before the watch started.
    cms.create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    let mut all = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let mut web = cms
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .unwrap()
        .boxed();
    cms.create(&PostParams::default(), &cm("b", "db"))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await
    .unwrap();
    // leaves the selector: DELETED for the filtered watch
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();

    let got = next_n(&mut all, 5, false).await;
    let expect = [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ];
    assert_eq!(got, expect.map(|(a, b)| (a.to_string(), b.to_string())));
    let got = next_n(&mut web, 3, false).await;
    let expect = [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")];
    assert_eq!(got, expect.map(|(a, b)| (a.to_string(), b.to_string())));

    // field selector on a watch; rv "0" starts with the current state as ADDED
    let mut by_name = cms
        .watch(&WatchParams::default().fields("metadata.name=before"), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        next_n(&mut by_name, 1, false).await,
        [("ADDED".to_string(), "before".to_string())]
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn bookmarks_and_timeout() {
    init_tracing();
    let srv = ApiServer::start_with_options(ApiServerOptions {
        bookmark_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    let c = cms
        .create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();
    let rv = c.metadata.resource_version.unwrap();
    let mut w = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let ev = next_n(&mut w, 1, true).await;
    assert_eq!(ev[0], ("BOOKMARK".to_string(), rv.clone()));

    // timeoutSeconds ends the stream
    let mut short = cms
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = short.next().await {
            assert!(
                matches!(ev, Ok(WatchEvent::Bookmark(_))),
                "only bookmarks expected: {ev:?}"
            );
        }
    })
    .await;
    assert!(ended.is_ok(), "timeoutSeconds ends the stream");
    srv.shutdown().await;
}

#[tokio::test]
async fn gone_410_and_watcher_relists() {
    let srv = common::server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    let first = cms
        .create(&PostParams::default(), &cm("p1", "x"))
        .await
        .unwrap();
    srv.set_event_history(3);

    // A raw watch from a compacted resourceVersion gets an ERROR event with 410 Expired.
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("filler-{i}"), "y"))
            .await
            .unwrap();
    }
    let mut w = cms
        .watch(
            &WatchParams::default(),
            &first.metadata.resource_version.unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    match w.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }

    // kube-runtime's watcher: list, then (while it is not polled) the history moves past its
    // resourceVersion, so its watch gets 410; it must relist and still see every object.
    let mut stream = watcher(
        cms.clone(),
        watcher::Config::default()
            .labels("app=x")
            .disable_bookmarks(),
    )
    .boxed();
    let mut inits = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(watcher::Event::Init)) => inits += 1,
            Some(Ok(watcher::Event::InitDone)) => break,
            _ => {}
        }
    }
    for i in 2..=4 {
        cms.create(&PostParams::default(), &cm(&format!("p{i}"), "x"))
            .await
            .unwrap();
    }
    for i in 5..10 {
        cms.create(&PostParams::default(), &cm(&format!("filler-{i}"), "y"))
            .await
            .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut saw_gone = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("watcher progresses")
        {
            Some(Ok(watcher::Event::Init)) => {
                inits += 1;
                seen.clear();
            }
            Some(Ok(watcher::Event::InitApply(o))) | Some(Ok(watcher::Event::Apply(o))) => {
                seen.insert(o.metadata.name.unwrap());
            }
            Some(Ok(watcher::Event::InitDone)) => {
                if seen.len() == 4 {
                    break;
                }
            }
            Some(Err(watcher::Error::WatchError(e))) if e.code == 410 => saw_gone = true,
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("watcher ended"),
        }
    }
    assert!(saw_gone, "the watcher saw the 410");
    assert_eq!(inits, 2, "the watcher relisted once");
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["p1", "p2", "p3", "p4"]
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn reflector_follows_changes() {
    let srv = common::server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    let (reader, writer) = reflector::store();
    let rf = reflector(writer, watcher(cms.clone(), watcher::Config::default()))
        .default_backoff()
        .applied_objects()
        .try_for_each(|_| async { Ok(()) });
    let task = tokio::spawn(rf);
    for i in 0..5 {
        cms.create(&PostParams::default(), &cm(&format!("c{i}"), "x"))
            .await
            .unwrap();
    }
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    wait_for("reflector has 4 objects", Duration::from_secs(5), || {
        let n = reader.state().len();
        async move { (n == 4).then_some(()) }
    })
    .await;
    // shutdown ends the watch stream; the reflector task keeps retrying, so abort it.
    task.abort();
    srv.shutdown().await;
}
