//! The seam between the agent's decisions and the kernel.
//!
//! [`Kernel`] is what the runner calls (blocking; the runner calls it from blocking threads).
//! The Linux implementation lives in [`super::linux`]; [`RecordingKernel`] keeps rules in memory
//! so the runner's wiring (finalizers, status, journal, deadlines, restarts) is tested without
//! root.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use super::deadline::Deadline;
use super::tag::InjectionTag;
use crate::api::{NetworkFault, NetworkFaultKind};

/// What this node's kernel can do, detected at start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub netem: bool,
    pub nfqueue: bool,
    /// sch_htb: the tree every qdisc fault (bandwidth, netem) is built on.
    pub htb: bool,
    /// nf_tables through netlink: partitions, and the deadline gate of every qdisc fault.
    pub nftables: bool,
    pub iptables: bool,
}

impl Capabilities {
    /// The value of the Node annotation `faultline.dev/capabilities`: the names present.
    pub fn annotation(&self) -> String {
        [
            (self.netem, "netem"),
            (self.nfqueue, "nfqueue"),
            (self.htb, "htb"),
            (self.nftables, "nftables"),
            (self.iptables, "iptables"),
        ]
        .iter()
        .filter(|(present, _)| *present)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
    }

    /// The mechanism this node uses for a fault, or why it cannot do it.
    pub fn mechanism_for(&self, fault: &NetworkFault) -> Result<Mechanism, String> {
        let present = self.annotation();
        let present = if present.is_empty() {
            "nothing".to_string()
        } else {
            present
        };
        match fault.kind() {
            None => Err(
                "the injection sets none or several of latency, loss, bandwidth, partition".into(),
            ),
            Some(NetworkFaultKind::Latency(_)) | Some(NetworkFaultKind::Loss(_)) => {
                // netem sits under htb and is reached through a gated nftables table.
                if self.netem && self.htb && self.nftables {
                    Ok(Mechanism::Netem)
                } else if self.nfqueue {
                    Ok(Mechanism::Nfqueue)
                } else {
                    Err(format!(
                        "this node's kernel has neither sch_netem nor the iptables NFQUEUE target (it offers {present}); load sch_netem or run the agent where iptables' NFQUEUE works"
                    ))
                }
            }
            Some(NetworkFaultKind::Bandwidth(_)) => {
                if self.htb && self.nftables {
                    Ok(Mechanism::Htb)
                } else {
                    Err(format!(
                        "a bandwidth cap needs sch_htb and nf_tables (its deadline is an nftables gate); this node offers {present}"
                    ))
                }
            }
            Some(NetworkFaultKind::Partition(_)) => {
                if self.nftables {
                    Ok(Mechanism::Nftables)
                } else if self.iptables {
                    Ok(Mechanism::Iptables)
                } else {
                    Err(format!(
                        "this node has neither nftables nor iptables (it offers {present}); install nftables in the agent image"
                    ))
                }
            }
        }
    }
}

/// How a fault is carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Netem,
    Nfqueue,
    /// A capped htb class (bandwidth).
    Htb,
    Nftables,
    Iptables,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::Nftables,
        Mechanism::Iptables,
        Mechanism::Nfqueue,
        Mechanism::Netem,
        Mechanism::Htb,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Mechanism::Netem => "netem",
            Mechanism::Nfqueue => "nfqueue",
            Mechanism::Htb => "htb",
            Mechanism::Nftables => "nftables",
            Mechanism::Iptables => "iptables",
        }
    }

    /// A mechanism by name; `tbf` (what agents before the htb tree wrote into their journal)
    /// is the bandwidth mechanism.
    pub fn parse(name: &str) -> Option<Self> {
        if name == "tbf" {
            return Some(Mechanism::Htb);
        }
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the fault is a qdisc tree on an interface (one per interface at a time).
    pub fn is_qdisc(&self) -> bool {
        matches!(self, Mechanism::Netem | Mechanism::Htb)
    }
}

/// Why the kernel could not do what was asked.
#[derive(Clone, Debug, PartialEq)]
pub enum KernelError {
    /// No process of the target pod on this node (gone, replaced, or not started yet).
    TargetGone(String),
    /// The fault cannot be done here, or would replace something that is not ours.
    Refused(String),
    /// Another injection's fault holds what this one needs (the qdisc of an interface).
    Conflict { with: InjectionTag, message: String },
    /// The deadline is too close for a kernel gate: treat the fault as expired.
    Expired(String),
    /// Applying or reverting failed.
    Failed(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::TargetGone(m)
            | KernelError::Refused(m)
            | KernelError::Expired(m)
            | KernelError::Failed(m)
            | KernelError::Conflict { message: m, .. } => f.write_str(m),
        }
    }
}

/// A fault in the kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedFault {
    pub mechanism: Mechanism,
    /// What was applied, in words, for the injection's status.
    pub message: String,
    /// The namespace's rules before the fault (see `residual`), kept in the journal.
    pub baseline: Option<String>,
}

/// A fault removed from the kernel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevertedFault {
    /// Rules left behind compared with the baseline; empty when clean.
    pub residual: Vec<String>,
}

/// One injection to revert, as the journal remembers it.
#[derive(Clone, Debug, PartialEq)]
pub struct RevertItem {
    pub tag: InjectionTag,
    /// `None`: the agent crashed while applying; remove whatever is ours.
    pub mechanism: Option<Mechanism>,
    pub baseline: Option<String>,
}

/// Packet counts of a fault whose mechanism counts them (NFQUEUE).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Packets the fault's rules matched.
    pub matched: u64,
    /// Of those, packets that passed without the fault (queue full, no worker).
    pub bypassed: u64,
}

/// Something faultline owns in the kernel, found by scanning (orphan cleanup).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct OwnedRule {
    /// The injection it belongs to; `None` for what carries no name (a qdisc is known as ours
    /// by its handle only): it is then backed by any live injection for the same pod.
    pub tag: Option<InjectionTag>,
    /// The pod whose namespace holds it; `None` for the node's own namespace.
    pub pod_uid: Option<String>,
    /// Where and what, for logs.
    pub description: String,
}

/// The kernel side of the agent. Every method is idempotent.
pub trait Kernel: Send + Sync + 'static {
    fn capabilities(&self) -> Capabilities;
    /// Converges the pod's namespace (and the node's, for host-side rules) to this fault,
    /// gated so that it ends at `deadline` by itself.
    fn apply(
        &self,
        pod_uid: &str,
        tag: &InjectionTag,
        fault: &NetworkFault,
        mechanism: Mechanism,
        deadline: &Deadline,
    ) -> Result<AppliedFault, KernelError>;
    /// Removes the fault; `baseline` is what `apply` returned, to compute the residue.
    fn revert(
        &self,
        pod_uid: &str,
        tag: &InjectionTag,
        mechanism: Option<Mechanism>,
        baseline: Option<&str>,
    ) -> Result<RevertedFault, KernelError>;
    /// Removes several faults of one pod; a kernel that can do it in one pass overrides this.
    /// One result per item, in order.
    fn revert_pod(
        &self,
        pod_uid: &str,
        items: &[RevertItem],
    ) -> Vec<Result<RevertedFault, KernelError>> {
        items
            .iter()
            .map(|item| self.revert(pod_uid, &item.tag, item.mechanism, item.baseline.as_deref()))
            .collect()
    }
    /// Removes the faults of many pods, one result list per pod (one result per item), in
    /// order. A kernel that can share work between pods (the node's namespace once for all)
    /// overrides this.
    fn revert_pods(
        &self,
        pods: &[(String, Vec<RevertItem>)],
    ) -> Vec<Vec<Result<RevertedFault, KernelError>>> {
        pods.iter()
            .map(|(pod, items)| self.revert_pod(pod, items))
            .collect()
    }
    /// Removes what is left of faults whose pods are gone (their namespaces took the pod-side
    /// rules with them): the node-side rules and workers, many at once. (pod uid, tag) pairs.
    fn revert_gone(&self, items: &[(String, InjectionTag)]) -> Result<(), KernelError> {
        for (pod, tag) in items {
            match self.revert(pod, tag, None, None) {
                Ok(_) | Err(KernelError::TargetGone(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
    /// Whether a process of the pod runs on this node.
    fn pod_present(&self, pod_uid: &str) -> bool;
    /// The pods of `pod_uids` with no process on this node. A kernel that can answer for many
    /// pods at once (one scan of `/proc`) overrides this.
    fn absent_pods(&self, pod_uids: &BTreeSet<String>) -> BTreeSet<String> {
        pod_uids
            .iter()
            .filter(|uid| !self.pod_present(uid))
            .cloned()
            .collect()
    }
    /// Everything faultline owns in these pods' namespaces and in the node's own.
    fn owned(&self, pod_uids: &BTreeSet<String>) -> Vec<OwnedRule>;
    /// Removes one orphan found by [`Kernel::owned`].
    fn remove_orphan(&self, rule: &OwnedRule) -> Result<(), KernelError>;
    /// Packets the fault matched and those that passed without it (NFQUEUE queue full), when
    /// the mechanism counts.
    fn queue_counts(&self, tag: &InjectionTag) -> Option<QueueCounts>;
    /// The injections whose tagged nftables table is in each of these pods' namespaces, by
    /// pod; a pod this node does not run is left out. One netlink listing per pod, no process:
    /// cheap enough to look at every resync whether something else removed our rules. A
    /// kernel that cannot tell answers nothing.
    fn tagged_tables(
        &self,
        _pod_uids: &BTreeSet<String>,
    ) -> BTreeMap<String, BTreeSet<InjectionTag>> {
        BTreeMap::new()
    }
}

/// An in-memory kernel: rules are map entries. Shared state (clone it) survives a "restart" of
/// the runner, like the real kernel's rules survive an agent crash.
#[derive(Clone, Debug, Default)]
pub struct RecordingKernel {
    state: Arc<Mutex<RecordingState>>,
    capabilities: Capabilities,
}

#[derive(Debug, Default)]
struct RecordingState {
    /// (pod uid, tag) → mechanism; a BTreeMap so "present exactly once" is structural, and
    /// `apply_count` shows re-applies.
    rules: BTreeMap<(String, InjectionTag), Mechanism>,
    /// The deadline each rule was last applied with.
    deadlines: BTreeMap<InjectionTag, chrono::DateTime<chrono::Utc>>,
    pods: BTreeSet<String>,
    apply_count: usize,
    /// Makes apply (and revert) take this long, as a slow kernel would.
    delay: std::time::Duration,
    /// Applies on these pods take this long instead (one slow pod among fast ones).
    pod_delays: BTreeMap<String, std::time::Duration>,
    /// Faults whose apply has begun (before the delay), applied or not.
    begun: BTreeSet<InjectionTag>,
    counts: BTreeMap<InjectionTag, QueueCounts>,
}

impl RecordingKernel {
    pub fn new(capabilities: Capabilities) -> Self {
        Self {
            state: Arc::default(),
            capabilities,
        }
    }

    /// Every capability, as on a node with netem and nftables.
    pub fn full() -> Self {
        Self::new(Capabilities {
            netem: true,
            nfqueue: true,
            htb: true,
            nftables: true,
            iptables: true,
        })
    }

    /// Faults whose apply has begun: the kernel is being changed for them, or was.
    pub fn begun(&self) -> Vec<InjectionTag> {
        self.state.lock().unwrap().begun.iter().cloned().collect()
    }

    /// Makes the applies on pod `pod_uid` take `delay` from now on.
    pub fn set_apply_delay(&self, pod_uid: &str, delay: std::time::Duration) {
        self.state
            .lock()
            .unwrap()
            .pod_delays
            .insert(pod_uid.to_string(), delay);
    }

    /// Makes every apply and revert take `delay`.
    pub fn with_delay(self, delay: std::time::Duration) -> Self {
        self.state.lock().unwrap().delay = delay;
        self
    }

    /// What `queue_counts` reports for `tag` from now on.
    pub fn set_counts(&self, tag: &InjectionTag, counts: QueueCounts) {
        self.state
            .lock()
            .unwrap()
            .counts
            .insert(tag.clone(), counts);
    }

    /// The deadline `tag` was last applied with.
    pub fn deadline_of(&self, tag: &InjectionTag) -> Option<chrono::DateTime<chrono::Utc>> {
        self.state.lock().unwrap().deadlines.get(tag).copied()
    }

    pub fn add_pod(&self, uid: &str) {
        self.state.lock().unwrap().pods.insert(uid.to_string());
    }

    pub fn remove_pod(&self, uid: &str) {
        let mut state = self.state.lock().unwrap();
        state.pods.remove(uid);
        // The pod's namespace goes, and its rules with it.
        state.rules.retain(|(pod, _), _| pod != uid);
    }

    /// Leaves a rule as a crashed agent would have (for orphan tests).
    pub fn plant(&self, pod_uid: &str, tag: &InjectionTag, mechanism: Mechanism) {
        let mut state = self.state.lock().unwrap();
        state
            .rules
            .insert((pod_uid.to_string(), tag.clone()), mechanism);
    }

    /// Removes a fault's rules behind the agent's back, as `nft flush ruleset` would.
    pub fn tamper(&self, tag: &InjectionTag) {
        self.state
            .lock()
            .unwrap()
            .rules
            .retain(|(_, t), _| t != tag);
    }

    pub fn rules(&self) -> Vec<(String, InjectionTag, Mechanism)> {
        let state = self.state.lock().unwrap();
        state
            .rules
            .iter()
            .map(|((pod, tag), m)| (pod.clone(), tag.clone(), *m))
            .collect()
    }

    pub fn apply_count(&self) -> usize {
        self.state.lock().unwrap().apply_count
    }
}

impl Kernel for RecordingKernel {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn apply(
        &self,
        pod_uid: &str,
        tag: &InjectionTag,
        _fault: &NetworkFault,
        mechanism: Mechanism,
        deadline: &Deadline,
    ) -> Result<AppliedFault, KernelError> {
        let delay = {
            let mut state = self.state.lock().unwrap();
            state.begun.insert(tag.clone());
            state
                .pod_delays
                .get(pod_uid)
                .copied()
                .unwrap_or(state.delay)
        };
        std::thread::sleep(delay);
        if let Err(e) = deadline.remaining() {
            return Err(KernelError::Expired(e.to_string()));
        }
        let mut state = self.state.lock().unwrap();
        state.deadlines.insert(tag.clone(), deadline.expires_at);
        // One qdisc fault per interface, as on Linux.
        if mechanism.is_qdisc()
            && let Some(((_, other), _)) = state
                .rules
                .iter()
                .find(|((pod, t), m)| pod == pod_uid && t != tag && m.is_qdisc())
        {
            return Err(KernelError::Conflict {
                with: other.clone(),
                message: format!(
                    "eth0 already carries a qdisc fault of another injection (tag {other}); two qdisc faults on one interface do not stack"
                ),
            });
        }
        if !state.pods.contains(pod_uid) {
            return Err(KernelError::TargetGone(format!(
                "no process of pod {pod_uid} on this node"
            )));
        }
        state
            .rules
            .insert((pod_uid.to_string(), tag.clone()), mechanism);
        state.apply_count += 1;
        Ok(AppliedFault {
            mechanism,
            message: format!("{} rules for {tag}", mechanism.name()),
            baseline: Some(String::new()),
        })
    }

    fn revert(
        &self,
        pod_uid: &str,
        tag: &InjectionTag,
        _mechanism: Option<Mechanism>,
        _baseline: Option<&str>,
    ) -> Result<RevertedFault, KernelError> {
        let delay = self.state.lock().unwrap().delay;
        std::thread::sleep(delay);
        let mut state = self.state.lock().unwrap();
        state.rules.remove(&(pod_uid.to_string(), tag.clone()));
        Ok(RevertedFault::default())
    }

    fn pod_present(&self, pod_uid: &str) -> bool {
        self.state.lock().unwrap().pods.contains(pod_uid)
    }

    fn revert_gone(&self, items: &[(String, InjectionTag)]) -> Result<(), KernelError> {
        let mut state = self.state.lock().unwrap();
        for (pod, tag) in items {
            state.rules.remove(&(pod.clone(), tag.clone()));
        }
        Ok(())
    }

    fn owned(&self, pod_uids: &BTreeSet<String>) -> Vec<OwnedRule> {
        let state = self.state.lock().unwrap();
        state
            .rules
            .iter()
            .filter(|((pod, _), _)| pod_uids.contains(pod))
            .map(|((pod, tag), m)| OwnedRule {
                tag: Some(tag.clone()),
                pod_uid: Some(pod.clone()),
                description: format!("{} rules in pod {pod}", m.name()),
            })
            .collect()
    }

    fn remove_orphan(&self, rule: &OwnedRule) -> Result<(), KernelError> {
        let mut state = self.state.lock().unwrap();
        if let (Some(pod), Some(tag)) = (&rule.pod_uid, &rule.tag) {
            state.rules.remove(&(pod.clone(), tag.clone()));
        }
        Ok(())
    }

    fn queue_counts(&self, tag: &InjectionTag) -> Option<QueueCounts> {
        self.state.lock().unwrap().counts.get(tag).copied()
    }

    fn tagged_tables(
        &self,
        pod_uids: &BTreeSet<String>,
    ) -> BTreeMap<String, BTreeSet<InjectionTag>> {
        let state = self.state.lock().unwrap();
        let mut found: BTreeMap<String, BTreeSet<InjectionTag>> = pod_uids
            .iter()
            .filter(|uid| state.pods.contains(*uid))
            .map(|uid| (uid.clone(), BTreeSet::new()))
            .collect();
        for (pod, tag) in state.rules.keys() {
            if let Some(tags) = found.get_mut(pod) {
                tags.insert(tag.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Direction, LatencyFault};

    #[test]
    fn the_annotation_lists_what_is_present_in_a_fixed_order() {
        let caps = Capabilities {
            nfqueue: true,
            htb: true,
            nftables: true,
            iptables: true,
            ..Default::default()
        };
        assert_eq!(caps.annotation(), "nfqueue,htb,nftables,iptables");
        assert_eq!(Mechanism::parse("tbf"), Some(Mechanism::Htb));
    }

    #[test]
    fn latency_prefers_netem_and_falls_back_to_nfqueue_and_says_why_when_neither() {
        let fault = NetworkFault {
            latency: Some(LatencyFault::default()),
            ..Default::default()
        };
        let mut caps = Capabilities {
            netem: true,
            nfqueue: true,
            htb: true,
            nftables: true,
            ..Default::default()
        };
        assert_eq!(caps.mechanism_for(&fault), Ok(Mechanism::Netem));
        caps.netem = false;
        assert_eq!(caps.mechanism_for(&fault), Ok(Mechanism::Nfqueue));
        caps.nfqueue = false;
        let why = caps.mechanism_for(&fault).unwrap_err();
        assert!(
            why.contains("sch_netem") && why.contains("NFQUEUE"),
            "{why}"
        );
    }

    #[test]
    fn partitions_prefer_nftables_over_iptables() {
        let fault = NetworkFault {
            partition: Some(Direction::Both),
            peer_cidrs: vec!["10.0.0.0/8".into()],
            ..Default::default()
        };
        let caps = Capabilities {
            nftables: true,
            iptables: true,
            ..Default::default()
        };
        assert_eq!(caps.mechanism_for(&fault), Ok(Mechanism::Nftables));
        let caps = Capabilities {
            iptables: true,
            ..Default::default()
        };
        assert_eq!(caps.mechanism_for(&fault), Ok(Mechanism::Iptables));
    }
}
