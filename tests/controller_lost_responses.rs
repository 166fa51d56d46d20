//! A controller on a bad network: one request in ten to the API server fails, half of them
//! before reaching it and half after it carried them out (the answer is lost, so the
//! controller cannot tell whether its delete, create or status write happened). The workload
//! of `common::disturbed` runs meanwhile (pod kills, latencies, an abort, a game day, a
//! schedule), and what it checks must hold: every retry is idempotent, no pod is killed
//! twice, no fault is left.
//!
//! The losses come from a seed printed by the test; `FAULTLINE_CRASH_SEED=N` replays a run
//! (as far as the order of requests allows). The agent and the test's own client are not
//! disturbed: the subject is the controller.

mod common;

use std::time::Duration;

use common::{disturbed::Workload, harness::Harness, lost_responses::LostResponses};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_loses_one_answer_in_ten_still_kills_once_and_leaves_no_fault() {
    let losses = LostResponses::new(10, common::disturbed::seed());
    let h = Harness::start_via(|config| losses.client_of(config)).await;
    h.namespace("shop", true).await;
    if h.cluster.is_real() {
        common::cluster::cordoned_node(&h.client, "node-1").await;
    }
    let url = common::disturbed::healthy_service().await;
    let workload = Workload::start(&h.client, &url).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    workload.abort_one(&h.client).await;
    tokio::time::sleep(Duration::from_secs(17)).await;
    let (before, after) = losses.counts();
    eprintln!(
        "25 s with {before} requests refused before reaching the API server and {after} answers lost after it acted"
    );
    assert!(
        before > 0 && after > 0,
        "the controller must have been disturbed"
    );
    workload.check(&h.client, 2).await;
    h.stop().await;
}
