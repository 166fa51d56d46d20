//! Probes: the checks behind the steady-state hypothesis.
//!
//! - [`Check`] is one check of one probe (an HTTP request, a PromQL query, a read of Kubernetes
//!   objects); it talks to the world and reports a [`CheckOutcome`]. It never decides whether
//!   the hypothesis holds.
//! - [`ProbeRunner`] turns an [`api::Probe`](crate::api::Probe) into the right checker, once
//!   (URLs, regexes, headers and durations are parsed up front, so a bad spec is an error
//!   before any check runs), and applies the probe's `timeout` to every check.
//! - [`hypothesis`] is pure: it folds outcomes (with their time and phase) into
//!   [`ProbeStatus`](crate::api::ProbeStatus) and a
//!   [`HypothesisView`](crate::lifecycle::HypothesisView) for the lifecycle.
//! - [`scheduler`] runs every probe at its interval and sends the outcomes on a channel.
//! - [`redact`] is what a probe message may carry: URLs without their secrets, and the
//!   probed server's text without control characters.
//!
//! Kubernetes probes need a [`kube::Client`]; [`ProbeRunner::new`] refuses one without it
//! ([`ProbeError::NoClient`]) rather than pretending to check anything.

pub mod access;
pub mod hosts;
pub mod hypothesis;
pub mod redact;
pub mod scheduler;

mod body;
mod field_path;
mod http;
mod kubernetes;
mod prometheus;

use std::{future::Future, sync::Arc, time::Duration};

use crate::api::{
    GoDuration, Probe, ProbeCheck, ProbePhase,
    duration_bounds::{DurationBounds, PROBE_INTERVAL, PROBE_TIMEOUT},
};

pub use self::http::{HttpCheck, MAX_BODY_BYTES};
pub use self::hypothesis::{Hypothesis, ProbeTracker};
pub use self::kubernetes::KubernetesCheck;
pub use self::prometheus::{MAX_ANSWER_BYTES, PrometheusCheck};
pub use self::scheduler::{ProbeReport, run_probes};

/// What one check found. `error` is set exactly when `ok` is false and is a whole sentence
/// naming the probe, what failed and the value, e.g.
/// `probe checkout-healthy: status 503, expected 200`.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    pub ok: bool,
    /// The measured value (status code and latency, query result), when there is one.
    pub value: Option<String>,
    pub error: Option<String>,
    /// How long the check took.
    pub latency: Duration,
    /// The API server refused the controller the read (403): the check says nothing about the
    /// system under test, and the experiment is misconfigured (see [`access`]).
    pub forbidden: bool,
}

impl CheckOutcome {
    pub fn pass(value: impl Into<String>, latency: Duration) -> Self {
        CheckOutcome {
            ok: true,
            value: Some(value.into()),
            error: None,
            latency,
            forbidden: false,
        }
    }

    pub fn fail(error: impl Into<String>, value: Option<String>, latency: Duration) -> Self {
        CheckOutcome {
            ok: false,
            value,
            error: Some(error.into()),
            latency,
            forbidden: false,
        }
    }

    /// The check was not allowed to read what it names; `error` says which permission and
    /// what to set.
    pub fn forbidden(error: impl Into<String>, latency: Duration) -> Self {
        CheckOutcome {
            forbidden: true,
            ..Self::fail(error, None, latency)
        }
    }
}

/// What a check may need from the experiment around it.
#[derive(Clone, Copy, Debug)]
pub struct CheckContext<'a> {
    /// The experiment's namespace: the default for checks that look at namespaced objects.
    pub namespace: &'a str,
}

/// One kind of check. Implementations report failures in the outcome (without the
/// `probe <name>: ` prefix, which [`ProbeRunner`] adds) and never panic; they do not enforce
/// the probe's timeout themselves.
pub trait Check {
    /// What the check looks at, for messages: `GET http://...`, a PromQL query.
    fn target(&self) -> String;

    fn check(&self, ctx: &CheckContext<'_>) -> impl Future<Output = CheckOutcome> + Send;
}

/// The checkers faultline has. An enum rather than `dyn Check` so the trait can use
/// `async fn` without boxing.
#[derive(Clone, Debug)]
pub enum Checker {
    Http(HttpCheck),
    Kubernetes(KubernetesCheck),
    Prometheus(PrometheusCheck),
}

impl Check for Checker {
    fn target(&self) -> String {
        match self {
            Checker::Http(c) => c.target(),
            Checker::Kubernetes(c) => c.target(),
            Checker::Prometheus(c) => c.target(),
        }
    }

    async fn check(&self, ctx: &CheckContext<'_>) -> CheckOutcome {
        match self {
            Checker::Http(c) => c.check(ctx).await,
            Checker::Kubernetes(c) => c.check(ctx).await,
            Checker::Prometheus(c) => c.check(ctx).await,
        }
    }
}

/// Why a probe cannot be run at all (as opposed to a check that fails).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe {probe}: set exactly one of http, kubernetes or prometheus")]
    NoSingleCheck { probe: String },
    #[error(
        "probe {probe}: kubernetes probes read the cluster, but no Kubernetes client was given"
    )]
    NoClient { probe: String },
    #[error("probe {probe}: {field} {message}")]
    InvalidDuration {
        probe: String,
        field: &'static str,
        message: String,
    },
    #[error("probe {probe}: {message}")]
    InvalidSpec { probe: String, message: String },
}

impl ProbeError {
    /// PascalCase; for the status condition and the Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeError::NoClient { .. } => "ProbeUnsupported",
            _ => "InvalidProbe",
        }
    }
}

/// One probe, ready to run: the checker plus the probe's timing and tolerance settings.
#[derive(Clone, Debug)]
pub struct ProbeRunner {
    name: String,
    namespace: String,
    interval: Duration,
    timeout: Duration,
    phases: Vec<ProbePhase>,
    checker: Checker,
}

impl ProbeRunner {
    /// Builds the checker for `probe`; `namespace` (the experiment's) is the default namespace
    /// for checks that need one. `client` is what Kubernetes probes read the cluster with;
    /// other probes do not need it.
    pub fn new(
        probe: &Probe,
        namespace: &str,
        client: Option<&kube::Client>,
    ) -> Result<Self, ProbeError> {
        let name = probe.name.clone();
        let invalid = |message: String| ProbeError::InvalidSpec {
            probe: name.clone(),
            message,
        };
        let checker = match probe.check() {
            None => return Err(ProbeError::NoSingleCheck { probe: name }),
            Some(ProbeCheck::Kubernetes(spec)) => {
                let Some(client) = client else {
                    return Err(ProbeError::NoClient { probe: name });
                };
                Checker::Kubernetes(KubernetesCheck::new(spec, client.clone()).map_err(invalid)?)
            }
            Some(ProbeCheck::Http(spec)) => Checker::Http(HttpCheck::new(spec).map_err(invalid)?),
            Some(ProbeCheck::Prometheus(spec)) => {
                Checker::Prometheus(PrometheusCheck::new(spec).map_err(invalid)?)
            }
        };
        let duration = |field: &'static str, value: &GoDuration, bounds: &DurationBounds| {
            bounds
                .check(value.as_str())
                .map_err(|message| ProbeError::InvalidDuration {
                    probe: name.clone(),
                    field,
                    message,
                })
        };
        let interval = duration("interval", &probe.interval, &PROBE_INTERVAL)?;
        let timeout = duration("timeout", &probe.timeout, &PROBE_TIMEOUT)?;
        Ok(ProbeRunner {
            name: name.clone(),
            namespace: namespace.to_string(),
            interval,
            timeout,
            phases: probe.phases.clone(),
            checker,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn runs_in(&self, phase: ProbePhase) -> bool {
        self.phases.contains(&phase)
    }

    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// Runs one check within the probe's timeout. A check that does not finish in time is a
    /// failure whose message says so; its latency is the timeout.
    pub async fn run_once(&self) -> CheckOutcome {
        let ctx = CheckContext {
            namespace: &self.namespace,
        };
        let outcome = match tokio::time::timeout(self.timeout, self.checker.check(&ctx)).await {
            Ok(outcome) => outcome,
            Err(_) => CheckOutcome::fail(
                format!(
                    "timed out after {} ({})",
                    GoDuration::from_duration(self.timeout),
                    self.checker.target()
                ),
                None,
                self.timeout,
            ),
        };
        // Every probe message passes here on its way to status, Events, the CLI and reports:
        // what the server sent (an error string, a label value, a body) is made printable once,
        // for every kind of check. URLs were redacted by the checks, which know their secrets.
        CheckOutcome {
            error: outcome
                .error
                .map(|error| format!("probe {}: {}", self.name, redact::printable(&error))),
            value: outcome.value.as_deref().map(redact::printable),
            ..outcome
        }
    }
}

/// Formats a latency the way messages show it: whole milliseconds (`812ms`), or microseconds
/// below one millisecond.
pub(crate) fn millis(latency: Duration) -> String {
    if latency < Duration::from_millis(1) {
        format!("{}µs", latency.as_micros())
    } else {
        format!("{}ms", latency.as_millis())
    }
}

/// Builds a reqwest client for probes. Every check opens a fresh connection (no idle pool): a
/// probe must see what a new client of the service sees, not a kept-alive connection to a pod
/// that a fault has since killed or cut off.
pub(crate) fn http_client(accept_invalid_certs: bool) -> Result<reqwest::Client, String> {
    // reqwest is built without a bundled crypto provider (kube brings ring); building a client
    // with none installed would panic, so make sure the process has one.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .danger_accept_invalid_certs(accept_invalid_certs);
    if let Some(hosts) = hosts::installed() {
        builder = builder.dns_resolver(Arc::new(hosts));
    }
    builder
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// The innermost cause of an error, which is what a person needs to read ("Connection refused
/// (os error 111)"), rather than reqwest's outer "error sending request".
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

/// Why a request got no answer, ending with the URL it went to: `connection refused (http://..)`,
/// `TLS certificate rejected: invalid peer certificate: UnknownIssuer (https://..)`.
pub(crate) fn describe_request_error(error: &reqwest::Error, url: &str) -> String {
    let mut io_kind = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        source = e.source();
    }
    let cause = root_cause(error);
    let what = match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_string(),
        Some(std::io::ErrorKind::ConnectionReset) => format!("connection reset: {cause}"),
        _ if cause.contains("certificate") => format!("TLS certificate rejected: {cause}"),
        // rustls's words for a first answer that is not a TLS record, which is what an https://
        // URL to a plain-HTTP port gets: say what it most likely means.
        _ if cause.contains("InvalidContentType") || cause.contains("corrupt message") => format!(
            "TLS handshake failed: {cause}; the server does not speak TLS on this port (use http://?)"
        ),
        _ if error.is_body() || error.is_decode() => format!("reading the answer failed: {cause}"),
        _ if error.is_redirect() => format!("redirect failed: {cause}"),
        _ => format!("request failed: {cause}"),
    };
    format!("{what} ({url})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(yaml: &str) -> Probe {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn runner_reads_interval_timeout_and_phases() {
        let runner = ProbeRunner::new(
            &probe(
                "{name: p, interval: 10s, timeout: 500ms, phases: [during], \
                 http: {url: 'http://x/'}}",
            ),
            "shop",
            None,
        )
        .unwrap();
        assert_eq!(runner.interval(), Duration::from_secs(10));
        assert_eq!(runner.timeout(), Duration::from_millis(500));
        assert!(runner.runs_in(ProbePhase::During));
        assert!(!runner.runs_in(ProbePhase::Before));
        assert!(matches!(runner.checker(), Checker::Http(_)));
    }

    #[test]
    fn runner_rejects_what_cannot_run() {
        // Each row: the probe, and a piece of the error message.
        let rows = [
            ("{name: p}", "set exactly one of"),
            (
                "{name: p, kubernetes: {apiVersion: v1, kind: Pod, name: x, readyPods: {min: 1}}}",
                "no Kubernetes client was given",
            ),
            (
                "{name: p, timeout: soon, http: {url: 'http://x/'}}",
                "timeout",
            ),
            (
                "{name: p, interval: 0s, http: {url: 'http://x/'}}",
                "probe p: interval \"0s\" is shorter than the minimum of 100ms",
            ),
            (
                "{name: p, timeout: 999999999999999999999h, http: {url: 'http://x/'}}",
                "probe p: timeout \"999999999999999999999h\" is longer than the maximum of 5m",
            ),
            ("{name: p, http: {url: 'not a url'}}", "url"),
            (
                "{name: p, http: {url: 'http://x/', bodyRegex: '(('}}",
                "bodyRegex",
            ),
            (
                "{name: p, http: {url: 'http://x/', method: 'GE T'}}",
                "method",
            ),
            (
                "{name: p, http: {url: 'http://x/', headers: {'bad header': v}}}",
                "header",
            ),
            (
                "{name: p, http: {url: 'http://x/', maxLatency: fast}}",
                "maxLatency",
            ),
            (
                "{name: p, prometheus: {url: 'nope', query: up, operator: '==', value: 1}}",
                "url",
            ),
        ];
        for (yaml, expected) in rows {
            let err = ProbeRunner::new(&probe(yaml), "shop", None).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{yaml}: {err} does not mention {expected:?}"
            );
        }
    }

    #[tokio::test]
    async fn kubernetes_probes_are_checked_when_built() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let ok = "{name: p, kubernetes: {apiVersion: apps/v1, kind: Deployment, name: web, \
                  field: {path: .status.readyReplicas, operator: '>=', value: '2'}}}";
        let runner = ProbeRunner::new(&probe(ok), "shop", Some(&client)).unwrap();
        assert!(matches!(runner.checker(), Checker::Kubernetes(_)));
        assert_eq!(runner.checker().target(), "apps/v1 Deployment web");
        // Each row: the kubernetes part of a probe, and a piece of the error message.
        let rows = [
            (
                "{apiVersion: apps/v1/x, kind: Deployment, name: web, readyPods: {min: 1}}",
                "apiVersion",
            ),
            (
                "{apiVersion: /v1, kind: Deployment, name: web, readyPods: {min: 1}}",
                "apiVersion",
            ),
            (
                "{apiVersion: apps/v1, kind: Deployment, name: web, \
                  field: {path: status.readyReplicas, value: '1'}}",
                "must start with '.'",
            ),
            (
                "{apiVersion: v1, kind: ConfigMap, name: c, readyPods: {min: 1}}",
                "not a ConfigMap",
            ),
            (
                "{apiVersion: apps/v1, kind: Deployment, name: web, readyPods: {min: -1}}",
                "negative",
            ),
            (
                "{apiVersion: apps/v1, kind: Deployment, name: web, labelSelector: app=web, \
                  readyPods: {min: 1}}",
                "exactly one of name or labelSelector",
            ),
            (
                "{apiVersion: apps/v1, kind: Deployment, name: web}",
                "at least one check",
            ),
        ];
        for (kubernetes, expected) in rows {
            let yaml = format!("{{name: p, kubernetes: {kubernetes}}}");
            let err = ProbeRunner::new(&probe(&yaml), "shop", Some(&client)).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{kubernetes}: {err} does not mention {expected:?}"
            );
        }
    }

    #[test]
    fn latency_is_shown_in_whole_milliseconds() {
        assert_eq!(millis(Duration::from_micros(812_400)), "812ms");
        assert_eq!(millis(Duration::from_micros(250)), "250µs");
    }
}
