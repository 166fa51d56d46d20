//! Real sandbox pods (root only): the workload simulator with [`PodRuntime::Real`] turns pods
//! into `faultline demo-app` processes in their own network namespaces on a bridge, inside
//! kubelet-style pod cgroups. Checked from the machine's own namespace, as the node agent and
//! probes see them: HTTP on the pod IP, `/proc/<pid>/cgroup`, `/proc/<pid>/ns/net`.
//!
//! Each test claims its own sandbox slot (bridge, subnet, namespace prefix, cgroup root), so
//! they run in parallel with each other and with `sandbox up` elsewhere.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::real_slot::{RealBed, TIMEOUT, demo, deploy, ready, ready_pods};
use common::wait_for;
use faultline::agent::testnet::root_or_skip;
use faultline::sandbox::workloads::realpod::{self, RealPodConfig, SlotLease};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

fn pod_ip(p: &Pod) -> String {
    p.status.as_ref().unwrap().pod_ip.clone().unwrap()
}

fn http() -> reqwest::Client {
    faultline::cli::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, String) {
    let answer = http().get(url).send().await.unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

fn netns_inode(path: impl AsRef<Path>) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap()
}

#[tokio::test]
async fn real_pods_answer_on_their_pod_ip_from_their_own_netns_and_pod_cgroup() {
    if !root_or_skip(
        "sandbox_real_pods::real_pods_answer_on_their_pod_ip_from_their_own_netns_and_pod_cgroup",
    ) {
        return;
    }
    let RealBed {
        slot,
        server: _server,
        client: _client,
        workloads,
        deployments,
        pods,
    } = RealBed::start().await;

    let backends = deploy(&deployments, &pods, "backend", 2, None).await;
    let backend_url = format!("http://{}:8080/work", pod_ip(&backends[0]));
    let frontends = deploy(&deployments, &pods, "frontend", 2, Some(&backend_url)).await;

    let subnet = format!("{}.{}.", slot.config.subnet[0], slot.config.subnet[1]);
    for pod in backends.iter().chain(&frontends) {
        let ip = pod_ip(pod);
        let uid = pod.uid().unwrap();
        assert!(ip.starts_with(&subnet), "{ip} is in {subnet}0.0/16");
        assert_eq!(
            get(&format!("http://{ip}:8080/healthz")).await,
            (200, "ok".into())
        );

        let pid = slot
            .pods
            .container_pid(&uid, "app")
            .expect("a running process");
        let cgroup = cgroup_of(pid);
        assert!(
            cgroup.contains(&format!("/kubepods/besteffort/pod{uid}")),
            "{cgroup}"
        );
        assert_eq!(
            netns_inode(format!("/proc/{pid}/ns/net")),
            netns_inode(format!("/run/netns/{}", slot.config.netns_name(&uid))),
            "the process runs in the pod's own namespace"
        );
        let status = &pod
            .status
            .as_ref()
            .unwrap()
            .container_statuses
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            status.container_id.as_deref(),
            Some(format!("process://{pid}").as_str())
        );
    }

    // Pod to pod over the bridge: a frontend calls the backend's pod IP.
    let (code, body) = get(&format!("http://{}:8080/work", pod_ip(&frontends[0]))).await;
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["name"], frontends[0].name_any().as_str(), "{body}");
    assert_eq!(
        body["downstreams"][0]["url"],
        backend_url.as_str(),
        "{body}"
    );
    assert_eq!(body["downstreams"][0]["status"], 200, "{body}");

    workloads.shutdown().await;
    assert!(
        realpod::leftovers(&slot.config).namespaces.is_empty(),
        "stopping the simulator stops every pod"
    );
}

#[tokio::test]
async fn a_killed_container_restarts_in_the_same_netns_and_cgroup_with_a_new_pid() {
    if !root_or_skip(
        "sandbox_real_pods::a_killed_container_restarts_in_the_same_netns_and_cgroup_with_a_new_pid",
    ) {
        return;
    }
    let RealBed {
        slot,
        server: _server,
        client: _client,
        workloads,
        deployments,
        pods,
    } = RealBed::start().await;
    let pod = deploy(&deployments, &pods, "target", 1, None)
        .await
        .remove(0);
    let uid = pod.uid().unwrap();
    let ip = pod_ip(&pod);
    let before = slot.pods.container_pid(&uid, "app").unwrap();
    let netns_before = netns_inode(format!("/proc/{before}/ns/net"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(before).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // The same pod (uid, IP) reports the restart and is Ready again.
    let restarted = wait_for(
        "the pod to report one restart and be ready",
        TIMEOUT,
        || async {
            let p = pods.get(&pod.name_any()).await.ok()?;
            let status = p.status.clone()?.container_statuses?.remove(0);
            (status.restart_count == 1 && status.ready && ready(&p)).then_some(p)
        },
    )
    .await;
    assert_eq!(restarted.uid(), pod.uid());
    assert_eq!(pod_ip(&restarted), ip);
    let last = restarted.status.unwrap().container_statuses.unwrap()[0]
        .last_state
        .clone()
        .and_then(|s| s.terminated)
        .expect("the last state says how the process ended");
    assert_eq!(last.signal, Some(9));

    let after = slot.pods.container_pid(&uid, "app").expect("a new process");
    assert_ne!(after, before, "a new process");
    assert_eq!(
        netns_inode(format!("/proc/{after}/ns/net")),
        netns_before,
        "restarted in the same network namespace"
    );
    assert!(cgroup_of(after).contains(&format!("/kubepods/besteffort/pod{uid}")));
    assert_eq!(get(&format!("http://{ip}:8080/healthz")).await.0, 200);
    workloads.shutdown().await;
}

#[tokio::test]
async fn deleting_the_deployment_removes_the_pod_namespaces_and_cleanup_removes_the_rest() {
    if !root_or_skip(
        "sandbox_real_pods::deleting_the_deployment_removes_the_pod_namespaces_and_cleanup_removes_the_rest",
    ) {
        return;
    }
    let RealBed {
        slot,
        server: _server,
        client: _client,
        workloads,
        deployments,
        pods,
    } = RealBed::start().await;
    let running = deploy(&deployments, &pods, "doomed", 2, None).await;
    let pids: Vec<u32> = running
        .iter()
        .map(|p| slot.pods.container_pid(&p.uid().unwrap(), "app").unwrap())
        .collect();
    let made = realpod::leftovers(&slot.config);
    assert_eq!(made.namespaces.len(), 2, "{made:?}");
    assert_eq!(made.bridge_ports.len(), 2, "{made:?}");
    assert!(made.bridge);

    deployments
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the pods' namespaces, veths and cgroups to go",
        TIMEOUT,
        || async {
            let left = realpod::leftovers(&slot.config);
            let pod_cgroups = running
                .iter()
                .flat_map(|p| slot.config.cgroup_dirs(&p.uid().unwrap()))
                .any(|d| d.exists());
            (left.namespaces.is_empty() && left.bridge_ports.is_empty() && !pod_cgroups)
                .then_some(())
        },
    )
    .await;
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is gone"
        );
    }

    // What the pods shared (bridge, cgroup root) stays until `sandbox down`'s cleanup.
    workloads.shutdown().await;
    let cleaned = realpod::cleanup(&slot.config).unwrap();
    assert!(cleaned.bridge.is_some(), "{cleaned}");
    let left = realpod::leftovers(&slot.config);
    assert!(left.is_empty(), "{left:?}");
    // And a second cleanup finds nothing to do.
    assert!(realpod::cleanup(&slot.config).unwrap().is_empty());
}

fn faultline(state_dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_faultline"))
        .arg("sandbox")
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .expect("faultline runs")
}

/// Stops the sandbox even when an assertion fails halfway.
struct Down<'a>(&'a Path);
impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = faultline(self.0, &["down"]);
    }
}

/// `sandbox up --detach` with a Deployment of demo pods; returns the slot its pods use and
/// the pods once Ready.
async fn detached_sandbox_with_pods(state: &Path) -> (RealPodConfig, Vec<Pod>, u32) {
    let manifest = state.join("demo.yaml");
    std::fs::write(
        &manifest,
        serde_yaml::to_string(&demo("web", 2, None)).unwrap(),
    )
    .unwrap();
    let up = faultline(
        state,
        &[
            "up",
            "--detach",
            "--nodes",
            "2",
            "--apply",
            manifest.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(stdout.contains("pods:       real"), "{stdout}");
    let sandbox: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("sandbox.json")).unwrap())
            .unwrap();
    let slot = u8::try_from(sandbox["pod_slot"].as_u64().expect("a real-pod slot")).unwrap();
    let pid = u32::try_from(sandbox["pid"].as_u64().unwrap()).unwrap();

    faultline::cli::install_crypto_provider();
    let kubeconfig = kube::config::Kubeconfig::read_from(state.join("kubeconfig")).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let pods = ready_pods(&Api::namespaced(client, "default"), "web", 2).await;
    for pod in &pods {
        let url = format!("http://{}:8080/healthz", pod_ip(pod));
        assert_eq!(get(&url).await.0, 200, "{url}");
    }
    (RealPodConfig::slot(slot, "".into()), pods, pid)
}

/// Nothing of the sandbox's pods is left. Another test may claim the freed slot at once, so the
/// slot-wide names (bridge, cgroup root) are only checked while we hold the slot ourselves.
fn assert_nothing_left(config: &RealPodConfig, pods: &[Pod], slot: u8) {
    // A sandbox that claimed the freed slot cleans what it finds there while it holds the slot:
    // wait for it to be done (the slot free again, or our pods gone) before judging.
    let ours_gone = || {
        pods.iter().all(|pod| {
            let netns = config.netns_name(&pod.uid().unwrap());
            !Path::new("/run/netns").join(netns).exists()
        })
    };
    let mut held = None;
    for _ in 0..300 {
        held = SlotLease::try_claim(slot).unwrap();
        if held.is_some() || ours_gone() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for pod in pods {
        let uid = pod.uid().unwrap();
        let netns = config.netns_name(&uid);
        assert!(
            !Path::new("/run/netns").join(&netns).exists(),
            "{netns} is left"
        );
        let veth = RealPodConfig::veth_name(&uid);
        assert!(
            !Path::new("/sys/class/net").join(&veth).exists(),
            "{veth} is left"
        );
        for dir in config.cgroup_dirs(&uid) {
            assert!(!dir.exists(), "{} is left", dir.display());
        }
    }
    match held.or_else(|| SlotLease::try_claim(slot).unwrap()) {
        Some(_held) => {
            let left = realpod::leftovers(config);
            // A sandbox that used this slot after ours and was killed (the test below does so)
            // leaves its own pods here until its `down`: those are not ours to judge.
            let ours: Vec<String> = pods
                .iter()
                .map(|p| config.netns_name(&p.uid().unwrap()))
                .collect();
            if left.namespaces.iter().all(|n| ours.contains(n)) {
                assert!(left.is_empty(), "{left:?}");
            } else {
                eprintln!("slot {slot} holds another sandbox's leftovers; checked our pods only");
            }
        }
        None => {
            eprintln!("slot {slot} was taken by another sandbox at once; checked our pods only")
        }
    }
}

#[tokio::test]
async fn sandbox_up_as_root_runs_real_pods_and_down_leaves_nothing_behind() {
    if !root_or_skip(
        "sandbox_real_pods::sandbox_up_as_root_runs_real_pods_and_down_leaves_nothing_behind",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let _down = Down(state);
    let (config, pods, _) = detached_sandbox_with_pods(state).await;
    let slot = config.subnet[1] - 244;
    let status = faultline(state, &["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&format!("pods: real (slot {slot}")),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    let down = faultline(state, &["down"]);
    assert!(
        down.status.success(),
        "sandbox down: {}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    assert_nothing_left(&config, &pods, slot);
}

#[tokio::test]
async fn sandbox_down_removes_the_pods_of_a_sandbox_that_was_killed() {
    if !root_or_skip(
        "sandbox_real_pods::sandbox_down_removes_the_pods_of_a_sandbox_that_was_killed",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let _down = Down(state);
    let (config, pods, pid) = detached_sandbox_with_pods(state).await;
    let slot = config.subnet[1] - 244;

    // SIGKILL: the sandbox cannot clean up; its pods' processes and namespaces stay behind.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the sandbox to die", TIMEOUT, || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z ")).then_some(())
    })
    .await;
    // (Unless another sandbox claimed the freed slot at once and cleaned it already.)
    if let Some(_held) = SlotLease::try_claim(slot).unwrap() {
        let left = realpod::leftovers(&config);
        assert_eq!(
            left.namespaces.len(),
            2,
            "the killed sandbox left its pods: {left:?}"
        );
        let alive = pods
            .iter()
            .flat_map(|p| config.cgroup_dirs(&p.uid().unwrap()))
            .any(|d| std::fs::read_to_string(d.join("cgroup.procs")).is_ok_and(|p| !p.is_empty()));
        assert!(alive, "and their processes");
    }

    let down = faultline(state, &["down"]);
    assert!(
        down.status.success(),
        "sandbox down: {}{}",
        String::from_utf8_lossy(&down.stdout),
        String::from_utf8_lossy(&down.stderr)
    );
    // (Its report of what it removed is not checked: a sandbox claiming the freed slot first
    // removes the same leftovers.)
    assert_nothing_left(&config, &pods, slot);
}

#[test]
fn cleaning_a_slot_waits_for_a_brief_holder_and_leaves_a_slot_still_in_use() {
    if !root_or_skip(
        "sandbox_real_pods::cleaning_a_slot_waits_for_a_brief_holder_and_leaves_a_slot_still_in_use",
    ) {
        return;
    }
    let lease = realpod::claim_slot().unwrap().expect("a free sandbox slot");
    let slot = lease.slot();
    let config = RealPodConfig::slot(slot, env!("CARGO_BIN_EXE_faultline").into());
    realpod::cleanup(&config).unwrap();
    // What a killed sandbox leaves: a pod namespace under the slot's names.
    let netns = config.netns_name("0badc0de-0000-4000-8000-000000000000");
    let added = Command::new("ip")
        .args(["netns", "add", &netns])
        .status()
        .unwrap();
    assert!(added.success());
    let left = || Path::new("/run/netns").join(&netns).exists();

    // Held for longer than the patience: a sandbox lives there; its names are not touched.
    assert!(
        realpod::cleanup_slot_when_free(slot, Duration::from_millis(200))
            .unwrap()
            .is_none()
    );
    assert!(left(), "a slot in use keeps its names");

    // Held for a moment (another `down`, a check): the cleanup waits for it, then cleans.
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(lease);
    });
    let cleaned = realpod::cleanup_slot_when_free(slot, Duration::from_secs(30))
        .unwrap()
        .expect("the slot, once let go");
    holder.join().unwrap();
    // A sandbox started meanwhile by another test may claim the freed slot first: claiming a
    // slot cleans what is left under its names, so then it removed the namespace, not us.
    assert!(
        cleaned.namespaces == vec![netns.clone()] || cleaned.namespaces.is_empty(),
        "{:?}",
        cleaned.namespaces
    );
    assert!(!left(), "{netns} is left");
}
