//! Carries out a decision: select and record targets, inject, revert, finish. Every step that
//! touches a fault first records what it is about to do. (client required)

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;

use super::{
    Context, Error, Result, injections, observe::World, podkill, spec_check, status, targets,
};
use crate::metrics::{ReasonLabel, VerdictLabel};
use crate::{
    api::{
        ChaosExperiment, ChaosExperimentStatus, ConditionStatus, EXPERIMENT_FINALIZER,
        FaultInjection, FaultKind, GoDuration, Phase, TargetState, Verdict,
    },
    lifecycle::{AbortCause, Decision, HypothesisView, record::set_condition},
};

/// How often the peers of selector-scoped network faults are resolved again while they run.
const PEER_REFRESH: Duration = Duration::from_secs(3);

pub(super) fn act_error(action: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Act { action, source }
}

/// Adds the experiment finalizer before anything else, so a deletion always passes through
/// our revert. A finished experiment does not get it back. Returns the object as written when
/// it changed it.
pub async fn ensure_finalizer(
    ctx: &Context,
    experiment: &ChaosExperiment,
) -> Result<Option<ChaosExperiment>> {
    let finished = experiment
        .status
        .as_ref()
        .is_some_and(|s| s.phase.is_terminal());
    let has_finalizer = experiment
        .finalizers()
        .iter()
        .any(|f| f == EXPERIMENT_FINALIZER);
    if finished || has_finalizer || experiment.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let api: Api<ChaosExperiment> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let mut finalizers = experiment.finalizers().to_vec();
    finalizers.push(EXPERIMENT_FINALIZER.into());
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": experiment.resource_version() }
    });
    let updated = api
        .patch(
            &experiment.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(act_error("add the finalizer"))?;
    Ok(Some(updated))
}

/// Releases the experiment finalizer. The first attempt goes from our own copy (our writes in
/// this reconcile have kept its resourceVersion current); if someone else changed the object
/// since, it is read afresh.
pub(super) async fn remove_finalizer(ctx: &Context, experiment: &ChaosExperiment) -> Result<()> {
    let api: Api<ChaosExperiment> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    let mut current = experiment.clone();
    for attempt in 0..4 {
        if attempt > 0 {
            match api
                .get_opt(&experiment.name_any())
                .await
                .map_err(Error::Observe)?
            {
                Some(fresh) => current = fresh,
                None => return Ok(()),
            }
        }
        let ours = current
            .finalizers()
            .iter()
            .any(|f| f == EXPERIMENT_FINALIZER);
        if attempt == 0 && !ours {
            // Our copy may predate the finalizer: ask.
            continue;
        }
        if current.uid() != experiment.uid() || !ours {
            return Ok(());
        }
        let finalizers: Vec<&String> = current
            .finalizers()
            .iter()
            .filter(|f| *f != EXPERIMENT_FINALIZER)
            .collect();
        let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": current.resource_version() } });
        match api
            .patch(
                &experiment.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(_) => {
                ctx.caches.versions.replaced(&current);
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(act_error("remove the finalizer")(e)),
        }
    }
    Err(act_error("remove the finalizer")(kube::Error::Api(
        kube::core::Status::failure("the experiment kept changing", "Conflict").boxed(),
    )))
}

pub async fn perform(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    world: World,
    decision: Decision,
) -> Result<Action> {
    let World {
        observed,
        mut status,
        injections,
    } = world;
    // Status writes carry the resourceVersion this decision was made from (see
    // `status::write`), so a decision made on a stale cached object fails with a conflict
    // instead of rolling the status back.
    let now = observed.now;
    let uid = experiment.uid().unwrap_or_default();
    status.observed_generation = experiment.metadata.generation;
    if status.started_at.is_none() {
        status.started_at = Some(now);
    }
    let probes = ctx.hypotheses.statuses(&uid);
    if !probes.is_empty() {
        status.probes = probes;
    }

    let action = match decision {
        Decision::RecordTargets => {
            targets::record_targets(ctx, experiment, &mut status).await?;
            Action::requeue(Duration::ZERO)
        }
        Decision::Transition {
            to,
            reason,
            message,
        } => {
            let from = status.phase;
            status.phase = to;
            status.reason = Some(reason.into());
            status.message = Some(message.clone());
            status::note(
                ctx,
                experiment,
                &mut status,
                false,
                reason,
                "Transition",
                message,
            )
            .await;
            match (from, to) {
                (_, Phase::Injecting) => {
                    status.injected_at = Some(now);
                    inject_all(ctx, experiment, &mut status, now).await?;
                }
                (_, Phase::Running) => {
                    for record in status
                        .targets
                        .iter_mut()
                        .filter(|r| r.state == TargetState::Injecting)
                    {
                        record.state = TargetState::Injected;
                        record.injected_at.get_or_insert(now);
                    }
                    set_condition(
                        &mut status.conditions,
                        "Injected",
                        ConditionStatus::True,
                        reason,
                        "every fault is in",
                        experiment.metadata.generation,
                        now,
                    );
                }
                (_, Phase::Recovering) => {
                    status::write(ctx, experiment, &status).await?;
                    if may_have_injections(&status, &injections) {
                        revert_all(ctx, experiment).await?;
                    }
                }
                (Phase::Recovering, Phase::Verifying) => {
                    mark_reverted(&mut status, now, experiment)
                }
                _ => {}
            }
            status::write(ctx, experiment, &status).await?;
            Action::requeue(Duration::ZERO)
        }
        Decision::Abort(cause) => {
            let started = match &observed.hypothesis {
                HypothesisView::Violated { since, .. }
                    if matches!(cause, AbortCause::HypothesisViolated { .. }) =>
                {
                    *since
                }
                _ => now,
            };
            status.phase = Phase::Aborting;
            status.abort_started_at = Some(started);
            status.reason = Some(cause.reason().into());
            status.message = Some(cause.message());
            let event = status::record(
                ctx,
                &mut status,
                true,
                cause.reason(),
                "Abort",
                format!("aborting: {}", cause.message()),
            );
            // Record first: a crash from here on still ends in a revert. The Event waits
            // until the revert is asked for: it is not on the way to the abort.
            status::write(ctx, experiment, &status).await?;
            let reverting = if may_have_injections(&status, &injections) {
                revert_all(ctx, experiment).await
            } else {
                Ok(())
            };
            // The abort is recorded: its Event goes out even if the revert request failed
            // (the next reconcile repeats that, not the abort).
            status::publish(ctx, experiment, vec![event]).await;
            reverting?;
            Action::requeue(Duration::ZERO)
        }
        Decision::Finish {
            verdict,
            reason,
            message,
        } => {
            finish(ctx, experiment, &mut status, verdict, reason, message, now).await?;
            ctx.hypotheses.forget(&uid);
            ctx.caches.reverts.remove(&uid);
            remove_finalizer(ctx, experiment).await?;
            Action::await_change()
        }
        Decision::KillAgain => {
            targets::kill_again(ctx, experiment, &mut status, now).await?;
            Action::requeue(Duration::ZERO)
        }
        Decision::WaitUntil(at) => {
            let mut longest = Duration::from_secs(30);
            if status.phase == Phase::Running && injections::has_selector_scopes(experiment) {
                // Peer pods come and go; keep every injection's peer list current.
                for (pod, peers) in injections::refresh_peers(&ctx.client, experiment, &injections)
                    .await
                    .map_err(act_error("update FaultInjection peers"))?
                {
                    let message = format!(
                        "peers of the fault on pod {pod} are now [{}]",
                        peers.join(", ")
                    );
                    status::note(
                        ctx,
                        experiment,
                        &mut status,
                        false,
                        "PeersUpdated",
                        "Inject",
                        message,
                    )
                    .await;
                }
                longest = PEER_REFRESH;
            }
            status::write(ctx, experiment, &status).await?;
            let wait = (at - now)
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_millis(50));
            Action::requeue(wait.min(longest))
        }
        Decision::Wait => {
            if status.phase.is_terminal() {
                // The finalizer only guards faults; a finished experiment with none left lets
                // go of it (this also completes a release that failed in the finishing step).
                let held = experiment
                    .finalizers()
                    .iter()
                    .any(|f| f == EXPERIMENT_FINALIZER);
                if held && injections.is_empty() {
                    remove_finalizer(ctx, experiment).await?;
                }
                return Ok(Action::await_change());
            }
            if matches!(status.phase, Phase::Recovering | Phase::Aborting)
                && !ctx.caches.reverts.contains(&uid)
                && injections
                    .iter()
                    .any(|i| i.metadata.deletion_timestamp.is_none())
            {
                // Re-asking is idempotent and covers a delete lost to a crash.
                revert_all(ctx, experiment).await?;
            }
            status::write(ctx, experiment, &status).await?;
            Action::requeue(Duration::from_secs(1))
        }
    };
    Ok(action)
}

/// Injects every recorded fault. Records go to `Injecting` (and are written) before any fault
/// is attempted; pod kills end `Injected` or `Skipped`, network faults stay `Injecting` until
/// their agent reports.
async fn inject_all(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    now: DateTime<Utc>,
) -> Result<()> {
    let resuming: Vec<bool> = status
        .targets
        .iter()
        .map(|r| r.state == TargetState::Injecting)
        .collect();
    for record in status
        .targets
        .iter_mut()
        .filter(|r| r.state == TargetState::Selected)
    {
        record.state = TargetState::Injecting;
    }
    status::write(ctx, experiment, status).await?;

    let duration = spec_check::check_spec(&experiment.spec)
        .map(|t| t.duration)
        .unwrap_or_default();
    let expires_at =
        now + chrono::Duration::from_std(duration + ctx.settings.expiry_grace).unwrap_or_default();
    let namespace = experiment.namespace().unwrap_or_default();
    let injection_api: Api<FaultInjection> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut notes = Vec::new();
    for (i, record) in status.targets.iter_mut().enumerate() {
        if record.state != TargetState::Injecting {
            continue;
        }
        let Some(kind) = experiment
            .spec
            .faults
            .get(record.fault_index as usize)
            .and_then(|f| f.kind())
        else {
            continue;
        };
        match kind {
            FaultKind::PodKill(fault) => {
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &record.namespace);
                // A record already Injecting when we got here was being killed when the
                // controller stopped: kill only if that kill did not happen.
                if resuming[i]
                    && podkill::already_killed(&pods, record)
                        .await
                        .map_err(Error::Observe)?
                {
                    record.state = TargetState::Injected;
                    record.injected_at.get_or_insert(now);
                    continue;
                }
                if let Some(note) = podkill::apply(&ctx.no_retry, record, fault, now)
                    .await
                    .map_err(act_error("kill a pod"))?
                {
                    notes.push(note);
                }
            }
            kind => {
                let peers = match injections::scope_of(kind) {
                    Some(scope) => injections::resolve_peers(&ctx.client, scope, &namespace)
                        .await
                        .map_err(Error::Observe)?,
                    None => Vec::new(),
                };
                let Some(fault) = injections::network_fault(kind, peers) else {
                    continue;
                };
                injections::create(&injection_api, experiment, record, fault, expires_at)
                    .await
                    .map_err(act_error("create a FaultInjection"))?;
                notes.push((
                    "FaultInjectionCreated",
                    format!(
                        "{} for pod {}/{} on node {}",
                        record.fault,
                        record.namespace,
                        record.name,
                        record.node_name.as_deref().unwrap_or("?")
                    ),
                ));
            }
        }
    }
    for (reason, message) in notes {
        status::note(ctx, experiment, status, false, reason, "Inject", message).await;
    }
    Ok(())
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

/// Asks for every FaultInjection of the experiment to be deleted (one request).
async fn revert_all(ctx: &Context, experiment: &ChaosExperiment) -> Result<()> {
    let api: Api<FaultInjection> = Api::namespaced(
        ctx.client.clone(),
        &experiment.namespace().unwrap_or_default(),
    );
    injections::delete_all(&api, &experiment.name_any())
        .await
        .map_err(act_error("delete FaultInjections"))?;
    ctx.caches
        .reverts
        .insert(&experiment.uid().unwrap_or_default());
    Ok(())
}

fn mark_reverted(
    status: &mut ChaosExperimentStatus,
    now: DateTime<Utc>,
    experiment: &ChaosExperiment,
) {
    status.reverted_at = Some(now);
    for record in status.targets.iter_mut() {
        if matches!(record.state, TargetState::Injected | TargetState::Injecting) {
            record.state = TargetState::Reverted;
            record.reverted_at = Some(now);
        }
    }
    set_condition(
        &mut status.conditions,
        "Reverted",
        ConditionStatus::True,
        "FaultsReverted",
        "every fault is confirmed reverted",
        experiment.metadata.generation,
        now,
    );
}

pub(super) async fn finish(
    ctx: &Context,
    experiment: &mut ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    verdict: Verdict,
    reason: &str,
    message: String,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut events = Vec::new();
    if verdict == Verdict::DryRun {
        // The plan, one line per target and fault, exactly as a real run would act on it.
        let plan: Vec<String> = status.targets.iter().map(planned_action).collect();
        for line in plan {
            events.push(status::record(
                ctx,
                status,
                false,
                "WouldInject",
                "DryRun",
                line,
            ));
        }
    }
    let aborted = matches!(status.phase, Phase::Aborting);
    let mut abort_latency = None;
    let mut recovery_time = None;
    if aborted {
        mark_reverted(status, now, experiment);
        if let Some(started) = status.abort_started_at {
            let latency = (now - started).to_std().unwrap_or_default();
            status.abort_latency = Some(GoDuration::from_duration(latency));
            abort_latency = Some(latency);
        }
    } else if verdict == Verdict::Passed
        && let Some(reverted) = status.reverted_at
    {
        let recovery = (now - reverted).to_std().unwrap_or_default();
        status.recovery_time = Some(GoDuration::from_duration(recovery));
        recovery_time = Some(recovery);
    }
    status.phase = match verdict {
        Verdict::Passed | Verdict::DryRun => Phase::Succeeded,
        Verdict::Aborted => Phase::Aborted,
        Verdict::Failed | Verdict::Error => Phase::Failed,
    };
    status.verdict = Some(verdict);
    status.reason = Some(reason.into());
    status.message = Some(message.clone());
    status.finished_at = Some(now);
    let generation = experiment.metadata.generation;
    set_condition(
        &mut status.conditions,
        "Complete",
        ConditionStatus::True,
        &format!("{verdict:?}"),
        &message,
        generation,
        now,
    );
    let warning = !matches!(verdict, Verdict::Passed | Verdict::DryRun);
    events.push(status::record(
        ctx,
        status,
        warning,
        &format!("Experiment{verdict:?}"),
        "Finish",
        message,
    ));
    status::write(ctx, experiment, status).await?;
    // Counted once the verdict is written, so once per experiment: the write is conditional
    // on the version the verdict was decided from, and a retry after a failed write counts
    // nothing twice.
    let metrics = &ctx.metrics;
    if aborted {
        if let Some(latency) = abort_latency {
            metrics.abort_latency.observe(latency.as_secs_f64());
        }
        metrics
            .experiments_aborted
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
    if let Some(recovery) = recovery_time {
        metrics.recovery_time.observe(recovery.as_secs_f64());
    }
    metrics
        .experiments_finished
        .get_or_create(&VerdictLabel {
            verdict: format!("{verdict:?}"),
        })
        .inc();
    status::publish(ctx, experiment, events).await;
    Ok(())
}

/// What a real run would do to one target, for a dry run's plan.
fn planned_action(record: &crate::api::TargetRecord) -> String {
    let target = format!("{}/{}", record.namespace, record.name);
    let node = record.node_name.as_deref().unwrap_or("an unscheduled node");
    match &record.injection {
        Some(injection) => format!(
            "{} on pod {target} (node {node}) through FaultInjection {injection}",
            record.fault
        ),
        None => format!("{} of pod {target} (node {node})", record.fault),
    }
}
