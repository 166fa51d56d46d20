//! Root tests of the agent's Linux kernel: real pods (processes in real pod cgroups and network
//! namespaces), real rules, real traffic. A partition blocks TCP both ways including an
//! established connection and heals exactly; reverts leave `residual` empty; a container
//! restart keeps the fault and its revert; a stray faultline table is removed and a foreign one
//! survives.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use faultline::agent::deadline::Deadline;
use faultline::agent::kernel::{Kernel, Mechanism};
use faultline::agent::linux::LinuxKernel;
use faultline::agent::nft;
use faultline::agent::tag::InjectionTag;
use faultline::agent::testnet::{PodProcess, TestNode, root_or_skip};
use faultline::api::{Direction, LatencyFault, NetworkFault};

fn uid(n: u32) -> String {
    format!("{:08x}-a9e7-4000-8000-{:012x}", std::process::id(), n)
}

/// A tag per test and `n` (the first 24 hex digits of an injection uid).
fn tag(n: u32) -> InjectionTag {
    InjectionTag::from_uid(&format!(
        "{:08x}-{:04x}-4000-8000-000000000000",
        std::process::id(),
        100 + n
    ))
    .unwrap()
}

/// Ten minutes from now: longer than any of these tests.
fn later() -> Deadline {
    Deadline::new(Utc::now() + TimeDelta::minutes(10))
}

fn partition(peer: Ipv4Addr) -> NetworkFault {
    NetworkFault {
        partition: Some(Direction::Both),
        peer_cidrs: vec![format!("{peer}/32")],
        ..Default::default()
    }
}

/// 20 ms of latency towards `peer`, queued in userspace (NFQUEUE) or by netem.
fn latency_towards(peer: Ipv4Addr, direction: Direction) -> NetworkFault {
    NetworkFault {
        latency: Some(LatencyFault {
            latency: "20ms".into(),
            direction,
            ..Default::default()
        }),
        peer_cidrs: vec![format!("{peer}/32")],
        ..Default::default()
    }
}

/// A pod process in each of the node's first `count` pod namespaces, with uids from `first`.
fn pods_running(node: &TestNode, count: usize, first: u32) -> Vec<PodProcess> {
    (0..count)
        .map(|n| PodProcess::start(&node.pods[n].ns, &uid(first + n as u32)).unwrap())
        .collect()
}

/// An echo server in pod 1 and a connected client in pod 0.
fn connection(node: &TestNode) -> TcpStream {
    let server_ip = node.pods[1].ip;
    let listener = node.pods[1]
        .ns
        .netns()
        .unwrap()
        .run(|| TcpListener::bind((server_ip, 7000)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let stream = node.pods[0]
        .ns
        .netns()
        .unwrap()
        .run(|| TcpStream::connect_timeout(&(server_ip, 7000).into(), Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream
}

fn echo(stream: &mut TcpStream, byte: u8) -> std::io::Result<u8> {
    stream.write_all(&[byte])?;
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf)?;
    Ok(buf[0])
}

#[test]
fn a_partition_cuts_an_established_connection_both_ways_and_heals_exactly() {
    if !root_or_skip(
        "agent_linux::a_partition_cuts_an_established_connection_both_ways_and_heals_exactly",
    ) {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(1)).unwrap();
    let kernel = LinuxKernel::detect("/proc");
    assert!(
        kernel.capabilities().nftables,
        "nft is installed by scripts/setup.sh"
    );
    let mut stream = connection(&node);
    assert_eq!(echo(&mut stream, b'a').unwrap(), b'a');

    let applied = kernel
        .apply(
            &uid(1),
            &tag(1),
            &partition(node.pods[1].ip),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap();
    assert!(applied.message.contains("partition"), "{}", applied.message);
    let cut = echo(&mut stream, b'b');
    assert!(
        cut.is_err(),
        "the established connection still works: {cut:?}"
    );
    // Nothing from pod 1 gets in either: a new connection from pod 1 to pod 0 fails.
    let target = node.pods[0].ip;
    let _listener = node.pods[0]
        .ns
        .netns()
        .unwrap()
        .run(|| TcpListener::bind((target, 7001)))
        .unwrap()
        .unwrap();
    let inbound = node.pods[1]
        .ns
        .netns()
        .unwrap()
        .run(|| TcpStream::connect_timeout(&(target, 7001).into(), Duration::from_secs(2)))
        .unwrap();
    assert!(
        inbound.is_err(),
        "pod 1 reached pod 0 through the partition"
    );

    let reverted = kernel
        .revert(
            &uid(1),
            &tag(1),
            Some(Mechanism::Nftables),
            applied.baseline.as_deref(),
        )
        .unwrap();
    assert_eq!(reverted.residual, Vec::<String>::new());
    // The same connection heals: TCP retransmits "b" and the echo arrives.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1];
    stream.read_exact(&mut buf).unwrap();
    assert_eq!(buf[0], b'b');
    assert_eq!(echo(&mut stream, b'c').unwrap(), b'c');
}

#[test]
fn a_container_restart_keeps_the_fault_and_its_revert_leaves_nothing() {
    if !root_or_skip(
        "agent_linux::a_container_restart_keeps_the_fault_and_its_revert_leaves_nothing",
    ) {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let mut pod = PodProcess::start(&node.pods[0].ns, &uid(2)).unwrap();
    let kernel = LinuxKernel::detect("/proc");
    let applied = kernel
        .apply(
            &uid(2),
            &tag(2),
            &partition(node.pods[1].ip),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap();
    let pid_before = pod.pid();
    pod.restart().unwrap();
    assert_ne!(pod.pid(), pid_before);
    assert!(kernel.pod_present(&uid(2)));
    let ns = node.pods[0].ns.netns().unwrap();
    assert_eq!(
        nft::owned(&ns).unwrap(),
        vec![tag(2)],
        "the fault is still there"
    );
    let reverted = kernel
        .revert(
            &uid(2),
            &tag(2),
            Some(Mechanism::Nftables),
            applied.baseline.as_deref(),
        )
        .unwrap();
    assert_eq!(reverted.residual, Vec::<String>::new());
    assert!(nft::owned(&ns).unwrap().is_empty());
}

#[test]
fn latency_through_the_userspace_queue_reverts_without_residue() {
    if !root_or_skip("agent_linux::latency_through_the_userspace_queue_reverts_without_residue") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(3)).unwrap();
    let kernel = LinuxKernel::detect("/proc");
    assert!(kernel.capabilities().nfqueue);
    let fault = NetworkFault {
        latency: Some(LatencyFault {
            latency: "30ms".into(),
            direction: Direction::To,
            ..Default::default()
        }),
        peer_cidrs: vec![format!("{}/32", node.pods[1].ip)],
        ..Default::default()
    };
    // The test node's host namespace stands for the node: the agent runs there.
    let host = node.host.netns().unwrap();
    let result = host
        .run(|| {
            let applied = kernel.apply(&uid(3), &tag(3), &fault, Mechanism::Nfqueue, &later())?;
            kernel.revert(
                &uid(3),
                &tag(3),
                Some(Mechanism::Nfqueue),
                applied.baseline.as_deref(),
            )
        })
        .unwrap();
    assert_eq!(result.unwrap().residual, Vec::<String>::new());
}

#[test]
fn stray_faultline_tables_are_found_and_removed_and_foreign_ones_survive() {
    if !root_or_skip(
        "agent_linux::stray_faultline_tables_are_found_and_removed_and_foreign_ones_survive",
    ) {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(4)).unwrap();
    let ns = node.pods[0].ns.netns().unwrap();
    ns.command("nft", &["add", "table", "inet", "someone_else"], None)
        .unwrap();
    let kernel = LinuxKernel::detect("/proc");
    kernel
        .apply(
            &uid(4),
            &tag(4),
            &partition(node.pods[1].ip),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap();
    let owned = kernel.owned(&BTreeSet::from([uid(4)]));
    assert_eq!(owned.len(), 1, "{owned:?}");
    assert_eq!(owned[0].tag, Some(tag(4)));
    kernel.remove_orphan(&owned[0]).unwrap();
    assert!(kernel.owned(&BTreeSet::from([uid(4)])).is_empty());
    let tables = ns.command("nft", &["list", "tables"], None).unwrap();
    assert!(String::from_utf8_lossy(&tables.stdout).contains("table inet someone_else"));
}

#[test]
fn a_pod_that_is_gone_fails_with_that_reason() {
    if !root_or_skip("agent_linux::a_pod_that_is_gone_fails_with_that_reason") {
        return;
    }
    let kernel = LinuxKernel::detect("/proc");
    let error = kernel
        .apply(
            &uid(5),
            &tag(5),
            &partition(Ipv4Addr::new(10, 77, 0, 9)),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap_err();
    assert!(
        matches!(error, faultline::agent::kernel::KernelError::TargetGone(_)),
        "{error:?}"
    );
    assert!(error.to_string().contains(&uid(5)), "{error}");
}

fn connects(node: &TestNode, from: usize, to: usize, port: u16) -> bool {
    let ip = node.pods[to].ip;
    let _listener = node.pods[to]
        .ns
        .netns()
        .unwrap()
        .run(move || TcpListener::bind((ip, port)))
        .unwrap()
        .unwrap();
    node.pods[from]
        .ns
        .netns()
        .unwrap()
        .run(move || TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(500)))
        .unwrap()
        .is_ok()
}

/// A kernel whose node namespace is the test node's host namespace.
fn kernel_for(node: &TestNode) -> LinuxKernel {
    LinuxKernel::detect("/proc").with_node_netns(format!("/run/netns/{}", node.host.name()))
}

#[test]
fn two_partitions_on_one_pod_each_revert_and_verify_only_their_own() {
    if !root_or_skip("agent_linux::two_partitions_on_one_pod_each_revert_and_verify_only_their_own")
    {
        return;
    }
    let node = TestNode::new(3).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(10)).unwrap();
    let kernel = kernel_for(&node);
    let a = kernel
        .apply(
            &uid(10),
            &tag(10),
            &partition(node.pods[1].ip),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap();
    let b = kernel
        .apply(
            &uid(10),
            &tag(11),
            &partition(node.pods[2].ip),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap();
    assert!(!connects(&node, 1, 0, 7101) && !connects(&node, 2, 0, 7102));
    // Reverting the first leaves the second in place, and its check does not blame it.
    let reverted = kernel
        .revert(
            &uid(10),
            &tag(10),
            Some(Mechanism::Nftables),
            a.baseline.as_deref(),
        )
        .unwrap();
    assert_eq!(reverted.residual, Vec::<String>::new());
    assert!(connects(&node, 1, 0, 7103));
    assert!(!connects(&node, 2, 0, 7104), "the other partition went too");
    let reverted = kernel
        .revert(
            &uid(10),
            &tag(11),
            Some(Mechanism::Nftables),
            b.baseline.as_deref(),
        )
        .unwrap();
    assert_eq!(reverted.residual, Vec::<String>::new());
    assert!(connects(&node, 2, 0, 7105));
}

#[test]
fn a_latency_revert_does_not_blame_another_experiments_partition() {
    if !root_or_skip("agent_linux::a_latency_revert_does_not_blame_another_experiments_partition") {
        return;
    }
    let node = TestNode::new(3).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(12)).unwrap();
    let kernel = kernel_for(&node);
    let latency = latency_towards(node.pods[1].ip, Direction::Both);
    let lat = kernel
        .apply(&uid(12), &tag(12), &latency, Mechanism::Nfqueue, &later())
        .unwrap();
    // Another experiment partitions the same pod after the latency's snapshot.
    kernel
        .apply(
            &uid(12),
            &tag(13),
            &partition(node.pods[2].ip),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap();
    let reverted = kernel
        .revert(
            &uid(12),
            &tag(12),
            Some(Mechanism::Nfqueue),
            lat.baseline.as_deref(),
        )
        .unwrap();
    assert_eq!(reverted.residual, Vec::<String>::new());
    let ns = node.pods[0].ns.netns().unwrap();
    assert_eq!(nft::owned(&ns).unwrap(), vec![tag(13)]);
    // Its own table left behind would be its residue.
    ns.command("nft", &["add", "table", "ip", &tag(12).nft_table()], None)
        .unwrap();
    let reverted = kernel
        .revert(
            &uid(12),
            &tag(12),
            Some(Mechanism::Netem),
            lat.baseline.as_deref(),
        )
        .unwrap();
    assert_eq!(
        reverted.residual,
        Vec::<String>::new(),
        "the revert removes it"
    );
    kernel
        .revert(&uid(12), &tag(13), Some(Mechanism::Nftables), None)
        .unwrap();
}

#[test]
fn a_second_qdisc_fault_on_the_same_interface_is_refused_naming_the_first() {
    if !root_or_skip(
        "agent_linux::a_second_qdisc_fault_on_the_same_interface_is_refused_naming_the_first",
    ) {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(14)).unwrap();
    let kernel = kernel_for(&node);
    let cap = |rate: &str| NetworkFault {
        bandwidth: Some(faultline::api::BandwidthFault {
            rate: rate.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    kernel
        .apply(&uid(14), &tag(14), &cap("8mbit"), Mechanism::Htb, &later())
        .unwrap();
    let refused = kernel
        .apply(&uid(14), &tag(15), &cap("16mbit"), Mechanism::Htb, &later())
        .unwrap_err();
    match &refused {
        faultline::agent::kernel::KernelError::Conflict { with, message } => {
            assert_eq!(*with, tag(14));
            assert!(message.contains("do not stack"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The refused one's cleanup must not take the first one's tree.
    kernel
        .revert(&uid(14), &tag(15), Some(Mechanism::Htb), None)
        .unwrap();
    let ns = node.pods[0].ns.netns().unwrap();
    assert!(
        faultline::agent::tc::root_qdisc(&ns, "eth0")
            .unwrap()
            .unwrap()
            .is_ours()
    );
    assert_eq!(nft::owned(&ns).unwrap(), vec![tag(14)]);
    // Once the first is reverted, the second applies.
    kernel
        .revert(&uid(14), &tag(14), Some(Mechanism::Htb), None)
        .unwrap();
    kernel
        .apply(&uid(14), &tag(15), &cap("16mbit"), Mechanism::Htb, &later())
        .unwrap();
    let reverted = kernel
        .revert(&uid(14), &tag(15), Some(Mechanism::Htb), None)
        .unwrap();
    assert!(reverted.residual.is_empty());
    assert!(faultline::agent::tc::owned(&ns).unwrap().is_empty());
}

#[test]
fn several_faults_of_a_pod_revert_in_one_pass() {
    if !root_or_skip("agent_linux::several_faults_of_a_pod_revert_in_one_pass") {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(16)).unwrap();
    let kernel = kernel_for(&node);
    let mut items = Vec::new();
    for n in 16..20 {
        let applied = kernel
            .apply(
                &uid(16),
                &tag(n),
                &partition(node.pods[1].ip),
                Mechanism::Nftables,
                &later(),
            )
            .unwrap();
        items.push(faultline::agent::kernel::RevertItem {
            tag: tag(n),
            mechanism: Some(Mechanism::Nftables),
            baseline: applied.baseline,
        });
    }
    let ns = node.pods[0].ns.netns().unwrap();
    assert_eq!(nft::owned(&ns).unwrap().len(), 4);
    let results = kernel.revert_pod(&uid(16), &items);
    assert_eq!(results.len(), 4);
    for result in results {
        assert_eq!(result.unwrap().residual, Vec::<String>::new());
    }
    assert!(nft::owned(&ns).unwrap().is_empty());
    assert!(connects(&node, 1, 0, 7106));
}

#[test]
fn the_faults_of_many_pods_revert_in_one_pass_each_judged_on_its_own() {
    if !root_or_skip(
        "agent_linux::the_faults_of_many_pods_revert_in_one_pass_each_judged_on_its_own",
    ) {
        return;
    }
    use faultline::agent::kernel::{KernelError, RevertItem};
    let node = TestNode::new(4).unwrap();
    let _pods = pods_running(&node, 3, 30);
    let kernel = kernel_for(&node);
    let latency = latency_towards(node.pods[3].ip, Direction::Both);
    let item = |tag: InjectionTag, mechanism, baseline| RevertItem {
        tag,
        mechanism: Some(mechanism),
        baseline,
    };
    let mut work: Vec<(String, Vec<RevertItem>)> = Vec::new();
    // Queued latency on pods 0 and 1 (a steering table each on the node), a bandwidth cap and a
    // partition on pod 2, and a pod that is gone between them.
    for n in 0..2u32 {
        let applied = kernel
            .apply(
                &uid(30 + n),
                &tag(30 + n),
                &latency,
                Mechanism::Nfqueue,
                &later(),
            )
            .unwrap();
        work.push((
            uid(30 + n),
            vec![item(tag(30 + n), Mechanism::Nfqueue, applied.baseline)],
        ));
    }
    work.insert(1, (uid(39), vec![item(tag(39), Mechanism::Nftables, None)]));
    let cap = NetworkFault {
        bandwidth: Some(faultline::api::BandwidthFault {
            rate: "8mbit".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let capped = kernel
        .apply(&uid(32), &tag(32), &cap, Mechanism::Htb, &later())
        .unwrap();
    let cut = kernel
        .apply(
            &uid(32),
            &tag(33),
            &partition(node.pods[3].ip),
            Mechanism::Nftables,
            &later(),
        )
        .unwrap();
    work.push((
        uid(32),
        vec![
            item(tag(32), Mechanism::Htb, capped.baseline),
            item(tag(33), Mechanism::Nftables, cut.baseline),
        ],
    ));
    let host = node.host.netns().unwrap();
    assert!(
        nft::owned(&host).unwrap().len() >= 2,
        "the queued latencies' steering tables on the node"
    );

    let results = kernel.revert_pods(&work);

    let shape: Vec<usize> = results.iter().map(Vec::len).collect();
    assert_eq!(shape, vec![1, 1, 1, 2], "one result per item, in order");
    assert!(
        matches!(results[1][0], Err(KernelError::TargetGone(_))),
        "{:?}",
        results[1]
    );
    for result in [
        &results[0][0],
        &results[2][0],
        &results[3][0],
        &results[3][1],
    ] {
        assert_eq!(result.as_ref().unwrap().residual, Vec::<String>::new());
    }
    assert!(nft::owned(&host).unwrap().is_empty(), "the node's tables");
    for n in 0..3 {
        let ns = node.pods[n].ns.netns().unwrap();
        assert!(nft::owned(&ns).unwrap().is_empty(), "pod {n}'s tables");
        assert!(
            faultline::agent::tc::owned(&ns).unwrap().is_empty(),
            "pod {n}'s qdiscs"
        );
    }
    assert!(
        faultline::agent::tc::owned(&host).unwrap().is_empty(),
        "the veths' qdiscs"
    );
    assert!(connects(&node, 3, 2, 7130), "the partition healed");
}

#[test]
fn egress_latency_reverts_on_the_node_alone_even_once_its_pod_is_gone() {
    if !root_or_skip(
        "agent_linux::egress_latency_reverts_on_the_node_alone_even_once_its_pod_is_gone",
    ) {
        return;
    }
    use faultline::agent::kernel::RevertItem;
    let node = TestNode::new(3).unwrap();
    let mut pods = pods_running(&node, 2, 50);
    let kernel = kernel_for(&node);
    // Egress only: its steering table and queue workers are all on the node's side.
    let latency = latency_towards(node.pods[2].ip, Direction::To);
    let mut work = Vec::new();
    for n in 0..2u32 {
        let applied = kernel
            .apply(
                &uid(50 + n),
                &tag(50 + n),
                &latency,
                Mechanism::Nfqueue,
                &later(),
            )
            .unwrap();
        assert!(
            kernel.queue_counts(&tag(50 + n)).is_some(),
            "its workers run"
        );
        work.push((
            uid(50 + n),
            vec![RevertItem {
                tag: tag(50 + n),
                mechanism: Some(Mechanism::Nfqueue),
                baseline: applied.baseline,
            }],
        ));
    }
    let host = node.host.netns().unwrap();
    assert_eq!(nft::owned(&host).unwrap().len(), 2, "a steering table each");
    // Pod 51's process goes: whether its namespace is still there does not matter to a fault
    // that never entered it.
    drop(pods.pop());

    let results = kernel.revert_pods(&work);

    for (n, result) in results.iter().enumerate() {
        assert_eq!(
            result[0].as_ref().unwrap().residual,
            Vec::<String>::new(),
            "pod {n}"
        );
        assert!(
            kernel.queue_counts(&tag(50 + n as u32)).is_none(),
            "its workers stopped"
        );
    }
    assert!(nft::owned(&host).unwrap().is_empty(), "the node's tables");
    assert!(connects(&node, 0, 2, 7150), "pod 0 talks to pod 2");
}

#[test]
fn queued_faults_applied_at_once_whose_queue_numbers_collide_all_get_queues_of_their_own() {
    if !root_or_skip(
        "agent_linux::queued_faults_applied_at_once_whose_queue_numbers_collide_all_get_queues_of_their_own",
    ) {
        return;
    }
    // Every tag of this test starts with the same 8 hex digits, so every apply first tries
    // the same queue numbers: all but one find them taken (EPERM or EBUSY) and move on.
    let node = TestNode::new(9).unwrap();
    let _pods = pods_running(&node, 8, 40);
    let kernel = kernel_for(&node);
    let latency = latency_towards(node.pods[8].ip, Direction::To);
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8u32)
            .map(|n| {
                let (kernel, latency) = (&kernel, &latency);
                scope.spawn(move || {
                    kernel.apply(
                        &uid(40 + n),
                        &tag(40 + n),
                        latency,
                        Mechanism::Nfqueue,
                        &later(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut work = Vec::new();
    for (n, result) in results.into_iter().enumerate() {
        let applied = result.unwrap_or_else(|e| panic!("apply {n}: {e}"));
        work.push((
            uid(40 + n as u32),
            vec![faultline::agent::kernel::RevertItem {
                tag: tag(40 + n as u32),
                mechanism: Some(Mechanism::Nfqueue),
                baseline: applied.baseline,
            }],
        ));
    }
    for results in kernel.revert_pods(&work) {
        assert_eq!(results[0].as_ref().unwrap().residual, Vec::<String>::new());
    }
    assert!(nft::owned(&node.host.netns().unwrap()).unwrap().is_empty());
}

/// The baseline kept before an apply asks the node's namespace for the injection's own tables
/// by name (the node holds one or two per injection); it holds exactly what the full listing,
/// cut to what could be that injection's residue, holds: with its tables there (an apply
/// again, after an agent restart) and without.
#[test]
fn a_baseline_asked_by_name_is_the_full_listing_cut_to_the_injection() {
    use faultline::agent::residual::{self, Places};
    if !root_or_skip(
        "agent_linux::a_baseline_asked_by_name_is_the_full_listing_cut_to_the_injection",
    ) {
        return;
    }
    let node = TestNode::new(2).unwrap();
    let _pod = PodProcess::start(&node.pods[0].ns, &uid(60)).unwrap();
    let kernel = LinuxKernel::detect("/proc");
    let fault = NetworkFault {
        latency: Some(LatencyFault {
            latency: "30ms".into(),
            direction: Direction::Both,
            ..Default::default()
        }),
        peer_cidrs: vec![format!("{}/32", node.pods[1].ip)],
        ..Default::default()
    };
    let host = node.host.netns().unwrap();
    let pod = node.pods[0].ns.netns().unwrap();
    host.run(|| {
        kernel
            .apply(&uid(60), &tag(60), &fault, Mechanism::Nfqueue, &later())
            .unwrap();
        kernel
            .apply(&uid(60), &tag(61), &fault, Mechanism::Nfqueue, &later())
            .unwrap();
    })
    .unwrap();
    let places = Places {
        pod: &pod,
        node: Some((&host, None)),
        iptables: false,
        node_qdisc: false,
    };
    let listed = residual::snapshot(&places).unwrap();
    for n in [60, 61, 62] {
        let asked = residual::baseline(&places, &tag(n)).unwrap();
        assert_eq!(asked, listed.about(&tag(n)), "tag {n}");
        let own = format!("node: nft table ip {}", tag(n).nft_table());
        assert_eq!(
            asked.to_text().contains(&own),
            n != 62,
            "{}",
            asked.to_text()
        );
        // Another injection's table on the node is not this one's concern (the pod's
        // namespace is kept whole).
        let other = format!("node: nft table ip {}", tag(123 - n).nft_table());
        assert!(!asked.to_text().contains(&other), "{}", asked.to_text());
    }
    for n in [60, 61] {
        host.run(|| kernel.revert(&uid(60), &tag(n), Some(Mechanism::Nfqueue), None))
            .unwrap()
            .unwrap();
    }
    assert!(nft::owned(&host).unwrap().is_empty());
}
