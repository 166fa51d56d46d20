//! Reaching the cluster and creating a run's objects under fresh names (see the naming rules in
//! `cli::run`), with errors that say what to do next.

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::api::{ChaosExperiment, GameDay, Phase};
use crate::cli::stdout::outln;

/// What kind of object a run created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::cli) enum TrackedKind {
    Experiment,
    GameDay,
}

impl TrackedKind {
    pub fn of<K: Resource<DynamicType = ()>>() -> Self {
        if K::kind(&()) == "GameDay" {
            TrackedKind::GameDay
        } else {
            TrackedKind::Experiment
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            TrackedKind::Experiment => "chaosexperiment",
            TrackedKind::GameDay => "gameday",
        }
    }
}

/// An object the run created.
pub(in crate::cli) struct Created {
    pub kind: TrackedKind,
    pub namespace: String,
    pub name: String,
}

/// The cluster the kubeconfig points at.
pub(in crate::cli) struct Cluster {
    pub client: Client,
    pub url: String,
    /// The kubeconfig context's namespace (or `default`).
    pub namespace: String,
}

/// Connects as kubectl would (KUBECONFIG, ~/.kube/config, or in-cluster).
pub(in crate::cli) async fn connect() -> Result<Cluster, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!(
            "cannot load a kubeconfig ({e}): set KUBECONFIG to your cluster's kubeconfig, or try faultline locally with `faultline sandbox up`"
        )
    })?;
    let url = config.cluster_url.to_string();
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config)
        .map_err(|e| format!("cannot build a client for the cluster at {url}: {e}"))?;
    Ok(Cluster {
        client,
        url,
        namespace,
    })
}

/// A kube error as a sentence that says what to do next. `what` says what was being done.
pub(in crate::cli) fn explain(error: &kube::Error, cluster: &Cluster, what: &str) -> String {
    match error {
        kube::Error::Api(status) => match status.code {
            401 => format!(
                "{what}: the cluster at {} does not accept your credentials: check the kubeconfig's user (kubectl auth whoami)",
                cluster.url
            ),
            403 => format!(
                "{what}: forbidden ({}): your kubeconfig's user lacks the RBAC permission (kubectl auth can-i --list)",
                status.message
            ),
            _ => format!(
                "{what}: {} ({} {})",
                status.message, status.code, status.reason
            ),
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
            "cannot reach the cluster at {}: is your kubeconfig right? (kubectl cluster-info) [{what}: {error}]",
            cluster.url
        ),
        other => format!("{what}: {other}"),
    }
}

pub(super) fn with_created(message: String, created: &[Created]) -> String {
    if created.is_empty() {
        return message;
    }
    let list: Vec<String> = created
        .iter()
        .map(|c| format!("faultline abort {} -n {}", c.name, c.namespace))
        .collect();
    format!(
        "{message}\nthese were created before the error and keep running; stop them with: {}",
        list.join("; ")
    )
}

/// Whether an existing object is a finished run (a new run may then take a fresh name).
pub(super) trait Finished {
    fn finished(&self) -> bool;
    fn phase_text(&self) -> String;
}

impl Finished for ChaosExperiment {
    fn finished(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    }
    fn phase_text(&self) -> String {
        format!(
            "{:?}",
            self.status.as_ref().map_or(Phase::Pending, |s| s.phase)
        )
    }
}

impl Finished for GameDay {
    fn finished(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.verdict.is_some())
    }
    fn phase_text(&self) -> String {
        self.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into())
    }
}

/// Creates one object under the naming rules in the module doc.
pub(super) async fn create<K>(
    cluster: &Cluster,
    mut object: K,
    default_ns: &str,
) -> Result<Created, String>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Finished
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = TrackedKind::of::<K>();
    let namespace = object.namespace().unwrap_or_else(|| default_ns.to_string());
    let api: Api<K> = Api::namespaced(cluster.client.clone(), &namespace);
    let meta: &mut ObjectMeta = object.meta_mut();
    meta.namespace = Some(namespace.clone());
    meta.resource_version = None;
    meta.uid = None;
    if let Some(name) = meta.name.clone() {
        let what = format!("looking for an earlier {} {namespace}/{name}", kind.noun());
        let existing = api.get_opt(&name).await.map_err(|e| {
            not_served(&e, cluster, kind).unwrap_or_else(|| explain(&e, cluster, &what))
        })?;
        if let Some(existing) = existing {
            if !existing.finished() {
                return Err(format!(
                    "{} {namespace}/{name} already exists and is still going (phase {}): follow it with `faultline status -n {namespace}`, stop it with `faultline abort {name} -n {namespace}`, or rename this one (or use metadata.generateName)",
                    kind.noun(),
                    existing.phase_text()
                ));
            }
            outln!(
                "{} {namespace}/{name} exists from an earlier run (phase {}); creating this run under a fresh name",
                kind.noun(),
                existing.phase_text()
            );
            let meta = object.meta_mut();
            // Room for `-xxxxx` within the 63 characters label values allow.
            let base: String = name.chars().take(57).collect();
            meta.generate_name = Some(format!("{}-", base.trim_end_matches('-')));
            meta.name = None;
        }
    }
    let what = format!("creating {} in namespace {namespace}", kind.noun());
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| {
            if let kube::Error::Api(s) = &e
                && s.code == 404
                && s.message.contains("namespaces")
            {
                return format!(
                    "namespace {namespace} does not exist: create it (kubectl create namespace {namespace}) or pass -n NAMESPACE"
                );
            }
            not_served(&e, cluster, kind).unwrap_or_else(|| explain(&e, cluster, &what))
        })?;
    Ok(Created {
        kind,
        namespace,
        name: created.name_any(),
    })
}

/// A 404 from the collection itself: the CRD is not installed.
fn not_served(error: &kube::Error, cluster: &Cluster, kind: TrackedKind) -> Option<String> {
    match error {
        kube::Error::Api(s) if s.code == 404 && !s.message.contains("namespaces") => Some(format!(
            "the cluster at {} does not serve {}s: install faultline's CRDs (faultline crds | kubectl apply -f -) and the controller",
            cluster.url,
            kind.noun()
        )),
        _ => None,
    }
}
