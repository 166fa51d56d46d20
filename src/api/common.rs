//! Small value types shared by every faultline resource.

use std::{borrow::Cow, fmt, time::Duration};

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::duration::{format_go_duration, parse_go_duration};
use super::duration_bounds::{self, DurationBounds};

/// A duration written the way Kubernetes writes them (`metav1.Duration`, Go's
/// `time.ParseDuration`): `500ms`, `30s`, `5m`, `1h30m`.
///
/// It is kept as the user's string so that an object with a malformed duration still
/// deserializes: the controller can then report *which* field is wrong in a status condition
/// instead of failing to read the object at all. Use [`GoDuration::parse`] (or
/// [`GoDuration::parse_within`] for a bounded field) at the point of use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    /// Parses the duration (never panics); the error names the value and says what was wrong.
    pub fn parse(&self) -> Result<Duration, String> {
        parse_go_duration(&self.0).map_err(|e| e.to_string())
    }

    /// Parses the duration and checks the field's limits; the error is prefixed with `field`
    /// (`spec.duration: "25h" is longer than the maximum of 24h`).
    pub fn parse_within(&self, field: &str, bounds: &DurationBounds) -> Result<Duration, String> {
        bounds
            .check(&self.0)
            .map_err(|problem| format!("{field}: {problem}"))
    }

    /// Formats a duration the way Go prints it (`1m30s`, `250ms`), to millisecond precision
    /// (microseconds below one millisecond), for status fields and reports.
    pub fn from_duration(duration: Duration) -> Self {
        let nanos = duration.as_nanos();
        let unit = if nanos >= 1_000_000 { 1_000_000 } else { 1_000 };
        let rounded = (nanos / unit) * unit;
        GoDuration(format_go_duration(Duration::from_nanos(
            u64::try_from(rounded).unwrap_or(u64::MAX),
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for GoDuration {
    fn from(value: &str) -> Self {
        GoDuration(value.to_string())
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            // Bounded fields replace this with their own rule (`DurationBounds::in_schema`).
            "x-kubernetes-validations": [{
                "rule": duration_bounds::format_rule(),
                "message": duration_bounds::format_message(),
            }],
        })
    }
}

/// Whether a condition holds, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    #[default]
    Unknown,
}

/// A status condition in the standard Kubernetes shape, so `kubectl wait --for=condition=X`
/// works on every faultline resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type in PascalCase, for example `Complete`, `Injected`,
    /// `HypothesisHolding` or `Reverted`.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// A PascalCase word saying why the condition is in this state, for example `Passed` or
    /// `SteadyStateNotMet`.
    #[serde(default)]
    pub reason: String,
    /// A sentence for humans: what happened and, when something is wrong, what to do.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (not when it was last checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A pod, identified so that a replacement with the same name is not mistaken for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID. A pod recreated under the same name has a new UID and is a different target.
    pub uid: String,
}

/// A reference to another object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// The object's UID, when known; used to tell a recreated object from the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations_and_explains_bad_ones() {
        let parse = |text: &str| GoDuration::from(text).parse();
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        let err = parse("fast").unwrap_err();
        assert!(err.contains("\"fast\" is not a duration (try 30s"), "{err}");
        assert!(parse("-5s").unwrap_err().contains("negative"));
    }

    #[test]
    fn parse_within_names_the_field_and_the_limit() {
        let bounds = &super::super::duration_bounds::EXPERIMENT_DURATION;
        let parse = |text: &str| GoDuration::from(text).parse_within("spec.duration", bounds);
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            parse("999999999999999999999h").unwrap_err(),
            "spec.duration: \"999999999999999999999h\" is longer than the maximum of 24h"
        );
        assert_eq!(
            parse("0").unwrap_err(),
            "spec.duration: \"0\" is shorter than the minimum of 1s"
        );
    }

    #[test]
    fn formats_durations_like_go() {
        assert_eq!(
            GoDuration::from_duration(Duration::from_millis(1500)).0,
            "1.5s"
        );
        assert_eq!(
            GoDuration::from_duration(Duration::from_secs(90)).0,
            "1m30s"
        );
        assert_eq!(
            GoDuration::from_duration(Duration::from_millis(250)).0,
            "250ms"
        );
        assert_eq!(
            GoDuration::from_duration(Duration::from_secs(7200)).0,
            "2h0m0s"
        );
        assert_eq!(
            GoDuration::from_duration(Duration::from_millis(61_050)).0,
            "1m1.05s"
        );
        assert_eq!(GoDuration::from_duration(Duration::ZERO).0, "0s");
        assert_eq!(
            GoDuration::from_duration(Duration::from_nanos(812_400)).0,
            "812µs"
        );
        assert_eq!(
            GoDuration::from_duration(Duration::from_nanos(1_234_567_891)).0,
            "1.234s"
        );
    }
}
