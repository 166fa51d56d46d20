//! A node agent on a bad network: one request in ten to the API server fails, half of them
//! before reaching it and half after the server acted (the agent cannot tell whether its
//! finalizer, status or finalizer removal was written). With an in-memory kernel: every fault
//! is applied once and only once, reported Applied, and taken out when its work item goes,
//! whose deletion completes; nothing is left in the kernel.
//!
//! The losses come from a seed printed by the test; `FAULTLINE_CRASH_SEED=N` replays a run (as
//! far as the order of requests allows). The test's own client is not disturbed.

mod common;

use std::collections::BTreeSet;

use chrono::TimeDelta;
use common::agent_world::{World, queueing_kernel, tag_of};
use common::lost_responses::LostResponses;
use faultline::agent::telemetry::AgentMetrics;
use faultline::api::InjectionPhase;
use kube::api::DeleteParams;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_loses_one_answer_in_ten_applies_each_fault_once_and_leaves_none() {
    let world = World::start(queueing_kernel()).await;
    let losses = LostResponses::new(10, common::disturbed::seed());
    let lossy = losses.client_of(world.server.as_ref().unwrap().client_config());
    let agent = world.agent_with(
        lossy,
        world.journal.path().to_path_buf(),
        AgentMetrics::new(),
    );
    let mut pods = Vec::new();
    for p in 0..6 {
        pods.push(world.pod(&format!("target-{p}")).await);
    }
    const N: usize = 30;
    let mut tags = BTreeSet::new();
    for n in 0..N {
        let injection = world
            .injection(
                &format!("lat-{n}"),
                &pods[n % pods.len()],
                TimeDelta::minutes(5),
            )
            .await;
        tags.insert(tag_of(&injection));
    }
    for n in 0..N {
        world
            .wait_phase(&format!("lat-{n}"), InjectionPhase::Applied)
            .await;
    }
    let in_kernel: BTreeSet<_> = world
        .kernel
        .rules()
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(in_kernel, tags, "each fault in the kernel, and only those");
    assert_eq!(
        world.kernel.apply_count(),
        N,
        "no fault applied twice: a lost answer is not a reason to apply again"
    );

    for n in 0..N {
        world
            .injections()
            .delete(&format!("lat-{n}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    for n in 0..N {
        world.wait_gone(&format!("lat-{n}")).await;
    }
    assert!(
        world.kernel.rules().is_empty(),
        "left in the kernel: {:?}",
        world.kernel.rules()
    );
    let (before, after) = losses.counts();
    eprintln!(
        "{N} faults applied once each and reverted, with {before} requests refused before reaching the API server and {after} answers lost after it acted"
    );
    assert!(
        before > 0 && after > 0,
        "the agent must have been disturbed"
    );
    agent.abort();
}
