//! `GameDay`: ordered stages of experiments under one steady-state hypothesis.

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    common::{Condition, GoDuration},
    duration_bounds,
    experiment::{ChaosExperimentSpec, SteadyState},
    status::Verdict,
};

/// A game day: stages run one after another; the experiments of a stage run in parallel. A
/// global steady-state hypothesis is checked before the first stage, between stages and at the
/// end, in addition to each experiment's own.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "GameDay",
    doc = "Ordered stages of chaos experiments under one steady-state hypothesis.",
    plural = "gamedays",
    singular = "gameday",
    shortname = "fgd",
    category = "chaos",
    namespaced,
    status = "GameDayStatus",
    derive = "Default",
    derive = "PartialEq",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Stage",
        type_ = "string",
        json_path = ".status.currentStage",
        description = "The stage running now"
    ),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(name = "Start", type_ = "string", json_path = ".spec.startAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = super::rules::gameday_names_fit())]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!(has(self.startAt) && has(self.schedule))").message("set startAt or schedule, not both"))]
#[x_kube(validation = super::rules::day_probes_fit())]
#[x_kube(validation = super::rules::day_probes_run())]
pub struct GameDaySpec {
    /// When to start, as an RFC 3339 time. Unset (and no schedule) starts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<DateTime<Utc>>,
    /// A cron expression to repeat the game day on, instead of `startAt`. A run that cannot
    /// start within 5 minutes of its time (the controller was down) is skipped, not started
    /// late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// The IANA time zone for `schedule`. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// The hypothesis for the whole day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_state: Option<SteadyState>,
    /// The stages, in order: 1 to 16, names unique.
    #[schemars(length(min = 1, max = 16), transform = super::bounds::list_map_by_name)]
    pub stages: Vec<GameDayStage>,
    /// `Abort` (default): a failed stage stops the day. `Continue`: record it and go on.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// What a failed stage does to the rest of the day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnFailure {
    #[default]
    Abort,
    Continue,
}

/// One stage: its experiments run in parallel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GameDayStage {
    /// The stage's name, unique in the game day.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The experiments of this stage. At least one; names are unique within the stage.
    #[schemars(length(min = 1, max = 16), transform = super::bounds::list_map_by_name)]
    pub experiments: Vec<StageExperiment>,
    /// Wait this long after the stage ends before the next one starts, e.g. `5m`: at most 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = duration_bounds::PAUSE_AFTER.in_schema())]
    pub pause_after: Option<GoDuration>,
    /// Wait before starting this stage until someone approves it by annotating the GameDay with
    /// `faultline.dev/approve-stage=<stage name>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
}

/// An experiment in a stage; it is created as `<gameday>-<stage>-<name>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageExperiment {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The ChaosExperiment spec.
    pub spec: ChaosExperimentSpec,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Where one stage is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GameDayStageStatus {
    pub name: String,
    /// Pending, Paused (waiting out the previous stage's `pauseAfter`), WaitingForApproval,
    /// Running, Succeeded, Failed or Skipped.
    pub phase: String,
    /// The experiments created for this stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experiments: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the stage ended as it did, naming the experiments that decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status of a GameDay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GameDayStatus {
    /// Pending (waiting for its start time), Running, Aborting, Succeeded, Failed or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Which run this is: 1 for a one-off game day, counting up for a scheduled one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub run: i64,
    /// When the current (or last) run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the current (or last) run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The last scheduled time skipped because its run could not start in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_missed_time: Option<DateTime<Utc>>,
    /// When the next run starts (`startAt`, or the schedule's next time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_stage: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<GameDayStageStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
