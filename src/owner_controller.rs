//! The controller loop GameDays and ChaosSchedules share: watch the owners and the experiments
//! they own, keep an unreadable owner or one whose reconcile panicked from stopping the others,
//! and retry what the API server refused. What each owner does is its [`Owner`] impl.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::core::{DeserializeGuard, NamespaceResourceScope};
use kube::runtime::{Controller, controller::Action, events::Recorder, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, warn};

use crate::api::Condition;
use crate::owned_experiments::{self as owned, StepError};
use crate::{panics, unreadable};

/// What an owner's reconcile works with.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// Whether chaos is paused cluster-wide: an owner starts nothing new meanwhile.
    pub paused: owned::PausedSwitch,
}

/// A kind that owns experiments (GameDay, ChaosSchedule): what differs around its reconcile.
pub trait Owner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// How it is named in messages and logs ("game day").
    const WHAT: &'static str;
    /// The label its experiments carry (any value): a change to one of them reconciles it.
    const CHILD_LABEL: &'static str;
    /// What does not happen while it cannot be read ("nothing is started").
    const WHILE_UNREADABLE: &'static str;
    /// What a panic in its reconcile means for what it runs, as its status says it.
    const AFTER_PANIC: &'static str;

    fn conditions(&self) -> &[Condition];

    /// The status (a merge patch) of one that cannot be read: `message` says why.
    fn unreadable_status(message: &str) -> serde_json::Value;

    /// The status (a merge patch) of one whose reconcile panicked, with a condition carrying
    /// [`panics::PANICKED_REASON`] and `generation`.
    fn panicked_status(message: &str, generation: Option<i64>) -> serde_json::Value;

    /// Observes it and what it owns, plans and acts.
    fn reconcile_readable(
        &self,
        ctx: &Context,
    ) -> impl Future<Output = Result<Action, StepError>> + Send;
}

/// Runs the controller of `K` until `shutdown` resolves.
pub async fn run<K: Owner>(
    client: Client,
    paused: owned::PausedSwitch,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        recorder: owned::recorder(&client),
        client: client.clone(),
        paused,
    });
    // Only the experiments this kind created, each change mapped to its owner (the reconcile
    // lists them fresh).
    let children = owned::changes_of_labelled(&client, K::CHILD_LABEL);
    info!(kind = %K::kind(&()), "owner controller starting");
    Controller::new(
        Api::<DeserializeGuard<K>>::all(client),
        watcher::Config::default(),
    )
    .owns_stream(children)
    .graceful_shutdown_on(shutdown)
    .run(reconcile::<K>, error_policy::<K>, ctx)
    .for_each(|_| async {})
    .await;
    info!(kind = %K::kind(&()), "owner controller stopped");
}

async fn reconcile<K: Owner>(
    guarded: Arc<DeserializeGuard<K>>,
    ctx: Arc<Context>,
) -> Result<Action, StepError> {
    let span = tracing::info_span!(
        "reconcile",
        kind = %K::kind(&()),
        name = %guarded.name_any(),
        namespace = guarded.namespace().unwrap_or_default()
    );
    async {
        let owner = match &guarded.0 {
            Ok(owner) => owner,
            Err(invalid) => {
                let message = format!(
                    "the {} cannot be read, so {}: {}. Fix the manifest (faultline validate shows every problem) and apply it again",
                    K::WHAT,
                    K::WHILE_UNREADABLE,
                    unreadable::explain::<K>(&ctx.client, invalid).await
                );
                return owned::report_unreadable::<K>(
                    &ctx.client,
                    invalid,
                    K::unreadable_status(&message),
                )
                .await;
            }
        };
        let generation = owner.meta().generation;
        if owned::panicked_before(owner.conditions(), generation) {
            return Ok(Action::await_change());
        }
        // A panic stays with this owner: it is reported on it, the others go on.
        match panics::catch(owner.reconcile_readable(&ctx)).await {
            Ok(result) => result,
            Err(panic) => {
                let message = owned::panic_message(K::WHAT, &panic, K::AFTER_PANIC);
                let status = K::panicked_status(&message, generation);
                owned::report_panicked(&ctx.client, owner, &panic, status).await
            }
        }
    }
    .instrument(span)
    .await
}

fn error_policy<K: Owner>(
    owner: Arc<DeserializeGuard<K>>,
    error: &StepError,
    _: Arc<Context>,
) -> Action {
    warn!(kind = %K::kind(&()), name = %owner.name_any(), %error, "reconcile failed; retrying");
    owned::retry_after(error)
}
