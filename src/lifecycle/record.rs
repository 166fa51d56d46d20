//! Pure helpers for what status records: conditions that keep their transition time unless
//! their status changes, and a timeline that stays bounded.

use chrono::{DateTime, Utc};

use crate::api::{Condition, ConditionStatus, TimelineEntry};

/// The most timeline entries kept in status; the oldest go first. Status must stay far below
/// etcd's object size limit even for an experiment that kills pods every second for hours.
pub const TIMELINE_LIMIT: usize = 100;

/// Sets a condition in `conditions` (keyed by type). `lastTransitionTime` changes only when the
/// status does, as Kubernetes API conventions require; reason and message always update.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.status = status;
                existing.last_transition_time = Some(now);
            }
            existing.reason = reason.to_string();
            existing.message = message.to_string();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message: message.to_string(),
            last_transition_time: Some(now),
            observed_generation: generation,
        }),
    }
}

/// Appends to the timeline, dropping the oldest entries beyond [`TIMELINE_LIMIT`]. The first
/// entry (the experiment's start) is kept so the report always knows where the story began.
pub fn push_timeline(timeline: &mut Vec<TimelineEntry>, entry: TimelineEntry) {
    timeline.push(entry);
    if timeline.len() > TIMELINE_LIMIT {
        let excess = timeline.len() - TIMELINE_LIMIT;
        timeline.drain(1..=excess);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            "Injected",
            ConditionStatus::False,
            "Pending",
            "",
            Some(1),
            t(0),
        );
        set_condition(
            &mut conditions,
            "Injected",
            ConditionStatus::False,
            "Waiting",
            "x",
            Some(1),
            t(5),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, Some(t(0)));
        assert_eq!(conditions[0].reason, "Waiting");
        set_condition(
            &mut conditions,
            "Injected",
            ConditionStatus::True,
            "FaultsInjected",
            "",
            Some(2),
            t(9),
        );
        assert_eq!(conditions[0].last_transition_time, Some(t(9)));
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            "Complete",
            ConditionStatus::True,
            "Passed",
            "",
            Some(2),
            t(10),
        );
        assert_eq!(conditions.len(), 2);
    }

    #[test]
    fn the_timeline_keeps_its_first_entry_and_the_latest_ones() {
        let mut timeline = vec![];
        for i in 0..250 {
            let entry = TimelineEntry {
                time: t(i),
                reason: format!("E{i}"),
                message: String::new(),
            };
            push_timeline(&mut timeline, entry);
        }
        assert_eq!(timeline.len(), TIMELINE_LIMIT);
        assert_eq!(timeline[0].reason, "E0");
        assert_eq!(timeline[1].reason, "E151");
        assert_eq!(timeline.last().unwrap().reason, "E249");
    }
}
