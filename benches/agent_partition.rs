//! Partition apply + revert time (root only), in one pod namespace and across 100, the agent's
//! way (our own nf_tables netlink from a thread inside the namespace: one transaction per
//! injection, one per revert) side by side with what other tools do (one `nsenter` process per
//! nft command, or per iptables rule), in the same run. Revert included. Prints min / median /
//! max over the rounds and the speedups; asserts nothing.
//!
//! faultline appears twice: back to back (the revert right after the apply reuses the
//! namespace's lingering socket, as a second fault on one pod does), and far apart (each
//! operation on a fresh socket after the last close has finished, as an apply and its revert
//! minutes apart meet the kernel). Back to back on fresh sockets each waited for the previous
//! close's grace period (~15 ms); see `nftables::LINGER`.
//!
//! `FAULTLINE_BENCH_NAMESPACES` (default 100) and `FAULTLINE_BENCH_ROUNDS` (default 30, for the
//! single-namespace rows) change the sizes.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use faultline::agent::deadline::Deadline;
use faultline::agent::netns::Netns;
use faultline::agent::nft::{self, Comment};
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::TestNode;
use faultline::api::{Direction, NetworkFault};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const PEERS: [&str; 2] = ["10.77.0.200/32", "10.77.1.0/24"];
const PORTS: [&str; 2] = ["8080", "5432"];

fn fault() -> NetworkFault {
    NetworkFault {
        partition: Some(Direction::Both),
        peer_cidrs: PEERS.iter().map(|p| p.to_string()).collect(),
        ports: vec![8080, 5432],
        ..Default::default()
    }
}

fn tag() -> InjectionTag {
    InjectionTag::from_uid("0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37").unwrap()
}

fn ours_apply(ns: &Netns) {
    let deadline = Deadline::new(Utc::now() + TimeDelta::minutes(10));
    nft::apply_partition(
        ns,
        &tag(),
        &fault(),
        &deadline,
        &Comment::new("bench-pod", &deadline, None),
    )
    .unwrap();
}

fn ours_revert(ns: &Netns) {
    assert!(nft::remove(ns, &tag()).unwrap());
}

/// Makes the next operation meet the kernel as one minutes after the last would: no lingering
/// socket to reuse, and the last close's wait for a grace period over.
fn far_apart() {
    faultline::agent::nftables::close_lingering_sockets();
    std::thread::sleep(Duration::from_millis(100));
}

fn nsenter(netns: &str, program: &str, args: &[String]) {
    let status = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .arg(program)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "nsenter {program} {args:?}");
}

fn words(text: &str) -> Vec<String> {
    text.split(' ').map(str::to_string).collect()
}

/// One rule per (direction, peer, port, protocol): 16 rules, the same drops as ours.
fn each_rule(mut rule: impl FnMut(&str, &str, &str, &str)) {
    for chain in ["egress", "ingress"] {
        for peer in PEERS {
            for port in PORTS {
                for proto in ["tcp", "udp"] {
                    rule(chain, peer, port, proto);
                }
            }
        }
    }
}

/// What nft-based tools do: one process per nft command, each entering the namespace.
fn nft_per_rule_apply(netns: &str, table: &str) {
    let mut commands = vec![
        format!("add table inet {table}"),
        format!("add chain inet {table} egress {{ type filter hook output priority -300 ; }}"),
        format!("add chain inet {table} ingress {{ type filter hook prerouting priority -300 ; }}"),
    ];
    each_rule(|chain, peer, port, proto| {
        let (addr, which) = if chain == "egress" {
            ("daddr", "dport")
        } else {
            ("saddr", "sport")
        };
        commands.push(format!(
            "add rule inet {table} {chain} ip {addr} {peer} {proto} {which} {port} drop"
        ));
    });
    for command in commands {
        nsenter(netns, "nft", &words(&command));
    }
}

fn nft_per_rule_revert(netns: &str, table: &str) {
    nsenter(netns, "nft", &words(&format!("delete table inet {table}")));
}

/// What iptables-based tools do (Chaos Mesh, Litmus): a chain, its jumps, then one
/// `iptables` process per rule.
fn iptables_per_rule_apply(netns: &str, chain: &str) {
    let mut commands = vec![
        format!("-t raw -N {chain}"),
        format!("-t raw -A PREROUTING -j {chain}"),
        format!("-t raw -A OUTPUT -j {chain}"),
    ];
    each_rule(|direction, peer, port, proto| {
        let (addr, which) = if direction == "egress" {
            ("-d", "--dport")
        } else {
            ("-s", "--sport")
        };
        commands.push(format!(
            "-t raw -A {chain} {addr} {peer} -p {proto} {which} {port} -j DROP"
        ));
    });
    for command in commands {
        nsenter(netns, "iptables", &words(&command));
    }
}

fn iptables_per_rule_revert(netns: &str, chain: &str) {
    for command in [
        format!("-t raw -D PREROUTING -j {chain}"),
        format!("-t raw -D OUTPUT -j {chain}"),
        format!("-t raw -F {chain}"),
        format!("-t raw -X {chain}"),
    ] {
        nsenter(netns, "iptables", &words(&command));
    }
}

/// min / median / max
fn stats(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1],
    )
}

fn fmt(s: (Duration, Duration, Duration)) -> String {
    format!("{:.1?} / {:.1?} / {:.1?}", s.0, s.1, s.2)
}

struct Row {
    approach: &'static str,
    apply: (Duration, Duration, Duration),
    revert: (Duration, Duration, Duration),
    cycle: (Duration, Duration, Duration),
    many_apply: Duration,
    many_revert: Duration,
}

fn one_namespace(
    rounds: usize,
    apply: impl FnMut(),
    revert: impl FnMut(),
) -> [(Duration, Duration, Duration); 3] {
    one_namespace_settled(rounds, || {}, apply, revert)
}

/// [`one_namespace`], calling `settle` (untimed) before each apply and each revert.
fn one_namespace_settled(
    rounds: usize,
    mut settle: impl FnMut(),
    mut apply: impl FnMut(),
    mut revert: impl FnMut(),
) -> [(Duration, Duration, Duration); 3] {
    let (mut a, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        settle();
        let t = Instant::now();
        apply();
        let applied = t.elapsed();
        settle();
        let t = Instant::now();
        revert();
        let reverted = t.elapsed();
        a.push(applied);
        r.push(reverted);
        c.push(applied + reverted);
    }
    [stats(&mut a), stats(&mut r), stats(&mut c)]
}

/// Runs `work` over every namespace with at most `parallel` at once (the agent's bound).
fn across(
    namespaces: &[(Netns, String)],
    parallel: usize,
    work: impl Fn(&Netns, &str) + Sync,
) -> Duration {
    let started = Instant::now();
    let chunk = namespaces.len().div_ceil(parallel.max(1));
    std::thread::scope(|scope| {
        for part in namespaces.chunks(chunk.max(1)) {
            let work = &work;
            scope.spawn(move || {
                for (ns, name) in part {
                    work(ns, name);
                }
            });
        }
    });
    started.elapsed()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED (needs root): agent_partition bench creates network namespaces");
        return;
    }
    let count = env_or("FAULTLINE_BENCH_NAMESPACES", 100);
    let rounds = env_or("FAULTLINE_BENCH_ROUNDS", 30);
    eprintln!("creating {count} pod namespaces...");
    let node = TestNode::new(count).unwrap();
    let namespaces: Vec<(Netns, String)> = node
        .pods
        .iter()
        .map(|p| (p.ns.netns().unwrap(), p.ns.name().to_string()))
        .collect();
    let (first, first_name) = (&namespaces[0].0, namespaces[0].1.clone());
    let table = tag().nft_table();
    let chain = tag().iptables_chain();

    let [apply, revert, cycle] = one_namespace(rounds, || ours_apply(first), || ours_revert(first));
    let ours = Row {
        approach: "faultline back to back: in-process nf_tables netlink, one transaction each way, the namespace's socket reused",
        apply,
        revert,
        cycle,
        many_apply: across(
            &namespaces,
            faultline::agent::runner::PARALLEL_PODS,
            |ns, _| ours_apply(ns),
        ),
        many_revert: across(
            &namespaces,
            faultline::agent::runner::PARALLEL_PODS,
            |ns, _| ours_revert(ns),
        ),
    };
    let [apply, revert, cycle] = one_namespace_settled(
        rounds,
        far_apart,
        || ours_apply(first),
        || ours_revert(first),
    );
    far_apart();
    let many_apply = across(
        &namespaces,
        faultline::agent::runner::PARALLEL_PODS,
        |ns, _| ours_apply(ns),
    );
    far_apart();
    let many_revert = across(
        &namespaces,
        faultline::agent::runner::PARALLEL_PODS,
        |ns, _| ours_revert(ns),
    );
    let ours_far_apart = Row {
        approach: "faultline, each operation far from the last (fresh socket, the last one's close done)",
        apply,
        revert,
        cycle,
        many_apply,
        many_revert,
    };
    let [apply, revert, cycle] = one_namespace(
        rounds,
        || nft_per_rule_apply(&first_name, &table),
        || nft_per_rule_revert(&first_name, &table),
    );
    let nft_rows = Row {
        approach: "nsenter + nft, one process per command",
        apply,
        revert,
        cycle,
        many_apply: across(&namespaces, 1, |_, name| nft_per_rule_apply(name, &table)),
        many_revert: across(&namespaces, 1, |_, name| nft_per_rule_revert(name, &table)),
    };
    let [apply, revert, cycle] = one_namespace(
        rounds,
        || iptables_per_rule_apply(&first_name, &chain),
        || iptables_per_rule_revert(&first_name, &chain),
    );
    let ipt_rows = Row {
        approach: "nsenter + iptables, one process per rule",
        apply,
        revert,
        cycle,
        many_apply: across(&namespaces, 1, |_, name| {
            iptables_per_rule_apply(name, &chain)
        }),
        many_revert: across(&namespaces, 1, |_, name| {
            iptables_per_rule_revert(name, &chain)
        }),
    };

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\n## Partition apply + revert (both directions, 2 peer CIDRs x 2 ports: 16 rules written one by one; nproc={cores}, {rounds} rounds)\n"
    );
    println!(
        "| approach | 1 ns apply min / median / max | 1 ns revert min / median / max | apply + revert min / median / max | {count} ns apply | {count} ns revert |"
    );
    println!("|---|---|---|---|---|---|");
    for row in [&ours, &ours_far_apart, &nft_rows, &ipt_rows] {
        println!(
            "| {} | {} | {} | {} | {:.2?} | {:.2?} |",
            row.approach,
            fmt(row.apply),
            fmt(row.revert),
            fmt(row.cycle),
            row.many_apply,
            row.many_revert
        );
    }
    let ratio = |theirs: Duration, ours: Duration| theirs.as_secs_f64() / ours.as_secs_f64();
    println!(
        "\nspeedup of faultline, apply + revert, median: {:.1}x over nsenter + nft, {:.1}x over nsenter + iptables",
        ratio(nft_rows.cycle.1, ours.cycle.1),
        ratio(ipt_rows.cycle.1, ours.cycle.1)
    );
    println!(
        "speedup of faultline with operations far apart (fresh socket each), apply + revert, median: {:.1}x over nsenter + nft, {:.1}x over nsenter + iptables",
        ratio(nft_rows.cycle.1, ours_far_apart.cycle.1),
        ratio(ipt_rows.cycle.1, ours_far_apart.cycle.1)
    );
    println!(
        "speedup across {count} namespaces (faultline {} at a time, the others one by one), apply + revert: {:.1}x over nft, {:.1}x over iptables",
        faultline::agent::runner::PARALLEL_PODS,
        ratio(
            nft_rows.many_apply + nft_rows.many_revert,
            ours.many_apply + ours.many_revert
        ),
        ratio(
            ipt_rows.many_apply + ipt_rows.many_revert,
            ours.many_apply + ours.many_revert
        )
    );
}
