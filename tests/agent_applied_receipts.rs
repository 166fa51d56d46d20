//! Applied receipts: with the revert signal's ConfigMap in place, the agent says which faults
//! went in with one key per experiment and node (`controller::applied_receipts`), and each
//! injection's own `Applied` status follows once the node's applies go quiet. A status held
//! back never lands over what happened since (a revert). Without the ConfigMap, every other
//! test of the agent (`agent_runner`) sees the statuses written at once, as before.

mod common;

use std::time::Duration;

use chrono::TimeDelta;
use common::agent_world::{NODE, WAIT, World, queueing_kernel};
use common::wait_for;
use faultline::api::{FaultInjection, InjectionPhase};
use faultline::controller::REVERTING_CONFIGMAP;
use faultline::controller::applied_receipts::{AppliedReceipt, applied_of, key};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The applied receipt for the experiment behind `injection` on this node, once it names it.
async fn receipt_naming(maps: &Api<ConfigMap>, injection: &FaultInjection) -> AppliedReceipt {
    let uid = injection
        .spec
        .experiment
        .uid
        .clone()
        .expect("experiment UID");
    let name = injection.name_any();
    wait_for("the node's applied receipt", WAIT, || {
        let (maps, uid, name) = (maps.clone(), uid.clone(), name.clone());
        async move {
            let data = maps.get(REVERTING_CONFIGMAP).await.ok()?.data?;
            applied_of(&data, &uid)
                .into_iter()
                .find(|r| r.applied.contains_key(&name))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_receipt_says_the_fault_is_in_and_the_injections_own_status_follows() {
    let world = World::start(queueing_kernel()).await;
    let maps = world.signal_configmap(json!({})).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    let created = world.injection("lat", &pod, TimeDelta::minutes(5)).await;

    let receipt = receipt_naming(&maps, &created).await;
    assert_eq!(receipt.node, NODE);
    assert_eq!(receipt.experiment, "default/exp");
    let entry = &receipt.applied["lat"];
    assert_eq!(Some(entry.uid.clone()), created.uid());
    assert_eq!(entry.generation, created.metadata.generation);
    assert_eq!(entry.mechanism, "nfqueue");
    assert!(
        !world.kernel.rules().is_empty(),
        "a receipt only once the kernel holds the fault"
    );
    let uid = created.spec.experiment.uid.clone().unwrap();
    assert!(
        maps.get(REVERTING_CONFIGMAP)
            .await
            .unwrap()
            .data
            .unwrap()
            .contains_key(&key(&uid, NODE).unwrap()),
        "under the key the chart's admission policy lets only this node's agent write"
    );

    // The injection's own status follows, with what the receipt said and the packet counts.
    let applied = world.wait_phase("lat", InjectionPhase::Applied).await;
    let status = applied.status.unwrap();
    assert_eq!(status.mechanism.as_deref(), Some("nfqueue"));
    assert_eq!(status.applied_at, Some(entry.applied_at));
    assert_eq!(status.observed_generation, created.metadata.generation);
    assert_eq!(status.matched_packets, Some(0), "{status:?}");
    agent.abort();
}

/// The revert comes while the injection's `Applied` status is still held back: the revert's
/// status stands, and the held one is never written over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_held_back_never_lands_over_the_revert_that_came_first() {
    let world = World::start(queueing_kernel()).await;
    let maps = world.signal_configmap(json!({})).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    let created = world.injection("lat", &pod, TimeDelta::minutes(5)).await;
    receipt_naming(&maps, &created).await;

    // The controller's revert signal for the experiment, at once.
    let uid = created.spec.experiment.uid.clone().unwrap();
    maps.patch(
        REVERTING_CONFIGMAP,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {uid.clone(): "{\"experiment\":\"default/exp\"}"}})),
    )
    .await
    .unwrap();
    wait_for("the fault out of the kernel", WAIT, || async {
        world.kernel.rules().is_empty().then_some(())
    })
    .await;
    // Past the hold (one apply: it ends when the node's applies have been quiet): whatever was
    // held has had its chance to be written.
    tokio::time::sleep(faultline::agent::runner::HELD_STATUSES_QUIET + Duration::from_millis(500))
        .await;
    let phase = world
        .injections()
        .get("lat")
        .await
        .unwrap()
        .status
        .map(|s| s.phase);
    assert_ne!(
        phase,
        Some(InjectionPhase::Applied),
        "a held Applied status landed after the fault was taken out"
    );
    agent.abort();
}
