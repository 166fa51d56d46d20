//! One stage of a GameDay: when it may start (pause, approval, the pause switch), the
//! experiments it creates (names, the day's probes added), and its verdict once they end.

use std::time::Duration;

use super::plan::{Child, NewExperiment, Note, Observed, Plan, current_run, stage_phase, until};
use super::plan::{passed, worst};
use crate::api::{
    ChaosExperimentSpec, GameDaySpec, GameDayStage, Verdict, duration_bounds::PAUSE_AFTER,
    rules::NAME_LIMIT,
};
use crate::controller::spec_check;

/// How often a paused GameDay looks whether chaos was resumed.
pub(super) const PAUSED_RECHECK: Duration = Duration::from_secs(10);
/// The name of the experiment created for `experiment` of `stage`.
pub fn experiment_name(gameday: &str, stage: &str, experiment: &str) -> String {
    format!("{gameday}-{stage}-{experiment}")
}

/// Checks what the API server's schema checks and the controller relies on: every pause, the
/// day's hypothesis and every stage's experiments. The error names the field, so a GameDay that
/// bypassed the schema fails before it starts anything.
pub(super) fn check_spec(day: &GameDaySpec) -> Result<(), String> {
    if let Some(steady) = &day.steady_state {
        spec_check::check_steady_state(steady, "spec.steadyState")?;
    }
    for (i, stage) in day.stages.iter().enumerate() {
        if let Some(pause) = &stage.pause_after {
            pause.parse_within(&format!("spec.stages[{i}].pauseAfter"), &PAUSE_AFTER)?;
        }
        for (j, experiment) in stage.experiments.iter().enumerate() {
            let path = format!("spec.stages[{i}].experiments[{j}].spec");
            spec_check::check_spec_at(&experiment.spec, &path)?;
        }
    }
    Ok(())
}

/// The spec of a stage's experiment: its own, with the day's probes added (the day's recovery
/// timeout applies when the experiment has no hypothesis of its own).
pub fn experiment_spec(
    day: &GameDaySpec,
    own: &ChaosExperimentSpec,
) -> Result<ChaosExperimentSpec, String> {
    let mut spec = own.clone();
    let Some(global) = &day.steady_state else {
        return Ok(spec);
    };
    let merged = match spec.steady_state.take() {
        None => global.clone(),
        Some(mut own_state) => {
            for probe in &global.probes {
                if own_state.probes.iter().any(|p| p.name == probe.name) {
                    return Err(format!(
                        "the game day's probe {:?} has the same name as one of the experiment's own; rename one of them",
                        probe.name
                    ));
                }
            }
            own_state.probes.extend(global.probes.iter().cloned());
            own_state
        }
    };
    if merged.probes.len() > 32 {
        return Err(format!(
            "with the game day's probes the experiment would have {} probes; at most 32 fit",
            merged.probes.len()
        ));
    }
    spec.steady_state = Some(merged);
    Ok(spec)
}

/// Starts stage `index` if its pause and approval allow. Returns false while it has to wait.
pub(super) fn start_stage(o: &Observed, p: &mut Plan, index: usize) -> bool {
    let stage: &GameDayStage = &o.spec.stages[index];
    if index > 0
        && let Some(pause) = &o.spec.stages[index - 1].pause_after
        && let Ok(pause) = PAUSE_AFTER.check(pause.as_str())
        && let Some(previous_end) = p.status.stages[index - 1].finished_at
    {
        let ready = previous_end + chrono::Duration::from_std(pause).unwrap_or_default();
        if o.now < ready {
            p.status.stages[index].phase = stage_phase::PAUSED.into();
            p.requeue_after = Some(until(o.now, ready));
            return false;
        }
    }
    if stage.require_approval && o.approved_stage != Some(stage.name.as_str()) {
        if p.status.stages[index].phase != stage_phase::WAITING_FOR_APPROVAL {
            p.status.stages[index].phase = stage_phase::WAITING_FOR_APPROVAL.into();
            p.notes.push(Note {
                warning: false,
                reason: "StageAwaitingApproval",
                message: format!(
                    "stage {} waits for approval: kubectl annotate gameday {} {}={} --overwrite",
                    stage.name,
                    o.name,
                    crate::api::APPROVE_STAGE_ANNOTATION,
                    stage.name
                ),
            });
        }
        return false;
    }
    if o.paused {
        let message = format!(
            "chaos is paused cluster-wide: stage {} starts after `faultline resume`",
            stage.name
        );
        if p.status.message.as_deref() != Some(message.as_str()) {
            p.notes.push(Note {
                warning: true,
                reason: "StageHeld",
                message: message.clone(),
            });
            p.status.message = Some(message);
        }
        p.requeue_after = Some(PAUSED_RECHECK);
        return false;
    }
    if p.status
        .message
        .as_deref()
        .is_some_and(|m| m.starts_with("chaos is paused"))
    {
        p.status.message = None;
    }
    let mut experiments = Vec::new();
    let mut problems = Vec::new();
    for experiment in &stage.experiments {
        let name = experiment_name(o.name, &stage.name, &experiment.name);
        if name.len() > NAME_LIMIT {
            problems.push(format!(
                "experiment name {name} is {} characters, over Kubernetes' {NAME_LIMIT}: shorten the game day, stage or experiment name",
                name.len()
            ));
            continue;
        }
        match experiment_spec(o.spec, &experiment.spec) {
            Ok(spec) => experiments.push(NewExperiment {
                name,
                stage: stage.name.clone(),
                spec,
            }),
            Err(problem) => problems.push(format!("experiment {}: {problem}", experiment.name)),
        }
    }
    let record = &mut p.status.stages[index];
    record.started_at = Some(o.now);
    if !problems.is_empty() {
        record.phase = stage_phase::FAILED.into();
        record.verdict = Some(Verdict::Error);
        record.finished_at = Some(o.now);
        record.message = Some(problems.join("; "));
        p.notes.push(Note {
            warning: true,
            reason: "StageFailed",
            message: format!("stage {} cannot start: {}", stage.name, problems.join("; ")),
        });
        return true;
    }
    record.phase = stage_phase::RUNNING.into();
    record.experiments = experiments.iter().map(|e| e.name.clone()).collect();
    p.notes.push(Note {
        warning: false,
        reason: "StageStarted",
        message: format!(
            "stage {} started: {}",
            stage.name,
            record.experiments.join(", ")
        ),
    });
    let existing: Vec<&str> = current_run(o, p.status.run)
        .map(|c| c.name.as_str())
        .collect();
    p.create.extend(
        experiments
            .into_iter()
            .filter(|e| !existing.contains(&e.name.as_str())),
    );
    true
}

/// Records stage `index` as finished if every experiment has a verdict; false while it runs.
pub(super) fn stage_finished(o: &Observed, p: &mut Plan, index: usize, run: i64) -> bool {
    let record = &p.status.stages[index];
    let mut verdicts = Vec::new();
    let mut problems = Vec::new();
    for name in &record.experiments {
        match current_run(o, run).find(|c| &c.name == name) {
            None => {
                verdicts.push(Verdict::Error);
                problems.push(format!("{name} was deleted before it finished"));
            }
            Some(Child { verdict: None, .. }) => return false,
            Some(Child {
                verdict: Some(verdict),
                message,
                ..
            }) => {
                verdicts.push(*verdict);
                if !passed(*verdict) {
                    problems.push(format!(
                        "{name} {verdict:?}: {}",
                        message.as_deref().unwrap_or("no reason recorded")
                    ));
                }
            }
        }
    }
    let verdict = worst(verdicts);
    let name = o.spec.stages[index].name.clone();
    let record = &mut p.status.stages[index];
    record.verdict = Some(verdict);
    record.finished_at = Some(o.now);
    if passed(verdict) {
        record.phase = stage_phase::SUCCEEDED.into();
        record.message = None;
        p.notes.push(Note {
            warning: false,
            reason: "StageSucceeded",
            message: format!("stage {name}: every experiment {verdict:?}"),
        });
    } else {
        record.phase = stage_phase::FAILED.into();
        record.message = Some(problems.join("; "));
        p.notes.push(Note {
            warning: true,
            reason: "StageFailed",
            message: format!("stage {name} {verdict:?}: {}", problems.join("; ")),
        });
    }
    true
}

pub(super) fn skip_pending_stages(p: &mut Plan) {
    for stage in &mut p.status.stages {
        if !matches!(
            stage.phase.as_str(),
            stage_phase::SUCCEEDED | stage_phase::FAILED
        ) {
            stage.phase = stage_phase::SKIPPED.into();
        }
    }
}
