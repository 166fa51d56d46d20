//! The HTTP check: send one request, judge status, latency and body.
//!
//! Everything that can be wrong with the spec (URL, method, headers, regex, durations) is
//! found when the check is built; a check itself only fails because of what the service did.

use std::time::{Duration, Instant};

use regex::Regex;
use reqwest::{
    Method, Url,
    header::{HeaderMap, HeaderName, HeaderValue},
};

use super::body::{self, BodyError};
use super::redact;
use super::{Check, CheckContext, CheckOutcome, describe_request_error, http_client, millis};
use crate::api::{GoDuration, HttpProbe, duration_bounds::HTTP_MAX_LATENCY};

/// The longest body `bodyRegex` is matched against: far more than any health page, and the
/// most a service that streams without end can make the controller hold for one check. A
/// longer body fails the check (the regex cannot be judged on part of it); without
/// `bodyRegex` the body is read up to this much, for the latency, and not kept.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How much of a body a failure message quotes.
const BODY_QUOTE_CHARS: usize = 120;

/// A ready-to-send [`HttpProbe`].
#[derive(Clone, Debug)]
pub struct HttpCheck {
    client: reqwest::Client,
    method: Method,
    url: Url,
    /// `url` with its secrets masked: the only form of it a message may carry.
    shown_url: String,
    headers: HeaderMap,
    body: Option<String>,
    expected_status: Vec<u16>,
    body_regex: Option<Regex>,
    max_latency: Option<Duration>,
}

impl HttpCheck {
    /// Parses the spec; the error names the field that is wrong.
    pub fn new(spec: &HttpProbe) -> Result<Self, String> {
        let shown_url = redact::url_text(&spec.url);
        let url = Url::parse(&spec.url).map_err(|e| format!("http.url {shown_url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("http.url {shown_url:?}: must be http or https"));
        }
        let method = Method::from_bytes(spec.method.as_bytes())
            .map_err(|_| format!("http.method {:?} is not an HTTP method", spec.method))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &spec.headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!(
                    "http.headers: {name:?} is not a valid header name: use an HTTP token (letters, digits and !#$%&'*+-.^_`|~, no spaces or colons)"
                )
            })?;
            // The value itself stays out of the message: it may be a credential.
            let value = HeaderValue::from_str(value).map_err(|_| {
                format!(
                    "http.headers: the value of {name:?} has a control character (a CR or LF would start another header); only tab is allowed"
                )
            })?;
            headers.insert(header, value);
        }
        let expected_status = spec
            .expected_status
            .iter()
            .map(|&code| {
                u16::try_from(code)
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| format!("http.expectedStatus: {code} is not an HTTP status"))
            })
            .collect::<Result<_, _>>()?;
        let body_regex = spec
            .body_regex
            .as_deref()
            .map(|re| Regex::new(re).map_err(|e| format!("http.bodyRegex /{re}/: {e}")))
            .transpose()?;
        let max_latency = spec
            .max_latency
            .as_ref()
            .map(|d| {
                HTTP_MAX_LATENCY
                    .check(d.as_str())
                    .map_err(|e| format!("http.maxLatency {e}"))
            })
            .transpose()?;
        Ok(HttpCheck {
            client: http_client(spec.insecure_skip_verify)?,
            method,
            url,
            shown_url,
            headers,
            body: spec.body.clone(),
            expected_status,
            body_regex,
            max_latency,
        })
    }

    /// The status and, when `bodyRegex` needs it, the body; or the reason there is none.
    async fn exchange(&self) -> Result<(u16, Option<String>), String> {
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let response = request.send().await.map_err(|e| self.describe(&e))?;
        let status = response.status().as_u16();
        if self.body_regex.is_none() {
            body::drain_capped(response, MAX_BODY_BYTES)
                .await
                .map_err(|e| format!("status {status}, {}", self.describe(&e)))?;
            return Ok((status, None));
        }
        match body::read_capped(response, MAX_BODY_BYTES).await {
            Ok(body) => Ok((status, Some(String::from_utf8_lossy(&body).into_owned()))),
            Err(BodyError::TooLarge { cap }) => Err(format!(
                "status {status}, response body exceeds {}; bodyRegex is only matched against bodies up to {} ({})",
                body::size(cap),
                body::size(cap),
                self.shown_url
            )),
            Err(BodyError::Read(e)) => Err(format!("status {status}, {}", self.describe(&e))),
        }
    }

    fn describe(&self, error: &reqwest::Error) -> String {
        let described = describe_request_error(error, &self.shown_url);
        // The cause is reqwest's or hyper's text, which may quote the URL it was sent to.
        if self.shown_url != self.url.as_str() {
            described.replace(self.url.as_str(), &self.shown_url)
        } else {
            described
        }
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expected_status.contains(&status)
        }
    }

    fn expected_status_text(&self) -> String {
        if self.expected_status.is_empty() {
            "2xx".into()
        } else {
            let codes: Vec<String> = self.expected_status.iter().map(u16::to_string).collect();
            codes.join(" or ")
        }
    }
}

impl Check for HttpCheck {
    fn target(&self) -> String {
        format!("{} {}", self.method, self.shown_url)
    }

    async fn check(&self, _ctx: &CheckContext<'_>) -> CheckOutcome {
        let started = Instant::now();
        let result = self.exchange().await;
        let latency = started.elapsed();
        let (status, body) = match result {
            Ok(answer) => answer,
            Err(error) => return CheckOutcome::fail(error, None, latency),
        };
        let value = format!("{status} in {}", millis(latency));
        // Every expectation is judged, so one message lists everything that was wrong.
        let mut problems = Vec::new();
        if !self.status_ok(status) {
            problems.push(format!(
                "status {status}, expected {}",
                self.expected_status_text()
            ));
        }
        if let Some(max) = self.max_latency
            && latency > max
        {
            problems.push(format!(
                "latency {} over maxLatency {}",
                millis(latency),
                GoDuration::from_duration(max)
            ));
        }
        if let (Some(re), Some(body)) = (&self.body_regex, &body)
            && !re.is_match(body)
        {
            problems.push(format!(
                "body did not match /{}/ (body: {:?})",
                re.as_str(),
                quote(body)
            ));
        }
        if problems.is_empty() {
            CheckOutcome::pass(value, latency)
        } else {
            CheckOutcome::fail(problems.join("; "), Some(value), latency)
        }
    }
}

/// The start of a body, for a message.
fn quote(body: &str) -> String {
    let mut quoted: String = body.chars().take(BODY_QUOTE_CHARS).collect();
    if quoted.len() < body.len() {
        quoted.push('…');
    }
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> HttpCheck {
        crate::cli::install_crypto_provider();
        HttpCheck::new(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn empty_expected_status_means_any_2xx() {
        let c = check("{url: 'http://x/'}");
        assert!(c.status_ok(200) && c.status_ok(204) && c.status_ok(299));
        assert!(!c.status_ok(301) && !c.status_ok(503));
        assert_eq!(c.expected_status_text(), "2xx");
    }

    #[test]
    fn listed_statuses_are_the_only_successes() {
        let c = check("{url: 'http://x/', expectedStatus: [200, 301]}");
        assert!(c.status_ok(301));
        assert!(!c.status_ok(204));
        assert_eq!(c.expected_status_text(), "200 or 301");
    }

    #[test]
    fn out_of_range_status_is_rejected() {
        crate::cli::install_crypto_provider();
        let spec = serde_yaml::from_str("{url: 'http://x/', expectedStatus: [99]}").unwrap();
        assert!(HttpCheck::new(&spec).unwrap_err().contains("99"));
    }

    #[test]
    fn the_controller_refuses_what_the_crd_refuses_for_an_object_that_bypassed_it() {
        // The same cases as tests/fixtures/differential/probes-hostile.yaml: the CRD's bounds
        // (api::bounds::http_status_items, http_headers) and this check must agree.
        crate::cli::install_crypto_provider();
        let refused = [
            (
                "{url: 'http://x/', expectedStatus: [-1]}",
                "expectedStatus: -1",
            ),
            (
                "{url: 'http://x/', expectedStatus: [0]}",
                "expectedStatus: 0",
            ),
            (
                "{url: 'http://x/', expectedStatus: [600]}",
                "expectedStatus: 600",
            ),
            (
                "{url: 'http://x/', expectedStatus: [65536]}",
                "expectedStatus: 65536",
            ),
            (
                r#"{url: 'http://x/', headers: {X-Test: "a\r\nInjected: yes"}}"#,
                "X-Test",
            ),
            (r#"{url: 'http://x/', headers: {X-Test: "a\0b"}}"#, "X-Test"),
            (r#"{url: 'http://x/', headers: {X-Test: "a\eb"}}"#, "X-Test"),
            (
                r#"{url: 'http://x/', headers: {X-Test: "a\x7Fb"}}"#,
                "X-Test",
            ),
            (
                r#"{url: 'http://x/', headers: {"Bad Header:": x}}"#,
                "Bad Header:",
            ),
            (r#"{url: 'http://x/', headers: {"X-Tëst": x}}"#, "X-Tëst"),
            (r#"{url: 'http://x/', headers: {"": x}}"#, "header name"),
        ];
        for (yaml, piece) in refused {
            let spec: HttpProbe = serde_yaml::from_str(yaml).unwrap();
            let err = HttpCheck::new(&spec).unwrap_err();
            assert!(err.contains(piece), "{yaml}: {err}");
        }
        let accepted = [
            "{url: 'http://x/', expectedStatus: [100, 599]}",
            r#"{url: 'http://x/', headers: {X-Tab: "a\tb  c", X-Empty: "", X-Utf8: "café"}}"#,
            r#"{url: 'http://x/', headers: {"X-Weird!#$%&'*+.^_`|~": x}}"#,
        ];
        for yaml in accepted {
            let spec: HttpProbe = serde_yaml::from_str(yaml).unwrap();
            assert!(HttpCheck::new(&spec).is_ok(), "{yaml}");
        }
    }

    #[test]
    fn an_unparsable_url_is_quoted_without_its_password() {
        crate::cli::install_crypto_provider();
        let spec: HttpProbe =
            serde_yaml::from_str("{url: 'http://admin:s3cret@exa mple/?token=t'}").unwrap();
        let err = HttpCheck::new(&spec).unwrap_err();
        assert!(
            !err.contains("s3cret") && err.contains("admin:xxxxx@"),
            "{err}"
        );
        assert!(
            !err.contains("token=t'") && err.contains("token=xxxxx"),
            "{err}"
        );
    }

    #[test]
    fn long_bodies_are_quoted_shortened() {
        let body = "x".repeat(500);
        assert_eq!(quote(&body).chars().count(), BODY_QUOTE_CHARS + 1);
        assert_eq!(quote("ok"), "ok");
    }
}
