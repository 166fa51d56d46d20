//! The controller says "every fault is confirmed reverted" only when an agent confirmed it
//! (issue 10): with no agent at all, a latency experiment's FaultInjection is written, never
//! applied, and deleted at the injection timeout without anyone holding it. The verdict says
//! what is unknown and what to check instead. Through the API server (embedded, or the real
//! control plane with `FAULTLINE_TEST_CLUSTER=real`).

mod common;

use common::harness::{Harness, latency_spec, shop_with_web_pods};
use faultline::api::{ConditionStatus, Phase, TargetState, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_agent_the_revert_is_never_called_confirmed() {
    let h = Harness::start_without_agent().await;
    shop_with_web_pods(&h, 1).await;
    h.create("shop", "latency", latency_spec("10m")).await;
    // The harness's injection timeout is 5s.
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
