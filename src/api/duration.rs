//! Go's duration notation (`time.ParseDuration`, what `metav1.Duration` and CEL's `duration()`
//! read): parsing and printing, with checked arithmetic. Pure; never panics.
//!
//! Why our own parser: kube's `Duration::from_str` goes through `f64` seconds and panics on
//! overflow ("cannot convert float seconds to Duration"), and silently turns some huge values
//! into zero. A manifest is user input; one bad field must give an error naming it, not take
//! the process down.
//!
//! Grammar (Go's): an optional sign, then `0` alone, or one or more of a decimal number (digits,
//! an optional fraction; `5.`, `.5` and `5.5` all count) followed by a unit: `ns`, `us`, `µs`
//! (U+00B5), `μs` (U+03BC), `ms`, `s`, `m`, `h`. The value must fit Go's `int64` nanoseconds
//! (at most `2562047h47m16.854775807s`). Fractions are converted exactly as Go converts them
//! (through `f64`, truncated to whole nanoseconds), so `1h23h0.0000000001s` is exactly 24h here
//! as it is for the API server.
//!
//! One deliberate difference: Go's sum of two components of exactly 2^63 ns each wraps to zero
//! (`9223372036854775808ns9223372036854775808ns` parses as `0s` in Go 1.26); we report it as too
//! long. No such string fits the CRDs' 32 characters, so no object is judged differently.

use std::{fmt, time::Duration};

/// The longest duration Go can hold: `i64::MAX` nanoseconds, `2562047h47m16.854775807s`.
pub const LONGEST_GO_DURATION: Duration = Duration::new(9_223_372_036, 854_775_807);

const OVERFLOW: u64 = 1 << 63;

/// What is wrong with a duration. Every message names the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationError {
    /// Not Go's duration grammar.
    Invalid { text: String },
    /// A number without a unit (`30`).
    MissingUnit { text: String },
    /// A unit Go does not know (`1d`, `5 minutes`).
    UnknownUnit { text: String, unit: String },
    /// Below zero; no faultline field means anything with a negative duration.
    Negative { text: String },
    /// More than Go's `int64` nanoseconds hold.
    TooLong { text: String },
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Invalid { text } => {
                write!(f, "{text:?} is not a duration (try 30s, 5m or 1h30m)")
            }
            DurationError::MissingUnit { text } => write!(
                f,
                "{text:?} is not a duration: a number needs a unit (ns, us, ms, s, m or h), as in 30s"
            ),
            DurationError::UnknownUnit { text, unit } => write!(
                f,
                "{text:?} is not a duration: {unit:?} is not a unit (use ns, us, ms, s, m or h)"
            ),
            DurationError::Negative { text } => {
                write!(f, "{text:?} is negative; durations must be zero or more")
            }
            DurationError::TooLong { text } => write!(
                f,
                "{text:?} is too long: no duration can exceed {}",
                format_go_duration(LONGEST_GO_DURATION)
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a Go duration; negative durations are refused (see [`DurationError::Negative`]).
pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let (negative, nanos) = parse_signed_nanos(text)?;
    if negative && nanos > 0 {
        return Err(DurationError::Negative { text: text.into() });
    }
    Ok(Duration::from_nanos(nanos))
}

/// Go's `time.ParseDuration`, step for step, as (negative, magnitude in nanoseconds). The
/// magnitude is below 2^63, or exactly 2^63 when negative (Go's `math.MinInt64`).
fn parse_signed_nanos(text: &str) -> Result<(bool, u64), DurationError> {
    let invalid = || DurationError::Invalid { text: text.into() };
    let too_long = || DurationError::TooLong { text: text.into() };
    let mut rest = text.as_bytes();
    let mut negative = false;
    if let Some((&sign @ (b'-' | b'+'), after)) = rest.split_first() {
        negative = sign == b'-';
        rest = after;
    }
    if rest == b"0" {
        return Ok((negative, 0));
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while let Some(&first) = rest.first() {
        if !(first == b'.' || first.is_ascii_digit()) {
            return Err(invalid());
        }
        let (whole, after) = leading_int(rest).ok_or_else(too_long)?;
        let has_whole = after.len() != rest.len();
        rest = after;
        let (mut fraction, mut scale, mut has_fraction) = (0u64, 1f64, false);
        if let Some((b'.', after)) = rest.split_first() {
            let (digits, digits_scale, after_digits) = leading_fraction(after);
            has_fraction = after_digits.len() != after.len();
            (fraction, scale, rest) = (digits, digits_scale, after_digits);
        }
        if !has_whole && !has_fraction {
            return Err(invalid());
        }
        let unit_len = rest
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit { text: text.into() });
        }
        let (unit, after) = rest.split_at(unit_len);
        rest = after;
        let Some(unit_nanos) = unit_nanos(unit) else {
            return Err(DurationError::UnknownUnit {
                text: text.into(),
                unit: String::from_utf8_lossy(unit).into_owned(),
            });
        };
        if whole > OVERFLOW / unit_nanos {
            return Err(too_long());
        }
        let mut component = whole * unit_nanos;
        if fraction > 0 {
            // Go's own conversion: f64 keeps fractions of an hour nanosecond-accurate, and the
            // added part is at most 3.6e12 (one hour), so the cast cannot saturate.
            component += (fraction as f64 * (unit_nanos as f64 / scale)) as u64;
            if component > OVERFLOW {
                return Err(too_long());
            }
        }
        total = total
            .checked_add(component)
            .filter(|&t| t <= OVERFLOW)
            .ok_or_else(too_long)?;
    }
    if !negative && total >= OVERFLOW {
        return Err(too_long());
    }
    Ok((negative, total))
}

/// Go's `leadingInt`: the leading digits as a number; `None` when they exceed 2^63.
fn leading_int(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut value: u64 = 0;
    for &c in &text[..digits] {
        if value > OVERFLOW / 10 {
            return None;
        }
        value = value * 10 + u64::from(c - b'0');
        if value > OVERFLOW {
            return None;
        }
    }
    Some((value, &text[digits..]))
}

/// Go's `leadingFraction`: the leading digits of a fraction and their scale (10^digits kept).
/// Digits past what a `u64` holds only stop adding precision; they are never an error.
fn leading_fraction(text: &[u8]) -> (u64, f64, &[u8]) {
    let digits = text.iter().take_while(|c| c.is_ascii_digit()).count();
    let (mut value, mut scale, mut overflowed) = (0u64, 1f64, false);
    for &c in &text[..digits] {
        if overflowed {
            continue;
        }
        if value > (OVERFLOW - 1) / 10 {
            overflowed = true;
            continue;
        }
        let next = value * 10 + u64::from(c - b'0');
        if next > OVERFLOW {
            overflowed = true;
            continue;
        }
        value = next;
        scale *= 10.0;
    }
    (value, scale, &text[digits..])
}

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        b"us" => 1_000,
        // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU, as Go accepts both.
        [0xC2, 0xB5, b's'] | [0xCE, 0xBC, b's'] => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Formats exactly like Go's `time.Duration.String()`: `1h2m3.5s`, `250ms`, `1.5µs`, `0s`.
/// Every duration up to [`LONGEST_GO_DURATION`] parses back to itself.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, digits) = if nanos < 1_000 {
            ("ns", 0)
        } else if nanos < 1_000_000 {
            ("µs", 3)
        } else {
            ("ms", 6)
        };
        return format!("{}{unit}", decimal(nanos, digits));
    }
    let seconds = decimal(nanos % 60_000_000_000, 9);
    let minutes = nanos / 60_000_000_000;
    match (minutes / 60, minutes % 60) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / 10^digits` in decimal, without trailing zeros (nor the point when whole).
fn decimal(value: u128, digits: u32) -> String {
    let divisor = 10u128.pow(digits);
    let (whole, fraction) = (value / divisor, value % divisor);
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0width$}", width = digits as usize);
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// The shortest way to write a round duration, for limits in messages and CEL rules: `24h`,
/// `1h30m`, `5m`, `100ms` (Go prints `24h0m0s`). Parses back to the same value.
pub fn format_short(duration: Duration) -> String {
    let mut text = format_go_duration(duration);
    if text.ends_with("m0s") {
        text.truncate(text.len() - 2);
    }
    if text.ends_with("h0m") {
        text.truncate(text.len() - 2);
    }
    text
}

#[cfg(test)]
#[path = "duration_tests.rs"]
mod tests;
