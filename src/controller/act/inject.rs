//! Putting faults in: every recorded fault when the experiment enters Injecting, the rounds of
//! a repeating pod kill, pod kills a stopped reconcile left under way, and FaultInjections
//! that a failed create left missing. Records go to
//! `Injecting` (and are written) before any fault is attempted. (client required)

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

use super::{Context, Error, Result, act_error};
use crate::{
    api::{
        AbortBegun, ChaosExperiment, ChaosExperimentStatus, FaultInjection, FaultKind,
        NetworkFault, ProbePhase, TargetRecord, TargetState,
    },
    controller::{
        events::Fact,
        injections, podkill, spec_check, status,
        targets::{self, Round},
    },
    lifecycle::{AbortCause, HypothesisView},
};

/// How long after the injection began a recorded FaultInjection that no watch has shown is
/// created again (a create that failed for a moment, or a crash between record and create).
const RECREATE_AFTER: chrono::Duration = chrono::Duration::seconds(2);

/// Injects every recorded fault. Pod kills end `Injected` or `Skipped`; network faults stay
/// `Injecting` until their agent reports (or `Failed` when the API server refuses their
/// FaultInjection).
pub(super) async fn inject_all(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    for record in status
        .targets
        .iter_mut()
        .filter(|r| r.state == TargetState::Selected)
    {
        record.state = TargetState::Injecting;
    }
    status::write(ctx, experiment, status).await?;

    // Pod kills first, one at a time; a reconcile that stops among them leaves the rest
    // `Injecting` for `finish_kills`.
    let kills: Vec<usize> = experiment
        .spec
        .faults
        .iter()
        .enumerate()
        .filter(|(_, f)| matches!(f.kind(), Some(FaultKind::PodKill(_))))
        .map(|(index, _)| index)
        .collect();
    let mut facts = kill_each(ctx, experiment, status, &kills, false, now).await?;
    let network: Vec<usize> = (0..status.targets.len())
        .filter(|&i| status.targets[i].state == TargetState::Injecting)
        .filter(|&i| status.targets[i].injection.is_some())
        .collect();
    // A create that failed is made again (`create_missing`); the others go on.
    let created = create_injections(ctx, experiment, status, network, now).await;
    facts.extend(created.facts);
    status::note_all(ctx, experiment, status, facts).await;
    if let Some(abort) = &created.abort {
        super::revert::revert_all_announcing(ctx, experiment, Some(abort)).await?;
    }
    written_then(ctx, experiment, status, created.failure).await
}

/// Writes status (which records why a create failed) when a create failed, then returns that
/// failure to be retried.
async fn written_then(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &ChaosExperimentStatus,
    failure: Option<Error>,
) -> Result<()> {
    match failure {
        Some(error) => {
            status::write(ctx, experiment, status).await?;
            Err(error)
        }
        None => Ok(()),
    }
}

/// Creates, once the injection has been under way for a moment, the FaultInjections of
/// `Injecting` records that no watch has shown. Creating is idempotent: one that exists
/// already is left as it is.
pub(super) async fn create_missing(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    cached: &[Arc<FaultInjection>],
    now: DateTime<Utc>,
) -> Result<()> {
    if status
        .injected_at
        .is_none_or(|began| now - began < RECREATE_AFTER)
    {
        return Ok(());
    }
    let missing: Vec<usize> = (0..status.targets.len())
        .filter(|&i| {
            let record = &status.targets[i];
            record.state == TargetState::Injecting
                && record
                    .injection
                    .as_deref()
                    .is_some_and(|name| !cached.iter().any(|c| c.name_any() == name))
        })
        .collect();
    let created = create_injections(ctx, experiment, status, missing, now).await;
    status::note_all(ctx, experiment, status, created.facts).await;
    if let Some(abort) = &created.abort {
        super::revert::revert_all_announcing(ctx, experiment, Some(abort)).await?;
    }
    written_then(ctx, experiment, status, created.failure).await
}

/// How many FaultInjections are created at once: enough that hundreds of targets do not wait
/// on each other's round trips, few enough not to flood the API server with one experiment.
const PARALLEL_CREATES: usize = 16;

/// One FaultInjection to create, for `status.targets[index]`.
struct PlannedCreate {
    index: usize,
    fault: NetworkFault,
    expires_at: DateTime<Utc>,
}

/// Creates the FaultInjections of `status.targets[indices]`, [`PARALLEL_CREATES`] at a time,
/// resolving each fault's peers once. Returns the facts to publish and the first failure worth
/// retrying (the others were recorded in their targets' messages).
async fn create_injections(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    indices: Vec<usize>,
    now: DateTime<Utc>,
) -> Created {
    let planned = match plan_creates(ctx, experiment, status, indices, now).await {
        Ok(planned) => planned,
        Err(error) => {
            return Created {
                facts: Vec::new(),
                failure: Some(error),
                abort: None,
            };
        }
    };
    let namespace = experiment.namespace().unwrap_or_default();
    let api: Api<FaultInjection> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = experiment.uid().unwrap_or_default();
    // A hypothesis that breaks while the faults go in (seconds, at hundreds of targets) stops
    // the creates not yet begun, and the abort it calls for begins at once (see `Created`).
    let violation = || match ctx.hypotheses.view(&uid, ProbePhase::During) {
        HypothesisView::Violated {
            probe,
            message,
            since,
        } if experiment.spec.abort.on_hypothesis_failure => {
            Some(AbortCause::HypothesisViolated { probe, message }.begun(since))
        }
        _ => None,
    };
    let answers: Vec<_> = stream::iter(planned.into_iter().map(|plan| {
        let record = status.targets[plan.index].clone();
        let api = api.clone();
        async move {
            if let Some(abort) = violation() {
                return (plan.index, Err(abort));
            }
            let answer =
                injections::create(&api, experiment, &record, plan.fault, plan.expires_at).await;
            (plan.index, Ok(answer))
        }
    }))
    .buffer_unordered(PARALLEL_CREATES)
    .collect()
    .await;
    let mut facts = Vec::new();
    let mut created = Vec::new();
    let mut not_created = 0;
    let mut abort = None;
    let mut failure = None;
    for (index, answer) in answers {
        let answer = match answer {
            Ok(answer) => answer,
            Err(begun) => {
                let record = &mut status.targets[index];
                record.state = TargetState::Skipped;
                record.message = Some(NOT_CREATED.into());
                not_created += 1;
                abort.get_or_insert(begun);
                continue;
            }
        };
        match record_create(status, index, answer) {
            Ok(Recorded::Created) => created.push(index),
            Ok(Recorded::Known) => {}
            Ok(Recorded::Refused(fact)) => facts.push(fact),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    created.sort_unstable();
    let created: Vec<&TargetRecord> = created.iter().map(|i| &status.targets[*i]).collect();
    facts.splice(0..0, created_facts(&created));
    if not_created > 0 {
        facts.push(Fact::warning(
            "InjectionStopped",
            "Inject",
            format!("{not_created} fault(s) not injected: {NOT_CREATED}"),
        ));
    }
    Created {
        facts,
        failure,
        abort,
    }
}

/// What a round of creates did: the facts to publish, the first failure to retry, and the
/// abort to announce when the hypothesis broke and stopped it. That abort goes out with the
/// reverting label at once (see `revert_all_announcing`): it stands even if the probe passes
/// again before the next reconcile, since the targets left out would otherwise run the
/// experiment short of them.
struct Created {
    facts: Vec<Fact>,
    failure: Option<Error>,
    abort: Option<AbortBegun>,
}

/// Why a target's fault was not created (its record's message, and the Event's).
const NOT_CREATED: &str =
    "the hypothesis broke while the faults were going in, so the rest were not created";

/// The Events of the FaultInjections one round created: one per fault, naming its pods (the
/// first of them, when there are many: every target and its injection is in the status) and
/// how many nodes they are on. One Event per pod would be a hundred lines of `kubectl
/// describe` for a hundred targets, and as many writes to the API server while they go in.
fn created_facts(created: &[&TargetRecord]) -> Vec<Fact> {
    let mut per_fault: Vec<(&str, Vec<&TargetRecord>)> = Vec::new();
    for record in created {
        match per_fault
            .iter_mut()
            .find(|(fault, _)| *fault == record.fault)
        {
            Some((_, records)) => records.push(record),
            None => per_fault.push((&record.fault, vec![record])),
        }
    }
    per_fault
        .into_iter()
        .map(|(fault, records)| {
            let placed = |r: &TargetRecord| {
                format!(
                    "pod {}/{} on node {}",
                    r.namespace,
                    r.name,
                    r.node_name.as_deref().unwrap_or("?")
                )
            };
            if let [only] = records.as_slice() {
                return Fact::normal(
                    "FaultInjectionCreated",
                    "Inject",
                    format!("{fault} for {}", placed(only)),
                )
                .about(only);
            }
            let nodes: BTreeSet<&str> = records
                .iter()
                .map(|r| r.node_name.as_deref().unwrap_or("?"))
                .collect();
            let mut named = Vec::new();
            let mut length = 0;
            for record in &records {
                let one = placed(record);
                if length + one.len() > CREATED_NOTE_BUDGET {
                    break;
                }
                length += one.len() + 2;
                named.push(one);
            }
            let more = match records.len() - named.len() {
                0 => String::new(),
                n => format!(" and {n} more (status.targets lists every one)"),
            };
            Fact::normal(
                "FaultInjectionCreated",
                "Inject",
                format!(
                    "{fault} for {} pods on {} node(s): {}{more}",
                    records.len(),
                    nodes.len(),
                    named.join(", ")
                ),
            )
        })
        .collect()
}

/// How much of an Event's note (1 kB at most) names pods; the rest says how many more.
const CREATED_NOTE_BUDGET: usize = 700;

/// What [`record_create`] made of one answer.
enum Recorded {
    Created,
    /// It was there already (the watch had not shown it yet): nothing new to tell.
    Known,
    Refused(Fact),
}

/// What to create for each target: its fault with the peers resolved (once per fault, however
/// many targets share it) and the deadline the agent enforces.
async fn plan_creates(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &ChaosExperimentStatus,
    indices: Vec<usize>,
    now: DateTime<Utc>,
) -> Result<Vec<PlannedCreate>> {
    let namespace = experiment.namespace().unwrap_or_default();
    let duration = spec_check::check_spec(&experiment.spec)
        .map(|t| t.duration)
        .unwrap_or_default();
    let began = status.injected_at.unwrap_or(now);
    let expires_at = began
        + chrono::Duration::from_std(duration + ctx.settings.expiry_grace).unwrap_or_default();
    let mut peers_of_fault: HashMap<i32, Vec<String>> = HashMap::new();
    let mut planned = Vec::with_capacity(indices.len());
    for index in indices {
        let fault_index = status.targets[index].fault_index;
        let Some(kind) = experiment
            .spec
            .faults
            .get(fault_index as usize)
            .and_then(|f| f.kind())
        else {
            continue;
        };
        let peers = match (peers_of_fault.get(&fault_index), injections::scope_of(kind)) {
            (Some(peers), _) => peers.clone(),
            (None, Some(scope)) => {
                let peers = injections::resolve_peers(&ctx.client, scope, &namespace)
                    .await
                    .map_err(Error::Observe)?;
                peers_of_fault.insert(fault_index, peers.clone());
                peers
            }
            (None, None) => Vec::new(),
        };
        let Some(fault) = injections::network_fault(kind, peers) else {
            continue;
        };
        planned.push(PlannedCreate {
            index,
            fault,
            expires_at,
        });
    }
    Ok(planned)
}

/// Records the API server's answer to one create in its target. A refusal (a 4xx that trying
/// again will not change) marks the record `Failed` with the server's own words, which end the
/// experiment with that cause; anything else is an error to retry.
fn record_create(
    status: &mut ChaosExperimentStatus,
    index: usize,
    answer: std::result::Result<bool, kube::Error>,
) -> Result<Recorded> {
    let record = &mut status.targets[index];
    let name = record.injection.clone().unwrap_or_default();
    let target = format!("{}/{}", record.namespace, record.name);
    match answer {
        Ok(created) => {
            // Whatever failed before is over.
            record.message = None;
            Ok(if created {
                Recorded::Created
            } else {
                Recorded::Known
            })
        }
        Err(kube::Error::Api(answer)) if refused(answer.code) => {
            let why = format!(
                "the API server refused FaultInjection {name} ({} {}): {}",
                answer.code, answer.reason, answer.message
            );
            record.state = TargetState::Failed;
            record.message = Some(why.clone());
            Ok(Recorded::Refused(
                Fact::warning(
                    "InjectFailed",
                    "Inject",
                    format!("{} not injected into pod {target}: {why}", record.fault),
                )
                .about(record),
            ))
        }
        Err(other) => {
            // Say what keeps failing, in case it goes on until the injection timeout.
            record.message = Some(format!("creating FaultInjection {name} failed: {other}"));
            Err(act_error("create a FaultInjection")(other))
        }
    }
}

/// A 4xx answer that the same request will get again: a refusal, not a hiccup. (408 and 429
/// ask to try again; 409 is a FaultInjection that exists already, which `create` accepts.)
fn refused(code: u16) -> bool {
    (400..500).contains(&code) && !matches!(code, 408 | 409 | 429)
}

/// A repeating pod kill is due: record the new round as `Injecting` (replacing the previous
/// round's records of that fault, so status stays bounded however long the experiment runs),
/// then kill.
pub(super) async fn kill_round(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    let (due, summary) = match targets::select_round(ctx, experiment, status, now).await? {
        Round::Skip { due, why } => {
            // Mark the round done so the next one is due an interval from now.
            for record in status
                .targets
                .iter_mut()
                .filter(|r| due.contains(&(r.fault_index as usize)))
            {
                record.injected_at = Some(now);
            }
            let skipped = status::record(
                ctx,
                status,
                Fact::warning(
                    "PodKillRoundSkipped",
                    "Select",
                    format!("this round kills nothing: {why}"),
                ),
            );
            status::write(ctx, experiment, status).await?;
            status::publish(ctx, experiment, vec![skipped]).await;
            return Ok(());
        }
        Round::Kill {
            due,
            records,
            summary,
        } => {
            status
                .targets
                .retain(|r| !due.contains(&(r.fault_index as usize)));
            status.targets.extend(records);
            (due, summary)
        }
    };
    // Announced once recorded: a replica that lost the lease while frozen writes a stale copy,
    // gets a conflict, and neither kills nor says it would.
    let round = status::record(ctx, status, Fact::normal("PodKillRound", "Select", summary));
    status::write(ctx, experiment, status).await?;
    status::publish(ctx, experiment, vec![round]).await;
    kill_recorded(ctx, experiment, status, &due, false, now).await
}

/// Finishes pod kills left `Injecting` by a reconcile that stopped between recording them and
/// recording their outcome (see [`Decision::FinishKills`](crate::lifecycle::Decision)): the
/// first injection's, or a round's, whatever their fault.
pub(super) async fn finish_kills(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut interrupted: Vec<usize> = status
        .targets
        .iter()
        .filter(|r| r.injection.is_none() && r.state == TargetState::Injecting)
        .map(|r| r.fault_index as usize)
        .collect();
    interrupted.sort_unstable();
    interrupted.dedup();
    tracing::info!(
        experiment = %experiment.name_any(),
        "finishing pod kills that a stopped reconcile left under way"
    );
    kill_recorded(ctx, experiment, status, &interrupted, true, now).await
}

/// Kills the `Injecting` records of the pod kills `due`, records the outcomes and writes them.
async fn kill_recorded(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    due: &[usize],
    resumed: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    let facts = kill_each(ctx, experiment, status, due, resumed, now).await?;
    status::note_all(ctx, experiment, status, facts).await;
    status::write(ctx, experiment, status).await
}

/// Kills the `Injecting` records of the pod kills `due`, one at a time, and records each
/// outcome in its record; returns the facts to publish. `resumed`: they were recorded by a
/// reconcile that stopped, so a pod it may have killed already is looked at first: one gone or
/// replaced is recorded as killed, one still there (even terminating) is killed again, which
/// finishes a deletion cut off halfway and never lengthens a grace period.
async fn kill_each(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    due: &[usize],
    resumed: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Fact>> {
    let mut facts = Vec::new();
    let mut killed = 0;
    for record in status
        .targets
        .iter_mut()
        .filter(|r| r.state == TargetState::Injecting && due.contains(&(r.fault_index as usize)))
    {
        let Some(FaultKind::PodKill(fault)) = experiment
            .spec
            .faults
            .get(record.fault_index as usize)
            .and_then(|f| f.kind())
        else {
            continue;
        };
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &record.namespace);
        let fact = if resumed
            && podkill::kill_is_over(&pods, record)
                .await
                .map_err(Error::Observe)?
        {
            podkill::record_resumed_kill(record, fault, now)
        } else {
            podkill::apply(&ctx.no_retry, record, fault, now)
                .await
                .map_err(act_error("kill a pod"))?
        };
        facts.push(fact);
        if record.state == TargetState::Injected {
            killed += 1;
        }
        // A skipped or vanished target of a repeating kill still marks its round as done.
        if fault.interval.is_some() {
            record.injected_at.get_or_insert(now);
        }
    }
    status.faults_injected += killed;
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, node: &str, fault: &str) -> TargetRecord {
        TargetRecord {
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node_name: Some(node.into()),
            fault: fault.into(),
            ..Default::default()
        }
    }

    #[test]
    fn one_created_event_per_fault_names_its_pods_and_nodes_within_a_notes_length() {
        let one = record("web-0", "node-1", "networkLatency");
        let facts = created_facts(&[&one]);
        assert_eq!(facts.len(), 1);
        assert_eq!(
            facts[0].message,
            "networkLatency for pod shop/web-0 on node node-1"
        );
        assert_eq!(
            facts[0].pod.as_ref().map(|p| p.name.as_str()),
            Some("web-0")
        );

        let mut many: Vec<TargetRecord> = (0..100)
            .map(|i| {
                record(
                    &format!("web-{i}"),
                    &format!("node-{}", i % 5),
                    "networkLatency",
                )
            })
            .collect();
        many.push(record("db-0", "node-1", "networkPartition"));
        let refs: Vec<&TargetRecord> = many.iter().collect();
        let facts = created_facts(&refs);
        assert_eq!(facts.len(), 2, "one per fault");
        let latency = &facts[0].message;
        assert!(
            latency.starts_with("networkLatency for 100 pods on 5 node(s): pod shop/web-0 on node node-0, pod shop/web-1 on node node-1"),
            "{latency}"
        );
        assert!(
            latency.ends_with("more (status.targets lists every one)"),
            "{latency}"
        );
        assert!(
            latency.len() <= 1024,
            "an Event's note holds 1 kB: {}",
            latency.len()
        );
        assert!(facts[0].pod.is_none());
        assert_eq!(
            facts[1].message,
            "networkPartition for pod shop/db-0 on node node-1"
        );
    }

    #[test]
    fn refusals_are_told_from_hiccups() {
        for code in [400, 403, 404, 422] {
            assert!(refused(code), "{code}");
        }
        for code in [408, 409, 429, 500, 503] {
            assert!(!refused(code), "{code}");
        }
    }
}
