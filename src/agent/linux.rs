//! The Linux kernel behind [`Kernel`]: finds the pod's network namespace through `/proc`,
//! picks the mechanism the node offers, snapshots the namespace before a fault and compares
//! after its revert.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::kernel::{
    AppliedFault, Capabilities, Kernel, KernelError, Mechanism, OwnedRule, RevertedFault,
};
use super::netns::Netns;
use super::nfqueue::{NfqueueEngine, PodNet};
use super::tag::InjectionTag;
use super::{iptables, nfqueue, nft, podfind, residual, tc};
use crate::api::{Direction, NetworkFault, NetworkFaultKind};

/// The pod-side interface faults act on. Every CNI we know names it so.
const POD_INTERFACE: &str = "eth0";

pub struct LinuxKernel {
    proc_root: PathBuf,
    capabilities: Capabilities,
    nfqueue: NfqueueEngine,
}

impl LinuxKernel {
    /// Detects what this node's kernel offers (takes a moment: it tries each mechanism in a
    /// throwaway namespace).
    pub fn detect(proc_root: impl Into<PathBuf>) -> Self {
        let capabilities = Capabilities {
            netem: tc::netem_available(),
            nfqueue: nfqueue::available(),
            tbf: tc::tbf_available(),
            nftables: nft::available(),
            iptables: iptables::available(),
        };
        Self {
            proc_root: proc_root.into(),
            capabilities,
            nfqueue: NfqueueEngine::new(),
        }
    }

    fn pod_netns(&self, pod_uid: &str) -> Result<Netns, KernelError> {
        podfind::pod_netns(&self.proc_root, pod_uid)
            .map_err(|e| KernelError::TargetGone(e.to_string()))
    }
}

fn failed(what: &str) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |e| KernelError::Failed(format!("{what}: {e}"))
}

fn host_netns() -> Result<Netns, KernelError> {
    Netns::current().map_err(failed("cannot open the node's own network namespace"))
}

fn direction_of(fault: &NetworkFault) -> Direction {
    match fault.kind() {
        Some(NetworkFaultKind::Latency(l)) => l.direction,
        Some(NetworkFaultKind::Loss(l)) => l.direction,
        Some(NetworkFaultKind::Partition(d)) => d,
        _ => Direction::To,
    }
}

fn describe(fault: &NetworkFault, mechanism: Mechanism) -> String {
    let scope = if fault.peer_cidrs.is_empty() {
        "all traffic".to_string()
    } else {
        format!("traffic with {}", fault.peer_cidrs.join(", "))
    };
    let ports = if fault.ports.is_empty() {
        String::new()
    } else {
        format!(
            " on ports {}",
            fault
                .ports
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let what = match fault.kind() {
        Some(NetworkFaultKind::Latency(l)) => format!(
            "latency {}{} ({:?})",
            l.latency,
            l.jitter
                .as_ref()
                .map(|j| format!(" ± {j}"))
                .unwrap_or_default(),
            l.direction
        ),
        Some(NetworkFaultKind::Loss(l)) => format!("loss {}% ({:?})", l.percent, l.direction),
        Some(NetworkFaultKind::Bandwidth(b)) => format!("bandwidth {}", b.rate),
        Some(NetworkFaultKind::Partition(d)) => format!("partition ({d:?})"),
        None => "nothing".into(),
    };
    format!("{what} on {scope}{ports} via {}", mechanism.name())
}

impl Kernel for LinuxKernel {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn apply(
        &self,
        pod_uid: &str,
        tag: &InjectionTag,
        fault: &NetworkFault,
        mechanism: Mechanism,
    ) -> Result<AppliedFault, KernelError> {
        let pod = self.pod_netns(pod_uid)?;
        let mut notes: Option<String> = None;
        let baseline = residual::snapshot(&pod).map_err(failed(
            "cannot read the pod namespace's rules before the fault",
        ))?;
        match mechanism {
            Mechanism::Nftables => {
                nft::apply_partition(&pod, tag, fault).map_err(failed("nftables partition"))?
            }
            Mechanism::Iptables => {
                iptables::apply_partition(&pod, tag, fault).map_err(failed("iptables partition"))?
            }
            Mechanism::Nfqueue => {
                let net = PodNet {
                    pod: pod.try_clone().map_err(failed("pod namespace"))?,
                    host: host_netns()?,
                };
                let applied = self
                    .nfqueue
                    .apply(tag, &net, fault)
                    .map_err(failed("NFQUEUE"))?;
                notes = Some(applied.summary());
            }
            Mechanism::Netem | Mechanism::Tbf => {
                // Egress acts on the pod's eth0; ingress on the host side of its veth, whose
                // egress is the pod's ingress.
                let direction = match mechanism {
                    Mechanism::Netem => direction_of(fault),
                    _ => Direction::To,
                };
                let mut places = Vec::new();
                if matches!(direction, Direction::To | Direction::Both) {
                    let pod_side = pod.try_clone().map_err(failed("pod namespace"))?;
                    places.push((pod_side, POD_INTERFACE.to_string(), tc::Flow::Egress));
                }
                if matches!(direction, Direction::From | Direction::Both) {
                    let host = host_netns()?;
                    let veth = nfqueue::host_veth(&pod, &host)
                        .map_err(failed("cannot find the pod's host-side interface"))?;
                    places.push((host, veth, tc::Flow::Ingress));
                }
                for (ns, ifname, _) in &places {
                    if let Some(existing) = tc::root_qdisc(ns, ifname)
                        .map_err(failed("cannot read the interface's root qdisc"))?
                        && !existing.is_default()
                        && !existing.is_ours()
                    {
                        return Err(KernelError::Refused(format!(
                            "{ifname} already has a root qdisc ({existing}) that faultline did not install; refusing to replace it"
                        )));
                    }
                }
                for (ns, ifname, flow) in &places {
                    let result = if mechanism == Mechanism::Netem {
                        tc::apply_netem(ns, ifname, *flow, fault)
                    } else {
                        tc::apply_bandwidth(ns, ifname, *flow, fault)
                    };
                    result.map_err(failed(mechanism.name()))?;
                }
            }
        }
        Ok(AppliedFault {
            mechanism,
            message: match notes {
                Some(notes) => format!("{}: {notes}", describe(fault, mechanism)),
                None => describe(fault, mechanism),
            },
            baseline: Some(baseline.to_text()),
        })
    }

    fn revert(
        &self,
        pod_uid: &str,
        tag: &InjectionTag,
        mechanism: Option<Mechanism>,
        baseline: Option<&str>,
    ) -> Result<RevertedFault, KernelError> {
        let host = host_netns()?;
        let pod = match self.pod_netns(pod_uid) {
            Ok(pod) => pod,
            Err(gone) => {
                // The pod's namespace went with the pod; rules on the node's side did not.
                let _ = self.nfqueue.remove_in(tag, &[&host]);
                return Err(gone);
            }
        };
        let all = [
            Mechanism::Nftables,
            Mechanism::Iptables,
            Mechanism::Nfqueue,
            Mechanism::Netem,
            Mechanism::Tbf,
        ];
        let mechanisms: Vec<Mechanism> = match mechanism {
            Some(m) => vec![m],
            // Crashed while applying: we do not know how far it got; remove whatever is ours.
            None => all.to_vec(),
        };
        for mechanism in mechanisms {
            match mechanism {
                Mechanism::Nftables => {
                    nft::remove(&pod, tag).map_err(failed("removing the nftables table"))?;
                }
                Mechanism::Iptables => {
                    iptables::remove(&pod, tag).map_err(failed("removing the iptables chain"))?;
                }
                Mechanism::Nfqueue => {
                    let net = PodNet {
                        pod: pod.try_clone().map_err(failed("pod namespace"))?,
                        host: host.try_clone().map_err(failed("node namespace"))?,
                    };
                    self.nfqueue
                        .remove(tag, &net)
                        .map_err(failed("removing the NFQUEUE rules"))?;
                }
                Mechanism::Netem | Mechanism::Tbf => {
                    tc::remove(&pod, POD_INTERFACE).map_err(failed("removing the qdisc"))?;
                    if let Ok(veth) = nfqueue::host_veth(&pod, &host) {
                        tc::remove(&host, &veth).map_err(failed("removing the qdisc"))?;
                    }
                }
            }
        }
        let residual = match baseline.and_then(residual::Snapshot::from_text) {
            Some(before) => {
                let after = residual::snapshot(&pod).map_err(failed(
                    "cannot read the pod namespace's rules after the revert",
                ))?;
                residual::residual(&before, &after)
            }
            None => Vec::new(),
        };
        Ok(RevertedFault { residual })
    }

    fn pod_present(&self, pod_uid: &str) -> bool {
        matches!(podfind::find_pod_pid(&self.proc_root, pod_uid), Ok(Some(_)))
    }

    fn absent_pods(&self, pod_uids: &BTreeSet<String>) -> BTreeSet<String> {
        // One scan of /proc for all of them; when it fails, call nobody gone (reverting a
        // fault because /proc could not be read would be worse than waiting a resync).
        match podfind::pods_on_host(&self.proc_root) {
            Ok(present) => pod_uids
                .iter()
                .filter(|uid| !present.contains_key(*uid))
                .cloned()
                .collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    fn owned(&self, pod_uids: &BTreeSet<String>) -> Vec<OwnedRule> {
        let mut found = Vec::new();
        let host = Netns::current().ok();
        let mut our_veths = BTreeSet::new();
        let pods = podfind::pods_on_host(&self.proc_root).unwrap_or_default();
        for (uid, pid) in pods {
            if !pod_uids.contains(&uid) {
                continue;
            }
            let Ok(ns) = Netns::of_pid(&self.proc_root, pid) else {
                continue;
            };
            if let Some(host) = &host
                && let Ok(veth) = nfqueue::hostveth::host_veth(&ns, host)
            {
                our_veths.insert(veth);
            }
            for tag in nft::owned(&ns).unwrap_or_default() {
                found.push(OwnedRule {
                    description: format!("nftables table {} in pod {uid}", tag.nft_table()),
                    tag: Some(tag),
                    pod_uid: Some(uid.clone()),
                });
            }
            for tag in iptables::owned(&ns).unwrap_or_default() {
                found.push(OwnedRule {
                    description: format!("iptables chain {} in pod {uid}", tag.iptables_chain()),
                    tag: Some(tag),
                    pod_uid: Some(uid.clone()),
                });
            }
            for tag in nfqueue::owned(&ns).unwrap_or_default() {
                found.push(OwnedRule {
                    description: format!("NFQUEUE chain {} in pod {uid}", tag.iptables_chain()),
                    tag: Some(tag),
                    pod_uid: Some(uid.clone()),
                });
            }
            for ifname in tc::owned(&ns).unwrap_or_default() {
                found.push(OwnedRule {
                    description: format!("root qdisc fa17: on {ifname} in pod {uid}"),
                    tag: None,
                    pod_uid: Some(uid.clone()),
                });
            }
        }
        if let Some(host) = &host {
            for tag in nfqueue::owned_on_node(host, &our_veths).unwrap_or_default() {
                found.push(OwnedRule {
                    description: format!("NFQUEUE chain {} on the node", tag.iptables_chain()),
                    tag: Some(tag),
                    pod_uid: None,
                });
            }
        }
        found
    }

    fn remove_orphan(&self, rule: &OwnedRule) -> Result<(), KernelError> {
        match (&rule.pod_uid, &rule.tag) {
            (Some(pod_uid), Some(tag)) => self.revert(pod_uid, tag, None, None).map(|_| ()),
            (Some(pod_uid), None) => {
                let pod = self.pod_netns(pod_uid)?;
                for ifname in tc::owned(&pod).map_err(failed("listing qdiscs"))? {
                    tc::remove(&pod, &ifname).map_err(failed("removing the qdisc"))?;
                }
                Ok(())
            }
            (None, Some(tag)) => {
                let host = host_netns()?;
                self.nfqueue
                    .remove_in(tag, &[&host])
                    .map(|_| ())
                    .map_err(failed("removing the NFQUEUE chain"))
            }
            (None, None) => Ok(()),
        }
    }

    fn bypassed_packets(&self, tag: &InjectionTag) -> Option<u64> {
        self.nfqueue.stats(tag).map(|s| s.bypassed)
    }
}
