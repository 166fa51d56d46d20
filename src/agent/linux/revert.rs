//! Reverting the faults of many pods in one pass. The node's namespace holds a steering table
//! per injection and every transaction there that drops an xtables expression waits for the
//! kernel's grace period: so the node is touched once for all of the pass (one transaction
//! removes every table, one look afterwards judges every residue), and the pods' own
//! namespaces are worked on in parallel. A fault this agent applied on the node's side alone
//! (an NFQUEUE egress delay steered by nftables) never entered its pod's namespace: its revert
//! stops its workers and does not enter (or read) that namespace at all.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use super::{LinuxKernel, POD_INTERFACE, failed, remove_tree_unless_claimed};
use crate::agent::kernel::{KernelError, Mechanism, RevertItem, RevertedFault};
use crate::agent::netns::Netns;
use crate::agent::nfqueue::{self, Steering};
use crate::agent::residual::{self, NodeLines, Snapshot};
use crate::agent::tag::InjectionTag;
use crate::agent::{iptables, nft};

/// Pods worked on at once within a pass: their namespaces' work is short system calls, a few
/// threads keep the cores busy without crowding the agent's other work.
const PASS_THREADS: usize = 4;

type PodResults = Vec<Result<RevertedFault, KernelError>>;

/// What one pod's part of the pass did, before the node's look judges it.
struct PodPass {
    results: Vec<Result<(), KernelError>>,
    /// The pod's lines after the revert; `None` when the pod (and its namespace) is gone,
    /// none when its faults never entered its namespace.
    after: Option<std::io::Result<Vec<String>>>,
    veth: Option<String>,
}

impl LinuxKernel {
    /// Removes the faults of these pods, one result list per pod and per item, in order.
    /// Every table in the node's namespace goes in one transaction first (no packet is steered
    /// to a queue once it commits), then each pod's own rules, workers and qdiscs, then one
    /// look at the node for the residue of them all.
    pub(super) fn revert_many(&self, pods: &[(String, Vec<RevertItem>)]) -> Vec<PodResults> {
        let everyone = |error: KernelError| -> Vec<PodResults> {
            pods.iter()
                .map(|(_, items)| items.iter().map(|_| Err(error.clone())).collect())
                .collect()
        };
        let host = match self.host_netns() {
            Ok(host) => host,
            Err(e) => return everyone(e),
        };
        let started = Instant::now();
        let tags: Vec<InjectionTag> = pods
            .iter()
            .flat_map(|(_, items)| items.iter().map(|i| i.tag.clone()))
            .collect();
        if let Err(e) = nft::remove_all(&host, &tags) {
            return everyone(KernelError::Failed(format!(
                "removing nftables tables on the node: {e}"
            )));
        }
        // No packet is steered to the node's queues any more: their workers may all release
        // at once, rather than one pod after the other below.
        self.nfqueue.begin_releasing_node_sides(&tags);
        let node_done = started.elapsed();
        let clocks = PodClocks::default();
        let passes = in_parallel(pods, |(pod_uid, items)| {
            self.revert_in_pod(&host, pod_uid, items, &tags, &clocks)
        });
        let pods_done = started.elapsed();
        let iptables = pods
            .iter()
            .flat_map(|(_, items)| items)
            .any(|i| i.mechanism == Some(Mechanism::Iptables));
        let veths: BTreeSet<String> = pods
            .iter()
            .zip(&passes)
            .filter(|((_, items), _)| items.iter().any(touches_qdiscs))
            .filter_map(|(_, pass)| pass.veth.clone())
            .collect();
        let node = residual::node_lines(&host, &veths, iptables);
        let look_done = started.elapsed();
        let judged = pods
            .iter()
            .zip(passes)
            .map(|((_, items), pass)| judge(items, pass, &node))
            .collect();
        tracing::debug!(
            pods = pods.len(),
            faults = tags.len(),
            node_us = node_done.as_micros() as u64,
            pods_us = (pods_done - node_done).as_micros() as u64,
            look_us = (look_done - pods_done).as_micros() as u64,
            judge_us = (started.elapsed() - look_done).as_micros() as u64,
            pod_tables_us = clocks.tables.load(Ordering::Relaxed),
            pod_mechanisms_us = clocks.mechanisms.load(Ordering::Relaxed),
            pod_lines_us = clocks.lines.load(Ordering::Relaxed),
            "revert pass stages"
        );
        judged
    }

    /// One pod's part of a pass (the node's tables are gone already): its own tables, the
    /// workers, the qdiscs, and its lines afterwards.
    fn revert_in_pod(
        &self,
        host: &Netns,
        pod_uid: &str,
        items: &[RevertItem],
        in_pass: &[InjectionTag],
        clocks: &PodClocks,
    ) -> PodPass {
        if items.iter().all(|item| self.only_on_node(item)) {
            return self.revert_on_node_only(items, clocks);
        }
        let pod = match self.pod_netns(pod_uid) {
            Ok(pod) => pod,
            Err(gone) => {
                // The pod's namespace went with the pod; what is on the node's side did not.
                for item in items {
                    let _ = self.nfqueue.remove_in(&item.tag, &[host]);
                }
                return PodPass {
                    results: items.iter().map(|_| Err(gone.clone())).collect(),
                    after: None,
                    veth: None,
                };
            }
        };
        let veth = items
            .iter()
            .any(touches_qdiscs)
            .then(|| nfqueue::host_veth(&pod, host).ok())
            .flatten();
        let tags: Vec<InjectionTag> = items.iter().map(|i| i.tag.clone()).collect();
        let started = Instant::now();
        let removed = nft::remove_all(&pod, &tags);
        PodClocks::add(&clocks.tables, started);
        if let Err(e) = removed {
            let error = KernelError::Failed(format!("removing nftables tables: {e}"));
            return PodPass {
                results: items.iter().map(|_| Err(error.clone())).collect(),
                after: None,
                veth,
            };
        }
        let started = Instant::now();
        let results = items
            .iter()
            .map(|item| self.revert_mechanisms(&pod, host, veth.as_deref(), item, in_pass))
            .collect();
        PodClocks::add(&clocks.mechanisms, started);
        let iptables = items
            .iter()
            .any(|i| i.mechanism == Some(Mechanism::Iptables));
        let started = Instant::now();
        let after = residual::pod_lines(&pod, iptables);
        PodClocks::add(&clocks.lines, started);
        PodPass {
            results,
            after: Some(after),
            veth,
        }
    }

    /// Whether this agent applied `item` on the node's side alone: the pod's namespace holds
    /// nothing of it, so its revert does not enter (or look at) that namespace.
    fn only_on_node(&self, item: &RevertItem) -> bool {
        item.mechanism == Some(Mechanism::Nfqueue) && self.nfqueue.only_on_node(&item.tag)
    }

    /// A pod's part of a pass when every fault of it lived on the node's side: its steering
    /// tables went with the node's; its workers stop. The look at the node judges the residue.
    fn revert_on_node_only(&self, items: &[RevertItem], clocks: &PodClocks) -> PodPass {
        let started = Instant::now();
        let results = items
            .iter()
            .map(|item| {
                self.nfqueue
                    .remove_in(&item.tag, &[])
                    .map(drop)
                    .map_err(failed("stopping the NFQUEUE workers"))
            })
            .collect();
        PodClocks::add(&clocks.mechanisms, started);
        PodPass {
            results,
            after: Some(Ok(Vec::new())),
            veth: None,
        }
    }

    /// What is left of one fault once the tables are gone, by mechanism (every one when the
    /// agent crashed while applying and does not know how far it got).
    fn revert_mechanisms(
        &self,
        pod: &Netns,
        host: &Netns,
        veth: Option<&str>,
        item: &RevertItem,
        in_pass: &[InjectionTag],
    ) -> Result<(), KernelError> {
        let mechanisms = match item.mechanism {
            Some(m) => vec![m],
            None => Mechanism::ALL.to_vec(),
        };
        let mut result = Ok(());
        for mechanism in mechanisms {
            let step = match mechanism {
                Mechanism::Nftables => Ok(()),
                Mechanism::Iptables => iptables::remove(pod, &item.tag)
                    .map(drop)
                    .map_err(failed("removing the iptables chain")),
                Mechanism::Nfqueue => {
                    // Tables are gone; stop the workers (they release what they hold).
                    let mut step = self
                        .nfqueue
                        .remove_in(&item.tag, &[])
                        .map(drop)
                        .map_err(failed("stopping the NFQUEUE workers"));
                    if step.is_ok()
                        && (self.nfqueue.steering() == Steering::Iptables
                            || item.mechanism.is_none())
                    {
                        step = [pod, host]
                            .into_iter()
                            .try_for_each(|ns| {
                                nfqueue::remove_legacy_chain(ns, &item.tag).map(drop)
                            })
                            .map_err(failed("removing the NFQUEUE chain"));
                    }
                    step
                }
                Mechanism::Netem | Mechanism::Htb => {
                    let mut step = remove_tree_unless_claimed(pod, POD_INTERFACE, in_pass)
                        .map(drop)
                        .map_err(failed("removing the qdisc"));
                    if step.is_ok()
                        && let Some(veth) = veth
                    {
                        step = remove_tree_unless_claimed(host, veth, in_pass)
                            .map(drop)
                            .map_err(failed("removing the qdisc"));
                    }
                    step
                }
            };
            if step.is_err() && result.is_ok() {
                result = step;
            }
        }
        result
    }
}

/// Time the pods' parts of a pass spent per stage, summed over the pods (microseconds), for
/// the pass's debug line.
#[derive(Default)]
struct PodClocks {
    tables: AtomicU64,
    mechanisms: AtomicU64,
    lines: AtomicU64,
}

impl PodClocks {
    fn add(clock: &AtomicU64, since: Instant) {
        clock.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

/// Whether reverting `item` may touch a qdisc (and so needs the pod's veth).
fn touches_qdiscs(item: &RevertItem) -> bool {
    item.mechanism.is_none_or(|m| m.is_qdisc())
}

/// Each item's result: its step's error, or what it left compared with its baseline.
fn judge(items: &[RevertItem], pass: PodPass, node: &std::io::Result<NodeLines>) -> PodResults {
    let after: Option<Result<Snapshot, String>> = pass.after.map(|pod| {
        let pod = pod.map_err(|e| e.to_string())?;
        let node = node.as_ref().map_err(|e| e.to_string())?;
        Ok(node.with_pod(pod, pass.veth.as_deref()))
    });
    items
        .iter()
        .zip(pass.results)
        .map(|(item, result)| {
            result?;
            let Some(before) = item.baseline.as_deref().and_then(Snapshot::from_text) else {
                return Ok(RevertedFault::default());
            };
            let Some(after) = &after else {
                return Ok(RevertedFault::default());
            };
            let after = after.as_ref().map_err(|e| {
                KernelError::Failed(format!(
                    "cannot read the namespaces' rules after the revert: {e}"
                ))
            })?;
            Ok(RevertedFault {
                residual: residual::residual(&before, after, &item.tag, touches_qdiscs(item)),
            })
        })
        .collect()
}

/// `work` applied to each of `items` on up to [`PASS_THREADS`] threads; results in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..PASS_THREADS.min(items.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let result = work(item);
                    done.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((index, result));
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::in_parallel;

    #[test]
    fn parallel_work_keeps_the_order_of_its_items() {
        let items: Vec<u32> = (0..97).collect();
        let doubled = in_parallel(&items, |n| n * 2);
        assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(in_parallel(&[] as &[u32], |n| *n), Vec::<u32>::new());
    }
}
