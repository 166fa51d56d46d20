//! What a ChaosSchedule should do next, from what is observed (pure; the clock is an input).
//!
//! Like a CronJob, with what chaos needs on top: a run starts only inside an allowed window,
//! never late (a run that could not start in time is counted as missed, not started hours
//! after), never while chaos is paused cluster-wide, and the schedule stops itself with a
//! condition after too many failed runs in a row instead of failing silently every week.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};

use crate::api::rules::NAME_LIMIT;
use crate::api::{
    ChaosExperimentSpec, ChaosScheduleSpec, ChaosScheduleStatus, ConcurrencyPolicy,
    ConditionStatus, SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION, Verdict,
};
use crate::calendar::Calendar;
use crate::controller::spec_check;
use crate::lifecycle::record::set_condition;
pub use crate::owned_experiments::Note;

/// How late a run may start when `startingDeadlineSeconds` is not set.
pub const DEFAULT_STARTING_DEADLINE: Duration = Duration::from_secs(300);
const LONGEST_WAIT: Duration = Duration::from_secs(3600);
/// How many occurrences ahead to look for one inside the allowed windows.
const WINDOW_SEARCH_LIMIT: usize = 10_000;

/// An experiment the schedule created, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub name: String,
    pub scheduled_at: DateTime<Utc>,
    pub verdict: Option<Verdict>,
    pub abort_requested: bool,
}

#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub spec: &'a ChaosScheduleSpec,
    pub status: ChaosScheduleStatus,
    pub generation: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub children: Vec<Child>,
    /// Chaos is paused cluster-wide.
    pub paused: bool,
    pub now: DateTime<Utc>,
}

/// An experiment to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewExperiment {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: ChaosExperimentSpec,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub status: ChaosScheduleStatus,
    pub create: Option<NewExperiment>,
    /// Running experiments to abort (concurrencyPolicy Replace).
    pub abort: Vec<String>,
    /// Finished experiments beyond the history limits.
    pub delete: Vec<String>,
    pub notes: Vec<Note>,
    pub requeue_after: Option<Duration>,
}

/// The name of the run scheduled at `at`: the schedule's name and the Unix time (seconds: a
/// schedule may have a seconds field), so a second attempt at the same run finds the first
/// instead of starting another.
pub fn run_name(schedule: &str, at: DateTime<Utc>) -> String {
    format!("{schedule}-{}", at.timestamp())
}

pub fn plan(o: &Observed) -> Plan {
    let mut p = Plan {
        status: o.status.clone(),
        ..Plan::default()
    };
    let edited =
        o.status.observed_generation.is_some() && o.status.observed_generation != o.generation;
    p.status.observed_generation = o.generation;
    if edited && stopped(&p.status) {
        p.status.consecutive_failures = 0;
        condition(
            &mut p,
            o,
            "Stopped",
            false,
            "SpecChanged",
            "the spec was edited: runs resume",
        );
        p.notes.push(Note {
            warning: false,
            reason: "Resumed",
            message: "the spec was edited: the failure count is reset and runs resume".into(),
        });
    }
    count_finished(o, &mut p);
    prune_history(o, &mut p);

    // What the CRD cannot check (cron syntax, time zones) or what bypassed it: no run starts,
    // the condition says which field is wrong, and so does an Event, once per edit.
    let calendar = match Calendar::new(&o.spec.schedule, o.spec.time_zone.as_deref()) {
        Ok(calendar) => calendar,
        Err(message) => {
            refuse(&mut p, o, "InvalidSchedule", &message);
            return p;
        }
    };
    let template = spec_check::check_spec_at(
        &o.spec.experiment_template.spec,
        "spec.experimentTemplate.spec",
    );
    if let Err(message) = template {
        refuse(&mut p, o, "InvalidSpec", &message);
        return p;
    }
    if o.spec.suspend {
        p.status.next_schedule_time = None;
        condition(
            &mut p,
            o,
            "Active",
            false,
            "Suspended",
            "spec.suspend is true: no runs start",
        );
        return p;
    }
    if stopped(&p.status) {
        p.status.next_schedule_time = None;
        let message = format!(
            "stopped after {} failed runs in a row; fix the cause, then edit the spec to resume",
            p.status.consecutive_failures
        );
        condition(&mut p, o, "Active", false, "Stopped", &message);
        return p;
    }

    let after = o
        .status
        .last_schedule_time
        .unwrap_or(o.created_at)
        .max(o.created_at);
    if let Some((due, count)) = calendar.due(after, o.now) {
        p.status.last_schedule_time = Some(due);
        if count > 1 {
            p.status.missed_runs += (count - 1) as i64;
            p.notes.push(Note {
                warning: true,
                reason: "RunsMissed",
                message: format!(
                    "{} earlier runs were due while the controller could not start them; only the latest is considered",
                    count - 1
                ),
            });
        }
        start_or_skip(o, &mut p, &calendar, due);
    }

    match next_in_windows(&calendar, o) {
        Some(next) => {
            p.status.next_schedule_time = Some(next);
            p.requeue_after = Some(
                (next - o.now)
                    .to_std()
                    .unwrap_or_default()
                    .clamp(Duration::from_secs(1), LONGEST_WAIT),
            );
            let message = format!("next run at {}", next.to_rfc3339());
            condition(&mut p, o, "Active", true, "Scheduled", &message);
        }
        None => {
            p.status.next_schedule_time = None;
            condition(
                &mut p,
                o,
                "Active",
                false,
                "NeverFires",
                "no time of the schedule falls inside the allowed windows: check schedule, timeZone and allowedWindows",
            );
        }
    }
    p
}

/// No run starts: `Active=False` with `reason` and `message` (which names the field), and a
/// Warning Event the first time this generation is refused for it.
fn refuse(p: &mut Plan, o: &Observed, reason: &'static str, message: &str) {
    p.status.next_schedule_time = None;
    let reported = o.status.conditions.iter().any(|c| {
        c.type_ == "Active"
            && c.reason == reason
            && c.message == message
            && c.observed_generation == o.generation
    });
    condition(p, o, "Active", false, reason, message);
    if !reported {
        p.notes.push(Note {
            warning: true,
            reason,
            message: format!("no run starts: {message}"),
        });
    }
}

fn stopped(status: &ChaosScheduleStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Stopped" && c.status == ConditionStatus::True)
}

fn condition(p: &mut Plan, o: &Observed, type_: &str, on: bool, reason: &str, message: &str) {
    let status = if on {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    set_condition(
        &mut p.status.conditions,
        type_,
        status,
        reason,
        message,
        o.generation,
        o.now,
    );
}

/// Folds every run that finished since the last look into `lastVerdict` and
/// `consecutiveFailures`, oldest first, and stops the schedule when the failures reach the limit.
fn count_finished(o: &Observed, p: &mut Plan) {
    let mut finished: Vec<&Child> = o
        .children
        .iter()
        .filter(|c| c.verdict.is_some())
        .filter(|c| {
            p.status
                .last_finished_schedule_time
                .is_none_or(|t| c.scheduled_at > t)
        })
        .collect();
    finished.sort_by_key(|c| c.scheduled_at);
    for child in finished {
        let verdict = child.verdict.unwrap_or(Verdict::Error);
        p.status.last_verdict = Some(verdict);
        p.status.last_finished_schedule_time = Some(child.scheduled_at);
        if matches!(verdict, Verdict::Passed | Verdict::DryRun) {
            p.status.consecutive_failures = 0;
        } else {
            p.status.consecutive_failures += 1;
        }
        p.notes.push(Note {
            warning: !matches!(verdict, Verdict::Passed | Verdict::DryRun),
            reason: "RunFinished",
            message: format!("{} finished: {verdict:?}", child.name),
        });
        if let Some(limit) = o.spec.stop_after_consecutive_failures
            && p.status.consecutive_failures >= limit
            && !stopped(&p.status)
        {
            let message = format!(
                "{} runs in a row did not pass (the last: {} {verdict:?}); no more runs start until the spec is edited",
                p.status.consecutive_failures, child.name
            );
            condition(p, o, "Stopped", true, "TooManyFailures", &message);
            p.notes.push(Note {
                warning: true,
                reason: "ScheduleStopped",
                message,
            });
        }
    }
    p.status.active = o
        .children
        .iter()
        .filter(|c| c.verdict.is_none())
        .map(|c| c.name.clone())
        .collect();
    p.status.active.sort();
}

fn prune_history(o: &Observed, p: &mut Plan) {
    let mut finished: Vec<&Child> = o.children.iter().filter(|c| c.verdict.is_some()).collect();
    // Newest first: the oldest go beyond the limit.
    finished.sort_by_key(|c| std::cmp::Reverse(c.scheduled_at));
    let (passed, failed): (Vec<&Child>, Vec<&Child>) = finished
        .into_iter()
        .partition(|c| matches!(c.verdict, Some(Verdict::Passed | Verdict::DryRun)));
    let keep_passed = usize::try_from(o.spec.successful_history_limit).unwrap_or(0);
    let keep_failed = usize::try_from(o.spec.failed_history_limit).unwrap_or(0);
    p.delete
        .extend(passed.iter().skip(keep_passed).map(|c| c.name.clone()));
    p.delete
        .extend(failed.iter().skip(keep_failed).map(|c| c.name.clone()));
}

fn start_or_skip(o: &Observed, p: &mut Plan, calendar: &Calendar, due: DateTime<Utc>) {
    let name = run_name(o.name, due);
    if o.children.iter().any(|c| c.name == name) {
        // Started already (the status that said so was not written).
        return;
    }
    let deadline = o
        .spec
        .starting_deadline_seconds
        .map_or(DEFAULT_STARTING_DEADLINE, |s| {
            Duration::from_secs(u64::try_from(s).unwrap_or(0))
        });
    let late = (o.now - due).to_std().unwrap_or_default();
    let skip = if late > deadline {
        Some(format!(
            "the run due at {} could not start within its starting deadline of {}s",
            due.to_rfc3339(),
            deadline.as_secs()
        ))
    } else if !calendar.in_windows(&o.spec.allowed_windows, due) {
        Some(format!(
            "the run due at {} falls outside every allowed window",
            due.to_rfc3339()
        ))
    } else if o.paused {
        Some(format!(
            "the run due at {} is skipped: chaos is paused cluster-wide (faultline resume)",
            due.to_rfc3339()
        ))
    } else if !p.status.active.is_empty() && o.spec.concurrency_policy == ConcurrencyPolicy::Forbid
    {
        Some(format!(
            "the run due at {} is skipped: {} is still going (concurrencyPolicy Forbid)",
            due.to_rfc3339(),
            p.status.active.join(", ")
        ))
    } else {
        None
    };
    if let Some(message) = skip {
        p.status.missed_runs += 1;
        p.notes.push(Note {
            warning: true,
            reason: "RunSkipped",
            message,
        });
        return;
    }
    if name.len() > NAME_LIMIT {
        p.status.missed_runs += 1;
        p.notes.push(Note {
            warning: true,
            reason: "RunSkipped",
            message: format!(
                "the run's experiment would be named {name} ({} characters, over Kubernetes' {NAME_LIMIT}): shorten the schedule's name",
                name.len()
            ),
        });
        return;
    }
    if o.spec.concurrency_policy == ConcurrencyPolicy::Replace {
        p.abort = o
            .children
            .iter()
            .filter(|c| c.verdict.is_none() && !c.abort_requested)
            .map(|c| c.name.clone())
            .collect();
    }
    let template = &o.spec.experiment_template;
    let metadata = template.metadata.clone().unwrap_or_default();
    let mut labels = metadata.labels;
    labels.insert(SCHEDULE_LABEL.into(), o.name.into());
    let mut annotations = metadata.annotations;
    annotations.insert(SCHEDULED_AT_ANNOTATION.into(), due.to_rfc3339());
    p.notes.push(Note {
        warning: false,
        reason: "RunStarted",
        message: format!("started {name} for the run due at {}", due.to_rfc3339()),
    });
    p.status.active.push(name.clone());
    p.create = Some(NewExperiment {
        name,
        labels,
        annotations,
        spec: template.spec.clone(),
    });
}

/// The next occurrence after now that falls inside the allowed windows.
fn next_in_windows(calendar: &Calendar, o: &Observed) -> Option<DateTime<Utc>> {
    let mut cursor = o.now;
    for _ in 0..WINDOW_SEARCH_LIMIT {
        let next = calendar.next_after(cursor)?;
        if calendar.in_windows(&o.spec.allowed_windows, next) {
            return Some(next);
        }
        cursor = next;
    }
    None
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
