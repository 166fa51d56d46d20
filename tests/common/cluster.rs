//! The cluster a test runs against: the embedded API server (the default), or a real control
//! plane when `FAULTLINE_TEST_CLUSTER=real` (kube-apiserver, kube-controller-manager and
//! kube-scheduler started by `scripts/cluster.sh up`; its admin kubeconfig is read from
//! `FAULTLINE_TEST_KUBECONFIG`, default `.faultline/cluster/admin.kubeconfig`).
//!
//! A real cluster is shared: tests that use it take turns (a lock file next to the kubeconfig,
//! held for the life of the [`TestCluster`], across threads and processes), and each starts from
//! a clean cluster: faultline's CRDs as generated, no objects left in any namespace but the
//! system ones, no test namespaces, no Nodes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use faultline::api::{ChaosExperiment, ChaosSchedule, FaultInjection, GameDay, all_crds};
use faultline::sandbox::apiserver::ApiServer;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment, ReplicaSet},
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace, Node, Pod, Service},
    policy::v1::PodDisruptionBudget,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde::de::DeserializeOwned;

/// Which cluster the tests of this run use.
pub fn real_cluster_requested() -> bool {
    std::env::var("FAULTLINE_TEST_CLUSTER").is_ok_and(|v| v == "real")
}

/// The admin kubeconfig of the real cluster.
pub fn real_kubeconfig() -> PathBuf {
    std::env::var_os("FAULTLINE_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".faultline/cluster/admin.kubeconfig")
        })
}

pub enum TestCluster {
    Sandbox(ApiServer),
    /// Boxed: a kube::Config is a kilobyte, the server a handle.
    Real(Box<RealCluster>),
}

pub struct RealCluster {
    config: kube::Config,
    kubeconfig: PathBuf,
    /// Held until the test ends: the cluster is this test's alone meanwhile.
    _turn: std::fs::File,
}

impl TestCluster {
    /// The embedded API server, or the real cluster (after waiting for our turn and cleaning
    /// up after the test before).
    pub async fn start() -> TestCluster {
        super::init_tracing();
        faultline::cli::install_crypto_provider();
        if real_cluster_requested() {
            TestCluster::Real(Box::new(RealCluster::take_turn().await))
        } else {
            TestCluster::Sandbox(ApiServer::start(0).await.expect("start sandbox API server"))
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, TestCluster::Real(_))
    }

    pub fn client_config(&self) -> kube::Config {
        match self {
            TestCluster::Sandbox(server) => server.client_config(),
            TestCluster::Real(real) => real.config.clone(),
        }
    }

    pub async fn client(&self) -> Client {
        match self {
            TestCluster::Sandbox(server) => server.client().await,
            TestCluster::Real(real) => Client::try_from(real.config.clone()).expect("client"),
        }
    }

    /// A kubeconfig for processes the test starts (the CLI, controller replicas).
    pub fn kubeconfig_yaml(&self) -> String {
        match self {
            TestCluster::Sandbox(server) => server.kubeconfig_yaml(),
            TestCluster::Real(real) => std::fs::read_to_string(&real.kubeconfig)
                .unwrap_or_else(|e| panic!("{}: {e}", real.kubeconfig.display())),
        }
    }

    /// Installs (or replaces) CRDs and waits until they are served.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) {
        match self {
            TestCluster::Sandbox(server) => server.install_crds(crds).await.expect("install CRDs"),
            TestCluster::Real(_) => {
                faultline::manifest::install_crds(
                    &self.client().await,
                    crds,
                    Duration::from_secs(30),
                )
                .await
                .expect("install CRDs on the real API server");
                // Established means served, not that every API server cache has the new
                // schema; give the discovery and validation caches a moment.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }

    pub async fn shutdown(self) {
        match self {
            TestCluster::Sandbox(server) => server.shutdown().await,
            // The next test cleans up (it needs to anyway: this one may have panicked).
            TestCluster::Real(_) => {}
        }
    }
}

impl RealCluster {
    async fn take_turn() -> RealCluster {
        let kubeconfig = real_kubeconfig();
        let lock_path = kubeconfig.with_file_name("tests.lock");
        let turn = tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
            file.lock().expect("wait for our turn on the real cluster");
            file
        })
        .await
        .unwrap();
        let text = std::fs::read_to_string(&kubeconfig).unwrap_or_else(|e| {
            panic!(
                "FAULTLINE_TEST_CLUSTER=real but {} cannot be read ({e}); start the cluster with `scripts/cluster.sh up`",
                kubeconfig.display()
            )
        });
        let parsed: kube::config::Kubeconfig = serde_yaml::from_str(&text).unwrap();
        let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
            .await
            .unwrap();
        let cluster = RealCluster {
            config,
            kubeconfig,
            _turn: turn,
        };
        cluster.reset().await;
        cluster
    }

    /// Leaves the cluster as `scripts/cluster.sh up` made it, plus faultline's CRDs.
    async fn reset(&self) {
        let client = Client::try_from(self.config.clone()).unwrap();
        faultline::manifest::install_crds(&client, &all_crds(), Duration::from_secs(30))
            .await
            .expect("faultline's CRDs install on the real API server");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let names: Vec<String> = namespaces
            .list(&ListParams::default())
            .await
            .unwrap()
            .iter()
            .map(|n| n.name_any())
            .filter(|n| !SYSTEM_NAMESPACES.contains(&n.as_str()))
            .collect();
        // Namespaces stay (deleting one takes the namespace controller seconds, and a test that
        // creates it again would have to wait); what is in them goes, and so do their labels.
        let unlabel = serde_json::json!({"metadata": {
            "labels": {faultline::api::NAMESPACE_OPT_IN_LABEL: null},
        }});
        for ns in &names {
            empty_namespace(&client, ns).await;
            let _ = namespaces
                .patch(ns, &PatchParams::default(), &Patch::Merge(&unlabel))
                .await;
        }
        // What a test applied from the chart (helm install, or its RBAC and policies by hand).
        for resource in [
            ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRole>(&()),
            ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(&()),
            ApiResource::erase::<
                k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy,
            >(&()),
            ApiResource::erase::<
                k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding,
            >(&()),
        ] {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            for object in api.list(&ListParams::default()).await.unwrap() {
                if object.name_any().starts_with("faultline") {
                    let _ = api
                        .delete(&object.name_any(), &DeleteParams::default())
                        .await;
                }
            }
        }
        let nodes: Api<Node> = Api::all(client.clone());
        let _ = nodes
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let pods: Api<Pod> = Api::all(client.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left: Vec<Pod> = pods
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter(|p| {
                    !SYSTEM_NAMESPACES.contains(&p.namespace().unwrap_or_default().as_str())
                })
                .collect();
            if left.is_empty() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let names: Vec<String> = left.iter().map(|p| p.name_any()).collect();
                panic!("the previous test's pods are still there after 30 s: {names:?}");
            }
            // A ReplicaSet of the test before may have made another one before it went, and a
            // controller winding down may have put a finalizer back.
            for ns in &names {
                empty_namespace(&client, ns).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A pod `name` labelled `app=APP`, bound to `node-1` (see [`cordoned_node`]) and reported
/// Running and Ready with `ip`, as a kubelet would; `grace` is its termination grace period.
pub async fn ready_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    app: &str,
    ip: &str,
    grace: Option<i64>,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "node-1", "terminationGracePeriodSeconds": grace,
                 "containers": [{"name": "app", "image": "demo"}]},
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

/// Registers a Node no kubelet serves, cordoned (the scheduler never uses it), for pods a test
/// creates bound to it and reports itself.
pub async fn cordoned_node(client: &Client, name: &str) {
    let node = serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name}, "spec": {"unschedulable": true}});
    Api::<Node>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("faultline-tests").force(),
            &Patch::Apply(&node),
        )
        .await
        .unwrap();
    report_ready(client, name).await;
}

/// Reports the Node Ready with a fresh heartbeat, as its kubelet would. Without it a real
/// controller-manager that remembers an earlier `node-1` (every test registers it again) may
/// find it silent, mark it unreachable and its pods not Ready in the middle of a test.
async fn report_ready(client: &Client, name: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "reported by the tests", "lastHeartbeatTime": now, "lastTransitionTime": now,
    }]}});
    Api::<Node>::all(client.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Node `name` as [`cordoned_node`] makes it, with a faultline agent's report on it: the
/// `faultline.dev/capabilities` annotation an agent writes when it starts.
pub async fn node_with_agent(client: &Client, name: &str) {
    let node = serde_json::json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {
            faultline::api::NODE_CAPABILITIES_ANNOTATION: "netem,tbf,nftables"}},
        "spec": {"unschedulable": true}});
    Api::<Node>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("faultline-tests").force(),
            &Patch::Apply(&node),
        )
        .await
        .unwrap();
    report_ready(client, name).await;
}

/// Namespace `name` with faultline's opt-in label or without it, whatever it had before (server-
/// side apply by the tests' own field manager).
/// Server-side apply of any object (kind found through discovery), as the client's user; a
/// namespaced object without a namespace goes to `default_namespace`.
pub async fn apply_object(client: &Client, object: &serde_json::Value, default_namespace: &str) {
    let types: kube::core::TypeMeta = serde_json::from_value(object.clone()).unwrap();
    let gvk = kube::core::GroupVersionKind::try_from(&types).unwrap();
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    let name = object["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        kube::discovery::Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(default_namespace),
            &resource,
        ),
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        name,
        &PatchParams::apply("faultline-tests").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

pub async fn apply_namespace(client: &Client, name: &str, opted_in: bool) {
    let labels = if opted_in {
        serde_json::json!({faultline::api::NAMESPACE_OPT_IN_LABEL: faultline::api::NAMESPACE_OPT_IN_VALUE})
    } else {
        serde_json::json!({})
    };
    let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": labels}});
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("faultline-tests").force(),
            &Patch::Apply(&namespace),
        )
        .await
        .unwrap();
    if !opted_in {
        // A label another manager set (the reset's merge patch leaves ownership behind).
        let unlabel = serde_json::json!({"metadata": {
            "labels": {faultline::api::NAMESPACE_OPT_IN_LABEL: null},
        }});
        Api::<Namespace>::all(client.clone())
            .patch(name, &PatchParams::default(), &Patch::Merge(&unlabel))
            .await
            .unwrap();
    }
    // A real server refuses pods in a namespace whose `default` ServiceAccount the controller
    // manager has not made yet (a moment after a new namespace; longer on a loaded machine).
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), name);
    super::wait_for(
        &format!("namespace {name}'s default ServiceAccount"),
        Duration::from_secs(30),
        || async { accounts.get_opt("default").await.ok()?.map(|_| ()) },
    )
    .await;
}

/// Sets the pause switch (`faultline pause` / `resume`: the ConfigMap it writes in the
/// controller's namespace `faultline-system`).
pub async fn set_paused(client: &Client, paused: bool) {
    let map = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": faultline::controller::PAUSE_CONFIGMAP},
        "data": {"paused": paused.to_string()}});
    Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "faultline-system")
        .patch(
            faultline::controller::PAUSE_CONFIGMAP,
            &PatchParams::apply("faultline-tests").force(),
            &Patch::Apply(&map),
        )
        .await
        .unwrap();
}

const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Deletes what tests create in `namespace`: faultline's objects first (without waiting for
/// finalizers nobody may serve any more), then workloads, then the rest.
async fn empty_namespace(client: &Client, namespace: &str) {
    release_faultline_objects(client, namespace).await;
    delete_all::<Deployment>(client, namespace, DeleteParams::background()).await;
    delete_all::<DaemonSet>(client, namespace, DeleteParams::background()).await;
    delete_all::<ReplicaSet>(client, namespace, DeleteParams::background()).await;
    // No kubelet may be left to confirm a graceful deletion.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    release_and_delete_all(&pods, namespace, &DeleteParams::default().grace_period(0)).await;
    delete_all::<PodDisruptionBudget>(client, namespace, DeleteParams::default()).await;
    delete_all::<k8s_openapi::api::rbac::v1::Role>(client, namespace, DeleteParams::default())
        .await;
    delete_all::<k8s_openapi::api::rbac::v1::RoleBinding>(
        client,
        namespace,
        DeleteParams::default(),
    )
    .await;
    // Helm's release records among them.
    delete_all::<k8s_openapi::api::core::v1::Secret>(client, namespace, DeleteParams::default())
        .await;
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    for account in accounts
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if account.name_any() != "default" {
            let _ = accounts
                .delete(&account.name_any(), &DeleteParams::default())
                .await;
        }
    }
    delete_all::<Lease>(client, namespace, DeleteParams::default()).await;
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    for service in services
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if !(namespace == "default" && service.name_any() == "kubernetes") {
            let _ = services
                .delete(&service.name_any(), &DeleteParams::default())
                .await;
        }
    }
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for cm in configmaps
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if cm.name_any() != "kube-root-ca.crt" {
            let _ = configmaps
                .delete(&cm.name_any(), &DeleteParams::default())
                .await;
        }
    }
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), namespace);
    let _ = events
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
}

/// Faultline's objects, read untyped: a test may have stored one its types cannot read.
async fn release_faultline_objects(client: &Client, namespace: &str) {
    for resource in [
        ApiResource::erase::<ChaosExperiment>(&()),
        ApiResource::erase::<GameDay>(&()),
        ApiResource::erase::<ChaosSchedule>(&()),
        ApiResource::erase::<FaultInjection>(&()),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        release_and_delete_all(&api, namespace, &DeleteParams::default()).await;
    }
}

async fn delete_all<K>(client: &Client, namespace: &str, params: DeleteParams)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let _ = api.delete_collection(&params, &ListParams::default()).await;
}

/// Drops every finalizer (whoever held it is gone) and deletes each object.
async fn release_and_delete_all<K>(api: &Api<K>, namespace: &str, params: &DeleteParams)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = api
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("cleaning up {namespace}: list: {e}"));
    let release = serde_json::json!({"metadata": {"finalizers": null}});
    let tolerated = |result: Result<(), kube::Error>, what: &str| match result {
        Ok(()) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => panic!("cleaning up {namespace}: {what}: {e}"),
    };
    for object in list.items {
        let name = object.name_any();
        if object.finalizers().iter().next().is_some() {
            let released = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&release))
                .await
                .map(|_| ());
            tolerated(released, &format!("release {name}"));
        }
        tolerated(
            api.delete(&name, params).await.map(|_| ()),
            &format!("delete {name}"),
        );
    }
}

/// A client that authenticates as ServiceAccount `namespace/name` with a token the API server
/// issues (TokenRequest, one hour), bound to pod `namespace/bound_pod` when given: such a token
/// carries the pod's node (`authentication.kubernetes.io/node-name`), as a DaemonSet pod's does.
/// Real cluster only.
pub async fn client_as(
    cluster: &TestCluster,
    namespace: &str,
    name: &str,
    bound_pod: Option<&str>,
) -> Client {
    Client::try_from(config_as(cluster, namespace, name, bound_pod).await).unwrap()
}

/// [`client_as`]'s configuration, for code under test that builds its own clients (the
/// controller). Real cluster only.
pub async fn config_as(
    cluster: &TestCluster,
    namespace: &str,
    name: &str,
    bound_pod: Option<&str>,
) -> kube::Config {
    let TestCluster::Real(real) = cluster else {
        panic!("ServiceAccount tokens need the real cluster");
    };
    let admin = cluster.client().await;
    let bound = match bound_pod {
        Some(pod) => {
            let uid = Api::<Pod>::namespaced(admin.clone(), namespace)
                .get(pod)
                .await
                .unwrap()
                .metadata
                .uid;
            serde_json::json!({"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": uid})
        }
        None => serde_json::Value::Null,
    };
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({
            "spec": {"audiences": [], "expirationSeconds": 3600, "boundObjectRef": bound}
        }))
        .unwrap();
    let token = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin, namespace)
        .create_token_request(name, &Default::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for {namespace}/{name}: {e}"))
        .status
        .expect("a TokenRequest answers with a token")
        .token;
    let mut kubeconfig: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&real.kubeconfig).unwrap()).unwrap();
    kubeconfig["users"] = serde_json::json!([{"name": name, "user": {"token": token}}]);
    kubeconfig["contexts"][0]["context"]["user"] = serde_json::json!(name);
    let parsed: kube::config::Kubeconfig = serde_json::from_value(kubeconfig).unwrap();
    kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .unwrap()
}
