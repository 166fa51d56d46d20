//! Runs ChaosSchedules: observe the schedule and the experiments it owns, `plan::plan` (pure),
//! then create, abort or prune experiments and record the status.

pub mod plan;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::Recorder, watcher},
};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::api::{
    ABORT_ANNOTATION, ChaosExperiment, ChaosSchedule, SCHEDULE_LABEL, SCHEDULED_AT_ANNOTATION,
};
use crate::owned_experiments as owned;
use crate::panics::{self, PANICKED_REASON};
use plan::{Child, Observed, Plan};

struct Context {
    client: Client,
    recorder: Recorder,
    paused: owned::PausedSwitch,
}

/// Runs the ChaosSchedule controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    paused: owned::PausedSwitch,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        recorder: owned::recorder(&client),
        client: client.clone(),
        paused,
    });
    // A run that finishes triggers its schedule at once (history, failure count).
    let children = owned::changes_of_labelled(&client, SCHEDULE_LABEL);
    info!("schedule controller starting");
    Controller::new(
        Api::<DeserializeGuard<ChaosSchedule>>::all(client),
        watcher::Config::default(),
    )
    .owns_stream(children)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
    info!("schedule controller stopped");
}

#[instrument(skip(guarded, ctx), fields(schedule = %guarded.name_any(), namespace = guarded.namespace().unwrap_or_default()))]
async fn reconcile(
    guarded: Arc<DeserializeGuard<ChaosSchedule>>,
    ctx: Arc<Context>,
) -> Result<Action, owned::StepError> {
    let schedule = match &guarded.0 {
        Ok(schedule) => schedule,
        Err(invalid) => {
            let message = format!(
                "the schedule cannot be read, so no run starts: {}. Fix the manifest (faultline validate shows every problem) and apply it again",
                invalid.error
            );
            let status = json!({ "status": {
                "conditions": [{ "type": "Active", "status": "False", "reason": "InvalidSpec",
                                  "message": message, "lastTransitionTime": Utc::now() }],
            }});
            return owned::report_unreadable::<ChaosSchedule>(&ctx.client, invalid, status).await;
        }
    };
    let generation = schedule.metadata.generation;
    let conditions = schedule.status.as_ref().map(|s| &s.conditions[..]);
    if owned::panicked_before(conditions.unwrap_or_default(), generation) {
        return Ok(Action::await_change());
    }
    // A panic stays with this schedule: it is reported on it, the others go on.
    match panics::catch(reconcile_readable(schedule, &ctx)).await {
        Ok(result) => result,
        Err(panic) => {
            let message = owned::panic_message(
                "schedule",
                &panic,
                "no run starts; a run already going ends under its own hypothesis",
            );
            let status = json!({ "status": {
                "observedGeneration": generation,
                "conditions": [{ "type": "Active", "status": "False", "reason": PANICKED_REASON,
                                  "message": message, "lastTransitionTime": Utc::now(),
                                  "observedGeneration": generation }],
            }});
            owned::report_panicked(&ctx.client, schedule, &panic, status).await
        }
    }
}

async fn reconcile_readable(
    schedule: &ChaosSchedule,
    ctx: &Context,
) -> Result<Action, owned::StepError> {
    let namespace = schedule.namespace().unwrap_or_default();
    let name = schedule.name_any();
    let (mine, _strays) = owned::list(
        &ctx.client,
        &namespace,
        SCHEDULE_LABEL,
        &name,
        &schedule.uid().unwrap_or_default(),
    )
    .await
    .map_err(owned::failed("list its experiments"))?;
    let observed = Observed {
        name: &name,
        spec: &schedule.spec,
        status: schedule.status.clone().unwrap_or_default(),
        generation: schedule.metadata.generation,
        created_at: schedule
            .creation_timestamp()
            .map_or_else(Utc::now, |t| owned::to_chrono(&t)),
        children: mine.iter().map(child).collect(),
        paused: (ctx.paused)(),
        now: Utc::now(),
    };
    let plan = plan::plan(&observed);
    tracing::debug!(?plan, "planned");
    act(ctx, schedule, &plan).await?;
    Ok(match plan.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// The time a schedule's run was scheduled for (its annotation), else when it was created.
pub fn scheduled_at(experiment: &ChaosExperiment) -> DateTime<Utc> {
    experiment
        .annotations()
        .get(SCHEDULED_AT_ANNOTATION)
        .and_then(|t| t.parse().ok())
        .or_else(|| {
            experiment
                .creation_timestamp()
                .map(|t| owned::to_chrono(&t))
        })
        .unwrap_or_else(Utc::now)
}

fn child(experiment: &ChaosExperiment) -> Child {
    Child {
        name: experiment.name_any(),
        scheduled_at: scheduled_at(experiment),
        verdict: experiment.status.as_ref().and_then(|s| s.verdict),
        abort_requested: experiment.annotations().contains_key(ABORT_ANNOTATION),
    }
}

async fn act(ctx: &Context, schedule: &ChaosSchedule, plan: &Plan) -> Result<(), owned::StepError> {
    let namespace = schedule.namespace().unwrap_or_default();
    let name = schedule.name_any();
    for experiment in &plan.abort {
        let reason =
            format!("replaced by the next run of schedule {name} (concurrencyPolicy Replace)");
        owned::request_abort::<ChaosExperiment>(&ctx.client, &namespace, experiment, &reason)
            .await
            .map_err(owned::failed("abort the previous run"))?;
    }
    if let Some(new) = &plan.create {
        let owner = schedule
            .controller_owner_ref(&())
            .expect("a ChaosSchedule read from the API server has a name and uid");
        let experiment = owned::experiment(
            owner,
            &namespace,
            &new.name,
            new.labels.clone(),
            new.annotations.clone(),
            new.spec.clone(),
        );
        if let Err(source) = owned::create(&ctx.client, &experiment).await {
            let note = format!("could not create experiment {}: {source}", new.name);
            owned::publish(&ctx.recorder, schedule, true, "CreateFailed", &note).await;
            return Err(owned::StepError {
                action: "create the run's experiment",
                source,
            });
        }
    }
    owned::write_status(
        &ctx.client,
        schedule,
        schedule.status.as_ref(),
        &plan.status,
    )
    .await
    .map_err(owned::failed("write the status"))?;
    // Pruned only once the status that stopped counting on them is written.
    for old in &plan.delete {
        owned::delete(&ctx.client, &namespace, old)
            .await
            .map_err(owned::failed("delete a run beyond the history limit"))?;
    }
    owned::publish_notes(&ctx.recorder, schedule, &plan.notes).await;
    Ok(())
}

fn error_policy(
    schedule: Arc<DeserializeGuard<ChaosSchedule>>,
    error: &owned::StepError,
    _: Arc<Context>,
) -> Action {
    warn!(schedule = %schedule.name_any(), %error, "schedule reconcile failed; retrying");
    owned::retry_after(error)
}
