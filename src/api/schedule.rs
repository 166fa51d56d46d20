//! `ChaosSchedule`: run an experiment on a cron schedule, only inside allowed windows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{common::Condition, experiment::ChaosExperimentSpec, status::Verdict};

/// Runs a ChaosExperiment on a cron schedule (like a CronJob), but only inside the allowed
/// windows, and stops itself after too many failed runs instead of failing silently forever.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "ChaosSchedule",
    doc = "Runs a ChaosExperiment on a cron schedule, inside allowed windows.",
    plural = "chaosschedules",
    singular = "chaosschedule",
    shortname = "fsched",
    category = "chaos",
    namespaced,
    status = "ChaosScheduleStatus",
    derive = "Default",
    derive = "PartialEq",
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "TimeZone", type_ = "string", json_path = ".spec.timeZone"),
    printcolumn(name = "Suspend", type_ = "boolean", json_path = ".spec.suspend"),
    printcolumn(
        name = "Last",
        type_ = "date",
        json_path = ".status.lastScheduleTime",
        description = "The last scheduled time handled (run or skipped)"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "When the next experiment will start"
    ),
    printcolumn(
        name = "Last-Verdict",
        type_ = "string",
        json_path = ".status.lastVerdict"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = super::rules::schedule_name_fits())]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.failedHistoryLimit) || self.failedHistoryLimit >= 0").message("failedHistoryLimit must be zero or more"))]
pub struct ChaosScheduleSpec {
    /// A cron expression with 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first, e.g. `0 10 * * TUE`. `@hourly`, `@daily` and `@weekly` work too.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// The IANA time zone the schedule and windows are read in, e.g. `Europe/Berlin`.
    /// Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// What to do when a run is due while the previous one is still going: `Allow`, `Forbid`
    /// (skip the new run; the default) or `Replace` (abort the old one).
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Pause the schedule without deleting it.
    #[serde(default)]
    pub suspend: bool,
    /// A run that could not start within this many seconds of its time (the controller was
    /// down, the schedule was suspended) is skipped and recorded as missed, never started late.
    /// Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_deadline_seconds: Option<i64>,
    /// Finished experiments that passed to keep. Default 3.
    #[serde(default = "three")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_history_limit: i32,
    /// Finished experiments that failed or aborted to keep. Default 3.
    #[serde(default = "three")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_history_limit: i32,
    /// Runs happen only inside one of these windows. Empty means any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub allowed_windows: Vec<AllowedWindow>,
    /// Stop starting runs after this many failed runs in a row, with a `Stopped` condition
    /// saying so; any edit of the spec resumes. Unset never stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub stop_after_consecutive_failures: Option<i32>,
    /// The experiment to create on every run.
    pub experiment_template: ExperimentTemplate,
}

fn three() -> i32 {
    3
}

/// Concurrency between runs of one schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    Allow,
    #[default]
    Forbid,
    Replace,
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A recurring window when runs may start, read in the schedule's time zone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.start < self.end").message("allowed window: start must be before end (windows across midnight: use two windows)"))]
pub struct AllowedWindow {
    /// Days the window is open. Empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM` (24 h).
    #[schemars(length(max = 5), regex(pattern = super::bounds::WINDOW_START_PATTERN))]
    pub start: String,
    /// Closing time, `HH:MM` (24 h), after `start`.
    #[schemars(
        length(max = 5),
        regex(pattern = super::bounds::WINDOW_END_PATTERN)
    )]
    pub end: String,
}

/// Labels and annotations for the experiments a schedule creates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The experiment a schedule creates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// The ChaosExperiment spec.
    pub spec: ChaosExperimentSpec,
}

/// The status of a ChaosSchedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosScheduleStatus {
    /// The last scheduled time handled: a run started, or skipped (and counted in
    /// `missedRuns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<DateTime<Utc>>,
    /// Experiments of this schedule that are still running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active: Vec<String>,
    /// The verdict of the latest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verdict: Option<Verdict>,
    /// The scheduled time of the latest finished run counted in `lastVerdict` and
    /// `consecutiveFailures`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finished_schedule_time: Option<DateTime<Utc>>,
    /// Finished runs in a row whose verdict was not Passed. Editing the spec resets it.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Runs skipped because they fell outside every window or missed their starting deadline.
    #[serde(default)]
    pub missed_runs: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Active` (False while suspended, stopped or invalid, with the reason), and `Stopped`
    /// when stopAfterConsecutiveFailures tripped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
