//! The Prometheus check: one instant query through the HTTP API (`/api/v1/query`), its result
//! compared with a number.
//!
//! - A scalar is one value; every sample of a vector must pass.
//! - No samples at all is judged by `onEmpty` (default `Fail`: a dead exporter must not look
//!   healthy).
//! - A `NaN` sample (what `errors / requests` gives when there were no requests) carries no
//!   information either, so it is judged by `onEmpty` too rather than by IEEE comparison,
//!   where `NaN != 1` would pass and every other operator fail.
//! - Prometheus's own error text (`bad_data: 1:5: parse error: ...`) is reported as it came,
//!   but for control characters, which are escaped ([`redact::printable`]).
//! - The server's URL is shown redacted ([`redact::url`]): it may carry a password.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use reqwest::Url;
use serde::Deserialize;

use super::body::{self, BodyError};
use super::redact;
use super::{Check, CheckContext, CheckOutcome, describe_request_error, http_client};

/// The longest answer to a query that is read. An instant-vector sample is 100 to 200 bytes of
/// JSON, so this holds some 20,000 series, each of which must pass: a steady-state query is
/// an aggregate, not a dump. Reading stops here, so a server that streams without end costs at
/// most this (plus its parse) per check, never the controller's memory.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
use crate::api::{ComparisonOperator, EmptyResultPolicy, PrometheusProbe};

/// A ready-to-run [`PrometheusProbe`].
#[derive(Clone, Debug)]
pub struct PrometheusCheck {
    client: reqwest::Client,
    /// `<server>/api/v1/query?query=...`, built once.
    url: Url,
    query: String,
    operator: ComparisonOperator,
    value: f64,
    on_empty: EmptyResultPolicy,
}

/// The parts of Prometheus's answer we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<QueryData>,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// One number of the result: its labels (as PromQL prints them) and value as Prometheus wrote
/// it.
#[derive(Debug, PartialEq)]
struct Sample {
    series: String,
    text: String,
}

impl PrometheusCheck {
    pub fn new(spec: &PrometheusProbe) -> Result<Self, String> {
        let shown_url = redact::url_text(&spec.url);
        let mut url =
            Url::parse(&spec.url).map_err(|e| format!("prometheus.url {shown_url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "prometheus.url {shown_url:?}: must be http or https"
            ));
        }
        // Keep a path prefix (Prometheus behind `--web.route-prefix`, a proxy).
        let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
        url.set_path(&path);
        url.query_pairs_mut()
            .clear()
            .append_pair("query", &spec.query);
        if !spec.value.is_finite() {
            return Err(format!(
                "prometheus.value must be a finite number, not {}",
                spec.value
            ));
        }
        Ok(PrometheusCheck {
            client: http_client(false)?,
            url,
            query: spec.query.clone(),
            operator: spec.operator,
            value: spec.value,
            on_empty: spec.on_empty,
        })
    }

    async fn query(&self) -> Result<QueryData, String> {
        let response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| self.describe(&e))?;
        let status = response.status();
        let body = match body::read_capped(response, MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge { cap }) => {
                return Err(format!(
                    "Prometheus's answer to query {:?} exceeds {} ({}); make the query return fewer series, e.g. aggregate with sum, max or topk",
                    self.query,
                    body::size(cap),
                    self.server()
                ));
            }
            Err(BodyError::Read(e)) => return Err(self.describe(&e)),
        };
        let body = String::from_utf8_lossy(&body);
        match serde_json::from_str::<ApiResponse>(&body) {
            Ok(ApiResponse {
                status: s,
                data: Some(data),
                ..
            }) if s == "success" => Ok(data),
            Ok(ApiResponse {
                error_type, error, ..
            }) => Err(format!(
                "Prometheus rejected query {:?}: {}{}",
                self.query,
                error_type
                    .map(|t| format!("{}: ", redact::printable(&t)))
                    .unwrap_or_default(),
                error.map_or_else(
                    || format!("HTTP {status} with no error text"),
                    |e| redact::printable(&e)
                )
            )),
            Err(_) => Err(format!(
                "Prometheus answered HTTP {status} with something other than its JSON API ({}): {:?}",
                self.server(),
                body.chars().take(200).collect::<String>()
            )),
        }
    }

    fn describe(&self, error: &reqwest::Error) -> String {
        let described = describe_request_error(error, &self.server());
        // The cause is reqwest's or hyper's text, which may quote the URL it was sent to.
        described.replace(self.url.as_str(), &redact::url(&self.url))
    }

    /// The server part of the URL, for messages (the query is quoted separately), its password
    /// masked.
    fn server(&self) -> String {
        let mut server = self.url.clone();
        server.set_query(None);
        redact::url(&server)
    }

    /// Judges a successful answer.
    fn judge(&self, data: QueryData, latency: Duration) -> CheckOutcome {
        let parsed = match data.result_type.as_str() {
            "scalar" => serde_json::from_value::<(f64, String)>(data.result).map(|(_, text)| {
                vec![Sample {
                    series: String::new(),
                    text,
                }]
            }),
            "vector" => serde_json::from_value::<Vec<VectorSample>>(data.result).map(|samples| {
                samples
                    .into_iter()
                    .map(|s| Sample {
                        series: series(&s.metric),
                        text: s.value.1,
                    })
                    .collect()
            }),
            other => {
                let kind = if other == "matrix" {
                    "range vector"
                } else {
                    other
                };
                return CheckOutcome::fail(
                    format!(
                        "query {:?} returned a {kind}; it must return a scalar or an instant vector",
                        self.query
                    ),
                    None,
                    latency,
                );
            }
        };
        let samples = match parsed {
            Ok(samples) => samples,
            Err(e) => {
                return CheckOutcome::fail(
                    format!("cannot read Prometheus's {} result: {e}", data.result_type),
                    None,
                    latency,
                );
            }
        };
        judge_samples(
            &self.query,
            &samples,
            self.operator,
            self.value,
            self.on_empty,
            latency,
        )
    }
}

impl Check for PrometheusCheck {
    fn target(&self) -> String {
        format!("query {:?} at {}", self.query, self.server())
    }

    async fn check(&self, _ctx: &CheckContext<'_>) -> CheckOutcome {
        let started = Instant::now();
        let result = self.query().await;
        let latency = started.elapsed();
        match result {
            Ok(data) => self.judge(data, latency),
            Err(error) => CheckOutcome::fail(error, None, latency),
        }
    }
}

/// `up{instance="a:1", job="app"}`, `{job="app"}`, or `` for a scalar.
fn series(metric: &BTreeMap<String, String>) -> String {
    let name = metric.get("__name__").cloned().unwrap_or_default();
    let labels: Vec<String> = metric
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    if labels.is_empty() {
        name
    } else {
        format!("{name}{{{}}}", labels.join(", "))
    }
}

/// The verdict on a result: every sample must pass; no data (no samples, or only NaN) is
/// judged by `on_empty`.
fn judge_samples(
    query: &str,
    samples: &[Sample],
    operator: ComparisonOperator,
    expected: f64,
    on_empty: EmptyResultPolicy,
    latency: Duration,
) -> CheckOutcome {
    let no_data = |what: String, value: Option<String>| match on_empty {
        EmptyResultPolicy::Pass => {
            CheckOutcome::pass(value.unwrap_or_else(|| "no samples".into()), latency)
        }
        EmptyResultPolicy::Fail => CheckOutcome::fail(
            format!("query {query:?} {what} (onEmpty: Fail)"),
            value,
            latency,
        ),
    };
    if samples.is_empty() {
        return no_data("returned no samples".into(), None);
    }
    let value = summary(samples);
    let mut failing = Vec::new();
    let mut nan = Vec::new();
    for sample in samples {
        // Prometheus writes NaN, +Inf and -Inf, all of which Rust parses.
        match sample.text.parse::<f64>() {
            Ok(v) if v.is_nan() => nan.push(sample),
            Ok(v) if operator.holds(v, expected) => {}
            Ok(_) => failing.push(format!("{}{}", sample.text, for_series(&sample.series))),
            Err(_) => failing.push(format!(
                "{:?} (not a number){}",
                sample.text,
                for_series(&sample.series)
            )),
        }
    }
    if let Some(first) = failing.first() {
        let more = match failing.len() {
            1 => String::new(),
            n => format!(" (and {} more of {} samples)", n - 1, samples.len()),
        };
        return CheckOutcome::fail(
            format!(
                "query {query:?} returned {first}, expected {} {expected}{more}",
                operator.symbol()
            ),
            Some(value),
            latency,
        );
    }
    if let Some(first) = nan.first() {
        return no_data(
            format!("returned NaN{}", for_series(&first.series)),
            Some(value),
        );
    }
    CheckOutcome::pass(value, latency)
}

fn for_series(series: &str) -> String {
    if series.is_empty() {
        String::new()
    } else {
        format!(" for {series}")
    }
}

/// The value for the timeline: the number itself, or the range over several samples.
fn summary(samples: &[Sample]) -> String {
    if let [only] = samples {
        return only.text.clone();
    }
    let numbers: Vec<f64> = samples
        .iter()
        .filter_map(|s| s.text.parse::<f64>().ok())
        .filter(|v| !v.is_nan())
        .collect();
    let min = numbers.iter().copied().fold(f64::INFINITY, f64::min);
    let max = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if numbers.is_empty() {
        format!("{} samples, all NaN", samples.len())
    } else {
        format!("{} samples, min {min}, max {max}", samples.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComparisonOperator::*;
    use EmptyResultPolicy::{Fail, Pass};

    fn samples(values: &[(&str, &str)]) -> Vec<Sample> {
        values
            .iter()
            .map(|(series, text)| Sample {
                series: series.to_string(),
                text: text.to_string(),
            })
            .collect()
    }

    fn judge(
        values: &[(&str, &str)],
        op: ComparisonOperator,
        expected: f64,
        on_empty: EmptyResultPolicy,
    ) -> CheckOutcome {
        judge_samples(
            "q",
            &samples(values),
            op,
            expected,
            on_empty,
            Duration::ZERO,
        )
    }

    #[test]
    fn every_sample_must_pass() {
        // (samples, operator, expected, ok, piece of the error)
        type Row<'a> = (
            &'a [(&'a str, &'a str)],
            ComparisonOperator,
            f64,
            bool,
            &'a str,
        );
        let rows: &[Row] = &[
            (&[("", "1")], Equal, 1.0, true, ""),
            (&[("", "0.5")], Less, 1.0, true, ""),
            (&[("", "2")], Less, 1.0, false, "returned 2, expected < 1"),
            (
                &[("a", "1"), ("b", "3")],
                LessOrEqual,
                2.0,
                false,
                "returned 3 for b, expected <= 2",
            ),
            (
                &[("a", "3"), ("b", "4")],
                Less,
                2.0,
                false,
                "(and 1 more of 2 samples)",
            ),
            (&[("a", "3"), ("b", "4")], Greater, 2.0, true, ""),
            (&[("", "+Inf")], Greater, 1e9, true, ""),
            (&[("", "-Inf")], GreaterOrEqual, 0.0, false, "returned -Inf"),
            (&[("", "1")], NotEqual, 1.0, false, "expected != 1"),
        ];
        for (values, op, expected, ok, piece) in rows {
            let outcome = judge(values, *op, *expected, Fail);
            assert_eq!(outcome.ok, *ok, "{values:?} {op:?} {expected}: {outcome:?}");
            let error = outcome.error.unwrap_or_default();
            assert!(error.contains(piece), "{error:?} lacks {piece:?}");
        }
    }

    #[test]
    fn no_samples_follow_on_empty() {
        let fail = judge(&[], Equal, 1.0, Fail);
        assert!(!fail.ok);
        assert_eq!(
            fail.error.as_deref(),
            Some("query \"q\" returned no samples (onEmpty: Fail)")
        );
        assert!(judge(&[], Equal, 1.0, Pass).ok);
    }

    #[test]
    fn nan_counts_as_no_data_even_for_not_equal() {
        let fail = judge(&[("{job=\"a\"}", "NaN")], NotEqual, 1.0, Fail);
        assert!(!fail.ok);
        assert!(fail.error.unwrap().contains("returned NaN for {job=\"a\"}"));
        assert!(judge(&[("", "NaN")], Less, 0.1, Pass).ok);
        // A real failure next to a NaN is still a failure, whatever onEmpty says.
        assert!(!judge(&[("a", "NaN"), ("b", "5")], Less, 1.0, Pass).ok);
    }

    #[test]
    fn value_summarises_several_samples() {
        assert_eq!(summary(&samples(&[("", "7")])), "7");
        assert_eq!(
            summary(&samples(&[("a", "1"), ("b", "NaN"), ("c", "3")])),
            "3 samples, min 1, max 3"
        );
    }

    #[test]
    fn series_prints_like_promql() {
        let metric = BTreeMap::from([
            ("__name__".to_string(), "up".to_string()),
            ("job".to_string(), "app".to_string()),
            ("instance".to_string(), "a:1".to_string()),
        ]);
        assert_eq!(series(&metric), "up{instance=\"a:1\", job=\"app\"}");
        assert_eq!(series(&BTreeMap::new()), "");
    }

    #[test]
    fn answers_of_every_result_type_are_read() {
        crate::cli::install_crypto_provider();
        let vector: ApiResponse = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"a"},"value":[1700000000.5,"2"]}]}}"#,
        ).unwrap();
        let check = PrometheusCheck::new(
            &serde_yaml::from_str("{url: 'http://p/', query: q, operator: '<', value: 3}").unwrap(),
        )
        .unwrap();
        assert!(check.judge(vector.data.unwrap(), Duration::ZERO).ok);
        let scalar: ApiResponse = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}"#,
        )
        .unwrap();
        let nan = check.judge(scalar.data.unwrap(), Duration::ZERO);
        assert!(nan.error.unwrap().contains("returned NaN"));
        let matrix: ApiResponse = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
        )
        .unwrap();
        let matrix = check.judge(matrix.data.unwrap(), Duration::ZERO);
        assert!(matrix.error.unwrap().contains("returned a range vector"));
        let error: ApiResponse = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"1:4: parse error: unexpected"}"#,
        )
        .unwrap();
        assert_eq!(error.error_type.as_deref(), Some("bad_data"));
    }

    #[test]
    fn the_query_url_keeps_a_path_prefix() {
        crate::cli::install_crypto_provider();
        let spec: PrometheusProbe = serde_yaml::from_str(
            "{url: 'http://prom:9090/prom/', query: 'sum(up) > 1', operator: '>=', value: 1}",
        )
        .unwrap();
        let check = PrometheusCheck::new(&spec).unwrap();
        assert_eq!(check.url.path(), "/prom/api/v1/query");
        assert_eq!(check.url.query(), Some("query=sum%28up%29+%3E+1"));
    }
}
