//! A controller that crashes. One `faultline controller` process is killed with SIGKILL at
//! random moments and started again at once under the same identity, as the container of a
//! crash-looping pod is, while the workload of `common::disturbed` runs (pod kills, latencies,
//! an abort, a game day, a schedule). Wherever a kill lands (between a pod's delete and the
//! status that records it, between a FaultInjection's create and the targets list, in the
//! middle of a revert), what `disturbed` checks must hold. And the worst moments on purpose:
//! stopped between a delete and its record, and with a target left terminating.
//!
//! The moments come from a seed printed by the test; `FAULTLINE_CRASH_SEED=N` replays a run.
//! The agent is the in-process stand-in (it confirms applies and reverts through the API): the
//! subject here is the controller, whose crashes are not the kernel's business.

mod common;

use std::time::Duration;

use common::{
    disturbed::Workload,
    harness::Harness,
    held_responses::HeldResponses,
    replicas::{Replica, ReplicaBed},
    wait_for,
};
use faultline::api::{Phase, Verdict};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

/// A controller under the one identity every restart shares (a pod's name survives the
/// restarts of its container), so that a restart takes its own lease back at once.
fn start_controller(kubeconfig: &std::path::Path) -> Replica {
    Replica::start(kubeconfig, "faultline-controller-0", 15, 5)
}

/// xorshift64*: enough randomness for crash moments, and a run is replayed from its seed.
struct Moments(u64);

impl Moments {
    fn next_millis(&mut self, from: u64, to: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        from + self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % (to - from)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_controller_kills_each_target_once_and_leaves_no_fault() {
    let mut moments = Moments(common::disturbed::seed());
    let bed = ReplicaBed::start().await;
    let client = bed.client.clone();
    let kubeconfig = bed.kubeconfig.clone();
    let url = common::disturbed::healthy_service().await;
    let workload = Workload::start(&client, &url).await;

    // Crash and restart for a while; abort one experiment in the middle of it.
    let mut controller = start_controller(&kubeconfig);
    let crashing = std::time::Instant::now();
    let mut crashes = 0;
    let mut abort_sent = false;
    while crashing.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_millis(moments.next_millis(150, 2500))).await;
        drop(controller);
        crashes += 1;
        if !abort_sent && crashing.elapsed() > Duration::from_secs(8) {
            workload.abort_one(&client).await;
            abort_sent = true;
        }
        controller = start_controller(&kubeconfig);
    }
    eprintln!("killed the controller {crashes} times in 25 s; it now runs undisturbed");
    workload.check(&client, 2).await;

    drop(controller);
    bed.shutdown().await;
}

/// The experiment `shop/halfway` (two of four `web` pods, grace 0) with its first kill done and
/// not recorded: the controller's answers about single pods are held back, so its first delete
/// reached the server and it still waits for the reply. The held answers come back with the
/// harness and the shop's pods: dropped, they would let the reply through.
async fn halfway_through_two_kills() -> (HeldResponses, Harness, Api<Pod>) {
    let held = HeldResponses::new(&["/pods/"]);
    let h = Harness::start_holding(&held).await;
    common::harness::shop_with_web_pods(&h, 4).await;
    h.create(
        "shop",
        "halfway",
        json!({
            "duration": "2s",
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}, "mode": "Fixed", "value": 2},
            "faults": [{"podKill": {"method": "delete", "gracePeriodSeconds": 0}}]
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "shop");
    wait_for(
        "the first kill to go through",
        Duration::from_secs(30),
        || async {
            let left = pods.list(&ListParams::default()).await.ok()?.items.len();
            (left == 3).then_some(())
        },
    )
    .await;
    (held, h, pods)
}

// The worst moment, made on purpose: the answer to the first pod's delete is held back, so the
// controller has killed it and recorded nothing, and then it dies. The next controller finds
// both kills under way: it records the first as done (the pod is gone) and kills the second,
// never a third pod.
#[tokio::test]
async fn a_controller_stopped_between_a_kill_and_its_record_finishes_the_kills_without_repeating_one()
 {
    let (held, mut h, pods) = halfway_through_two_kills().await;
    let experiments = h.experiments("shop");
    let stopped = experiments.get("halfway").await.unwrap().status.unwrap();
    assert_eq!(stopped.phase, Phase::Injecting);
    assert!(
        stopped
            .targets
            .iter()
            .all(|t| t.state == faultline::api::TargetState::Injecting),
        "{:?}",
        stopped.targets
    );

    h.crash_and_restart_controller().await;
    let done = h.wait_phase("shop", "halfway", Phase::Succeeded).await;
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Passed),
        "{:?}",
        status.message
    );
    let kills: Vec<&str> = status
        .timeline
        .iter()
        .filter(|e| e.reason == "PodKilled")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(kills.len(), 2, "{kills:?}");
    assert_eq!(
        kills
            .iter()
            .filter(|m| m.contains("found gone when its kill was taken up again"))
            .count(),
        1,
        "{kills:?}"
    );
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        2,
        "two pods killed, no more"
    );
    held.release();
    h.stop().await;
}

// A kill cut off halfway leaves its pod terminating: the API server deletes a pod in two steps
// (marks it, then removes it), and a controller killed between the two leaves it marked, for a
// kubelet to finish (the crash loop above met one on the real control plane, which has no
// kubelet). Made on purpose the way both servers keep it: the second target carries a
// finalizer and is being deleted with a grace period of 30 s when the controller dies. The
// next controller must not take it for dead: it kills it as the fault asks (grace 0).
#[tokio::test]
async fn a_target_left_terminating_when_the_controller_stopped_is_killed_as_the_fault_asks() {
    let (held, mut h, pods) = halfway_through_two_kills().await;
    let stopped = h.experiments("shop").get("halfway").await.unwrap();
    let mut second = None;
    for target in &stopped.status.unwrap().targets {
        if pods.get_opt(&target.name).await.unwrap().is_some() {
            second = Some(target.name.clone());
        }
    }
    let second = second.expect("the second target is still there");
    let hold = json!({"metadata": {"finalizers": ["faultline.dev/test-hold"]}});
    pods.patch(&second, &PatchParams::default(), &Patch::Merge(hold))
        .await
        .unwrap();
    let graceful = DeleteParams {
        grace_period_seconds: Some(30),
        ..Default::default()
    };
    pods.delete(&second, &graceful).await.unwrap();
    let terminating = pods.get(&second).await.unwrap().metadata;
    assert!(terminating.deletion_timestamp.is_some(), "{terminating:?}");
    assert_eq!(terminating.deletion_grace_period_seconds, Some(30));

    h.crash_and_restart_controller().await;
    let done = h.wait_phase("shop", "halfway", Phase::Succeeded).await;
    let after = pods.get(&second).await.unwrap().metadata;
    let release = json!({"metadata": {"finalizers": null}});
    pods.patch(&second, &PatchParams::default(), &Patch::Merge(release))
        .await
        .unwrap();

    assert_eq!(
        after.deletion_grace_period_seconds,
        Some(0),
        "the resumed kill asked for the fault's grace period: {after:?}"
    );
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Passed),
        "{:?}",
        status.message
    );
    let kills: Vec<&str> = status
        .timeline
        .iter()
        .filter(|e| e.reason == "PodKilled")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(kills.len(), 2, "{kills:?}");
    assert!(
        kills.contains(&format!("deleted pod shop/{second}").as_str()),
        "{kills:?}"
    );
    held.release();
    h.stop().await;
}
