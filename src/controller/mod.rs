//! Drives ChaosExperiments through their lifecycle: observe -> decide -> act -> record.
//!
//! ```text
//! reconcile ─┬─ observe ── caches, probe hub, target pods,   what is
//!            │             access reviews (reads)
//!            ├─ lifecycle::decide (pure)                     what to do
//!            └─ act ─┬─ targets (reads, chooses)             doing it: the only module
//!                    ├─ podkill, injections (one target)     that changes anything
//!                    └─ status (status writes, events)
//! ```
//!
//! Calls go down this picture only: a helper never calls back up into `act`; what it finds
//! (a refused selection, a pod kill's outcome) it returns as a value for `act` to carry out.
//!
//! Guarantees:
//! - targets are recorded in status before any fault is injected, and each target record is
//!   marked `Injecting` before its fault is attempted, so a crash never loses track of a fault;
//! - the experiment finalizer is removed only when no FaultInjection of the experiment is left;
//! - a violation seen by a probe triggers a reconcile at once (not at the next requeue);
//! - a target that leaves while its network fault runs (pod gone, pod protected, namespace's
//!   opt-in removed) has that fault reverted within one reconcile (at most 2 s apart while
//!   faults run), and the experiment says which pod left and why (`departures`);
//! - a `kubernetes` probe the controller may not run ends the experiment as a configuration
//!   error before anything is injected (`probe_access`), never as a failed hypothesis;
//! - a panic in one experiment's reconcile quarantines that experiment (`invalid`): its status
//!   says what happened and where, its faults are reverted, its finalizer released; every
//!   other experiment goes on.
//!
//! Cost: at most `Settings::concurrency` experiments are reconciled at once; FaultInjections
//! and the pause switch are read from watch caches (see `caches`); pods are listed filtered by
//! the API server; a status that would not change is not written; a reconcile never runs on a
//! cached copy that our own writes have already replaced. While network faults run, each
//! reconcile reads every such target pod and its namespace (one GET each: nothing watches
//! pods); before injecting, one SelfSubjectAccessReview per read a `kubernetes` probe makes.

mod act;
pub mod applied_receipts;
mod caches;
mod departures;
pub mod events;
mod expired_holds;
pub mod fence;
mod housekeeping;
mod injection_news;
mod injections;
mod invalid;
mod observe;
pub mod pause_switch;
mod podkill;
mod probe_access;
pub mod probe_hub;
mod revert_progress;
pub mod revert_signal;
pub mod signal_receipts;
pub mod spec_check;
mod status;
mod target_reads;
mod targets;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::{self as runtime_controller, Action},
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tokio::sync::mpsc;
use tracing::{info, instrument, warn};

use crate::{
    admin::Readiness,
    api::{ChaosExperiment, FaultInjection, ProbePhase},
    lifecycle::{HypothesisView, decide},
    metrics::{Metrics, ReasonLabel},
    panics,
    probes::hypothesis::ProbeRecord,
    selection::SafetyPolicy,
};

pub use pause_switch::PAUSE_CONFIGMAP;

pub use revert_signal::REVERTING_CONFIGMAP;

/// What the controller needs to know about the probes. The probe hub implements it; tests can
/// script it.
pub trait HypothesisSource: Send + Sync + 'static {
    /// Why the experiment's probes cannot run at all, if they cannot (checked before anything
    /// is injected).
    fn preflight(&self, experiment: &ChaosExperiment) -> Result<(), String>;
    /// Checks the probes of `phase` for this experiment from now on; `None` pauses them (while
    /// faults are being reverted). Probes that start on an experiment whose status already has
    /// results go on from them.
    fn watch(&self, experiment: &ChaosExperiment, phase: Option<ProbePhase>);
    /// What the probes of `phase` say now (undecided for probes not started).
    fn view(&self, experiment_uid: &str, phase: ProbePhase) -> HypothesisView;
    /// Why a probe of the experiment could not be run at all while it ran (the API server
    /// refused the controller the read): a configuration error, not a result.
    fn misconfigured(&self, _experiment_uid: &str) -> Option<String> {
        None
    }
    /// Every probe's results and the gaps in them, for the experiment's status; `None` when
    /// this source holds nothing for the experiment (its probes are not running here).
    fn snapshot(&self, experiment_uid: &str) -> Option<ProbeRecord>;
    /// Stops every probe of the experiment.
    fn forget(&self, experiment_uid: &str);
}

/// See [`Settings::expiry_grace`]: long enough for a revert that comes a moment late (a
/// requeue, a status conflict, a busy controller), short enough that a fault whose controller
/// and agent are both dead ends seconds after its experiment, not a minute.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(5);

/// Settings that are not per experiment.
#[derive(Clone, Debug)]
pub struct Settings {
    pub policy: SafetyPolicy,
    /// How long the agents get to report a FaultInjection Applied.
    pub injection_timeout: Duration,
    /// Added to the experiment's duration for a FaultInjection's `expiresAt`, so the agent's own
    /// deadline does not cut a fault short of its duration when the controller's revert comes a
    /// moment late, and still fires soon after when the controller is gone. Also how long a
    /// fault can outlive its experiment's end with no faultline process alive.
    pub expiry_grace: Duration,
    /// How many experiments are reconciled at once (one experiment is never reconciled twice
    /// at once). Bounds the API calls in flight and the memory they hold when many experiments
    /// start together; 0 means no limit.
    pub concurrency: u16,
    /// How often keys of the revert signal that nothing needs any more are removed, and
    /// FaultInjections held past their deadline are looked for (see `expired_holds`).
    pub signal_sweep_every: Duration,
    /// How far past its `expiresAt` a deleted FaultInjection of an ended experiment may still
    /// be held by its agent before the controller lets go (see `expired_holds`).
    pub expired_hold_margin: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: SafetyPolicy {
                controller_namespace: "faultline-system".into(),
                ..Default::default()
            },
            injection_timeout: Duration::from_secs(30),
            expiry_grace: EXPIRY_GRACE,
            concurrency: 16,
            signal_sweep_every: revert_signal::SWEEP_EVERY,
            expired_hold_margin: expired_holds::EXPIRED_HOLD_MARGIN,
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
        Self::from_config_via(config, Client::try_from)
    }

    /// Both clients, counting their requests in `metrics` (`faultline_api_requests_total`).
    pub fn counted(config: kube::Config, metrics: &Metrics) -> Result<Clients, kube::Error> {
        Self::from_config_via(config, |config| {
            crate::api_requests::counted_client(config, metrics.api_requests.clone())
        })
    }

    /// Both clients, counting their requests in `metrics` and sending writes only while
    /// `fence` is open (see [`fence`]).
    pub fn counted_and_fenced(
        config: kube::Config,
        metrics: &Metrics,
        fence: &Arc<fence::Fence>,
    ) -> Result<Clients, kube::Error> {
        Self::from_config_via(config, |config| {
            Ok(kube::client::ClientBuilder::try_from(config)?
                .with_layer(&crate::api_requests::CountLayer::new(
                    metrics.api_requests.clone(),
                ))
                .with_layer(&fence.layer())
                .build())
        })
    }

    /// Both clients made by `make` (a client with extra layers, say) from `config` and its
    /// copy without retries.
    pub fn from_config_via(
        config: kube::Config,
        make: impl Fn(kube::Config) -> Result<Client, kube::Error>,
    ) -> Result<Clients, kube::Error> {
        let mut no_retry = config.clone();
        no_retry.default_retry = false;
        Ok(Clients {
            main: make(config)?,
            no_retry: make(no_retry)?,
        })
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub no_retry: Client,
    pub recorder: events::EventRecorder,
    pub settings: Settings,
    pub hypotheses: Arc<dyn HypothesisSource>,
    /// The clock, injectable so tests can reason about deadlines.
    pub now: fn() -> DateTime<Utc>,
    pub metrics: Metrics,
    /// What the watches know: FaultInjections, the pause switch, our own superseded versions.
    pub(crate) caches: caches::Caches,
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
    /// PascalCase; the `reason` label of `faultline_reconcile_failures_total` and of the
    /// warning logged.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Observe(_) => "ObserveFailed",
            Error::Act { .. } => "ActFailed",
            // Expected under load (a write based on a copy another write overtook) and
            // handled by reconciling the newer copy: kept apart so an alert on real failures
            // does not fire on it.
            Error::Record(kube::Error::Api(status)) if status.code == 409 => "StatusWriteConflict",
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
    // Decisions read the FaultInjection and pause caches: never decide on a cache that has not
    // listed yet (that would look like "no faults, not paused").
    ctx.caches.synced().await;
    if let Ok(experiment) = &guarded.0
        && ctx.caches.versions.is_superseded(experiment)
    {
        // A write of ours has moved the experiment past this cached copy; deciding on it would
        // only repeat a step and fail its status write with a conflict. The watch event of that
        // write is on its way and triggers the reconcile that counts.
        return Ok(Action::await_change());
    }
    ctx.metrics.reconciliations.inc();
    tracing::trace!("reconcile begun");
    let started = std::time::Instant::now();
    let result = match &guarded.0 {
        Ok(experiment) => match invalid::panicked_before(experiment) {
            Some(problem) => invalid::reconcile_quarantined(&ctx, experiment, &problem).await,
            // A panic stays with this experiment: it is quarantined, the others go on.
            None => {
                match panics::catch(reconcile_inner(Arc::new(experiment.clone()), &ctx)).await {
                    Ok(result) => result,
                    Err(panic) => invalid::reconcile_panicked(&ctx, experiment, &panic).await,
                }
            }
        },
        Err(invalid) => invalid::reconcile_invalid(&ctx, invalid).await,
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn reconcile_inner(
    experiment: Arc<ChaosExperiment>,
    shared: &Arc<Context>,
) -> Result<Action> {
    let ctx = shared.as_ref();
    let mut experiment = Arc::unwrap_or_clone(experiment);
    let read_version = experiment.resource_version();
    if let Some(updated) = act::ensure_finalizer(ctx, &experiment).await? {
        ctx.caches
            .versions
            .replaced(&experiment, updated.resource_version().as_deref());
        experiment.metadata.resource_version = updated.metadata.resource_version;
        experiment.metadata.finalizers = updated.metadata.finalizers;
    }
    let observing = std::time::Instant::now();
    let world = observe::observe(ctx, &experiment).await?;
    let decision = decide(&world.observed);
    tracing::debug!(phase = ?world.status.phase, ?decision, observe_ms = observing.elapsed().as_millis() as u64, "decided");
    let action = act::perform(shared, &mut experiment, world, decision).await?;
    // "Go on at once" after a write of ours: the watch event of that write triggers the next
    // reconcile, with the object as written. Requeueing as well would run one on the cached
    // copy from before the write.
    if action == Action::requeue(Duration::ZERO) && experiment.resource_version() != read_version {
        return Ok(Action::await_change());
    }
    Ok(action)
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
    // A conflict means our cached copy was stale: the change that made it stale comes through
    // the watch and triggers the next reconcile, so there is nothing to wait for here.
    if let Error::Record(kube::Error::Api(status)) = error
        && status.code == 409
    {
        return Action::await_change();
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
    let Clients {
        main: client,
        no_retry,
    } = clients;
    let recorder = events::EventRecorder::new(
        client.clone(),
        events::Reporter {
            controller: "faultline-controller".into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    let Telemetry { metrics, readiness } = telemetry;
    let listed = caches::Listed::default();

    // The revert signal, cached (its watch is below): the agents' applied receipts in it tell
    // which FaultInjection changes are news.
    let (signal_store, signal_writer) = reflector::store::<ConfigMap>();
    // Every FaultInjection, cached: observe reads them from here, and a change to one that is
    // news to its experiment (see `injection_news`) triggers the experiment's reconcile (what
    // `owns` would do, but `owns` keeps no copy to read).
    let (injection_store, injection_writer) = reflector::store();
    // Through DeserializeGuard, so that one object that cannot be read does not stall the
    // watcher for every other experiment. Made here: the injections' filter reads it too.
    let (experiment_store, experiment_writer) = reflector::store();
    let housekeeping = housekeeping::Housekeeping {
        experiments: experiment_store.clone(),
        injections: injection_store.clone(),
    };
    let mut news = injection_news::InjectionNews::default();
    // The watch cache's copy of an injection the watch brought (the cache is written before
    // the events are filtered): what the news filter remembers, shared rather than copied.
    let injections_cached = injection_store.clone();
    let cached =
        move |injection: &FaultInjection| injections_cached.get(&ObjectRef::from_obj(injection));
    let mut receipts_read = injection_news::ReceiptsRead::default();
    let signal_for_news = signal_store.clone();
    let signal_key = ObjectRef::<ConfigMap>::new(REVERTING_CONFIGMAP)
        .within(&settings.policy.controller_namespace);
    let injection_events = watcher(
        Api::<FaultInjection>::all(client.clone()),
        watcher::Config::default(),
    )
    // Who wrote which field is nobody's business here, and it is most of a small object.
    .modify(|injection| injection.metadata.managed_fields = None)
    .reflect(injection_writer)
    .inspect(listed.marker(caches::Watch::Injections))
    .filter_map(move |event| {
        let news = match event {
            Ok(watcher::Event::Apply(injection)) => {
                let signal = signal_for_news.get(&signal_key);
                let shared = cached(&injection).unwrap_or_else(|| Arc::new(injection.clone()));
                (news.is_news(shared, |uid| receipts_read.of(signal.as_deref(), uid))
                    && !housekeeping
                        .is_only_housekeeping(&injection, housekeeping::going(&injection)))
                .then_some(Ok(injection))
            }
            Ok(watcher::Event::Delete(injection)) => {
                news.deleted(&injection);
                (!housekeeping.is_only_housekeeping(&injection, Some(housekeeping::Going::Deleted)))
                    .then_some(Ok(injection))
            }
            Ok(watcher::Event::Init) => {
                news.relisting();
                None
            }
            // A listing goes into the cache only once it is complete (InitDone).
            Ok(watcher::Event::InitApply(injection)) => {
                news.listed(injection.clone());
                Some(Ok(injection))
            }
            Ok(watcher::Event::InitDone) => {
                news.listing_done(&cached);
                None
            }
            Err(error) => Some(Err(error)),
        };
        std::future::ready(news)
    });
    // The pause switch, cached; flipping it must reach every running experiment at once, not
    // at its next requeue.
    let (pause_store, pause_writer) = reflector::store();
    let pause_changes = watcher(
        Api::<ConfigMap>::namespaced(client.clone(), &settings.policy.controller_namespace),
        watcher::Config::default().fields(&format!("metadata.name={PAUSE_CONFIGMAP}")),
    )
    .default_backoff()
    .reflect(pause_writer)
    .inspect(listed.marker(caches::Watch::Pause))
    .touched_objects()
    .filter_map(|event| async move { event.ok().map(|_| ()) });

    // The revert signal: an abort raised there is one under way (see revert_signal). A revert
    // receipt an agent leaves there reconciles its experiment at once.
    let mut receipts_seen = std::collections::BTreeMap::new();
    let receipt_arrivals = watcher(
        Api::<ConfigMap>::namespaced(client.clone(), &settings.policy.controller_namespace),
        watcher::Config::default().fields(&format!("metadata.name={REVERTING_CONFIGMAP}")),
    )
    .default_backoff()
    .reflect(signal_writer)
    .inspect(listed.marker_unless_refused(caches::Watch::Signal))
    .touched_objects()
    .filter_map(|map| async move { map.ok() })
    .flat_map(move |map: ConfigMap| {
        let data = map.data.unwrap_or_default();
        let arrived = signal_receipts::arrived(&receipts_seen, &data);
        receipts_seen = data;
        futures::stream::iter(arrived.into_iter().map(|(namespace, name)| {
            ObjectRef::<DeserializeGuard<ChaosExperiment>>::new(&name).within(&namespace)
        }))
    });

    // Every namespace's metadata: a running experiment checks its targets' consent once a
    // second, and one watch here replaces a GET per target namespace and experiment each time.
    let (namespace_store, namespace_writer) = reflector::store();
    let namespaces = caches::NamespaceCache::new(namespace_store);
    let namespace_watch = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|ns| ns.metadata.managed_fields = None)
    .reflect(namespace_writer)
    .inspect(namespaces.marker())
    .inspect(listed.marker_unless_refused(caches::Watch::Namespaces))
    .for_each(|_| async {});

    let concurrency = settings.concurrency;
    let ctx = Arc::new(Context {
        caches: caches::Caches::new(
            injection_store,
            pause_store,
            signal_store,
            namespaces,
            settings.policy.controller_namespace.clone(),
            &listed,
        ),
        client: client.clone(),
        no_retry,
        recorder,
        settings,
        hypotheses,
        now: Utc::now,
        metrics,
    });
    let sweep = revert_signal::sweep(
        ctx.client.clone(),
        ctx.settings.policy.controller_namespace.clone(),
        ctx.caches.injections.clone(),
        experiment_store.clone(),
        ctx.settings.signal_sweep_every,
    );
    let expired_holds = expired_holds::sweep(
        ctx.clone(),
        experiment_store.clone(),
        ctx.settings.signal_sweep_every,
    );
    let forget_ctx = ctx.clone();
    let experiment_events = watcher(
        Api::<DeserializeGuard<ChaosExperiment>>::all(client),
        watcher::Config::default(),
    )
    .reflect(experiment_writer)
    .inspect(listed.marker(caches::Watch::Experiments))
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(experiment)) = event {
            forget_ctx.caches.versions.forget(experiment);
            let uid = experiment.uid().unwrap_or_default();
            forget_ctx.caches.reverts.remove(&uid);
            forget_ctx.caches.probe_writes.remove(&uid);
            forget_ctx.caches.status_writes.remove(&uid);
            forget_ctx.caches.writes_behind.forget(&uid);
        }
    })
    .applied_objects();
    let triggers = tokio_stream::wrappers::UnboundedReceiverStream::new(triggers).map(|r| {
        let mut guarded = ObjectRef::<DeserializeGuard<ChaosExperiment>>::new(&r.name);
        guarded.namespace = r.namespace;
        guarded
    });
    let mut synced = listed.subscribe();
    tokio::spawn(async move {
        if synced.wait_for(caches::Listed::all).await.is_ok() {
            readiness.set_caches_synced(true);
        }
    });
    // The agents' applied receipts go beside the revert signal: its ConfigMap exists from the
    // start (the chart makes it; the sandbox and older installs may not have).
    tokio::spawn(revert_signal::ensure(
        ctx.client.clone(),
        ctx.settings.policy.controller_namespace.clone(),
    ));
    info!(concurrency, "faultline controller starting");
    // GameDays and ChaosSchedules only create experiments; they run in the same process, on
    // the same lease, and stop with it.
    let shutdown = shutdown.shared();
    let paused_ctx = ctx.clone();
    let paused: crate::owned_experiments::PausedSwitch =
        Arc::new(move || paused_ctx.caches.paused());
    let owners = futures::future::join(
        crate::gameday::run(ctx.client.clone(), paused.clone(), shutdown.clone()),
        crate::schedule::run(ctx.client.clone(), paused, shutdown.clone()),
    );
    // No debounce: it would delay the reconcile a probe's violation triggers, i.e. every abort.
    let experiments = Controller::for_stream(experiment_events, experiment_store)
        .owns_stream(injection_events)
        .with_config(runtime_controller::Config::default().concurrency(concurrency))
        .reconcile_on(futures::stream::select(triggers, receipt_arrivals))
        .reconcile_all_on(pause_changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile error");
            }
        });
    // The sweeps and the namespace watch have no end of their own: they stop with the
    // controller.
    tokio::select! {
        _ = futures::future::join(experiments, owners) => {}
        () = sweep => {}
        () = expired_holds => {}
        () = namespace_watch => {}
    }
    info!("faultline controller stopped");
}

/// The reference Events are attached to.
fn object_reference(experiment: &ChaosExperiment) -> k8s_openapi::api::core::v1::ObjectReference {
    experiment.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::Error;

    fn record_error(code: u16) -> Error {
        Error::Record(kube::Error::Api(Box::new(
            kube::core::Status::failure("the object has been modified", "Conflict").with_code(code),
        )))
    }

    #[test]
    fn a_status_write_conflict_is_told_apart_from_a_failed_write() {
        assert_eq!(record_error(409).reason(), "StatusWriteConflict");
        assert_eq!(record_error(500).reason(), "StatusWriteFailed");
        assert_eq!(record_error(422).reason(), "StatusWriteFailed");
    }
}
