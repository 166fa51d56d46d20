use chrono::TimeZone;

use super::*;
use crate::api::GameDaySpec;
use crate::gameday::stage::PAUSED_RECHECK;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_000_000 + seconds, 0).unwrap()
}

fn spec(yaml: &str) -> GameDaySpec {
    serde_yaml::from_str(yaml).unwrap()
}

const EXPERIMENT: &str = r#"
        spec:
          duration: 1m
          target: {labelSelector: {matchLabels: {app: checkout}}, mode: One}
          faults: [{podKill: {}}]"#;

/// Three stages: `kill` (pause 2m after), `slow` (two experiments), `split` (needs approval).
fn three_stages(on_failure: &str) -> GameDaySpec {
    spec(&format!(
        r#"
onFailure: {on_failure}
steadyState:
  probes:
    - name: shop-up
      http: {{url: "http://shop/healthz"}}
stages:
  - name: kill
    pauseAfter: 2m
    experiments:
      - name: checkout{EXPERIMENT}
  - name: slow
    experiments:
      - name: one{EXPERIMENT}
      - name: two{EXPERIMENT}
  - name: split
    requireApproval: true
    experiments:
      - name: web{EXPERIMENT}
"#
    ))
}

struct Day {
    spec: GameDaySpec,
    status: GameDayStatus,
    children: Vec<Child>,
    abort: Option<&'static str>,
    approved: Option<&'static str>,
    paused: bool,
}

impl Day {
    fn new(spec: GameDaySpec) -> Self {
        Day {
            spec,
            status: GameDayStatus::default(),
            children: Vec::new(),
            abort: None,
            approved: None,
            paused: false,
        }
    }

    /// Plans at `now`, then carries the plan out the way the controller would: creates,
    /// deletes, records abort requests, keeps the status.
    fn step(&mut self, now: DateTime<Utc>) -> Plan {
        let observed = Observed {
            name: "shop",
            spec: &self.spec,
            status: self.status.clone(),
            generation: Some(1),
            created_at: t(0),
            abort_requested: self.abort,
            approved_stage: self.approved,
            children: self.children.clone(),
            paused: self.paused,
            now,
        };
        let plan = plan(&observed);
        for new in &plan.create {
            self.children.push(Child {
                name: new.name.clone(),
                stage: new.stage.clone(),
                run: plan.status.run,
                verdict: None,
                message: None,
                abort_requested: false,
            });
        }
        self.children.retain(|c| !plan.delete.contains(&c.name));
        for child in &mut self.children {
            if plan.abort.contains(&child.name) {
                child.abort_requested = true;
            }
        }
        self.status = plan.status.clone();
        plan
    }

    fn finish(&mut self, name: &str, verdict: Verdict) {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no experiment {name}"));
        child.verdict = Some(verdict);
        child.message = Some(format!("{name} says {verdict:?}"));
    }

    fn stage(&self, name: &str) -> &GameDayStageStatus {
        self.status.stages.iter().find(|s| s.name == name).unwrap()
    }

    fn complete(&self) -> Option<(ConditionStatus, String)> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == "Complete")
            .map(|c| (c.status, c.reason.clone()))
    }
}

fn names(plan: &Plan) -> Vec<&str> {
    plan.create.iter().map(|e| e.name.as_str()).collect()
}

fn reasons(plan: &Plan) -> Vec<&str> {
    plan.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn stages_run_in_order_with_pauses_approval_and_the_days_probes_in_every_experiment() {
    let mut day = Day::new(three_stages("Abort"));
    let plan = day.step(t(10));
    assert_eq!(names(&plan), ["shop-kill-checkout"]);
    assert_eq!(reasons(&plan), ["GameDayStarted", "StageStarted"]);
    let probes: Vec<&str> = plan.create[0]
        .spec
        .steady_state
        .as_ref()
        .unwrap()
        .probes
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(probes, ["shop-up"]);
    assert_eq!(day.status.phase.as_deref(), Some(phase::RUNNING));
    assert_eq!(day.status.run, 1);
    assert_eq!(day.status.current_stage.as_deref(), Some("kill"));
    assert_eq!(day.stage("kill").phase, stage_phase::RUNNING);
    assert_eq!(day.stage("slow").phase, stage_phase::PENDING);
    assert_eq!(
        day.complete(),
        Some((ConditionStatus::False, "Running".into()))
    );

    // Still running: nothing new.
    assert!(day.step(t(20)).create.is_empty());

    // Stage 1 passes at t=70: stage 2 waits out the 2m pause.
    day.finish("shop-kill-checkout", Verdict::Passed);
    let plan = day.step(t(70));
    assert!(plan.create.is_empty());
    assert_eq!(day.stage("kill").phase, stage_phase::SUCCEEDED);
    assert_eq!(day.stage("kill").verdict, Some(Verdict::Passed));
    assert_eq!(day.stage("slow").phase, stage_phase::PAUSED);
    assert_eq!(day.status.current_stage.as_deref(), Some("slow"));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(120)));

    // After the pause both experiments of stage 2 start together.
    let plan = day.step(t(190));
    assert_eq!(names(&plan), ["shop-slow-one", "shop-slow-two"]);
    day.finish("shop-slow-one", Verdict::Passed);
    assert!(day.step(t(200)).create.is_empty());
    assert_eq!(day.stage("slow").phase, stage_phase::RUNNING);

    // Stage 3 needs approval: one Event with the command, then quiet until approved.
    day.finish("shop-slow-two", Verdict::Passed);
    let plan = day.step(t(260));
    assert!(plan.create.is_empty());
    assert_eq!(day.stage("split").phase, stage_phase::WAITING_FOR_APPROVAL);
    let note = plan
        .notes
        .iter()
        .find(|n| n.reason == "StageAwaitingApproval")
        .unwrap();
    assert!(
        note.message
            .contains("kubectl annotate gameday shop faultline.dev/approve-stage=split"),
        "{}",
        note.message
    );
    assert!(day.step(t(300)).notes.is_empty());
    day.approved = Some("split");
    assert_eq!(names(&day.step(t(400))), ["shop-split-web"]);

    day.finish("shop-split-web", Verdict::Passed);
    let plan = day.step(t(470));
    assert_eq!(day.status.phase.as_deref(), Some(phase::SUCCEEDED));
    assert_eq!(day.status.verdict, Some(Verdict::Passed));
    assert_eq!(day.status.current_stage, None);
    assert_eq!(day.status.finished_at, Some(t(470)));
    assert_eq!(day.status.message.as_deref(), Some("3 of 3 stages passed"));
    assert_eq!(
        day.complete(),
        Some((ConditionStatus::True, "Passed".into()))
    );
    assert!(reasons(&plan).contains(&"GameDayFinished"));
    // Finished: nothing more happens.
    let plan = day.step(t(9000));
    assert!(plan.create.is_empty() && plan.notes.is_empty() && plan.requeue_after.is_none());
}

#[test]
fn a_failed_stage_ends_the_day_unless_told_to_continue() {
    let mut day = Day::new(three_stages("Abort"));
    day.step(t(0));
    day.finish("shop-kill-checkout", Verdict::Failed);
    let plan = day.step(t(60));
    assert!(plan.create.is_empty());
    assert_eq!(day.stage("kill").phase, stage_phase::FAILED);
    assert_eq!(
        day.stage("kill").message.as_deref(),
        Some("shop-kill-checkout Failed: shop-kill-checkout says Failed")
    );
    assert_eq!(day.stage("slow").phase, stage_phase::SKIPPED);
    assert_eq!(day.stage("split").phase, stage_phase::SKIPPED);
    assert_eq!(day.status.phase.as_deref(), Some(phase::FAILED));
    assert_eq!(day.status.verdict, Some(Verdict::Failed));
    let message = day.status.message.clone().unwrap();
    assert!(
        message.starts_with("0 of 3 stages passed; stage kill failed"),
        "{message}"
    );
    assert!(message.ends_with("skipped: slow, split"), "{message}");

    let mut day = Day::new(three_stages("Continue"));
    day.step(t(0));
    day.finish("shop-kill-checkout", Verdict::Failed);
    day.step(t(60));
    // No pause after a failed stage? The pause is the stage's, and still applies.
    assert_eq!(day.stage("slow").phase, stage_phase::PAUSED);
    assert_eq!(names(&day.step(t(180))), ["shop-slow-one", "shop-slow-two"]);
    day.finish("shop-slow-one", Verdict::Passed);
    day.finish("shop-slow-two", Verdict::Aborted);
    day.approved = Some("split");
    day.step(t(300));
    day.finish("shop-split-web", Verdict::Passed);
    day.step(t(400));
    assert_eq!(day.status.phase.as_deref(), Some(phase::ABORTED));
    assert_eq!(day.status.verdict, Some(Verdict::Aborted));
    assert_eq!(day.stage("split").phase, stage_phase::SUCCEEDED);
    assert!(
        day.status
            .message
            .as_deref()
            .unwrap()
            .starts_with("1 of 3 stages passed")
    );
}

#[test]
fn an_abort_request_aborts_the_running_stage_and_skips_the_rest() {
    let mut day = Day::new(three_stages("Continue"));
    day.step(t(0));
    day.finish("shop-kill-checkout", Verdict::Passed);
    day.step(t(60));
    assert_eq!(names(&day.step(t(200))), ["shop-slow-one", "shop-slow-two"]);
    day.finish("shop-slow-one", Verdict::Passed);

    day.abort = Some("game over");
    let plan = day.step(t(210));
    assert_eq!(plan.abort, ["shop-slow-two"]);
    assert_eq!(day.status.phase.as_deref(), Some(phase::ABORTING));
    assert!(reasons(&plan).contains(&"GameDayAborting"));
    // Asked once; while the experiment reverts nothing more is sent.
    assert!(day.step(t(211)).abort.is_empty());

    day.finish("shop-slow-two", Verdict::Aborted);
    day.step(t(215));
    assert_eq!(day.status.phase.as_deref(), Some(phase::ABORTED));
    assert_eq!(day.status.verdict, Some(Verdict::Aborted));
    assert_eq!(day.status.message.as_deref(), Some("aborted: game over"));
    assert_eq!(day.stage("kill").phase, stage_phase::SUCCEEDED);
    assert_eq!(day.stage("slow").phase, stage_phase::FAILED);
    assert_eq!(day.stage("split").phase, stage_phase::SKIPPED);
    assert_eq!(
        day.complete(),
        Some((ConditionStatus::True, "Aborted".into()))
    );
}

#[test]
fn a_start_time_in_the_future_waits_and_an_abort_before_it_cancels_the_day() {
    let mut later = three_stages("Abort");
    later.start_at = Some(t(1000));
    let mut day = Day::new(later.clone());
    let plan = day.step(t(10));
    assert!(plan.create.is_empty());
    assert_eq!(day.status.phase.as_deref(), Some(phase::PENDING));
    assert_eq!(day.status.next_start_time, Some(t(1000)));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(990)));
    assert_eq!(names(&day.step(t(1000))), ["shop-kill-checkout"]);

    let mut day = Day::new(later);
    day.step(t(10));
    day.abort = Some("not today");
    day.step(t(20));
    assert_eq!(day.status.phase.as_deref(), Some(phase::ABORTED));
    assert_eq!(day.status.next_start_time, None);
    assert!(
        day.status
            .stages
            .iter()
            .all(|s| s.phase == stage_phase::SKIPPED)
    );
    assert!(day.children.is_empty());
}

#[test]
fn a_stage_that_cannot_be_created_fails_with_the_reason() {
    let mut long = three_stages("Abort");
    long.stages[0].experiments[0].name =
        "a-very-long-experiment-name-that-goes-on-and-on-and-on".into();
    let mut day = Day::new(long);
    let plan = day.step(t(0));
    assert!(plan.create.is_empty());
    assert_eq!(day.stage("kill").verdict, Some(Verdict::Error));
    let message = day.stage("kill").message.clone().unwrap();
    assert!(message.contains("over Kubernetes' 63"), "{message}");
    assert_eq!(day.status.phase.as_deref(), Some(phase::FAILED));
    assert_eq!(day.status.verdict, Some(Verdict::Error));

    let mut clash = three_stages("Abort");
    clash.stages[0].experiments[0].spec.steady_state = clash.steady_state.clone();
    let mut day = Day::new(clash);
    day.step(t(0));
    let message = day.stage("kill").message.clone().unwrap();
    assert!(
        message.contains("probe \"shop-up\" has the same name"),
        "{message}"
    );
}

#[test]
fn an_experiment_deleted_mid_stage_fails_the_stage() {
    let mut day = Day::new(three_stages("Abort"));
    day.step(t(0));
    day.children.clear();
    day.step(t(30));
    assert_eq!(day.stage("kill").phase, stage_phase::FAILED);
    assert_eq!(
        day.stage("kill").message.as_deref(),
        Some("shop-kill-checkout was deleted before it finished")
    );
    assert_eq!(day.status.verdict, Some(Verdict::Error));
}

#[test]
fn dry_runs_make_a_dry_run_day() {
    let mut day = Day::new(spec(&format!(
        "stages:\n  - name: only\n    experiments:\n      - name: x{EXPERIMENT}\n"
    )));
    day.step(t(0));
    day.finish("shop-only-x", Verdict::DryRun);
    day.step(t(1));
    assert_eq!(day.status.phase.as_deref(), Some(phase::SUCCEEDED));
    assert_eq!(day.status.verdict, Some(Verdict::DryRun));
}

#[test]
fn a_scheduled_day_runs_at_each_occurrence_after_clearing_the_last_runs_experiments() {
    // Every 10 minutes, UTC; t(0) is 2026-11-18 11:06:40 UTC, so the first run is at 11:10.
    let mut scheduled = spec(&format!(
        "schedule: \"*/10 * * * *\"\nstages:\n  - name: only\n    experiments:\n      - name: x{EXPERIMENT}\n"
    ));
    scheduled.time_zone = Some("UTC".into());
    let mut day = Day::new(scheduled);
    let plan = day.step(t(10));
    assert_eq!(day.status.phase.as_deref(), Some(phase::PENDING));
    assert_eq!(day.status.next_start_time, Some(t(200)));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(190)));

    assert_eq!(names(&day.step(t(201))), ["shop-only-x"]);
    day.finish("shop-only-x", Verdict::Passed);
    let plan = day.step(t(300));
    assert_eq!(day.status.phase.as_deref(), Some(phase::SUCCEEDED));
    assert_eq!(day.status.next_start_time, Some(t(800)));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(500)));

    // Run 2: the experiment of run 1 has the same name and goes first.
    let plan = day.step(t(801));
    assert_eq!(day.status.run, 2);
    assert_eq!(plan.delete, ["shop-only-x"]);
    assert!(plan.create.is_empty());
    assert_eq!(day.status.verdict, None);
    assert_eq!(names(&day.step(t(802))), ["shop-only-x"]);
    assert_eq!(day.children[0].run, 2);
    day.finish("shop-only-x", Verdict::Failed);
    day.step(t(900));
    assert_eq!(day.status.verdict, Some(Verdict::Failed));

    // The controller was away for the next occurrence: too late to start, skipped.
    let plan = day.step(t(1400 + 301));
    assert!(plan.create.is_empty() && plan.delete.is_empty());
    assert_eq!(reasons(&plan), ["RunMissed"]);
    assert_eq!(day.status.run, 2);
    assert_eq!(day.status.last_missed_time, Some(t(1400)));
    assert_eq!(day.status.next_start_time, Some(t(2000)));
    assert_eq!(day.status.verdict, Some(Verdict::Failed));
}

#[test]
fn a_bad_schedule_is_an_error_verdict_naming_it() {
    let mut bad = three_stages("Abort");
    bad.schedule = Some("every tuesday".into());
    let mut day = Day::new(bad);
    day.step(t(0));
    assert_eq!(day.status.verdict, Some(Verdict::Error));
    let message = day.status.message.as_deref().unwrap();
    assert!(
        message.starts_with("spec.schedule: \"every tuesday\" is not a cron expression"),
        "{message}"
    );
}

#[test]
fn a_bad_time_zone_fails_the_day_with_a_condition_and_an_event_naming_it() {
    let mut bad = three_stages("Abort");
    bad.schedule = Some("0 10 * * TUE".into());
    bad.time_zone = Some("Mars/Olympus".into());
    let mut day = Day::new(bad);
    let plan = day.step(t(0));
    let expected = "spec.timeZone: \"Mars/Olympus\" is not an IANA time zone; use a name such as Europe/Berlin or UTC";
    let complete = day
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(complete.message, expected);
    assert!(
        plan.notes
            .iter()
            .any(|n| n.warning && n.message.contains(expected)),
        "{:?}",
        plan.notes
    );
}

#[test]
fn worst_verdict_ranks_like_the_exit_codes() {
    use Verdict::*;
    assert_eq!(worst([Passed, DryRun]), Passed);
    assert_eq!(worst([DryRun, DryRun]), DryRun);
    assert_eq!(worst([Passed, Failed, Aborted]), Aborted);
    assert_eq!(worst([Aborted, Error]), Error);
    assert_eq!(worst([]), Passed);
}

#[test]
fn no_stage_starts_while_chaos_is_paused() {
    let mut day = Day::new(three_stages("Abort"));
    day.paused = true;
    let plan = day.step(t(0));
    assert!(plan.create.is_empty());
    assert_eq!(reasons(&plan), ["GameDayStarted", "StageHeld"]);
    assert_eq!(plan.requeue_after, Some(PAUSED_RECHECK));
    assert_eq!(
        day.status.message.as_deref(),
        Some("chaos is paused cluster-wide: stage kill starts after `faultline resume`")
    );
    // Said once.
    assert!(day.step(t(10)).notes.is_empty());
    day.paused = false;
    assert_eq!(names(&day.step(t(20))), ["shop-kill-checkout"]);
    assert_eq!(day.status.message, None);
}
