//! Duration fields in `faultline validate`. The verdict is the API server's: the CRD's pattern,
//! Go's parser and the field's limits (`api::duration_bounds`), never the local CEL engine's
//! (which reads numbers as `f64` and does not know `µs`). The message names the value and says
//! what to write instead. Pure.

use crate::api::{
    DurationError,
    duration_bounds::{bounds_at, written_as_crd_expects},
    parse_go_duration,
};

/// What is wrong with the duration `text` at `path` (`spec.faults[0].podKill.interval`), as the
/// API server would reject it; `None` when it would accept it.
pub fn problem(path: &str, text: &str) -> Option<String> {
    let field = path.rsplit(['.', '[']).next().unwrap_or(path);
    let bounds = bounds_at(path);
    let duration = match parse_go_duration(text) {
        Ok(duration) => duration,
        // Written as a duration, only far too long: say how long it may be.
        Err(DurationError::TooLong { .. }) => {
            return Some(match bounds {
                Some(bounds) => bounds.check(text).err()?,
                None => DurationError::TooLong { text: text.into() }.to_string(),
            });
        }
        Err(_) => return Some(duration_problem(text, field)),
    };
    if let Some(problem) = bounds.and_then(|b| b.check_value(text, duration).err()) {
        return Some(problem);
    }
    (!written_as_crd_expects(text)).then(|| duration_problem(text, field))
}

/// `"fast" is not a duration (try 200ms)`: names the value and suggests what was probably
/// meant. `field` picks the example: latencies are milliseconds, everything else seconds.
pub fn duration_problem(text: &str, field: &str) -> String {
    let short = matches!(field, "latency" | "jitter" | "maxLatency" | "timeout");
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase().replace(' ', "");
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let unit_fix = match unit {
        "" => Some(if short { "ms" } else { "s" }),
        "sec" | "secs" | "second" | "seconds" => Some("s"),
        "min" | "mins" | "minute" | "minutes" => Some("m"),
        "hr" | "hrs" | "hour" | "hours" => Some("h"),
        "msec" | "msecs" | "millis" | "milliseconds" => Some("ms"),
        _ => None,
    };
    if text.starts_with('-') {
        return format!("{text:?} is negative; durations must be zero or more");
    }
    let suggestion = match (number.is_empty(), unit_fix, unit) {
        (false, Some(fix), _) => format!("{number}{fix}"),
        (false, None, "d" | "day" | "days") => {
            let days: f64 = number.parse().unwrap_or(1.0);
            format!("{}h; Go durations have no days", days * 24.0)
        }
        _ if lower.starts_with("pt") => {
            "a Go duration such as 5m or 1h30m instead of ISO 8601".to_string()
        }
        _ if short => "200ms".to_string(),
        _ => "30s".to_string(),
    };
    if parse_go_duration(text).is_ok() {
        // Go reads it, but the CRD's pattern does not (a sign, `.5s`, a run of leading zeros).
        return format!("{text:?} is not written as the CRD expects (try {suggestion})");
    }
    format!("{text:?} is not a duration (try {suggestion})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poison_values_are_too_long_not_malformed() {
        assert_eq!(
            problem("spec.duration", "999999999999999999999h").as_deref(),
            Some("\"999999999999999999999h\" is longer than the maximum of 24h")
        );
        assert_eq!(
            problem("spec.duration", "100000000h").as_deref(),
            Some("\"100000000h\" is longer than the maximum of 24h")
        );
        assert_eq!(
            problem("status.abortLatency", "999999999999999999999h").as_deref(),
            Some(
                "\"999999999999999999999h\" is too long: no duration can exceed 2562047h47m16.854775807s"
            )
        );
    }

    #[test]
    fn limits_come_from_the_field_and_hints_from_the_spelling() {
        assert_eq!(
            problem("spec.faults[0].podKill.interval", "1ms").as_deref(),
            Some("\"1ms\" is shorter than the minimum of 1s")
        );
        assert_eq!(
            problem("spec.duration", "0").as_deref(),
            Some("\"0\" is shorter than the minimum of 1s")
        );
        assert_eq!(
            problem("spec.duration", "+5s").as_deref(),
            Some("\"+5s\" is not written as the CRD expects (try 30s)")
        );
        assert_eq!(
            problem("spec.duration", "5 minutes").as_deref(),
            Some("\"5 minutes\" is not a duration (try 5m)")
        );
        assert_eq!(problem("spec.duration", "1440m"), None);
        assert_eq!(
            problem("spec.faults[0].networkLatency.latency", "5µs"),
            None
        );
    }
}
