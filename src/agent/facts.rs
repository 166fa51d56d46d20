//! What the agent knows besides its FaultInjections, for [`super::admission`]: its node's
//! pods, the namespaces' labels, the pause switch, and the injections for its node that lack
//! the node label. Watch caches, so a resync costs no API request (client required: the
//! watches; reads are from memory).
//!
//! Costs: one watch of the pods of each of the agent's nodes (a field selector: the kubelet's
//! own view), one of namespaces, one of a single ConfigMap, and one of the FaultInjections
//! without a node label (normally none: the controller always sets it). Objects are trimmed to
//! what the checks read (names, labels, node) before they are cached.
//!
//! Experiments are watched only once they carry the `faultline.dev/reverting` label (how the
//! controller says their faults are to come out where it cannot write the revert signal, see
//! below): watching all of them would send
//! every agent every status write of every experiment (probe results, about once a second
//! each). And only their metadata is watched: the agent reads nothing else of them, and an
//! experiment of 500 targets is a 170 KB object, which every write (the receipt of each
//! node, the verdict) would otherwise send whole to every agent. The runner reads the one
//! experiment behind an injection when it is about to apply it (see the runner). That watch
//! does not hold the agent back: without it (an older chart's permissions, say) the agent
//! reverts on each FaultInjection's deletion, as before.
//!
//! The controller names reverting experiments in one small ConfigMap, the revert signal (see
//! `controller::revert_signal`): its usual way, a write of a few hundred bytes where the label
//! is a write of the whole experiment. Either makes an experiment's faults come out. Optional
//! too (an older chart's permissions): the label and the deletions still work without it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::Notify;

use super::admission::PodFacts;
use crate::api::{ChaosExperiment, FaultInjection, NODE_LABEL, REVERTING_LABEL};
use crate::controller::{pause_switch, signal_receipts};

/// The pause switch: `paused: "true"` in this ConfigMap of the controller's namespace. (The
/// controller's name for it, which the agent must match.)
pub const PAUSE_CONFIGMAP: &str = crate::controller::PAUSE_CONFIGMAP;
/// The revert signal's ConfigMap, in the controller's namespace.
pub const REVERTING_CONFIGMAP: &str = crate::controller::REVERTING_CONFIGMAP;

/// The agent's watch caches.
pub struct FactWatches {
    pods: Vec<Store<Pod>>,
    namespaces: Store<Namespace>,
    pause: Store<ConfigMap>,
    unlabelled: Store<FaultInjection>,
    reverting: Store<PartialObjectMeta<ChaosExperiment>>,
    signal: Store<ConfigMap>,
    controller_namespace: String,
    /// How many watches have listed once; all of them must have before the agent acts.
    listed: Arc<AtomicUsize>,
    watches: usize,
}

/// The facts at one moment.
#[derive(Default)]
pub struct Snapshot {
    pub paused: bool,
    /// This node's pods by UID.
    pub pods: HashMap<String, PodFacts>,
    /// Namespace name -> labels.
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
    /// Experiments whose faults are to come out, by UID and by `namespace/name`.
    pub ending: HashSet<String>,
    /// Whether the revert signal's ConfigMap exists (receipts go there).
    pub signal_exists: bool,
}

impl Snapshot {
    /// Whether the experiment behind `injection` is reverting its faults.
    pub fn is_ending(&self, injection: &FaultInjection) -> bool {
        let experiment = &injection.spec.experiment;
        match &experiment.uid {
            Some(uid) => self.ending.contains(uid),
            None => self.ending.contains(&format!(
                "{}/{}",
                injection.namespace().unwrap_or_default(),
                experiment.name
            )),
        }
    }
}

impl FactWatches {
    /// Starts the watches; `changed` is notified on every change.
    pub fn start(
        client: &Client,
        nodes: &[String],
        controller_namespace: &str,
        changed: Arc<Notify>,
    ) -> Self {
        let listed = Arc::new(AtomicUsize::new(0));
        let mut pods = Vec::new();
        for node in nodes {
            let (store, writer) = reflector::store();
            let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
            let stream = watcher(Api::<Pod>::all(client.clone()), config)
                .default_backoff()
                .modify(|pod| {
                    trim(pod);
                    pod.spec = pod.spec.take().map(|spec| PodSpec {
                        node_name: spec.node_name,
                        ..PodSpec::default()
                    });
                    pod.status = None;
                })
                .reflect(writer);
            tokio::spawn(drive(
                "pods",
                stream,
                changed.clone(),
                listed.clone(),
                Some(labels_of::<Pod>),
            ));
            pods.push(store);
        }
        let (namespaces, writer) = reflector::store();
        let stream = watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|ns| {
            trim(ns);
            ns.spec = None;
            ns.status = None;
        })
        .reflect(writer);
        tokio::spawn(drive(
            "namespaces",
            stream,
            changed.clone(),
            listed.clone(),
            Some(labels_of::<Namespace>),
        ));

        let (pause, writer) = reflector::store();
        let stream = watcher(
            Api::<ConfigMap>::namespaced(client.clone(), controller_namespace),
            watcher::Config::default().fields(&format!("metadata.name={PAUSE_CONFIGMAP}")),
        )
        .default_backoff()
        .reflect(writer);
        tokio::spawn(drive(
            "pause switch",
            stream,
            changed.clone(),
            listed.clone(),
            None,
        ));

        let (unlabelled, writer) = reflector::store();
        let stream = watcher(
            Api::<FaultInjection>::all(client.clone()),
            watcher::Config::default().labels(&format!("!{NODE_LABEL}")),
        )
        .default_backoff()
        .reflect(writer);
        tokio::spawn(drive(
            "unlabelled FaultInjections",
            stream,
            changed.clone(),
            listed.clone(),
            None,
        ));
        let (reverting, writer) = reflector::store();
        // `Api<PartialObjectMeta<_>>` asks for metadata only (PartialObjectMetadata).
        let stream = watcher(
            Api::<PartialObjectMeta<ChaosExperiment>>::all(client.clone()),
            watcher::Config::default().labels(&format!("{REVERTING_LABEL}=true")),
        )
        .default_backoff()
        .modify(trim)
        .reflect(writer);
        // Not counted in `listed`: the agent is ready without it (see the module's doc).
        tokio::spawn(drive(
            "reverting experiments",
            stream,
            changed.clone(),
            Arc::new(AtomicUsize::new(0)),
            Some(uid_of::<PartialObjectMeta<ChaosExperiment>>),
        ));
        let (signal, writer) = reflector::store();
        let stream = watcher(
            Api::<ConfigMap>::namespaced(client.clone(), controller_namespace),
            watcher::Config::default().fields(&format!("metadata.name={REVERTING_CONFIGMAP}")),
        )
        .default_backoff()
        .modify(trim)
        .reflect(writer);
        // Not counted in `listed` either.
        tokio::spawn(drive(
            "revert signal",
            stream,
            changed,
            Arc::new(AtomicUsize::new(0)),
            Some(keys_of),
        ));
        FactWatches {
            watches: pods.len() + 3,
            reverting,
            signal,
            pods,
            namespaces,
            pause,
            unlabelled,
            controller_namespace: controller_namespace.to_string(),
            listed,
        }
    }

    /// Whether every watch has listed once (before that, nothing new is applied).
    pub fn ready(&self) -> bool {
        self.listed.load(Ordering::Acquire) >= self.watches
    }

    pub fn snapshot(&self) -> Snapshot {
        let key = reflector::ObjectRef::new(PAUSE_CONFIGMAP).within(&self.controller_namespace);
        let paused = self
            .pause
            .get(&key)
            .is_some_and(|map| pause_switch::says_paused(&map));
        let pods = self
            .pods
            .iter()
            .flat_map(|store| store.state())
            .filter_map(|pod| Some((pod.uid()?, pod_facts(&pod))))
            .collect();
        let namespaces = self
            .namespaces
            .state()
            .iter()
            .map(|ns| (ns.name_any(), ns.labels().clone()))
            .collect();
        let signal =
            reflector::ObjectRef::new(REVERTING_CONFIGMAP).within(&self.controller_namespace);
        let mut ending: HashSet<String> = self
            .reverting
            .state()
            .iter()
            .flat_map(|e| {
                let key = format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any());
                [Some(key), e.uid()].into_iter().flatten()
            })
            .collect();
        // By UID only: a name could come back as a new experiment while an old key lingers.
        let signal = self.signal.get(&signal);
        let signal_exists = signal.is_some();
        if let Some(map) = signal {
            // Its other keys are the agents' receipts (see `controller::signal_receipts`).
            ending.extend(map.data.iter().flat_map(|data| {
                data.keys()
                    .filter(|key| !signal_receipts::is_receipt(key))
                    .cloned()
            }));
        }
        Snapshot {
            paused,
            pods,
            namespaces,
            ending,
            signal_exists,
        }
    }

    /// FaultInjections for `nodes` (by `spec.nodeName`) that carry no node label.
    pub fn unlabelled(&self, nodes: &[String]) -> Vec<Arc<FaultInjection>> {
        self.unlabelled
            .state()
            .into_iter()
            .filter(|i| nodes.contains(&i.spec.node_name))
            .collect()
    }
}

/// A pod as the checks see it.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    PodFacts {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        labels: pod.labels().clone(),
    }
}

/// Drops what no check reads, before the object is cached.
fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
}

/// What the checks read of a pod or namespace: its labels.
fn labels_of<K: Resource>(object: &K) -> u64 {
    hash_of(&object.meta().labels)
}

/// What the agent reads of a reverting experiment: that it is one (its status writes, the
/// receipts of every other node among them, wake no agent).
fn uid_of<K: Resource>(object: &K) -> u64 {
    hash_of(&object.meta().uid)
}

/// What the agent reads of the revert signal: which experiments it names.
fn keys_of(map: &ConfigMap) -> u64 {
    hash_of(&map.data.as_ref().map(|d| d.keys().collect::<Vec<_>>()))
}

fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Feeds a watch into its cache and wakes the agent on changes. With `fingerprint`, a change
/// to an object wakes it only when the fingerprint changes (a pod's status updates, say, do
/// not: the checks read only labels).
async fn drive<K, S>(
    what: &'static str,
    stream: S,
    changed: Arc<Notify>,
    listed: Arc<AtomicUsize>,
    fingerprint: Option<fn(&K) -> u64>,
) where
    K: Resource,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    let mut counted = false;
    let mut failing = false;
    let mut seen: HashMap<(Option<String>, Option<String>), u64> = HashMap::new();
    while let Some(event) = stream.next().await {
        if let Some(fingerprint) = fingerprint {
            match &event {
                Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                    let key = (object.meta().namespace.clone(), object.meta().name.clone());
                    let print = fingerprint(object);
                    let same = seen.insert(key, print) == Some(print);
                    if same && matches!(event, Ok(watcher::Event::Apply(_))) {
                        continue;
                    }
                }
                Ok(watcher::Event::Delete(object)) => {
                    seen.remove(&(object.meta().namespace.clone(), object.meta().name.clone()));
                }
                _ => {}
            }
        }
        match event {
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(_) => {
                if !counted {
                    counted = true;
                    listed.fetch_add(1, Ordering::AcqRel);
                }
                failing = false;
            }
            Err(error) => {
                if !failing {
                    // Until it lists, the agent applies nothing new (it cannot check consent);
                    // faults in place keep their deadlines.
                    tracing::warn!(watch = what, %error, "cannot watch; the agent applies no new fault until it can check consent");
                    failing = true;
                }
                continue;
            }
        }
        changed.notify_one();
    }
}
