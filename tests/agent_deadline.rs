//! Pulling the plug: root tests of the kernel-enforced deadline through the real agent process.
//! For each fault kind (partition, latency, loss, bandwidth) the agent applies the fault to a
//! real pod, is killed with SIGKILL before the injection's `expiresAt`, and the traffic is
//! measured across the deadline: it must be back to normal within 1 s after `expiresAt` with no
//! faultline process alive. Latency and loss are also shown with an agent that is alive but
//! stuck (SIGSTOP): their queueing too ends at the deadline. And SIGTERM: a restarted agent
//! adopts the faults; without a restart they end at their deadline.
//!
//! Each test prints how long after `expiresAt` traffic was back (negative: before).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::{ApiServer, wait_for};
use faultline::agent::netns::Netns;
use faultline::agent::nft;
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::{PodProcess, TestNode, root_or_skip};
use faultline::api::{
    BandwidthFault, Direction, FaultInjection, FaultInjectionSpec, InjectionPhase, LatencyFault,
    LossFault, NODE_LABEL, NetworkFault, ObjectRef, PodRef, all_crds,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;

const NODE: &str = "deadline-node";
const WAIT: Duration = Duration::from_secs(30);
/// How late after `expiresAt` traffic may come back.
const PRECISION: f64 = 1.0;

struct Setup {
    _server: ApiServer,
    client: Client,
    node: TestNode,
    /// The target pod's uid and process (pod 0 of the node).
    target: (String, PodProcess),
    dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Self {
        common::init_tracing();
        let server = ApiServer::start(0).await.unwrap();
        server.install_crds(&all_crds()).await.unwrap();
        let client = server.client().await;
        let node = TestNode::new(3).unwrap();
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let pod = pods
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": "target"},
                    "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "demo"}]}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let uid = pod.uid().unwrap();
        let process = PodProcess::start(&node.pods[0].ns, &uid).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kubeconfig"), server.kubeconfig_yaml()).unwrap();
        Self {
            _server: server,
            client,
            node,
            target: (uid, process),
            dir,
        }
    }

    /// The real agent process, serving the test node (its veths are in the node's namespace).
    /// Killed when dropped, so a failing test leaves no agent behind.
    fn agent(&self) -> Agent {
        Agent(
            Command::new(env!("CARGO_BIN_EXE_faultline"))
                .args([
                    "agent",
                    "--node",
                    NODE,
                    "--admin-addr",
                    "127.0.0.1:0",
                    "--resync",
                    "200ms",
                ])
                .arg("--journal-dir")
                .arg(self.journal())
                .arg("--node-netns")
                .arg(format!("/run/netns/{}", self.node.host.name()))
                .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn journal(&self) -> std::path::PathBuf {
        self.dir.path().join("journal")
    }

    /// Whether any process runs whose command line names this test's journal: an agent of
    /// this test.
    fn agents_alive(&self) -> Vec<u32> {
        let needle = self.journal().display().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&needle) && !stat.contains(") Z ")
            })
            .collect()
    }

    fn injections(&self) -> Api<FaultInjection> {
        Api::namespaced(self.client.clone(), "default")
    }

    fn peer(&self) -> Ipv4Addr {
        self.node.pods[1].ip
    }

    async fn inject(
        &self,
        name: &str,
        fault: NetworkFault,
        expires_at: DateTime<Utc>,
    ) -> FaultInjection {
        let mut injection = FaultInjection::new(
            name,
            FaultInjectionSpec {
                experiment: ObjectRef {
                    name: "exp".into(),
                    uid: None,
                },
                target: PodRef {
                    namespace: "default".into(),
                    name: "target".into(),
                    uid: self.target.0.clone(),
                },
                node_name: NODE.into(),
                fault,
                expires_at,
            },
        );
        injection
            .labels_mut()
            .insert(NODE_LABEL.into(), NODE.into());
        // A running experiment stands behind it, as the controller's would.
        faultline::sandbox::testkit::vouch_for(&self.client, &mut injection)
            .await
            .unwrap();
        self.injections()
            .create(&PostParams::default(), &injection)
            .await
            .unwrap()
    }

    async fn wait_phase(&self, name: &str, phase: InjectionPhase) -> FaultInjection {
        let api = self.injections();
        wait_for(&format!("{name} {phase:?}"), WAIT, || {
            let api = api.clone();
            async move {
                api.get_opt(name)
                    .await
                    .unwrap()
                    .filter(|i| i.status.as_ref().is_some_and(|s| s.phase == phase))
            }
        })
        .await
    }

    fn target_ns(&self) -> Netns {
        self.node.pods[0].ns.netns().unwrap()
    }

    fn peer_ns(&self) -> Netns {
        self.node.pods[1].ns.netns().unwrap()
    }
}

/// An agent process of a test.
struct Agent(Child);

impl Agent {
    fn wait(&mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(agent: &Agent, signal: Signal) {
    kill(Pid::from_raw(agent.0.id() as i32), signal).unwrap();
}

fn kill9(mut agent: Agent) {
    signal(&agent, Signal::SIGKILL);
    agent.wait();
}

fn peers(ip: Ipv4Addr) -> Vec<String> {
    vec![format!("{ip}/32")]
}

/// Observations over time: (when, whether traffic was impaired then).
type Samples = Arc<Mutex<Vec<(DateTime<Utc>, bool)>>>;

/// A background measurement, stopped on drop.
struct Probe {
    samples: Samples,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn spawn(work: impl FnOnce(Samples, Arc<AtomicBool>) + Send + 'static) -> Self {
        let samples: Samples = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&samples), Arc::clone(&stop));
        Self {
            samples,
            stop,
            threads: vec![std::thread::spawn(move || work(s, st))],
        }
    }

    fn finish(mut self) -> Vec<(DateTime<Utc>, bool)> {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let mut samples = self.samples.lock().unwrap().clone();
        samples.sort_by_key(|(at, _)| *at);
        samples
    }
}

/// TCP connects from `client` to a listener at `addr` every 10 ms (50 ms timeout each).
fn connect_probe(client: Netns, server: &Netns, addr: SocketAddr) -> (Probe, TcpListener) {
    let listener = server.run(|| TcpListener::bind(addr)).unwrap().unwrap();
    listener.set_nonblocking(true).unwrap();
    let accepting = listener.try_clone().unwrap();
    let mut probe = Probe::spawn(move |samples, stop| {
        while !stop.load(Ordering::SeqCst) {
            let at = Utc::now();
            let ok = client
                .run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(50)))
                .map(|r| r.is_ok())
                .unwrap_or(false);
            samples.lock().unwrap().push((at, !ok));
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    // Accept (and close) every connection, so the backlog never fills.
    let stop = Arc::clone(&probe.stop);
    probe.threads.push(std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match accepting.accept() {
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }));
    (probe, listener)
}

/// UDP round trips from `client` to an echo at `addr`, one every 10 ms: impaired when the
/// answer takes longer than `limit` or never comes (1 s).
/// When a datagram left (wall clock and monotonic) and its round trip, once it came back.
type RoundTrip = (DateTime<Utc>, Instant, Option<Duration>);

fn rtt_probe(client: &Netns, server: &Netns, addr: SocketAddr, limit: Duration) -> Probe {
    let echo = server.run(|| UdpSocket::bind(addr)).unwrap().unwrap();
    echo.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let socket = client
        .run(|| UdpSocket::bind(("0.0.0.0", 0)))
        .unwrap()
        .unwrap();
    socket.connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let sent: Arc<Mutex<Vec<RoundTrip>>> = Arc::default();
    let mut probe = Probe::spawn({
        let sent = Arc::clone(&sent);
        move |samples, stop| {
            let receiver = {
                let socket = socket.try_clone().unwrap();
                let sent = Arc::clone(&sent);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8];
                    // Keep reading a second past the stop: late answers count as late.
                    let mut until: Option<Instant> = None;
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            let t = *until
                                .get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                            if Instant::now() > t {
                                break;
                            }
                        }
                        if let Ok(8) = socket.recv(&mut buf) {
                            let seq = u64::from_be_bytes(buf) as usize;
                            let mut sent = sent.lock().unwrap();
                            if let Some(entry) = sent.get_mut(seq) {
                                entry.2.get_or_insert(entry.1.elapsed());
                            }
                        }
                    }
                })
            };
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                sent.lock()
                    .unwrap()
                    .push((Utc::now(), Instant::now(), None));
                let _ = socket.send(&seq.to_be_bytes());
                seq += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            receiver.join().unwrap();
            let mut samples = samples.lock().unwrap();
            for (at, _, rtt) in sent.lock().unwrap().iter() {
                samples.push((*at, rtt.is_none_or(|r| r > limit)));
            }
        }
    });
    probe.threads.push(std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
            if Arc::strong_count(&sent) == 1 {
                break;
            }
        }
    }));
    probe
}

/// UDP datagrams from `client` to `addr` every 2 ms; per 100 ms window of sending, impaired
/// when fewer than 90% arrive.
fn delivery_probe(client: &Netns, server: &Netns, addr: SocketAddr) -> Probe {
    let sink = server.run(|| UdpSocket::bind(addr)).unwrap().unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let socket = client
        .run(|| UdpSocket::bind(("0.0.0.0", 0)))
        .unwrap()
        .unwrap();
    socket.connect(addr).unwrap();
    Probe::spawn(move |samples, stop| {
        let arrived: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
        let receiver = {
            let arrived = Arc::clone(&arrived);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8];
                let mut until: Option<Instant> = None;
                loop {
                    if stop.load(Ordering::SeqCst) {
                        let t = *until
                            .get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
                        if Instant::now() > t {
                            break;
                        }
                    }
                    if let Ok(8) = sink.recv(&mut buf) {
                        arrived.lock().unwrap().insert(u64::from_be_bytes(buf));
                    }
                }
            })
        };
        let mut sent = Vec::new();
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            sent.push(Utc::now());
            let _ = socket.send(&seq.to_be_bytes());
            seq += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        receiver.join().unwrap();
        let arrived = arrived.lock().unwrap();
        let mut samples = samples.lock().unwrap();
        for (window, chunk) in sent.chunks(50).enumerate() {
            let first = window as u64 * 50;
            let got = (first..first + chunk.len() as u64)
                .filter(|s| arrived.contains(s))
                .count();
            samples.push((chunk[0], got * 10 < chunk.len() * 9));
        }
    })
}

/// A bulk TCP stream from `client` to `addr`; per 100 ms window, impaired when below `floor`
/// bytes/s.
fn throughput_probe(client: &Netns, server: &Netns, addr: SocketAddr, floor: f64) -> Probe {
    let listener = server.run(|| TcpListener::bind(addr)).unwrap().unwrap();
    let stream = client
        .run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let (mut receiving, _) = listener.accept().unwrap();
    receiving
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut probe = Probe::spawn(move |samples, stop| {
        let mut buf = vec![0u8; 1 << 18];
        let mut window_start = (Utc::now(), Instant::now());
        let mut bytes = 0u64;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(n) = receiving.read(&mut buf) {
                bytes += n as u64;
            }
            let elapsed = window_start.1.elapsed();
            if elapsed >= Duration::from_millis(100) {
                let rate = bytes as f64 / elapsed.as_secs_f64();
                samples.lock().unwrap().push((window_start.0, rate < floor));
                window_start = (Utc::now(), Instant::now());
                bytes = 0;
            }
        }
    });
    let stop = Arc::clone(&probe.stop);
    probe.threads.push(std::thread::spawn(move || {
        let mut stream = stream;
        stream
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let chunk = vec![0u8; 1 << 16];
        while !stop.load(Ordering::SeqCst) {
            let _ = stream.write(&chunk);
        }
    }));
    probe
}

/// Seconds after `deadline` from which traffic is unimpaired (negative: before it). A fault
/// impairs every sample while it is in; one impaired sample between good ones is the loaded
/// machine's scheduling (a thread held for longer than the limit), not the fault.
fn back_after(samples: &[(DateTime<Utc>, bool)], deadline: DateTime<Utc>) -> f64 {
    let last_bad = samples
        .windows(2)
        .filter(|pair| pair[0].1 && pair[1].1)
        .map(|pair| pair[1].0)
        .max();
    let Some(last_bad) = last_bad else {
        return f64::NEG_INFINITY;
    };
    // The next sample after the last impaired one is the first of the good run.
    let back = samples
        .iter()
        .find(|(at, _)| *at > last_bad)
        .map_or(last_bad, |(at, _)| *at);
    (back - deadline).num_milliseconds() as f64 / 1000.0
}

/// Whether the samples before `until` were mostly impaired (the fault was in place).
fn impaired_before(samples: &[(DateTime<Utc>, bool)], until: DateTime<Utc>) -> bool {
    let before: Vec<bool> = samples
        .iter()
        .filter(|(at, _)| *at < until)
        .map(|(_, impaired)| *impaired)
        .collect();
    !before.is_empty() && before.iter().filter(|i| **i).count() * 10 >= before.len() * 8
}

async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(left) = (at - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
}

/// How a fault is measured.
enum Measure {
    Connect,
    Rtt,
    Delivery,
    Throughput,
}

fn start_probe(setup: &Setup, measure: &Measure, port: u16) -> (Probe, Option<TcpListener>) {
    let (target, peer) = (setup.target_ns(), setup.peer_ns());
    let addr = SocketAddr::from((setup.peer(), port));
    match measure {
        // The peer connects to the target: both directions of the partition matter.
        Measure::Connect => {
            let (probe, listener) = connect_probe(
                peer,
                &target,
                SocketAddr::from((setup.node.pods[0].ip, port)),
            );
            (probe, Some(listener))
        }
        // Impaired: lost, or more than half the fault's 100 ms late. Scheduling noise on a
        // loaded 2-core CI machine reaches tens of milliseconds; the fault is 100.
        Measure::Rtt => (
            rtt_probe(&target, &peer, addr, Duration::from_millis(50)),
            None,
        ),
        Measure::Delivery => (delivery_probe(&target, &peer, addr), None),
        // The cap is 8 Mbit/s (1 MB/s): more than 5 MB/s in a window is not capped.
        Measure::Throughput => (throughput_probe(&target, &peer, addr, 5e6), None),
    }
}

/// Applies `fault` through the agent, makes the agent `stop` (SIGKILL, or SIGSTOP then
/// SIGKILL at the end) `kill_before` the deadline, measures across the deadline and returns
/// how long after it traffic was back.
async fn through_the_deadline(
    setup: &Setup,
    name: &str,
    fault: NetworkFault,
    measure: Measure,
    stop: Signal,
    port: u16,
) -> f64 {
    let agent = setup.agent();
    let expires = Utc::now() + TimeDelta::seconds(7);
    let injection = setup.inject(name, fault, expires).await;
    setup.wait_phase(name, InjectionPhase::Applied).await;
    let (probe, _listener) = start_probe(setup, &measure, port);
    // The fault holds for a while with the agent alive, then the agent goes.
    sleep_until(expires - TimeDelta::milliseconds(2500)).await;
    signal(&agent, stop);
    if stop == Signal::SIGKILL {
        let mut agent = agent;
        agent.wait();
        assert!(setup.agents_alive().is_empty(), "an agent is still alive");
        sleep_until(expires + TimeDelta::milliseconds(2500)).await;
        assert!(setup.agents_alive().is_empty());
    } else {
        sleep_until(expires + TimeDelta::milliseconds(2500)).await;
        kill9(agent);
    }
    let samples = probe.finish();
    let back = back_after(&samples, expires);
    let kill_at = expires - TimeDelta::milliseconds(2500);
    assert!(
        impaired_before(&samples, kill_at),
        "{name}: the fault was not in place while the agent ran: {samples:?}"
    );
    // What the kernel still holds after expiry is inert; a new agent removes it.
    let tag = InjectionTag::from_uid(&injection.uid().unwrap()).unwrap();
    let cleaner = setup.agent();
    let api = setup.injections();
    api.delete(name, &DeleteParams::default()).await.unwrap();
    wait_for(&format!("{name} gone"), WAIT, || {
        let api = api.clone();
        async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
    })
    .await;
    for ns in [setup.target_ns(), setup.node.host.netns().unwrap()] {
        assert!(
            !nft::owned(&ns).unwrap().contains(&tag),
            "{name}: a table is left"
        );
    }
    drop(cleaner);
    back
}

fn report(kind: &str, how: &str, back: f64) {
    eprintln!("DEADLINE {kind:<10} agent {how:<8} traffic back {back:+.3} s after expiresAt");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_ends_at_its_deadline_after_the_agent_is_killed() {
    if !root_or_skip("agent_deadline::a_partition_ends_at_its_deadline_after_the_agent_is_killed") {
        return;
    }
    let setup = Setup::start().await;
    let fault = NetworkFault {
        partition: Some(Direction::Both),
        peer_cidrs: peers(setup.peer()),
        ..Default::default()
    };
    let back = through_the_deadline(
        &setup,
        "part",
        fault,
        Measure::Connect,
        Signal::SIGKILL,
        7301,
    )
    .await;
    report("partition", "SIGKILL", back);
    // Held until the deadline (the kernel ended it, not the agent's death)...
    assert!(
        back > -0.2,
        "the partition ended {back:.3} s before its deadline"
    );
    // ...and no longer.
    assert!(
        back < PRECISION,
        "traffic back only {back:.3} s after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bandwidth_cap_ends_at_its_deadline_after_the_agent_is_killed() {
    if !root_or_skip(
        "agent_deadline::a_bandwidth_cap_ends_at_its_deadline_after_the_agent_is_killed",
    ) {
        return;
    }
    let setup = Setup::start().await;
    let fault = NetworkFault {
        bandwidth: Some(BandwidthFault {
            rate: "8mbit".into(),
            ..Default::default()
        }),
        peer_cidrs: peers(setup.peer()),
        ..Default::default()
    };
    let back = through_the_deadline(
        &setup,
        "bw",
        fault,
        Measure::Throughput,
        Signal::SIGKILL,
        7302,
    )
    .await;
    report("bandwidth", "SIGKILL", back);
    assert!(back > -0.2, "the cap ended {back:.3} s before its deadline");
    assert!(
        back < PRECISION,
        "throughput back only {back:.3} s after the deadline"
    );
}

fn latency(delay: &str) -> LatencyFault {
    LatencyFault {
        latency: delay.into(),
        direction: Direction::To,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_ends_at_its_deadline_whether_the_agent_is_killed_or_stuck() {
    if !root_or_skip(
        "agent_deadline::latency_ends_at_its_deadline_whether_the_agent_is_killed_or_stuck",
    ) {
        return;
    }
    let setup = Setup::start().await;
    let fault = |_| NetworkFault {
        latency: Some(latency("100ms")),
        peer_cidrs: peers(setup.peer()),
        ..Default::default()
    };
    // Killed: the queue fails open at once (--queue-bypass), before the deadline.
    let back = through_the_deadline(
        &setup,
        "lat-kill",
        fault(()),
        Measure::Rtt,
        Signal::SIGKILL,
        7303,
    )
    .await;
    report("latency", "SIGKILL", back);
    assert!(
        back < PRECISION,
        "round trips back only {back:.3} s after the deadline"
    );
    // Stuck: packets wait in the queue for a worker that never answers; from the deadline on,
    // the kernel queues nothing more.
    let back = through_the_deadline(
        &setup,
        "lat-stop",
        fault(()),
        Measure::Rtt,
        Signal::SIGSTOP,
        7304,
    )
    .await;
    report("latency", "SIGSTOP", back);
    assert!(
        back > -0.2,
        "round trips were fine {back:.3} s before the deadline"
    );
    assert!(
        back < PRECISION,
        "round trips back only {back:.3} s after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loss_ends_at_its_deadline_whether_the_agent_is_killed_or_stuck() {
    if !root_or_skip(
        "agent_deadline::loss_ends_at_its_deadline_whether_the_agent_is_killed_or_stuck",
    ) {
        return;
    }
    let setup = Setup::start().await;
    let fault = || NetworkFault {
        loss: Some(LossFault {
            percent: 50.0,
            direction: Direction::To,
            ..Default::default()
        }),
        peer_cidrs: peers(setup.peer()),
        ..Default::default()
    };
    let back = through_the_deadline(
        &setup,
        "loss-kill",
        fault(),
        Measure::Delivery,
        Signal::SIGKILL,
        7305,
    )
    .await;
    report("loss", "SIGKILL", back);
    assert!(
        back < PRECISION,
        "delivery back only {back:.3} s after the deadline"
    );
    let back = through_the_deadline(
        &setup,
        "loss-stop",
        fault(),
        Measure::Delivery,
        Signal::SIGSTOP,
        7306,
    )
    .await;
    report("loss", "SIGSTOP", back);
    // (Delivery may come back before the deadline: once the stuck queue is full, packets fail
    // open. Never after it.)
    assert!(
        back < PRECISION,
        "delivery back only {back:.3} s after the deadline"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigterm_a_restarted_agent_adopts_the_faults() {
    if !root_or_skip("agent_deadline::after_sigterm_a_restarted_agent_adopts_the_faults") {
        return;
    }
    let setup = Setup::start().await;
    let mut agent = setup.agent();
    let expires = Utc::now() + TimeDelta::minutes(5);
    let part = setup
        .inject(
            "part",
            NetworkFault {
                partition: Some(Direction::Both),
                peer_cidrs: vec![format!("{}/32", setup.node.pods[2].ip)],
                ..Default::default()
            },
            expires,
        )
        .await;
    setup
        .inject(
            "lat",
            NetworkFault {
                latency: Some(latency("50ms")),
                peer_cidrs: peers(setup.peer()),
                ..Default::default()
            },
            expires,
        )
        .await;
    let applied = setup.wait_phase("part", InjectionPhase::Applied).await;
    setup.wait_phase("lat", InjectionPhase::Applied).await;
    let applied_at = applied.status.unwrap().applied_at;

    // A rolling update: SIGTERM, the agent exits by itself, reverting nothing.
    signal(&agent, Signal::SIGTERM);
    let exited = agent.wait();
    assert!(exited.success(), "{exited:?}");
    let tag = InjectionTag::from_uid(&part.uid().unwrap()).unwrap();
    assert!(
        nft::owned(&setup.target_ns()).unwrap().contains(&tag),
        "the partition stays"
    );
    // A listener behind the partition: without the partition, this connect succeeds (as it
    // does at the end, once both faults are reverted).
    let behind = SocketAddr::from((setup.node.pods[0].ip, 7310));
    let _listener = setup
        .target_ns()
        .run(|| TcpListener::bind(behind))
        .unwrap()
        .unwrap();
    let partitioned = setup.node.pods[2].ns.netns().unwrap();
    let connect = || {
        partitioned
            .run(|| TcpStream::connect_timeout(&behind, Duration::from_millis(300)))
            .unwrap()
    };
    assert!(connect().is_err(), "the peer got through the partition");

    // The next agent adopts both: nothing is reverted, statuses stay Applied, and the
    // latency (whose workers died with the old agent) is back.
    agent = setup.agent();
    let (probe, _) = start_probe(&setup, &Measure::Rtt, 7311);
    // The new agent starts, lists and adopts (tens of milliseconds; seconds on a loaded
    // machine), then the last second of probes is all delayed (the very last ones may still be
    // in flight).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let end = Utc::now();
    let samples = probe.finish();
    let late: Vec<_> = samples
        .iter()
        .filter(|(at, _)| {
            *at > end - TimeDelta::seconds(1) && *at < end - TimeDelta::milliseconds(200)
        })
        .collect();
    assert!(
        !late.is_empty() && late.iter().all(|(_, impaired)| *impaired),
        "the adopted latency does not delay: {late:?}"
    );
    let after = setup.injections().get("part").await.unwrap();
    let status = after.status.unwrap();
    assert_eq!(status.phase, InjectionPhase::Applied);
    assert_eq!(status.applied_at, applied_at, "adopted, not applied anew");
    assert_eq!(
        nft::owned(&setup.target_ns())
            .unwrap()
            .iter()
            .filter(|t| **t == tag)
            .count(),
        1
    );
    for name in ["part", "lat"] {
        setup
            .injections()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    let api = setup.injections();
    wait_for("both reverted and gone", WAIT, || {
        let api = api.clone();
        async move {
            api.list(&Default::default())
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert!(nft::owned(&setup.target_ns()).unwrap().is_empty());
    assert!(
        connect().is_ok(),
        "the partitioned peer cannot reach the listener once the partition is reverted"
    );
    assert!(
        nft::owned(&setup.node.host.netns().unwrap())
            .unwrap()
            .is_empty()
    );
    kill9(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_sigterm_and_no_restart_faults_end_at_their_deadline() {
    if !root_or_skip("agent_deadline::after_sigterm_and_no_restart_faults_end_at_their_deadline") {
        return;
    }
    let setup = Setup::start().await;
    let mut agent = setup.agent();
    let expires = Utc::now() + TimeDelta::seconds(7);
    setup
        .inject(
            "part",
            NetworkFault {
                partition: Some(Direction::Both),
                peer_cidrs: peers(setup.peer()),
                ..Default::default()
            },
            expires,
        )
        .await;
    setup.wait_phase("part", InjectionPhase::Applied).await;
    let (probe, _listener) = start_probe(&setup, &Measure::Connect, 7320);
    // An uninstall: SIGTERM, and no agent ever again.
    sleep_until(expires - TimeDelta::milliseconds(2500)).await;
    signal(&agent, Signal::SIGTERM);
    assert!(agent.wait().success());
    assert!(setup.agents_alive().is_empty());
    sleep_until(expires + TimeDelta::milliseconds(2500)).await;
    let samples = probe.finish();
    let back = back_after(&samples, expires);
    report("partition", "SIGTERM", back);
    assert!(impaired_before(
        &samples,
        expires - TimeDelta::milliseconds(200)
    ));
    assert!(
        back > -0.2 && back < PRECISION,
        "traffic back {back:.3} s after the deadline"
    );
}
