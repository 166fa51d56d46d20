//! Pure helpers: pod-template hashes, node names and indices, round-robin placement and pod IP
//! allocation. No client, no clock.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// Prefix of the simulated nodes' names: `sandbox-node-1`, `sandbox-node-2`, ...
pub const NODE_PREFIX: &str = "sandbox-node-";

/// The name of the `index`-th node (1-based).
pub fn node_name(index: u8) -> String {
    format!("{NODE_PREFIX}{index}")
}

/// The index of a simulated node, `None` for any other node.
pub fn node_index(name: &str) -> Option<u8> {
    name.strip_prefix(NODE_PREFIX)?
        .parse()
        .ok()
        .filter(|i| *i > 0)
}

/// A node's own address (`InternalIP`, a pod's `hostIP`): 10.0.0.<index>.
pub fn node_ip(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, index)
}

/// A node's pod CIDR: 10.244.<index>.0/24.
pub fn pod_cidr(index: u8) -> String {
    format!("10.244.{index}.0/24")
}

/// The alphabet of `rand.SafeEncodeString` (no vowels, no confusable characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The `pod-template-hash` of a pod template, computed like the Deployment controller's
/// `ComputeHash`: FNV-1a (32 bit) over the template, its decimal form encoded with the safe
/// alphabet. The bytes hashed are our JSON rendering, not Go's object dump, so the values
/// differ from a real cluster's; they are stable for equal templates, which is what matters.
pub fn pod_template_hash(template: &serde_json::Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in template.to_string().bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Picks nodes in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// The next of `nodes`, or `None` when there is none.
    pub fn pick<'a>(&mut self, nodes: &'a [String]) -> Option<&'a String> {
        if nodes.is_empty() {
            return None;
        }
        let node = &nodes[self.next % nodes.len()];
        self.next = self.next.wrapping_add(1);
        Some(node)
    }
}

/// Pod IPs per node, 10.244.<node>.2 to .254, handed out next-fit (after the last one given,
/// wrapping around) like host-local IPAM, so a freed address is not reused at once.
#[derive(Debug, Default)]
pub struct IpAllocator {
    last: HashMap<u8, u8>,
    /// Addresses handed out by this allocator, by pod uid, until the pod is gone.
    assigned: HashMap<String, Ipv4Addr>,
}

impl IpAllocator {
    /// The address of pod `uid` on node `node`: the one it already has, or a free one.
    /// `in_use` holds addresses seen on existing pods (e.g. from before a restart).
    pub fn allocate(
        &mut self,
        uid: &str,
        node: u8,
        in_use: &HashSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = self.assigned.get(uid) {
            return Some(*ip);
        }
        let taken: HashSet<Ipv4Addr> = self.assigned.values().chain(in_use).copied().collect();
        let start = self.last.get(&node).copied().unwrap_or(1);
        for step in 1..=253i32 {
            // The host part cycles through 2..=254, starting after the last one handed out.
            let host = u8::try_from((i32::from(start) - 2 + step).rem_euclid(253) + 2).ok()?;
            let ip = Ipv4Addr::new(10, 244, node, host);
            if !taken.contains(&ip) {
                self.last.insert(node, host);
                self.assigned.insert(uid.to_string(), ip);
                return Some(ip);
            }
        }
        None
    }

    /// Like [`IpAllocator::allocate`], but hands out `preferred` when it is on `node` and free:
    /// a pod started again after a kubelet restart keeps the address its status shows.
    pub fn allocate_preferring(
        &mut self,
        uid: &str,
        node: u8,
        preferred: Option<Ipv4Addr>,
        in_use: &HashSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = self.assigned.get(uid) {
            return Some(*ip);
        }
        let on_node = |ip: &Ipv4Addr| {
            let [a, b, n, host] = ip.octets();
            [a, b, n] == [10, 244, node] && (2..=254).contains(&host)
        };
        let free = |ip: &Ipv4Addr| !in_use.contains(ip) && !self.assigned.values().any(|a| a == ip);
        match preferred.filter(|ip| on_node(ip) && free(ip)) {
            Some(ip) => {
                self.assigned.insert(uid.to_string(), ip);
                Some(ip)
            }
            None => self.allocate(uid, node, in_use),
        }
    }

    /// Forgets the addresses on node `node` of pods not among `live_uids` (this node's pods);
    /// other nodes' addresses are left alone.
    pub fn retain_on_node(&mut self, node: u8, live_uids: &HashSet<String>) {
        self.assigned
            .retain(|uid, ip| ip.octets()[2] != node || live_uids.contains(uid));
    }

    pub fn release(&mut self, uid: &str) {
        self.assigned.remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_names_round_trip_and_foreign_nodes_are_not_ours() {
        assert_eq!(node_name(2), "sandbox-node-2");
        assert_eq!(node_index("sandbox-node-2"), Some(2));
        assert_eq!(node_index("sandbox-node-0"), None);
        assert_eq!(node_index("kind-worker"), None);
        assert_eq!(pod_cidr(3), "10.244.3.0/24");
    }

    #[test]
    fn template_hash_is_stable_and_safe() {
        let a = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}});
        let b = json!({"metadata": {"labels": {"app": "api"}}, "spec": {"containers": []}});
        let h = pod_template_hash(&a);
        assert_eq!(h, pod_template_hash(&a.clone()));
        assert_ne!(h, pod_template_hash(&b));
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h.bytes().all(|c| SAFE_ALPHABET.contains(&c)), "{h}");
    }

    #[test]
    fn round_robin_cycles_through_nodes() {
        let nodes: Vec<String> = (1..=3).map(node_name).collect();
        let mut rr = RoundRobin::default();
        let picked: Vec<&String> = (0..4).filter_map(|_| rr.pick(&nodes)).collect();
        assert_eq!(picked, [&nodes[0], &nodes[1], &nodes[2], &nodes[0]]);
        assert_eq!(rr.pick(&[]), None);
    }

    #[test]
    fn ips_are_unique_per_node_next_fit_and_skip_addresses_in_use() {
        let mut ips = IpAllocator::default();
        let in_use: HashSet<Ipv4Addr> = [Ipv4Addr::new(10, 244, 1, 3)].into();
        let a = ips.allocate("a", 1, &in_use).unwrap();
        let b = ips.allocate("b", 1, &in_use).unwrap();
        let c = ips.allocate("c", 2, &in_use).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(b, Ipv4Addr::new(10, 244, 1, 4), ".3 is in use");
        assert_eq!(c, Ipv4Addr::new(10, 244, 2, 2));
        assert_eq!(
            ips.allocate("a", 1, &in_use),
            Some(a),
            "a pod keeps its address"
        );

        // A released address is not handed out again right away.
        ips.release("a");
        assert_eq!(
            ips.allocate("d", 1, &in_use),
            Some(Ipv4Addr::new(10, 244, 1, 5))
        );
        // Node 1's pods are now only d: b's address is free again, c's on node 2 is kept.
        ips.retain_on_node(1, &["d".to_string()].into());
        assert_eq!(
            ips.allocate("e", 1, &HashSet::new()),
            Some(Ipv4Addr::new(10, 244, 1, 6))
        );
        assert_eq!(ips.allocate("c", 2, &HashSet::new()), Some(c));
        assert!(!ips.assigned.contains_key("b"));
    }

    #[test]
    fn a_restarted_pod_keeps_its_address_unless_it_is_taken_or_foreign() {
        let mut ips = IpAllocator::default();
        let in_use: HashSet<Ipv4Addr> = [Ipv4Addr::new(10, 244, 1, 9)].into();
        let kept = Ipv4Addr::new(10, 244, 1, 7);
        assert_eq!(
            ips.allocate_preferring("a", 1, Some(kept), &in_use),
            Some(kept)
        );
        assert_eq!(
            ips.allocate_preferring("b", 1, Some(kept), &in_use),
            Some(Ipv4Addr::new(10, 244, 1, 2)),
            "another pod has it now"
        );
        assert_eq!(
            ips.allocate_preferring("c", 1, Some(Ipv4Addr::new(10, 244, 1, 9)), &in_use),
            Some(Ipv4Addr::new(10, 244, 1, 3)),
            "a pod of an earlier run shows it"
        );
        assert_eq!(
            ips.allocate_preferring("d", 1, Some(Ipv4Addr::new(10, 244, 2, 7)), &in_use),
            Some(Ipv4Addr::new(10, 244, 1, 4)),
            "another node's address"
        );
        assert_eq!(
            ips.allocate_preferring("e", 1, Some(Ipv4Addr::new(10, 244, 1, 255)), &in_use),
            Some(Ipv4Addr::new(10, 244, 1, 5)),
            "not a host address"
        );
    }

    #[test]
    fn a_full_node_has_no_address_left_and_allocation_wraps() {
        let mut ips = IpAllocator::default();
        for i in 0..253 {
            assert!(ips.allocate(&format!("p{i}"), 1, &HashSet::new()).is_some());
        }
        assert_eq!(ips.allocate("one-too-many", 1, &HashSet::new()), None);
        ips.release("p0");
        assert_eq!(
            ips.allocate("again", 1, &HashSet::new()),
            Some(Ipv4Addr::new(10, 244, 1, 2))
        );
    }
}
