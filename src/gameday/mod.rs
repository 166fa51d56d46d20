//! Runs GameDays: observe the GameDay and the experiments it owns, `plan::plan` (pure), then
//! create, abort or delete experiments and record the status. The experiments do the chaos
//! (and their own reverts); a GameDay only orders them. Deleting a GameDay deletes its
//! experiments, whose finalizers revert whatever they injected.

pub mod plan;
pub mod stage;

use std::{collections::BTreeMap, time::Duration};

use chrono::Utc;
use kube::{Client, Resource, ResourceExt, runtime::controller::Action};
use serde_json::json;

use crate::api::{
    ABORT_ANNOTATION, APPROVE_STAGE_ANNOTATION, ChaosExperiment, Condition, GAMEDAY_LABEL,
    GAMEDAY_RUN_LABEL, GameDay, STAGE_LABEL,
};
use crate::owned_experiments as owned;
use crate::owner_controller::{self, Context, Owner};
use crate::panics::PANICKED_REASON;
use plan::{Child, Observed, Plan};

/// How often a GameDay is looked at when nothing changes (a safety net; changes to it and to
/// its experiments trigger a reconcile at once).
const RESYNC: Duration = Duration::from_secs(300);

/// Runs the GameDay controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    paused: owned::PausedSwitch,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    owner_controller::run::<GameDay>(client, paused, shutdown).await;
}

impl Owner for GameDay {
    const WHAT: &'static str = "game day";
    const CHILD_LABEL: &'static str = GAMEDAY_LABEL;
    const WHILE_UNREADABLE: &'static str = "nothing is started";
    const AFTER_PANIC: &'static str = "no further stage starts; experiments it created run to their end under their own hypothesis (faultline abort stops them)";

    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions[..])
    }

    fn unreadable_status(message: &str) -> serde_json::Value {
        json!({ "status": {
            "phase": "Failed", "verdict": "Error", "message": message,
            "conditions": [{ "type": "Complete", "status": "True", "reason": "Error",
                              "message": message, "lastTransitionTime": Utc::now() }],
        }})
    }

    fn panicked_status(message: &str, generation: Option<i64>) -> serde_json::Value {
        json!({ "status": {
            "phase": "Failed", "verdict": "Error", "message": message,
            "observedGeneration": generation,
            "conditions": [{ "type": "Complete", "status": "True", "reason": PANICKED_REASON,
                              "message": message, "lastTransitionTime": Utc::now(),
                              "observedGeneration": generation }],
        }})
    }

    async fn reconcile_readable(&self, ctx: &Context) -> Result<Action, owned::StepError> {
        reconcile_readable(self, ctx).await
    }
}

async fn reconcile_readable(gameday: &GameDay, ctx: &Context) -> Result<Action, owned::StepError> {
    let namespace = gameday.namespace().unwrap_or_default();
    let name = gameday.name_any();
    let (mine, strays) = owned::list(
        &ctx.client,
        &namespace,
        GAMEDAY_LABEL,
        &name,
        &gameday.uid().unwrap_or_default(),
    )
    .await
    .map_err(owned::failed("list its experiments"))?;
    let annotations = gameday.annotations();
    let mut children: Vec<Child> = mine.iter().map(child).collect();
    // Left by an earlier GameDay of the same name: in the way of this one's names.
    children.extend(strays.iter().map(|e| Child {
        run: -1,
        ..child(e)
    }));
    let observed = Observed {
        name: &name,
        spec: &gameday.spec,
        status: gameday.status.clone().unwrap_or_default(),
        generation: gameday.metadata.generation,
        created_at: gameday
            .creation_timestamp()
            .map_or_else(Utc::now, |t| owned::to_chrono(&t)),
        abort_requested: annotations.get(ABORT_ANNOTATION).map(String::as_str),
        approved_stage: annotations
            .get(APPROVE_STAGE_ANNOTATION)
            .map(String::as_str),
        children,
        paused: (ctx.paused)(),
        now: Utc::now(),
    };
    let plan = plan::plan(&observed);
    tracing::debug!(?plan, "planned");
    act(ctx, gameday, &plan).await?;
    Ok(Action::requeue(plan.requeue_after.unwrap_or(RESYNC)))
}

fn child(experiment: &ChaosExperiment) -> Child {
    let labels = experiment.labels();
    let status = experiment.status.as_ref();
    Child {
        name: experiment.name_any(),
        stage: labels.get(STAGE_LABEL).cloned().unwrap_or_default(),
        run: labels
            .get(GAMEDAY_RUN_LABEL)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        verdict: status.and_then(|s| s.verdict),
        message: status.and_then(|s| s.message.clone()),
        abort_requested: experiment.annotations().contains_key(ABORT_ANNOTATION),
    }
}

async fn act(ctx: &Context, gameday: &GameDay, plan: &Plan) -> Result<(), owned::StepError> {
    let namespace = gameday.namespace().unwrap_or_default();
    let name = gameday.name_any();
    for stale in &plan.delete {
        owned::delete(&ctx.client, &namespace, stale)
            .await
            .map_err(owned::failed("delete an experiment of an earlier run"))?;
    }
    for experiment in &plan.abort {
        let reason = format!("game day {name} is aborting");
        owned::request_abort::<ChaosExperiment>(&ctx.client, &namespace, experiment, &reason)
            .await
            .map_err(owned::failed("ask an experiment to abort"))?;
    }
    let owner = gameday
        .controller_owner_ref(&())
        .expect("a GameDay read from the API server has a name and uid");
    for new in &plan.create {
        let labels = BTreeMap::from([
            (GAMEDAY_LABEL.to_string(), name.clone()),
            (STAGE_LABEL.to_string(), new.stage.clone()),
            (GAMEDAY_RUN_LABEL.to_string(), plan.status.run.to_string()),
        ]);
        let experiment = owned::experiment(
            owner.clone(),
            &namespace,
            &new.name,
            labels,
            BTreeMap::new(),
            new.spec.clone(),
        );
        if let Err(source) = owned::create(&ctx.client, &experiment).await {
            // Retried with backoff; the Event says what the API server objected to.
            let note = format!("could not create experiment {}: {source}", new.name);
            owned::publish(&ctx.recorder, gameday, true, "CreateFailed", &note).await;
            return Err(owned::StepError {
                action: "create a stage's experiment",
                source,
            });
        }
    }
    owned::write_status(&ctx.client, gameday, gameday.status.as_ref(), &plan.status)
        .await
        .map_err(owned::failed("write the status"))?;
    owned::publish_notes(&ctx.recorder, gameday, &plan.notes).await;
    Ok(())
}
