//! A pod's network, the way a bridge CNI plugin makes it: a network namespace per pod, a veth
//! pair whose host side is a port of one bridge in the machine's own namespace (the bridge
//! holds the gateway address of the pod subnet), `eth0` with the pod IP inside, a default route
//! through the gateway, loopback up.
//!
//! Everything goes through `ip` (iproute2), synchronously: callers in async code use
//! `spawn_blocking`. Every removal is idempotent (a missing object counts as removed).

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::agent::netns::run_command;

/// `ip args...`, failing with ip's own message.
fn ip(args: &[&str]) -> io::Result<()> {
    run_command("ip", args, None).map(|_| ())
}

/// `ip` for a removal: "does not exist" is success.
fn ip_remove(args: &[&str]) -> io::Result<()> {
    match ip(args) {
        Err(e) if gone(&e) => Ok(()),
        other => other,
    }
}

fn gone(e: &io::Error) -> bool {
    let text = e.to_string();
    ["Cannot find device", "No such file", "does not exist"]
        .iter()
        .any(|s| text.contains(s))
}

/// Whether the machine's namespace has a link called `name`.
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The named network namespaces (`ip netns add`) whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The bridge `name` with `gateway/16`, up. Idempotent: an existing bridge is reused (and
/// given the address if it lacks it).
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr) -> io::Result<()> {
    if !link_exists(name) {
        match ip(&["link", "add", name, "type", "bridge"]) {
            Err(e) if !e.to_string().contains("File exists") => return Err(e),
            _ => {}
        }
    }
    ip(&["addr", "replace", &format!("{gateway}/16"), "dev", name])?;
    ip(&["link", "set", name, "up"])
}

/// Removes the bridge (its ports are detached, not deleted).
pub fn delete_link(name: &str) -> io::Result<()> {
    ip_remove(&["link", "delete", name])
}

/// The links that are ports of `bridge`.
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif"))
    else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Network namespace `netns` with `eth0` at `pod_ip/16` (default route via `gateway`) and lo
/// up; the host side `veth` is a port of `bridge`. A namespace or veth left over under the same
/// names is replaced. On failure whatever was made is removed again.
pub fn create_pod_network(
    netns: &str,
    veth: &str,
    bridge: &str,
    pod_ip: Ipv4Addr,
    gateway: Ipv4Addr,
) -> io::Result<()> {
    delete_pod_network(netns, veth)?;
    let made = (|| {
        ip(&["netns", "add", netns])?;
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ])?;
        ip(&["link", "set", veth, "master", bridge, "up"])?;
        ip(&[
            "-n",
            netns,
            "addr",
            "add",
            &format!("{pod_ip}/16"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", netns, "link", "set", "lo", "up"])?;
        ip(&["-n", netns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            netns,
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
        ])
    })();
    if made.is_err() {
        let _ = delete_pod_network(netns, veth);
    }
    made
}

/// Deletes the namespace (which takes `eth0`, and with it the veth pair, once no process is
/// left in it) and the host-side veth in case the namespace is still held elsewhere.
pub fn delete_pod_network(netns: &str, veth: &str) -> io::Result<()> {
    delete_namespace(netns)?;
    if link_exists(veth) {
        ip_remove(&["link", "delete", veth])?;
    }
    Ok(())
}

/// Deletes named namespace `netns` (it lives on until its last process is gone).
pub fn delete_namespace(netns: &str) -> io::Result<()> {
    if Path::new("/run/netns").join(netns).exists() {
        ip_remove(&["netns", "delete", netns])?;
    }
    Ok(())
}

/// The processes inside named namespace `netns`.
pub fn namespace_processes(netns: &str) -> Vec<i32> {
    run_command("ip", &["netns", "pids", netns], None)
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
