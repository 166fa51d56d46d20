//! CRUD, error codes, generation, status isolation, patches, finalizers and GC through kube::Api.

mod common;

use common::{api_err, server, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>()},
        "data": {"k": "v"}
    }))
    .unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "app:1"}, {"name": "side", "image": "side:1"}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_and_error_codes() {
    let srv = server().await;
    let client = srv.client().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let created = cms
        .create(&PostParams::default(), &cm("a", &[]))
        .await
        .unwrap();
    let md = &created.metadata;
    assert!(md.uid.is_some() && md.creation_timestamp.is_some());
    let rv1: u64 = md.resource_version.clone().unwrap().parse().unwrap();

    let got = cms.get("a").await.unwrap();
    assert_eq!(got.data.clone().unwrap()["k"], "v");

    // 409 AlreadyExists
    let s = api_err(cms.create(&PostParams::default(), &cm("a", &[])).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    // 404 NotFound
    let s = api_err(cms.get("nope").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"nope\" not found");

    // update bumps the global resourceVersion; a stale one is a 409 Conflict
    let mut upd = got.clone();
    upd.data = Some([("k".to_string(), "v2".to_string())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &upd)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    let s = api_err(cms.replace("a", &PostParams::default(), &upd).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));

    // list carries the current resourceVersion
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv2
    );

    // generateName
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let gen_obj = cms.create(&PostParams::default(), &g).await.unwrap();
    let gname = gen_obj.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // 422 invalid name
    let s = api_err(
        cms.create(&PostParams::default(), &cm("Bad_Name", &[]))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(s.details.unwrap().causes[0].field, "metadata.name");

    // namespace of the body must match the URL (400), and must exist (404)
    let mut other = cm("x", &[]);
    other.metadata.namespace = Some("kube-system".into());
    let s = api_err(cms.create(&PostParams::default(), &other).await);
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    let s = api_err(missing.create(&PostParams::default(), &cm("x", &[])).await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert!(
        s.message.contains("namespaces \"missing\""),
        "{}",
        s.message
    );

    // dryRun does not persist
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    cms.create(&dry, &cm("dry", &[])).await.unwrap();
    assert_eq!(api_err(cms.get("dry").await).code, 404);

    // delete, then 404
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(api_err(cms.get("a").await).code, 404);
    assert_eq!(
        api_err(cms.delete("a", &DeleteParams::default()).await).code,
        404
    );

    // default namespaces exist
    let nss: Api<Namespace> = Api::all(client);
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for n in ["default", "kube-system", "kube-public"] {
        assert!(names.contains(&n.to_string()));
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn selectors_pagination_and_deletecollection() {
    let srv = server().await;
    let client = srv.client().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for (n, app, env) in [
        ("a", "web", "prod"),
        ("b", "web", "dev"),
        ("c", "db", "prod"),
        ("d", "db", ""),
    ] {
        let labels: Vec<(&str, &str)> = if env.is_empty() {
            vec![("app", app)]
        } else {
            vec![("app", app), ("env", env)]
        };
        cms.create(&PostParams::default(), &cm(n, &labels))
            .await
            .unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect::<Vec<_>>()
    };
    let q = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(names(cms.list(&q("app=web")).await.unwrap()), ["a", "b"]);
    assert_eq!(
        names(cms.list(&q("app==web,env!=prod")).await.unwrap()),
        ["b"]
    );
    assert_eq!(
        names(cms.list(&q("env in (prod,dev)")).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        names(cms.list(&q("env notin (prod)")).await.unwrap()),
        ["b", "d"]
    );
    assert_eq!(names(cms.list(&q("env")).await.unwrap()), ["a", "b", "c"]);
    assert_eq!(names(cms.list(&q("!env")).await.unwrap()), ["d"]);
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=c"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name!=c,metadata.namespace=default"))
                .await
                .unwrap()
        ),
        ["a", "b", "d"]
    );
    let s = api_err(cms.list(&q("a in (b")).await);
    assert_eq!(s.code, 400);
    let s = api_err(
        cms.list(&ListParams::default().fields("spec.nodeName=x"))
            .await,
    );
    assert_eq!(s.code, 400);

    // pagination
    let p1 = cms.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(p1.items.len(), 3);
    let token = p1.metadata.continue_.clone().unwrap();
    let p2 = cms
        .list(&ListParams::default().limit(3).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(p2), ["d"]);

    // cluster-wide list sees the namespaced objects; field selector on pods
    let pods_all: Api<Pod> = Api::all(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut p = pod("on-node");
    p.spec.as_mut().unwrap().node_name = Some("node-1".into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.create(&PostParams::default(), &pod("other"))
        .await
        .unwrap();
    let on_node = pods_all
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    assert_eq!(on_node.items.len(), 1);
    let pending = pods_all
        .list(&ListParams::default().fields("status.phase=Pending"))
        .await
        .unwrap();
    assert_eq!(pending.items.len(), 2);

    // deletecollection with a selector
    cms.delete_collection(&DeleteParams::default(), &q("app=db"))
        .await
        .unwrap();
    assert_eq!(
        names(cms.list(&ListParams::default()).await.unwrap()),
        ["a", "b"]
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn generation_and_status_isolation() {
    let srv = server().await;
    let pods: Api<Pod> = Api::default_namespaced(srv.client().await);
    let mut p = pod("p");
    p.status = Some(serde_json::from_value(json!({"phase": "Running"})).unwrap());
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // status is not settable on create
    assert_eq!(
        created.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    // a main-resource write ignores .status
    let mut upd = created.clone();
    upd.status.as_mut().unwrap().phase = Some("Failed".into());
    upd.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let after = pods
        .replace("p", &PostParams::default(), &upd)
        .await
        .unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );
    assert_eq!(after.metadata.generation, Some(1), "labels are not spec");

    // a status write changes only .status
    let st = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"nodeName": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        st.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(st.spec.as_ref().unwrap().node_name, None);
    assert_eq!(st.metadata.generation, Some(1));
    let mut full = st.clone();
    full.status.as_mut().unwrap().phase = Some("Succeeded".into());
    full.spec.as_mut().unwrap().node_name = Some("y".into());
    let st2 = pods
        .replace_status("p", &PostParams::default(), &full)
        .await
        .unwrap();
    assert_eq!(st2.status.unwrap().phase.as_deref(), Some("Succeeded"));
    assert_eq!(st2.spec.unwrap().node_name, None);

    // a spec change bumps generation
    let g = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(2));
    // a no-op write keeps the resourceVersion
    let same = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"activeDeadlineSeconds": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(same.metadata.resource_version, g.metadata.resource_version);
    srv.shutdown().await;
}

#[tokio::test]
async fn patch_flavours() {
    let srv = server().await;
    let pods: Api<Pod> = Api::default_namespaced(srv.client().await);
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();

    // JSON patch with kube's finalizer() idiom: test-null on a missing path succeeds
    let jp: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}
    ]))
    .unwrap();
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(p.metadata.finalizers, Some(vec!["x/y".to_string()]));
    // a failing test op is 422
    let bad: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/metadata/name", "value": "q"}]))
            .unwrap();
    let s = api_err(
        pods.patch("p", &PatchParams::default(), &Patch::<()>::Json(bad))
            .await,
    );
    assert_eq!(s.code, 422);

    // strategic merge: containers merged by name, $patch: delete
    let smp = json!({"spec": {"containers": [{"name": "app", "image": "app:2"}, {"name": "side", "$patch": "delete"}]}});
    let p = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(smp))
        .await
        .unwrap();
    let cs = p.spec.unwrap().containers;
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].image.as_deref(), Some("app:2"));

    // merge patch removes with null
    let p = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "1", "b": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap().len(), 2);
    let p = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": null}}})),
        )
        .await
        .unwrap();
    assert_eq!(p.metadata.labels.unwrap().keys().collect::<Vec<_>>(), ["b"]);

    // server-side apply: fieldManager required, creates when absent, records managedFields
    let cms: Api<ConfigMap> = Api::default_namespaced(pods.clone().into_client());
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let s = api_err(
        cms.patch("ssa", &PatchParams::default(), &Patch::Apply(&applied))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let c = cms
        .patch(
            "ssa",
            &PatchParams::apply("tester").force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["a"], "1");
    let mf = c.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("tester"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let applied2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"b": "2"}});
    let c = cms
        .patch(
            "ssa",
            &PatchParams::apply("other"),
            &Patch::Apply(&applied2),
        )
        .await
        .unwrap();
    assert_eq!(
        c.data.unwrap().len(),
        2,
        "merge semantics keep other managers' fields"
    );
    assert_eq!(c.metadata.managed_fields.unwrap().len(), 2);
    srv.shutdown().await;
}

#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let srv = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    let mut c = cm("f", &[]);
    c.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let deleted = cms.delete("f", &DeleteParams::default()).await.unwrap();
    let obj = deleted
        .left()
        .expect("object returned while finalizers remain");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.deletion_grace_period_seconds, Some(0));
    let still = cms.get("f").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    // no new finalizers once deletion started
    let s = api_err(
        cms.patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/keep", "new/one"]}})),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));

    // removing the last finalizer removes the object
    cms.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(api_err(cms.get("f").await).code, 404);
    srv.shutdown().await;
}

#[tokio::test]
async fn owner_reference_garbage_collection() {
    let srv = server().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(srv.client().await);
    let owner = cms
        .create(&PostParams::default(), &cm("owner", &[]))
        .await
        .unwrap();
    let oref = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid.clone().unwrap()}]);
    for (n, fin) in [("dep", false), ("dep-fin", true)] {
        let mut d = cm(n, &[]);
        d.metadata =
            serde_json::from_value::<ObjectMeta>(json!({"name": n, "ownerReferences": oref}))
                .unwrap();
        if fin {
            d.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        }
        cms.create(&PostParams::default(), &d).await.unwrap();
    }
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait_for("dependent collected", Duration::from_secs(5), || async {
        cms.get_opt("dep").await.unwrap().is_none().then_some(())
    })
    .await;
    let held = cms.get("dep-fin").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "dependent with finalizer is only marked"
    );

    // Orphan leaves dependents (without the owner reference)
    let owner2 = cms
        .create(&PostParams::default(), &cm("owner2", &[]))
        .await
        .unwrap();
    let mut d = cm("orphan", &[]);
    d.metadata = serde_json::from_value::<ObjectMeta>(json!({"name": "orphan", "ownerReferences":
        [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": owner2.metadata.uid.unwrap()}]}))
    .unwrap();
    cms.create(&PostParams::default(), &d).await.unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    cms.delete("owner2", &dp).await.unwrap();
    let left = cms.get("orphan").await.unwrap();
    assert!(left.metadata.owner_references.is_none());
    srv.shutdown().await;
}

#[tokio::test]
async fn namespace_deletion_removes_contents() {
    let srv = server().await;
    let client = srv.client().await;
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    cms.create(&PostParams::default(), &cm("in-ns", &[]))
        .await
        .unwrap();
    nss.delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    assert!(nss.get_opt("scratch").await.unwrap().is_none());
    let all: Api<ConfigMap> = Api::all(client);
    assert!(
        all.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    srv.shutdown().await;
}
