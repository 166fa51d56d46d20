//! The NFQUEUE latency path, end to end between two pods of a TestNode (root only): how close
//! the added delay is to the requested one (median and p99 of UDP round trips minus the
//! baseline) and what TCP bulk throughput survives, at 1, 10, 50 and 200 ms of egress delay on
//! the sending pod; and the same without any fault as a baseline.
//!
//! Then the load: UDP sent at 1, 10 and 100 k packets/s (over 8 flows) through a 20 ms delay,
//! and a TCP stream at line rate, with what the fault's rules matched, delayed and let bypass
//! (the queue full, or our socket overflowed): how much of the fault was in place under load.
//!
//! And the idle cost: how often each queue's reader thread wakes up while no packet comes (a
//! fault in place on a quiet pod), from the threads' own context-switch counters.
//!
//! `FAULTLINE_BENCH_SECS` sets each TCP transfer's length (default 5 s), `FAULTLINE_BENCH_RTTS`
//! the round trips per row (default 400, one every 5 ms).

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use faultline::agent::deadline::Deadline;
use faultline::agent::netns::Netns;
use faultline::agent::nfqueue::traffic::{UdpEcho, UdpSink, quantile, tcp_throughput, udp_rtts};
use faultline::agent::nfqueue::{NfqueueEngine, NfqueueStats, PodNet};
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::TestNode;
use faultline::api::{Direction, GoDuration, LatencyFault, NetworkFault};

const ECHO_PORT: u16 = 7007;
const TCP_PORT: u16 = 7100;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Row {
    label: String,
    median_ms: f64,
    p99_ms: f64,
    lost: usize,
    mbit: f64,
    mbit_large: f64,
    bypassed: Option<u64>,
}

/// Writes a sysctl under /proc/sys/net of `ns` (tcp_rmem and tcp_wmem are per namespace).
fn sysctl(ns: &Netns, path: &str, value: &str) {
    ns.run(|| std::fs::write(path, value))
        .unwrap()
        .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
}

fn tcp_buffers(namespaces: &[&Netns], large: bool) {
    let (rmem, wmem) = if large {
        ("4096 131072 67108864", "4096 16384 67108864")
    } else {
        ("4096 131072 6291456", "4096 16384 4194304")
    };
    for ns in namespaces {
        sysctl(ns, "/proc/sys/net/ipv4/tcp_rmem", rmem);
        sysctl(ns, "/proc/sys/net/ipv4/tcp_wmem", wmem);
    }
}

/// Round trips, unanswered requests, TCP Mbit/s with default and with large buffers.
fn measure(
    client: &Netns,
    server_ns: &Netns,
    echo: SocketAddr,
    tcp: SocketAddr,
    rtts: usize,
    secs: u64,
) -> (Vec<Duration>, usize, f64, f64) {
    let all = udp_rtts(
        client,
        echo,
        rtts,
        Duration::from_millis(5),
        Duration::from_secs(2),
    )
    .expect("round trips");
    let lost = all.iter().filter(|r| r.is_none()).count();
    let answered: Vec<Duration> = all.into_iter().flatten().collect();
    let transfer = Duration::from_secs(secs);
    tcp_buffers(&[client, server_ns], false);
    let mbit = tcp_throughput(client, server_ns, tcp, transfer).expect("tcp");
    tcp_buffers(&[client, server_ns], true);
    let large_port = SocketAddr::new(tcp.ip(), tcp.port() + 100);
    let mbit_large = tcp_throughput(client, server_ns, large_port, transfer).expect("tcp");
    tcp_buffers(&[client, server_ns], false);
    (answered, lost, mbit, mbit_large)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: the agent_nfqueue bench needs root (network namespaces, iptables)");
        return;
    }
    let secs = env_or("FAULTLINE_BENCH_SECS", 5);
    let rtts = usize::try_from(env_or("FAULTLINE_BENCH_RTTS", 400)).unwrap_or(400);
    let node = TestNode::new(2).expect("test node");
    let net = PodNet {
        pod: node.pods[0].ns.netns().unwrap(),
        host: node.host.netns().unwrap(),
    };
    let server_ns = node.pods[1].ns.netns().unwrap();
    let echo = SocketAddr::from((node.pods[1].ip, ECHO_PORT));
    let _echo = UdpEcho::start(&server_ns, echo).unwrap();
    let tag = InjectionTag::from_uid("be7c0ffe-0000-4000-8000-000000000001").unwrap();
    let engine = NfqueueEngine::new();

    let (base, lost, mbit, mbit_large) = measure(
        &net.pod,
        &server_ns,
        echo,
        SocketAddr::from((node.pods[1].ip, TCP_PORT)),
        rtts,
        secs,
    );
    let base_median = ms(quantile(&base, 0.5));
    let mut rows = vec![Row {
        label: "no fault".into(),
        median_ms: base_median,
        p99_ms: ms(quantile(&base, 0.99)),
        lost,
        mbit,
        mbit_large,
        bypassed: None,
    }];
    for (i, delay) in [1u64, 10, 50, 200].into_iter().enumerate() {
        let fault = NetworkFault {
            latency: Some(LatencyFault {
                latency: GoDuration(format!("{delay}ms")),
                direction: Direction::To,
                ..LatencyFault::default()
            }),
            ..NetworkFault::default()
        };
        engine
            .apply(&tag, &net, &fault, &later(), "bench-pod")
            .expect("apply");
        let port = TCP_PORT + 1 + u16::try_from(i).unwrap();
        let (during, lost, mbit, mbit_large) = measure(
            &net.pod,
            &server_ns,
            echo,
            SocketAddr::from((node.pods[1].ip, port)),
            rtts,
            secs,
        );
        let bypassed = engine.stats(&tag).map(|s| s.bypassed);
        engine.remove(&tag, &net).expect("remove");
        rows.push(Row {
            label: format!("{delay} ms"),
            median_ms: ms(quantile(&during, 0.5)) - base_median,
            p99_ms: ms(quantile(&during, 0.99)) - base_median,
            lost,
            mbit,
            mbit_large,
            bypassed,
        });
    }

    println!(
        "\n## NFQUEUE egress latency: accuracy and TCP throughput ({}; {rtts} UDP round trips \
         per row, {secs} s TCP transfer)\n",
        machine()
    );
    println!(
        "| requested delay | added RTT median (ms) | added RTT p99 (ms) | unanswered | TCP, default buffers (Mbit/s) | TCP, 64 MiB buffers (Mbit/s) | bypassed |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in &rows {
        let (median, p99) = if row.bypassed.is_none() {
            // The baseline row shows the raw RTT, not an addition.
            (
                format!("RTT {:.3}", row.median_ms),
                format!("RTT {:.3}", row.p99_ms),
            )
        } else {
            (
                format!("{:.3}", row.median_ms),
                format!("{:.3}", row.p99_ms),
            )
        };
        println!(
            "| {} | {median} | {p99} | {} | {:.0} | {:.0} | {} |",
            row.label,
            row.lost,
            row.mbit,
            row.mbit_large,
            row.bypassed.map_or("-".into(), |b| b.to_string())
        );
    }
    let load_rows = load(&node, &net, &engine, secs.min(3));
    print_load(&load_rows, &engine);
    idle(&net, &engine);
}

/// The readers' wake-ups while a fault is in place and no packet comes.
fn idle(net: &PodNet, engine: &NfqueueEngine) {
    let tag = InjectionTag::from_uid("be7c0ffe-0000-4000-8000-000000000003").unwrap();
    let fault = NetworkFault {
        latency: Some(LatencyFault {
            latency: GoDuration("50ms".into()),
            direction: Direction::To,
            ..LatencyFault::default()
        }),
        ..NetworkFault::default()
    };
    engine
        .apply(&tag, net, &fault, &later(), "bench-pod")
        .expect("apply");
    std::thread::sleep(Duration::from_millis(500));
    let window = Duration::from_secs(3);
    let before = reader_switches();
    std::thread::sleep(window);
    let after = reader_switches();
    engine.remove(&tag, net).expect("remove");
    let woke: u64 = after
        .iter()
        .map(|(tid, n)| n - before.get(tid).copied().unwrap_or(*n))
        .sum();
    let readers = after.len().max(1);
    println!(
        "\n## NFQUEUE idle: a 50 ms egress delay in place, no traffic, {} s ({})\n",
        window.as_secs(),
        machine()
    );
    println!("| reader threads | wake-ups | per reader per second |");
    println!("| --- | --- | --- |");
    println!(
        "| {} | {woke} | {:.1} |",
        after.len(),
        woke as f64 / readers as f64 / window.as_secs_f64()
    );
}

/// Voluntary context switches of this process's NFQUEUE reader threads (`nfq<N>-rd`), by
/// thread id.
fn reader_switches() -> std::collections::BTreeMap<String, u64> {
    let mut switches = std::collections::BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let is_reader = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .is_some_and(|name| name.trim().ends_with("-rd"));
        let count = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|n| n.trim().parse().ok());
        if let (true, Some(count)) = (is_reader, count) {
            switches.insert(task.file_name().to_string_lossy().into_owned(), count);
        }
    }
    switches
}

fn later() -> Deadline {
    Deadline::new(Utc::now() + TimeDelta::minutes(30))
}

/// Sends UDP datagrams from `flows` sockets in `client` to `dest` at `rate` packets/s (all
/// flows together) for `duration`; returns how many were sent.
fn udp_flood(client: &Netns, dest: SocketAddr, flows: usize, rate: u64, duration: Duration) -> u64 {
    let sockets: Vec<std::net::UdpSocket> = (0..flows)
        .map(|_| {
            let socket = client
                .run(|| std::net::UdpSocket::bind(("0.0.0.0", 0)))
                .unwrap()
                .unwrap();
            socket.connect(dest).unwrap();
            socket
        })
        .collect();
    let start = std::time::Instant::now();
    let payload = [0u8; 64];
    let mut sent = 0u64;
    while start.elapsed() < duration {
        // Catch up to the schedule every millisecond.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let _ = sockets[(sent as usize) % flows].send(&payload);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    sent
}

struct LoadRow {
    label: String,
    sent: u64,
    received: u64,
    stats: NfqueueStats,
}

fn load(node: &TestNode, net: &PodNet, engine: &NfqueueEngine, secs: u64) -> Vec<LoadRow> {
    let tag = InjectionTag::from_uid("be7c0ffe-0000-4000-8000-000000000002").unwrap();
    let sink_ns = node.pods[1].ns.netns().unwrap();
    let fault = NetworkFault {
        latency: Some(LatencyFault {
            latency: GoDuration("20ms".into()),
            direction: Direction::To,
            ..LatencyFault::default()
        }),
        ..NetworkFault::default()
    };
    let mut rows = Vec::new();
    for (i, rate) in [1_000u64, 10_000, 100_000].into_iter().enumerate() {
        let dest = SocketAddr::from((node.pods[1].ip, 7200 + u16::try_from(i).unwrap()));
        let sink = UdpSink::start(&sink_ns, dest).unwrap();
        engine
            .apply(&tag, net, &fault, &later(), "bench-pod")
            .expect("apply");
        let sent = udp_flood(&net.pod, dest, 8, rate, Duration::from_secs(secs));
        std::thread::sleep(Duration::from_millis(300));
        let stats = engine.stats(&tag).unwrap_or_default();
        engine.remove(&tag, net).expect("remove");
        rows.push(LoadRow {
            label: format!("UDP {} k packets/s, 8 flows", rate / 1000),
            sent,
            received: sink.received(),
            stats,
        });
    }
    engine
        .apply(&tag, net, &fault, &later(), "bench-pod")
        .expect("apply");
    let server = node.pods[1].ns.netns().unwrap();
    let mbit = tcp_throughput(
        &net.pod,
        &server,
        SocketAddr::from((node.pods[1].ip, 7300)),
        Duration::from_secs(secs),
    )
    .expect("tcp");
    let stats = engine.stats(&tag).unwrap_or_default();
    engine.remove(&tag, net).expect("remove");
    rows.push(LoadRow {
        label: format!("TCP at line rate, one flow ({mbit:.0} Mbit/s)"),
        sent: stats.matched,
        received: stats.matched,
        stats,
    });
    rows
}

fn print_load(rows: &[LoadRow], engine: &NfqueueEngine) {
    println!(
        "\n## NFQUEUE under load: 20 ms egress delay, {} queue(s) per side, queues hold rate x delay packets, fail open beyond ({})\n",
        faultline::agent::nfqueue::default_queues(),
        machine()
    );
    let _ = engine;
    println!("| load | sent | matched | delayed | bypassed | bypassed % | delivered |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let share = 100.0 * row.stats.bypassed as f64 / row.stats.matched.max(1) as f64;
        println!(
            "| {} | {} | {} | {} | {} | {share:.3} | {} |",
            row.label,
            row.sent,
            row.stats.matched,
            row.stats.delayed,
            row.stats.bypassed,
            row.received
        );
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("nproc={cores}")
}
