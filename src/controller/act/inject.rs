//! Putting faults in: every recorded fault when the experiment enters Injecting, the rounds of
//! a repeating pod kill, and FaultInjections that a failed create left missing. Records go to
//! `Injecting` (and are written) before any fault is attempted. (client required)

use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};

use super::{Context, Error, Result, act_error};
use crate::{
    api::{ChaosExperiment, ChaosExperimentStatus, FaultInjection, FaultKind, TargetState},
    controller::{
        events::Fact,
        injections, podkill, spec_check, status,
        targets::{self, Round},
    },
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

    let mut facts = Vec::new();
    let mut failure = None;
    for (i, resumed) in resuming.into_iter().enumerate() {
        if status.targets[i].state != TargetState::Injecting {
            continue;
        }
        let Some(kind) = experiment
            .spec
            .faults
            .get(status.targets[i].fault_index as usize)
            .and_then(|f| f.kind())
        else {
            continue;
        };
        let record = &mut status.targets[i];
        match kind {
            FaultKind::PodKill(fault) => {
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &record.namespace);
                // A record already Injecting when we got here was being killed when the
                // controller stopped: kill only if that kill did not happen.
                if resumed
                    && podkill::already_killed(&pods, record)
                        .await
                        .map_err(Error::Observe)?
                {
                    record.state = TargetState::Injected;
                    record.injected_at.get_or_insert(now);
                    status.faults_injected += 1;
                    continue;
                }
                let fact = podkill::apply(&ctx.no_retry, record, fault, now)
                    .await
                    .map_err(act_error("kill a pod"))?;
                if record.state == TargetState::Injected {
                    status.faults_injected += 1;
                }
                facts.push(fact);
            }
            _ => match create_injection(ctx, experiment, status, i, now).await {
                Ok(fact) => facts.extend(fact),
                // Go on with the others; this one is created again (`create_missing`).
                Err(error) => {
                    failure.get_or_insert(error);
                }
            },
        }
    }
    status::note_all(ctx, experiment, status, facts).await;
    written_then(ctx, experiment, status, failure).await
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
    let mut facts = Vec::new();
    let mut failure = None;
    for i in 0..status.targets.len() {
        let record = &status.targets[i];
        let missing = record.state == TargetState::Injecting
            && record
                .injection
                .as_deref()
                .is_some_and(|name| !cached.iter().any(|c| c.name_any() == name));
        if !missing {
            continue;
        }
        match create_injection(ctx, experiment, status, i, now).await {
            Ok(fact) => facts.extend(fact),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    status::note_all(ctx, experiment, status, facts).await;
    written_then(ctx, experiment, status, failure).await
}

/// Creates the FaultInjection of `status.targets[index]`. A refusal by the API server (a 4xx
/// that trying again will not change) marks the record `Failed` with the server's own words,
/// which end the experiment with that cause; anything else is an error to retry.
async fn create_injection(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &mut ChaosExperimentStatus,
    index: usize,
    now: DateTime<Utc>,
) -> Result<Option<Fact>> {
    let namespace = experiment.namespace().unwrap_or_default();
    let record = &status.targets[index];
    let Some(kind) = experiment
        .spec
        .faults
        .get(record.fault_index as usize)
        .and_then(|f| f.kind())
    else {
        return Ok(None);
    };
    let peers = match injections::scope_of(kind) {
        Some(scope) => injections::resolve_peers(&ctx.client, scope, &namespace)
            .await
            .map_err(Error::Observe)?,
        None => Vec::new(),
    };
    let Some(fault) = injections::network_fault(kind, peers) else {
        return Ok(None);
    };
    let duration = spec_check::check_spec(&experiment.spec)
        .map(|t| t.duration)
        .unwrap_or_default();
    let began = status.injected_at.unwrap_or(now);
    let expires_at = began
        + chrono::Duration::from_std(duration + ctx.settings.expiry_grace).unwrap_or_default();
    let api: Api<FaultInjection> = Api::namespaced(ctx.client.clone(), &namespace);
    let name = record.injection.clone().unwrap_or_default();
    let target = format!("{}/{}", record.namespace, record.name);
    let node = record.node_name.clone().unwrap_or_else(|| "?".into());
    match injections::create(&api, experiment, record, fault, expires_at).await {
        Ok(created) => {
            let record = &mut status.targets[index];
            // Whatever failed before is over.
            record.message = None;
            // It was there already (the watch had not shown it yet): nothing new to tell.
            Ok(created.then(|| {
                Fact::normal(
                    "FaultInjectionCreated",
                    "Inject",
                    format!("{} for pod {target} on node {node}", record.fault),
                )
                .about(record)
            }))
        }
        Err(kube::Error::Api(answer)) if refused(answer.code) => {
            let record = &mut status.targets[index];
            let why = format!(
                "the API server refused FaultInjection {name} ({} {}): {}",
                answer.code, answer.reason, answer.message
            );
            record.state = TargetState::Failed;
            record.message = Some(why.clone());
            Ok(Some(
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
            status.targets[index].message =
                Some(format!("creating FaultInjection {name} failed: {other}"));
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
            status::note(
                ctx,
                experiment,
                status,
                Fact::warning(
                    "PodKillRoundSkipped",
                    "Select",
                    format!("this round kills nothing: {why}"),
                ),
            )
            .await;
            return status::write(ctx, experiment, status).await;
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
    status::note(
        ctx,
        experiment,
        status,
        Fact::normal("PodKillRound", "Select", summary),
    )
    .await;
    status::write(ctx, experiment, status).await?;

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
        facts.push(
            podkill::apply(&ctx.no_retry, record, fault, now)
                .await
                .map_err(act_error("kill a pod"))?,
        );
        if record.state == TargetState::Injected {
            killed += 1;
        }
        // A skipped or vanished target still marks the round as done.
        record.injected_at.get_or_insert(now);
    }
    status.faults_injected += killed;
    status::note_all(ctx, experiment, status, facts).await;
    status::write(ctx, experiment, status).await
}

#[cfg(test)]
mod tests {
    use super::*;

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
