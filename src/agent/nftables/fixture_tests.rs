//! Our batches against the ones `nft -f` (and iptables-nft) sent for the same rulesets,
//! captured by `tests/fixtures/nft/capture.sh`: byte for byte, ignoring `nlmsg_seq`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::expr::{self, AddrFamily, End, Expr, Family, Match, Verdict};
use super::table::{self, Elements, Hook, HookPoint, Net, Table};
use super::wire::{self, Msg};

const TABLE: &str = "faultline_0123456789abcdef01234567";

struct Fixture {
    name: String,
    command: String,
    bytes: Vec<u8>,
}

fn load(name: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/nft/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut command = String::new();
    let mut bytes = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(c) = comment.trim().strip_prefix("Netlink batch sent by:") {
                command = c.trim().to_string();
            }
            continue;
        }
        for byte in line.split_whitespace() {
            bytes.push(u8::from_str_radix(byte, 16).unwrap_or_else(|e| panic!("{path}: {e}")));
        }
    }
    assert!(!bytes.is_empty(), "{path} holds no batch");
    Fixture {
        name: name.to_string(),
        command,
        bytes,
    }
}

/// Zeroes `nlmsg_seq` of every message of a batch.
fn without_seq(batch: &[u8]) -> Vec<u8> {
    let mut out = batch.to_vec();
    let mut at = 0;
    while at + 16 <= out.len() {
        let len = u32::from_ne_bytes(out[at..at + 4].try_into().unwrap()) as usize;
        out[at + 8..at + 12].fill(0);
        if len < 16 {
            break;
        }
        at += len.next_multiple_of(4);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|row| {
            row.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n      ")
}

fn assert_same_batch(fixture: &Fixture, ours: &[Msg]) {
    let (ours, _) = wire::encode_batch(ours, 0);
    let (ours, theirs) = (without_seq(&ours), without_seq(&fixture.bytes));
    if ours != theirs {
        let first = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "our batch differs from nft's in fixture {} at byte {first} (ours {} bytes, nft's {})\n\
             command: {}\nours: {}\nnft's: {}",
            fixture.name,
            ours.len(),
            theirs.len(),
            fixture.command,
            hex(&ours),
            hex(&theirs)
        );
    }
}

fn v4(addr: &str, prefix: u8) -> Net<Ipv4Addr> {
    Net {
        addr: addr.parse().unwrap(),
        prefix,
    }
}

fn v6(addr: &str, prefix: u8) -> Net<Ipv6Addr> {
    Net {
        addr: addr.parse().unwrap(),
        prefix,
    }
}

fn netdev_hook(point: HookPoint, device: &str) -> Option<Hook> {
    Some(Hook {
        point,
        priority: -300,
        device: Some(device.into()),
    })
}

#[test]
fn a_netdev_partition_with_peers_and_ports_is_the_batch_nft_sends() {
    let mut t = Table::new(
        Family::Netdev,
        TABLE,
        Some(
            "faultline pod=0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37 until=2026-01-01T00:00:00Z".into(),
        ),
    );
    let egress_drop = t.chain("egress_drop", None);
    let ingress_drop = t.chain("ingress_drop", None);
    let egress = t.chain("egress0", netdev_hook(HookPoint::Egress, "eth0"));
    let ingress = t.chain("ingress0", netdev_hook(HookPoint::Ingress, "eth0"));
    let gate = t.set(
        "gate",
        Elements::Interfaces(vec![("eth0".into(), Duration::from_millis(5000))]),
    );
    let peers4 = t.set(
        "peers4",
        Elements::Ipv4(vec![v4("10.0.0.5", 32), v4("10.1.0.0", 24)]),
    );
    let peers6 = t.set("peers6", Elements::Ipv6(vec![v6("fd00::", 64)]));
    let ports = t.set("ports", Elements::Ports(vec![8080, 5432]));
    let l4 = t.set("l4", Elements::Protocols(vec![17, 6]));
    let port = |end| Match::Ports {
        end,
        l4: l4.clone(),
        ports: ports.clone(),
    };
    for (chain, end) in [(egress_drop, End::Destination), (ingress_drop, End::Source)] {
        for (family, set) in [(AddrFamily::V4, &peers4), (AddrFamily::V6, &peers6)] {
            let peer = Match::Address {
                family,
                end,
                set: set.clone(),
            };
            // Requests to the peers' ports, and replies from them.
            let (first, second) = match end {
                End::Destination => (End::Destination, End::Source),
                End::Source => (End::Source, End::Destination),
            };
            for port_end in [first, second] {
                t.rule(
                    chain,
                    &[peer.clone(), port(port_end)],
                    &[],
                    Some(Verdict::Drop),
                );
            }
        }
    }
    t.rule(
        egress,
        &[Match::Interface {
            outgoing: true,
            set: gate.clone(),
        }],
        &[],
        Some(Verdict::Jump("egress_drop".into())),
    );
    t.rule(
        ingress,
        &[Match::Interface {
            outgoing: false,
            set: gate,
        }],
        &[],
        Some(Verdict::Jump("ingress_drop".into())),
    );
    assert_same_batch(&load("partition_netdev"), &t.replace());
}

#[test]
fn the_inet_fallback_partition_is_the_batch_nft_sends() {
    let mut t = Table::new(
        Family::Inet,
        TABLE,
        Some("faultline pod=p1 until=2026-01-01T00:00:00Z".into()),
    );
    let egress_drop = t.chain("egress_drop", None);
    let ingress_drop = t.chain("ingress_drop", None);
    let hook = |point| {
        Some(Hook {
            point,
            priority: -300,
            device: None,
        })
    };
    let egress = t.chain("egress", hook(HookPoint::Output));
    let ingress = t.chain("ingress", hook(HookPoint::Prerouting));
    let two_minutes = Duration::from_secs(120);
    let gate = t.set(
        "gate",
        Elements::Interfaces(vec![
            ("eth0".into(), two_minutes),
            ("eth1".into(), two_minutes),
        ]),
    );
    let peers = t.set("peers4", Elements::Ipv4(vec![v4("10.77.0.3", 32)]));
    for (chain, end) in [(egress_drop, End::Destination), (ingress_drop, End::Source)] {
        t.rule(
            chain,
            &[Match::Address {
                family: AddrFamily::V4,
                end,
                set: peers.clone(),
            }],
            &[],
            Some(Verdict::Drop),
        );
    }
    for (chain, outgoing, target) in [
        (egress, true, "egress_drop"),
        (ingress, false, "ingress_drop"),
    ] {
        t.rule(
            chain,
            &[Match::Interface {
                outgoing,
                set: gate.clone(),
            }],
            &[],
            Some(Verdict::Jump(target.into())),
        );
    }
    assert_same_batch(&load("partition_inet"), &t.replace());
}

fn steering_table(device: &str, timeout: Duration) -> (Table, usize, super::SetRef) {
    let mut t = Table::new(
        Family::Netdev,
        TABLE,
        Some("faultline pod=p1 until=2026-01-01T00:00:00Z".into()),
    );
    let steer = t.chain("steer", None);
    let egress = t.chain("egress0", netdev_hook(HookPoint::Egress, device));
    let gate = t.set("gate", Elements::Interfaces(vec![(device.into(), timeout)]));
    t.rule(
        egress,
        &[Match::Interface {
            outgoing: true,
            set: gate.clone(),
        }],
        &[],
        Some(Verdict::Jump("steer".into())),
    );
    (t, steer, gate)
}

#[test]
fn steering_into_the_capped_class_is_the_batch_nft_sends() {
    // Unscoped: every packet while the gate is open.
    let (mut t, steer, _) = steering_table("eth0", Duration::from_secs(1));
    t.rule(steer, &[], &expr::set_priority(0xfa17_0002), None);
    // nft sends the steering rule before the gate's: rules go in chain order.
    let mut ours = t.replace();
    reorder_rules(&mut ours, &["steer", "egress0"]);
    assert_same_batch(&load("classify_unscoped"), &ours);

    // Scoped to a peer and a port.
    let mut t = Table::new(
        Family::Netdev,
        TABLE,
        Some("faultline pod=p1 until=2026-01-01T00:00:00Z".into()),
    );
    let steer = t.chain("steer", None);
    let egress = t.chain("egress0", netdev_hook(HookPoint::Egress, "eth1"));
    let gate = t.set(
        "gate",
        Elements::Interfaces(vec![("eth1".into(), Duration::from_secs(30))]),
    );
    let peers = t.set("peers4", Elements::Ipv4(vec![v4("10.77.0.3", 32)]));
    let ports = t.set("ports", Elements::Ports(vec![443]));
    let l4 = t.set("l4", Elements::Protocols(vec![6, 17]));
    t.rule(
        steer,
        &[
            Match::Address {
                family: AddrFamily::V4,
                end: End::Destination,
                set: peers,
            },
            Match::Ports {
                end: End::Destination,
                l4,
                ports,
            },
        ],
        &expr::set_priority(0xfa17_0002),
        None,
    );
    t.rule(
        egress,
        &[Match::Interface {
            outgoing: true,
            set: gate,
        }],
        &[],
        Some(Verdict::Jump("steer".into())),
    );
    assert_same_batch(&load("classify_netdev"), &t.replace());

    // Ports only: no protocol dependency in the netdev family.
    let mut t = Table::new(
        Family::Netdev,
        TABLE,
        Some("faultline pod=p1 until=2026-01-01T00:00:00Z".into()),
    );
    let steer = t.chain("steer", None);
    let egress = t.chain("egress0", netdev_hook(HookPoint::Egress, "eth0"));
    let gate = t.set(
        "gate",
        Elements::Interfaces(vec![("eth0".into(), Duration::from_secs(1))]),
    );
    let ports = t.set("ports", Elements::Ports(vec![443, 80]));
    let l4 = t.set("l4", Elements::Protocols(vec![6, 17]));
    t.rule(
        steer,
        &[Match::Ports {
            end: End::Destination,
            l4,
            ports,
        }],
        &expr::set_priority(0xfa17_0002),
        None,
    );
    t.rule(
        egress,
        &[Match::Interface {
            outgoing: true,
            set: gate,
        }],
        &[],
        Some(Verdict::Jump("steer".into())),
    );
    assert_same_batch(&load("classify_ports_only"), &t.replace());
}

/// Rules are emitted chain by chain already; this checks the order is the one asked for.
fn reorder_rules(batch: &mut [Msg], chains: &[&str]) {
    let rules: Vec<String> = batch
        .iter()
        .filter(|m| m.msg_type() == wire::NFT_MSG_NEWRULE)
        .map(|m| {
            let bytes = m.encode(0);
            wire::attributes(&bytes[20..])
                .nth(1)
                .map(|(_, p)| wire::as_str(p))
                .unwrap()
        })
        .collect();
    assert_eq!(rules, chains);
}

#[test]
fn a_queueing_table_with_a_placeholder_verdict_is_the_batch_nft_sends() {
    // nft cannot write the NFQUEUE target: the fixture has `counter drop` where our table has
    // `counter` + the target, which the next test pins against iptables-nft.
    let mut t = Table::new(
        Family::Ip,
        TABLE,
        Some("faultline pod=p1 until=2026-01-01T00:00:00Z port=veth3".into()),
    );
    let enqueue = t.chain("enqueue", None);
    let pre = t.chain(
        "pre",
        Some(Hook {
            point: HookPoint::Prerouting,
            priority: -90,
            device: None,
        }),
    );
    let gate = t.set(
        "gate",
        Elements::Interfaces(vec![("br0".into(), Duration::from_secs(60))]),
    );
    let peers = t.set("peers4", Elements::Ipv4(vec![v4("10.0.0.0", 8)]));
    t.rule(
        enqueue,
        &[Match::Address {
            family: AddrFamily::V4,
            end: End::Destination,
            set: peers,
        }],
        &[Expr::Counter],
        Some(Verdict::Drop),
    );
    t.rule(
        pre,
        &[Match::Interface {
            outgoing: false,
            set: gate,
        }],
        &[],
        Some(Verdict::Jump("enqueue".into())),
    );
    assert_same_batch(&load("queue_ip"), &t.replace());

    let mut t = Table::new(
        Family::Ip6,
        TABLE,
        Some("faultline pod=p1 until=2026-01-01T00:00:00Z".into()),
    );
    let enqueue = t.chain("enqueue", None);
    let pre = t.chain(
        "pre",
        Some(Hook {
            point: HookPoint::Prerouting,
            priority: -90,
            device: None,
        }),
    );
    let gate = t.set(
        "gate",
        Elements::Interfaces(vec![("eth0".into(), Duration::from_secs(60))]),
    );
    let ports = t.set("ports", Elements::Ports(vec![53]));
    let l4 = t.set("l4", Elements::Protocols(vec![6, 17]));
    t.rule(
        enqueue,
        &[Match::Ports {
            end: End::Source,
            l4,
            ports,
        }],
        &[Expr::Counter],
        Some(Verdict::Drop),
    );
    t.rule(
        pre,
        &[Match::Interface {
            outgoing: false,
            set: gate,
        }],
        &[],
        Some(Verdict::Jump("enqueue".into())),
    );
    assert_same_batch(&load("queue_ip6_ports"), &t.replace());
}

/// The raw `NFTA_LIST_ELEM` attributes (header included) of the first rule in a batch.
fn captured_expressions(fixture: &Fixture) -> Vec<Vec<u8>> {
    for (kind, _, _, body) in wire::messages(&fixture.bytes) {
        if kind & 0xff != wire::NFT_MSG_NEWRULE || kind >> 8 != wire::NFNL_SUBSYS_NFTABLES {
            continue;
        }
        let list = wire::find(&body[4..], wire::NFTA_RULE_EXPRESSIONS).unwrap();
        let mut out = Vec::new();
        let mut rest = list;
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            out.push(rest[..len].to_vec());
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        return out;
    }
    panic!("no rule in {}", fixture.name);
}

fn encoded(expr: &Expr) -> Vec<u8> {
    let mut msg = Msg::new(0, 0, 0);
    expr.encode(&mut msg);
    msg.encode(0)[20..].to_vec()
}

#[test]
fn the_nfqueue_target_and_physdev_match_are_what_iptables_nft_writes() {
    let fixture = load("xt_physdev_nfqueue");
    let captured = captured_expressions(&fixture);
    let physdev = captured
        .iter()
        .find(|e| e.windows(7).any(|w| w == b"physdev"))
        .unwrap();
    let mut matches = Vec::new();
    Match::PhysdevIn("veth3".into()).expand(Family::Ip, &mut matches);
    assert_eq!(hex(&encoded(&matches[0])), hex(physdev));
    let target = captured.last().unwrap();
    assert_eq!(hex(&encoded(&expr::nfqueue(7, 1, false))), hex(target));

    let fixture = load("xt_nfqueue_balance");
    let target = captured_expressions(&fixture).pop().unwrap();
    assert_eq!(hex(&encoded(&expr::nfqueue(16384, 4, true))), hex(&target));
    assert_eq!(
        expr::nfqueue_numbers(&[0x00, 0x40, 0x04, 0x00, 0x03, 0, 0, 0]),
        Some((16384, 4))
    );
}

#[test]
fn deleting_a_table_is_the_message_nft_sends() {
    assert_same_batch(
        &load("delete_table"),
        &[table::delete_existing(Family::Netdev, TABLE)],
    );
}

#[test]
fn intervals_at_the_edges_of_the_address_space_are_encoded_as_nft_encodes_them() {
    let mut t = Table::new(Family::Ip, TABLE, None);
    t.set("all4", Elements::Ipv4(vec![v4("0.0.0.0", 0)]));
    t.set(
        "edges4",
        Elements::Ipv4(vec![v4("10.0.0.0", 8), v4("255.255.255.0", 24)]),
    );
    t.set("all6", Elements::Ipv6(vec![v6("::", 0)]));
    assert_same_batch(&load("interval_edges"), &t.create());
}

#[test]
fn overlapping_and_adjacent_networks_merge_into_one_interval() {
    // 10.0.0.0/25 and 10.0.0.128/25 are adjacent; 10.0.0.7 lies inside; host bits are cleared.
    let mut merged = Table::new(Family::Ip, TABLE, None);
    merged.set(
        "p",
        Elements::Ipv4(vec![
            v4("10.0.0.200", 25),
            v4("10.0.0.7", 32),
            v4("10.0.0.0", 25),
        ]),
    );
    let mut single = Table::new(Family::Ip, TABLE, None);
    single.set("p", Elements::Ipv4(vec![v4("10.0.0.0", 24)]));
    assert_eq!(merged.create(), single.create());
}
