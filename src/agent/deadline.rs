//! The deadline the kernel enforces for every fault: whatever the agent applies is reached only
//! through an element of an nftables set whose timeout is the time left until the injection's
//! `expiresAt`. When the timeout runs out the kernel ignores the element at the next lookup and
//! the fault stops acting, with no process of ours alive (see the README's safety model).
//!
//! Element timers are relative (they start when the transaction commits), so the time left is
//! computed afresh at every apply from `expiresAt` and the clock. Two limits:
//! - kernels before 6.12 turn a timeout shorter than one jiffy into "no timeout": an element
//!   with a tiny time left would never expire. Below [`MIN_REMAINING`] the agent reverts
//!   instead of applying.
//! - kernels before 5.4 read the timeout as 32-bit milliseconds (it would wrap after 49 days):
//!   a deadline further away than [`MAX_REMAINING`] is refused.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Below this, a fault is not (re)applied: it is as good as expired.
pub const MIN_REMAINING: Duration = Duration::from_millis(100);
/// The longest deadline a kernel gate can carry on every kernel we run on.
pub const MAX_REMAINING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why a gate cannot be set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateError {
    /// `expiresAt` has passed, or is closer than [`MIN_REMAINING`]: revert, do not apply.
    Expired { left: Duration },
    /// `expiresAt` is further away than [`MAX_REMAINING`].
    TooFar { left: Duration },
}

impl std::fmt::Display for GateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateError::Expired { left } => write!(
                f,
                "the injection expires in {left:?}, too soon for a kernel deadline (at least {MIN_REMAINING:?})"
            ),
            GateError::TooFar { .. } => write!(
                f,
                "expiresAt is more than 30 days away; a kernel-enforced deadline cannot be that far (shorten the experiment)"
            ),
        }
    }
}

/// A fault's deadline, as the kernel gate needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub expires_at: DateTime<Utc>,
}

impl Deadline {
    pub fn new(expires_at: DateTime<Utc>) -> Self {
        Self { expires_at }
    }

    /// The time left at `now`, as the timeout of the gate's element.
    pub fn remaining_at(&self, now: DateTime<Utc>) -> Result<Duration, GateError> {
        let left = (self.expires_at - now).to_std().unwrap_or(Duration::ZERO);
        if left < MIN_REMAINING {
            return Err(GateError::Expired { left });
        }
        if left > MAX_REMAINING {
            return Err(GateError::TooFar { left });
        }
        Ok(left)
    }

    /// The time left now.
    pub fn remaining(&self) -> Result<Duration, GateError> {
        self.remaining_at(Utc::now())
    }

    /// `expiresAt` as written into table comments (seconds, UTC).
    pub fn stamp(&self) -> String {
        self.expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn the_gate_is_the_time_left_and_never_tiny() {
        let now = Utc::now();
        let d = Deadline::new(now + TimeDelta::seconds(90));
        assert_eq!(d.remaining_at(now), Ok(Duration::from_secs(90)));
        // A deadline 50 ms away, or past, is "revert now", never a 50 ms element.
        let soon = Deadline::new(now + TimeDelta::milliseconds(50));
        assert!(matches!(
            soon.remaining_at(now),
            Err(GateError::Expired { .. })
        ));
        let past = Deadline::new(now - TimeDelta::seconds(5));
        assert_eq!(
            past.remaining_at(now),
            Err(GateError::Expired {
                left: Duration::ZERO
            })
        );
        let far = Deadline::new(now + TimeDelta::days(31));
        assert!(matches!(
            far.remaining_at(now),
            Err(GateError::TooFar { .. })
        ));
        assert!(
            far.remaining_at(now)
                .unwrap_err()
                .to_string()
                .contains("30 days")
        );
    }
}
