//! An embedded, in-process Kubernetes API server for tests and `faultline sandbox`.
//!
//! It speaks plain HTTP on 127.0.0.1 (no TLS, no authentication) and follows the real
//! kube-apiserver wherever kube-rs (`Client`, `Api`, kube-runtime's watcher, reflector and
//! `Controller`) or kubectl can tell the difference: discovery, CRUD with resourceVersion and
//! 409 conflicts, list/watch with selectors, bookmarks and 410 Gone, the status subresource,
//! generation, the four patch types, finalizers, ownerReference garbage collection, CRDs with
//! schema validation and CEL, and Table output for `kubectl get`.
//!
//! Module map (each module documents where it simplifies):
//! `routes` (HTTP dispatch), `request` (URL, query, body parsing), `respond` (JSON or protobuf
//! responses), `protobuf` (the `application/vnd.kubernetes.protobuf` codec of the built-in
//! kinds), `read` (get/list), `write` (create/update/patch),
//! `defaults` (what the real server fills in on write), `gc` (delete, finalizers, garbage collection), `eviction` (the pods/eviction subresource),
//! `scale` (deployments/scale, replicasets/scale), `log` (pods/log),
//! `events` (core/v1 and events.k8s.io/v1 Events: one store, converted per version),
//! `disruption` (PodDisruptionBudget status, kept current after every relevant write), `watch`, `store` (objects, resourceVersion,
//! event log), `resources` (kinds), `crd`, `schema`, `patch`, `selectors`, `meta`, `table` (with `printers`, the built-in columns),
//! `partial` (metadata-only answers: PartialObjectMetadata), `discovery`, `errors`.
//!
//! All state sits behind one mutex: requests are short and strictly serialised, which is what
//! makes resourceVersion ordering and watch delivery trivially consistent.

mod apply_conflicts;
mod crd;
mod crd_rules;
mod defaults;
mod discovery;
mod disruption;
mod errors;
mod events;
mod eviction;
mod gc;
mod log;
mod meta;
mod namespaces;
mod openapi;
mod partial;
pub(crate) mod patch;
mod printers;
mod protobuf;
mod read;
mod request;
mod resources;
mod respond;
mod routes;
mod scale;
mod schema;
mod selectors;
mod store;
mod table;
mod typed_patch;
mod update;
mod watch;
mod write;

pub use errors::{ApiError, Cause};

use axum::Router;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use request::Target;
use resources::{Registry, ResKey};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use store::Store;

/// Tunables; [`ApiServer::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// 0 binds an ephemeral port.
    pub port: u16,
    /// How many events the watch history keeps; older resourceVersions get 410 Gone.
    pub event_history: usize,
    /// Interval between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Where real pods' containers write their output (the kubelet's layout, see
    /// [`crate::sandbox::pod_logs`]), for `pods/log`; none when pods are simulated.
    pub pod_logs: Option<PathBuf>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            port: 0,
            event_history: 10_000,
            bookmark_interval: Duration::from_secs(5),
            pod_logs: None,
        }
    }
}

pub(crate) struct State {
    pub registry: Registry,
    pub store: Store,
    pub ending: namespaces::Ending,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    bookmark_interval: Duration,
    address: String,
    pod_logs: Option<PathBuf>,
}

impl Shared {
    /// The state lock. A panic while holding it cannot leave it half-written in a way that
    /// matters more than losing the server, so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn namespace_key() -> ResKey {
    ResKey {
        group: String::new(),
        plural: "namespaces".into(),
    }
}

/// The running server.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// Binds 127.0.0.1:port (0 = ephemeral) and serves in a tokio task.
    pub async fn start(port: u16) -> std::io::Result<ApiServer> {
        Self::start_with_options(ApiServerOptions {
            port,
            ..Default::default()
        })
        .await
    }

    pub async fn start_with_options(opts: ApiServerOptions) -> std::io::Result<ApiServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port)).await?;
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let mut state = State {
            registry: Registry::with_builtins(),
            store: Store::new(opts.event_history),
            ending: Default::default(),
        };
        for ns in ["default", "kube-system", "kube-public"] {
            let obj = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(),
                             "creationTimestamp": meta::now(), "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            state.store.put(&namespace_key(), obj);
            write::default_service_account(&mut state, ns);
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            shutdown: shutdown_rx.clone(),
            bookmark_interval: opts.bookmark_interval,
            address: addr.to_string(),
            pod_logs: opts.pod_logs,
        });
        let app = Router::new()
            .fallback(routes::handle)
            .with_state(shared.clone());
        let mut stop = shutdown_rx;
        let task = tokio::spawn(async move {
            let graceful = async move {
                let _ = stop.wait_for(|v| *v).await;
            };
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(graceful)
                .await
            {
                tracing::error!(error = %e, "sandbox API server stopped with an error");
            }
        });
        tracing::info!(%addr, "sandbox API server listening");
        Ok(ApiServer {
            addr,
            shared,
            shutdown_tx,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `Config::new(url)` with default namespace `default`.
    pub fn client_config(&self) -> kube::Config {
        // Our own URL always parses; this is not request data.
        let url = self.url().parse().expect("server URL is a valid URI");
        let mut config = kube::Config::new(url);
        config.default_namespace = "default".into();
        config
    }

    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.client_config())
            .expect("a plain-HTTP client config is always valid")
    }

    /// A kubeconfig for this server: cluster `faultline-sandbox`, a user without credentials.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: faultline-sandbox\n  cluster:\n    server: {url}\n\
             users:\n- name: faultline-sandbox\n  user: {{}}\ncontexts:\n- name: faultline-sandbox\n  context:\n    \
             cluster: faultline-sandbox\n    user: faultline-sandbox\n    namespace: default\n\
             current-context: faultline-sandbox\npreferences: {{}}\n",
            url = self.url()
        )
    }

    /// Install CRDs through the same path as `POST .../customresourcedefinitions`; a CRD that
    /// already exists is replaced (so `sandbox up` can be re-run).
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> Result<(), ApiError> {
        for crd in crds {
            let body =
                serde_json::to_value(crd).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut st = self.shared.lock();
            let def = st
                .registry
                .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                .cloned()
                .ok_or_else(|| ApiError::internal("CRD resource missing"))?;
            let mut t = Target {
                def,
                version: "v1".into(),
                namespace: None,
                name: None,
                sub: None,
            };
            let mut ctx = write::WriteCtx {
                dry_run: false,
                validation: request::FieldValidation::Strict,
                manager: "faultline-sandbox".into(),
                apply: false,
                force: false,
                patched: false,
                warnings: vec![],
            };
            match write::create(&mut st, &t, body.clone(), &mut ctx) {
                Err(e) if e.reason == "AlreadyExists" => {
                    t.name = Some(name);
                    let mut body = body;
                    if let Some(m) = body["metadata"].as_object_mut() {
                        m.remove("resourceVersion");
                    }
                    write::update(&mut st, &t, body, &mut ctx)?;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// How many events the watch history keeps from now on (tests use this to force 410 Gone).
    pub fn set_event_history(&self, events: usize) {
        self.shared.lock().store.set_history(events);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.current_rv()
    }

    /// Graceful: ends watches, stops the listener, waits for the serving task.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "sandbox API server task ended abnormally");
        }
    }
}
