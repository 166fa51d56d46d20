//! Removing everything a real-pod runtime made, recognised by its names alone (namespaces with
//! the config's prefix, the bridge and its ports, the cgroup root), so that it works after a
//! crash just as well as after a clean stop. Idempotent: a second run finds nothing to do.
//!
//! That includes what the sandbox's node agent put in the machine's own namespace for its pods
//! (NFQUEUE steering tables, the steering of qdisc faults on a pod's veth, and the iptables
//! chains of the fallback or of older agents): rules whose port is one of this slot's veths, or
//! an interface that no longer exists. Another sandbox's rules name veths that exist and are
//! not ours, and stay.
//!
//! Slots keep sandboxes (and tests) on one machine apart: each claims a slot with an exclusive
//! `flock` on `/run/faultline/sandbox-pods-<k>.lock` and uses only the names of that slot
//! ([`RealPodConfig::slot`]). The kernel drops the lock when its holder exits, however it
//! exits, so "I can lock slot k" means "nobody uses slot k's names": what is left under them is
//! garbage that [`cleanup`] may remove.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{RealPodConfig, cgroup, net};
use crate::agent::netns::Netns;
use crate::agent::nfqueue::rules::{self as iptables_rules, Family};
use crate::agent::nft;

/// How many sandboxes (or tests) may run real pods on one machine at once.
pub const SLOTS: u8 = 10;
const LOCK_DIR: &str = "/run/faultline";

/// Exclusive use of one slot's names, until dropped (or the process exits).
#[derive(Debug)]
pub struct SlotLease {
    slot: u8,
    _lock: Flock<File>,
}

impl SlotLease {
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// Claims `slot` if nobody holds it.
    pub fn try_claim(slot: u8) -> io::Result<Option<SlotLease>> {
        std::fs::create_dir_all(LOCK_DIR)?;
        let path = Path::new(LOCK_DIR).join(format!("sandbox-pods-{slot}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(SlotLease { slot, _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => Err(io::Error::from(errno)),
        }
    }
}

/// The first free slot, or `None` when all [`SLOTS`] are in use.
pub fn claim_slot() -> io::Result<Option<SlotLease>> {
    for slot in 0..SLOTS {
        if let Some(lease) = SlotLease::try_claim(slot)? {
            return Ok(Some(lease));
        }
    }
    Ok(None)
}

/// What [`cleanup`] removed.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub processes: usize,
    pub namespaces: Vec<String>,
    pub links: Vec<String>,
    pub bridge: Option<String>,
    pub cgroups: usize,
    /// Rules of the sandbox's agent removed from the machine's own namespace.
    pub node_rules: Vec<String>,
}

impl Cleanup {
    pub fn is_empty(&self) -> bool {
        self.processes == 0
            && self.namespaces.is_empty()
            && self.links.is_empty()
            && self.bridge.is_none()
            && self.cgroups == 0
            && self.node_rules.is_empty()
    }
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} processes, {} network namespaces, {} veths, {} bridge, {} cgroups, {} agent rules in the machine's namespace",
            self.processes,
            self.namespaces.len(),
            self.links.len(),
            self.bridge.as_deref().unwrap_or("no"),
            self.cgroups,
            self.node_rules.len()
        )
    }
}

/// Kills the pods' processes and removes their namespaces, veths, the bridge and the cgroup
/// root of `config`. Only call it for names nobody uses (a slot you hold, or a test's own).
pub fn cleanup(config: &RealPodConfig) -> io::Result<Cleanup> {
    let mut done = Cleanup::default();
    // The pods' veths, before their namespaces (and so they) go.
    let ports = net::bridge_ports(&config.bridge);
    let namespaces = net::namespaces_with_prefix(&config.netns_prefix);
    let mut killed = Vec::new();
    for root in config.cgroup_roots() {
        killed.extend(cgroup::kill_all(&root));
    }
    for netns in &namespaces {
        for pid in net::namespace_processes(netns) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed.sort_unstable();
    killed.dedup();
    done.processes = killed.len();
    wait_gone(&killed, Duration::from_secs(5));
    for netns in namespaces {
        net::delete_namespace(&netns)?;
        done.namespaces.push(netns);
    }
    for port in net::bridge_ports(&config.bridge) {
        net::delete_link(&port)?;
        done.links.push(port);
    }
    if net::link_exists(&config.bridge) {
        net::delete_link(&config.bridge)?;
        done.bridge = Some(config.bridge.clone());
    }
    for root in config.cgroup_roots() {
        done.cgroups += cgroup::remove_tree(&root, Duration::from_secs(5))?;
    }
    done.node_rules = remove_node_rules(&ports)?;
    Ok(done)
}

/// Removes, from the machine's own namespace, the agent rules that name one of `ports` or an
/// interface that no longer exists. Returns what it removed.
pub fn remove_node_rules(ports: &[String]) -> io::Result<Vec<String>> {
    let ours = |ifname: &str| ports.iter().any(|p| p == ifname) || !net::link_exists(ifname);
    let host = Netns::current()?;
    let mut removed = Vec::new();
    let mut doomed = Vec::new();
    for table in nft::owned_tables(&host)? {
        let Some(comment) = &table.comment else {
            continue;
        };
        let named = comment.port.iter().chain(comment.qdisc.iter());
        let mut any = false;
        let mut all_ours = true;
        for ifname in named {
            any = true;
            all_ours &= ours(ifname);
        }
        if any && all_ours {
            removed.push(format!(
                "nftables table {} {}",
                table.family.name(),
                table.tag.nft_table()
            ));
            doomed.push(table.tag.clone());
        }
    }
    if !doomed.is_empty() {
        nft::remove_all(&host, &doomed)?;
    }
    // The iptables NFQUEUE chains of older agents (or of the fallback).
    for family in Family::ALL {
        let saved = match iptables_rules::read(&host, family) {
            Ok(saved) => saved,
            // No iptables here: nothing of that kind can be left.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for tag in saved.nfqueue_tags() {
            let chain = tag.iptables_chain();
            let interfaces: Vec<String> = saved
                .jumps_to(&chain)
                .iter()
                .flat_map(|rule| iptables_rules::interfaces(&rule.line))
                .collect();
            if interfaces.is_empty() || !interfaces.iter().all(|i| ours(i)) {
                continue;
            }
            if let Some(script) = iptables_rules::removal_script(&saved, &tag) {
                iptables_rules::restore(&host, family, &script)?;
                removed.push(format!("{} chain {chain} and its jumps", family.save()));
            }
        }
    }
    Ok(removed)
}

/// Cleans up every slot nobody holds (what crashed sandboxes and tests left behind). Returns
/// what was removed, per slot, for the slots where anything was.
pub fn cleanup_unclaimed_slots() -> io::Result<Vec<(u8, Cleanup)>> {
    let mut cleaned = Vec::new();
    for slot in 0..SLOTS {
        if let Some(done) = cleanup_if_free(slot)?
            && !done.is_empty()
        {
            cleaned.push((slot, done));
        }
    }
    Ok(cleaned)
}

/// Cleans up `slot` while holding it, if nobody else does.
fn cleanup_if_free(slot: u8) -> io::Result<Option<Cleanup>> {
    let Some(_lease) = SlotLease::try_claim(slot)? else {
        return Ok(None);
    };
    cleanup(&RealPodConfig::slot(slot, PathBuf::new())).map(Some)
}

/// Cleans up `slot` as soon as nobody holds it, waiting at most `patience` for a holder to let
/// go: `sandbox down` of a sandbox that was killed cleans its own slot even when another
/// process (a second `down`, a check) holds that slot for a moment. `None` when the slot stayed
/// held: a sandbox started there since, and it cleaned the slot when it claimed it.
pub fn cleanup_slot_when_free(slot: u8, patience: Duration) -> io::Result<Option<Cleanup>> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(done) = cleanup_if_free(slot)? {
            return Ok(Some(done));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What exists under `config`'s names (for tests and `sandbox status`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub namespaces: Vec<String>,
    pub bridge: bool,
    pub bridge_ports: Vec<String>,
    pub cgroups: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        *self == Leftovers::default()
    }
}

pub fn leftovers(config: &RealPodConfig) -> Leftovers {
    Leftovers {
        namespaces: net::namespaces_with_prefix(&config.netns_prefix),
        bridge: net::link_exists(&config.bridge),
        bridge_ports: net::bridge_ports(&config.bridge),
        cgroups: config
            .cgroup_roots()
            .into_iter()
            .flat_map(|root| cgroup::subtree(&root))
            .collect(),
    }
}

/// Waits until none of `pids` is alive (a zombie counts as gone: it holds no namespace and no
/// cgroup), for at most `patience`.
fn wait_gone(pids: &[i32], patience: Duration) {
    let deadline = Instant::now() + patience;
    while pids.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            != Some("Z")
    })
}
