//! The revert signal: as an abort begins, the controller names the experiment, with the
//! abort's cause and start, in the `faultline-reverting` ConfigMap (a write of a few hundred
//! bytes the agents hear of at once) instead of labelling the experiment (a write of the whole
//! object); a controller that stops before the abort reaches status finds it there and carries
//! it on; the key goes once the experiment is over and none of its work items is left; and a
//! controller that cannot write the signal labels the experiment as before. Against the
//! embedded API server, or the real control plane with `FAULTLINE_TEST_CLUSTER=real`.

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::{
    api::{ABORTING_ANNOTATION, ChaosExperiment, Phase, ProbePhase, REVERTING_LABEL, Verdict},
    controller::{REVERTING_CONFIGMAP, revert_signal::Signal},
    lifecycle::HypothesisView,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};

const WAIT: Duration = Duration::from_secs(30);

/// Runs `quick` in `shop` on two pods, then breaks its hypothesis.
async fn running_then_broken(h: &Harness, name: &str) -> ChaosExperiment {
    shop_with_web_pods(h, 2).await;
    h.create("shop", name, latency_spec("10m")).await;
    let running = h.wait_phase("shop", name, Phase::Running).await;
    h.break_hypothesis(&running);
    running
}

/// The signal's entry for experiment `uid`, once there.
async fn signal_of(h: &Harness, uid: &str) -> Signal {
    let maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.controller_namespace);
    wait_for("the experiment's key in the revert signal", WAIT, || {
        let maps = maps.clone();
        async move {
            let map = maps.get_opt(REVERTING_CONFIGMAP).await.ok()??;
            map.data?.get(uid).map(|value| Signal::parse(value))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_is_signalled_not_labelled_and_its_key_goes_when_nothing_needs_it() {
    let h = Harness::start().await;
    let running = running_then_broken(&h, "signalled").await;
    let uid = running.uid().unwrap();
    let signal = signal_of(&h, &uid).await;
    assert_eq!(signal.experiment, "shop/signalled");
    let abort = signal.abort.expect("the abort rides with the signal");
    assert_eq!(abort.reason, "ProbeFailed");
    assert!(abort.message.contains("status 503"), "{abort:?}");

    // The stand-in agent writes no receipts: the abort ends by housekeeping.
    let done = h.wait_phase("shop", "signalled", Phase::Aborted).await;
    assert!(
        !done.labels().contains_key(REVERTING_LABEL),
        "no write of the whole experiment to tell the agents: {:?}",
        done.labels()
    );
    let status = done.status.unwrap();
    assert_eq!(status.abort_started_at, Some(abort.since));

    let maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.controller_namespace);
    wait_for("the key swept from the revert signal", WAIT, || {
        let maps = maps.clone();
        let uid = uid.clone();
        async move {
            let map = maps.get_opt(REVERTING_CONFIGMAP).await.ok()??;
            (!map.data.unwrap_or_default().contains_key(&uid)).then_some(())
        }
    })
    .await;
    h.stop().await;
}

/// A controller that dies after telling the agents, before status shows the abort: the next
/// one finds the abort in the signal and ends the experiment Aborted, although the hypothesis
/// holds again by then (the faults are out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_dies_after_the_signal_leaves_the_abort_to_the_next() {
    let mut h = Harness::start().await;
    let running = running_then_broken(&h, "orphaned").await;
    signal_of(&h, &running.uid().unwrap()).await;
    h.crash_and_restart_controller().await;
    h.probes.set(ProbePhase::During, HypothesisView::Holding);

    let done = h.wait_phase("shop", "orphaned", Phase::Aborted).await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.reason.as_deref(), Some("ProbeFailed"));
    assert!(
        status
            .abort_reason
            .as_deref()
            .unwrap_or_default()
            .contains("status 503"),
        "{:?}",
        status.abort_reason
    );
    h.stop().await;
}

/// Where the signal cannot be written (here: the controller's namespace does not exist, so
/// the API server refuses the ConfigMap), the reverting label and the aborting annotation
/// tell the agents, as before the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_signal_the_label_carries_the_abort() {
    let h = Harness::start_in_missing_namespace("faultline-nowhere").await;
    running_then_broken(&h, "labelled").await;
    let api = h.experiments("shop");
    let labelled = wait_for("the reverting label", WAIT, || async {
        let e = api.get("labelled").await.ok()?;
        (e.labels().get(REVERTING_LABEL).map(String::as_str) == Some("true")).then_some(e)
    })
    .await;
    assert!(
        labelled.annotations().contains_key(ABORTING_ANNOTATION),
        "{:?}",
        labelled.annotations()
    );
    let done = h.wait_phase("shop", "labelled", Phase::Aborted).await;
    assert_eq!(done.status.unwrap().verdict, Some(Verdict::Aborted));
    h.stop().await;
}
