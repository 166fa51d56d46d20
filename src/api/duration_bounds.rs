//! The limits of every duration field, in one table. Each entry gives the field's CEL rule in
//! the CRDs (what the API server enforces), the check `faultline validate` and the controller
//! make, and the phrase `kubectl explain` shows (the field's doc comment carries it; a test
//! keeps the two in step).
//!
//! Why limits at all: a duration nobody bounded was how one object took the controller down
//! (`999999999999999999999h`), ran for 11,400 years (`100000000h`) or killed a pod every
//! millisecond. Each limit below is generous for what the field is for, and says why.
//!
//! The CEL rule guards `duration()` with a pattern (`DURATION_PATTERN`): CEL's `duration()`
//! fails on a value past Go's int64 nanoseconds, and the API server then answers with a
//! type-conversion error instead of the field's message. The pattern caps the integer digits
//! per unit so that no string of 32 characters (the fields' maxLength) can overflow, and it is
//! the "written as the CRD expects" check of `faultline validate` too.

use std::{sync::OnceLock, time::Duration};

use schemars::Schema;
use serde_json::json;

use super::duration::{DurationError, format_short, parse_go_duration};

/// The shape of a duration in the CRDs: Go's grammar without sign, with at most as many
/// integer digits per unit as keep any 32-character value below 2^63 ns (31 years per
/// component: 18 digits of ns, 15 of us, 12 of ms, 9 of s, 7 of m, 5 of h). RE2 and Rust's
/// regex crate read it the same way.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]{1,18}(\.[0-9]+)?ns|[0-9]{1,15}(\.[0-9]+)?(us|µs|μs)|[0-9]{1,12}(\.[0-9]+)?ms|[0-9]{1,9}(\.[0-9]+)?s|[0-9]{1,7}(\.[0-9]+)?m|[0-9]{1,5}(\.[0-9]+)?h)+)$";

/// The start of every duration rule's message; `faultline validate` recognises the rules by it.
pub const DURATION_MESSAGE_PREFIX: &str = "must be a duration such as";

/// The lower limit of a duration field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Minimum {
    /// Zero is allowed (and means "none").
    Zero,
    /// Anything above zero.
    AboveZero,
    /// At least this much.
    AtLeast(Duration),
}

/// The limits of one duration field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationBounds {
    pub min: Minimum,
    pub max: Duration,
    /// A typical value, for messages.
    pub example: &'static str,
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
const HOUR: u64 = 3600;

/// `spec.duration`: at least 1s (injecting takes longer than that, so a shorter window is
/// gone before any probe could see it), at most 24h (a longer campaign is a ChaosSchedule of
/// shorter runs, each with its own verdict and revert).
pub const EXPERIMENT_DURATION: DurationBounds = DurationBounds {
    min: Minimum::AtLeast(secs(1)),
    max: secs(24 * HOUR),
    example: "60s",
};
/// `steadyState.recoveryTimeout`: at least 1s (one after-check), at most 1h.
pub const RECOVERY_TIMEOUT: DurationBounds = DurationBounds {
    min: Minimum::AtLeast(secs(1)),
    max: secs(HOUR),
    example: "60s",
};
/// `abort.revertTimeout`: at least 1s, at most 1h; a revert that takes longer is broken, and the
/// experiment should say so (Error, naming the faults left) rather than wait.
pub const REVERT_TIMEOUT: DurationBounds = DurationBounds {
    min: Minimum::AtLeast(secs(1)),
    max: secs(HOUR),
    example: "30s",
};
/// `podKill.interval`: at least 1s (every kill round lists pods and evicts; a millisecond
/// interval is a flood of evictions, killing replacements before they could start), at most
/// 24h (the longest experiment).
pub const POD_KILL_INTERVAL: DurationBounds = DurationBounds {
    min: Minimum::AtLeast(secs(1)),
    max: secs(24 * HOUR),
    example: "30s",
};
/// `networkLatency.latency`: more than 0s, at most 1m. A packet held longer is as lost as a
/// dropped one to TCP (its retransmission timer fires first), while the node keeps every held
/// packet in memory; use networkLoss or networkPartition for a dead link.
pub const LATENCY: DurationBounds = DurationBounds {
    min: Minimum::AboveZero,
    max: secs(60),
    example: "100ms",
};
/// `networkLatency.jitter`: at most 1m, like the latency it varies (and never more than it).
pub const JITTER: DurationBounds = DurationBounds {
    min: Minimum::Zero,
    max: secs(60),
    example: "10ms",
};
/// A probe's `interval`: at least 100ms (each check is a request to a service under test or the
/// API server; more often measures the probe, not the system), at most 1h.
pub const PROBE_INTERVAL: DurationBounds = DurationBounds {
    min: Minimum::AtLeast(Duration::from_millis(100)),
    max: secs(HOUR),
    example: "5s",
};
/// A probe's `timeout`: more than 0s, at most 5m (a check still pending after that has
/// failed).
pub const PROBE_TIMEOUT: DurationBounds = DurationBounds {
    min: Minimum::AboveZero,
    max: secs(5 * 60),
    example: "2s",
};
/// `http.maxLatency`: more than 0s, at most 5m, like the timeout that bounds every check.
pub const HTTP_MAX_LATENCY: DurationBounds = DurationBounds {
    min: Minimum::AboveZero,
    max: secs(5 * 60),
    example: "300ms",
};
/// A GameDay stage's `pauseAfter`: at most 24h (a longer break is two game days).
pub const PAUSE_AFTER: DurationBounds = DurationBounds {
    min: Minimum::Zero,
    max: secs(24 * HOUR),
    example: "5m",
};

/// Every bounded field: its parent's name (empty when the field's own name is unique among
/// duration fields), its name and its limits. Status durations are written by the controller
/// and have no entry.
pub const BOUNDED_FIELDS: &[(&str, &str, &DurationBounds)] = &[
    ("", "duration", &EXPERIMENT_DURATION),
    ("", "recoveryTimeout", &RECOVERY_TIMEOUT),
    ("", "revertTimeout", &REVERT_TIMEOUT),
    ("podKill", "interval", &POD_KILL_INTERVAL),
    ("", "latency", &LATENCY),
    ("", "jitter", &JITTER),
    ("probes", "interval", &PROBE_INTERVAL),
    ("probes", "timeout", &PROBE_TIMEOUT),
    ("", "maxLatency", &HTTP_MAX_LATENCY),
    ("", "pauseAfter", &PAUSE_AFTER),
];

/// The limits of the field at `path` (`spec.faults[0].podKill.interval`), if it is bounded.
pub fn bounds_at(path: &str) -> Option<&'static DurationBounds> {
    let mut segments = path
        .rsplit('.')
        .map(|segment| segment.split('[').next().unwrap_or(segment));
    let field = segments.next()?;
    let parent = segments.next().unwrap_or_default();
    BOUNDED_FIELDS
        .iter()
        .find(|(p, f, _)| *f == field && (p.is_empty() || *p == parent))
        .map(|(_, _, bounds)| *bounds)
}

/// The rule of a duration field without limits (the status fields the controller writes): the
/// CRD's pattern alone.
pub fn format_rule() -> String {
    format!("self.matches('{}')", cel_pattern())
}

/// The message of [`format_rule`].
pub fn format_message() -> String {
    format!("{DURATION_MESSAGE_PREFIX} 500ms, 30s, 5m or 1h30m (units ns, us, ms, s, m, h)")
}

/// A CEL condition that the string `expr` is written as the CRDs expect a duration, so that
/// `duration(expr)` cannot fail (rules across fields guard with it).
pub fn cel_well_formed(expr: &str) -> String {
    format!("{expr}.matches('{}')", cel_pattern())
}

/// [`DURATION_PATTERN`] inside a CEL string literal.
fn cel_pattern() -> String {
    DURATION_PATTERN.replace('\\', r"\\")
}

/// What a duration rule of the CRDs checks: `Some(None)` for [`format_rule`], `Some(limits)`
/// for a bounded field's rule, `None` for any other rule.
fn rule_bounds(rule: &str) -> Option<Option<&'static DurationBounds>> {
    if !rule.starts_with(&format_rule()) {
        return None;
    }
    if rule == format_rule() {
        return Some(None);
    }
    let (_, _, bounds) = BOUNDED_FIELDS
        .iter()
        .find(|(_, _, b)| b.cel_rule() == rule)?;
    Some(Some(*bounds))
}

/// Whether `rule` is one of the duration rules of the CRDs.
pub fn is_duration_rule(rule: &str) -> bool {
    rule_bounds(rule).is_some()
}

/// How the API server judges `value` under the duration rule `rule`, with Go's parser: the
/// local CEL engine reads numbers as `f64` (off by a nanosecond at the limits) and does not know
/// `µs`. `Err` carries the rule's message; `None` when `rule` is not a duration rule.
pub fn judge_duration_rule(rule: &str, value: &str) -> Option<Result<(), String>> {
    let verdict = match rule_bounds(rule)? {
        None if written_as_crd_expects(value) => Ok(()),
        None => Err(format_message()),
        Some(bounds) if written_as_crd_expects(value) && bounds.check(value).is_ok() => Ok(()),
        Some(bounds) => Err(bounds.cel_message()),
    };
    Some(verdict)
}

/// Whether `text` is written as the CRDs expect a duration ([`DURATION_PATTERN`]).
pub fn written_as_crd_expects(text: &str) -> bool {
    static PATTERN: OnceLock<regex::Regex> = OnceLock::new();
    PATTERN
        .get_or_init(|| regex::Regex::new(DURATION_PATTERN).expect("DURATION_PATTERN is valid"))
        .is_match(text)
}

impl DurationBounds {
    /// Parses `text` and checks the limits: what the controller checks. The error names the
    /// value and the limit it breaks.
    pub fn check(&self, text: &str) -> Result<Duration, String> {
        let duration = match parse_go_duration(text) {
            Ok(duration) => duration,
            Err(DurationError::TooLong { .. }) => return Err(self.too_long(text)),
            Err(error) => return Err(error.to_string()),
        };
        self.check_value(text, duration)?;
        Ok(duration)
    }

    /// The limits alone, for a value already parsed from `text`.
    pub fn check_value(&self, text: &str, duration: Duration) -> Result<(), String> {
        if duration > self.max {
            return Err(self.too_long(text));
        }
        match self.min {
            Minimum::AboveZero if duration.is_zero() => Err(format!(
                "{text:?} is zero; it must be more than 0s (e.g. {})",
                self.example
            )),
            Minimum::AtLeast(min) if duration < min => Err(format!(
                "{text:?} is shorter than the minimum of {}",
                format_short(min)
            )),
            _ => Ok(()),
        }
    }

    fn too_long(&self, text: &str) -> String {
        format!(
            "{text:?} is longer than the maximum of {}",
            format_short(self.max)
        )
    }

    /// The limits in words, as the field's documentation gives them: `at least 1s, at most
    /// 24h`.
    pub fn describe(&self) -> String {
        let max = format_short(self.max);
        match self.min {
            Minimum::Zero => format!("at most {max}"),
            Minimum::AboveZero => format!("more than 0s, at most {max}"),
            Minimum::AtLeast(min) => format!("at least {}, at most {max}", format_short(min)),
        }
    }

    /// The CEL rule: written as the CRD expects (which also keeps `duration()` from
    /// overflowing; `&&` stops at the first false), then the limits.
    pub fn cel_rule(&self) -> String {
        let mut rule = format_rule();
        match self.min {
            Minimum::Zero => {}
            Minimum::AboveZero => rule.push_str(" && duration(self) > duration('0s')"),
            Minimum::AtLeast(min) => rule.push_str(&format!(
                " && duration(self) >= duration('{}')",
                format_short(min)
            )),
        }
        rule.push_str(&format!(
            " && duration(self) <= duration('{}')",
            format_short(self.max)
        ));
        rule
    }

    /// The message the API server prints when the rule fails.
    pub fn cel_message(&self) -> String {
        format!(
            "{DURATION_MESSAGE_PREFIX} {}, {} (units ns, us, ms, s, m, h)",
            self.example,
            self.describe()
        )
    }

    /// A schemars transform that puts this field's rule in its schema:
    /// `#[schemars(transform = duration_bounds::LATENCY.in_schema())]`.
    pub fn in_schema(&'static self) -> impl FnMut(&mut Schema) {
        move |schema| {
            schema.insert(
                "x-kubernetes-validations".into(),
                json!([{ "rule": self.cel_rule(), "message": self.cel_message() }]),
            );
        }
    }
}

#[cfg(test)]
#[path = "duration_bounds_tests.rs"]
mod tests;
