//! Reads what `decide` needs: the experiment's own status, its FaultInjections, the pause
//! switch and the probes. FaultInjections and the pause switch come from the watch caches;
//! the API server is asked only to confirm that a revert is complete. Never changes anything
//! (telling the probes what to check is `act`'s). (client required, read only)
//!
//! While faults run it also reads the target pods and their namespaces, to find targets that
//! left (see `departures`): the views below look past them, and `World.departures` lists them
//! for `act` to record (after what the agents reported), revert and announce.
//! Before injecting, it asks the API server whether the controller may make every read its
//! `kubernetes` probes make (see `probe_access`).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kube::{Api, ResourceExt, api::ListParams};

use super::{
    Context, Error, Result, applied_receipts,
    departures::{self, Departure},
    pause_switch, probe_access,
    revert_progress::{revert_progress, unclaimed},
    spec_check,
    target_reads::{TARGET_READ_EVERY, target_world},
};
use crate::api::duration_bounds::POD_KILL_INTERVAL;
use crate::{
    api::{
        ChaosExperiment, ChaosExperimentStatus, EXPERIMENT_LABEL, FaultInjection, HypothesisState,
        InjectionPhase, Phase, ProbePhase, RevertReceipt, TargetState,
    },
    lifecycle::{AbortCause, HypothesisView, Observed, ProbedPhases, ProgressView},
};

/// What observe found, kept for the acting step.
pub struct World {
    pub observed: Observed,
    pub status: ChaosExperimentStatus,
    /// The experiment's FaultInjections that still exist (as the watch cache has them).
    pub injections: Vec<Arc<FaultInjection>>,
    /// The hypothesis now, for status (None without a steady state or once finished).
    pub hypothesis: Option<HypothesisState>,
    /// Targets that left since the last reconcile (not yet in `status`): `act` records them,
    /// deletes their FaultInjections and publishes an Event for each.
    pub departures: Vec<Departure>,
    /// Deleted FaultInjections that no agent took up, past the revert timeout: `act` lets go
    /// of the agent finalizer the controller put on them (see [`unclaimed`]).
    pub unclaimed: Vec<Arc<FaultInjection>>,
}

/// The probe phase that matters in each lifecycle phase, if any.
pub fn probe_phase(status: &ChaosExperimentStatus) -> Option<ProbePhase> {
    match status.phase {
        Phase::Verifying if status.injected_at.is_none() => Some(ProbePhase::Before),
        Phase::Injecting | Phase::Running => Some(ProbePhase::During),
        Phase::Verifying => Some(ProbePhase::After),
        _ => None,
    }
}

pub async fn observe(ctx: &Context, experiment: &ChaosExperiment) -> Result<World> {
    let now = (ctx.now)();
    let uid = experiment.uid().unwrap_or_default();
    let mut recorded = experiment.status.clone().unwrap_or_default();
    // Receipts that came through the signal's ConfigMap count as written here, and the next
    // status write records them (see `signal_receipts`).
    take_receipts(&mut recorded, ctx.caches.receipts(&uid));
    // What the views below look at: `recorded` with the targets that left marked as such.
    let mut status = recorded.clone();
    let namespace = experiment.namespace().unwrap_or_default();
    let name = experiment.name_any();
    // An experiment that bypassed the CRD's rules (created under an older CRD) is stopped here.
    let times =
        spec_check::check_name(&name).and_then(|()| spec_check::check_spec(&experiment.spec));

    let mut injections = ctx.caches.injections_of(&namespace, &name, &uid);
    if matches!(status.phase, Phase::Recovering | Phase::Aborting)
        && injections.is_empty()
        && may_have_injections(&status, &injections)
    {
        // "None left" ends the revert, and the cache may not have seen an injection created a
        // moment ago: confirm with the API server before believing it.
        injections = list_injections(ctx, &namespace, &name, &uid).await?;
    }
    // Faults an agent's applied receipt counts in before their own statuses say so.
    let injections = applied_receipts::overlay(injections, &ctx.caches.applied(&uid));
    let mut paused = ctx.caches.paused();
    if !paused && pause_switch::held(&status) {
        // A resume is confirmed before a held experiment starts (see `act::perform` for one
        // that was about to inject).
        paused =
            pause_switch::paused_after_all(&ctx.client, &ctx.settings.policy.controller_namespace)
                .await;
    }

    // Whether some fault went in, before targets that left lose their Injected state.
    let any_injected = status.faults_injected > 0
        || status
            .targets
            .iter()
            .any(|r| r.state == TargetState::Injected)
        || injections.iter().any(|i| {
            i.status
                .as_ref()
                .is_some_and(|s| s.phase == InjectionPhase::Applied)
        });
    let has_probes = experiment.spec.steady_state.is_some() && !status.phase.is_terminal();
    let hypothesis_now = |status: &ChaosExperimentStatus| match probe_phase(status) {
        Some(phase) if has_probes => ctx.hypotheses.view(&uid, phase),
        _ => HypothesisView::Holding,
    };
    let mut hypothesis = hypothesis_now(&status);
    // A violated hypothesis aborts whatever the targets did: their reads would only delay the
    // abort, and the revert takes every fault out, departed targets' included.
    let aborting_anyway = matches!(hypothesis, HypothesisView::Violated { .. })
        && experiment.spec.abort.on_hypothesis_failure;
    // The agents were told to revert (the revert signal, or the reverting label where the
    // signal could not be written): what the targets do no longer
    // matters, and status waits for the receipts (see `lifecycle::decide`).
    let abort_begun = matches!(status.phase, Phase::Injecting | Phase::Running)
        .then(|| {
            experiment
                .abort_begun()
                .or_else(|| ctx.caches.signalled(&uid)?.abort)
        })
        .flatten();
    let mut left = Vec::new();
    let mut targets_left = None;
    if matches!(status.phase, Phase::Injecting | Phase::Running)
        && !aborting_anyway
        && abort_begun.is_none()
        && status.targets.iter().any(departures::watched)
        && ctx.caches.target_reads.due(&uid, TARGET_READ_EVERY)
    {
        // Those reads take a while with many targets (when they were one GET per pod, 0.6 s at
        // 500 on the real control plane): a probe that fails meanwhile ends them, and the abort
        // is decided at once rather than after them (it reverts every fault, departed or not).
        let aborts = experiment.spec.abort.on_hypothesis_failure;
        let violated = async {
            loop {
                tokio::time::sleep(VIOLATION_POLL).await;
                if aborts && matches!(hypothesis_now(&status), HypothesisView::Violated { .. }) {
                    break;
                }
            }
        };
        let read = tokio::select! {
            world = target_world(ctx, experiment.spec.target.label_selector.as_ref(), &status) => Some(world?),
            () = violated => None,
        };
        if let Some(mut world) = read {
            world.agent_reverted = reverted_by_agent(&injections, now);
            world.deleted_by_others =
                deleted_by_others(ctx, &status, &injections, (&namespace, &name, &uid)).await?;
            left = departures::departures(&status.targets, &world);
            departures::record(&mut status, &left, now);
            targets_left = departures::all_left(&status);
        }
        hypothesis = hypothesis_now(&status);
    }
    let hypothesis_state = has_probes.then(|| match (probe_phase(&status), &hypothesis) {
        (None, _) => HypothesisState::NotChecked,
        (Some(_), HypothesisView::Holding) => HypothesisState::Holding,
        (Some(_), HypothesisView::Undecided) => HypothesisState::Undecided,
        (Some(_), HypothesisView::Violated { .. }) => HypothesisState::Violated,
    });
    let preflight_error = if has_probes && status.phase == Phase::Pending {
        ctx.hypotheses.preflight(experiment).err()
    } else {
        None
    };
    let probes_forbidden = match status.phase {
        Phase::Pending if has_probes && preflight_error.is_none() => {
            probe_access::refused(ctx, experiment).await?
        }
        Phase::Verifying | Phase::Injecting | Phase::Running if has_probes => {
            ctx.hypotheses.misconfigured(&uid)
        }
        _ => None,
    };
    let unconfirmed_reverts = unconfirmed_reverts(&status, abort_begun.is_some());

    let timeout = chrono::Duration::from_std(ctx.settings.injection_timeout).unwrap_or_default();
    let injection = injection_progress(&status, &injections, timeout, now);
    // The nodes of targets whose faults may be in, as recorded before each injection was
    // created: a receipt must come from each, not only from the nodes of the injections
    // the cache has seen.
    let recorded_nodes: BTreeSet<&str> = status
        .targets
        .iter()
        .filter(|r| r.injection.is_some())
        .filter(|r| matches!(r.state, TargetState::Injecting | TargetState::Injected))
        .filter_map(|r| r.node_name.as_deref())
        .collect();
    let revert_timeout = revert_timeout(&times);
    let revert = revert_progress(
        &injections,
        &recorded_nodes,
        &status.revert_receipts,
        now,
        revert_timeout,
    );

    let (duration, recovery_timeout) = match &times {
        Ok(t) => (t.duration, t.recovery_timeout),
        Err(_) => Default::default(),
    };
    let abort_cause = (status.phase == Phase::Aborting).then(|| abort_cause_from_status(&status));
    let abort_begun = abort_begun.map(|begun| {
        let cause = abort_cause_from(Some(&begun.reason), begun.message, &status);
        (cause, begun.since)
    });
    let nothing_injected = nothing_injected(&status);
    let observed = Observed {
        now,
        phase: status.phase,
        injected_at: status.injected_at,
        reverted_at: status.reverted_at,
        spec_valid: times.map(|_| ()),
        duration,
        recovery_timeout,
        dry_run: experiment.spec.dry_run,
        abort_on_hypothesis_failure: experiment.spec.abort.on_hypothesis_failure,
        targets_recorded: status.seed.is_some(),
        no_targets: status.seed.is_some() && status.targets.is_empty(),
        allow_empty_targets: experiment.spec.allow_empty_targets,
        preflight_error,
        probes_forbidden,
        targets_left,
        any_injected,
        unconfirmed_reverts,
        deleting: experiment.metadata.deletion_timestamp.is_some(),
        abort_requested: experiment.abort_reason().map(str::to_string),
        paused,
        hypothesis,
        probed: probed_phases(experiment),
        injection,
        revert,
        abort_cause,
        abort_begun,
        next_kill_at: next_kill_at(experiment, &status),
        kills_interrupted: kills_interrupted(&status),
        nothing_injected,
    };
    let unclaimed = if matches!(status.phase, Phase::Recovering | Phase::Aborting) {
        unclaimed(&injections, now, revert_timeout)
    } else {
        Vec::new()
    };
    Ok(World {
        observed,
        unclaimed,
        injections,
        hypothesis: hypothesis_state,
        departures: left,
        status: recorded,
    })
}

/// Adds the receipts of nodes that status has none of yet (an agent writes one per node).
fn take_receipts(status: &mut ChaosExperimentStatus, arrived: Vec<RevertReceipt>) {
    for receipt in arrived {
        if !status
            .revert_receipts
            .iter()
            .any(|r| r.node == receipt.node)
        {
            status.revert_receipts.push(receipt);
        }
    }
}

/// How often the target reads look whether the hypothesis broke meanwhile (an abort waits
/// at most this long for them).
const VIOLATION_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// `abort.revertTimeout`, or its default when the spec bypassed the schema.
fn revert_timeout(times: &Result<spec_check::ParsedTimes, String>) -> chrono::TimeDelta {
    let timeout = match times {
        Ok(t) => t.revert_timeout,
        Err(_) => crate::api::AbortPolicy::default()
            .revert_timeout
            .parse()
            .unwrap_or_default(),
    };
    chrono::TimeDelta::from_std(timeout).unwrap_or(chrono::TimeDelta::MAX)
}

/// The FaultInjections of targets whose fault was in (`Injected`) that no longer exist: while
/// an experiment runs and has not begun its revert, faultline deletes one only for a target
/// that left, whose record is then no longer `Injected`, so someone else deleted these. The
/// cache's word (which may lag) is confirmed by a list from the API server.
async fn deleted_by_others(
    ctx: &Context,
    status: &ChaosExperimentStatus,
    cached: &[Arc<FaultInjection>],
    (namespace, name, uid): (&str, &str, &str),
) -> Result<std::collections::BTreeSet<String>> {
    let missing = |present: std::collections::BTreeSet<String>| {
        status
            .targets
            .iter()
            .filter(|r| r.state == TargetState::Injected)
            .filter_map(|r| r.injection.clone())
            .filter(|n| !present.contains(n))
            .collect::<std::collections::BTreeSet<String>>()
    };
    let names = |list: &[Arc<FaultInjection>]| list.iter().map(|i| i.name_any()).collect();
    if missing(names(cached)).is_empty() {
        return Ok(Default::default());
    }
    let listed = list_injections(ctx, namespace, name, uid).await?;
    Ok(missing(names(&listed)))
}

/// FaultInjections their agent reported Reverted before `expiresAt` with nobody deleting them:
/// the agent reverted on its own because the target went away. Name -> the agent's words.
fn reverted_by_agent(
    injections: &[Arc<FaultInjection>],
    now: DateTime<Utc>,
) -> std::collections::BTreeMap<String, String> {
    injections
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none() && i.spec.expires_at > now)
        .filter_map(|i| {
            let status = i.status.as_ref()?;
            (status.phase == InjectionPhase::Reverted).then(|| {
                (
                    i.name_any(),
                    status
                        .message
                        .clone()
                        .unwrap_or_else(|| "no reason given".into()),
                )
            })
        })
        .collect()
}

/// `Some(which)` when the experiment is reverting (`abort_under_way`: an abort its status
/// does not show yet) and some network fault was never reported applied by an agent: its
/// FaultInjection can be gone without an agent ever having held it (an agent adds its
/// finalizer before it applies anything, and reports Applied after), so nobody confirmed that
/// fault reverted. Names each pod and node.
fn unconfirmed_reverts(status: &ChaosExperimentStatus, abort_under_way: bool) -> Option<String> {
    if !abort_under_way && !matches!(status.phase, Phase::Recovering | Phase::Aborting) {
        return None;
    }
    let which: Vec<String> = status
        .targets
        .iter()
        .filter(|r| r.injection.is_some() && r.state == TargetState::Injecting)
        // The node's agent confirmed it holds none of the experiment's faults.
        .filter(|r| {
            !r.node_name.as_ref().is_some_and(|node| {
                status
                    .revert_receipts
                    .iter()
                    .any(|receipt| &receipt.node == node && receipt.failed.is_none())
            })
        })
        .map(|r| {
            format!(
                "{} on pod {}/{} (node {})",
                r.fault,
                r.namespace,
                r.name,
                r.node_name.as_deref().unwrap_or("?")
            )
        })
        .collect();
    (!which.is_empty()).then(|| which.join(", "))
}

/// `Some(why)` while no fault of the experiment has gone in: none counted, no record in (or
/// possibly in), and at least one target tried. `why` names each skipped pod and its reason.
fn nothing_injected(status: &ChaosExperimentStatus) -> Option<String> {
    let may_be_in = |state: TargetState| {
        matches!(
            state,
            TargetState::Injecting | TargetState::Injected | TargetState::Reverted
        )
    };
    if status.faults_injected > 0
        || status.targets.is_empty()
        || status.targets.iter().any(|r| may_be_in(r.state))
    {
        return None;
    }
    let reasons: Vec<String> = status
        .targets
        .iter()
        .map(|r| {
            format!(
                "pod {}/{} ({}): {}",
                r.namespace,
                r.name,
                r.fault,
                r.message.as_deref().unwrap_or("not injected")
            )
        })
        .collect();
    Some(format!("every target was skipped: {}", reasons.join("; ")))
}

/// Whether the experiment may have FaultInjections: one is cached, or a record names one
/// (records are written before their injection is created, so an injection the cache has not
/// seen yet still has its record).
pub(super) fn may_have_injections(
    status: &ChaosExperimentStatus,
    cached: &[Arc<FaultInjection>],
) -> bool {
    !cached.is_empty() || status.targets.iter().any(|r| r.injection.is_some())
}

/// The experiment's FaultInjections, read from the API server.
async fn list_injections(
    ctx: &Context,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Vec<Arc<FaultInjection>>> {
    let api: Api<FaultInjection> = Api::namespaced(ctx.client.clone(), namespace);
    let params = ListParams::default().labels(&format!("{EXPERIMENT_LABEL}={name}"));
    let list = match api.list(&params).await {
        Ok(list) => list,
        // The resource itself is not served: its CRD was deleted (an uninstall), which the API
        // server completes only once every FaultInjection is gone, each through its agent's
        // finalizer (or the revert timeout's release). None is left to wait for; failing here
        // would hold this experiment's finalizer, and its own CRD's deletion, forever.
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::warn!(experiment = %format!("{namespace}/{name}"), "the FaultInjection resource is not served (its CRD was deleted): the experiment has no injections left");
            return Ok(Vec::new());
        }
        Err(error) => return Err(Error::Observe(error)),
    };
    // The label is a name; the UID tells this experiment from an earlier one of the same name.
    Ok(list
        .items
        .into_iter()
        .filter(|i| i.spec.experiment.uid.as_deref().is_none_or(|u| u == uid))
        .map(Arc::new)
        .collect())
}

/// Whether every network fault is applied: each record that carries one needs its
/// FaultInjection reported Applied. A record whose FaultInjection the API server refused, an
/// agent's failure, or `timeout` without a report fails it, with the real cause.
fn injection_progress(
    status: &ChaosExperimentStatus,
    injections: &[Arc<FaultInjection>],
    timeout: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> ProgressView {
    let mut pending = Vec::new();
    for record in status.targets.iter().filter(|r| r.injection.is_some()) {
        // Left on purpose, or gone with their pod: nothing to wait for.
        if matches!(
            record.state,
            TargetState::Skipped | TargetState::Gone | TargetState::Withdrawn
        ) {
            continue;
        }
        let name = record.injection.as_deref().unwrap_or_default();
        if record.state == TargetState::Failed {
            return ProgressView::Failed {
                message: format!(
                    "{} could not be injected into pod {}/{}: {}",
                    record.fault,
                    record.namespace,
                    record.name,
                    record.message.as_deref().unwrap_or("no reason given")
                ),
            };
        }
        match injections
            .iter()
            .find(|i| i.name_any() == name)
            .and_then(|i| i.status.as_ref())
        {
            Some(s) if s.phase == InjectionPhase::Applied => {}
            Some(s) if s.phase == InjectionPhase::Failed => {
                return ProgressView::Failed {
                    message: format!(
                        "the agent on {} could not apply {} to pod {}: {}",
                        record.node_name.as_deref().unwrap_or("its node"),
                        record.fault,
                        record.name,
                        s.message.as_deref().unwrap_or("no reason given")
                    ),
                };
            }
            _ => pending.push(record),
        }
    }
    let Some(first) = pending.first() else {
        return ProgressView::Done;
    };
    let started = status.injected_at.unwrap_or(now);
    if now - started > timeout {
        let message = match &first.message {
            // The controller could not even create it: that is the cause, not the agent.
            Some(problem) => format!(
                "{} was not injected into pod {}/{} within {}s: {problem}",
                first.fault,
                first.namespace,
                first.name,
                timeout.num_seconds()
            ),
            None => format!(
                "no agent reported {} applied to pod {} on node {} within {}s; is the faultline agent running on that node?",
                first.fault,
                first.name,
                first.node_name.as_deref().unwrap_or("?"),
                timeout.num_seconds()
            ),
        };
        ProgressView::Failed { message }
    } else {
        ProgressView::InProgress
    }
}

/// Which phases some probe of the experiment checks.
fn probed_phases(experiment: &ChaosExperiment) -> ProbedPhases {
    let probes = experiment.spec.probes();
    let any_in = |phase| probes.iter().any(|p| p.runs_in(phase));
    ProbedPhases {
        before: any_in(ProbePhase::Before),
        during: any_in(ProbePhase::During),
        after: any_in(ProbePhase::After),
    }
}

/// Whether a pod kill is recorded as under way: a kill's record is `Injecting` only between
/// the status write that announces it and the one that records its outcome, within one
/// reconcile, so a later look that finds one means that reconcile stopped in between.
pub fn kills_interrupted(status: &ChaosExperimentStatus) -> bool {
    status
        .targets
        .iter()
        .any(|r| r.injection.is_none() && r.state == TargetState::Injecting)
}

/// The abort cause recorded in status when the abort began.
pub fn abort_cause_from_status(status: &ChaosExperimentStatus) -> AbortCause {
    let message = status
        .abort_reason
        .clone()
        .or_else(|| status.message.clone())
        .unwrap_or_default();
    abort_cause_from(status.reason.as_deref(), message, status)
}

/// The cause an abort's PascalCase `reason` and `message` stand for.
fn abort_cause_from(
    reason: Option<&str>,
    message: String,
    status: &ChaosExperimentStatus,
) -> AbortCause {
    match reason {
        Some("ProbeFailed") => AbortCause::HypothesisViolated {
            probe: String::new(),
            message,
        },
        Some("ExperimentDeleted") => AbortCause::Deleted,
        Some("ChaosPaused") => AbortCause::Paused,
        Some("InjectFailed") => AbortCause::InjectFailed { message },
        Some("ProbeForbidden") => AbortCause::ProbeForbidden { message },
        Some("TargetsLeft") => AbortCause::TargetsLeft {
            message,
            any_injected: status.faults_injected > 0
                || status.targets.iter().any(|r| r.injected_at.is_some()),
        },
        _ if message.is_empty() => AbortCause::requested(""),
        _ => AbortCause::Requested { message },
    }
}

/// For each `podKill` with an `interval`: its fault index and when its next round is due (one
/// interval after its last round, or after injection).
fn kill_schedule(
    experiment: &ChaosExperiment,
    status: &ChaosExperimentStatus,
) -> Vec<(usize, DateTime<Utc>)> {
    let Some(injected) = status.injected_at else {
        return vec![];
    };
    let last_round = |index: usize| {
        status
            .targets
            .iter()
            .filter(|r| r.fault_index == index as i32)
            .filter_map(|r| r.injected_at)
            .max()
    };
    experiment
        .spec
        .faults
        .iter()
        .enumerate()
        .filter_map(|(index, fault)| {
            // Out of bounds (a spec that bypassed the schema) never schedules a kill; the
            // spec check fails the experiment before it injects.
            let interval = fault.pod_kill.as_ref()?.interval.as_ref()?;
            let interval = POD_KILL_INTERVAL.check(interval.as_str()).ok()?;
            let interval = chrono::Duration::from_std(interval).ok()?;
            Some((index, last_round(index).unwrap_or(injected) + interval))
        })
        .collect()
}

/// When the next round of a repeating pod kill is due, if the experiment has one.
pub fn next_kill_at(
    experiment: &ChaosExperiment,
    status: &ChaosExperimentStatus,
) -> Option<DateTime<Utc>> {
    kill_schedule(experiment, status)
        .into_iter()
        .map(|(_, at)| at)
        .min()
}

/// The fault indexes whose repeating kill is due at `now`.
pub fn due_kills(
    experiment: &ChaosExperiment,
    status: &ChaosExperimentStatus,
    now: DateTime<Utc>,
) -> Vec<usize> {
    kill_schedule(experiment, status)
        .into_iter()
        .filter(|(_, at)| *at <= now)
        .map(|(index, _)| index)
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::api::TargetRecord;

    fn record(state: TargetState, message: Option<&str>) -> TargetRecord {
        TargetRecord {
            namespace: "shop".into(),
            name: "web-0".into(),
            node_name: Some("node-1".into()),
            fault: "networkLatency".into(),
            state,
            injection: Some("lat-0-abc".into()),
            message: message.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_pod_kill_left_injecting_is_an_interrupted_kill() {
        let kill = |state| TargetRecord {
            fault: "podKill".into(),
            injection: None,
            ..record(state, None)
        };
        let mut status = ChaosExperimentStatus {
            targets: vec![
                record(TargetState::Injecting, None),
                kill(TargetState::Injected),
            ],
            ..Default::default()
        };
        // A network fault waits for its agent; a kill recorded done is done.
        assert!(!kills_interrupted(&status));
        status.targets.push(kill(TargetState::Injecting));
        assert!(kills_interrupted(&status));
    }

    #[test]
    fn a_refused_fault_injection_fails_the_injection_with_the_servers_words() {
        let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let status = ChaosExperimentStatus {
            injected_at: Some(t0),
            targets: vec![record(
                TargetState::Failed,
                Some(
                    "the API server refused FaultInjection lat-0-abc (422 Invalid): spec.nodeName: Invalid value: \"\": should be at least 1 chars long",
                ),
            )],
            ..Default::default()
        };
        let progress = injection_progress(&status, &[], chrono::Duration::seconds(30), t0);
        assert_eq!(
            progress,
            ProgressView::Failed {
                message: "networkLatency could not be injected into pod shop/web-0: the API server refused FaultInjection lat-0-abc (422 Invalid): spec.nodeName: Invalid value: \"\": should be at least 1 chars long".into()
            }
        );
    }

    #[test]
    fn the_timeout_names_a_create_that_kept_failing_rather_than_blaming_the_agent() {
        let t0 = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let late = t0 + chrono::Duration::seconds(31);
        let mut status = ChaosExperimentStatus {
            injected_at: Some(t0),
            targets: vec![record(
                TargetState::Injecting,
                Some("creating FaultInjection lat-0-abc failed: connection refused"),
            )],
            ..Default::default()
        };
        let timeout = chrono::Duration::seconds(30);
        assert_eq!(
            injection_progress(&status, &[], timeout, t0),
            ProgressView::InProgress
        );
        assert_eq!(
            injection_progress(&status, &[], timeout, late),
            ProgressView::Failed {
                message: "networkLatency was not injected into pod shop/web-0 within 30s: creating FaultInjection lat-0-abc failed: connection refused".into()
            }
        );
        status.targets[0].message = None;
        let ProgressView::Failed { message } = injection_progress(&status, &[], timeout, late)
        else {
            panic!("failed")
        };
        assert!(
            message.starts_with(
                "no agent reported networkLatency applied to pod web-0 on node node-1"
            ),
            "{message}"
        );
    }
}
