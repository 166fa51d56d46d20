//! Runs ChaosSchedules: observe the schedule and the experiments it owns, `plan::plan` (pure),
//! then create, abort or prune experiments and record the status.

pub mod plan;

use chrono::{DateTime, Utc};
use kube::{Client, Resource, ResourceExt, runtime::controller::Action};
use serde_json::json;

use crate::api::{
    ABORT_ANNOTATION, ChaosExperiment, ChaosSchedule, Condition, SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
};
use crate::owned_experiments as owned;
use crate::owner_controller::{self, Context, Owner};
use crate::panics::PANICKED_REASON;
use plan::{Child, Observed, Plan};

/// Runs the ChaosSchedule controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    paused: owned::PausedSwitch,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    owner_controller::run::<ChaosSchedule>(client, paused, shutdown).await;
}

impl Owner for ChaosSchedule {
    const WHAT: &'static str = "schedule";
    const CHILD_LABEL: &'static str = SCHEDULE_LABEL;
    const WHILE_UNREADABLE: &'static str = "no run starts";
    const AFTER_PANIC: &'static str =
        "no run starts; a run already going ends under its own hypothesis";

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions[..])
    }

    fn unreadable_status(message: &str) -> serde_json::Value {
        json!({ "status": {
            "conditions": [{ "type": "Active", "status": "False", "reason": "InvalidSpec",
                              "message": message, "lastTransitionTime": Utc::now() }],
        }})
    }

    fn panicked_status(message: &str, generation: Option<i64>) -> serde_json::Value {
        json!({ "status": {
            "observedGeneration": generation,
            "conditions": [{ "type": "Active", "status": "False", "reason": PANICKED_REASON,
                              "message": message, "lastTransitionTime": Utc::now(),
                              "observedGeneration": generation }],
        }})
    }

    async fn reconcile_readable(&self, ctx: &Context) -> Result<Action, owned::StepError> {
        reconcile_readable(self, ctx).await
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
