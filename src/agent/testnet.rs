//! Throwaway network namespaces for root tests and benchmarks: a "host" namespace with a bridge
//! and pods attached by veth pairs, the way a node with a bridge CNI looks. Everything lives in
//! namespaces this module creates (never the machine's own), with 10.x addresses, and is
//! deleted on drop.

use std::io;
use std::net::Ipv4Addr;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};

use super::netns::{Netns, run_command};

/// Set (to anything) in CI: a test that needs root fails instead of skipping.
pub const REQUIRE_ROOT_ENV: &str = "FAULTLINE_REQUIRE_ROOT_TESTS";

/// Whether a root test may run. Without root it prints a loud SKIP line and returns false, or
/// panics when [`REQUIRE_ROOT_ENV`] is set (CI must run every root test).
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os(REQUIRE_ROOT_ENV).is_some() {
        panic!("{test} needs root, and {REQUIRE_ROOT_ENV} is set: CI must run every root test");
    }
    eprintln!("SKIPPED (needs root): {test}. Run the tests as root to include it.");
    false
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn unique_name(role: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("fltest-{}-{n}-{role}", std::process::id())
}

/// A named network namespace (`ip netns add`), deleted on drop, with loopback up.
#[derive(Debug)]
pub struct TestNs {
    name: String,
}

impl TestNs {
    pub fn new(role: &str) -> io::Result<Self> {
        let name = unique_name(role);
        run_command("ip", &["netns", "add", &name], None)?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> io::Result<Netns> {
        Netns::named(&self.name)
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_command("ip", &all, None)
    }

    /// Runs `program args` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run_command("ip", &all, None)
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Deleting the namespace removes its interfaces (and the veth peers elsewhere).
        let _ = run_command("ip", &["netns", "del", &self.name], None);
    }
}

/// One pod of a [`TestNode`]: its namespace, `eth0` address, and the host side of its veth.
#[derive(Debug)]
pub struct TestPod {
    pub ns: TestNs,
    pub ip: Ipv4Addr,
    /// The host-side veth in the node's namespace (`vethN`).
    pub host_veth: String,
}

/// A node: a "host" namespace with bridge `br0` at 10.77.0.1/24 and pods at 10.77.0.2, .3, ...
/// each with `eth0` and a default route through the bridge. The addresses are reused by every
/// TestNode: each lives in its own namespaces, so they never meet.
#[derive(Debug)]
pub struct TestNode {
    pub pods: Vec<TestPod>,
    pub host: TestNs,
}

pub const TEST_BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

impl TestNode {
    pub fn new(pods: usize) -> io::Result<Self> {
        assert!(pods <= 250, "a TestNode holds at most 250 pods");
        let host = TestNs::new("host")?;
        host.ip(&["link", "add", "br0", "type", "bridge"])?;
        host.ip(&["addr", "add", "10.77.0.1/24", "dev", "br0"])?;
        host.ip(&["link", "set", "br0", "up"])?;
        let mut node = Self {
            pods: Vec::with_capacity(pods),
            host,
        };
        for i in 0..pods {
            node.add_pod(i)?;
        }
        Ok(node)
    }

    fn add_pod(&mut self, index: usize) -> io::Result<()> {
        let ns = TestNs::new(&format!("pod{index}"))?;
        let host_veth = format!("veth{index}");
        let ip = Ipv4Addr::new(
            10,
            77,
            0,
            u8::try_from(index + 2).expect("at most 250 pods"),
        );
        self.host.ip(&[
            "link",
            "add",
            &host_veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])?;
        self.host
            .ip(&["link", "set", &host_veth, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &TEST_BRIDGE_IP.to_string(),
        ])?;
        self.pods.push(TestPod { ns, ip, host_veth });
        Ok(())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        // Pods first: their veths go with them, then the host namespace and its bridge.
        self.pods.clear();
    }
}

/// A process that a kubelet would have started for a pod: `sleep` inside a test namespace, in a
/// cgroupfs-style pod cgroup `/sys/fs/cgroup/pids/fltest-<pid>-<n>/kubepods/besteffort/pod<uid>`
/// (the v1 `pids` hierarchy this machine mounts), so the agent finds it through `/proc/*/cgroup`
/// as in production. Killed and its cgroups removed on drop.
#[derive(Debug)]
pub struct PodProcess {
    child: std::process::Child,
    netns: Option<Netns>,
    cgroup: std::path::PathBuf,
    created: Vec<std::path::PathBuf>,
}

impl PodProcess {
    pub fn start(ns: &TestNs, pod_uid: &str) -> io::Result<Self> {
        Self::in_cgroup(
            std::path::Path::new("/sys/fs/cgroup/pids"),
            &format!("kubepods/besteffort/pod{pod_uid}"),
            Some(ns),
        )
    }

    /// `sleep` in the cgroup `pod_path` below a fresh top-level directory of the mounted
    /// hierarchy `hierarchy`, inside `ns` (or in the test's own namespace, as a hostNetwork pod
    /// would be, when `None`).
    pub fn in_cgroup(
        hierarchy: &std::path::Path,
        pod_path: &str,
        ns: Option<&TestNs>,
    ) -> io::Result<Self> {
        if !hierarchy.join("cgroup.procs").exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a mounted cgroup hierarchy", hierarchy.display()),
            ));
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let top = hierarchy.join(format!("fltest-{}-{n}", std::process::id()));
        let mut created = vec![top.clone()];
        let mut dir = top;
        for part in pod_path.split('/').filter(|p| !p.is_empty()) {
            dir = dir.join(part);
            created.push(dir.clone());
        }
        std::fs::create_dir_all(&dir)?;
        let netns = ns.map(TestNs::netns).transpose()?;
        let child = Self::spawn(netns.as_ref(), &dir)?;
        Ok(Self {
            child,
            netns,
            cgroup: dir,
            created,
        })
    }

    /// Forked from a thread already inside the namespace, so the process is in it from its first
    /// instruction (with `ip netns exec` there is a moment when a scan sees it in the host's
    /// namespace, a hostNetwork pod to the agent). Moved into its cgroup before this returns.
    fn spawn(netns: Option<&Netns>, cgroup: &std::path::Path) -> io::Result<std::process::Child> {
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("600")
                .stdin(std::process::Stdio::null())
                .spawn()
        };
        let mut child = match netns {
            Some(netns) => netns.run(spawn)??,
            None => spawn()?,
        };
        if let Err(err) = std::fs::write(cgroup.join("cgroup.procs"), child.id().to_string()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err);
        }
        Ok(child)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A container restart: the process dies and a new one starts in the same namespace and
    /// cgroup (new PID).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.child = Self::spawn(self.netns.as_ref(), &self.cgroup)?;
        Ok(())
    }

    /// The pod goes away: its process ends (its namespace stays while the test holds it).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        self.stop();
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_of_a_test_node_reach_each_other_and_vanish_on_drop() {
        if !root_or_skip("agent::testnet::pods_of_a_test_node_reach_each_other_and_vanish_on_drop")
        {
            return;
        }
        let node = TestNode::new(2).unwrap();
        let server_ip = node.pods[1].ip;
        let listener = node.pods[1]
            .ns
            .netns()
            .unwrap()
            .run(|| std::net::TcpListener::bind((server_ip, 8080)))
            .unwrap()
            .unwrap();
        let connected = node.pods[0]
            .ns
            .netns()
            .unwrap()
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &(server_ip, 8080).into(),
                    std::time::Duration::from_secs(5),
                )
            })
            .unwrap();
        assert!(connected.is_ok(), "{connected:?}");
        drop(listener);
        let names: Vec<String> = std::iter::once(&node.host)
            .chain(node.pods.iter().map(|p| &p.ns))
            .map(|ns| ns.name().to_string())
            .collect();
        drop(node);
        let listed = run_command("ip", &["netns", "list"], None).unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout);
        for name in names {
            assert!(!listed.contains(&name), "{name} still exists");
        }
    }
}
