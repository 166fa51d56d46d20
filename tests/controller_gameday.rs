//! GameDays run by the controller as in production, against the embedded API server with a
//! stand-in node agent and scripted probes: stages in order, approval, abort, deletion.

mod common;

use std::time::Duration;

use common::{
    harness::{Harness, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::{
    api::{GameDay, GameDayStatus, ProbePhase, Verdict},
    lifecycle::HypothesisView,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

fn gameday(name: &str, on_failure: &str) -> GameDay {
    serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1",
        "kind": "GameDay",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "onFailure": on_failure,
            // The day's probe runs during every 1s experiment: it checks at least that often.
            "steadyState": {"probes": [{"name": "shop-up", "http": {"url": "http://127.0.0.1:1/"},
                                        "interval": "1s", "timeout": "500ms"}]},
            "stages": [
                {"name": "first", "pauseAfter": "1s",
                 "experiments": [{"name": "slow", "spec": latency_spec("1s")}]},
                {"name": "second", "requireApproval": true,
                 "experiments": [{"name": "slower", "spec": latency_spec("1s")},
                                 {"name": "slowest", "spec": latency_spec("1s")}]},
            ]
        }
    }))
    .unwrap()
}

fn gamedays(h: &Harness) -> Api<GameDay> {
    Api::namespaced(h.client.clone(), "shop")
}

async fn wait_gameday(
    h: &Harness,
    name: &str,
    what: &str,
    check: impl Fn(&GameDayStatus) -> bool,
) -> GameDay {
    let api = gamedays(h);
    wait_for(what, Duration::from_secs(20), || async {
        let g = api.get(name).await.ok()?;
        check(g.status.as_ref()?).then_some(g)
    })
    .await
}

fn stage_phase<'a>(status: &'a GameDayStatus, stage: &str) -> &'a str {
    status
        .stages
        .iter()
        .find(|s| s.name == stage)
        .map_or("", |s| s.phase.as_str())
}

#[tokio::test]
async fn stages_run_in_order_and_a_stage_that_needs_approval_waits_for_it() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 1).await;
    gamedays(&h)
        .create(&PostParams::default(), &gameday("drill", "Abort"))
        .await
        .unwrap();

    let running = wait_gameday(&h, "drill", "stage first to run", |s| {
        stage_phase(s, "first") == "Running"
    })
    .await;
    let status = running.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.current_stage.as_deref(), Some("first"));
    assert_eq!(status.stages[0].experiments, ["drill-first-slow"]);
    let experiment = h.experiments("shop").get("drill-first-slow").await.unwrap();
    let owner = &experiment.owner_references()[0];
    assert_eq!(owner.kind, "GameDay");
    assert_eq!(owner.uid, running.metadata.uid.clone().unwrap());
    assert_eq!(
        experiment
            .labels()
            .get("faultline.dev/stage")
            .map(String::as_str),
        Some("first")
    );
    let probes: Vec<String> = experiment
        .spec
        .steady_state
        .unwrap()
        .probes
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(
        probes,
        ["web", "shop-up"],
        "the day's probe joins the experiment's own"
    );

    let waiting = wait_gameday(&h, "drill", "stage second to wait for approval", |s| {
        stage_phase(s, "second") == "WaitingForApproval"
    })
    .await;
    let status = waiting.status.unwrap();
    assert_eq!(stage_phase(&status, "first"), "Succeeded");
    assert_eq!(status.stages[0].verdict, Some(Verdict::Passed));
    // Nothing of stage two exists before the approval.
    assert!(
        h.experiments("shop")
            .get_opt("drill-second-slower")
            .await
            .unwrap()
            .is_none()
    );

    let approve = json!({"metadata": {"annotations": {"faultline.dev/approve-stage": "second"}}});
    gamedays(&h)
        .patch("drill", &PatchParams::default(), &Patch::Merge(&approve))
        .await
        .unwrap();
    let done = wait_gameday(&h, "drill", "the game day to finish", |s| {
        s.verdict.is_some()
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Passed),
        "{:?}",
        status.message
    );
    assert_eq!(status.phase.as_deref(), Some("Succeeded"));
    assert_eq!(
        status.stages[1].experiments,
        ["drill-second-slower", "drill-second-slowest"]
    );
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(
        (complete.reason.as_str(), complete.message.as_str()),
        ("Passed", "2 of 2 stages passed")
    );
    // The stages ran one after the other, with the pause between them.
    let first_end = status.stages[0].finished_at.unwrap();
    let second_start = status.stages[1].started_at.unwrap();
    assert!(second_start >= first_end + chrono::Duration::seconds(1));
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test]
async fn a_stage_whose_hypothesis_breaks_ends_the_day_and_skips_the_rest() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 1).await;
    h.probes.set(
        ProbePhase::During,
        HypothesisView::Violated {
            probe: "shop-up".into(),
            message: "connection refused".into(),
            since: chrono::Utc::now(),
        },
    );
    gamedays(&h)
        .create(&PostParams::default(), &gameday("drill", "Abort"))
        .await
        .unwrap();
    let done = wait_gameday(&h, "drill", "the game day to finish", |s| {
        s.verdict.is_some()
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.verdict,
        Some(Verdict::Aborted),
        "{:?}",
        status.message
    );
    assert_eq!(status.phase.as_deref(), Some("Aborted"));
    assert_eq!(stage_phase(&status, "first"), "Failed");
    assert_eq!(stage_phase(&status, "second"), "Skipped");
    let message = status.message.unwrap();
    assert!(
        message.contains("stage first failed: drill-first-slow Aborted"),
        "{message}"
    );
    assert_eq!(h.injection_count("shop").await, 0);
    h.stop().await;
}

#[tokio::test]
async fn aborting_or_deleting_a_game_day_reverts_the_running_stage() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 1).await;
    let mut long = gameday("drill", "Continue");
    long.spec.stages[0].experiments[0].spec.duration = "1h".into();
    gamedays(&h)
        .create(&PostParams::default(), &long)
        .await
        .unwrap();
    wait_for("the fault to be in", Duration::from_secs(15), || async {
        (h.injection_count("shop").await == 1).then_some(())
    })
    .await;

    let abort = json!({"metadata": {"annotations": {"faultline.dev/abort": "stop the drill"}}});
    gamedays(&h)
        .patch("drill", &PatchParams::default(), &Patch::Merge(&abort))
        .await
        .unwrap();
    let done = wait_gameday(&h, "drill", "the game day to abort", |s| {
        s.verdict.is_some()
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Aborted));
    assert_eq!(status.message.as_deref(), Some("aborted: stop the drill"));
    assert_eq!(stage_phase(&status, "second"), "Skipped");
    let experiment = h.experiments("shop").get("drill-first-slow").await.unwrap();
    assert_eq!(experiment.status.unwrap().verdict, Some(Verdict::Aborted));
    assert_eq!(h.injection_count("shop").await, 0);

    // Deleting a game day mid-stage: its experiment goes, and with it the fault.
    gamedays(&h)
        .create(&PostParams::default(), &{
            let mut again = long.clone();
            again.metadata.name = Some("again".into());
            again
        })
        .await
        .unwrap();
    wait_for(
        "the second fault to be in",
        Duration::from_secs(15),
        || async { (h.injection_count("shop").await == 1).then_some(()) },
    )
    .await;
    gamedays(&h)
        .delete("again", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the experiment and its fault to be gone",
        Duration::from_secs(15),
        || async {
            let left = h
                .experiments("shop")
                .list(&ListParams::default().labels("faultline.dev/gameday=again"))
                .await
                .ok()?
                .items;
            (left.is_empty() && h.injection_count("shop").await == 0).then_some(())
        },
    )
    .await;
    h.stop().await;
}
