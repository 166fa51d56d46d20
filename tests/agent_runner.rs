//! The agent's wiring through the kube client against the embedded API server, with an
//! in-memory kernel (`RecordingKernel`): finalizers, status, deadlines without the API server,
//! restarts from the journal, orphan cleanup, capabilities. The real kernel's mechanisms have
//! their own root tests (agent_partition, agent_nfqueue, agent_tc) and the sandbox end-to-end
//! test runs them together.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::agent_world::{NODE, ReceiptPlace, WAIT, World, queueing_kernel, tag_of};
use common::wait_for;
use faultline::agent::kernel::{Capabilities, Mechanism, RecordingKernel};
use faultline::agent::tag::InjectionTag;
use faultline::agent::telemetry::AgentMetrics;
use faultline::api::{
    AGENT_FINALIZER, ChaosExperiment, Direction, FaultInjection, FaultInjectionSpec,
    InjectionPhase, LatencyFault, NODE_CAPABILITIES_ANNOTATION, NODE_LABEL, NetworkFault,
    ObjectRef, PodRef, REVERTING_LABEL,
};
use faultline::sandbox::testkit;
use k8s_openapi::api::core::v1::Node;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn applies_with_a_finalizer_reports_status_and_reverts_on_delete() {
    let world = World::start(queueing_kernel()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;

    let applied = world.wait_phase("lat", InjectionPhase::Applied).await;
    let status = applied.status.clone().unwrap();
    assert_eq!(status.mechanism.as_deref(), Some("nfqueue"));
    assert!(status.applied_at.is_some());
    assert_eq!(status.observed_generation, applied.metadata.generation);
    assert!(applied.finalizers().iter().any(|f| f == AGENT_FINALIZER));
    assert_eq!(
        world.kernel.rules(),
        vec![(pod.clone(), tag_of(&applied), Mechanism::Nfqueue)]
    );

    // The node's capabilities are where the controller reads them.
    let nodes: Api<Node> = Api::all(world.client.clone());
    let annotation = wait_for("capabilities annotation", WAIT, || {
        let nodes = nodes.clone();
        async move {
            nodes
                .get(NODE)
                .await
                .unwrap()
                .annotations()
                .get(NODE_CAPABILITIES_ANNOTATION)
                .cloned()
        }
    })
    .await;
    assert_eq!(annotation, "nfqueue,nftables");

    world
        .injections()
        .delete("lat", &DeleteParams::default())
        .await
        .unwrap();
    world.wait_gone("lat").await;
    assert!(world.kernel.rules().is_empty());
    agent.abort();
}

/// The finalizer guards what is in the kernel: no fault's apply begins before its injection
/// carries the agent's finalizer (each pod's task writes it just before its apply; see
/// `Agent::step`). Many injections at once, each apply slowed to 300 ms so that every one is
/// seen while it is under way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_fault_is_applied_before_its_injection_carries_the_finalizer() {
    let world = World::start(queueing_kernel().with_delay(Duration::from_millis(300))).await;
    let agent = world.agent();
    const FAULTS: usize = 40;
    let mut pods = Vec::new();
    for i in 0..FAULTS {
        pods.push(world.pod(&format!("target-{i}")).await);
    }
    for (i, pod) in pods.iter().enumerate() {
        world
            .injection(&format!("lat-{i}"), pod, TimeDelta::minutes(5))
            .await;
    }
    let mut checked = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while checked.len() < FAULTS {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {FAULTS} applies began",
            checked.len()
        );
        // The kernel first, then the API server: the list is at least as new as the moment
        // each apply was seen begun.
        let begun = world.kernel.begun();
        let listed = world.injections().list(&Default::default()).await.unwrap();
        for injection in listed.items {
            let tag = tag_of(&injection);
            if begun.contains(&tag) && checked.insert(tag) {
                assert!(
                    injection.finalizers().iter().any(|f| f == AGENT_FINALIZER),
                    "the apply of {} began without the agent's finalizer on it",
                    injection.name_any()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    agent.abort();
}

/// Waits until the kernel has begun applying `injection`'s fault.
async fn wait_begun(world: &World, injection: &FaultInjection) {
    let tag = tag_of(injection);
    let kernel = world.kernel.clone();
    wait_for("the slow apply to begin", WAIT, || {
        let (kernel, tag) = (kernel.clone(), tag.clone());
        async move { kernel.begun().contains(&tag).then_some(()) }
    })
    .await;
}

/// An injection deleted while its apply is under way is reverted once the apply is done, and
/// its finalizer released only then: a revert that ran beside the apply would find nothing and
/// let a fault go in that nobody takes out. (An agent that plans new work while applies are
/// under way, tried on 2026-12-07, fails here unless it holds back every plan for a busy pod.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injection_deleted_during_its_apply_is_reverted_after_it() {
    let world = World::start(queueing_kernel()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.kernel.set_apply_delay(&pod, Duration::from_secs(2));
    let injection = world.injection("lat", &pod, TimeDelta::minutes(5)).await;
    wait_begun(&world, &injection).await;
    world
        .injections()
        .delete("lat", &DeleteParams::default())
        .await
        .unwrap();
    world.wait_gone("lat").await;
    assert!(
        world.kernel.rules().is_empty(),
        "the finalizer was released with the fault still in the kernel: {:?}",
        world.kernel.rules()
    );
    assert_eq!(world.kernel.apply_count(), 1, "applied once, then reverted");
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_faults_applied_write_carries_its_counts_and_still_counters_cost_no_write() {
    let world = World::start(queueing_kernel()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;

    let applied = world.wait_phase("lat", InjectionPhase::Applied).await;
    let status = applied.status.clone().unwrap();
    assert_eq!(status.matched_packets, Some(0), "{status:?}");
    assert_eq!(status.bypassed_packets, Some(0), "{status:?}");
    let version = applied.resource_version();
    // Several resyncs (200 ms each) with counters that do not move: nothing to write.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = world.injections().get("lat").await.unwrap();
    assert_eq!(later.resource_version(), version, "{:?}", later.status);

    // Once they move, they are written.
    world.kernel.set_counts(
        &tag_of(&applied),
        faultline::agent::kernel::QueueCounts {
            matched: 500,
            bypassed: 0,
        },
    );
    wait_for("the counts written", WAIT, || async {
        let status = world.injections().get("lat").await.ok()?.status?;
        (status.matched_packets == Some(500)).then_some(())
    })
    .await;
    agent.abort();
}

#[tokio::test]
async fn a_fault_the_node_cannot_do_fails_with_the_reason() {
    let world = World::start(RecordingKernel::new(Capabilities {
        nftables: true,
        ..Default::default()
    }))
    .await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;
    let failed = world.wait_phase("lat", InjectionPhase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(
        message.contains("sch_netem") && message.contains("NFQUEUE"),
        "{message}"
    );
    assert!(world.kernel.rules().is_empty());
    agent.abort();
}

#[tokio::test]
async fn reverts_at_the_deadline_with_the_api_server_gone() {
    let mut world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    // Long enough to be applied and seen before it ends, on a loaded machine too.
    world.injection("lat", &pod, TimeDelta::seconds(8)).await;
    world.wait_phase("lat", InjectionPhase::Applied).await;
    assert_eq!(world.kernel.rules().len(), 1);

    // The API server goes away for good: only the agent's own deadline can end the fault.
    world.server.take().unwrap().shutdown().await;
    world.wait_rules(0).await;
    agent.abort();
}

#[tokio::test]
async fn a_restarted_agent_reverts_what_ended_while_it_was_away_and_keeps_the_rest_once() {
    let world = World::start(RecordingKernel::full()).await;
    let first = world.agent();
    let pod = world.pod("target").await;
    let stays = world.injection("stays", &pod, TimeDelta::minutes(5)).await;
    world.injection("ends", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("stays", InjectionPhase::Applied).await;
    world.wait_phase("ends", InjectionPhase::Applied).await;
    assert_eq!(world.kernel.rules().len(), 2);

    // kill -9: no graceful anything. Then "ends" is deleted while no agent runs.
    first.abort();
    let _ = first.await;
    world
        .injections()
        .delete("ends", &DeleteParams::default())
        .await
        .unwrap();
    let applies_before = world.kernel.apply_count();

    let second = world.agent();
    world.wait_gone("ends").await;
    world.wait_rules(1).await;
    assert_eq!(world.kernel.rules()[0].1, tag_of(&stays));
    // "stays" was re-applied once (desired state after a restart), not duplicated.
    let kernel = world.kernel.clone();
    wait_for("the re-apply", WAIT, || {
        let kernel = kernel.clone();
        async move { (kernel.apply_count() == applies_before + 1).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(world.kernel.apply_count(), applies_before + 1);
    second.abort();
}

#[tokio::test]
async fn orphans_in_this_nodes_pods_are_removed_at_start() {
    let world = World::start(RecordingKernel::full()).await;
    let pod = world.pod("target").await;
    let live = world.injection("live", &pod, TimeDelta::minutes(5)).await;
    let stray = InjectionTag::from_uid("deadbeef-0000-4000-8000-000000000000").unwrap();
    world.kernel.plant(&pod, &stray, Mechanism::Nftables);

    let agent = world.agent();
    world.wait_phase("live", InjectionPhase::Applied).await;
    world.wait_rules(1).await;
    assert_eq!(world.kernel.rules()[0].1, tag_of(&live));
    agent.abort();
}

#[tokio::test]
async fn a_target_that_disappears_is_reported_and_not_followed() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("lat", InjectionPhase::Applied).await;

    world.kernel.remove_pod(&pod);
    let reverted = world.wait_phase("lat", InjectionPhase::Reverted).await;
    let message = reverted.status.unwrap().message.unwrap();
    assert!(message.contains("target pod is gone"), "{message}");

    // A new injection for a pod that is not on the node fails with that reason.
    world
        .injection("late", "0000-gone", TimeDelta::minutes(5))
        .await;
    let failed = world.wait_phase("late", InjectionPhase::Failed).await;
    assert!(
        failed
            .status
            .unwrap()
            .message
            .unwrap()
            .contains("not running on this node"),
    );
    agent.abort();
}

fn bandwidth(rate: &str) -> NetworkFault {
    NetworkFault {
        bandwidth: Some(faultline::api::BandwidthFault {
            rate: rate.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_second_qdisc_fault_on_a_pod_is_refused_naming_the_first() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world
        .injection_with("bw-1", &pod, TimeDelta::minutes(5), bandwidth("8mbit"))
        .await;
    world.wait_phase("bw-1", InjectionPhase::Applied).await;
    world
        .injection_with("bw-2", &pod, TimeDelta::minutes(5), bandwidth("16mbit"))
        .await;
    let failed = world.wait_phase("bw-2", InjectionPhase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(
        message.contains("default/bw-1") && message.contains("do not stack"),
        "{message}"
    );
    // Never "applied" with no effect, and the first one is untouched.
    assert_eq!(world.kernel.rules().len(), 1);
    let first = world.injections().get("bw-1").await.unwrap();
    assert_eq!(first.status.unwrap().phase, InjectionPhase::Applied);
    agent.abort();
}

/// Phase order: an injection's status may only move forward for a generation.
fn rank(phase: InjectionPhase) -> u8 {
    match phase {
        InjectionPhase::Pending => 0,
        InjectionPhase::Applied => 1,
        InjectionPhase::Reverted | InjectionPhase::Failed => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_injections_never_see_their_phase_go_backwards() {
    let world = World::start(queueing_kernel()).await;
    // Every status change, as a watcher sees it.
    let seen: Arc<std::sync::Mutex<Vec<FaultInjection>>> = Arc::default();
    let watch = {
        let seen = Arc::clone(&seen);
        let api = world.injections();
        tokio::spawn(async move {
            use futures::StreamExt;
            let stream = kube::runtime::watcher(api, Default::default());
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(kube::runtime::watcher::Event::Apply(i)) = event {
                    seen.lock().unwrap().push(i);
                }
            }
        })
    };
    let agent = world.agent();
    let mut pods = Vec::new();
    for p in 0..8 {
        pods.push(world.pod(&format!("target-{p}")).await);
    }
    const N: usize = 40;
    for n in 0..N {
        world
            .injection(
                &format!("lat-{n}"),
                &pods[n % pods.len()],
                TimeDelta::minutes(5),
            )
            .await;
    }
    // The NFQUEUE counters move all the time, so counter writes race with phase writes (the
    // old bug: a counter write carried a stale phase over Applied).
    let counting = {
        let kernel = world.kernel.clone();
        let api = world.injections();
        tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tick += 1;
                for injection in api.list(&Default::default()).await.unwrap().items {
                    let tag = InjectionTag::from_uid(&injection.uid().unwrap()).unwrap();
                    kernel.set_counts(
                        &tag,
                        faultline::agent::kernel::QueueCounts {
                            matched: tick * 100,
                            bypassed: tick,
                        },
                    );
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    for n in 0..N {
        world
            .wait_phase(&format!("lat-{n}"), InjectionPhase::Applied)
            .await;
    }
    // Half end while counters keep moving.
    for n in (0..N).step_by(2) {
        world
            .injections()
            .delete(&format!("lat-{n}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    for n in (0..N).step_by(2) {
        world.wait_gone(&format!("lat-{n}")).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.abort();
    watch.abort();
    let seen: Vec<_> = seen.lock().unwrap().clone();
    let mut last: std::collections::BTreeMap<String, (Option<i64>, InjectionPhase)> =
        Default::default();
    let mut writes = 0;
    for injection in seen.iter() {
        let Some(status) = &injection.status else {
            continue;
        };
        writes += 1;
        let name = injection.name_any();
        if let Some((generation, phase)) = last.get(&name)
            && *generation == status.observed_generation
        {
            assert!(
                rank(status.phase) >= rank(*phase),
                "{name}: phase went from {phase:?} back to {:?}",
                status.phase
            );
        }
        last.insert(name, (status.observed_generation, status.phase));
    }
    eprintln!("{writes} status versions of {N} injections watched, none went backwards");
    // The ones left are Applied, with their counts.
    for n in (1..N).step_by(2) {
        let injection = world.injections().get(&format!("lat-{n}")).await.unwrap();
        let status = injection.status.unwrap();
        assert_eq!(status.phase, InjectionPhase::Applied);
        assert!(status.matched_packets.unwrap_or(0) > 0, "{status:?}");
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == "FullyApplied")
            .expect("a FullyApplied condition");
        assert!(
            condition.message.contains("passed without the fault"),
            "{condition:?}"
        );
    }
    agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_stale_journal_entries_do_not_delay_a_new_injection() {
    let world = World::start(RecordingKernel::full()).await;
    // An agent was away while 100,000 of its faults ended and their pods went: its journal.
    let stale = 100_000;
    {
        use std::io::Write;
        let file = std::fs::File::create(world.journal.path().join("journal.log")).unwrap();
        let mut out = std::io::BufWriter::new(file);
        let expired = Utc::now() - TimeDelta::minutes(1);
        for n in 0..stale {
            let uid = format!("{n:08x}-0000-4000-8000-000000000000");
            let entry = faultline::agent::journal::JournalEntry {
                tag: InjectionTag::from_uid(&uid).unwrap().to_string(),
                injection: format!("default/old-{n}"),
                injection_uid: uid,
                pod_uid: format!("gone-pod-{}", n % 1000),
                fault: NetworkFault::default(),
                // Half expired, half merely no longer backed by any injection.
                expires_at: if n % 2 == 0 {
                    expired
                } else {
                    Utc::now() + TimeDelta::minutes(5)
                },
                generation: Some(1),
                mechanism: Some("nfqueue".into()),
                baseline: Some("pod: nft table inet filter".into()),
                applied_at: Some(expired),
            };
            out.write_all(
                faultline::agent::journal::put_line(&entry)
                    .unwrap()
                    .as_bytes(),
            )
            .unwrap();
        }
    }
    let pod = world.pod("target").await;
    world.injection("new", &pod, TimeDelta::minutes(5)).await;
    let started = std::time::Instant::now();
    let agent = world.agent();
    world.wait_phase("new", InjectionPhase::Applied).await;
    let applied = started.elapsed();
    let replayed = std::fs::read_dir(world.journal.path())
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains("corrupt"));
    assert!(replayed, "the journal was read, not kept aside");
    let journal = world.journal.path().join("journal.log");
    wait_for("the journal drained", WAIT, || {
        let journal = journal.clone();
        async move { (std::fs::metadata(&journal).ok()?.len() < 4096).then_some(()) }
    })
    .await;
    let drained = started.elapsed();
    eprintln!(
        "JOURNAL {stale} stale entries: new injection applied {applied:?} after start, journal drained (compacted) after {drained:?}"
    );
    // The promise (and benches/agent_journal.rs, an optimized build) is within 1 s; an
    // unoptimized test build on a busy machine gets more room.
    let limit = if cfg!(debug_assertions) {
        Duration::from_secs(15)
    } else {
        Duration::from_secs(1)
    };
    assert!(applied < limit, "applied only after {applied:?}");
    assert_eq!(world.kernel.rules().len(), 1);
    agent.abort();
}

#[tokio::test]
async fn an_unusable_journal_makes_the_agent_visibly_not_ready() {
    let world = World::start(RecordingKernel::full()).await;
    // A file where the journal's directory should be.
    let broken = world.journal.path().join("not-a-directory");
    std::fs::write(&broken, b"").unwrap();
    let metrics = AgentMetrics::new();
    let agent = world.agent_in(broken.clone(), metrics.clone());
    let pod = world.pod("target").await;
    world.injection("lat", &pod, TimeDelta::minutes(5)).await;
    let failed = world.wait_phase("lat", InjectionPhase::Failed).await;
    let message = failed.status.unwrap().message.unwrap();
    assert!(
        message.contains("journal") && message.contains("not-a-directory"),
        "{message}"
    );
    let reason = metrics.readiness().unwrap_err();
    assert!(reason.contains("not-a-directory"), "{reason}");
    let nodes: Api<Node> = Api::all(world.client.clone());
    let annotation = wait_for("the node says why", WAIT, || {
        let nodes = nodes.clone();
        async move {
            nodes
                .get(NODE)
                .await
                .unwrap()
                .annotations()
                .get(NODE_CAPABILITIES_ANNOTATION)
                .filter(|a| a.starts_with("none (agent not ready"))
                .cloned()
        }
    })
    .await;
    assert!(annotation.contains("not-a-directory"), "{annotation}");
    assert!(
        world.kernel.rules().is_empty(),
        "nothing applied without a journal"
    );

    // Fixed: the agent becomes ready by itself and applies.
    std::fs::remove_file(&broken).unwrap();
    wait_for("ready", WAIT, || {
        let metrics = metrics.clone();
        async move { metrics.readiness().ok() }
    })
    .await;
    world.injection("lat-2", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("lat-2", InjectionPhase::Applied).await;
    agent.abort();
}

#[tokio::test]
async fn a_second_latency_on_a_netem_pod_is_queued_in_userspace_so_both_act() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target").await;
    world.injection("lat-1", &pod, TimeDelta::minutes(5)).await;
    let first = world.wait_phase("lat-1", InjectionPhase::Applied).await;
    assert_eq!(first.status.unwrap().mechanism.as_deref(), Some("netem"));
    world.injection("lat-2", &pod, TimeDelta::minutes(5)).await;
    let second = world.wait_phase("lat-2", InjectionPhase::Applied).await;
    let status = second.status.unwrap();
    assert_eq!(status.mechanism.as_deref(), Some("nfqueue"));
    let message = status.message.unwrap();
    assert!(
        message.contains("default/lat-1") && message.contains("add up"),
        "{message}"
    );
    assert_eq!(world.kernel.rules().len(), 2);
    agent.abort();
}

#[tokio::test]
async fn a_work_item_without_an_experiment_is_refused_and_counted() {
    let world = World::start(RecordingKernel::full()).await;
    let metrics = AgentMetrics::new();
    let agent = world.agent_in(world.journal.path().to_path_buf(), metrics.clone());
    let pod = world.pod("target").await;
    // A valid one first, so the namespace has opted in and the experiment exists.
    world.injection("valid", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("valid", InjectionPhase::Applied).await;
    // Then one written by hand that names no experiment: no testkit::vouch_for.
    let mut forged = FaultInjection::new(
        "forged",
        FaultInjectionSpec {
            experiment: ObjectRef {
                name: "nobody".into(),
                uid: None,
            },
            target: PodRef {
                namespace: "default".into(),
                name: "target".into(),
                uid: pod.clone(),
            },
            node_name: NODE.into(),
            fault: bandwidth("1mbit"),
            expires_at: Utc::now() + TimeDelta::minutes(5),
        },
    );
    forged.labels_mut().insert(NODE_LABEL.into(), NODE.into());
    world
        .injections()
        .create(&PostParams::default(), &forged)
        .await
        .unwrap();
    let failed = world.wait_phase("forged", InjectionPhase::Failed).await;
    let status = failed.status.unwrap();
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("no ChaosExperiment default/nobody")),
        "{status:?}"
    );
    // Only the valid one is in the kernel, and the refusal is counted by reason.
    assert_eq!(world.kernel.rules().len(), 1, "{:?}", world.kernel.rules());
    assert_eq!(world.kernel.apply_count(), 1);
    let rendered = metrics.render();
    assert!(
        rendered.contains("faultline_agent_refusals_total{reason=\"ExperimentNotFound\"} 1"),
        "{rendered}"
    );
    agent.abort();
}

/// The revert signal alone (the controller's key for the experiment in the
/// `faultline-reverting` ConfigMap, written beside the label and sooner on a loaded API
/// server): the agent takes the experiment's faults out and writes its receipt, the label not
/// needed; an experiment the signal does not name keeps its fault.
#[tokio::test]
async fn the_revert_signal_alone_takes_an_experiments_faults_out() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target-0").await;
    let named = world.injection("lat-0", &pod, TimeDelta::minutes(5)).await;
    let other_pod = world.pod("other").await;
    let mut other = FaultInjection::new(
        "lat-other",
        FaultInjectionSpec {
            experiment: ObjectRef {
                name: "other-exp".into(),
                uid: None,
            },
            ..named.spec.clone()
        },
    );
    other.spec.target.uid = other_pod.clone();
    other.spec.target.name = "other".into();
    other.labels_mut().insert(NODE_LABEL.into(), NODE.into());
    other.metadata.namespace = Some("default".into());
    testkit::vouch_for(&world.client, &mut other).await.unwrap();
    world
        .injections()
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    world.wait_phase("lat-0", InjectionPhase::Applied).await;
    world.wait_phase("lat-other", InjectionPhase::Applied).await;
    world.wait_rules(2).await;

    let uid = named
        .spec
        .experiment
        .uid
        .clone()
        .expect("the experiment's UID");
    world.signal_configmap(json!({uid: "default/exp"})).await;

    let experiments: Api<ChaosExperiment> = Api::namespaced(world.client.clone(), "default");
    let (receipt, place) = world.receipt().await;
    assert_eq!((receipt.node.as_str(), receipt.injections), (NODE, 1));
    assert_eq!(
        place,
        ReceiptPlace::SignalConfigMap,
        "beside the signal: a write of a few hundred bytes, not of the experiment"
    );
    let exp = experiments.get("exp").await.unwrap();
    assert!(
        !exp.labels().contains_key(REVERTING_LABEL),
        "the signal alone did it"
    );
    let left: Vec<String> = world
        .kernel
        .rules()
        .into_iter()
        .map(|(pod, _, _)| pod)
        .collect();
    assert_eq!(
        left,
        vec![other_pod],
        "only the named experiment's fault came out"
    );
    agent.abort();
}

/// Something else removes a fault's rules (`nft flush ruleset` in the pod): the agent notices at
/// a resync, applies the fault again (same deadline) and says so with a Warning Event, instead
/// of the experiment going on saying a fault is in that no longer acts.
#[tokio::test]
async fn rules_removed_behind_the_agents_back_are_applied_again_and_said() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target-0").await;
    let injection = world.injection("lat-0", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("lat-0", InjectionPhase::Applied).await;
    world.wait_rules(1).await;
    let tag = tag_of(&injection);
    let deadline = world.kernel.deadline_of(&tag);
    // Two resyncs (200 ms each): the agent has seen the fault's table in the kernel.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let applies = world.kernel.apply_count();

    world.kernel.tamper(&tag);
    assert!(world.kernel.rules().is_empty());
    world.wait_rules(1).await;
    assert!(world.kernel.apply_count() > applies, "applied again");
    assert_eq!(
        world.kernel.deadline_of(&tag),
        deadline,
        "with the deadline it had"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(world.client.clone(), "default");
    let note = wait_for("the RulesRestored Event", WAIT, || {
        let events = events.clone();
        async move {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("RulesRestored"))?
                .note
        }
    })
    .await;
    assert!(
        note.contains("were removed by something other than faultline"),
        "{note}"
    );
    agent.abort();
}

/// A fault the agent ended at its deadline before the experiment reverted (the controller could
/// not act: the API server out of reach, no controller running): the node's receipt, written
/// when the revert comes, says when the fault really left the kernel, not when it was written.
#[tokio::test]
async fn a_receipt_says_when_the_faults_left_not_when_it_was_written() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let pod = world.pod("target-0").await;
    world.injection("lat-0", &pod, TimeDelta::seconds(1)).await;
    world.wait_phase("lat-0", InjectionPhase::Applied).await;
    let expired = world.wait_phase("lat-0", InjectionPhase::Reverted).await;
    let out_at = expired.status.unwrap().reverted_at.unwrap();
    assert!(world.kernel.rules().is_empty(), "the deadline took it out");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let signalled_at = chrono::Utc::now();
    let experiments: Api<ChaosExperiment> = Api::namespaced(world.client.clone(), "default");
    experiments
        .patch(
            "exp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {REVERTING_LABEL: "true"}}})),
        )
        .await
        .unwrap();
    let (receipt, _) = world.receipt().await;
    assert_eq!((receipt.node.as_str(), receipt.injections), (NODE, 1));
    assert!(
        receipt.reverted_at < signalled_at,
        "the receipt says {} though the fault left at the deadline ({out_at}), before the revert was asked for at {signalled_at}",
        receipt.reverted_at
    );
    assert!(
        (receipt.reverted_at - out_at).num_milliseconds().abs() < 500,
        "receipt {} against the revert's own report {out_at}",
        receipt.reverted_at
    );
    agent.abort();
}

/// The controller's signal that an experiment's faults are to come out is one label on the
/// experiment (here, with no signal's ConfigMap at all); the agent takes every fault of it out
/// in one pass and confirms with one receipt for its node, in the experiment's status since
/// there is no ConfigMap to leave it in: no write per FaultInjection, no deletion needed.
/// An injection of that experiment that arrives afterwards is never applied.
#[tokio::test]
async fn a_reverting_experiment_loses_all_its_faults_and_gets_one_receipt_for_the_node() {
    let world = World::start(RecordingKernel::full()).await;
    let agent = world.agent();
    let mut names = Vec::new();
    for n in 0..3 {
        let pod = world.pod(&format!("target-{n}")).await;
        let name = format!("lat-{n}");
        world.injection(&name, &pod, TimeDelta::minutes(5)).await;
        names.push(name);
    }
    for name in &names {
        world.wait_phase(name, InjectionPhase::Applied).await;
    }
    world.wait_rules(3).await;

    let experiments: Api<ChaosExperiment> = Api::namespaced(world.client.clone(), "default");
    experiments
        .patch(
            "exp",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {REVERTING_LABEL: "true"}}})),
        )
        .await
        .unwrap();
    let (receipt, place) = world.receipt().await;
    assert_eq!(
        place,
        ReceiptPlace::Status,
        "no signal's ConfigMap to leave it in (only the label said it): the experiment's status"
    );
    // The receipt is written after the pass: the kernel holds nothing of it by then.
    assert!(
        world.kernel.rules().is_empty(),
        "{:?}",
        world.kernel.rules()
    );
    assert_eq!(receipt.node, NODE);
    assert_eq!(receipt.injections, 3);
    assert_eq!(receipt.failed, None);
    for name in &names {
        let injection = world.injections().get(name).await.unwrap();
        assert!(injection.metadata.deletion_timestamp.is_none());
        assert_eq!(
            injection.status.unwrap().phase,
            InjectionPhase::Applied,
            "no status write per injection: the receipt speaks for {name}"
        );
    }

    // Late work for the reverting experiment: never applied, and no receipt rewritten for it.
    let pod = world.pod("late").await;
    world
        .injection("lat-late", &pod, TimeDelta::minutes(5))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        world.kernel.rules().is_empty(),
        "{:?}",
        world.kernel.rules()
    );
    assert_eq!(world.kernel.apply_count(), 3);

    // The controller's housekeeping: the agent lets go of each at once (nothing to revert).
    world
        .injections()
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .unwrap();
    for name in names.iter().chain([&"lat-late".to_string()]) {
        world.wait_gone(name).await;
    }
    agent.abort();
}

/// A resume the agent's watch has not delivered yet: the work item its cache would refuse as
/// paused is checked with the API server first, and is neither refused nor applied until the
/// cache has caught up; then it is applied.
#[tokio::test]
async fn a_resume_the_agents_cache_has_not_seen_refuses_nothing() {
    let world = World::start(RecordingKernel::full()).await;
    common::cluster::apply_namespace(&world.client, "faultline-system", false).await;
    let switch = |paused: bool| common::cluster::set_paused(&world.client, paused);
    switch(true).await;
    // The agent lists the switch (paused) and then hears nothing more of it until released.
    let held = common::held_responses::HeldResponses::new(&[
        "/configmaps",
        "watch=",
        faultline::controller::PAUSE_CONFIGMAP,
    ]);
    let yaml = world.server.as_ref().unwrap().kubeconfig_yaml();
    let agent = world.agent_with(
        held.client(&yaml).await,
        world.journal.path().to_path_buf(),
        AgentMetrics::new(),
    );
    let pod = world.pod("target").await;
    // Written while paused: refused, on the word of a cache that is right.
    world.injection("during", &pod, TimeDelta::minutes(5)).await;
    let refused = world.wait_phase("during", InjectionPhase::Failed).await;
    let message = refused.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("paused"), "{message}");

    switch(false).await;
    world.injection("after", &pod, TimeDelta::minutes(5)).await;
    // Many of the agent's steps (every 200 ms) see it with the cache still saying paused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = world.injections().get("after").await.unwrap();
    let phase = waiting.status.map(|s| s.phase).unwrap_or_default();
    assert_eq!(
        phase,
        InjectionPhase::Pending,
        "refused on a stale cache's word"
    );
    assert!(world.kernel.rules().is_empty());

    held.release();
    world.wait_phase("after", InjectionPhase::Applied).await;
    assert_eq!(world.kernel.rules().len(), 1);
    agent.abort();
}

/// A consent withdrawn a moment ago (the namespace's opt-in label removed) that the agent's
/// watch has not delivered: the work item about to be applied is refused on the API server's
/// word, not applied on the cache's. Once the cache catches up, the fault already in goes too.
#[tokio::test]
async fn a_withdrawn_consent_the_agents_cache_has_not_seen_is_not_applied() {
    let world = World::start(RecordingKernel::full()).await;
    let pod = world.pod("target").await;
    common::cluster::apply_namespace(&world.client, "default", true).await;
    // The agent lists the namespaces (opted in) and then hears nothing more of them.
    let held = common::held_responses::HeldResponses::new(&["/api/v1/namespaces?", "watch="]);
    let yaml = world.server.as_ref().unwrap().kubeconfig_yaml();
    let agent = world.agent_with(
        held.client(&yaml).await,
        world.journal.path().to_path_buf(),
        AgentMetrics::new(),
    );
    world.injection("first", &pod, TimeDelta::minutes(5)).await;
    world.wait_phase("first", InjectionPhase::Applied).await;

    let fault = NetworkFault {
        latency: Some(LatencyFault {
            latency: "80ms".into(),
            direction: Direction::To,
            ..Default::default()
        }),
        ..Default::default()
    };
    let second = world
        .vouched("second", &pod, TimeDelta::minutes(5), fault)
        .await;
    common::cluster::apply_namespace(&world.client, "default", false).await;
    world
        .injections()
        .create(&PostParams::default(), &second)
        .await
        .unwrap();
    let refused = world.wait_phase("second", InjectionPhase::Failed).await;
    let message = refused.status.unwrap().message.unwrap_or_default();
    assert!(message.contains("faultline.dev/chaos=enabled"), "{message}");
    assert_eq!(
        world.kernel.rules().len(),
        1,
        "applied on a stale cache's word"
    );

    held.release();
    world.wait_rules(0).await;
    agent.abort();
}
