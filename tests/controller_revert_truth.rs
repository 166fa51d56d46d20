//! The controller says "every fault is confirmed reverted" only when an agent confirmed it
//! (issue 10): with no agent at all, a latency experiment's FaultInjection is written (with the
//! agent's finalizer already on it), never applied, deleted at the injection timeout, and let go
//! of by the controller once `abort.revertTimeout` passed without any agent taking it up. The
//! verdict says what is unknown and what to check instead. And a fault whose agent reported it
//! applied and then went silent ends the experiment Error at the revert timeout, naming it; its
//! FaultInjection is held until the kernel's deadline for the fault has passed, and then let
//! go of by the controller (see `controller::expired_holds`), with a Warning Event on the
//! experiment, or on the pod when the experiment is gone.
//! Through the API server (embedded, or the real control plane with
//! `FAULTLINE_TEST_CLUSTER=real`).

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::api::{
    AGENT_FINALIZER, ConditionStatus, FaultInjection, InjectionPhase, Phase, TargetState, Verdict,
};
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

fn with_revert_timeout(mut spec: serde_json::Value, timeout: &str) -> serde_json::Value {
    spec["abort"] = json!({"revertTimeout": timeout});
    spec
}

async fn the_injection(h: &Harness) -> FaultInjection {
    wait_for("the FaultInjection", Duration::from_secs(10), || async {
        h.injections("shop")
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .pop()
    })
    .await
}

/// What an agent writes once the fault is in (the agent itself is not running).
async fn report_applied(h: &Harness, injection: &FaultInjection) {
    let applied = json!({"status": {"phase": "Applied", "mechanism": "nfqueue",
        "appliedAt": chrono::Utc::now(), "observedGeneration": injection.metadata.generation}});
    h.injections("shop")
        .patch_status(
            &injection.name_any(),
            &PatchParams::default(),
            &Patch::Merge(applied),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_agent_the_revert_is_never_called_confirmed() {
    let h = Harness::start_without_agent().await;
    shop_with_web_pods(&h, 1).await;
    h.create(
        "shop",
        "latency",
        with_revert_timeout(latency_spec("10m"), "6s"),
    )
    .await;
    let created = the_injection(&h).await;
    assert_eq!(
        created.finalizers(),
        [AGENT_FINALIZER],
        "the controller puts the agent's finalizer on at creation"
    );
    // The harness's injection timeout is 5s; the deleted injection, which nobody holds but the
    // finalizer put on at creation, keeps the revert open until the revert timeout.
    let deleting = wait_for(
        "the FaultInjection to be deleted",
        Duration::from_secs(15),
        || async {
            let i = h
                .injections("shop")
                .get_opt(&created.name_any())
                .await
                .ok()??;
            i.metadata.deletion_timestamp.is_some().then_some(i)
        },
    )
    .await;
    assert_eq!(deleting.finalizers(), [AGENT_FINALIZER]);
    let aborting = h.experiments("shop").get("latency").await.unwrap();
    assert_eq!(
        aborting.status.unwrap().phase,
        Phase::Aborting,
        "the revert waits for the unclaimed injection"
    );
    let done = h.wait_phase("shop", "latency", Phase::Failed).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Error), "{:?}", status.message);
    assert_eq!(status.reason.as_deref(), Some("InjectFailed"));
    let message = status.message.clone().unwrap_or_default();
    assert!(!message.contains("confirmed reverted"), "{message}");
    assert!(
        message.contains(
            "no agent confirmed a revert for networkLatency on pod shop/web-0 (node node-1)"
        ),
        "{message}"
    );
    assert!(
        message.contains("check the faultline agent on that node"),
        "{message}"
    );
    let reverted = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reverted")
        .expect("a Reverted condition");
    assert_eq!(reverted.status, ConditionStatus::Unknown, "{reverted:?}");
    assert_eq!(reverted.reason, "RevertUnconfirmed");
    let record = &status.targets[0];
    assert_eq!(record.state, TargetState::Reverted);
    assert!(
        record
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("no agent confirmed its revert"),
        "{record:?}"
    );
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_whose_agent_went_silent_fails_the_revert_and_is_let_go_of_after_its_deadline() {
    let h = Harness::start_without_agent().await;
    shop_with_web_pods(&h, 1).await;
    h.create(
        "shop",
        "latency",
        with_revert_timeout(latency_spec("3s"), "2s"),
    )
    .await;
    // An agent reports the fault applied, then dies: nobody confirms the revert or lets go.
    let injection = the_injection(&h).await;
    report_applied(&h, &injection).await;
    let done = h.wait_phase("shop", "latency", Phase::Failed).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Error), "{:?}", status.message);
    assert_eq!(status.reason.as_deref(), Some("RevertFailed"));
    let message = status.message.unwrap_or_default();
    for words in [
        "shop/web-0 on node node-1",
        "has not confirmed its revert within 2s",
        "(expiresAt)",
        "check the faultline agent on that node",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    // The controller does not let go of a fault an agent said it holds.
    let left = h
        .injections("shop")
        .get(&injection.name_any())
        .await
        .unwrap();
    assert!(left.metadata.deletion_timestamp.is_some());
    assert_eq!(left.finalizers(), [AGENT_FINALIZER]);
    assert_eq!(left.status.map(|s| s.phase), Some(InjectionPhase::Applied));
    // The agent never comes back. The kernel ended the fault at `expiresAt`; past it by the
    // margin for the node's clock (the harness's: 1 s), the controller lets go of the object
    // and says so on the experiment.
    let expires_at = left.spec.expires_at;
    wait_for(
        "the FaultInjection let go of after its deadline",
        Duration::from_secs(60),
        || async {
            let gone = h
                .injections("shop")
                .get_opt(&injection.name_any())
                .await
                .ok()?
                .is_none();
            gone.then_some(())
        },
    )
    .await;
    let released_after = chrono::Utc::now() - expires_at;
    assert!(
        released_after >= chrono::TimeDelta::seconds(1),
        "let go of {released_after} after expiresAt, before the margin"
    );
    let event = h.wait_event("shop", "ExpiredHoldReleased", |_| true).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.regarding.and_then(|r| r.name).as_deref(),
        Some("latency")
    );
    let note = event.note.unwrap_or_default();
    for words in [
        "(shop/web-0) on node node-1",
        "the kernel ended the fault at its deadline",
        "Check the faultline agent on node-1",
    ] {
        assert!(note.contains(words), "{words:?} in {note}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_fault_whose_experiment_is_gone_is_let_go_of_with_an_event_on_its_pod() {
    let h = Harness::start_without_agent().await;
    shop_with_web_pods(&h, 1).await;
    h.create("shop", "latency", latency_spec("3s")).await;
    let injection = the_injection(&h).await;
    report_applied(&h, &injection).await;
    // The agent dies, and someone deletes the experiment and forces its finalizer off: the
    // experiment is gone, its injection is deleted and still held by the silent agent.
    let experiments = h.experiments("shop");
    experiments
        .delete("latency", &Default::default())
        .await
        .unwrap();
    h.injections("shop")
        .delete(&injection.name_any(), &Default::default())
        .await
        .unwrap();
    experiments
        .patch(
            "latency",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    wait_for("the experiment gone", Duration::from_secs(10), || async {
        experiments
            .get_opt("latency")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    h.wait_no_injections("shop", Duration::from_secs(60)).await;
    let event = h.wait_event("shop", "ExpiredHoldReleased", |_| true).await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let regarding = event.regarding.unwrap_or_default();
    assert_eq!(
        (regarding.kind.as_deref(), regarding.name.as_deref()),
        (Some("Pod"), Some("web-0")),
        "with the experiment gone, the Event is on the fault's pod"
    );
    let note = event.note.unwrap_or_default();
    assert!(note.contains("(shop/web-0) on node node-1"), "{note}");
    h.stop().await;
}
