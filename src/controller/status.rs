//! Writes the experiment's status (server-side apply, our field manager) and its Events.
//! (client required)

use std::sync::Arc;

use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tracing::{debug, warn};

use super::{Context, Error, Result, events::Fact, object_reference};
use crate::api::{
    ChaosExperiment, ChaosExperimentStatus, FIELD_MANAGER, GROUP_VERSION, TimelineEntry,
};
use crate::lifecycle::{record::push_timeline, status_size};
use chrono::{DateTime, Utc};

/// Replaces the status with `status` (we own every status field). The write is conditional on
/// `experiment`'s resourceVersion, which it then advances, so that several writes in one
/// reconcile chain correctly while a write based on a stale object gets a 409.
///
/// A status equal to the one `experiment` already has is not written: every field that must
/// move (timeline entries, probe results, timestamps) is part of the comparison, so only a
/// patch that would change nothing is skipped. (It would still cost a request, and on a real
/// API server, one more watch event and reconcile.)
pub async fn write(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &ChaosExperimentStatus,
) -> Result<()> {
    apply(ctx, experiment, status, true).await
}

/// [`write`] right after the reverting label went out, without the resourceVersion condition:
/// the agents' receipts may change the object before this write lands, and the conflict that
/// would make is no disagreement (the receipts are theirs, and server-side apply leaves the
/// fields of other managers alone). Made conditional, the write met the receipts at 500
/// targets and had to read the object and be made again (~0.3-0.5 s on the real API server)
/// before the verdict could follow. Nothing of ours is newer than `experiment` (a reconcile
/// never runs on a copy our writes replaced), and what is written is an abort, which no
/// edit by someone else undoes.
pub async fn write_among_receipts(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &ChaosExperimentStatus,
) -> Result<()> {
    apply(ctx, experiment, status, false).await
}

/// A verdict's [`write`], after any [`write_behind`] of the same experiment still on its way
/// (at most [`WRITE_BEHIND_WAIT`]), and without the resourceVersion condition when one landed
/// on the very version the verdict was decided from. That write carries only older probe
/// results (this status has them and newer ones); landing first, it moved the version this
/// write was decided from, and a conditional verdict failed on it and had to be decided and
/// written again (+0.2-0.4 s at 500 targets, where a write of the experiment takes 0.1-0.5 s
/// of a loaded real API server). Not sent beside it either: two writes of the same large
/// object at once cost the API server each other's work (a verdict sent while a write of
/// probe results was on its way took 739 ms, where one alone takes 100-200).
pub async fn write_verdict(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &ChaosExperimentStatus,
) -> Result<()> {
    let uid = experiment.uid().unwrap_or_default();
    let waiting = std::time::Instant::now();
    while ctx.caches.writes_behind.contains(&uid) && waiting.elapsed() < WRITE_BEHIND_WAIT {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let behind = ctx
        .caches
        .writes_behind
        .overtakes(&uid, experiment.resource_version().as_deref());
    apply(ctx, experiment, status, !behind).await
}

/// How long a verdict waits for a [`write_behind`] on its way.
const WRITE_BEHIND_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// [`write`] without waiting for it, for probe results and packet counts alone while an
/// experiment runs (about one write a second). Awaited, that write held the experiment's next reconcile: a probe
/// that failed while it was on its way (at 500 targets a write of the experiment takes
/// 0.1-0.3 s of a loaded real API server) waited for it before the abort was decided, and did
/// so in two of every five aborts measured. Still conditional on `experiment`'s version, so
/// it never lands over a newer status (an abort's included: it then gets a 409 and is
/// dropped; the next reconcile writes the results again). One at a time per experiment:
/// returns false, writing nothing, while the previous one is on its way.
pub fn write_behind(
    ctx: &Arc<Context>,
    experiment: &ChaosExperiment,
    status: &ChaosExperimentStatus,
) -> bool {
    if unchanged(experiment.status.as_ref(), status) {
        return true;
    }
    let uid = experiment.uid().unwrap_or_default();
    let Some(in_flight) = ctx.caches.writes_behind.start(&uid) else {
        return false;
    };
    let ctx = ctx.clone();
    let mut experiment = experiment.clone();
    let status = status.clone();
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let based_on = experiment.resource_version();
        match apply(&ctx, &mut experiment, &status, true).await {
            // Written (a status equal to the one there is not): the version moved.
            Ok(()) if experiment.resource_version() != based_on => {
                if let Some(version) = based_on {
                    ctx.caches.writes_behind.landed(&uid, version);
                }
            }
            Ok(()) => {}
            Err(error) => {
                debug!(experiment = %experiment.name_any(), %error, "probe results and counts not written; the next reconcile writes them");
            }
        }
    });
    true
}

async fn apply(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &ChaosExperimentStatus,
    conditional: bool,
) -> Result<()> {
    // Selection budgeted every record with a message at its limit: hold them to it here, the
    // one place every status goes through.
    let clamped;
    let status = if status_size::has_long_messages(&status.targets) {
        let mut copy = status.clone();
        status_size::clamp_messages(&mut copy.targets);
        clamped = copy;
        &clamped
    } else {
        status
    };
    if unchanged(experiment.status.as_ref(), status) {
        return Ok(());
    }
    let api: Api<ChaosExperiment> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    // With every receipt it knows of: those the agents wrote here stay theirs too (server-side
    // apply keeps what other managers own, even where this one's view is older), and those
    // that came through the signal's ConfigMap (`signal_receipts`) are the controller's to
    // keep, in every write from then on (one it stopped applying would be removed).
    let ours =
        serde_json::to_value(status).map_err(|e| Error::Record(kube::Error::SerdeError(e)))?;
    let mut patch = json!({
        "apiVersion": GROUP_VERSION,
        "kind": "ChaosExperiment",
        "status": ours,
    });
    if conditional {
        patch["metadata"] = json!({ "resourceVersion": experiment.resource_version() });
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if tracing::enabled!(tracing::Level::DEBUG) {
        debug!(changed = ?changed_fields(experiment.status.as_ref(), status), conditional, "writing status");
    }
    let started = std::time::Instant::now();
    let updated = api
        .patch_status(&experiment.name_any(), &params, &Patch::Apply(patch))
        .await
        .map_err(Error::Record)?;
    debug!(
        targets = status.targets.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "status written"
    );
    ctx.caches
        .versions
        .replaced(experiment, updated.resource_version().as_deref());
    ctx.caches
        .status_writes
        .written(&experiment.uid().unwrap_or_default(), (ctx.now)());
    experiment.metadata.resource_version = updated.metadata.resource_version;
    experiment.status = Some(status.clone());
    Ok(())
}

/// The top-level status fields `new` changes (for the debug log: what a write was for).
fn changed_fields(
    current: Option<&ChaosExperimentStatus>,
    new: &ChaosExperimentStatus,
) -> Vec<String> {
    let as_map =
        |s: Option<&ChaosExperimentStatus>| match s.map(ChaosExperimentStatus::to_plain_json) {
            Some(Ok(serde_json::Value::Object(map))) => map,
            _ => serde_json::Map::new(),
        };
    let (before, after) = (as_map(current), as_map(Some(new)));
    let mut keys: Vec<String> = before.keys().chain(after.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| before.get(k) != after.get(k));
    keys
}

/// Whether writing `new` over `current` would change nothing. Compared as JSON, the form the
/// API server stores, so that fields that serialize alike compare alike (target records as
/// a plain list: packed alike is listed alike).
fn unchanged(current: Option<&ChaosExperimentStatus>, new: &ChaosExperimentStatus) -> bool {
    current.is_some_and(|current| {
        current == new || current.to_plain_json().ok() == new.to_plain_json().ok()
    })
}

/// Adds `fact` to the timeline now and returns it for [`publish`], for the steps where the
/// write (and the revert) must not wait for the Event: an abort, a verdict.
pub fn record(ctx: &Context, status: &mut ChaosExperimentStatus, fact: Fact) -> Fact {
    record_at(status, fact, (ctx.now)())
}

/// [`record`] for a fact that happened at `time` (already announced by an Event then).
pub fn record_at(status: &mut ChaosExperimentStatus, fact: Fact, time: DateTime<Utc>) -> Fact {
    push_timeline(
        &mut status.timeline,
        TimelineEntry {
            time,
            reason: fact.reason.clone(),
            message: fact.message.clone(),
        },
    );
    fact
}

/// Events written at once by one [`publish`]: an injection of 500 targets has 500 facts, and
/// one after another they held its reconcile (and so the abort of an experiment that broke
/// meanwhile) for seconds.
const EVENT_WRITES_AT_ONCE: usize = 16;

/// Publishes Events, a few at a time; repeats of one fact one after another, so that the
/// recorder counts them into one series. One that cannot be published is logged, never fatal:
/// the status timeline holds the same facts.
pub async fn publish(ctx: &Context, experiment: &ChaosExperiment, facts: Vec<Fact>) {
    let regarding = object_reference(experiment);
    let regarding = &regarding;
    futures::stream::iter(repeats_together(facts))
        .for_each_concurrent(EVENT_WRITES_AT_ONCE, |repeats| async move {
            for fact in repeats {
                if let Err(error) = ctx.recorder.publish(&fact, regarding).await {
                    warn!(%error, reason = fact.reason, "could not publish event");
                }
            }
        })
        .await;
}

/// `facts` in groups of equal ones, in the order each first appears.
fn repeats_together(facts: Vec<Fact>) -> Vec<Vec<Fact>> {
    let mut groups: Vec<Vec<Fact>> = Vec::new();
    let mut group_of: std::collections::HashMap<Fact, usize> = std::collections::HashMap::new();
    for fact in facts {
        match group_of.get(&fact) {
            Some(&i) => groups[i].push(fact),
            None => {
                group_of.insert(fact.clone(), groups.len());
                groups.push(vec![fact]);
            }
        }
    }
    groups
}

/// Adds a timeline entry and publishes the matching Event.
pub async fn note(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    fact: Fact,
) {
    let fact = record(ctx, status, fact);
    publish(ctx, experiment, vec![fact]).await;
}

/// [`note`] for several facts, in order.
pub async fn note_all(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    facts: Vec<Fact>,
) {
    let facts = facts
        .into_iter()
        .map(|fact| record(ctx, status, fact))
        .collect();
    publish(ctx, experiment, facts).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(reason: &str, pod: &str) -> Fact {
        Fact::normal(reason, "Inject", format!("fault for pod {pod}"))
    }

    #[test]
    fn repeats_of_one_fact_stay_together_and_in_order() {
        let groups = repeats_together(vec![
            fact("Created", "a"),
            fact("Created", "b"),
            fact("Created", "a"),
            fact("Skipped", "a"),
            fact("Created", "b"),
        ]);
        assert_eq!(
            groups,
            vec![
                vec![fact("Created", "a"), fact("Created", "a")],
                vec![fact("Created", "b"), fact("Created", "b")],
                vec![fact("Skipped", "a")],
            ]
        );
    }
}
