//! Runs GameDays: observe the GameDay and the experiments it owns, `plan::plan` (pure), then
//! create, abort or delete experiments and record the status. The experiments do the chaos
//! (and their own reverts); a GameDay only orders them. Deleting a GameDay deletes its
//! experiments, whose finalizers revert whatever they injected.

pub mod plan;
pub mod stage;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{Controller, controller::Action, events::Recorder, watcher},
};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::api::{
    ABORT_ANNOTATION, APPROVE_STAGE_ANNOTATION, ChaosExperiment, GAMEDAY_LABEL, GAMEDAY_RUN_LABEL,
    GameDay, STAGE_LABEL,
};
use crate::owned_experiments as owned;
use crate::panics::{self, PANICKED_REASON};
use plan::{Child, Observed, Plan};

/// How often a GameDay is looked at when nothing changes (a safety net; changes to it and to
/// its experiments trigger a reconcile at once).
const RESYNC: Duration = Duration::from_secs(300);

struct Context {
    client: Client,
    recorder: Recorder,
    paused: owned::PausedSwitch,
}

/// Runs the GameDay controller until `shutdown` resolves.
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
    // Only the experiments GameDays created, each change mapped to its GameDay (reconcile lists
    // them fresh). Guarded: one unreadable experiment must not stall the stream.
    let children = owned::changes_of_labelled(&client, GAMEDAY_LABEL);
    info!("game day controller starting");
    Controller::new(
        Api::<DeserializeGuard<GameDay>>::all(client),
        watcher::Config::default(),
    )
    .owns_stream(children)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
    info!("game day controller stopped");
}

#[instrument(skip(guarded, ctx), fields(gameday = %guarded.name_any(), namespace = guarded.namespace().unwrap_or_default()))]
async fn reconcile(
    guarded: Arc<DeserializeGuard<GameDay>>,
    ctx: Arc<Context>,
) -> Result<Action, owned::StepError> {
    let gameday = match &guarded.0 {
        Ok(gameday) => gameday,
        Err(invalid) => {
            let message = format!(
                "the game day cannot be read, so nothing is started: {}. Fix the manifest (faultline validate shows every problem) and apply it again",
                invalid.error
            );
            let status = json!({ "status": {
                "phase": "Failed", "verdict": "Error", "message": message,
                "conditions": [{ "type": "Complete", "status": "True", "reason": "Error",
                                  "message": message, "lastTransitionTime": Utc::now() }],
            }});
            return owned::report_unreadable::<GameDay>(&ctx.client, invalid, status).await;
        }
    };
    let generation = gameday.metadata.generation;
    let conditions = gameday.status.as_ref().map(|s| &s.conditions[..]);
    if owned::panicked_before(conditions.unwrap_or_default(), generation) {
        return Ok(Action::await_change());
    }
    // A panic stays with this GameDay: it is reported on it, the others go on.
    match panics::catch(reconcile_readable(gameday, &ctx)).await {
        Ok(result) => result,
        Err(panic) => {
            let message = owned::panic_message(
                "game day",
                &panic,
                "no further stage starts; experiments it created run to their end under their own hypothesis (faultline abort stops them)",
            );
            let status = json!({ "status": {
                "phase": "Failed", "verdict": "Error", "message": message,
                "observedGeneration": generation,
                "conditions": [{ "type": "Complete", "status": "True", "reason": PANICKED_REASON,
                                  "message": message, "lastTransitionTime": Utc::now(),
                                  "observedGeneration": generation }],
            }});
            owned::report_panicked(&ctx.client, gameday, &panic, status).await
        }
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

fn error_policy(
    gameday: Arc<DeserializeGuard<GameDay>>,
    error: &owned::StepError,
    _: Arc<Context>,
) -> Action {
    warn!(gameday = %gameday.name_any(), %error, "game day reconcile failed; retrying");
    owned::retry_after(error)
}
