//! How many real pods one sandbox runs, and what a pod past that sees (root only). A Linux
//! bridge takes at most 1024 ports, so a sandbox's pod bridge runs at most 1023 real pods; the
//! next pod stays Pending with the kubelet's `FailedCreatePodSandBox` Warning saying so and
//! what to do, and starts on its own once a port is free.
//!
//! The bridge is filled with bare veth pairs instead of a thousand pods (which take this
//! machine minutes to start): the kernel refuses the next port alike.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::real_slot::{RealBed, TIMEOUT, demo, deploy, ready};
use common::wait_for;
use faultline::agent::testnet::root_or_skip;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, PostParams};

/// veth pairs enslaved to a bridge (one end each) until the kernel refuses another port;
/// removed on drop, also when the test fails halfway.
struct Filler {
    names: Vec<String>,
}

impl Filler {
    fn ip_batch(commands: &str) -> std::process::Output {
        let mut child = Command::new("ip")
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(commands.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn ports(bridge: &str) -> usize {
        std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Fills `bridge` to its last port; the interfaces are named after the slot's bridge so
    /// that parallel tests on other slots never meet them.
    fn fill(bridge: &str) -> Filler {
        let prefix = format!("{bridge}f");
        // Whatever a crashed earlier run left under these names goes first.
        let stale: String = (0..1100)
            .map(|i| format!("link del {prefix}{i}\n"))
            .collect();
        Self::ip_batch(&stale);
        let free = 1024 - Self::ports(bridge);
        let names: Vec<String> = (0..free).map(|i| format!("{prefix}{i}")).collect();
        let commands: String = names
            .iter()
            .map(|n| {
                format!("link add {n} type veth peer name {n}p\nlink set {n} master {bridge}\n")
            })
            .collect();
        let out = Self::ip_batch(&commands);
        let filler = Filler { names };
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The instrument checks itself: the bridge took every port it could and refused one.
        assert!(
            stderr.contains("Exchange full"),
            "the bridge took {} more ports without refusing one: {stderr}",
            filler.names.len()
        );
        filler
    }

    /// Frees one port (the first pair: the last ones made may be the refused ones).
    fn free_one(&mut self) {
        let name = self.names.remove(0);
        Self::ip_batch(&format!("link del {name}\n"));
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        let commands: String = self
            .names
            .iter()
            .map(|n| format!("link del {n}\n"))
            .collect();
        Self::ip_batch(&commands);
    }
}

async fn sandbox_warnings(client: &kube::Client, pod: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .collect()
}

#[tokio::test]
async fn a_pod_past_the_bridges_last_port_stays_pending_says_why_and_starts_once_one_frees() {
    if !root_or_skip(
        "sandbox_pod_capacity::a_pod_past_the_bridges_last_port_stays_pending_says_why_and_starts_once_one_frees",
    ) {
        return;
    }
    let RealBed {
        slot,
        server: _server,
        client,
        workloads,
        deployments,
        pods,
    } = RealBed::start().await;
    // One pod first: the bridge exists, with one port taken.
    deploy(&deployments, &pods, "first", 1, None).await;
    let mut filler = Filler::fill(&slot.config.bridge);

    deployments
        .create(&PostParams::default(), &demo("late", 1, None))
        .await
        .unwrap();
    let (late, warning) = wait_for(
        "the kubelet's FailedCreatePodSandBox Warning",
        TIMEOUT,
        || async {
            let pod = pods
                .list(&ListParams::default().labels("app=late"))
                .await
                .ok()?
                .items
                .pop()?;
            let name = pod.metadata.name.clone()?;
            let warning = sandbox_warnings(&client, &name).await.pop()?;
            Some((pod, warning))
        },
    )
    .await;
    let name = late.metadata.name.clone().unwrap();
    let message = warning.message.clone().unwrap_or_default();
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    for words in [
        "Failed to create pod sandbox: failed to create the pod network for pod",
        "Exchange full",
        "at most 1023 real pods",
        "scale down, or start another sandbox",
    ] {
        assert!(message.contains(words), "{words:?} not in {message}");
    }
    let phase = late.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"), "{name} is not running");

    // Retries (with backoff) say nothing new: still the one Event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sandbox_warnings(&client, &name).await.len(), 1);

    filler.free_one();
    let started = wait_for(
        "the late pod to start on the freed port",
        TIMEOUT,
        || async {
            let pod = pods.get(&name).await.ok()?;
            ready(&pod).then_some(pod)
        },
    )
    .await;
    assert!(started.status.unwrap().pod_ip.is_some());
    drop(filler);
    workloads.shutdown().await;
}
