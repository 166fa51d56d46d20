//! The Linux kernel behind [`Kernel`]: finds the pod's network namespace through `/proc`,
//! picks the mechanism the node offers, gates every fault with its deadline, snapshots the
//! namespaces before a fault and compares after its revert.
//!
//! Nothing here runs a process on the apply or revert path: nftables and qdiscs go through our
//! own netlink. The iptables fallbacks (kernels without nf_tables, or without nft_compat for
//! NFQUEUE) run `iptables-restore`/`iptables-save`, and orphan cleanup at start reads
//! iptables chains an older agent may have left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::deadline::Deadline;
use super::kernel::{
    AppliedFault, Capabilities, Kernel, KernelError, Mechanism, OwnedRule, QueueCounts, RevertItem,
    RevertedFault,
};
use super::netns::Netns;
use super::nfqueue::{NfqueueEngine, PodNet, Steering};
use super::nft::{self, Comment};
use super::residual::{self, Places};
use super::scope::Scope;
use super::tag::InjectionTag;
use super::{iptables, nfqueue, nftables, podfind, tc};
use crate::api::{Direction, NetworkFault, NetworkFaultKind};

mod revert;

/// The pod-side interface qdisc faults act on. Every CNI we know names it so.
const POD_INTERFACE: &str = "eth0";

pub struct LinuxKernel {
    proc_root: PathBuf,
    capabilities: Capabilities,
    nfqueue: NfqueueEngine,
    netdev_egress: bool,
    /// The namespace the pods' veths are in, when it is not the agent's own.
    node_netns: Option<PathBuf>,
    /// The node namespace's nf_tables socket, open for the kernel's lifetime.
    _node_socket: Option<nftables::KeptSocket>,
}

impl LinuxKernel {
    /// Detects what this node's kernel offers (takes a moment: it tries each mechanism in a
    /// throwaway namespace).
    pub fn detect(proc_root: impl Into<PathBuf>) -> Self {
        let capabilities = Capabilities {
            netem: tc::netem_available(),
            nfqueue: nfqueue::available(),
            htb: tc::htb_available(),
            nftables: nft::available(),
            iptables: iptables::available(),
        };
        Self {
            proc_root: proc_root.into(),
            capabilities,
            nfqueue: NfqueueEngine::new(),
            netdev_egress: capabilities.nftables && nft::netdev_egress_available(),
            node_netns: None,
            _node_socket: None,
        }
        .keeping_node_socket()
    }

    /// Keeps a socket open in the node's namespace: each pod's steering is one transaction
    /// there, and a socket closed after each would wait for the kernel (see
    /// [`super::closer`]).
    fn keeping_node_socket(mut self) -> Self {
        self._node_socket = match self.host_netns() {
            Ok(host) if self.capabilities.nftables => match nftables::keep_open(&host) {
                Ok(kept) => Some(kept),
                Err(error) => {
                    tracing::debug!(%error, "cannot keep a socket open in the node's namespace");
                    None
                }
            },
            _ => None,
        };
        self
    }

    /// Looks for the pods' veths (and puts node-side rules) in the network namespace at
    /// `path` instead of the agent's own: for an agent that does not run with hostNetwork, and
    /// for tests whose "node" is a namespace of their own.
    pub fn with_node_netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.node_netns = Some(path.into());
        self.keeping_node_socket()
    }

    fn host_netns(&self) -> Result<Netns, KernelError> {
        match &self.node_netns {
            Some(path) => {
                Netns::open(path).map_err(failed("cannot open the node's network namespace"))
            }
            None => host_netns(),
        }
    }

    /// Uses `engine` for the NFQUEUE path (a test's queue sizes or steering).
    pub fn with_nfqueue(mut self, engine: NfqueueEngine) -> Self {
        self.nfqueue = engine;
        self
    }

    fn pod_netns(&self, pod_uid: &str) -> Result<Netns, KernelError> {
        podfind::pod_netns(&self.proc_root, pod_uid)
            .map_err(|e| KernelError::TargetGone(e.to_string()))
    }

    /// Applies a qdisc fault (netem or a bandwidth cap): the tree on each interface the
    /// direction needs, and the gated steering table next to it.
    fn apply_qdisc(
        &self,
        pod_uid: &str,
        tag: &InjectionTag,
        fault: &NetworkFault,
        mechanism: Mechanism,
        deadline: &Deadline,
        (pod, host, veth): (&Netns, &Netns, Option<&str>),
    ) -> Result<(), KernelError> {
        // Egress acts on the pod's eth0; ingress on the host side of its veth, whose egress is
        // the pod's ingress. Bandwidth caps are egress only.
        let direction = match mechanism {
            Mechanism::Netem => direction_of(fault),
            _ => Direction::To,
        };
        // Refuse a bad scope, or a deadline too close, before touching anything.
        Scope::parse(&fault.peer_cidrs, &fault.ports).map_err(KernelError::Refused)?;
        deadline
            .remaining()
            .map_err(|e| KernelError::Expired(e.to_string()))?;
        let mut places: Vec<(&Netns, String, tc::Flow, Comment)> = Vec::new();
        if matches!(direction, Direction::To | Direction::Both) {
            places.push((
                pod,
                POD_INTERFACE.to_string(),
                tc::Flow::Egress,
                Comment::new(pod_uid, deadline, None).with_qdisc(POD_INTERFACE),
            ));
        }
        if matches!(direction, Direction::From | Direction::Both) {
            let veth = veth.ok_or_else(|| {
                KernelError::Failed("cannot find the pod's host-side interface".into())
            })?;
            if !self.netdev_egress {
                return Err(KernelError::Refused(
                    "a qdisc fault on the pod's ingress needs the netdev egress hook (Linux 5.16) for its kernel-enforced deadline; this kernel has none (use direction \"to\", or the NFQUEUE path)"
                        .to_string(),
                ));
            }
            places.push((
                host,
                veth.to_string(),
                tc::Flow::Ingress,
                Comment::new(pod_uid, deadline, Some(veth)).with_qdisc(veth),
            ));
        }
        for (ns, ifname, _, _) in &places {
            check_qdisc_free(ns, ifname, tag)?;
        }
        for (ns, ifname, flow, comment) in &places {
            tc::apply_fault(
                ns,
                ifname,
                *flow,
                fault,
                tag,
                deadline,
                comment,
                self.netdev_egress,
            )
            .map_err(failed(mechanism.name()))?;
        }
        Ok(())
    }
}

/// Refuses when `ifname` carries a root qdisc that is not ours, or ours for another live
/// injection (its steering table names the interface and its deadline is ahead). A tree whose
/// injection has expired is inert and is replaced.
fn check_qdisc_free(ns: &Netns, ifname: &str, tag: &InjectionTag) -> Result<(), KernelError> {
    let root =
        tc::root_qdisc(ns, ifname).map_err(failed("cannot read the interface's root qdisc"))?;
    let Some(root) = root else { return Ok(()) };
    if root.is_default() {
        return Ok(());
    }
    if !root.is_ours() {
        return Err(KernelError::Refused(format!(
            "{ifname} already has a root qdisc ({root}) that faultline did not install; refusing to replace it"
        )));
    }
    let now = Utc::now();
    for table in nft::owned_tables(ns).map_err(failed("cannot list nftables tables"))? {
        if table.tag == *tag {
            continue;
        }
        let Some(comment) = &table.comment else {
            continue;
        };
        if comment.qdisc.as_deref() != Some(ifname) {
            continue;
        }
        let live = DateTime::parse_from_rfc3339(&comment.until)
            .map(|until| until.with_timezone(&Utc) > now)
            .unwrap_or(true);
        if live {
            return Err(KernelError::Conflict {
                with: table.tag.clone(),
                message: format!(
                    "{ifname} already carries a qdisc fault of another injection (tag {}, until {}); two qdisc faults on one interface do not stack",
                    table.tag, comment.until
                ),
            });
        }
    }
    Ok(())
}

/// Removes our root qdisc from `ifname` unless another injection's steering table still names
/// it (the tree is theirs then).
fn remove_tree_unless_claimed(
    ns: &Netns,
    ifname: &str,
    except: &[InjectionTag],
) -> std::io::Result<bool> {
    let claimed = nft::owned_tables(ns)?.into_iter().any(|t| {
        !except.contains(&t.tag)
            && t.comment
                .as_ref()
                .is_some_and(|c| c.qdisc.as_deref() == Some(ifname))
    });
    if claimed {
        return Ok(false);
    }
    tc::remove(ns, ifname)
}

fn failed(what: &str) -> impl FnOnce(std::io::Error) -> KernelError + '_ {
    move |e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            KernelError::Refused(format!("{what}: {e}"))
        } else {
            KernelError::Failed(format!("{what}: {e}"))
        }
    }
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

fn describe(fault: &NetworkFault, mechanism: Mechanism, deadline: &Deadline) -> String {
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
    format!(
        "{what} on {scope}{ports} via {}, ended by the kernel at {}",
        mechanism.name(),
        deadline.stamp()
    )
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
        deadline: &Deadline,
    ) -> Result<AppliedFault, KernelError> {
        if let Err(e) = deadline.remaining() {
            return Err(match e {
                super::deadline::GateError::Expired { .. } => KernelError::Expired(e.to_string()),
                super::deadline::GateError::TooFar { .. } => KernelError::Refused(e.to_string()),
            });
        }
        let started = std::time::Instant::now();
        let pod = self.pod_netns(pod_uid)?;
        let host = self.host_netns()?;
        let found = started.elapsed();
        let veth = nfqueue::host_veth(&pod, &host).ok();
        let veth_found = started.elapsed();
        let places = Places {
            pod: &pod,
            node: Some((&host, veth.as_deref())),
            iptables: matches!(mechanism, Mechanism::Iptables),
            node_qdisc: mechanism.is_qdisc(),
        };
        let baseline = residual::baseline(&places, tag)
            .map_err(failed("cannot read the namespaces' rules before the fault"))?;
        let snapshotted = started.elapsed();
        let mut notes: Option<String> = None;
        match mechanism {
            Mechanism::Nftables => nft::apply_partition(
                &pod,
                tag,
                fault,
                deadline,
                &Comment::new(pod_uid, deadline, None),
            )
            .map_err(failed("nftables partition"))?,
            Mechanism::Iptables => iptables::apply_partition(&pod, tag, fault, deadline)
                .map_err(failed("iptables partition"))?,
            Mechanism::Nfqueue => {
                let net = PodNet {
                    pod: pod.try_clone().map_err(failed("pod namespace"))?,
                    host,
                };
                let applied = self
                    .nfqueue
                    .apply(tag, &net, fault, deadline, pod_uid)
                    .map_err(failed("NFQUEUE"))?;
                notes = Some(applied.summary());
            }
            Mechanism::Netem | Mechanism::Htb => {
                self.apply_qdisc(
                    pod_uid,
                    tag,
                    fault,
                    mechanism,
                    deadline,
                    (&pod, &host, veth.as_deref()),
                )?;
            }
        }
        tracing::debug!(
            pod = pod_uid,
            find_ns_us = found.as_micros() as u64,
            find_veth_us = (veth_found - found).as_micros() as u64,
            snapshot_us = (snapshotted - veth_found).as_micros() as u64,
            rules_us = (started.elapsed() - snapshotted).as_micros() as u64,
            "apply stages"
        );
        let described = describe(fault, mechanism, deadline);
        Ok(AppliedFault {
            mechanism,
            message: match notes {
                Some(notes) => format!("{described}: {notes}"),
                None => described,
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
        let item = RevertItem {
            tag: tag.clone(),
            mechanism,
            baseline: baseline.map(str::to_string),
        };
        self.revert_pod(pod_uid, std::slice::from_ref(&item))
            .pop()
            .expect("one result per item")
    }

    /// See [`LinuxKernel::revert_many`].
    fn revert_pod(
        &self,
        pod_uid: &str,
        items: &[RevertItem],
    ) -> Vec<Result<RevertedFault, KernelError>> {
        self.revert_many(&[(pod_uid.to_string(), items.to_vec())])
            .pop()
            .unwrap_or_default()
    }

    fn revert_pods(
        &self,
        pods: &[(String, Vec<RevertItem>)],
    ) -> Vec<Vec<Result<RevertedFault, KernelError>>> {
        self.revert_many(pods)
    }

    /// One listing and one transaction in the node's namespace for all of them, whatever
    /// their number; the workers of those this agent runs stop.
    fn revert_gone(&self, items: &[(String, InjectionTag)]) -> Result<(), KernelError> {
        let host = self.host_netns()?;
        let tags: Vec<InjectionTag> = items.iter().map(|(_, tag)| tag.clone()).collect();
        nft::remove_all(&host, &tags).map_err(failed("removing the node's tables of gone pods"))?;
        let active: BTreeSet<InjectionTag> = self.nfqueue.active().into_iter().collect();
        for tag in tags.iter().filter(|t| active.contains(*t)) {
            self.nfqueue
                .remove_in(tag, &[])
                .map_err(failed("stopping the NFQUEUE workers"))?;
        }
        if self.nfqueue.steering() == Steering::Iptables {
            for tag in &tags {
                nfqueue::remove_legacy_chain(&host, tag)
                    .map_err(failed("removing the NFQUEUE chain"))?;
            }
        }
        Ok(())
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

    fn tagged_tables(
        &self,
        pod_uids: &BTreeSet<String>,
    ) -> BTreeMap<String, BTreeSet<InjectionTag>> {
        let mut found = BTreeMap::new();
        if !self.capabilities().nftables {
            return found;
        }
        for uid in pod_uids {
            let Ok(ns) = self.pod_netns(uid) else {
                continue;
            };
            if let Ok(tags) = nft::owned(&ns) {
                found.insert(uid.clone(), tags.into_iter().collect());
            }
        }
        found
    }

    fn owned(&self, pod_uids: &BTreeSet<String>) -> Vec<OwnedRule> {
        let mut found = Vec::new();
        let host = self.host_netns().ok();
        let mut our_veths = BTreeSet::new();
        let pods = podfind::pods_on_host(&self.proc_root).unwrap_or_default();
        for (uid, pid) in pods {
            if !pod_uids.contains(&uid) {
                continue;
            }
            let Ok(ns) = Netns::of_pid(&self.proc_root, pid) else {
                continue;
            };
            let veth = host
                .as_ref()
                .and_then(|host| nfqueue::hostveth::host_veth(&ns, host).ok());
            if let Some(veth) = &veth {
                our_veths.insert(veth.clone());
            }
            let mut tags: BTreeSet<InjectionTag> =
                nft::owned(&ns).unwrap_or_default().into_iter().collect();
            for tag in &tags {
                found.push(OwnedRule {
                    description: format!("nftables table {} in pod {uid}", tag.nft_table()),
                    tag: Some(tag.clone()),
                    pod_uid: Some(uid.clone()),
                });
            }
            // Chains of the iptables fallbacks (or of an older agent).
            for tag in iptables::owned(&ns)
                .unwrap_or_default()
                .into_iter()
                .chain(nfqueue::owned(&ns).unwrap_or_default())
            {
                if tags.insert(tag.clone()) {
                    found.push(OwnedRule {
                        description: format!(
                            "iptables chain {} in pod {uid}",
                            tag.iptables_chain()
                        ),
                        tag: Some(tag),
                        pod_uid: Some(uid.clone()),
                    });
                }
            }
            let mut roots: Vec<String> = tc::owned(&ns)
                .unwrap_or_default()
                .into_iter()
                .map(|ifname| format!("root qdisc fa17: on {ifname} in pod {uid}"))
                .collect();
            if let (Some(host), Some(veth)) = (&host, &veth)
                && tc::root_qdisc(host, veth).is_ok_and(|q| q.is_some_and(|q| q.is_ours()))
            {
                roots.push(format!("root qdisc fa17: on {veth}, the veth of pod {uid}"));
            }
            for description in roots {
                found.push(OwnedRule {
                    description,
                    tag: None,
                    pod_uid: Some(uid.clone()),
                });
            }
        }
        if let Some(host) = &host {
            for tag in nfqueue::owned_on_node(host, &our_veths).unwrap_or_default() {
                found.push(OwnedRule {
                    description: format!("faultline rules of {tag} on the node"),
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
                    remove_tree_unless_claimed(&pod, &ifname, &[])
                        .map_err(failed("removing the qdisc"))?;
                }
                let host = self.host_netns()?;
                if let Ok(veth) = nfqueue::host_veth(&pod, &host) {
                    remove_tree_unless_claimed(&host, &veth, &[])
                        .map_err(failed("removing the qdisc"))?;
                }
                Ok(())
            }
            (None, Some(tag)) => {
                let host = self.host_netns()?;
                nft::remove(&host, tag).map_err(failed("removing the node's table"))?;
                self.nfqueue
                    .remove_in(tag, &[&host])
                    .map_err(failed("removing the NFQUEUE rules"))?;
                nfqueue::remove_legacy_chain(&host, tag)
                    .map(|_| ())
                    .map_err(failed("removing the NFQUEUE chain"))
            }
            (None, None) => Ok(()),
        }
    }

    fn queue_counts(&self, tag: &InjectionTag) -> Option<QueueCounts> {
        self.nfqueue.stats(tag).map(|s| QueueCounts {
            matched: s.matched,
            bypassed: s.bypassed,
        })
    }
}
