//! Services in the sandbox, scaled down from what kube-proxy and cluster DNS do.
//!
//! - A Service without a ClusterIP gets one from 10.96.0.0/16 (written to its spec, as the real
//!   API server's allocator does); headless Services (`clusterIP: None`) keep none.
//! - Inside every real sandbox pod's network namespace, an nftables table `flsbx_services`
//!   DNATs each ClusterIP:port to a ready endpoint, picked at random per connection, like
//!   kube-proxy's iptables mode. The packet leaves the pod already addressed to the endpoint pod,
//!   so the endpoint sees the caller's pod IP, as in a cluster (what partitions rely on).
//! - Names (`web.default.svc.cluster.local`, `web.default.svc`, `web.default`) resolve, for the
//!   controller's probes, to the ready endpoints' IPs ([`StaticHosts`]), and for pods to the
//!   ClusterIP through a hosts file the demo app reads (`DEMO_HOSTS_FILE`); headless names
//!   resolve to the endpoints everywhere.
//!
//! Simplified: TCP only, IPv4 only, `targetPort` must be a number, no session affinity, no
//! NodePorts or LoadBalancers, no EndpointSlices objects.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::probes::hosts::StaticHosts;

/// The nftables table the sandbox writes into pod namespaces (not a faultline injection table:
/// the agent only recognises `faultline_<24 hex>`).
pub const SERVICES_TABLE: &str = "flsbx_services";

/// One Service as the sandbox serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualService {
    pub namespace: String,
    pub name: String,
    /// `None` for a headless Service (and one still waiting for its ClusterIP).
    pub cluster_ip: Option<Ipv4Addr>,
    /// (port, targetPort), TCP.
    pub ports: Vec<(u16, u16)>,
    /// Ready pods the selector matches, sorted.
    pub endpoints: Vec<Ipv4Addr>,
}

impl VirtualService {
    /// The DNS names of the Service, as cluster DNS serves them.
    pub fn names(&self) -> [String; 3] {
        let (name, ns) = (&self.name, &self.namespace);
        [
            format!("{name}.{ns}.svc.cluster.local"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}"),
        ]
    }
}

/// The Services with their ready endpoints (pure).
pub fn virtual_services(services: &[Arc<Service>], pods: &[Arc<Pod>]) -> Vec<VirtualService> {
    let mut out: Vec<VirtualService> = services
        .iter()
        .filter_map(|service| {
            let spec = service.spec.as_ref()?;
            let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
            let namespace = service.namespace().unwrap_or_default();
            let cluster_ip = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
            let ready: Vec<&Arc<Pod>> = pods
                .iter()
                .filter(|pod| pod.namespace().as_deref() == Some(namespace.as_str()))
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .filter(|pod| {
                    let labels = pod.labels();
                    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                })
                .filter(|pod| is_ready(pod))
                .collect();
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| {
                    let port = u16::try_from(p.port).ok()?;
                    let target = match &p.target_port {
                        None => port,
                        Some(IntOrString::Int(t)) => u16::try_from(*t).ok()?,
                        Some(IntOrString::String(name)) => named_port(&ready, name)?,
                    };
                    Some((port, target))
                })
                .collect();
            let mut endpoints: Vec<Ipv4Addr> = ready
                .iter()
                .filter_map(|pod| pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
                .collect();
            endpoints.sort();
            Some(VirtualService {
                namespace,
                name: service.name_any(),
                cluster_ip,
                ports,
                endpoints,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// A named `targetPort`, looked up in the endpoint pods' container ports.
fn named_port(pods: &[&Arc<Pod>], name: &str) -> Option<u16> {
    pods.iter()
        .flat_map(|pod| pod.spec.iter().flat_map(|s| &s.containers))
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A stable ClusterIP for a Service in 10.96.0.0/16, avoiding `taken`.
pub fn allocate_cluster_ip(namespace: &str, name: &str, taken: &BTreeSet<Ipv4Addr>) -> Ipv4Addr {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (namespace, name).hash(&mut hasher);
    let start = (hasher.finish() % 65_000) as u32 + 10;
    (0..65_000u32)
        .map(|i| {
            let n = (start + i) % 65_000 + 10;
            Ipv4Addr::new(10, 96, (n >> 8) as u8, (n & 0xff) as u8)
        })
        .find(|ip| !taken.contains(ip))
        .expect("fewer than 65,000 Services in a sandbox")
}

/// The `nft -f` input that makes a pod namespace's ClusterIPs lead to ready endpoints.
/// Idempotent: it recreates the table.
pub fn nft_ruleset(services: &[VirtualService]) -> String {
    let mut rules = String::new();
    for service in services {
        let Some(ip) = service.cluster_ip else {
            continue;
        };
        for (port, target) in &service.ports {
            let action = match service.endpoints.len() {
                0 => "reject with tcp reset".to_string(),
                1 => format!("dnat to {}:{target}", service.endpoints[0]),
                n => {
                    let map: Vec<String> = service
                        .endpoints
                        .iter()
                        .enumerate()
                        .map(|(i, ip)| format!("{i} : {ip}"))
                        .collect();
                    format!(
                        "dnat to numgen random mod {n} map {{ {} }}:{target}",
                        map.join(", ")
                    )
                }
            };
            rules.push_str(&format!("    ip daddr {ip} tcp dport {port} {action}\n"));
        }
    }
    format!(
        "table ip {SERVICES_TABLE}\ndelete table ip {SERVICES_TABLE}\ntable ip {SERVICES_TABLE} {{\n  chain output {{\n    type nat hook output priority -100; policy accept;\n{rules}  }}\n}}\n"
    )
}

/// Names → addresses for the controller's probes (in the machine's own namespace there is no
/// DNAT, so names go straight to ready endpoints).
pub fn probe_hosts(services: &[VirtualService]) -> HashMap<String, Vec<IpAddr>> {
    services
        .iter()
        .flat_map(|s| {
            let ips: Vec<IpAddr> = s.endpoints.iter().map(|ip| IpAddr::V4(*ip)).collect();
            s.names().into_iter().map(move |n| (n, ips.clone()))
        })
        .collect()
}

/// `name address` lines for pods: ClusterIPs, or the endpoints of a headless Service.
pub fn pod_hosts_file(services: &[VirtualService]) -> String {
    let mut out = String::new();
    for service in services {
        let ips: Vec<Ipv4Addr> = match service.cluster_ip {
            Some(ip) => vec![ip],
            None => service.endpoints.clone(),
        };
        for name in service.names() {
            for ip in &ips {
                out.push_str(&format!("{name} {ip}\n"));
            }
        }
    }
    out
}

/// Where the sandbox's Services live.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Pod namespaces to program are the `/run/netns` entries with this prefix; `None` when pods
    /// are simulated (nothing to program).
    pub netns_prefix: Option<String>,
    /// The hosts file pods read (`DEMO_HOSTS_FILE`).
    pub hosts_file: Option<PathBuf>,
    /// The same names → ready endpoints, for a controller outside this process
    /// (`FAULTLINE_PROBE_HOSTS_FILE`).
    pub probe_hosts_file: Option<PathBuf>,
    pub hosts: StaticHosts,
}

/// Keeps ClusterIPs, pod namespaces' DNAT tables, probe names and the pods' hosts file in step
/// with Services and pods, until the task is dropped.
pub async fn run(client: Client, options: ServiceOptions) {
    let (services, services_writer) = reflector::store::<Service>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let changed = Arc::new(tokio::sync::Notify::new());
    for stream in [
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(services_writer)
        .map(|_| ())
        .boxed(),
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(pods_writer)
            .map(|_| ())
            .boxed(),
    ] {
        let changed = changed.clone();
        tokio::spawn(stream.for_each(move |()| {
            changed.notify_one();
            std::future::ready(())
        }));
    }
    let _ = services.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let mut synced = Synced::default();
    loop {
        sync(&client, &services, &pods, &options, &mut synced).await;
        tokio::select! {
            _ = changed.notified() => {}
            // New pod namespaces appear without a Service or pod event worth waking for.
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// What the last sync established: the Services, and the pod namespaces that hold their rules.
#[derive(Default)]
struct Synced {
    services: Option<Vec<VirtualService>>,
    programmed: BTreeSet<String>,
}

async fn sync(
    client: &Client,
    services: &Store<Service>,
    pods: &Store<Pod>,
    options: &ServiceOptions,
    synced: &mut Synced,
) {
    let all = services.state();
    let taken: BTreeSet<Ipv4Addr> = all
        .iter()
        .filter_map(|s| s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok())
        .collect();
    let mut taken = taken;
    for service in &all {
        let unset = service
            .spec
            .as_ref()
            .is_some_and(|s| s.cluster_ip.as_deref().is_none_or(str::is_empty));
        if !unset {
            continue;
        }
        let ns = service.namespace().unwrap_or_default();
        let ip = allocate_cluster_ip(&ns, &service.name_any(), &taken);
        taken.insert(ip);
        let patch = json!({"spec": {"clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()]}});
        if let Err(error) = Api::<Service>::namespaced(client.clone(), &ns)
            .patch(
                &service.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::warn!(service = %service.name_any(), %error, "cannot assign a ClusterIP");
        }
    }
    let current = virtual_services(&all, &pods.state());
    if synced.services.as_ref() != Some(&current) {
        let names = probe_hosts(&current);
        if let Some(path) = &options.probe_hosts_file {
            write_atomically(path, &crate::probes::hosts::render(&names));
        }
        options.hosts.replace(names);
        if let Some(path) = &options.hosts_file {
            write_atomically(path, &pod_hosts_file(&current));
        }
        // Every namespace needs the new rules.
        synced.programmed.clear();
    }
    if let Some(prefix) = options.netns_prefix.clone() {
        let ruleset = nft_ruleset(&current);
        let done = std::mem::take(&mut synced.programmed);
        synced.programmed =
            tokio::task::spawn_blocking(move || program_namespaces(&prefix, &ruleset, done))
                .await
                .unwrap_or_default();
    }
    synced.services = Some(current);
}

/// Replaces `path` with `text` in one step, so a reader never sees half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Writes the rules into the pod namespaces that do not hold them yet; returns the namespaces
/// (still there) that hold them now.
fn program_namespaces(prefix: &str, ruleset: &str, done: BTreeSet<String>) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(Path::new("/run/netns")) else {
        return BTreeSet::new();
    };
    let mut programmed = BTreeSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with(prefix) {
            continue;
        }
        if done.contains(&name) {
            programmed.insert(name);
            continue;
        }
        let result = crate::agent::netns::Netns::named(&name)
            .and_then(|ns| ns.command("nft", &["-f", "-"], Some(ruleset)));
        match result {
            Ok(_) => {
                programmed.insert(name);
            }
            Err(error) => {
                tracing::debug!(netns = %name, %error, "cannot program Services into a pod namespace yet");
            }
        }
    }
    programmed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, cluster_ip: Option<&str>, port: i32, target: i32) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": {"app": name}, "clusterIP": cluster_ip,
                         "ports": [{"port": port, "targetPort": target}]}
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, app: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn endpoints_are_the_ready_pods_the_selector_matches() {
        let services = [service("web", Some("10.96.0.20"), 80, 8080)];
        let pods = [
            pod("a", "web", "10.244.1.3", true),
            pod("b", "web", "10.244.1.2", true),
            pod("c", "web", "10.244.1.4", false),
            pod("d", "db", "10.244.1.5", true),
        ];
        let vs = virtual_services(&services, &pods);
        assert_eq!(vs.len(), 1);
        assert_eq!(vs[0].ports, vec![(80, 8080)]);
        assert_eq!(
            vs[0].endpoints,
            vec![Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3)]
        );
        let rules = nft_ruleset(&vs);
        assert!(rules.contains("ip daddr 10.96.0.20 tcp dport 80 dnat to numgen random mod 2 map { 0 : 10.244.1.2, 1 : 10.244.1.3 }:8080"), "{rules}");
        let hosts = probe_hosts(&vs);
        assert_eq!(hosts["web.default.svc"].len(), 2);
        assert!(pod_hosts_file(&vs).contains("web.default.svc.cluster.local 10.96.0.20\n"));
    }

    #[test]
    fn a_service_without_endpoints_refuses_and_a_headless_one_resolves_to_pods() {
        let vs = virtual_services(
            &[
                service("web", Some("10.96.0.20"), 80, 80),
                service("db", Some("None"), 5432, 5432),
            ],
            &[pod("d", "db", "10.244.1.5", true)],
        );
        let rules = nft_ruleset(&vs);
        assert!(
            rules.contains("tcp dport 80 reject with tcp reset"),
            "{rules}"
        );
        assert!(!rules.contains("5432"), "{rules}");
        assert!(pod_hosts_file(&vs).contains("db.default.svc 10.244.1.5\n"));
    }

    #[test]
    fn cluster_ips_are_stable_and_never_reused() {
        let none = BTreeSet::new();
        let first = allocate_cluster_ip("default", "web", &none);
        assert_eq!(first, allocate_cluster_ip("default", "web", &none));
        let taken = BTreeSet::from([first]);
        assert_ne!(allocate_cluster_ip("default", "web", &taken), first);
        assert_eq!(first.octets()[..2], [10, 96]);
    }
}
