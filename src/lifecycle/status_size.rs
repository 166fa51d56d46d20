//! How big an experiment's status may grow. The API server stores an object in one etcd entry
//! of at most 1.5 MiB, and a status write over it fails (`etcdserver: request is too large`)
//! however often it is retried: an experiment whose targets do not fit could record none of
//! its progress, and so none of its reverts. Its target records (one per pod and fault) are
//! what grows with the cluster, so they get a budget, checked on every selection before
//! anything is injected; every other part of the status is bounded on its own (timeline,
//! probe samples, receipts per node), and the budget leaves room for them, the spec and the
//! metadata. Pure: no client, no clock.

use chrono::{DateTime, Utc};

use crate::api::{TargetRecord, TargetState};

/// What an experiment's target records may take in its status, at their largest: about 1,500
/// pods of one fault with everyday names (a record of a 25-character pod name is ~690 bytes
/// at its largest, ~420 as it usually ends). A third of etcd's 1.5 MiB stays for the rest of
/// the object.
pub const TARGET_RECORDS_BUDGET: usize = 1024 * 1024;

/// The longest message a target record keeps, in bytes: enough for an agent's or the API
/// server's reason, and what makes a record's largest size knowable at selection.
pub const RECORD_MESSAGE_LIMIT: usize = 256;

/// The target records of a selection that would not fit [`TARGET_RECORDS_BUDGET`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "its {records} target records (one per pod and fault) could take {} KiB of status, over the {} KiB an experiment's status gives them (the API server stores an object of at most 1.5 MiB); narrow spec.target, set spec.target.maxTargets, or split the experiment (by namespace or label)",
    largest.div_ceil(1024),
    budget / 1024
)]
pub struct OverBudget {
    pub records: usize,
    /// Their size in status at their largest, in bytes.
    pub largest: usize,
    pub budget: usize,
}

/// Refuses `records` when, grown to their largest, they would take more than `budget` bytes.
pub fn check_budget(records: &[TargetRecord], budget: usize) -> Result<(), OverBudget> {
    let largest: usize = records.iter().map(largest_size).sum();
    if largest > budget {
        return Err(OverBudget {
            records: records.len(),
            largest,
            budget,
        });
    }
    Ok(())
}

/// The bytes `record` takes in status (as JSON, as stored) at its [`largest_form`].
pub fn largest_size(record: &TargetRecord) -> usize {
    serde_json::to_vec(&largest_form(record)).map_or(0, |json| json.len())
}

/// `record` once everything an experiment can add to it is there: both timestamps, the
/// longest state, a message at its limit and both packet counters. What selection fixes
/// (names, uid, node, IP, injection) stays as it is.
pub fn largest_form(record: &TargetRecord) -> TargetRecord {
    let latest: DateTime<Utc> = DateTime::from_timestamp(253_402_300_799, 999_999_999)
        .expect("the last second of year 9999 is a valid time");
    TargetRecord {
        state: LONGEST_STATE,
        injected_at: Some(latest),
        reverted_at: Some(latest),
        message: Some("m".repeat(RECORD_MESSAGE_LIMIT)),
        bypassed_packets: Some(i64::MIN),
        matched_packets: Some(i64::MIN),
        ..record.clone()
    }
}

/// The state whose name is longest (tied with `Injecting`), for [`largest_size`].
const LONGEST_STATE: TargetState = TargetState::Withdrawn;

/// Cuts every target record's message to [`RECORD_MESSAGE_LIMIT`] bytes (at a character
/// boundary, ending in `…`), so that the status stays within what selection budgeted.
/// Returns whether any message was cut.
pub fn clamp_messages(records: &mut [TargetRecord]) -> bool {
    let mut cut = false;
    for message in records.iter_mut().filter_map(|r| r.message.as_mut()) {
        if message.len() > RECORD_MESSAGE_LIMIT {
            let ellipsis = '…';
            let mut end = RECORD_MESSAGE_LIMIT - ellipsis.len_utf8();
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push(ellipsis);
            cut = true;
        }
    }
    cut
}

/// Whether some target record's message is longer than [`RECORD_MESSAGE_LIMIT`].
pub fn has_long_messages(records: &[TargetRecord]) -> bool {
    records
        .iter()
        .filter_map(|r| r.message.as_ref())
        .any(|m| m.len() > RECORD_MESSAGE_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn everyday(i: usize) -> TargetRecord {
        TargetRecord {
            namespace: "shop".into(),
            name: format!("checkout-7d9f8c6b5-{i:05}"),
            uid: format!("0c1f6e1a-4f7b-4b39-9a55-{i:012}"),
            node_name: Some(format!("worker-{:03}", i % 50)),
            pod_ip: Some(format!("10.244.{}.{}", i / 250, i % 250)),
            fault_index: 0,
            fault: "networkLatency".into(),
            injection: Some(format!("checkout-latency-0-{i:08}")),
            ..Default::default()
        }
    }

    #[test]
    fn the_largest_form_is_larger_than_any_record_the_experiment_can_make_of_it() {
        let states = [
            TargetState::Selected,
            TargetState::Injecting,
            TargetState::Injected,
            TargetState::Reverted,
            TargetState::Skipped,
            TargetState::Failed,
            TargetState::Gone,
            TargetState::Withdrawn,
        ];
        let budgeted = largest_size(&everyday(1));
        for state in states {
            let mut record = everyday(1);
            record.state = state;
            record.injected_at = Some(Utc::now());
            record.reverted_at = Some(Utc::now());
            record.message = Some("€".repeat(1000));
            clamp_messages(std::slice::from_mut(&mut record));
            record.bypassed_packets = Some(i64::MAX);
            record.matched_packets = Some(i64::MAX);
            let real = serde_json::to_vec(&record).unwrap().len();
            assert!(real <= budgeted, "{state:?}: {real} > {budgeted}");
        }
    }

    #[test]
    fn about_fifteen_hundred_everyday_pods_fit_and_sixteen_hundred_do_not() {
        let records = |n: usize| (0..n).map(everyday).collect::<Vec<_>>();
        assert_eq!(check_budget(&records(1500), TARGET_RECORDS_BUDGET), Ok(()));
        let refused = check_budget(&records(1600), TARGET_RECORDS_BUDGET).unwrap_err();
        assert_eq!(refused.records, 1600);
        let message = refused.to_string();
        assert!(message.contains("its 1600 target records"), "{message}");
        assert!(message.contains("over the 1024 KiB"), "{message}");
        assert!(message.contains("spec.target.maxTargets"), "{message}");
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary_and_marked() {
        let mut records = vec![everyday(1), everyday(2)];
        records[0].message = Some("é".repeat(300));
        records[1].message = Some("short".into());
        assert!(has_long_messages(&records));
        assert!(clamp_messages(&mut records));
        let cut = records[0].message.as_deref().unwrap();
        assert!(cut.len() <= RECORD_MESSAGE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(records[1].message.as_deref(), Some("short"));
        assert!(!has_long_messages(&records));
        assert!(!clamp_messages(&mut records));
    }
}
