//! The agent's metrics, served on its admin port next to `/healthz`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::admission::Refusal;
use super::converge::RevertReason;
use super::tag::InjectionTag;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MechanismLabel {
    mechanism: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InjectionLabel {
    injection: String,
}

/// Cheap to clone; every clone updates the same registry.
#[derive(Clone)]
pub struct AgentMetrics {
    registry: Arc<Registry>,
    active: Gauge,
    apply_seconds: Family<MechanismLabel, Histogram>,
    reverts: Family<ReasonLabel, Counter>,
    refusals: Family<ReasonLabel, Counter>,
    revert_seconds: Histogram,
    orphans_removed: Counter,
    bypassed: Family<InjectionLabel, Gauge>,
    ready: Gauge,
    api_requests: crate::api_requests::RequestCounts,
    /// `None`: ready; otherwise why not (for `/readyz`).
    not_ready: Arc<RwLock<Option<String>>>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("faultline_agent");
        let active = Gauge::default();
        registry.register(
            "faults_active",
            "Faults applied by this agent and not yet reverted (journal entries)",
            active.clone(),
        );
        let apply_seconds = Family::<MechanismLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register(
            "apply_seconds",
            "Time to apply a fault in the kernel",
            apply_seconds.clone(),
        );
        let reverts = Family::<ReasonLabel, Counter>::default();
        registry.register("reverts", "Faults reverted, by reason", reverts.clone());
        let refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "refusals",
            "Work items the agent refused (no experiment behind them, no consent, paused), by reason",
            refusals.clone(),
        );
        let revert_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "revert_seconds",
            "Time to revert a fault in the kernel",
            revert_seconds.clone(),
        );
        let orphans_removed = Counter::default();
        registry.register(
            "orphans_removed",
            "faultline rules found at start that no live injection backed, removed",
            orphans_removed.clone(),
        );
        let bypassed = Family::<InjectionLabel, Gauge>::default();
        registry.register(
            "bypassed_packets",
            "Packets that passed without the fault because the userspace queue was full",
            bypassed.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when the agent can carry out faults (its journal is usable), 0 otherwise",
            ready.clone(),
        );
        let api_requests = crate::api_requests::RequestCounts::default();
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API, by verb, resource and status code",
            api_requests.clone(),
        );
        Self {
            registry: Arc::new(registry),
            active,
            apply_seconds,
            reverts,
            refusals,
            revert_seconds,
            orphans_removed,
            bypassed,
            ready,
            api_requests,
            not_ready: Arc::new(RwLock::new(Some("starting".into()))),
        }
    }

    /// The counters a client of this agent adds its API requests to
    /// ([`crate::api_requests::counted_client`]).
    pub fn api_requests(&self) -> crate::api_requests::RequestCounts {
        self.api_requests.clone()
    }

    /// The agent can carry out faults.
    pub fn set_ready(&self) {
        *self.not_ready.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.ready.set(1);
    }

    /// The agent cannot carry out faults, for this reason (shown by `/readyz`).
    pub fn set_not_ready(&self, reason: String) {
        *self.not_ready.write().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.ready.set(0);
    }

    /// `Ok` when ready, otherwise why not.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.not_ready.read().unwrap_or_else(|p| p.into_inner()) {
            None => Ok(()),
            Some(reason) => Err(reason.clone()),
        }
    }

    pub fn set_active(&self, n: usize) {
        self.active.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn observe_apply(&self, mechanism: &str, took: Duration) {
        self.apply_seconds
            .get_or_create(&MechanismLabel {
                mechanism: mechanism.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_revert(&self, took: Duration, reason: RevertReason) {
        self.revert_seconds.observe(took.as_secs_f64());
        self.reverts
            .get_or_create(&ReasonLabel {
                reason: format!("{reason:?}"),
            })
            .inc();
    }

    pub fn observe_refusal(&self, refusal: Refusal) {
        self.refusals
            .get_or_create(&ReasonLabel {
                reason: refusal.reason().to_string(),
            })
            .inc();
    }

    pub fn add_orphans(&self, n: usize) {
        self.orphans_removed.inc_by(n as u64);
    }

    pub fn set_bypassed(&self, tag: &InjectionTag, packets: u64) {
        self.bypassed
            .get_or_create(&InjectionLabel {
                injection: tag.to_string(),
            })
            .set(i64::try_from(packets).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
