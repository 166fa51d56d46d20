//! Partition apply + revert time (root only): in one pod namespace, and across 100, with the
//! agent's approach (enter the namespace on a thread, one `nft -f -` transaction per injection)
//! against the approach existing tools take (one `nsenter --net=... nft ...` process per table,
//! chain and rule). Prints a table; asserts nothing.
//!
//! `FAULTLINE_BENCH_NAMESPACES` (default 100) and `FAULTLINE_BENCH_ROUNDS` (default 30, for the
//! single-namespace rows) change the sizes.

use std::process::Command;
use std::time::{Duration, Instant};

use faultline::agent::nft;
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::TestNode;
use faultline::api::{Direction, NetworkFault};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fault() -> NetworkFault {
    NetworkFault {
        partition: Some(Direction::Both),
        peer_cidrs: vec!["10.77.0.200/32".into(), "10.77.1.0/24".into()],
        ports: vec![8080, 5432],
        ..Default::default()
    }
}

fn tag() -> InjectionTag {
    InjectionTag::from_uid("0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37").unwrap()
}

/// What other tools do: one process per nft command, each entering the namespace.
fn per_rule_apply(netns: &str, table: &str) {
    let mut commands: Vec<String> = vec![
        format!("add table inet {table}"),
        format!("add chain inet {table} egress {{ type filter hook output priority -300 ; }}"),
        format!("add chain inet {table} ingress {{ type filter hook prerouting priority -300 ; }}"),
    ];
    for (chain, dir) in [("egress", "daddr"), ("ingress", "saddr")] {
        for peer in ["10.77.0.200/32", "10.77.1.0/24"] {
            for port in ["8080", "5432"] {
                for proto in ["tcp", "udp"] {
                    let which = if chain == "egress" { "dport" } else { "sport" };
                    commands.push(format!(
                        "add rule inet {table} {chain} ip {dir} {peer} {proto} {which} {port} drop"
                    ));
                }
            }
        }
    }
    for command in commands {
        let mut args = vec![format!("--net=/run/netns/{netns}"), "nft".into()];
        args.extend(command.split(' ').map(str::to_string));
        let status = Command::new("nsenter").args(&args).status().unwrap();
        assert!(status.success(), "nsenter nft {command}");
    }
}

fn per_rule_revert(netns: &str, table: &str) {
    let status = Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{netns}"),
            "nft",
            "delete",
            "table",
            "inet",
            table,
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED (needs root): agent_partition bench creates network namespaces");
        return;
    }
    let namespaces = env_or("FAULTLINE_BENCH_NAMESPACES", 100);
    let rounds = env_or("FAULTLINE_BENCH_ROUNDS", 30);
    eprintln!("creating {namespaces} pod namespaces...");
    let node = TestNode::new(namespaces).unwrap();
    let fault = fault();
    let tag = tag();
    let table = tag.nft_table();
    let first = node.pods[0].ns.netns().unwrap();

    let mut ours_apply = Vec::new();
    let mut ours_revert = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        nft::apply_partition(&first, &tag, &fault).unwrap();
        ours_apply.push(t.elapsed());
        let t = Instant::now();
        nft::remove(&first, &tag).unwrap();
        ours_revert.push(t.elapsed());
    }
    let mut theirs_apply = Vec::new();
    let mut theirs_revert = Vec::new();
    let name = node.pods[0].ns.name().to_string();
    for _ in 0..rounds {
        let t = Instant::now();
        per_rule_apply(&name, &table);
        theirs_apply.push(t.elapsed());
        let t = Instant::now();
        per_rule_revert(&name, &table);
        theirs_revert.push(t.elapsed());
    }

    let t = Instant::now();
    for pod in &node.pods {
        nft::apply_partition(&pod.ns.netns().unwrap(), &tag, &fault).unwrap();
    }
    let ours_all_apply = t.elapsed();
    let t = Instant::now();
    for pod in &node.pods {
        nft::remove(&pod.ns.netns().unwrap(), &tag).unwrap();
    }
    let ours_all_revert = t.elapsed();
    let t = Instant::now();
    for pod in &node.pods {
        per_rule_apply(pod.ns.name(), &table);
    }
    let theirs_all_apply = t.elapsed();
    let t = Instant::now();
    for pod in &node.pods {
        per_rule_revert(pod.ns.name(), &table);
    }
    let theirs_all_revert = t.elapsed();

    println!(
        "partition: both directions, 2 peer CIDRs x 2 ports (16 rules when written one by one)"
    );
    println!(
        "| approach | 1 ns apply p50 / p99 | 1 ns revert p50 / p99 | {namespaces} ns apply | {namespaces} ns revert |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| faultline (setns thread, one nft -f transaction) | {:.1?} / {:.1?} | {:.1?} / {:.1?} | {:.2?} | {:.2?} |",
        quantile(&mut ours_apply, 0.5),
        quantile(&mut ours_apply, 0.99),
        quantile(&mut ours_revert, 0.5),
        quantile(&mut ours_revert, 0.99),
        ours_all_apply,
        ours_all_revert
    );
    println!(
        "| nsenter + nft per rule (existing tools) | {:.1?} / {:.1?} | {:.1?} / {:.1?} | {:.2?} | {:.2?} |",
        quantile(&mut theirs_apply, 0.5),
        quantile(&mut theirs_apply, 0.99),
        quantile(&mut theirs_revert, 0.5),
        quantile(&mut theirs_revert, 0.99),
        theirs_all_apply,
        theirs_all_revert
    );
}
