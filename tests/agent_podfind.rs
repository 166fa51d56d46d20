//! Root tests: finding a pod's network namespace through real cgroups, made the way a kubelet
//! makes them (cgroupfs driver on a v1 hierarchy, systemd-style slice names on the v2 one), with
//! a real process inside a test namespace.

use std::path::Path;

use faultline::agent::netns::Netns;
use faultline::agent::podfind::{PodNetnsError, find_pod_pid, pod_netns, pods_on_host};
use faultline::agent::testnet::{PodProcess, TestNs, root_or_skip};

fn uid(n: u32) -> String {
    format!("{:08x}-f17e-4000-8000-{:012x}", std::process::id(), n)
}

#[test]
fn finds_a_pod_in_a_v1_cgroupfs_cgroup_and_opens_its_namespace() {
    if !root_or_skip("agent_podfind::finds_a_pod_in_a_v1_cgroupfs_cgroup_and_opens_its_namespace") {
        return;
    }
    let ns = TestNs::new("podfind").unwrap();
    let uid = uid(1);
    let pod = PodProcess::in_cgroup(
        Path::new("/sys/fs/cgroup/pids"),
        &format!("kubepods/besteffort/pod{uid}"),
        Some(&ns),
    )
    .unwrap();

    let proc_root = Path::new("/proc");
    assert_eq!(find_pod_pid(proc_root, &uid).unwrap(), Some(pod.pid()));
    assert_eq!(pods_on_host(proc_root).unwrap().get(&uid), Some(&pod.pid()));
    let found = pod_netns(proc_root, &uid).unwrap();
    assert_eq!(found.id().unwrap(), ns.netns().unwrap().id().unwrap());
    assert_ne!(found.id().unwrap(), Netns::current().unwrap().id().unwrap());
}

#[test]
fn finds_a_pod_in_a_v2_systemd_slice() {
    if !root_or_skip("agent_podfind::finds_a_pod_in_a_v2_systemd_slice") {
        return;
    }
    let ns = TestNs::new("podfind2").unwrap();
    let uid = uid(2);
    let slice = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
        uid.replace('-', "_")
    );
    let pod =
        PodProcess::in_cgroup(Path::new("/sys/fs/cgroup/unified"), &slice, Some(&ns)).unwrap();

    let found = pod_netns(Path::new("/proc"), &uid).unwrap();
    assert_eq!(found.id().unwrap(), ns.netns().unwrap().id().unwrap());
    assert_eq!(
        find_pod_pid(Path::new("/proc"), &uid).unwrap(),
        Some(pod.pid())
    );
}

#[test]
fn a_pod_in_the_host_network_namespace_is_refused() {
    if !root_or_skip("agent_podfind::a_pod_in_the_host_network_namespace_is_refused") {
        return;
    }
    let uid = uid(3);
    // The sleep stays in the test's own namespace: to the agent, that is the node's.
    let pod = PodProcess::in_cgroup(
        Path::new("/sys/fs/cgroup/pids"),
        &format!("kubepods/pod{uid}"),
        None,
    )
    .unwrap();

    let err = find_pod_pid(Path::new("/proc"), &uid).unwrap_err();
    assert!(err.to_string().contains("uses the host network"), "{err}");
    match pod_netns(Path::new("/proc"), &uid) {
        Err(PodNetnsError::HostNetwork { pid, .. }) => assert_eq!(pid, pod.pid()),
        other => panic!("expected a host-network refusal, got {other:?}"),
    }
    assert!(!pods_on_host(Path::new("/proc")).unwrap().contains_key(&uid));
}

#[test]
fn a_pod_whose_processes_are_gone_is_not_found() {
    if !root_or_skip("agent_podfind::a_pod_whose_processes_are_gone_is_not_found") {
        return;
    }
    let ns = TestNs::new("podfind4").unwrap();
    let uid = uid(4);
    let pod = PodProcess::in_cgroup(
        Path::new("/sys/fs/cgroup/pids"),
        &format!("kubepods/burstable/pod{uid}"),
        Some(&ns),
    )
    .unwrap();
    assert!(find_pod_pid(Path::new("/proc"), &uid).unwrap().is_some());
    drop(pod);
    assert_eq!(find_pod_pid(Path::new("/proc"), &uid).unwrap(), None);
    let err = pod_netns(Path::new("/proc"), &uid).unwrap_err();
    assert!(
        err.to_string().contains("is the pod running on this node?"),
        "{err}"
    );
}

#[test]
fn a_remembered_process_that_is_gone_or_now_another_pods_is_not_trusted() {
    if !root_or_skip(
        "agent_podfind::a_remembered_process_that_is_gone_or_now_another_pods_is_not_trusted",
    ) {
        return;
    }
    // A lookup remembers where every pod was; the next one tries that first. The pod's first
    // process goes and a second, in another namespace, takes over: the lookup must find the
    // second, not the first's stale PID.
    let (first_ns, second_ns) = (
        TestNs::new("podfind5a").unwrap(),
        TestNs::new("podfind5b").unwrap(),
    );
    let (uid, other_uid) = (uid(5), uid(6));
    let cgroup = format!("kubepods/besteffort/pod{uid}");
    let first =
        PodProcess::in_cgroup(Path::new("/sys/fs/cgroup/pids"), &cgroup, Some(&first_ns)).unwrap();
    let found = pod_netns(Path::new("/proc"), &uid).unwrap();
    assert_eq!(found.id().unwrap(), first_ns.netns().unwrap().id().unwrap());
    drop(first);
    let second =
        PodProcess::in_cgroup(Path::new("/sys/fs/cgroup/pids"), &cgroup, Some(&second_ns)).unwrap();
    let found = pod_netns(Path::new("/proc"), &uid).unwrap();
    assert_eq!(
        found.id().unwrap(),
        second_ns.netns().unwrap().id().unwrap()
    );
    // And another pod's lookup, answered from what this scan remembered, is its own.
    let other_ns = TestNs::new("podfind5c").unwrap();
    let other = PodProcess::in_cgroup(
        Path::new("/sys/fs/cgroup/pids"),
        &format!("kubepods/besteffort/pod{other_uid}"),
        Some(&other_ns),
    )
    .unwrap();
    let found = pod_netns(Path::new("/proc"), &other_uid).unwrap();
    assert_eq!(found.id().unwrap(), other_ns.netns().unwrap().id().unwrap());
    drop((second, other));
    assert!(pod_netns(Path::new("/proc"), &uid).is_err());
}
