//! A real kube-runtime Controller with kube's finalizer() helper, an owned ConfigMap and an SSA
//! status patch, running against the sandbox API server.

mod common;

use common::{server, wait_for};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const FINALIZER: &str = "test.faultline.dev/cleanup";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "test.faultline.dev",
    version = "v1",
    kind = "Widget",
    namespaced
)]
#[kube(status = "WidgetStatus", derive = "Default")]
pub struct WidgetSpec {
    pub size: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    pub phase: String,
    pub observed_generation: Option<i64>,
}

struct Ctx {
    client: kube::Client,
    cleanups: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ReconcileError(String);

async fn reconcile(
    w: Arc<Widget>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<ReconcileError>> {
    let ns = w.namespace().unwrap_or_default();
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, w, |event| async {
        match event {
            FinalizerEvent::Apply(w) => {
                let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                let owner = w
                    .controller_owner_ref(&())
                    .ok_or_else(|| ReconcileError("no owner ref".into()))?;
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(format!("{}-data", w.name_any())),
                        owner_references: Some(vec![owner]),
                        ..Default::default()
                    },
                    data: Some([("size".to_string(), w.spec.size.to_string())].into()),
                    ..Default::default()
                };
                cms.patch(
                    &cm.name_any(),
                    &PatchParams::apply("widget-ctrl").force(),
                    &Patch::Apply(&cm),
                )
                .await
                .map_err(|e| ReconcileError(e.to_string()))?;
                let status = json!({
                    "apiVersion": "test.faultline.dev/v1", "kind": "Widget",
                    "status": {"phase": "Ready", "observedGeneration": w.metadata.generation}
                });
                api.patch_status(
                    &w.name_any(),
                    &PatchParams::apply("widget-ctrl").force(),
                    &Patch::Apply(&status),
                )
                .await
                .map_err(|e| ReconcileError(e.to_string()))?;
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            FinalizerEvent::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _: Arc<Widget>,
    _: &kube::runtime::finalizer::Error<ReconcileError>,
    _: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn controller_with_finalizer_owned_objects_and_ssa_status() {
    let srv = server().await;
    srv.install_crds(&[Widget::crd()]).await.unwrap();
    let client = srv.client().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleanups: AtomicUsize::new(0),
    });

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(cms.clone(), watcher::Config::default())
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    widgets
        .create(
            &PostParams::default(),
            &Widget::new("w1", WidgetSpec { size: 3 }),
        )
        .await
        .unwrap();
    let w = wait_for("widget reconciled", Duration::from_secs(5), || async {
        let w = widgets.get("w1").await.ok()?;
        (w.status.as_ref().map(|s| s.phase.as_str()) == Some("Ready")).then_some(w)
    })
    .await;
    assert_eq!(w.finalizers(), [FINALIZER.to_string()]);
    assert_eq!(w.status.unwrap().observed_generation, Some(1));
    assert_eq!(cms.get("w1-data").await.unwrap().data.unwrap()["size"], "3");

    // a spec change is reconciled again (new generation observed)
    widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 4}})),
        )
        .await
        .unwrap();
    wait_for("generation 2 observed", Duration::from_secs(5), || async {
        let w = widgets.get("w1").await.ok()?;
        (w.status.and_then(|s| s.observed_generation) == Some(2)).then_some(())
    })
    .await;
    assert_eq!(cms.get("w1-data").await.unwrap().data.unwrap()["size"], "4");

    // deletion runs the cleanup, the finalizer is removed, the owned ConfigMap is collected
    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("widget gone", Duration::from_secs(5), || async {
        widgets.get_opt("w1").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    wait_for(
        "owned configmap collected",
        Duration::from_secs(5),
        || async {
            cms.get_opt("w1-data")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("controller stops")
        .unwrap();
    srv.shutdown().await;
}
