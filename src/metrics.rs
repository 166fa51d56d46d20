//! The controller's Prometheus metrics (prometheus-client: typed labels, no global registry).

use std::sync::{Arc, Mutex};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabel {
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabel {
    pub probe: String,
    pub result: String,
}

/// Every metric, registered once.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub reconciliations: Counter,
    pub reconcile_failures: Family<ReasonLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub experiments_finished: Family<VerdictLabel, Counter>,
    pub experiments_aborted: Family<ReasonLabel, Counter>,
    pub abort_latency: Histogram,
    pub recovery_time: Histogram,
    pub probe_checks: Family<ProbeLabel, Counter>,
    pub is_leader: Gauge,
    pub api_requests: crate::api_requests::RequestCounts,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("faultline");
        let seconds = || {
            Histogram::new([
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ])
        };
        let metrics = Metrics {
            registry: Arc::default(),
            reconciliations: Counter::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: seconds(),
            experiments_finished: Family::default(),
            experiments_aborted: Family::default(),
            abort_latency: seconds(),
            recovery_time: seconds(),
            probe_checks: Family::default(),
            is_leader: Gauge::default(),
            api_requests: Family::default(),
        };
        registry.register(
            "reconciliations",
            "Reconciles of ChaosExperiments",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            metrics.reconcile_failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "experiments_finished",
            "Experiments that reached a verdict, by verdict",
            metrics.experiments_finished.clone(),
        );
        registry.register(
            "experiments_aborted",
            "Experiments aborted, by reason",
            metrics.experiments_aborted.clone(),
        );
        registry.register(
            "abort_latency_seconds",
            "From a hypothesis violation or abort request to every fault confirmed reverted",
            metrics.abort_latency.clone(),
        );
        registry.register(
            "recovery_time_seconds",
            "From every fault reverted to the hypothesis holding again",
            metrics.recovery_time.clone(),
        );
        registry.register(
            "probe_checks",
            "Probe checks, by probe and result",
            metrics.probe_checks.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            metrics.is_leader.clone(),
        );
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API, by verb, resource and status code",
            metrics.api_requests.clone(),
        );
        *metrics.registry.lock().unwrap_or_else(|p| p.into_inner()) = registry;
        metrics
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics_with_labels() {
        let metrics = Metrics::default();
        metrics
            .experiments_aborted
            .get_or_create(&ReasonLabel {
                reason: "ProbeFailed".into(),
            })
            .inc();
        metrics.abort_latency.observe(0.2);
        let text = metrics.render();
        assert!(
            text.contains("faultline_experiments_aborted_total{reason=\"ProbeFailed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("faultline_abort_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
