//! Probes: the checks that make up the steady-state hypothesis.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{common::GoDuration, duration_bounds};

/// When a probe runs, in the words of Litmus probe modes: `before` is the start-of-test check,
/// `during` is continuous while faults are in, `after` is the end-of-test check (after revert,
/// within the recovery timeout).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ProbePhase {
    Before,
    During,
    After,
}

fn all_phases() -> Vec<ProbePhase> {
    vec![ProbePhase::Before, ProbePhase::During, ProbePhase::After]
}

/// One check of the steady-state hypothesis. Set exactly one of `http`, `kubernetes` or
/// `prometheus`. A probe fails the hypothesis after `failureThreshold` consecutive failures
/// (the tolerance), and holds again after `successThreshold` consecutive successes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("[has(self.http), has(self.kubernetes), has(self.prometheus)].filter(x, x).size() == 1").message("each probe must set exactly one of http, kubernetes or prometheus"))]
#[x_kube(validation = super::rules::timeout_within_interval())]
pub struct Probe {
    /// A name unique within the experiment; it names the probe in status, reports and metrics.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// An HTTP request whose answer must meet expectations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// The state of a Kubernetes resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesProbe>,
    /// A PromQL query compared with a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProbe>,
    /// Time between two checks. Default 5s; at least 100ms, at most 1h.
    #[serde(default = "default_interval")]
    #[schemars(transform = duration_bounds::PROBE_INTERVAL.in_schema())]
    pub interval: GoDuration,
    /// How long one check may take before it counts as failed. Default 2s; more than 0s, at
    /// most 5m.
    #[serde(default = "default_timeout")]
    #[schemars(transform = duration_bounds::PROBE_TIMEOUT.in_schema())]
    pub timeout: GoDuration,
    /// Consecutive failed checks before the probe counts as failing (the tolerance). Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Consecutive successful checks before a failing probe counts as passing again. Default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// When the probe runs: any of `before`, `during`, `after`. Default all three.
    #[serde(default = "all_phases")]
    #[schemars(length(min = 1, max = 3))]
    pub phases: Vec<ProbePhase>,
}

fn default_interval() -> GoDuration {
    GoDuration::from("5s")
}
fn default_timeout() -> GoDuration {
    GoDuration::from("2s")
}
fn one() -> i32 {
    1
}

/// The single check a [`Probe`] sets, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProbeCheck<'a> {
    Http(&'a HttpProbe),
    Kubernetes(&'a KubernetesProbe),
    Prometheus(&'a PrometheusProbe),
}

impl Probe {
    /// The single check, or `None` when the probe sets none or several (invalid).
    pub fn check(&self) -> Option<ProbeCheck<'_>> {
        match (&self.http, &self.kubernetes, &self.prometheus) {
            (Some(h), None, None) => Some(ProbeCheck::Http(h)),
            (None, Some(k), None) => Some(ProbeCheck::Kubernetes(k)),
            (None, None, Some(p)) => Some(ProbeCheck::Prometheus(p)),
            _ => None,
        }
    }

    pub fn runs_in(&self, phase: ProbePhase) -> bool {
        self.phases.contains(&phase)
    }
}

/// Send an HTTP request and judge the answer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// The URL, e.g. `http://checkout.shop.svc:8080/healthz`. Messages, Events and reports show
    /// it redacted: the password of `user:password@` and the values of query parameters named
    /// like credentials, in any case and with or without `-` and `_` (among them `token`,
    /// `access_token`, `key`, `api_key`, `apikey`, `secret`, `password`, `sig`, `signature`,
    /// `X-Amz-Signature`, and names ending in `token`, `secret`, `password`, `apikey` or
    /// `signature`) become `xxxxx`. The experiment itself holds the URL as written:
    /// whoever can read the ChaosExperiment can read its secrets.
    #[schemars(length(min = 1, max = 2048), regex(pattern = super::bounds::HTTP_URL_PATTERN))]
    pub url: String,
    /// The HTTP method. Default GET.
    #[serde(default = "get")]
    #[schemars(regex(pattern = super::bounds::HTTP_METHOD_PATTERN))]
    pub method: String,
    /// Request headers: at most 16; each name an HTTP token (letters, digits and
    /// ``!#$%&'*+-.^_`|~``), each value at most 8192 characters with no control character but
    /// tab (a CR or LF would smuggle in another header). The JSON report masks the values of
    /// `Authorization`, `Cookie` and credential-like names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = super::bounds::http_headers)]
    pub headers: BTreeMap<String, String>,
    /// Request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Status codes that count as success, each 100 to 599. Empty means any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), transform = super::bounds::http_status_items)]
    pub expected_status: Vec<i32>,
    /// A regular expression the response body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub body_regex: Option<String>,
    /// The answer must arrive within this time, e.g. `300ms`, or the check fails: more than
    /// 0s, at most 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = duration_bounds::HTTP_MAX_LATENCY.in_schema())]
    pub max_latency: Option<GoDuration>,
    /// Accept any TLS certificate (self-signed test services).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

fn get() -> String {
    "GET".into()
}

/// How a measured value is compared with the expected one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ComparisonOperator {
    #[serde(rename = "==")]
    #[default]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = ">=")]
    GreaterOrEqual,
    #[serde(rename = "<")]
    Less,
    #[serde(rename = "<=")]
    LessOrEqual,
}

impl ComparisonOperator {
    pub fn symbol(&self) -> &'static str {
        match self {
            Self::Equal => "==",
            Self::NotEqual => "!=",
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
        }
    }

    /// Compares two numbers.
    pub fn holds(&self, actual: f64, expected: f64) -> bool {
        match self {
            Self::Equal => actual == expected,
            Self::NotEqual => actual != expected,
            Self::Greater => actual > expected,
            Self::GreaterOrEqual => actual >= expected,
            Self::Less => actual < expected,
            Self::LessOrEqual => actual <= expected,
        }
    }
}

/// Check a Kubernetes resource. Name one object (`name`) or several (`labelSelector`; every
/// matching object must pass). Set at least one of `condition`, `field` or `readyPods`; all set
/// checks must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.name) != has(self.labelSelector)").message("kubernetes probe: set exactly one of name or labelSelector"))]
#[x_kube(validation = kube::core::Rule::new("has(self.condition) || has(self.field) || has(self.readyPods)").message("kubernetes probe: set at least one check (condition, field or readyPods)"))]
pub struct KubernetesProbe {
    /// The resource's apiVersion, e.g. `apps/v1` (or `v1` for core kinds).
    #[schemars(length(max = 317), regex(pattern = super::rules::API_VERSION_PATTERN))]
    pub api_version: String,
    /// The resource's kind, e.g. `Deployment`.
    pub kind: String,
    /// Its namespace. Default: the experiment's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A label selector in kubectl syntax, e.g. `app=checkout,tier in (web,api)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
    /// A status condition that must have the given status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<ConditionCheck>,
    /// A field compared with a value, e.g. `.status.readyReplicas >= 2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<FieldCheck>,
    /// For a Deployment, ReplicaSet, StatefulSet or Service: at least this many of its pods are
    /// Ready. For pods selected by `labelSelector`: at least this many of them are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_pods: Option<ReadyPodsCheck>,
}

/// A status condition that must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionCheck {
    /// The condition type, e.g. `Available`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The status it must have. Default `True`.
    #[serde(default = "true_string")]
    #[schemars(regex(pattern = super::bounds::CONDITION_STATUS_PATTERN))]
    pub status: String,
}

fn true_string() -> String {
    "True".into()
}

/// A field compared with a value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = super::rules::ordering_compares_numbers())]
pub struct FieldCheck {
    /// A path into the object, e.g. `.status.readyReplicas` or `.status.conditions[0].status`.
    #[schemars(length(min = 2, max = 256), regex(pattern = super::rules::FIELD_PATH_PATTERN))]
    pub path: String,
    /// `==`, `!=`, `>`, `>=`, `<` or `<=`. Ordering operators compare numbers.
    #[serde(default)]
    pub operator: ComparisonOperator,
    /// The value to compare with, as a string; compared as a number when both sides are
    /// numbers. The ordering operators need a number (`2`, `-0.5`, `1e3`).
    #[schemars(length(max = 64))]
    pub value: String,
}

/// A minimum count of Ready pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyPodsCheck {
    /// At least this many pods must be Ready.
    #[schemars(range(min = 0))]
    pub min: i32,
}

/// What a Prometheus probe concludes from a query that returns no data: no samples, or a `NaN`
/// sample (what a ratio such as `errors / requests` gives when there was no traffic: it says
/// nothing about health, so it is judged like no data rather than compared).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EmptyResultPolicy {
    /// No data is a failure (the default: a dead exporter must not look healthy).
    #[default]
    Fail,
    /// No data is a success (e.g. an error-rate query with no errors at all).
    Pass,
}

/// Run a PromQL instant query and compare the result with a number.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusProbe {
    /// The Prometheus server, e.g. `http://prometheus.monitoring.svc:9090`. Messages and
    /// reports show it redacted, as an HTTP probe's `url`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = super::bounds::HTTP_URL_PATTERN))]
    pub url: String,
    /// The PromQL query. It must return a scalar or a vector; every sample of a vector must
    /// pass.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// `==`, `!=`, `>`, `>=`, `<` or `<=`.
    pub operator: ComparisonOperator,
    /// The number to compare the result with.
    pub value: f64,
    /// `Fail` (default) or `Pass` when the query returns no data: no samples, or a `NaN`
    /// sample (a ratio such as `errors / requests` is `NaN` when there was no traffic, which
    /// says nothing about health, so it is not compared: `NaN != 1` would otherwise pass). A
    /// sample that fails the comparison fails the check whatever `onEmpty` says.
    #[serde(default)]
    pub on_empty: EmptyResultPolicy,
}
