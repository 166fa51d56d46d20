//! The engine: each injection's workers and packet counters, and applying and removing its
//! rules and queues.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::agent::deadline::Deadline;
use crate::agent::netns::{Netns, NetnsId};
use crate::agent::nft::{self, Comment};
use crate::agent::nftables::{AddrFamily, Family as NftFamily};
use crate::agent::scope::Scope;
use crate::agent::tag::InjectionTag;
use crate::api::NetworkFault;

use super::installed::{nft_queue_rules, queued_packets_iptables, read_all, remove_rules};
use super::netlink::{QueueConfig, QueueSocket};
use super::queues::{MAX_QUEUES, bind_free_queues};
use super::rules::{self, Family, Hook};
use super::steer::{self, Entry};
use super::worker::Worker;
use super::{
    AppliedQueue, HostPort, Impairment, NfqueueApplied, NfqueueStats, PodNet, Side, Steering,
    default_queues, hostveth,
};

#[derive(Debug)]
struct SideState {
    ns: Netns,
    ns_id: NetnsId,
    workers: Vec<Worker>,
    /// Kernel rule counter and our read counter when counting (re)started.
    base_queued: u64,
    base_received: u64,
    /// Bypassed packets counted before the last time the rules (and their counters) were
    /// rewritten.
    carried_bypass: u64,
    /// Packets the rules matched before the last rewrite.
    carried_matched: u64,
}

impl SideState {
    fn received(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.counters().received.load(Ordering::Relaxed))
            .sum()
    }

    fn bypassed(&self, queued: u64) -> u64 {
        self.carried_bypass
            + queued
                .saturating_sub(self.base_queued)
                .saturating_sub(self.received().saturating_sub(self.base_received))
    }

    fn matched(&self, queued: u64) -> u64 {
        self.carried_matched + queued.saturating_sub(self.base_queued)
    }

    /// The rules were rewritten (their counters restart from `queued`, 0 for new rules).
    fn rebase(&mut self, before: u64, queued: u64) {
        self.carried_bypass = self.bypassed(before);
        self.carried_matched = self.matched(before);
        self.base_queued = queued;
        self.base_received = self.received();
    }

    fn first_queue(&self) -> u16 {
        self.workers.first().map_or(0, Worker::queue)
    }
}

#[derive(Debug, Default)]
struct Injection {
    sides: BTreeMap<Side, SideState>,
}

/// The NFQUEUE injections of this agent, each with its workers.
///
/// Dropping the engine stops every worker (releasing the packets they hold) and leaves the
/// rules: packets then bypass until an engine applies the injection again or removes it, and
/// in any case stop being queued at the injection's deadline.
#[derive(Debug)]
pub struct NfqueueEngine {
    injections: Mutex<HashMap<InjectionTag, Arc<Mutex<Injection>>>>,
    max_queue_len: Option<u32>,
    steering: Steering,
    queues: u16,
}

impl Default for NfqueueEngine {
    fn default() -> Self {
        Self::new()
    }
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
    /// An engine with the steering this kernel offers and [`default_queues`] queues per side.
    pub fn new() -> Self {
        Self {
            injections: Mutex::default(),
            max_queue_len: None,
            steering: Steering::detect().unwrap_or(Steering::Nftables),
            queues: default_queues(),
        }
    }

    pub fn with_steering(mut self, steering: Steering) -> Self {
        self.steering = steering;
        self
    }

    /// Queues per side (nftables steering; the iptables fallback uses one).
    pub fn with_queues(mut self, queues: u16) -> Self {
        self.queues = queues.clamp(1, MAX_QUEUES);
        self
    }

    pub fn steering(&self) -> Steering {
        self.steering
    }

    /// Caps every queue's length (packets held in the kernel at once) below what the delay
    /// needs: beyond it packets bypass. For memory-tight nodes, and for tests of the bypass.
    pub fn with_max_queue_len(mut self, max_len: u32) -> Self {
        self.max_queue_len = Some(max_len.max(1));
        self
    }

    fn queue_config(&self, impairment: &Impairment, queues: u16) -> QueueConfig {
        // Each queue is sized for the whole rate: one flow lands on one queue.
        let _ = queues;
        let mut config = QueueConfig::for_delay(impairment.max_delay());
        if let Some(cap) = self.max_queue_len {
            config.max_len = config.max_len.min(cap);
        }
        config
    }

    fn entry(&self, tag: &InjectionTag) -> Arc<Mutex<Injection>> {
        Arc::clone(lock(&self.injections).entry(tag.clone()).or_default())
    }

    /// Makes the kernel and our workers carry out `fault` (latency or loss) for the pod until
    /// `deadline`, as described in the module documentation. Blocking: call it from
    /// `spawn_blocking`. `pod_uid` goes into the tables' comments.
    ///
    /// `fault.peer_cidrs` and `fault.ports` name the peers' end of the traffic (empty: all):
    /// egress matches destination address and port, ingress source address and port, so `both`
    /// affects both halves of the same connections. Ports match TCP and UDP only.
    ///
    /// Changing the fault of an applied injection changes it in place: new parameters apply to
    /// packets from then on, the tables are rewritten (with the deadline as of now), and a
    /// side no longer wanted (direction `to` after `both`) is removed.
    pub fn apply(
        &self,
        tag: &InjectionTag,
        net: &PodNet,
        fault: &NetworkFault,
        deadline: &Deadline,
        pod_uid: &str,
    ) -> io::Result<NfqueueApplied> {
        let (impairment, direction) = Impairment::from_fault(fault).map_err(invalid)?;
        let scope = Scope::parse(&fault.peer_cidrs, &fault.ports).map_err(invalid)?;
        let gate = deadline.remaining().map_err(|e| invalid(e.to_string()))?;
        let entry = self.entry(tag);
        let mut injection = lock(&entry);
        let mut applied = NfqueueApplied::default();
        for side in [Side::Node, Side::Pod] {
            let ns = net.ns(side);
            if !side.wanted(direction) {
                if let Some(state) = injection.sides.remove(&side) {
                    for worker in state.workers {
                        worker.stop();
                    }
                }
                applied.rules_written |= remove_rules(ns, tag, self.steering)?;
                continue;
            }
            let (hook_entry, port) = match side {
                Side::Node => {
                    let t0 = std::time::Instant::now();
                    let (port, note) = hostveth::host_port(&net.pod, &net.host)?;
                    tracing::debug!(us = t0.elapsed().as_micros() as u64, "nfqueue host port");
                    applied.notes.extend(note);
                    (Entry::Node(port.clone()), Some(port))
                }
                Side::Pod => (
                    Entry::Pod(crate::agent::links::names_but_lo(&net.pod)?),
                    None,
                ),
            };
            let comment = Comment::new(pod_uid, deadline, port.as_ref().map(HostPort::veth));
            let (first, queues) = match self.steering {
                Steering::Nftables => self.apply_side_nft(
                    &mut injection,
                    side,
                    ns,
                    tag,
                    &hook_entry,
                    &scope,
                    &impairment,
                    gate,
                    &comment,
                    &mut applied,
                )?,
                Steering::Iptables => self.apply_side_iptables(
                    &mut injection,
                    side,
                    ns,
                    tag,
                    &hook_entry,
                    fault,
                    &impairment,
                    deadline,
                    &mut applied,
                )?,
            };
            applied.queues.push(AppliedQueue {
                side,
                queue: first,
                queues,
                port,
            });
        }
        Ok(applied)
    }

    /// A side's state, started (or restarted in a new namespace) with workers bound to
    /// `recovered` queues or to free ones.
    #[allow(clippy::too_many_arguments)]
    fn side_state<'a>(
        &self,
        injection: &'a mut Injection,
        side: Side,
        ns: &Netns,
        tag: &InjectionTag,
        recovered: Option<(u16, u16)>,
        queues: u16,
        impairment: &Impairment,
        applied: &mut NfqueueApplied,
    ) -> io::Result<&'a mut SideState> {
        let ns_id = ns.id()?;
        if injection.sides.get(&side).is_some_and(|s| s.ns_id != ns_id) {
            // Another namespace than before (the pod was replaced): start over there.
            if let Some(stale) = injection.sides.remove(&side) {
                for worker in stale.workers {
                    worker.stop();
                }
            }
        }
        match injection.sides.entry(side) {
            std::collections::btree_map::Entry::Occupied(occupied) => {
                let state = occupied.into_mut();
                let config = self.queue_config(impairment, state.workers.len() as u16);
                for worker in &state.workers {
                    if worker.impairment() != *impairment {
                        worker.set_impairment(impairment.clone());
                        worker.configure(&config)?;
                    }
                }
                Ok(state)
            }
            std::collections::btree_map::Entry::Vacant(vacant) => {
                let sockets = match recovered {
                    Some((first, total)) => {
                        applied.recovered = true;
                        let config = self.queue_config(impairment, total);
                        (first..first + total)
                            .map(|queue| {
                                QueueSocket::open_in(ns, queue, &config).map_err(|e| {
                                    let hint = if e.raw_os_error() == Some(nix::libc::EBUSY) {
                                        " (another process holds it: is a previous agent still running?)"
                                    } else {
                                        ""
                                    };
                                    io::Error::new(
                                        e.kind(),
                                        format!(
                                            "cannot bind nfqueue {queue} found in the rules of {}: {e}{hint}",
                                            tag.nft_table()
                                        ),
                                    )
                                })
                            })
                            .collect::<io::Result<Vec<_>>>()?
                    }
                    None => bind_free_queues(
                        ns,
                        tag,
                        queues,
                        &self.queue_config(impairment, queues),
                        self.steering,
                    )?,
                };
                let workers = sockets
                    .into_iter()
                    .map(|socket| Worker::start(socket, impairment.clone()))
                    .collect::<io::Result<Vec<_>>>()?;
                Ok(vacant.insert(SideState {
                    ns: ns.try_clone()?,
                    ns_id,
                    workers,
                    base_queued: 0,
                    base_received: 0,
                    carried_bypass: 0,
                    carried_matched: 0,
                }))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_side_nft(
        &self,
        injection: &mut Injection,
        side: Side,
        ns: &Netns,
        tag: &InjectionTag,
        entry: &Entry,
        scope: &Scope,
        impairment: &Impairment,
        gate: std::time::Duration,
        comment: &Comment,
        applied: &mut NfqueueApplied,
    ) -> io::Result<(u16, u16)> {
        let t0 = std::time::Instant::now();
        let existing = nft_queue_rules(ns, tag)?;
        let t_existing = t0.elapsed();
        let recovered = existing.iter().find_map(|r| r.queues);
        let before: u64 = existing.iter().filter_map(|r| r.packets).sum();
        let had_state = injection.sides.contains_key(&side);
        let state = self.side_state(
            injection,
            side,
            ns,
            tag,
            if had_state { None } else { recovered },
            self.queues,
            impairment,
            applied,
        )?;
        let queues = (state.first_queue(), state.workers.len() as u16);
        let comment = comment.clone().with_queues(queues);
        let t_state = t0.elapsed();
        let mut families = scope.families();
        // The tables of the families in scope, and (same transaction) none of a family no
        // longer in scope: the rewrite restarts the counters either way.
        let write = |families: &[AddrFamily]| {
            let stale: Vec<(NftFamily, String)> = [AddrFamily::V4, AddrFamily::V6]
                .into_iter()
                .filter(|f| !families.contains(f))
                .map(|f| match f {
                    AddrFamily::V4 => (NftFamily::Ip, tag.nft_table()),
                    AddrFamily::V6 => (NftFamily::Ip6, tag.nft_table()),
                })
                .collect();
            nft::replace_and_delete(
                ns,
                &steer::tables(tag, entry, scope, queues, gate, &comment, families),
                &stale,
            )
        };
        match write(&families) {
            Ok(()) => {}
            // Everything was asked for and this node has no IPv6: IPv4 only.
            Err(error) if !scope.has_peers() && families.len() == 2 => {
                families.retain(|f| *f == AddrFamily::V4);
                write(&families)?;
                applied
                    .notes
                    .push(format!("IPv6 traffic is not affected: {error}"));
            }
            Err(error) => return Err(error),
        }
        applied.rules_written = true;
        state.rebase(before, 0);
        tracing::debug!(
            ?side,
            existing_us = t_existing.as_micros() as u64,
            queues_us = (t_state - t_existing).as_micros() as u64,
            tables_us = (t0.elapsed() - t_state).as_micros() as u64,
            "nfqueue side stages"
        );
        Ok(queues)
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_side_iptables(
        &self,
        injection: &mut Injection,
        side: Side,
        ns: &Netns,
        tag: &InjectionTag,
        entry: &Entry,
        fault: &NetworkFault,
        impairment: &Impairment,
        deadline: &Deadline,
        applied: &mut NfqueueApplied,
    ) -> io::Result<(u16, u16)> {
        let scope = rules::Scope::parse(&fault.peer_cidrs, &fault.ports).map_err(invalid)?;
        let hook = match entry {
            Entry::Node(port) => Hook::Node(port.clone()),
            Entry::Pod(_) => Hook::Pod,
        };
        let chain = tag.iptables_chain();
        let saved = read_all(ns)?;
        let recovered = saved
            .values()
            .find_map(|s| s.queue_of(&chain))
            .map(|q| (q, 1));
        let had_state = injection.sides.contains_key(&side);
        let state = self.side_state(
            injection,
            side,
            ns,
            tag,
            if had_state { None } else { recovered },
            1,
            impairment,
            applied,
        )?;
        let queue = state.first_queue();
        let until = rules::datestop(deadline);
        let mut chain_rewritten = false;
        for family in Family::ALL {
            let current = &saved[&family];
            let script = if scope.families().contains(&family) {
                let rules = rules::chain_rules(tag, family, &hook, &scope, queue, &until);
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
                Err(error) if family == Family::V6 && scope.cidrs.is_empty() => {
                    applied
                        .notes
                        .push(format!("IPv6 traffic is not affected: {error}"));
                }
                Err(error) => return Err(error),
            }
        }
        let before: u64 = saved.values().map(|s| s.queued_packets(&chain)).sum();
        if chain_rewritten || !had_state {
            let now = queued_packets_iptables(ns, tag)?;
            state.rebase(before, now);
        }
        Ok((queue, 1))
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
            found |= remove_rules(ns, tag, self.steering)?;
        }
        if let Some(injection) = injection.as_mut() {
            for (_, state) in std::mem::take(&mut injection.sides) {
                for worker in state.workers {
                    worker.stop();
                }
                found = true;
            }
        }
        drop(injection);
        lock(&self.injections).remove(tag);
        Ok(found)
    }

    /// Whether this engine applied `tag` with its queues on the node's side only, steered by
    /// nftables: the pod's namespace then holds nothing of it. `false` when unknown (an
    /// injection this engine did not apply, or the iptables fallback, which writes there).
    pub fn only_on_node(&self, tag: &InjectionTag) -> bool {
        if self.steering != Steering::Nftables {
            return false;
        }
        let Some(entry) = lock(&self.injections).get(tag).cloned() else {
            return false;
        };
        let injection = lock(&entry);
        !injection.sides.is_empty() && injection.sides.keys().all(|side| *side == Side::Node)
    }

    /// Makes the node-side workers of these injections release their packets and stop delaying
    /// (see [`Worker::begin_stop`]), all of them before any is removed. Call it once
    /// their steering tables in the node's namespace are gone; [`remove_in`](Self::remove_in)
    /// then finds them done.
    pub fn begin_releasing_node_sides(&self, tags: &[InjectionTag]) {
        if self.steering != Steering::Nftables {
            return;
        }
        let entries: Vec<_> = {
            let injections = lock(&self.injections);
            tags.iter()
                .filter_map(|tag| injections.get(tag).cloned())
                .collect()
        };
        for entry in entries {
            if let Some(node) = lock(&entry).sides.get(&Side::Node) {
                for worker in &node.workers {
                    worker.begin_stop();
                }
            }
        }
    }

    /// Packet counts of an injection this engine applied, `None` for any other. Reads the
    /// kernel's rule counters (netlink; iptables-save on the fallback): call it from
    /// `spawn_blocking`.
    pub fn stats(&self, tag: &InjectionTag) -> Option<NfqueueStats> {
        let entry = lock(&self.injections).get(tag).cloned()?;
        let injection = lock(&entry);
        if injection.sides.is_empty() {
            return None;
        }
        let mut stats = NfqueueStats::default();
        for state in injection.sides.values() {
            for worker in &state.workers {
                let counters = worker.counters();
                stats.delayed += counters.delayed.load(Ordering::Relaxed);
                stats.dropped += counters.dropped.load(Ordering::Relaxed);
            }
            let queued = match self.steering {
                Steering::Nftables => nft_queue_rules(&state.ns, tag)
                    .map(|rules| rules.iter().filter_map(|r| r.packets).sum()),
                Steering::Iptables => queued_packets_iptables(&state.ns, tag),
            };
            match queued {
                Ok(queued) => {
                    stats.bypassed += state.bypassed(queued);
                    stats.matched += state.matched(queued);
                }
                Err(error) => {
                    tracing::debug!(%tag, %error, "cannot read nfqueue rule counters");
                    stats.bypassed += state.carried_bypass;
                    stats.matched += state.carried_matched;
                }
            }
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
