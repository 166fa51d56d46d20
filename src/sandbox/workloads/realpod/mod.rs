//! Real pods for the sandbox (root only): every pod the simulated kubelet starts becomes a
//! network namespace on a bridge in the machine's own namespace, and every container a
//! `faultline demo-app` process inside that namespace and inside a kubelet-style pod cgroup.
//! The node agent then finds and changes these pods exactly as it does on a real node.
//!
//! ```text
//!  root namespace:  bridge flsbx0 10.244.0.1/16 ── flv<uid8> ══ eth0 10.244.N.H  (netns flsbx-<uid8>)
//!                                                                 └─ demo-app :<containerPort>
//!  cgroups:         /sys/fs/cgroup/{pids,unified}/faultline-sandbox/kubepods/besteffort/pod<uid>/
//! ```
//!
//! Modules: `net` (namespaces, veths, the bridge), `cgroup`, `supervise` (one task per container:
//! spawn, readiness, restart), `cleanup` (name-based removal of everything, idempotent, also
//! after a crash; and the machine-wide slots that keep sandboxes and tests apart).
//!
//! Simplifications: every container runs demo-app whatever its image, listening on its first
//! `containerPort` (8080 when none) with the `env` values of the spec (`valueFrom` ignored);
//! readiness is `GET /healthz` until it first answers, per process; no liveness probes, no
//! resource limits, no init containers, no volumes.

mod cgroup;
mod cleanup;
mod net;
mod supervise;

pub use cleanup::{
    Cleanup, Leftovers, SLOTS, SlotLease, claim_slot, cleanup, cleanup_slot_when_free,
    cleanup_unclaimed_slots, leftovers,
};

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;
use tokio::sync::{broadcast, watch};

use super::lock;
use super::runtime::RuntimeError;
use supervise::Container;

/// Names and places of everything the runtime makes, and its timings. Each sandbox (and each
/// test) uses its own bridge, subnet, namespace prefix and cgroup root; [`RealPodConfig::slot`]
/// hands out non-overlapping sets.
#[derive(Debug, Clone)]
pub struct RealPodConfig {
    /// The `faultline` binary whose `demo-app` subcommand runs as every container.
    pub exe: PathBuf,
    /// Bridge in the machine's namespace; at most 15 characters.
    pub bridge: String,
    /// The first two octets of the pod /16: pods get `a.b.<node>.<host>`, the bridge `a.b.0.1`.
    pub subnet: [u8; 2],
    /// Pod namespaces are named `<prefix><first 8 hex digits of the uid>`.
    pub netns_prefix: String,
    /// Pod cgroups live under `<mount>/<cgroup_root>/kubepods/besteffort/pod<uid>`.
    pub cgroup_root: String,
    /// The cgroup hierarchies to place pods in (see [`RealPodConfig::slot`] for the default).
    pub cgroup_mounts: Vec<PathBuf>,
    /// Where each container's stdout and stderr go, one file per run in the kubelet's layout
    /// (see [`crate::sandbox::pod_logs`]); none: nowhere.
    pub log_dir: Option<PathBuf>,
    /// How long `start` waits for every container's `/healthz` before reporting it not ready
    /// (readiness is reported later, when it comes).
    pub ready_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a pod stops.
    pub termination_grace: Duration,
    /// The Service names file containers resolve names through (`DEMO_HOSTS_FILE`), standing in
    /// for cluster DNS; written by the sandbox's Services stand-in.
    pub hosts_file: Option<PathBuf>,
}

impl RealPodConfig {
    /// The names of slot `slot` (< [`SLOTS`]). Slot 0 is the sandbox's defaults: bridge
    /// `flsbx0`, pods in 10.244.0.0/16, namespaces `flsbx-*`, cgroup root `faultline-sandbox`.
    /// Slot k > 0: `flsbx<k>`, 10.(244+k).0.0/16, `flsbx<k>-*`, `faultline-sandbox-<k>`.
    pub fn slot(slot: u8, exe: PathBuf) -> Self {
        assert!(slot < SLOTS, "slot {slot} out of range");
        let (netns_prefix, cgroup_root) = if slot == 0 {
            ("flsbx-".to_string(), "faultline-sandbox".to_string())
        } else {
            (format!("flsbx{slot}-"), format!("faultline-sandbox-{slot}"))
        };
        RealPodConfig {
            exe,
            bridge: format!("flsbx{slot}"),
            subnet: [10, 244 + slot],
            netns_prefix,
            cgroup_root,
            cgroup_mounts: cgroup::default_mounts(),
            log_dir: None,
            ready_timeout: Duration::from_secs(30),
            termination_grace: Duration::from_secs(5),
            hosts_file: None,
        }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], 0, 1)
    }

    /// The pod network, e.g. `10.244.0.0/16`.
    pub fn pod_cidr(&self) -> String {
        format!("{}.{}.0.0/16", self.subnet[0], self.subnet[1])
    }

    /// The network namespace of pod `uid`.
    pub fn netns_name(&self, uid: &str) -> String {
        format!("{}{}", self.netns_prefix, short_uid(uid))
    }

    /// The host side of pod `uid`'s veth pair: `flv<8 hex>` (11 characters).
    pub fn veth_name(uid: &str) -> String {
        format!("flv{}", short_uid(uid))
    }

    /// Pod `uid`'s cgroup directory in every hierarchy.
    pub fn cgroup_dirs(&self, uid: &str) -> Vec<PathBuf> {
        self.cgroup_mounts
            .iter()
            .map(|m| cgroup::pod_dir(m, &self.cgroup_root, uid))
            .collect()
    }

    /// The cgroup root in every hierarchy.
    pub fn cgroup_roots(&self) -> Vec<PathBuf> {
        self.cgroup_mounts
            .iter()
            .map(|m| m.join(&self.cgroup_root))
            .collect()
    }
}

/// The first 8 hex digits of a uid (dashes skipped; other characters are not expected in a
/// uid but are mapped to hex so that names stay valid).
fn short_uid(uid: &str) -> String {
    uid.chars()
        .filter(|c| *c != '-')
        .map(|c| {
            if c.is_ascii_hexdigit() {
                c.to_ascii_lowercase()
            } else {
                char::from_digit(u32::from(c) % 16, 16).unwrap_or('0')
            }
        })
        .take(8)
        .collect()
}

/// A pod's containers changed (a process died, was restarted, became ready): what the kubelet
/// should write to the pod's status.
#[derive(Debug, Clone)]
pub struct PodUpdate {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub containers: Vec<ContainerStatus>,
}

/// One running pod.
#[derive(Debug)]
struct RunningPod {
    namespace: String,
    name: String,
    uid: String,
    ip: Ipv4Addr,
    netns: String,
    cgroups: Vec<PathBuf>,
    containers: Vec<Arc<Container>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl RunningPod {
    fn statuses(&self) -> Vec<ContainerStatus> {
        self.containers.iter().map(|c| c.status()).collect()
    }
}

/// The real-pod runtime. Create one per sandbox (or test) with its own [`RealPodConfig`].
#[derive(Debug)]
pub struct RealPods {
    config: RealPodConfig,
    pods: Mutex<HashMap<String, Arc<RunningPod>>>,
    /// Uids stopped once: a late `start` for them must not bring them back.
    stopped: Mutex<HashSet<String>>,
    /// Serialises pod set-up (and the bridge's creation on first use).
    setup: tokio::sync::Mutex<()>,
    updates: broadcast::Sender<PodUpdate>,
    http: reqwest::Client,
}

impl RealPods {
    pub fn new(config: RealPodConfig) -> io::Result<Arc<Self>> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(1))
            .build()
            .map_err(io::Error::other)?;
        Ok(Arc::new(RealPods {
            config,
            pods: Mutex::default(),
            stopped: Mutex::default(),
            setup: tokio::sync::Mutex::new(()),
            updates: broadcast::channel(256).0,
            http,
        }))
    }

    pub fn config(&self) -> &RealPodConfig {
        &self.config
    }

    /// Container status changes after `start` returned (restarts, readiness).
    pub fn subscribe(&self) -> broadcast::Receiver<PodUpdate> {
        self.updates.subscribe()
    }

    /// The pid of a running container's process (`None` between a crash and its restart, or
    /// for an unknown pod/container). Tests kill it to make the container restart.
    pub fn container_pid(&self, uid: &str, container: &str) -> Option<u32> {
        let pod = lock(&self.pods).get(uid).cloned()?;
        let container = pod.containers.iter().find(|c| c.name() == container)?;
        container.pid()
    }

    /// The current container state of every running pod, as updates: what a status manager
    /// that missed some updates reports to catch up (an update is about one pod, so a later one
    /// does not supersede a missed one of another pod).
    pub fn current_states(&self) -> Vec<PodUpdate> {
        lock(&self.pods)
            .values()
            .map(|pod| PodUpdate {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                containers: pod.statuses(),
            })
            .collect()
    }

    /// The container statuses of one running pod, `None` when it does not run here.
    pub fn statuses(&self, uid: &str) -> Option<Vec<ContainerStatus>> {
        lock(&self.pods).get(uid).map(|pod| pod.statuses())
    }

    /// The uids of the pods running now.
    pub fn running_pods(&self) -> Vec<String> {
        lock(&self.pods).keys().cloned().collect()
    }

    /// Sets up the pod's namespace and cgroup, starts its containers, and waits (up to
    /// `ready_timeout`) for them to answer `/healthz`. Idempotent per uid.
    pub async fn start(
        self: &Arc<Self>,
        pod: &Pod,
        pod_ip: Ipv4Addr,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let uid = pod.uid().unwrap_or_default();
        let name = pod.name_any();
        if lock(&self.stopped).contains(&uid) {
            return Err(RuntimeError::Stopped(name));
        }
        let running = {
            let _setup = self.setup.lock().await;
            let existing = lock(&self.pods).get(&uid).cloned();
            match existing {
                Some(running) => running,
                None => self.set_up(pod, &uid, pod_ip).await?,
            }
        };
        let deadline = tokio::time::Instant::now() + self.config.ready_timeout;
        let mut stopped = running.stop.subscribe();
        while !running.containers.iter().all(|c| c.ready())
            && tokio::time::Instant::now() < deadline
            && !*stopped.borrow()
        {
            let _ = tokio::time::timeout(Duration::from_millis(50), stopped.changed()).await;
        }
        Ok(running.statuses())
    }

    async fn set_up(
        self: &Arc<Self>,
        pod: &Pod,
        uid: &str,
        pod_ip: Ipv4Addr,
    ) -> Result<Arc<RunningPod>, RuntimeError> {
        let name = pod.name_any();
        let config = self.config.clone();
        let netns = config.netns_name(uid);
        let veth = RealPodConfig::veth_name(uid);
        let cgroups = config.cgroup_dirs(uid);
        let (ns, v, dirs) = (netns.clone(), veth.clone(), cgroups.clone());
        let made = tokio::task::spawn_blocking(move || {
            let at = |step: &'static str| move |e: io::Error| (step, e);
            net::ensure_bridge(&config.bridge, config.gateway())
                .map_err(at("create the pod bridge"))?;
            net::create_pod_network(&ns, &v, &config.bridge, pod_ip, config.gateway())
                .map_err(at("create the pod network"))?;
            cgroup::create(&dirs).map_err(at("create the pod cgroup"))
        })
        .await
        .unwrap_or_else(|e| Err(("set up", io::Error::other(e))));
        if let Err((step, source)) = made {
            return Err(RuntimeError::Setup {
                step,
                pod: name,
                source,
            });
        }

        let containers = supervise::containers(pod, pod_ip);
        let running = Arc::new(RunningPod {
            namespace: pod.namespace().unwrap_or_default(),
            name,
            uid: uid.to_string(),
            ip: pod_ip,
            netns,
            cgroups,
            containers,
            stop: watch::channel(false).0,
            tasks: Mutex::default(),
        });
        let tasks = running
            .containers
            .iter()
            .map(|c| {
                tokio::spawn(supervise::supervise(
                    self.clone(),
                    running.clone(),
                    c.clone(),
                ))
            })
            .collect();
        *lock(&running.tasks) = tasks;
        lock(&self.pods).insert(uid.to_string(), running.clone());
        tracing::info!(pod = %running.name, uid, ip = %pod_ip, netns = %running.netns, "real pod started");
        Ok(running)
    }

    /// Stops the pod's processes (SIGTERM, then SIGKILL after the grace period) and removes its
    /// namespace, veth and cgroup. Idempotent; also cleans up a pod this runtime never started
    /// (from an earlier run) by its names.
    pub async fn stop(&self, uid: &str) {
        lock(&self.stopped).insert(uid.to_string());
        let running = {
            let _setup = self.setup.lock().await;
            lock(&self.pods).remove(uid)
        };
        if let Some(running) = &running {
            let _ = running.stop.send(true);
            let tasks = std::mem::take(&mut *lock(&running.tasks));
            for task in tasks {
                let _ = task.await;
            }
        }
        let netns = self.config.netns_name(uid);
        let veth = RealPodConfig::veth_name(uid);
        let dirs = self.config.cgroup_dirs(uid);
        let removed = tokio::task::spawn_blocking(move || {
            for dir in &dirs {
                cgroup::kill_all(dir);
            }
            for pid in net::namespace_processes(&netns) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            net::delete_pod_network(&netns, &veth)?;
            for dir in &dirs {
                cgroup::remove_tree(dir, Duration::from_secs(5))?;
            }
            io::Result::Ok(())
        })
        .await;
        match removed {
            Ok(Ok(())) => {
                if let Some(running) = running {
                    tracing::info!(pod = %running.name, uid, "real pod stopped");
                }
            }
            Ok(Err(error)) => tracing::warn!(uid, %error, "a real pod was not fully removed"),
            Err(error) => tracing::warn!(uid, %error, "removing a real pod failed"),
        }
    }

    /// Stops every pod (at the end of the sandbox or a test).
    pub async fn shutdown(&self) {
        let uids = self.running_pods();
        futures::future::join_all(uids.iter().map(|uid| self.stop(uid))).await;
    }

    fn publish(&self, pod: &RunningPod) {
        let _ = self.updates.send(PodUpdate {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            containers: pod.statuses(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits_and_slots_do_not_overlap() {
        let uid = "3F2a1b4c-5d6e-7f80-9a0b-1c2d3e4f5a6b";
        assert_eq!(RealPodConfig::veth_name(uid), "flv3f2a1b4c");
        let zero = RealPodConfig::slot(0, "faultline".into());
        assert_eq!(zero.bridge, "flsbx0");
        assert_eq!(zero.netns_name(uid), "flsbx-3f2a1b4c");
        assert_eq!(zero.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(zero.cgroup_root, "faultline-sandbox");
        let last = RealPodConfig::slot(SLOTS - 1, "faultline".into());
        assert!(last.bridge.len() <= 15);
        assert_eq!(last.pod_cidr(), format!("10.{}.0.0/16", 244 + SLOTS - 1));
        // The default prefix must not match another slot's namespaces.
        assert!(!last.netns_name(uid).starts_with(&zero.netns_prefix));
        assert_eq!(short_uid("ab-c"), "abc");
    }
}
