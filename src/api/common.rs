//! Small value types shared by every faultline resource.

use std::{borrow::Cow, fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The CEL rule every duration field carries. Kept in one place so the CRD, `faultline validate`
/// and the tests agree on what a duration is.
pub(crate) const DURATION_RULE: &str =
    r"self.matches('^(0|([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$')";
pub(crate) const DURATION_MESSAGE: &str =
    "must be a duration such as 500ms, 30s, 5m or 1h30m (units ns, us, ms, s, m, h)";

/// A duration written the way Kubernetes writes them (`metav1.Duration`, Go's
/// `time.ParseDuration`): `500ms`, `30s`, `5m`, `1h30m`.
///
/// It is kept as the user's string so that an object with a malformed duration still
/// deserializes: the controller can then report *which* field is wrong in a status condition
/// instead of failing to read the object at all. Use [`GoDuration::parse`] at the point of use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    /// Parses the duration; the error says what was wrong and what a valid value looks like.
    pub fn parse(&self) -> Result<Duration, String> {
        parse_go_duration(&self.0)
    }

    /// Formats a duration the way Go prints it (`1m30s`, `250ms`), for status fields.
    pub fn from_duration(duration: Duration) -> Self {
        GoDuration(format_go_duration(duration))
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

/// Parses a Go duration string; negative durations are rejected because no faultline field
/// means anything with one.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let parsed = kube::core::Duration::from_str(text)
        .map_err(|_| format!("{text:?} is not a duration (try 30s, 5m or 1h30m)"))?;
    if parsed.is_negative() {
        return Err(format!(
            "{text:?} is negative; durations must be zero or more"
        ));
    }
    Ok(parsed.into())
}

/// Formats like Go's `time.Duration.String()`, to millisecond precision: `250ms`, `1.5s`,
/// `1m30s`, `2h0m0s`.
pub fn format_go_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return if duration.is_zero() {
            "0s".into()
        } else {
            format!("{}µs", duration.as_micros())
        };
    }
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let (hours, rest) = (millis / 3_600_000, millis % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, frac) = (rest / 1000, rest % 1000);
    let seconds = if frac == 0 {
        format!("{seconds}s")
    } else {
        format!("{seconds}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    match (hours, minutes) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
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
            "x-kubernetes-validations": [{ "rule": DURATION_RULE, "message": DURATION_MESSAGE }],
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
        assert_eq!(parse_go_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        let err = parse_go_duration("fast").unwrap_err();
        assert!(err.contains("\"fast\" is not a duration (try 30s"), "{err}");
        assert!(parse_go_duration("-5s").unwrap_err().contains("negative"));
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
    }
}
