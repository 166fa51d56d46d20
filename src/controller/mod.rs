//! Drives ChaosExperiments through their lifecycle: observe -> decide -> act -> record.
//!
//! Only `observe`, `act` and `status` talk to the cluster; `lifecycle::decide` is pure.
//!
//! Guarantees:
//! - targets are recorded in status before any fault is injected, and each target record is
//!   marked `Injecting` before its fault is attempted, so a crash never loses track of a fault;
//! - the experiment finalizer is removed only when no FaultInjection of the experiment is left;
//! - a violation seen by a probe triggers a reconcile at once (not at the next requeue).

mod act;
mod injections;
mod invalid;
mod observe;
mod podkill;
pub mod probe_hub;
pub mod spec_check;
mod status;
mod targets;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use tokio::sync::mpsc;
use tracing::{info, instrument, warn};

use crate::{
    admin::Readiness,
    api::{ChaosExperiment, FaultInjection, ProbePhase, ProbeStatus},
    lifecycle::{HypothesisView, decide},
    metrics::{Metrics, ReasonLabel},
    selection::SafetyPolicy,
};

/// The ConfigMap (in the controller's namespace) whose `paused: "true"` stops all chaos.
pub const PAUSE_CONFIGMAP: &str = "faultline-pause";

/// What the controller needs to know about the probes. The probe hub implements it; tests can
/// script it.
pub trait HypothesisSource: Send + Sync + 'static {
    /// Why the experiment's probes cannot run at all, if they cannot (checked before anything
    /// is injected).
    fn preflight(&self, experiment: &ChaosExperiment) -> Result<(), String>;
    /// Checks the probes of `phase` for this experiment from now on; `None` pauses them (while
    /// faults are being reverted).
    fn watch(&self, experiment: &ChaosExperiment, phase: Option<ProbePhase>);
    /// What the probes of `phase` say now.
    fn view(&self, experiment_uid: &str, phase: ProbePhase) -> HypothesisView;
    /// Every probe's status, for the experiment's status.
    fn statuses(&self, experiment_uid: &str) -> Vec<ProbeStatus>;
    /// Stops every probe of the experiment.
    fn forget(&self, experiment_uid: &str);
}

/// Settings that are not per experiment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: SafetyPolicy,
    /// How long the agents get to report a FaultInjection Applied.
    pub injection_timeout: Duration,
    /// Added to the experiment's duration for a FaultInjection's `expiresAt`, so the agent's own
    /// deadline never cuts an experiment short but still fires if the controller is gone.
    pub expiry_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: SafetyPolicy {
                controller_namespace: "faultline-system".into(),
                ..Default::default()
            },
            injection_timeout: Duration::from_secs(30),
            expiry_grace: Duration::from_secs(30),
        }
    }
}

/// The controller's two API clients: the usual one, and one without kube's retry layer for
/// calls whose "try again later" answer is itself the result (an eviction a budget refuses).
#[derive(Clone)]
pub struct Clients {
    pub main: Client,
    pub no_retry: Client,
}

impl Clients {
    pub fn from_config(config: kube::Config) -> Result<Clients, kube::Error> {
        let mut no_retry = config.clone();
        no_retry.default_retry = false;
        Ok(Clients {
            main: Client::try_from(config)?,
            no_retry: Client::try_from(no_retry)?,
        })
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub no_retry: Client,
    pub recorder: Recorder,
    pub settings: Settings,
    pub hypotheses: Arc<dyn HypothesisSource>,
    /// The clock, injectable so tests can reason about deadlines.
    pub now: fn() -> DateTime<Utc>,
    pub metrics: Metrics,
}

/// What can go wrong in one reconcile. Each variant names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the cluster state for the experiment: {0}")]
    Observe(#[source] kube::Error),
    #[error("failed to {action} for the experiment: {source}")]
    Act {
        action: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the experiment's status: {0}")]
    Record(#[source] kube::Error),
}

impl Error {
    /// PascalCase; used as the Event reason and the `error` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Observe(_) => "ObserveFailed",
            Error::Act { .. } => "ActFailed",
            Error::Record(_) => "StatusWriteFailed",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One reconcile of one experiment.
#[instrument(skip(guarded, ctx), fields(experiment = %guarded.name_any(), namespace = guarded.namespace().unwrap_or_default()))]
pub async fn reconcile(
    guarded: Arc<DeserializeGuard<ChaosExperiment>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    ctx.metrics.reconciliations.inc();
    let started = std::time::Instant::now();
    let result = match &guarded.0 {
        Ok(experiment) => reconcile_inner(Arc::new(experiment.clone()), &ctx).await,
        Err(invalid) => invalid::reconcile_invalid(&ctx, invalid).await,
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(experiment: Arc<ChaosExperiment>, ctx: &Arc<Context>) -> Result<Action> {
    let ctx = ctx.as_ref();
    let mut experiment = Arc::unwrap_or_clone(experiment);
    if let Some(rv) = act::ensure_finalizer(ctx, &experiment).await? {
        experiment.metadata.resource_version = Some(rv);
    }
    let world = observe::observe(ctx, &experiment).await?;
    let decision = decide(&world.observed);
    tracing::debug!(phase = ?world.status.phase, ?decision, "decided");
    act::perform(ctx, &mut experiment, world, decision).await
}

fn error_policy(
    experiment: Arc<DeserializeGuard<ChaosExperiment>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics
        .reconcile_failures
        .get_or_create(&ReasonLabel {
            reason: error.reason().into(),
        })
        .inc();
    // A conflict means our cached copy was stale; the fresh one is already on its way.
    if let Error::Record(kube::Error::Api(status)) = error
        && status.code == 409
    {
        return Action::requeue(Duration::from_millis(20));
    }
    warn!(experiment = %experiment.name_any(), reason = error.reason(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(2))
}

/// What the controller shares with the process around it.
#[derive(Clone, Default)]
pub struct Telemetry {
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
}

/// Runs the controller until `shutdown` resolves. `triggers` receives experiments the probe hub
/// wants reconciled now (a violation, a recovery).
pub async fn run(
    clients: Clients,
    settings: Settings,
    hypotheses: Arc<dyn HypothesisSource>,
    triggers: mpsc::UnboundedReceiver<ObjectRef<ChaosExperiment>>,
    telemetry: Telemetry,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Through DeserializeGuard, so that one object that cannot be read does not stall the
    // watcher for every other experiment.
    let Clients {
        main: client,
        no_retry,
    } = clients;
    let experiments: Api<DeserializeGuard<ChaosExperiment>> = Api::all(client.clone());
    let injections: Api<FaultInjection> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "faultline-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let Telemetry { metrics, readiness } = telemetry;
    let ctx = Arc::new(Context {
        client,
        no_retry,
        recorder,
        settings,
        hypotheses,
        now: Utc::now,
        metrics,
    });
    let triggers = tokio_stream::wrappers::UnboundedReceiverStream::new(triggers).map(|r| {
        let mut guarded = ObjectRef::<DeserializeGuard<ChaosExperiment>>::new(&r.name);
        guarded.namespace = r.namespace;
        guarded
    });
    // Flipping the pause switch must reach every running experiment at once, not at its next
    // requeue.
    let pause_maps: Api<ConfigMap> = Api::namespaced(
        ctx.client.clone(),
        &ctx.settings.policy.controller_namespace,
    );
    let pause_changes = watcher(
        pause_maps,
        watcher::Config::default().fields(&format!("metadata.name={PAUSE_CONFIGMAP}")),
    )
    .touched_objects()
    .filter_map(|event| async move { event.ok().map(|_| ()) });
    info!("faultline controller starting");
    let controller = Controller::new(experiments, watcher::Config::default())
        .owns(injections, watcher::Config::default());
    let store = controller.store();
    tokio::spawn(async move {
        if store.wait_until_ready().await.is_ok() {
            readiness.set_caches_synced(true);
        }
    });
    controller
        .reconcile_on(triggers)
        .reconcile_all_on(pause_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile error");
            }
        })
        .await;
    info!("faultline controller stopped");
}

/// Whether chaos is paused cluster-wide.
pub async fn is_paused(client: &Client, namespace: &str) -> Result<bool> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = maps
        .get_opt(PAUSE_CONFIGMAP)
        .await
        .map_err(Error::Observe)?;
    Ok(map
        .and_then(|m| m.data)
        .and_then(|d| d.get("paused").cloned())
        .is_some_and(|v| v == "true"))
}

/// The reference Events are attached to.
fn object_reference(experiment: &ChaosExperiment) -> k8s_openapi::api::core::v1::ObjectReference {
    experiment.object_ref(&())
}
