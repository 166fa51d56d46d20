use chrono::TimeZone;

use super::*;

/// 2026-11-23 (a Monday) at `h:m` UTC.
fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
}

fn spec(extra: &str) -> ChaosScheduleSpec {
    serde_yaml::from_str(&format!(
        r#"
schedule: "*/10 * * * *"
{extra}
experimentTemplate:
  metadata: {{labels: {{team: payments}}}}
  spec:
    duration: 1m
    target: {{labelSelector: {{matchLabels: {{app: checkout}}}}, mode: One}}
    faults: [{{podKill: {{}}}}]
"#
    ))
    .unwrap()
}

struct Schedule {
    spec: ChaosScheduleSpec,
    status: ChaosScheduleStatus,
    generation: i64,
    children: Vec<Child>,
    paused: bool,
}

impl Schedule {
    fn new(spec: ChaosScheduleSpec) -> Self {
        Schedule {
            spec,
            status: ChaosScheduleStatus::default(),
            generation: 1,
            children: Vec::new(),
            paused: false,
        }
    }

    fn step(&mut self, now: DateTime<Utc>) -> Plan {
        let plan = plan(&Observed {
            name: "weekly",
            spec: &self.spec,
            status: self.status.clone(),
            generation: Some(self.generation),
            created_at: at(9, 55),
            children: self.children.clone(),
            paused: self.paused,
            now,
        });
        if let Some(new) = &plan.create {
            let scheduled = new.annotations[SCHEDULED_AT_ANNOTATION].parse().unwrap();
            self.children.push(Child {
                name: new.name.clone(),
                scheduled_at: scheduled,
                verdict: None,
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

    fn finish_all(&mut self, verdict: Verdict) {
        for child in &mut self.children {
            child.verdict.get_or_insert(verdict);
        }
    }

    fn condition(&self, type_: &str) -> Option<(ConditionStatus, String)> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason.clone()))
    }
}

fn reasons(plan: &Plan) -> Vec<&str> {
    plan.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn a_run_starts_at_each_occurrence_with_the_templates_labels_and_its_time() {
    let mut s = Schedule::new(spec(""));
    let plan = s.step(at(9, 56));
    assert!(plan.create.is_none());
    assert_eq!(s.status.next_schedule_time, Some(at(10, 0)));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(240)));
    assert_eq!(
        s.condition("Active"),
        Some((ConditionStatus::True, "Scheduled".into()))
    );

    let plan = s.step(at(10, 0));
    let new = plan.create.unwrap();
    assert_eq!(new.name, format!("weekly-{}", at(10, 0).timestamp()));
    assert_eq!(new.labels["team"], "payments");
    assert_eq!(new.labels[SCHEDULE_LABEL], "weekly");
    assert_eq!(
        new.annotations[SCHEDULED_AT_ANNOTATION],
        "2026-11-23T10:00:00+00:00"
    );
    assert_eq!(s.status.last_schedule_time, Some(at(10, 0)));
    assert_eq!(s.status.active, std::slice::from_ref(&new.name));
    assert_eq!(s.status.next_schedule_time, Some(at(10, 10)));
    // Looking again within the same minute starts nothing more.
    assert!(s.step(at(10, 0)).create.is_none());

    s.finish_all(Verdict::Passed);
    let plan = s.step(at(10, 5));
    assert_eq!(reasons(&plan), ["RunFinished"]);
    assert_eq!(s.status.last_verdict, Some(Verdict::Passed));
    assert!(s.status.active.is_empty());
    // Counted once.
    assert!(s.step(at(10, 6)).notes.is_empty());
}

#[test]
fn forbid_skips_a_run_while_one_is_going_and_replace_aborts_it() {
    let mut s = Schedule::new(spec(""));
    s.step(at(10, 0));
    let plan = s.step(at(10, 10));
    assert!(plan.create.is_none());
    assert_eq!(reasons(&plan), ["RunSkipped"]);
    assert!(plan.notes[0].message.contains("concurrencyPolicy Forbid"));
    assert_eq!(s.status.missed_runs, 1);

    let mut s = Schedule::new(spec("concurrencyPolicy: Replace"));
    s.step(at(10, 0));
    let first = s.children[0].name.clone();
    let plan = s.step(at(10, 10));
    assert_eq!(plan.abort, [first]);
    assert!(plan.create.is_some());
    assert_eq!(s.status.active.len(), 2);

    let mut s = Schedule::new(spec("concurrencyPolicy: Allow"));
    s.step(at(10, 0));
    let plan = s.step(at(10, 10));
    assert!(plan.abort.is_empty() && plan.create.is_some());
}

#[test]
fn runs_outside_the_windows_late_or_while_paused_are_skipped_and_counted() {
    // Mondays 10:00-10:15 only: 10:00 and 10:10 run, 10:20 does not, and the next run after
    // that is next Monday at 10:00.
    let mut s = Schedule::new(spec(
        "allowedWindows: [{days: [Mon], start: \"10:00\", end: \"10:15\"}]",
    ));
    s.step(at(9, 56));
    assert_eq!(s.status.next_schedule_time, Some(at(10, 0)));
    assert!(s.step(at(10, 0)).create.is_some());
    s.finish_all(Verdict::Passed);
    assert_eq!(
        s.status.next_schedule_time,
        Some(at(10, 10)),
        "the next time inside a window"
    );
    assert!(s.step(at(10, 10)).create.is_some());
    s.finish_all(Verdict::Passed);
    assert_eq!(
        s.status.next_schedule_time,
        Some(Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap())
    );
    let plan = s.step(at(10, 20));
    assert!(plan.create.is_none());
    assert!(
        plan.notes
            .iter()
            .any(|n| n.message.contains("outside every allowed window"))
    );

    // Late: the controller comes back at 10:07 for the 10:00 run (deadline 5m).
    let mut s = Schedule::new(spec(""));
    s.step(at(9, 56));
    let plan = s.step(at(10, 7));
    assert!(plan.create.is_none());
    assert!(plan.notes[0].message.contains("starting deadline of 300s"));
    assert_eq!(s.status.missed_runs, 1);
    // Away for an hour: the five older runs are missed too, the latest is considered.
    let plan = s.step(at(11, 2));
    assert_eq!(reasons(&plan), ["RunsMissed", "RunStarted"]);
    assert!(plan.create.is_some(), "11:00 is within the deadline");
    assert_eq!(s.status.missed_runs, 6);

    let mut s = Schedule::new(spec(""));
    s.paused = true;
    let plan = s.step(at(10, 0));
    assert!(plan.create.is_none());
    assert!(plan.notes[0].message.contains("paused cluster-wide"));
}

#[test]
fn too_many_failures_in_a_row_stop_the_schedule_until_the_spec_is_edited() {
    let mut s = Schedule::new(spec("stopAfterConsecutiveFailures: 2"));
    s.step(at(10, 0));
    s.finish_all(Verdict::Failed);
    s.step(at(10, 10));
    assert_eq!(s.status.consecutive_failures, 1);
    s.finish_all(Verdict::Aborted);
    let plan = s.step(at(10, 20));
    assert!(plan.create.is_none(), "stopped before the 10:20 run");
    assert_eq!(s.status.consecutive_failures, 2);
    assert_eq!(
        s.condition("Stopped"),
        Some((ConditionStatus::True, "TooManyFailures".into()))
    );
    assert_eq!(
        s.condition("Active"),
        Some((ConditionStatus::False, "Stopped".into()))
    );
    assert!(reasons(&plan).contains(&"ScheduleStopped"));
    assert_eq!(s.status.next_schedule_time, None);
    assert!(s.step(at(10, 30)).create.is_none());

    // An edit resumes; a pass resets the count.
    s.generation = 2;
    let plan = s.step(at(10, 40));
    assert!(plan.create.is_some());
    assert_eq!(
        s.condition("Stopped"),
        Some((ConditionStatus::False, "SpecChanged".into()))
    );
    s.finish_all(Verdict::Passed);
    s.step(at(10, 45));
    assert_eq!(s.status.consecutive_failures, 0);
}

#[test]
fn history_keeps_the_newest_runs_per_outcome() {
    let mut s = Schedule::new(spec(
        "successfulHistoryLimit: 1\nfailedHistoryLimit: 2\nconcurrencyPolicy: Allow",
    ));
    for (minute, verdict) in [
        (0, Verdict::Passed),
        (10, Verdict::Failed),
        (20, Verdict::Passed),
        (30, Verdict::Aborted),
        (40, Verdict::Failed),
    ] {
        s.step(at(10, minute));
        s.finish_all(verdict);
    }
    s.step(at(10, 45));
    let kept: Vec<DateTime<Utc>> = s.children.iter().map(|c| c.scheduled_at).collect();
    assert_eq!(kept, [at(10, 20), at(10, 30), at(10, 40)]);
}

#[test]
fn suspended_and_invalid_schedules_say_so() {
    let mut s = Schedule::new(spec("suspend: true"));
    assert!(s.step(at(10, 0)).create.is_none());
    assert_eq!(
        s.condition("Active"),
        Some((ConditionStatus::False, "Suspended".into()))
    );
    assert_eq!(s.status.next_schedule_time, None);

    let mut bad = spec("");
    bad.schedule = "every monday".into();
    let mut s = Schedule::new(bad);
    let plan = s.step(at(10, 0));
    assert_eq!(
        s.condition("Active"),
        Some((ConditionStatus::False, "InvalidSchedule".into()))
    );
    // The Event names the field; it is published once, not on every reconcile.
    assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
    assert_eq!(plan.notes[0].reason, "InvalidSchedule");
    assert!(
        plan.notes[0]
            .message
            .starts_with("no run starts: spec.schedule: \"every monday\" is not a cron expression"),
        "{}",
        plan.notes[0].message
    );
    assert!(s.step(at(10, 1)).notes.is_empty());

    let mut zone = spec("");
    zone.time_zone = Some("Mars/Olympus".into());
    let mut s = Schedule::new(zone);
    let plan = s.step(at(10, 0));
    assert_eq!(
        plan.notes[0].message,
        "no run starts: spec.timeZone: \"Mars/Olympus\" is not an IANA time zone; use a name such as Europe/Berlin or UTC"
    );
    let active = s
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Active")
        .unwrap();
    assert!(
        active.message.starts_with("spec.timeZone: "),
        "{}",
        active.message
    );

    let mut never = spec("allowedWindows: [{days: [Sun], start: \"03:00\", end: \"03:05\"}]");
    never.schedule = "0 12 * * *".into();
    let mut s = Schedule::new(never);
    s.step(at(10, 0));
    assert_eq!(
        s.condition("Active"),
        Some((ConditionStatus::False, "NeverFires".into()))
    );
}
