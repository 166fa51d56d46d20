//! Finding the node-side end of a pod's veth, and how packets from it reach iptables.
//!
//! The pod's `eth0` is one end of a veth pair; its `iflink` is the ifindex of the other end in
//! the node's namespace. We read it through rtnetlink inside the pod's namespace, then find
//! that ifindex in the node's namespace and check that it points back (ifindexes are per
//! namespace, so a match alone could be a coincidence).
//!
//! Two attachments are handled:
//! - routed (Calico, Cilium in routing mode, ptp): the veth is no bridge port, packets from
//!   the pod traverse the node's iptables with `-i vethN`.
//! - bridged (bridge CNI, kubenet, flannel's cni0, our TestNode's br0): frames switched by a
//!   Linux bridge reach iptables only through br_netfilter, i.e. when
//!   `net.bridge.bridge-nf-call-iptables` (per network namespace) or the bridge's own
//!   `nf_call_iptables` is 1, and then `-i` names the bridge while the port is matched with
//!   `-m physdev --physdev-in vethN`. Kubernetes requires the sysctl for bridge CNIs (kubeadm
//!   checks it), so it is normally on; when it is off we turn on the bridge's own option (that
//!   bridge only, not the whole node) and say so. Without br_netfilter loaded we fail with
//!   what to do.
//!
//! Other ports (Open vSwitch) never reach iptables and are refused.

use std::io;

use crate::agent::links::{self, Link};
use crate::agent::netns::Netns;

/// Interface names tried for the pod's side, in order; otherwise the only veth-like link.
const POD_INTERFACE: &str = "eth0";

/// The name of the pod's veth peer in the node's namespace.
pub fn host_veth(pod: &Netns, host: &Netns) -> io::Result<String> {
    Ok(find_host_link(pod, host)?.name)
}

/// The pod's peer link on the node (asked for by its index: the node may have thousands).
fn find_host_link(pod: &Netns, host: &Netns) -> io::Result<Link> {
    let pod_links = links::links(pod)?;
    let pod_link = pod_links
        .iter()
        .find(|l| l.name == POD_INTERFACE && l.peer_index.is_some())
        .or_else(|| {
            let mut peered = pod_links
                .iter()
                .filter(|l| l.peer_index.is_some() && l.peer_netnsid.is_some());
            match (peered.next(), peered.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the pod's network namespace {} has no {POD_INTERFACE} with a peer in another \
                     namespace (nor a single veth)",
                    pod.path().display()
                ),
            )
        })?;
    let peer_index = pod_link.peer_index.expect("filtered on peer_index");
    links::link_by_index(host, peer_index)?
        .filter(|l| l.peer_index == Some(pod_link.index))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no interface {peer_index} peered with the pod's {} in the node namespace \
                     {}: is the pod on this node, and its veth in this namespace?",
                    pod_link.name,
                    host.path().display()
                ),
            )
        })
}

/// How the pod's veth is attached on the node, which decides the iptables match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPort {
    /// Routed: `-i NAME`.
    Routed { veth: String },
    /// A Linux bridge port: `-m physdev --physdev-in NAME`, through br_netfilter.
    Bridged { veth: String, bridge: String },
}

impl HostPort {
    pub fn veth(&self) -> &str {
        match self {
            HostPort::Routed { veth } | HostPort::Bridged { veth, .. } => veth,
        }
    }
}

/// The pod's host-side port, with br_netfilter made to pass its frames to iptables when it is
/// a bridge port. The second value says what we changed, if anything.
pub fn host_port(pod: &Netns, host: &Netns) -> io::Result<(HostPort, Option<String>)> {
    let link = find_host_link(pod, host)?;
    let master = match link.master {
        Some(index) => links::link_by_index(host, index)?.map(|l| l.name),
        None => None,
    };
    match (link.slave_kind.as_deref(), master) {
        (None, _) => Ok((HostPort::Routed { veth: link.name }, None)),
        (Some("bridge"), Some(bridge)) => {
            let changed = ensure_bridge_calls_iptables(host, &bridge)?;
            Ok((
                HostPort::Bridged {
                    veth: link.name,
                    bridge,
                },
                changed,
            ))
        }
        (Some(kind), _) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "the pod's veth {} is a port of a {kind} device: its packets never reach \
                 netfilter, so the nfqueue path cannot delay them",
                link.name
            ),
        )),
    }
}

const BRIDGE_SYSCTLS: [&str; 2] = [
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
];

/// Makes sure bridged IPv4 and IPv6 frames of `bridge` traverse iptables. Returns what it
/// changed.
fn ensure_bridge_calls_iptables(host: &Netns, bridge: &str) -> io::Result<Option<String>> {
    // /proc/sys/net follows the namespace of the reading thread.
    let sysctls = host.run(|| {
        BRIDGE_SYSCTLS
            .map(|path| std::fs::read_to_string(path).map(|v| v.trim() == "1"))
            .into_iter()
            .collect::<io::Result<Vec<bool>>>()
    })?;
    let sysctls = match sysctls {
        Ok(values) => values,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "the pod's veth is a port of bridge {bridge} but br_netfilter is not loaded, \
                     so bridged packets never reach iptables: run `modprobe br_netfilter` on the \
                     node (Kubernetes needs it for bridge CNIs anyway)"
                ),
            ));
        }
        Err(e) => return Err(e),
    };
    if sysctls.iter().all(|&on| on) {
        return Ok(None);
    }
    let bridge_options = bridge_nf_options(host, bridge)?;
    let (v4, v6) = (
        sysctls[0] || bridge_options.0,
        sysctls[1] || bridge_options.1,
    );
    if v4 && v6 {
        return Ok(None);
    }
    host.command(
        "ip",
        &[
            "link",
            "set",
            "dev",
            bridge,
            "type",
            "bridge",
            "nf_call_iptables",
            "1",
            "nf_call_ip6tables",
            "1",
        ],
        None,
    )?;
    let message = format!(
        "turned on nf_call_iptables and nf_call_ip6tables on bridge {bridge} (the \
         bridge-nf-call sysctls are off), so that its frames reach the NFQUEUE rule"
    );
    tracing::warn!(bridge, "{message}");
    Ok(Some(message))
}

/// The bridge's own `nf_call_iptables` and `nf_call_ip6tables` options.
fn bridge_nf_options(host: &Netns, bridge: &str) -> io::Result<(bool, bool)> {
    let output = host.command("ip", &["-j", "-d", "link", "show", "dev", bridge], None)?;
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| io::Error::other(format!("cannot read `ip -j -d link show`: {e}")))?;
    let data = &value[0]["linkinfo"]["info_data"];
    Ok((
        data["nf_call_iptables"].as_u64() == Some(1),
        data["nf_call_ip6tables"].as_u64() == Some(1),
    ))
}
