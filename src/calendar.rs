//! Cron schedules and allowed windows in an IANA time zone, for ChaosSchedules and scheduled
//! GameDays (pure: every function takes the time it reasons about).

use std::str::FromStr;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use crate::api::{AllowedWindow, Weekday};

/// A parsed cron expression read in a time zone.
#[derive(Clone, Debug)]
pub struct Calendar {
    cron: Cron,
    zone: Tz,
}

fn parse_cron(expression: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| {
            format!(
                "{expression:?} is not a cron expression ({e}); use 5 fields (minute hour day-of-month month day-of-week) such as \"0 10 * * TUE\", or @daily"
            )
        })
}

/// What is wrong with a cron expression: it does not parse, or it names a date that never
/// comes (Feb 30), so the schedule would silently never run. `None` when it is fine.
pub fn cron_problem(expression: &str) -> Option<String> {
    let cron = match parse_cron(expression) {
        Ok(cron) => cron,
        Err(problem) => return Some(problem),
    };
    let start = DateTime::<Utc>::from_timestamp(1_767_225_600, 0)?;
    cron.find_next_occurrence(&start, false).is_err().then(|| {
        format!(
            "{expression:?} never fires (no such date); check the day-of-month and month fields"
        )
    })
}

/// What is wrong with a time zone name (it is not an IANA name), with the likely meant one.
pub fn time_zone_problem(zone: &str) -> String {
    let hint = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(zone))
        .map(|tz| format!(" (did you mean {}?)", tz.name()))
        .unwrap_or_default();
    format!("{zone:?} is not an IANA time zone{hint}; use a name such as Europe/Berlin or UTC")
}

/// Whether `zone` is an IANA time zone name.
pub fn is_time_zone(zone: &str) -> bool {
    Tz::from_str(zone).is_ok()
}

/// The most missed occurrences counted one by one; beyond it the count says "at least".
const MISSED_COUNT_LIMIT: u64 = 1000;

impl Calendar {
    /// `expression` has 5 fields (or 6 with seconds first, or `@daily` and friends); `zone` is an
    /// IANA name, UTC when `None`. The error names the field (`spec.schedule`, `spec.timeZone`,
    /// where ChaosSchedules and GameDays both keep them) and says what to write: a sentence for a
    /// status condition and an Event. `faultline validate` reports the same sentences.
    pub fn new(expression: &str, zone: Option<&str>) -> Result<Self, String> {
        let zone = match zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name)
                .map_err(|_| format!("spec.timeZone: {}", time_zone_problem(name)))?,
        };
        let cron = parse_cron(expression).map_err(|problem| format!("spec.schedule: {problem}"))?;
        Ok(Calendar { cron, zone })
    }

    /// The first occurrence strictly after `t`; `None` when the expression never fires again.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The occurrences in `(after, until]`: the latest one, and how many there were (counted up
    /// to a limit, so a schedule that was off for years costs nothing).
    pub fn due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<(DateTime<Utc>, u64)> {
        let latest = self
            .cron
            .find_previous_occurrence(&until.with_timezone(&self.zone), true)
            .ok()?
            .with_timezone(&Utc);
        if latest <= after {
            return None;
        }
        let mut count = 1;
        let mut cursor = after;
        while count < MISSED_COUNT_LIMIT {
            match self.next_after(cursor) {
                Some(next) if next < latest => {
                    count += 1;
                    cursor = next;
                }
                _ => break,
            }
        }
        Some((latest, count))
    }

    /// Whether `t` falls inside one of `windows`, read in this calendar's zone. No windows means
    /// any time.
    pub fn in_windows(&self, windows: &[AllowedWindow], t: DateTime<Utc>) -> bool {
        if windows.is_empty() {
            return true;
        }
        let local = t.with_timezone(&self.zone);
        let day = weekday(local.weekday());
        let minute = local.hour() * 60 + local.minute();
        windows.iter().any(|w| {
            let (Some(start), Some(end)) = (minute_of_day(&w.start), minute_of_day(&w.end)) else {
                return false;
            };
            (w.days.is_empty() || w.days.contains(&day)) && start <= minute && minute < end
        })
    }
}

fn weekday(day: chrono::Weekday) -> Weekday {
    match day {
        chrono::Weekday::Mon => Weekday::Mon,
        chrono::Weekday::Tue => Weekday::Tue,
        chrono::Weekday::Wed => Weekday::Wed,
        chrono::Weekday::Thu => Weekday::Thu,
        chrono::Weekday::Fri => Weekday::Fri,
        chrono::Weekday::Sat => Weekday::Sat,
        chrono::Weekday::Sun => Weekday::Sun,
    }
}

/// `HH:MM` as minutes since midnight (`24:00` is 1440).
fn minute_of_day(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    let (hours, minutes): (u32, u32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours <= 24 && minutes < 60 && hours * 60 + minutes <= 1440).then_some(hours * 60 + minutes)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn window(days: &[Weekday], start: &str, end: &str) -> AllowedWindow {
        AllowedWindow {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
        }
    }

    #[test]
    fn occurrences_are_read_in_the_time_zone() {
        // 10:00 in Berlin on Tuesday 2026-11-24 (CET, UTC+1) is 09:00 UTC.
        let calendar = Calendar::new("0 10 * * TUE", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            calendar.next_after(utc(2026, 11, 23, 12, 0)),
            Some(utc(2026, 11, 24, 9, 0))
        );
        // In summer (CEST, UTC+2) the same wall clock is 08:00 UTC.
        assert_eq!(
            calendar.next_after(utc(2026, 7, 1, 0, 0)),
            Some(utc(2026, 7, 7, 8, 0))
        );
        let utc_calendar = Calendar::new("@daily", None).unwrap();
        assert_eq!(
            utc_calendar.next_after(utc(2026, 11, 23, 0, 0)),
            Some(utc(2026, 11, 24, 0, 0))
        );
    }

    #[test]
    fn due_returns_the_latest_occurrence_and_how_many_were_due() {
        let calendar = Calendar::new("*/10 * * * *", None).unwrap();
        let after = utc(2026, 11, 23, 10, 0);
        assert_eq!(calendar.due(after, utc(2026, 11, 23, 10, 5)), None);
        assert_eq!(
            calendar.due(after, utc(2026, 11, 23, 10, 10)),
            Some((utc(2026, 11, 23, 10, 10), 1))
        );
        assert_eq!(
            calendar.due(after, utc(2026, 11, 23, 10, 45)),
            Some((utc(2026, 11, 23, 10, 40), 4))
        );
        // Years off: the count stops at the limit instead of walking every occurrence.
        let (_, count) = calendar.due(after, utc(2030, 1, 1, 0, 0)).unwrap();
        assert_eq!(count, MISSED_COUNT_LIMIT);
    }

    #[test]
    fn bad_expressions_and_zones_say_what_to_write() {
        let err = Calendar::new("every tuesday", None).unwrap_err();
        assert!(err.contains("not a cron expression"), "{err}");
        let err = Calendar::new("@daily", Some("Berlin")).unwrap_err();
        assert!(err.contains("IANA"), "{err}");
    }

    #[test]
    fn windows_are_half_open_per_day_in_the_zone() {
        let calendar = Calendar::new("@hourly", Some("Europe/Berlin")).unwrap();
        let office = [window(&[Weekday::Mon, Weekday::Tue], "09:00", "16:00")];
        // Tuesday 2026-11-24: 08:00 UTC is 09:00 in Berlin (open), 15:00 UTC is 16:00 (closed).
        assert!(calendar.in_windows(&office, utc(2026, 11, 24, 8, 0)));
        assert!(calendar.in_windows(&office, utc(2026, 11, 24, 14, 59)));
        assert!(!calendar.in_windows(&office, utc(2026, 11, 24, 15, 0)));
        assert!(!calendar.in_windows(&office, utc(2026, 11, 24, 7, 59)));
        // Wednesday is not listed.
        assert!(!calendar.in_windows(&office, utc(2026, 11, 25, 10, 0)));
        // No days: every day; until 24:00 includes the last minute.
        let evenings = [window(&[], "20:00", "24:00")];
        assert!(calendar.in_windows(&evenings, utc(2026, 11, 25, 22, 59)));
        assert!(!calendar.in_windows(&evenings, utc(2026, 11, 25, 18, 59)));
        assert!(calendar.in_windows(&[], utc(2026, 11, 25, 3, 0)));
    }
}
