//! What a GameDay should do next, from what is observed (pure; the clock is an input).
//!
//! A run: wait for the start time, then for each stage in order: wait out the previous stage's
//! `pauseAfter`, wait for approval if the stage needs it, create its experiments, wait until
//! every one has a verdict. A failed stage ends the run when `onFailure` is `Abort`. The
//! day's steady-state hypothesis goes into every experiment it creates, so it is checked before
//! each stage, during it (a violation aborts the stage) and after it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::stage::{check_spec, skip_pending_stages, stage_finished, start_stage};
use crate::api::{
    ChaosExperimentSpec, ConditionStatus, GameDaySpec, GameDayStageStatus, GameDayStatus,
    OnFailure, Verdict,
};
use crate::calendar::Calendar;
use crate::lifecycle::record::set_condition;
pub use crate::owned_experiments::Note;

/// How late a scheduled run may start; a later one is skipped (nobody planned to be there).
pub const SCHEDULED_START_DEADLINE: Duration = Duration::from_secs(300);
/// The longest wait between two looks at a GameDay that waits for a time.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const RUNNING: &str = "Running";
    pub const ABORTING: &str = "Aborting";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const ABORTED: &str = "Aborted";
}

pub mod stage_phase {
    pub const PENDING: &str = "Pending";
    pub const PAUSED: &str = "Paused";
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
    pub const RUNNING: &str = "Running";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const FAILED: &str = "Failed";
    pub const SKIPPED: &str = "Skipped";
}

/// An experiment the GameDay created, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct Child {
    pub name: String,
    pub stage: String,
    /// The run it was created for (its run label).
    pub run: i64,
    pub verdict: Option<Verdict>,
    pub message: Option<String>,
    pub abort_requested: bool,
}

/// Everything the decision looks at.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub spec: &'a GameDaySpec,
    pub status: GameDayStatus,
    pub generation: Option<i64>,
    pub created_at: DateTime<Utc>,
    /// The abort annotation's value, when set.
    pub abort_requested: Option<&'a str>,
    /// The approve-stage annotation's value, when set.
    pub approved_stage: Option<&'a str>,
    pub children: Vec<Child>,
    /// Chaos is paused cluster-wide: no stage starts.
    pub paused: bool,
    pub now: DateTime<Utc>,
}

/// An experiment to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewExperiment {
    pub name: String,
    pub stage: String,
    pub spec: ChaosExperimentSpec,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub status: GameDayStatus,
    pub create: Vec<NewExperiment>,
    /// Experiments to ask to abort.
    pub abort: Vec<String>,
    /// Experiments of earlier runs to delete before this run's can be created.
    pub delete: Vec<String>,
    pub notes: Vec<Note>,
    /// When to look again if nothing changes before.
    pub requeue_after: Option<Duration>,
}

pub fn plan(o: &Observed) -> Plan {
    let mut p = Plan {
        status: o.status.clone(),
        ..Plan::default()
    };
    p.status.observed_generation = o.generation;
    match p.status.phase.as_deref() {
        Some(phase::RUNNING) => running(o, &mut p),
        Some(phase::ABORTING) => aborting(o, &mut p),
        _ => waiting(o, &mut p),
    }
    p
}

/// Pending, or finished: start a run when its time has come.
fn waiting(o: &Observed, p: &mut Plan) {
    let finished = matches!(
        p.status.phase.as_deref(),
        Some(phase::SUCCEEDED | phase::FAILED | phase::ABORTED)
    );
    if let Some(reason) = o.abort_requested {
        if !finished {
            p.status.stages = fresh_stages(o.spec);
            skip_pending_stages(p);
            finish(
                o,
                p,
                Verdict::Aborted,
                format!("aborted before it started: {reason}"),
            );
        }
        p.status.next_start_time = None;
        return;
    }
    let start = match check_spec(o.spec).and_then(|()| next_start(o)) {
        Ok(start) => start,
        Err(message) => {
            if !finished {
                finish(o, p, Verdict::Error, message);
            }
            return;
        }
    };
    let Some(start) = start else {
        p.status.next_start_time = None;
        if !finished {
            p.status.phase = Some(phase::PENDING.into());
        }
        return;
    };
    if o.now < start {
        if !finished {
            p.status.phase = Some(phase::PENDING.into());
            p.status.stages = fresh_stages(o.spec);
        }
        p.status.next_start_time = Some(start);
        p.requeue_after = Some(until(o.now, start));
        return;
    }
    if o.spec.schedule.is_some() && late(o.now, start) {
        // Skip this occurrence and wait for the next one.
        p.notes.push(Note {
            warning: true,
            reason: "RunMissed",
            message: format!(
                "the run due at {start} could not start within {}s (was the controller down?); waiting for the next",
                SCHEDULED_START_DEADLINE.as_secs()
            ),
        });
        p.status.last_missed_time = Some(start);
        if let Ok(Some(next)) = next_start(&Observed {
            status: p.status.clone(),
            ..o.clone()
        }) {
            p.status.next_start_time = Some(next);
            p.requeue_after = Some(until(o.now, next));
        }
        return;
    }
    p.status.run += 1;
    p.status.phase = Some(phase::RUNNING.into());
    p.status.started_at = Some(o.now);
    p.status.finished_at = None;
    p.status.next_start_time = None;
    p.status.verdict = None;
    p.status.message = None;
    p.status.current_stage = None;
    p.status.stages = fresh_stages(o.spec);
    set_condition(
        &mut p.status.conditions,
        "Complete",
        ConditionStatus::False,
        "Running",
        &format!("run {} is going", p.status.run),
        o.generation,
        o.now,
    );
    p.notes.push(Note {
        warning: false,
        reason: "GameDayStarted",
        message: format!(
            "run {} started: {} stages",
            p.status.run,
            o.spec.stages.len()
        ),
    });
    running(o, p);
}

/// When the next run starts: `Ok(None)` when no run is due ever again.
fn next_start(o: &Observed) -> Result<Option<DateTime<Utc>>, String> {
    match (&o.spec.schedule, o.spec.start_at) {
        (Some(schedule), _) => {
            let calendar = Calendar::new(schedule, o.spec.time_zone.as_deref())?;
            // The first run is the first occurrence after the GameDay was created.
            let after = o
                .status
                .started_at
                .unwrap_or(o.created_at)
                .max(o.status.last_missed_time.unwrap_or(o.created_at));
            Ok(calendar
                .due(after, o.now)
                .map(|(latest, _)| latest)
                .or_else(|| calendar.next_after(o.now.max(after))))
        }
        (None, Some(start_at)) => Ok((o.status.run == 0).then_some(start_at)),
        (None, None) => Ok((o.status.run == 0).then_some(o.created_at)),
    }
}

fn late(now: DateTime<Utc>, due: DateTime<Utc>) -> bool {
    (now - due).to_std().unwrap_or_default() > SCHEDULED_START_DEADLINE
}

pub(super) fn until(now: DateTime<Utc>, then: DateTime<Utc>) -> Duration {
    (then - now)
        .to_std()
        .unwrap_or_default()
        .clamp(Duration::from_secs(1), LONGEST_WAIT)
}

fn fresh_stages(spec: &GameDaySpec) -> Vec<GameDayStageStatus> {
    spec.stages
        .iter()
        .map(|s| GameDayStageStatus {
            name: s.name.clone(),
            phase: stage_phase::PENDING.into(),
            ..GameDayStageStatus::default()
        })
        .collect()
}

pub(super) fn current_run<'a>(o: &'a Observed, run: i64) -> impl Iterator<Item = &'a Child> {
    o.children.iter().filter(move |c| c.run == run)
}

fn running(o: &Observed, p: &mut Plan) {
    let run = p.status.run;
    if let Some(reason) = o.abort_requested {
        p.status.phase = Some(phase::ABORTING.into());
        p.status.message = Some(format!("aborting: {reason}"));
        p.notes.push(Note {
            warning: true,
            reason: "GameDayAborting",
            message: format!("aborting every experiment still going: {reason}"),
        });
        aborting(o, p);
        return;
    }
    let stale: Vec<String> = o
        .children
        .iter()
        .filter(|c| c.run != run)
        .map(|c| c.name.clone())
        .collect();
    if !stale.is_empty() {
        // Names repeat from run to run: the last run's experiments must go first.
        p.delete = stale;
        p.requeue_after = Some(Duration::from_secs(1));
        return;
    }
    // Stages whose list in status is out of step with the spec (the spec was edited) are
    // brought in line by name; finished ones keep their record.
    for (i, stage) in o.spec.stages.iter().enumerate() {
        if p.status.stages.get(i).map(|s| s.name.as_str()) != Some(stage.name.as_str()) {
            let existing = p.status.stages.iter().position(|s| s.name == stage.name);
            let record = match existing {
                Some(j) => p.status.stages.remove(j),
                None => GameDayStageStatus {
                    name: stage.name.clone(),
                    phase: stage_phase::PENDING.into(),
                    ..GameDayStageStatus::default()
                },
            };
            p.status.stages.insert(i.min(p.status.stages.len()), record);
        }
    }
    p.status.stages.truncate(o.spec.stages.len());

    for index in 0..o.spec.stages.len() {
        let stage = &o.spec.stages[index];
        let state = p.status.stages[index].phase.clone();
        match state.as_str() {
            stage_phase::SUCCEEDED | stage_phase::FAILED | stage_phase::SKIPPED => continue,
            stage_phase::RUNNING => {
                p.status.current_stage = Some(stage.name.clone());
                if !stage_finished(o, p, index, run) {
                    return;
                }
            }
            _ => {
                p.status.current_stage = Some(stage.name.clone());
                if !start_stage(o, p, index) {
                    return;
                }
                // A stage that could not even start has failed already: go on.
                if p.status.stages[index].phase == stage_phase::RUNNING {
                    return;
                }
            }
        }
        let failed = p.status.stages[index].phase == stage_phase::FAILED;
        if failed && o.spec.on_failure == OnFailure::Abort {
            skip_pending_stages(p);
            break;
        }
    }
    let verdict = day_verdict(&p.status.stages);
    let message = day_message(&p.status.stages);
    finish(o, p, verdict, message);
}

fn aborting(o: &Observed, p: &mut Plan) {
    let run = p.status.run;
    let going: Vec<&Child> = current_run(o, run)
        .filter(|c| c.verdict.is_none())
        .collect();
    if !going.is_empty() {
        p.abort = going
            .iter()
            .filter(|c| !c.abort_requested)
            .map(|c| c.name.clone())
            .collect();
        return;
    }
    for index in 0..p.status.stages.len() {
        if p.status.stages[index].phase == stage_phase::RUNNING {
            stage_finished(o, p, index, run);
        }
    }
    skip_pending_stages(p);
    let reason = o
        .abort_requested
        .map_or_else(|| "abort requested".to_string(), str::to_string);
    finish(o, p, Verdict::Aborted, format!("aborted: {reason}"));
}

fn finish(o: &Observed, p: &mut Plan, verdict: Verdict, message: String) {
    p.status.phase = Some(
        match verdict {
            Verdict::Passed | Verdict::DryRun => phase::SUCCEEDED,
            Verdict::Aborted => phase::ABORTED,
            Verdict::Failed | Verdict::Error | Verdict::Inconclusive => phase::FAILED,
        }
        .into(),
    );
    p.status.verdict = Some(verdict);
    p.status.message = Some(message.clone());
    p.status.current_stage = None;
    p.status.finished_at = Some(o.now);
    set_condition(
        &mut p.status.conditions,
        "Complete",
        ConditionStatus::True,
        &format!("{verdict:?}"),
        &message,
        o.generation,
        o.now,
    );
    p.notes.push(Note {
        warning: !passed(verdict),
        reason: "GameDayFinished",
        message: format!("{verdict:?}: {message}"),
    });
    if o.spec.schedule.is_some()
        && o.abort_requested.is_none()
        && let Ok(Some(next)) = next_start(&Observed {
            status: p.status.clone(),
            ..o.clone()
        })
    {
        p.status.next_start_time = Some(next);
        p.requeue_after = Some(until(o.now, next));
    }
}

pub(super) fn passed(verdict: Verdict) -> bool {
    matches!(verdict, Verdict::Passed | Verdict::DryRun)
}

/// The verdict of several: the one `faultline run` would take its exit code from (Error,
/// then Aborted, then Failed, then Inconclusive); all dry runs stay a dry run.
pub(super) fn worst(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let rank = |v: &Verdict| match v {
        Verdict::DryRun => 0,
        Verdict::Passed => 1,
        Verdict::Inconclusive => 2,
        Verdict::Failed => 3,
        Verdict::Aborted => 4,
        Verdict::Error => 5,
    };
    let verdicts: Vec<Verdict> = verdicts.into_iter().collect();
    if !verdicts.is_empty() && verdicts.iter().all(|v| *v == Verdict::DryRun) {
        return Verdict::DryRun;
    }
    verdicts
        .into_iter()
        .filter(|v| *v != Verdict::DryRun)
        .max_by_key(rank)
        .unwrap_or(Verdict::Passed)
}

fn day_verdict(stages: &[GameDayStageStatus]) -> Verdict {
    worst(stages.iter().filter_map(|s| s.verdict))
}

fn day_message(stages: &[GameDayStageStatus]) -> String {
    let passed_count = stages
        .iter()
        .filter(|s| s.phase == stage_phase::SUCCEEDED)
        .count();
    let mut parts = vec![format!("{passed_count} of {} stages passed", stages.len())];
    for stage in stages.iter().filter(|s| s.phase == stage_phase::FAILED) {
        parts.push(format!(
            "stage {} failed: {}",
            stage.name,
            stage.message.as_deref().unwrap_or("")
        ));
    }
    let skipped: Vec<&str> = stages
        .iter()
        .filter(|s| s.phase == stage_phase::SKIPPED)
        .map(|s| s.name.as_str())
        .collect();
    if !skipped.is_empty() {
        parts.push(format!("skipped: {}", skipped.join(", ")));
    }
    parts.join("; ")
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
