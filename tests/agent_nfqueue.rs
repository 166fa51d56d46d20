//! The NFQUEUE latency and loss path for real, in throwaway namespaces (root only): delays and
//! losses measured with UDP between pods of a TestNode, scoping, two latencies adding up, the
//! bypass when no worker runs, recovery by a new engine, the deadline ending the queueing while
//! the workers still run (nftables and the iptables fallback), and clean removal.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use faultline::agent::deadline::Deadline;
use faultline::agent::netns::Netns;
use faultline::agent::nfqueue::traffic::{UdpEcho, UdpSink, quantile, udp_rtts, udp_send};
use faultline::agent::nfqueue::{self, HostPort, NfqueueEngine, PodNet, Side, Steering};
use faultline::agent::nft;
use faultline::agent::nftables::{AddrFamily, Family as NftFamily};
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::{TestNode, TestNs, root_or_skip};
use faultline::api::{Direction, GoDuration, LatencyFault, LossFault, NetworkFault};

const ECHO_PORT: u16 = 7007;
/// The pod uid written into the tables' comments.
const POD: &str = "test-pod";
const OTHER_PORT: u16 = 7008;

fn tag(n: u8) -> InjectionTag {
    InjectionTag::from_uid(&format!("{n:02x}3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37")).unwrap()
}

/// Ten minutes from now: longer than any of these tests.
fn later() -> Deadline {
    Deadline::new(Utc::now() + TimeDelta::minutes(10))
}

/// Our tables in a test namespace.
fn tables(ns: &TestNs) -> Vec<InjectionTag> {
    nft::owned(&ns.netns().unwrap()).unwrap()
}

fn pod_net(node: &TestNode, pod: usize) -> PodNet {
    PodNet {
        pod: node.pods[pod].ns.netns().unwrap(),
        host: node.host.netns().unwrap(),
    }
}

fn latency(delay: &str, jitter: Option<&str>, direction: Direction) -> NetworkFault {
    NetworkFault {
        latency: Some(LatencyFault {
            latency: GoDuration::from(delay),
            jitter: jitter.map(GoDuration::from),
            correlation: None,
            direction,
            to: None,
        }),
        ..NetworkFault::default()
    }
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// Round trips from `client` to an echo server; panics if more than 2% go unanswered.
fn rtts(client: &Netns, server: SocketAddr, count: usize) -> Vec<Duration> {
    let all = udp_rtts(
        client,
        server,
        count,
        Duration::from_millis(5),
        Duration::from_secs(2),
    )
    .unwrap();
    let answered: Vec<Duration> = all.into_iter().flatten().collect();
    assert!(
        answered.len() * 50 >= count * 49,
        "only {} of {count} requests answered",
        answered.len()
    );
    answered
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_ms(values: &[Duration]) -> f64 {
    ms(quantile(values, 0.5))
}

/// Asserts that `added` ms of round trip is a delay of `nominal` ms, in full: never less (a
/// delay cannot come early), and late by no more than a loaded 2-core machine makes a userspace
/// delayer (CI saw +3.3 ms at 60). The bounds still tell one delay from two, and 30 ms from
/// 20 + 30; precision is `make bench`'s business.
fn assert_delay(added: f64, nominal: f64, what: &str) {
    assert!(
        added >= nominal - 3.0 && added <= nominal * 1.2 + 10.0,
        "{what}: added {added:.2} ms, not a delay of {nominal} ms (allowed {:.1} to {:.1})",
        nominal - 3.0,
        nominal * 1.2 + 10.0
    );
}

/// `iptables-save` and `ip6tables-save` of a namespace.
fn saved(ns: &TestNs) -> String {
    let v4 = ns.exec("iptables-save", &[]).unwrap();
    let v6 = ns.exec("ip6tables-save", &[]).unwrap();
    String::from_utf8_lossy(&v4.stdout).into_owned() + &String::from_utf8_lossy(&v6.stdout)
}

#[test]
fn the_nfqueue_path_is_available_on_this_machine() {
    if !root_or_skip("agent_nfqueue::the_nfqueue_path_is_available_on_this_machine") {
        return;
    }
    assert!(nfqueue::available());
}

#[test]
fn host_veth_is_the_peer_of_the_pods_eth0() {
    if !root_or_skip("agent_nfqueue::host_veth_is_the_peer_of_the_pods_eth0") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    for (i, pod) in node.pods.iter().enumerate() {
        let net = pod_net(&node, i);
        assert_eq!(
            nfqueue::host_veth(&net.pod, &net.host).unwrap(),
            pod.host_veth
        );
    }
}

#[test]
fn egress_latency_adds_the_requested_delay() {
    if !root_or_skip("agent_nfqueue::egress_latency_adds_the_requested_delay") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let server = addr(node.pods[1].ip, ECHO_PORT);
    let _echo = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), server).unwrap();
    let before = median_ms(&rtts(&net.pod, server, 100));

    let engine = NfqueueEngine::new();
    let applied = engine
        .apply(
            &tag(1),
            &net,
            &latency("50ms", None, Direction::To),
            &later(),
            POD,
        )
        .unwrap();
    assert!(applied.rules_written);
    assert!(!applied.recovered);
    // TestNode's veths are bridge ports: matched with physdev through br_netfilter.
    assert_eq!(applied.queues.len(), 1);
    assert_eq!(applied.queues[0].side, Side::Node);
    assert_eq!(
        applied.queues[0].port,
        Some(HostPort::Bridged {
            veth: node.pods[0].host_veth.clone(),
            bridge: "br0".into()
        })
    );

    let during = rtts(&net.pod, server, 200);
    let added = median_ms(&during) - before;
    eprintln!("baseline median RTT {before:.3} ms, added by 50ms egress latency {added:.3} ms");
    assert_delay(added, 50.0, "50ms egress latency");
    let stats = engine.stats(&tag(1)).unwrap();
    eprintln!("{stats:?}");
    assert!(stats.delayed >= 200, "{stats:?}");
    assert_eq!(stats.dropped, 0);
    assert!(stats.bypassed < 5, "{stats:?}");

    assert!(engine.remove(&tag(1), &net).unwrap());
    let after = median_ms(&rtts(&net.pod, server, 50));
    assert!(
        after < before + 5.0,
        "still delayed after remove: {after:.2} ms"
    );
}

#[test]
fn jitter_spreads_the_delay_within_its_range() {
    if !root_or_skip("agent_nfqueue::jitter_spreads_the_delay_within_its_range") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let server = addr(node.pods[1].ip, ECHO_PORT);
    let _echo = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), server).unwrap();
    let before = median_ms(&rtts(&net.pod, server, 50));

    let engine = NfqueueEngine::new();
    engine
        .apply(
            &tag(2),
            &net,
            &latency("30ms", Some("10ms"), Direction::To),
            &later(),
            POD,
        )
        .unwrap();
    let during = rtts(&net.pod, server, 200);
    let added: Vec<f64> = during.iter().map(|d| ms(*d) - before).collect();
    let (low, high) = added
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &a| (l.min(a), h.max(a)));
    // Uniform in [20, 40] ms. Never below (nothing is released early); above only by what
    // scheduling adds on a busy machine (CI runs suites side by side: packets once took
    // 47.8 and 134 ms), so the top is judged by the 90th percentile (38 ms when uniform; a
    // delay applied twice would put it near 76), the maximum only against a delay in the
    // wrong unit.
    // The floor is judged on raw round trips: a correct delay never gives one under 20 ms,
    // whatever the baseline measured beside it under another load.
    let fastest = during.iter().map(|d| ms(*d)).fold(f64::MAX, f64::min);
    assert!(
        fastest >= 19.5,
        "a round trip took {fastest:.2} ms (added {low:.2} ms)"
    );
    assert!(high <= 1000.0, "a packet was delayed {high:.2} ms");
    let p10 = ms(quantile(&during, 0.1)) - before;
    let p90 = ms(quantile(&during, 0.9)) - before;
    assert!(
        p90 - p10 >= 8.0,
        "delays do not spread: p10 {p10:.2} ms, p90 {p90:.2} ms"
    );
    assert!(p90 <= 52.0, "delays go above the range: p90 {p90:.2} ms");
    let median = median_ms(&during) - before;
    eprintln!(
        "30ms ± 10ms: added min {low:.2} p10 {p10:.2} median {median:.2} p90 {p90:.2} max {high:.2} ms"
    );
    assert_delay(median, 30.0, "median of 30ms ± 10ms");
}

#[test]
fn ingress_and_both_directions_delay_the_pod() {
    if !root_or_skip("agent_nfqueue::ingress_and_both_directions_delay_the_pod") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let server = addr(node.pods[1].ip, ECHO_PORT);
    let _echo = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), server).unwrap();
    let before = median_ms(&rtts(&net.pod, server, 50));
    let engine = NfqueueEngine::new();

    // From: queued in the pod's own namespace.
    let applied = engine
        .apply(
            &tag(3),
            &net,
            &latency("30ms", None, Direction::From),
            &later(),
            POD,
        )
        .unwrap();
    assert_eq!(applied.queues.len(), 1);
    assert_eq!(applied.queues[0].side, Side::Pod);
    let added = median_ms(&rtts(&net.pod, server, 100)) - before;
    assert_delay(added, 30.0, "from");
    assert_eq!(tables(&node.pods[0].ns), vec![tag(3)]);
    assert!(tables(&node.host).is_empty());

    // Both: the same injection changed in place; each way is delayed.
    let applied = engine
        .apply(
            &tag(3),
            &net,
            &latency("30ms", None, Direction::Both),
            &later(),
            POD,
        )
        .unwrap();
    assert_eq!(applied.queues.len(), 2);
    let added = median_ms(&rtts(&net.pod, server, 100)) - before;
    assert_delay(added, 60.0, "both");

    // To: the pod side goes away.
    engine
        .apply(
            &tag(3),
            &net,
            &latency("30ms", None, Direction::To),
            &later(),
            POD,
        )
        .unwrap();
    assert!(tables(&node.pods[0].ns).is_empty());
    let added = median_ms(&rtts(&net.pod, server, 100)) - before;
    assert_delay(added, 30.0, "to");
    assert!(engine.remove(&tag(3), &net).unwrap());
}

#[test]
fn loss_drops_about_the_requested_share() {
    if !root_or_skip("agent_nfqueue::loss_drops_about_the_requested_share") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let dest = addr(node.pods[1].ip, ECHO_PORT);
    let sink = UdpSink::start(&node.pods[1].ns.netns().unwrap(), dest).unwrap();
    // Resolve ARP before the count, so no datagram waits on it.
    udp_send(&net.pod, dest, 5, Duration::from_millis(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let warmup = sink.received();

    let engine = NfqueueEngine::new();
    let fault = NetworkFault {
        loss: Some(LossFault {
            percent: 20.0,
            correlation: None,
            direction: Direction::To,
            to: None,
        }),
        ..NetworkFault::default()
    };
    engine.apply(&tag(4), &net, &fault, &later(), POD).unwrap();
    let sent = 1000;
    udp_send(&net.pod, dest, sent, Duration::from_micros(500)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let received = sink.received() - warmup;
    eprintln!("20% loss: {received} of {sent} arrived");
    // Binomial(1000, 0.8): mean 800, sd 12.6; ±6 sd.
    assert!(
        (724..=876).contains(&received),
        "{received} of {sent} datagrams arrived at 20% loss"
    );
    let stats = engine.stats(&tag(4)).unwrap();
    let lost = sent as u64 - received;
    // Other packets of the pod (IPv6 neighbour discovery) may be dropped too.
    assert!(
        stats.dropped >= lost && stats.dropped <= lost + 10,
        "{stats:?}, {lost} lost"
    );
    assert_eq!(stats.delayed, 0);
    engine.remove(&tag(4), &net).unwrap();
}

#[test]
fn only_traffic_to_the_peers_and_ports_is_delayed() {
    if !root_or_skip("agent_nfqueue::only_traffic_to_the_peers_and_ports_is_delayed") {
        return;
    }
    let node = TestNode::new(3).unwrap();
    let net = pod_net(&node, 0);
    let peer = addr(node.pods[1].ip, ECHO_PORT);
    let peer_other_port = addr(node.pods[1].ip, OTHER_PORT);
    let non_peer = addr(node.pods[2].ip, ECHO_PORT);
    let _echo1 = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), peer).unwrap();
    let _echo2 = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), peer_other_port).unwrap();
    let _echo3 = UdpEcho::start(&node.pods[2].ns.netns().unwrap(), non_peer).unwrap();
    let before = median_ms(&rtts(&net.pod, peer, 50));

    let engine = NfqueueEngine::new();
    let mut fault = latency("40ms", None, Direction::To);
    fault.peer_cidrs = vec![format!("{}/32", node.pods[1].ip)];
    fault.ports = vec![i32::from(ECHO_PORT)];
    engine.apply(&tag(5), &net, &fault, &later(), POD).unwrap();

    let to_peer = median_ms(&rtts(&net.pod, peer, 100)) - before;
    assert_delay(to_peer, 40.0, "peer");
    let other_port = median_ms(&rtts(&net.pod, peer_other_port, 100)) - before;
    assert!(
        other_port < 10.0,
        "another port of the peer: {other_port:.2} ms"
    );
    let to_non_peer = median_ms(&rtts(&net.pod, non_peer, 100)) - before;
    assert!(to_non_peer < 10.0, "a non-peer: {to_non_peer:.2} ms");
    engine.remove(&tag(5), &net).unwrap();
}

#[test]
fn traffic_flows_undelayed_without_a_worker_and_a_new_engine_takes_the_rules_over() {
    if !root_or_skip(
        "agent_nfqueue::traffic_flows_undelayed_without_a_worker_and_a_new_engine_takes_the_rules_over",
    ) {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let server = addr(node.pods[1].ip, ECHO_PORT);
    let _echo = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), server).unwrap();
    let before = median_ms(&rtts(&net.pod, server, 50));
    let fault = latency("50ms", None, Direction::Both);

    let first = NfqueueEngine::new();
    let applied = first.apply(&tag(6), &net, &fault, &later(), POD).unwrap();
    let queues: Vec<u16> = applied.queues.iter().map(|q| q.queue).collect();
    let added = median_ms(&rtts(&net.pod, server, 50)) - before;
    assert_delay(added, 100.0, "first engine");

    // The agent dies: its workers stop, its rules stay. Nothing is queued any more.
    drop(first);
    assert_eq!(tables(&node.host), vec![tag(6)]);
    assert_eq!(tables(&node.pods[0].ns), vec![tag(6)]);
    let answered = rtts(&net.pod, server, 100);
    let added = median_ms(&answered) - before;
    assert!(added < 10.0, "without a worker: added {added:.2} ms");

    // A new agent applies the same injection: same queues (read back from the rules, which it
    // rewrites with the time left), delayed again.
    let second = NfqueueEngine::new();
    let applied = second.apply(&tag(6), &net, &fault, &later(), POD).unwrap();
    assert!(applied.recovered);
    assert_eq!(
        applied.queues.iter().map(|q| q.queue).collect::<Vec<_>>(),
        queues
    );
    let added = median_ms(&rtts(&net.pod, server, 50)) - before;
    assert_delay(added, 100.0, "after recovery");
    assert!(second.remove(&tag(6), &net).unwrap());
}

#[test]
fn packets_beyond_a_full_queue_bypass_and_are_counted() {
    if !root_or_skip("agent_nfqueue::packets_beyond_a_full_queue_bypass_and_are_counted") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let dest = addr(node.pods[1].ip, ECHO_PORT);
    let sink = UdpSink::start(&node.pods[1].ns.netns().unwrap(), dest).unwrap();
    udp_send(&net.pod, dest, 5, Duration::from_millis(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let warmup = sink.received();

    // Room for 20 packets, each held 300 ms: a burst of 200 mostly bypasses.
    let engine = NfqueueEngine::new().with_max_queue_len(20);
    engine
        .apply(
            &tag(7),
            &net,
            &latency("300ms", None, Direction::To),
            &later(),
            POD,
        )
        .unwrap();
    udp_send(&net.pod, dest, 200, Duration::from_micros(200)).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // Fail-open: nothing is lost.
    assert_eq!(sink.received() - warmup, 200);
    let stats = engine.stats(&tag(7)).unwrap();
    eprintln!("queue of 20, burst of 200: {stats:?}");
    assert!(stats.delayed >= 20 && stats.delayed < 100, "{stats:?}");
    assert!(stats.bypassed >= 100, "{stats:?}");
    let total = stats.delayed + stats.bypassed;
    assert!((200..=210).contains(&total), "{stats:?}");
    engine.remove(&tag(7), &net).unwrap();
}

#[test]
fn applying_twice_keeps_one_set_of_rules_and_remove_leaves_none() {
    if !root_or_skip("agent_nfqueue::applying_twice_keeps_one_set_of_rules_and_remove_leaves_none")
    {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let engine = NfqueueEngine::new();
    let mut fault = latency("10ms", None, Direction::Both);
    fault.peer_cidrs = vec!["10.77.0.0/24".into(), "fd00::/8".into()];
    fault.ports = vec![80, 443];

    let first = engine.apply(&tag(8), &net, &fault, &later(), POD).unwrap();
    assert!(first.rules_written);
    let second = engine.apply(&tag(8), &net, &fault, &later(), POD).unwrap();
    assert_eq!(first.queues, second.queues);
    for ns in [&node.host, &node.pods[0].ns] {
        let text = ruleset(ns);
        // One table per family, no iptables chain.
        assert_eq!(text.matches("table ip faultline_").count(), 1, "{text}");
        assert_eq!(text.matches("table ip6 faultline_").count(), 1, "{text}");
        assert_eq!(
            text.matches("xt target \"NFQUEUE\"").count() + text.matches("queue num").count(),
            2,
            "{text}"
        );
        assert!(text.contains("bypass"), "{text}");
        assert!(!saved(ns).contains("FL-"));
        assert_eq!(tables(ns), vec![tag(8)]);
    }
    assert_eq!(engine.active(), vec![tag(8)]);

    // A different scope rewrites in place, still once.
    fault.ports = vec![8080];
    assert!(
        engine
            .apply(&tag(8), &net, &fault, &later(), POD)
            .unwrap()
            .rules_written
    );
    let text = ruleset(&node.host);
    // The ports set alone: the table's comment carries a time whose milliseconds may be 443.
    let ports = text
        .split("set ports {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default();
    assert!(ports.contains("8080"), "{text}");
    assert!(!ports.contains("443"), "{text}");
    assert_eq!(text.matches("table ip faultline_").count(), 1, "{text}");

    assert!(engine.remove(&tag(8), &net).unwrap());
    for ns in [&node.host, &node.pods[0].ns] {
        assert!(tables(ns).is_empty(), "{}", ruleset(ns));
    }
    assert!(engine.stats(&tag(8)).is_none());
    assert!(engine.active().is_empty());
    assert!(!engine.remove(&tag(8), &net).unwrap());
}

/// A new engine never binds the queues that a table of a dead one names (their workers are
/// gone, the queues unbound, and packets still go to them until an agent adopts the table):
/// known from the table's comment, or, for an older agent's table that does not say, from its
/// rules. The tags share their first eight hex digits, from which both start their search.
#[test]
fn a_new_engine_keeps_off_the_queues_a_dead_engines_tables_name() {
    if !root_or_skip("agent_nfqueue::a_new_engine_keeps_off_the_queues_a_dead_engines_tables_name")
    {
        return;
    }
    let node = TestNode::new(3).unwrap();
    let same_start = |n: u8| {
        InjectionTag::from_uid(&format!("5eed5eed-{n:02x}1d-4c55-9a0e-2b6f8d4e1a37")).unwrap()
    };
    let egress = latency("10ms", None, Direction::To);
    let node_queues = |applied: &nfqueue::NfqueueApplied| -> std::ops::Range<u16> {
        let q = applied
            .queues
            .iter()
            .find(|q| q.side == Side::Node)
            .expect("a node side");
        q.queue..q.queue + q.queues
    };
    let overlaps =
        |a: &std::ops::Range<u16>, b: &std::ops::Range<u16>| a.start < b.end && b.start < a.end;

    let dead = NfqueueEngine::new().with_steering(Steering::Nftables);
    let left = dead
        .apply(&same_start(1), &pod_net(&node, 0), &egress, &later(), POD)
        .unwrap();
    let left = node_queues(&left);
    drop(dead);
    assert_eq!(tables(&node.host), vec![same_start(1)]);

    // Said by the comment.
    let engine = NfqueueEngine::new().with_steering(Steering::Nftables);
    let taken = engine
        .apply(&same_start(2), &pod_net(&node, 1), &egress, &later(), POD)
        .unwrap();
    let taken = node_queues(&taken);
    assert!(!overlaps(&left, &taken), "{left:?} and {taken:?}");

    // Not said: the dead engine's tables rewritten as an older agent wrote them, their queues
    // in their rules only.
    let host = node.host.netns().unwrap();
    let families: Vec<AddrFamily> = nft::owned_tables(&host)
        .unwrap()
        .into_iter()
        .filter(|t| t.tag == same_start(1))
        .map(|t| match t.family {
            NftFamily::Ip6 => AddrFamily::V6,
            _ => AddrFamily::V4,
        })
        .collect();
    assert!(!families.is_empty());
    let pod = node.pods[0].ns.netns().unwrap();
    let (port, _) = nfqueue::hostveth::host_port(&pod, &host).unwrap();
    let comment = nft::Comment::new(POD, &later(), Some(port.veth()));
    assert_eq!(comment.queues, None);
    let older = nfqueue::steer::tables(
        &same_start(1),
        &nfqueue::steer::Entry::Node(port),
        &faultline::agent::scope::Scope::default(),
        (left.start, left.end - left.start),
        Duration::from_secs(600),
        &comment,
        &families,
    );
    nft::replace(&host, &older).unwrap();
    assert!(
        nft::owned_tables(&host)
            .unwrap()
            .iter()
            .filter(|t| t.tag == same_start(1))
            .all(|t| t.comment.as_ref().is_some_and(|c| c.queues.is_none()))
    );
    let third = engine
        .apply(&same_start(3), &pod_net(&node, 2), &egress, &later(), POD)
        .unwrap();
    let third = node_queues(&third);
    assert!(!overlaps(&left, &third), "{left:?} and {third:?}");
    assert!(!overlaps(&taken, &third), "{taken:?} and {third:?}");

    for (n, pod) in [(2, 1), (3, 2)] {
        assert!(engine.remove(&same_start(n), &pod_net(&node, pod)).unwrap());
    }
    assert!(
        NfqueueEngine::new()
            .remove(&same_start(1), &pod_net(&node, 0))
            .unwrap()
    );
}

/// `nft list ruleset` of a test namespace.
fn ruleset(ns: &TestNs) -> String {
    String::from_utf8_lossy(&ns.exec("nft", &["list", "ruleset"]).unwrap().stdout).into_owned()
}

#[test]
fn two_latencies_on_the_same_traffic_add_up() {
    if !root_or_skip("agent_nfqueue::two_latencies_on_the_same_traffic_add_up") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let server = addr(node.pods[1].ip, ECHO_PORT);
    let _echo = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), server).unwrap();
    let before = median_ms(&rtts(&net.pod, server, 50));
    let engine = NfqueueEngine::new();
    // Two experiments on the same pod and traffic: each its own table, base chain and queues.
    engine
        .apply(
            &tag(10),
            &net,
            &latency("20ms", None, Direction::To),
            &later(),
            POD,
        )
        .unwrap();
    engine
        .apply(
            &tag(11),
            &net,
            &latency("30ms", None, Direction::To),
            &later(),
            POD,
        )
        .unwrap();
    let added = median_ms(&rtts(&net.pod, server, 100)) - before;
    eprintln!("20 ms + 30 ms on the same traffic: added {added:.2} ms");
    assert_delay(added, 50.0, "20 ms + 30 ms");
    // Each revert takes away only its own delay.
    assert!(engine.remove(&tag(10), &net).unwrap());
    let added = median_ms(&rtts(&net.pod, server, 100)) - before;
    assert_delay(added, 30.0, "30 ms left after the 20 ms revert");
    assert_eq!(tables(&node.host), vec![tag(11)]);
    assert!(engine.remove(&tag(11), &net).unwrap());
}

/// Round trips every 10 ms for `span`, as (time since the first, RTT or lost).
fn rtt_series(
    client: &Netns,
    server: SocketAddr,
    span: Duration,
) -> Vec<(Duration, Option<Duration>)> {
    let count = (span.as_millis() / 10) as usize;
    udp_rtts(
        client,
        server,
        count,
        Duration::from_millis(10),
        Duration::from_secs(1),
    )
    .unwrap()
    .into_iter()
    .enumerate()
    .map(|(i, rtt)| (Duration::from_millis(10 * i as u64), rtt))
    .collect()
}

/// After the deadline, the first moment from which no round trip is lost or delayed by more
/// than half the fault's `delay_ms` over the baseline (less is scheduling noise: on a loaded
/// 2-core CI machine it reaches tens of milliseconds).
fn recovered_after(
    series: &[(Duration, Option<Duration>)],
    started: chrono::DateTime<Utc>,
    deadline: &Deadline,
    baseline_ms: f64,
    delay_ms: f64,
) -> f64 {
    let last_bad = series
        .iter()
        .filter(|(_, rtt)| rtt.is_none_or(|r| ms(r) > baseline_ms + delay_ms / 2.0))
        .map(|(at, _)| *at)
        .max()
        .unwrap_or_default();
    let last_bad_at = started + TimeDelta::from_std(last_bad).unwrap();
    (last_bad_at - deadline.expires_at).num_milliseconds() as f64 / 1000.0
}

#[test]
fn queueing_stops_at_the_deadline_while_the_workers_still_run() {
    if !root_or_skip("agent_nfqueue::queueing_stops_at_the_deadline_while_the_workers_still_run") {
        return;
    }
    for steering in [Steering::Nftables, Steering::Iptables] {
        let node = TestNode::new(2).unwrap();
        let net = pod_net(&node, 0);
        let server = addr(node.pods[1].ip, ECHO_PORT);
        let _echo = UdpEcho::start(&node.pods[1].ns.netns().unwrap(), server).unwrap();
        let before = median_ms(&rtts(&net.pod, server, 50));
        // A worker that is alive but would delay forever stands for a stuck agent: only the
        // kernel's deadline can end this.
        let engine = NfqueueEngine::new().with_steering(steering);
        let deadline = Deadline::new(Utc::now() + TimeDelta::seconds(3));
        engine
            .apply(
                &tag(12),
                &net,
                &latency("100ms", None, Direction::To),
                &deadline,
                POD,
            )
            .unwrap();
        let started = Utc::now();
        let series = rtt_series(&net.pod, server, Duration::from_secs(6));
        let during: Vec<f64> = series
            .iter()
            .filter(|(at, _)| {
                started + TimeDelta::from_std(*at).unwrap()
                    < deadline.expires_at - TimeDelta::milliseconds(300)
            })
            .filter_map(|(_, rtt)| rtt.map(ms))
            .collect();
        let mut sorted = during.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2] - before;
        assert_delay(median, 100.0, &format!("{steering:?} before the deadline"));
        let late = recovered_after(&series, started, &deadline, before, 100.0);
        eprintln!("{steering:?}: traffic back to baseline {late:+.3} s after the deadline");
        // nftables: milliseconds; the iptables `time` match: within the second.
        assert!(
            late < 1.0,
            "{steering:?}: still delayed {late:.3} s after the deadline"
        );
        assert!(engine.stats(&tag(12)).is_some(), "the workers still run");
        engine.remove(&tag(12), &net).unwrap();
        assert!(tables(&node.host).is_empty());
        assert!(!saved(&node.host).contains("FL-"));
    }
}

#[test]
fn node_side_chains_of_another_agents_pods_are_not_this_agents_orphans() {
    if !root_or_skip(
        "agent_nfqueue::node_side_chains_of_another_agents_pods_are_not_this_agents_orphans",
    ) {
        return;
    }
    // A node namespace shared by two agents (several sandboxes on one machine): one veth of a
    // pod of ours, one of someone else's, and one whose pod is gone.
    let host = TestNs::new("nfqown").unwrap();
    for ifname in ["fl-ours", "fl-theirs"] {
        let peer = format!("{ifname}-p");
        host.ip(&["link", "add", ifname, "type", "veth", "peer", "name", &peer])
            .unwrap();
    }
    let mut script = String::from("*mangle\n");
    for n in 1u8..=3 {
        script.push_str(&format!(":{} - [0:0]\n", tag(n).iptables_chain()));
    }
    for (n, ifname) in [(1u8, "fl-ours"), (2, "fl-theirs"), (3, "fl-gone")] {
        let chain = tag(n).iptables_chain();
        script.push_str(&format!(
            "-A PREROUTING -m physdev --physdev-in {ifname} -j {chain}\n-A {chain} -j NFQUEUE --queue-num {n} --queue-bypass\n"
        ));
    }
    script.push_str("COMMIT\n");
    host.netns()
        .unwrap()
        .command("iptables-restore", &["--noflush"], Some(&script))
        .unwrap();

    // And the same as nftables tables, whose comment names the port.
    for (n, ifname) in [(4u8, "fl-ours"), (5, "fl-theirs"), (6, "fl-gone")] {
        host.exec(
            "nft",
            &[
                "add",
                "table",
                "ip",
                &tag(n).nft_table(),
                "{",
                "comment",
                &format!("\"faultline pod=p until=2030-01-01T00:00:00.000Z port={ifname}\""),
                ";",
                "}",
            ],
        )
        .unwrap();
    }
    let ours = std::collections::BTreeSet::from(["fl-ours".to_string()]);
    let found = nfqueue::owned_on_node(&host.netns().unwrap(), &ours).unwrap();
    assert_eq!(found, [tag(1), tag(3), tag(4), tag(6)]);
    // Everything is faultline's, whoever runs it.
    assert_eq!(nfqueue::owned(&host.netns().unwrap()).unwrap().len(), 3);
}

/// A worker stopped while it holds a packet for a minute releases it and lets go of its
/// queue at once: the agent's one release thread keeps no queue alive for an alarm that will
/// not fire for a minute, so a new engine (an agent restarted) binds the same queue again.
#[test]
fn a_stopped_worker_lets_go_of_its_queue_while_a_long_delay_is_pending() {
    if !root_or_skip(
        "agent_nfqueue::a_stopped_worker_lets_go_of_its_queue_while_a_long_delay_is_pending",
    ) {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let net = pod_net(&node, 0);
    let server = addr(node.pods[1].ip, ECHO_PORT);
    let sink = UdpSink::start(&node.pods[1].ns.netns().unwrap(), server).unwrap();
    let fault = latency("1m", None, Direction::To);

    let first = NfqueueEngine::new();
    let applied = first.apply(&tag(12), &net, &fault, &later(), POD).unwrap();
    let queues: Vec<u16> = applied.queues.iter().map(|q| q.queue).collect();
    udp_send(&net.pod, server, 3, Duration::from_millis(10)).unwrap();
    let held = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        first.stats(&tag(12)).is_some_and(|s| s.delayed >= 3)
    });
    assert!(held, "{:?}", first.stats(&tag(12)));
    assert_eq!(sink.received(), 0, "held for a minute");

    // The agent stops (its rules stay): the held packets go through now.
    drop(first);
    let released = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        sink.received() >= 3
    });
    assert!(released, "{} of 3 packets released", sink.received());

    // A new engine takes the rules over with the same queue numbers: the first one's sockets
    // are closed (off the stop's path: allow them a moment), not held until the alarm.
    let second = NfqueueEngine::new();
    let mut taken = None;
    for _ in 0..50 {
        match second.apply(&tag(12), &net, &fault, &later(), POD) {
            Ok(applied) => {
                taken = Some(applied);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let taken = taken.expect("the first engine's queues were let go of within 5 s");
    assert!(taken.recovered);
    assert_eq!(
        taken.queues.iter().map(|q| q.queue).collect::<Vec<_>>(),
        queues
    );
    assert!(second.remove(&tag(12), &net).unwrap());
}
