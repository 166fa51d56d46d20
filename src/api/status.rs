//! What an experiment did and saw: `ChaosExperiment.status`.
//!
//! `phase` is what the experiment should be doing (only the lifecycle decision changes it);
//! `targets[]` records what is actually injected, per target (only the acting step changes
//! them). A record left in `Injecting` by a crash counts as injected and is reverted.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, GoDuration};
use super::packed_records;
use super::probe::ProbePhase;

/// Where an experiment is in its lifecycle:
/// `Pending -> Verifying -> Injecting -> Running -> Recovering -> Verifying -> Succeeded | Failed`,
/// with `Aborting -> Aborted` from Injecting and Running. An abort whose agents confirm the
/// revert within 2 s goes from Injecting or Running to Aborted in one status write (the
/// `faultline.dev/reverting` label and an `aborting` Event say it at once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    /// Checking the hypothesis, before injection or (once `injectedAt` is set) after recovery.
    Verifying,
    Injecting,
    Running,
    Recovering,
    Aborting,
    Succeeded,
    Failed,
    Aborted,
}

impl Phase {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Aborted)
    }
}

/// The outcome, once there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// The hypothesis held before, during and after the faults.
    Passed,
    /// The hypothesis did not hold (before injection, or after recovery).
    Failed,
    /// Stopped early: a during-probe failed, someone asked, the experiment was deleted or chaos
    /// was paused cluster-wide.
    Aborted,
    /// faultline itself could not carry out the experiment (invalid spec, a fault that failed to
    /// apply or revert); the reason says what.
    Error,
    /// A dry run completed; status lists what would have been done.
    DryRun,
    /// The experiment ran its course but no fault went in (every target was skipped, e.g. each
    /// eviction refused by a PodDisruptionBudget), so the hypothesis was not tested. The
    /// message says why each target was skipped.
    Inconclusive,
}

/// What the steady-state hypothesis says right now, for the phase being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HypothesisState {
    /// Every probe of the phase holds within its tolerance.
    Holding,
    /// A probe exceeded its failure threshold.
    Violated,
    /// Not enough checks yet in this phase (or since the controller took over).
    Undecided,
    /// No probe runs now: the experiment waits to start, or its faults are being reverted.
    NotChecked,
}

/// Where one target's fault is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetState {
    /// Selected, nothing done yet.
    #[default]
    Selected,
    /// Recorded as about to be injected; counts as injected until reverted.
    Injecting,
    Injected,
    Reverted,
    /// Not injected on purpose, e.g. an eviction a PodDisruptionBudget refused.
    Skipped,
    /// Injecting or reverting failed; `message` says why.
    Failed,
    /// The target pod went away while its fault ran (deleted, or its workload scaled down);
    /// its fault went with it and the experiment goes on with the other targets.
    Gone,
    /// Its namespace lost the opt-in label, or the pod was labelled protected, while its fault
    /// ran: the fault was reverted at once and the pod left the experiment; `message` says why.
    Withdrawn,
}

/// One target pod and the fault applied to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRecord {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The index into `spec.faults` this record is for.
    pub fault_index: i32,
    /// The fault kind, e.g. `networkLatency`.
    pub fault: String,
    pub state: TargetState,
    /// The FaultInjection carrying a network fault to the node agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<DateTime<Utc>>,
    /// How the agent applied it (e.g. `netem`, `nfqueue`, `nftables`), or the skip reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Packets that escaped the fault because the agent's userspace queue was full (NFQUEUE
    /// path only), as the agent last reported them: the fault was weaker than asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bypassed_packets: Option<i64>,
    /// Packets the fault's rules matched (NFQUEUE path only), those that bypassed included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_packets: Option<i64>,
}

impl TargetRecord {
    /// `the fault was only partly in place: 134464 of 200000 packets (67.2%) bypassed it`, when
    /// packets escaped the fault; `None` when none did (or the mechanism cannot tell).
    pub fn partly_applied(&self) -> Option<String> {
        partly_applied(self.bypassed_packets?, self.matched_packets)
    }
}

/// The sentence for `bypassed` packets out of `matched` that escaped a fault.
pub fn partly_applied(bypassed: i64, matched: Option<i64>) -> Option<String> {
    if bypassed <= 0 {
        return None;
    }
    Some(match matched.filter(|m| *m >= bypassed && *m > 0) {
        Some(matched) => format!(
            "the fault was only partly in place: {bypassed} of {matched} packets ({:.1}%) bypassed it (the agent's queue was full)",
            bypassed as f64 * 100.0 / matched as f64
        ),
        None => format!(
            "the fault was only partly in place: {bypassed} packets bypassed it (the agent's queue was full)"
        ),
    })
}

/// One probe check, kept for the report's timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSample {
    pub time: DateTime<Utc>,
    pub ok: bool,
    /// The measured value (status code, latency, query result), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What one probe has seen so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    pub name: String,
    /// The phase of the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ProbePhase>,
    /// Whether the probe currently holds (within its tolerance).
    pub holding: bool,
    pub passes: i64,
    pub failures: i64,
    pub consecutive_failures: i32,
    pub consecutive_successes: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<DateTime<Utc>>,
    /// When the probe first exceeded its failure threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_violation_at: Option<DateTime<Utc>>,
    /// The most recent checks, oldest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<ProbeSample>,
}

/// A stretch of time in which no probe checked anything although the experiment expected
/// checks, e.g. while a new controller leader took over. The checks before and after it are
/// kept; the hypothesis after it is judged on fresh checks only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeGap {
    /// The last check recorded before the gap.
    pub from: DateTime<Utc>,
    /// The first check after it; unset until that check is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// Why, in PascalCase, e.g. `ControllerChanged` (a failover or a restart of the controller
    /// that ran the probes).
    pub reason: String,
}

/// Something that happened, for the bounded timeline in status and the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    pub time: DateTime<Utc>,
    /// A PascalCase reason, the same as the Kubernetes Event's, e.g. `FaultInjected`.
    pub reason: String,
    pub message: String,
}

/// The status of a ChaosExperiment.
// `remote = "Self"`: the derived (de)serializers become `ChaosExperimentStatus::serialize` and
// `::deserialize`, wrapped by the trait impls below, which pack and unpack the target records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", remote = "Self")]
pub struct ChaosExperimentStatus {
    /// Where the experiment is in its lifecycle.
    #[serde(default)]
    pub phase: Phase,
    /// The outcome, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// A PascalCase reason for the verdict, e.g. `SteadyStateNotMet` or `ProbeFailed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The verdict in a sentence, naming the probe and value that decided it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Complete` (set on every terminal state, reason = verdict), `Injected`,
    /// `HypothesisHolding`, `Reverted`, `Paused` (True while chaos is paused and the experiment
    /// waits to start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The seed of the random target choice, so a run can be reproduced.
    // Written even when none (null), as `targets` even when empty: a hold clears both, and a
    // field left out of a status apply is not cleared by every server (the sandbox's apply
    // merges).
    #[serde(default)]
    pub seed: Option<i64>,
    /// How many pods were selected.
    #[serde(default)]
    pub target_count: i32,
    /// Every target and what was done to it, recorded before any fault is injected. Up to 100
    /// records; more are kept in `targetRecords` and this list is empty.
    #[serde(default)]
    pub targets: Vec<TargetRecord>,
    /// More than 100 target records, as `targets` would list them, gzip-compressed and
    /// base64-encoded (`base64 -d | gunzip` reads them; `faultline report` and `run --wait` show
    /// them): a smaller object keeps every write of a large experiment cheap for the API
    /// server, an abort's verdict included. faultline's readers unpack it into `targets`.
    // Written even when unset (null), as `seed`: a status going back to a plain list clears it.
    #[serde(default)]
    #[schemars(length(max = super::packed_records::PACKED_RECORDS_MAX_LENGTH))]
    pub target_records: Option<String>,
    /// What every probe has seen, updated while the experiment runs (at most about once a
    /// second, and at once when the hypothesis changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeStatus>,
    /// The hypothesis now, for the phase being checked (unset without a steady state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypothesis: Option<HypothesisState>,
    /// Every probe's checks so far, e.g. `41 passed, 2 failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<String>,
    /// The most recent check of any probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Times in which no probe checked anything although checks were due (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_gaps: Vec<ProbeGap>,
    /// How many faults went in, one per target and fault; each round of a repeating pod kill
    /// adds its kills. 0 at the end means the hypothesis was never tested.
    #[serde(default)]
    pub faults_injected: i32,
    /// What happened, oldest first (bounded; the oldest entries are dropped first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the experiment was aborted, in a sentence: the reason given to `faultline abort`,
    /// the probe that failed, the fault that could not be injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
    /// When the abort began: the hypothesis violation, or the abort request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_started_at: Option<DateTime<Utc>>,
    /// From the hypothesis violation (or abort request) to every fault confirmed reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_latency: Option<GoDuration>,
    /// From every fault reverted to the hypothesis holding again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_time: Option<GoDuration>,
    /// Written by the node agents, one entry per node, once the experiment is reverting: the
    /// node holds none of its faults and will apply none. One write per node confirms every
    /// fault there, however many pods (the controller never writes this list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000), transform = super::bounds::list_map_by_node)]
    pub revert_receipts: Vec<RevertReceipt>,
}

impl Serialize for ChaosExperimentStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match packed_records::pack(&self.targets) {
            Some(packed) => {
                let stored = ChaosExperimentStatus {
                    targets: Vec::new(),
                    target_records: Some(packed),
                    ..self.clone()
                };
                ChaosExperimentStatus::serialize(&stored, serializer)
            }
            None if self.target_records.is_some() => {
                let stored = ChaosExperimentStatus {
                    target_records: None,
                    ..self.clone()
                };
                ChaosExperimentStatus::serialize(&stored, serializer)
            }
            None => ChaosExperimentStatus::serialize(self, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ChaosExperimentStatus {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut status = ChaosExperimentStatus::deserialize(deserializer)?;
        if let Some(packed) = status.target_records.take() {
            status.targets = packed_records::unpack(&packed).map_err(serde::de::Error::custom)?;
        }
        Ok(status)
    }
}

impl ChaosExperimentStatus {
    /// The status as JSON with its target records always a plain list (and no
    /// `targetRecords`): as compared and logged (packing would make every comparison
    /// compress), and as reports show it.
    pub fn to_plain_json(&self) -> serde_json::Result<serde_json::Value> {
        let mut plain = ChaosExperimentStatus::serialize(self, serde_json::value::Serializer)?;
        if let Some(fields) = plain.as_object_mut() {
            fields.remove("targetRecords");
        }
        Ok(plain)
    }
}

/// A node agent's word that every fault of the experiment on its node is reverted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertReceipt {
    /// The node.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// When the agent had taken the last of the experiment's rules out of the kernel.
    pub reverted_at: DateTime<Utc>,
    /// How many of the experiment's FaultInjections for this node the receipt covers.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub injections: i32,
    /// Set when a revert left rules behind (or failed): which, and where. The faults of this
    /// node are then not confirmed reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub failed: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_that_bypassed_a_fault_are_told_with_their_share() {
        assert_eq!(partly_applied(0, Some(100)), None);
        assert_eq!(
            partly_applied(134_464, Some(200_000)).unwrap(),
            "the fault was only partly in place: 134464 of 200000 packets (67.2%) bypassed it (the agent's queue was full)"
        );
        // No (or an inconsistent) matched count: the number alone.
        assert_eq!(
            partly_applied(5, Some(2)).unwrap(),
            "the fault was only partly in place: 5 packets bypassed it (the agent's queue was full)"
        );
    }

    fn records(count: usize) -> Vec<TargetRecord> {
        (0..count)
            .map(|i| TargetRecord {
                namespace: "shop".into(),
                name: format!("api-{i:04}"),
                fault: "networkLatency".into(),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn many_target_records_are_written_packed_and_read_back_as_a_list() {
        let status = ChaosExperimentStatus {
            targets: records(packed_records::PLAIN_RECORDS_LIMIT + 1),
            ..Default::default()
        };
        let stored = serde_json::to_value(&status).unwrap();
        assert_eq!(stored["targets"], serde_json::json!([]));
        assert!(stored["targetRecords"].is_string(), "{stored}");
        let read: ChaosExperimentStatus = serde_json::from_value(stored).unwrap();
        assert_eq!(read, status);
        assert_eq!(read.target_records, None);
    }

    #[test]
    fn few_target_records_are_written_as_a_list_and_clear_a_packed_string() {
        let status = ChaosExperimentStatus {
            targets: records(packed_records::PLAIN_RECORDS_LIMIT),
            target_records: Some("left from when there were more".into()),
            ..Default::default()
        };
        let stored = serde_json::to_value(&status).unwrap();
        assert_eq!(stored["targets"].as_array().unwrap().len(), 100);
        // Null, not absent: a merge patch or server-side apply of it removes the old string.
        assert_eq!(stored["targetRecords"], serde_json::Value::Null);
        assert!(stored.as_object().unwrap().contains_key("targetRecords"));
    }

    #[test]
    fn the_plain_json_lists_every_record_and_no_packed_string() {
        let status = ChaosExperimentStatus {
            targets: records(500),
            ..Default::default()
        };
        let plain = status.to_plain_json().unwrap();
        assert_eq!(plain["targets"].as_array().unwrap().len(), 500);
        assert!(plain.get("targetRecords").is_none(), "{plain}");
    }
}
