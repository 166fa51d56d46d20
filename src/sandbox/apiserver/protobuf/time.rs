//! `metav1.Time` and `metav1.MicroTime` between their protobuf form (seconds and nanoseconds
//! since the epoch) and their JSON form (RFC 3339 in UTC, to the second or the microsecond).

use super::ProtoError;
use chrono::{DateTime, Datelike, SecondsFormat, Utc};

const NANOS: i64 = 1_000_000_000;

/// JSON form of a protobuf timestamp. `Time` keeps whole seconds only (Go's `Time.Unmarshal`
/// drops the nanoseconds); `MicroTime` keeps microseconds. Years outside 0..=9999 are refused,
/// as Go's JSON marshalling refuses them.
pub(super) fn format(seconds: i64, nanos: i32, micro: bool) -> Result<String, ProtoError> {
    let (mut secs, mut ns) = (seconds, 0i64);
    if micro {
        // Go truncates towards zero, then normalises into [0, 1s).
        let truncated = i64::from(nanos) - i64::from(nanos) % 1000;
        secs = secs
            .checked_add(truncated.div_euclid(NANOS))
            .ok_or_else(|| ProtoError::malformed("timestamp out of range"))?;
        ns = truncated.rem_euclid(NANOS);
    }
    let t = DateTime::<Utc>::from_timestamp(secs, ns as u32)
        .filter(|t| (0..=9999).contains(&t.year()))
        .ok_or_else(|| ProtoError::malformed(format!("timestamp {seconds}s is out of range")))?;
    Ok(if micro {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    })
}

/// Seconds and nanoseconds of an RFC 3339 timestamp.
pub(super) fn parse(text: &str) -> Result<(i64, i32), ProtoError> {
    let t = DateTime::parse_from_rfc3339(text)
        .map_err(|e| ProtoError::unencodable(format!("timestamp {text:?}: {e}")))?;
    Ok((t.timestamp(), t.timestamp_subsec_nanos() as i32))
}
