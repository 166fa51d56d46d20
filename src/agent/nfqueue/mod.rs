//! The userspace latency and loss path, for kernels without `sch_netem`: iptables sends the
//! pod's packets to an NFQUEUE, a worker of ours holds each one for its delay (or drops it) and
//! hands it back to the kernel.
//!
//! ```text
//!  pod netns            node netns (host)                      agent
//!  eth0 ──veth──▶ vethN ─▶ mangle PREROUTING ─▶ FL-<tag> ─▶ NFQUEUE n ─▶ worker: heap of
//!                          (-i vethN | -m physdev ...)         (bypass)     release times
//!  eth0 ◀── ingress: pod netns mangle PREROUTING ─▶ FL-<tag> ─▶ NFQUEUE m ─▶ worker
//! ```
//!
//! Where packets are queued matters. Egress (`to`) is queued where the pod's packets arrive on
//! the node, on the node side of its veth: there the packet has left the pod's socket (veth
//! orphans it), so holding it does not stall TCP Small Queues in the pod, which would collapse
//! throughput if we queued in the pod's OUTPUT chain. Ingress (`from`) is queued in the pod's
//! own PREROUTING, again on the receive side. `both` does both, with one queue per namespace
//! (queues, like their sockets, belong to a network namespace).
//!
//! Guarantees:
//! - Every rule says `--queue-bypass` and every queue is bound fail-open: a dead agent, a
//!   stopped worker or a full queue lets packets through undelayed; the fault weakens, the pod
//!   is never cut off. Such packets are counted as `bypassed`.
//! - [`NfqueueEngine::apply`] takes the desired state and is idempotent: afterwards the chain
//!   holds exactly the fault's rules, `PREROUTING` jumps to it exactly once, and a worker is
//!   bound to its queue. A restarted agent recovers the queue number from the rules.
//! - [`NfqueueEngine::remove`] deletes rules before stopping the worker, which then releases
//!   every packet it holds.
//!
//! Caveats:
//! - `bypassed` is computed: packets that hit our NFQUEUE rules minus packets our worker read,
//!   since the worker started (the kernel counts nothing when it fails open). Packets that
//!   bypassed while no agent ran are not counted.
//! - Bridged pods need br_netfilter (see [`hostveth`]).
//! - The delay is measured from when we read the packet (microseconds after the kernel queued
//!   it); timer wake-ups add tens of microseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::agent::netns::{Netns, NetnsId};
use crate::agent::tag::InjectionTag;
use crate::api::{Direction, NetworkFault};

pub mod hostveth;
pub mod impair;
pub mod netlink;
pub mod rules;
pub mod traffic;
mod worker;

pub use hostveth::{HostPort, host_veth};
pub use impair::Impairment;

use netlink::{QueueConfig, QueueSocket};
use rules::{Family, Hook, Saved, Scope};
use worker::Worker;

/// A pod's network namespace and the node's (where the pod's veth peer is).
#[derive(Debug)]
pub struct PodNet {
    pub pod: Netns,
    pub host: Netns,
}

/// Which namespace a queue is in, which is also which way its packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// The node's namespace, packets from the pod's veth: the pod's egress.
    Node,
    /// The pod's namespace, packets arriving at the pod: its ingress.
    Pod,
}

impl Side {
    fn wanted(self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (Side::Node, Direction::To | Direction::Both)
                | (Side::Pod, Direction::From | Direction::Both)
        )
    }
}

impl PodNet {
    fn ns(&self, side: Side) -> &Netns {
        match side {
            Side::Node => &self.host,
            Side::Pod => &self.pod,
        }
    }
}

/// Packet counts of an injection, all queues together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NfqueueStats {
    /// Packets held for a delay and then released.
    pub delayed: u64,
    /// Packets dropped for loss.
    pub dropped: u64,
    /// Packets that passed undelayed because the queue was full, our socket overflowed or no
    /// worker was bound.
    pub bypassed: u64,
}

/// One queue of an applied injection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedQueue {
    pub side: Side,
    pub queue: u16,
    /// The pod's veth on the node, for [`Side::Node`].
    pub port: Option<HostPort>,
}

/// What [`NfqueueEngine::apply`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NfqueueApplied {
    pub queues: Vec<AppliedQueue>,
    /// Whether any rule was written (false: everything was already in place).
    pub rules_written: bool,
    /// Whether rules of a previous agent were found and a worker bound to their queue.
    pub recovered: bool,
    /// Things the user should know (a bridge option turned on, IPv6 left out).
    pub notes: Vec<String>,
}

impl NfqueueApplied {
    /// One line for the injection's status message.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .queues
            .iter()
            .map(|q| match (&q.side, &q.port) {
                (Side::Node, Some(HostPort::Bridged { veth, bridge })) => format!(
                    "egress queued (nfqueue {}) on {veth}, a port of bridge {bridge}",
                    q.queue
                ),
                (Side::Node, _) => format!(
                    "egress queued (nfqueue {}) on {}",
                    q.queue,
                    q.port.as_ref().map_or("the pod's veth", HostPort::veth)
                ),
                (Side::Pod, _) => format!("ingress queued (nfqueue {}) in the pod", q.queue),
            })
            .collect();
        parts.extend(self.notes.iter().cloned());
        parts.join("; ")
    }
}

/// Queue numbers we choose from; each injection starts at a point derived from its tag.
const QUEUE_FIRST: u16 = 16_384;
/// Candidate queue numbers tried before giving up.
const QUEUE_ATTEMPTS: usize = 256;

#[derive(Debug)]
struct SideState {
    ns: Netns,
    ns_id: NetnsId,
    worker: Worker,
    /// Kernel rule counter and our read counter when counting (re)started.
    base_queued: u64,
    base_received: u64,
    /// Bypassed packets counted before the last time the rules (and their counters) were
    /// rewritten.
    carried_bypass: u64,
}

impl SideState {
    fn bypassed(&self, queued: u64) -> u64 {
        let received = self.worker.counters().received.load(Ordering::Relaxed);
        self.carried_bypass
            + queued
                .saturating_sub(self.base_queued)
                .saturating_sub(received.saturating_sub(self.base_received))
    }

    fn rebase(&mut self, queued: u64) {
        self.base_queued = queued;
        self.base_received = self.worker.counters().received.load(Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct Injection {
    sides: BTreeMap<Side, SideState>,
}

/// The NFQUEUE injections of this agent, each with its workers.
///
/// Dropping the engine stops every worker (releasing the packets they hold) and leaves the
/// rules: packets then bypass until an engine applies the injection again or removes it.
#[derive(Debug, Default)]
pub struct NfqueueEngine {
    injections: Mutex<HashMap<InjectionTag, Arc<Mutex<Injection>>>>,
    max_queue_len: Option<u32>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

impl NfqueueEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps every queue's length (packets held in the kernel at once) below what the delay
    /// needs: beyond it packets bypass. For memory-tight nodes, and for tests of the bypass.
    pub fn with_max_queue_len(mut self, max_len: u32) -> Self {
        self.max_queue_len = Some(max_len.max(1));
        self
    }

    fn queue_config(&self, impairment: &Impairment) -> QueueConfig {
        let mut config = QueueConfig::for_delay(impairment.max_delay());
        if let Some(cap) = self.max_queue_len {
            config.max_len = config.max_len.min(cap);
        }
        config
    }

    fn entry(&self, tag: &InjectionTag) -> Arc<Mutex<Injection>> {
        Arc::clone(lock(&self.injections).entry(tag.clone()).or_default())
    }

    /// Makes the kernel and our workers carry out `fault` (latency or loss) for the pod, as
    /// described in the module documentation. Blocking (runs `iptables`): call it from
    /// `spawn_blocking`.
    ///
    /// `fault.peer_cidrs` and `fault.ports` name the peers' end of the traffic (empty: all):
    /// egress matches destination address and port, ingress source address and port, so `both`
    /// affects both halves of the same connections. Ports match TCP and UDP only.
    ///
    /// Changing the fault of an applied injection changes it in place: new parameters apply to
    /// packets from then on, the rules are rewritten only if they differ, and a side no longer
    /// wanted (direction `to` after `both`) is removed.
    pub fn apply(
        &self,
        tag: &InjectionTag,
        net: &PodNet,
        fault: &NetworkFault,
    ) -> io::Result<NfqueueApplied> {
        let (impairment, direction) = Impairment::from_fault(fault).map_err(invalid)?;
        let scope = Scope::parse(&fault.peer_cidrs, &fault.ports).map_err(invalid)?;
        let entry = self.entry(tag);
        let mut injection = lock(&entry);
        let mut applied = NfqueueApplied::default();
        for side in [Side::Node, Side::Pod] {
            let ns = net.ns(side);
            if !side.wanted(direction) {
                if let Some(state) = injection.sides.remove(&side) {
                    state.worker.stop();
                }
                applied.rules_written |= remove_rules(ns, tag)?;
                continue;
            }
            let hook = match side {
                Side::Node => {
                    let (port, note) = hostveth::host_port(&net.pod, &net.host)?;
                    applied.notes.extend(note);
                    Hook::Node(port)
                }
                Side::Pod => Hook::Pod,
            };
            let queue = apply_side(
                &mut injection,
                &self.queue_config(&impairment),
                side,
                ns,
                tag,
                &hook,
                &scope,
                &impairment,
                &mut applied,
            )?;
            applied.queues.push(AppliedQueue {
                side,
                queue,
                port: match hook {
                    Hook::Node(port) => Some(port),
                    Hook::Pod => None,
                },
            });
        }
        Ok(applied)
    }

    /// Removes the injection: its rules in the pod's and the node's namespace, then its
    /// workers. `Ok(false)` when there was nothing.
    pub fn remove(&self, tag: &InjectionTag, net: &PodNet) -> io::Result<bool> {
        self.remove_in(tag, &[&net.host, &net.pod])
    }

    /// [`NfqueueEngine::remove`] for the namespaces still there, e.g. only the node's when the
    /// pod (and its namespace) is gone.
    pub fn remove_in(&self, tag: &InjectionTag, namespaces: &[&Netns]) -> io::Result<bool> {
        let entry = lock(&self.injections).get(tag).cloned();
        let mut injection = entry.as_ref().map(|e| lock(e));
        let mut found = false;
        // Rules first, so that no packet is queued any more; then the workers release theirs.
        for ns in namespaces {
            found |= remove_rules(ns, tag)?;
        }
        if let Some(injection) = injection.as_mut() {
            for (_, state) in std::mem::take(&mut injection.sides) {
                state.worker.stop();
                found = true;
            }
        }
        drop(injection);
        lock(&self.injections).remove(tag);
        Ok(found)
    }

    /// Packet counts of an injection this engine applied, `None` for any other. Reads the
    /// kernel's rule counters (runs `iptables-save`): call it from `spawn_blocking`.
    pub fn stats(&self, tag: &InjectionTag) -> Option<NfqueueStats> {
        let entry = lock(&self.injections).get(tag).cloned()?;
        let injection = lock(&entry);
        if injection.sides.is_empty() {
            return None;
        }
        let mut stats = NfqueueStats::default();
        for state in injection.sides.values() {
            let counters = state.worker.counters();
            stats.delayed += counters.delayed.load(Ordering::Relaxed);
            stats.dropped += counters.dropped.load(Ordering::Relaxed);
            stats.bypassed += match queued_packets(&state.ns, tag) {
                Ok(queued) => state.bypassed(queued),
                Err(error) => {
                    tracing::debug!(%tag, %error, "cannot read nfqueue rule counters");
                    state.carried_bypass
                }
            };
        }
        Some(stats)
    }

    /// Tags of the injections this engine has workers for.
    pub fn active(&self) -> Vec<InjectionTag> {
        let mut tags: Vec<InjectionTag> = lock(&self.injections).keys().cloned().collect();
        tags.sort();
        tags
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_side(
    injection: &mut Injection,
    config: &QueueConfig,
    side: Side,
    ns: &Netns,
    tag: &InjectionTag,
    hook: &Hook,
    scope: &Scope,
    impairment: &Impairment,
    applied: &mut NfqueueApplied,
) -> io::Result<u16> {
    let ns_id = ns.id()?;
    if injection.sides.get(&side).is_some_and(|s| s.ns_id != ns_id) {
        // Another namespace than before (the pod was replaced): start over there.
        if let Some(stale) = injection.sides.remove(&side) {
            stale.worker.stop();
        }
    }
    let chain = tag.iptables_chain();
    let saved = read_all(ns)?;
    let state = match injection.sides.entry(side) {
        std::collections::btree_map::Entry::Occupied(occupied) => {
            let state = occupied.into_mut();
            if state.worker.impairment() != *impairment {
                state.worker.set_impairment(impairment.clone());
                state.worker.configure(config)?;
            }
            state
        }
        std::collections::btree_map::Entry::Vacant(vacant) => {
            let recovered = saved.values().find_map(|s| s.queue_of(&chain));
            let socket = match recovered {
                Some(queue) => {
                    applied.recovered = true;
                    QueueSocket::open_in(ns, queue, config).map_err(|e| {
                        let hint = if e.raw_os_error() == Some(nix::libc::EBUSY) {
                            " (another process holds it: is a previous agent still running?)"
                        } else {
                            ""
                        };
                        io::Error::new(
                            e.kind(),
                            format!(
                                "cannot bind nfqueue {queue} found in chain {chain}: {e}{hint}"
                            ),
                        )
                    })?
                }
                None => bind_free_queue(ns, tag, config)?,
            };
            let worker = Worker::start(socket, impairment.clone())?;
            let queued = saved.values().map(|s| s.queued_packets(&chain)).sum();
            let mut state = SideState {
                ns: ns.try_clone()?,
                ns_id,
                worker,
                base_queued: 0,
                base_received: 0,
                carried_bypass: 0,
            };
            state.rebase(queued);
            vacant.insert(state)
        }
    };
    let queue = state.worker.queue();
    let mut chain_rewritten = false;
    for family in Family::ALL {
        let current = &saved[&family];
        let script = if scope.families().contains(&family) {
            let rules = rules::chain_rules(tag, family, hook, scope, queue);
            rules::restore_script(current, tag, &rules, &hook.jump(tag)).map(|change| {
                chain_rewritten |= change.chain_rewritten;
                change.script
            })
        } else {
            rules::removal_script(current, tag)
        };
        let Some(script) = script else { continue };
        match rules::restore(ns, family, &script) {
            Ok(()) => applied.rules_written = true,
            // Everything was asked for and this node has no usable ip6tables: IPv4 only.
            Err(error) if family == Family::V6 && scope.cidrs.is_empty() => {
                applied
                    .notes
                    .push(format!("IPv6 traffic is not affected: {error}"));
            }
            Err(error) => return Err(error),
        }
    }
    if chain_rewritten {
        // The rewrite reset the rule counters: carry what was counted and count afresh.
        let before: u64 = saved.values().map(|s| s.queued_packets(&chain)).sum();
        state.carried_bypass = state.bypassed(before);
        state.rebase(queued_packets(ns, tag)?);
    }
    Ok(queue)
}

fn read_all(ns: &Netns) -> io::Result<BTreeMap<Family, Saved>> {
    Family::ALL
        .into_iter()
        .map(|family| Ok((family, rules::read(ns, family)?)))
        .collect()
}

fn queued_packets(ns: &Netns, tag: &InjectionTag) -> io::Result<u64> {
    let chain = tag.iptables_chain();
    Ok(read_all(ns)?
        .values()
        .map(|s| s.queued_packets(&chain))
        .sum())
}

/// Deletes the injection's chain and jumps in `ns`, both families. `Ok(false)` when absent.
fn remove_rules(ns: &Netns, tag: &InjectionTag) -> io::Result<bool> {
    let mut found = false;
    for (family, saved) in read_all(ns)? {
        if let Some(script) = rules::removal_script(&saved, tag) {
            rules::restore(ns, family, &script)?;
            found = true;
        }
    }
    Ok(found)
}

/// Binds the first queue number, from the tag's starting point on, that no rule names and no
/// socket holds in `ns`.
fn bind_free_queue(
    ns: &Netns,
    tag: &InjectionTag,
    config: &QueueConfig,
) -> io::Result<QueueSocket> {
    let mut taken = rules::queue_numbers_in_use(ns)?;
    taken.extend(bound_queues(ns)?);
    let span = u32::from(u16::MAX - QUEUE_FIRST) + 1;
    let start = u32::from_str_radix(&tag.as_str()[..8], 16).unwrap_or(0) % span;
    let mut attempts = 0;
    for offset in 0..span {
        let queue = QUEUE_FIRST + u16::try_from((start + offset) % span).expect("within span");
        if taken.contains(&queue) {
            continue;
        }
        match QueueSocket::open_in(ns, queue, config) {
            Ok(socket) => return Ok(socket),
            // Bound meanwhile by someone else: next.
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        attempts += 1;
        if attempts == QUEUE_ATTEMPTS {
            break;
        }
    }
    Err(io::Error::other(format!(
        "no free nfqueue number in {} after {attempts} attempts",
        ns.path().display()
    )))
}

/// Queue numbers bound by some socket in `ns`, from the kernel's
/// `/proc/net/netfilter/nfnetlink_queue` (first column).
fn bound_queues(ns: &Netns) -> io::Result<BTreeSet<u16>> {
    // thread-self: /proc/self/net would show the namespace of the process's main thread.
    let text =
        ns.run(|| std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue"))?;
    let text = match text {
        Ok(text) => text,
        // No nfnetlink_queue module loaded yet: nothing bound.
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect())
}

/// The faultline NFQUEUE chains present in a namespace (both families), for orphan cleanup.
pub fn owned(net_ns: &Netns) -> io::Result<Vec<InjectionTag>> {
    let tags: BTreeSet<InjectionTag> = read_all(net_ns)?
        .values()
        .flat_map(Saved::nfqueue_tags)
        .collect();
    Ok(tags.into_iter().collect())
}

/// The faultline NFQUEUE chains in the node's namespace that may be this agent's: those whose
/// jumps name only `our_veths` (the host sides of this node's pods) or interfaces that no longer
/// exist (their pod is gone). A chain that jumps from an interface of someone else's pod (a
/// second agent on the same kernel, as with several sandboxes on one machine) is left alone.
pub fn owned_on_node(host: &Netns, our_veths: &BTreeSet<String>) -> io::Result<Vec<InjectionTag>> {
    let saved = read_all(host)?;
    let existing: BTreeSet<String> = host
        .run(|| {
            nix::net::if_::if_nameindex().map(|names| {
                names
                    .iter()
                    .map(|i| i.name().to_string_lossy().into_owned())
                    .collect()
            })
        })?
        .map_err(io::Error::from)?;
    let mut tags = BTreeSet::new();
    for tables in saved.values() {
        for tag in tables.nfqueue_tags() {
            let foreign = tables
                .jumps_to(&tag.iptables_chain())
                .iter()
                .flat_map(|rule| rules::interfaces(&rule.line))
                .any(|ifname| existing.contains(&ifname) && !our_veths.contains(&ifname));
            if !foreign {
                tags.insert(tag);
            }
        }
    }
    Ok(tags.into_iter().collect())
}

/// Whether this node can run the NFQUEUE path: in a throwaway network namespace, an iptables
/// NFQUEUE rule can be added and deleted and a queue bound. Needs root (CAP_NET_ADMIN and
/// CAP_SYS_ADMIN).
pub fn available() -> bool {
    match probe() {
        Ok(()) => true,
        Err(error) => {
            tracing::info!(%error, "the nfqueue path is not available");
            false
        }
    }
}

fn probe() -> io::Result<()> {
    std::thread::spawn(|| -> io::Result<()> {
        // This thread alone moves to a new namespace, which vanishes when the thread ends.
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        let ns = Netns::current()?;
        let chain = "FL-nfqueueprobe";
        rules::restore(
            &ns,
            Family::V4,
            &format!(
                "*{table}\n:{chain} - [0:0]\n-A {chain} -j NFQUEUE --queue-num 1 --queue-bypass\nCOMMIT\n",
                table = rules::TABLE
            ),
        )?;
        rules::restore(
            &ns,
            Family::V4,
            &format!("*{table}\n-F {chain}\n-X {chain}\nCOMMIT\n", table = rules::TABLE),
        )?;
        drop(QueueSocket::open_in(
            &ns,
            1,
            &QueueConfig::for_delay(std::time::Duration::ZERO),
        )?);
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the nfqueue probe panicked"))?
}
