use proptest::prelude::*;

use super::*;

/// What Go 1.26's `time.ParseDuration` and `Duration.String` said about 6000 strings
/// (`scripts/go-durations/main.go`).
const GO_VERDICTS: &str = include_str!("../../tests/fixtures/go_durations.tsv");

/// Our parse as Go's signed nanoseconds.
fn signed_nanos(text: &str) -> Option<i128> {
    let (negative, magnitude) = parse_signed_nanos(text).ok()?;
    let magnitude = i128::from(magnitude);
    Some(if negative { -magnitude } else { magnitude })
}

#[test]
fn parses_every_string_exactly_as_go_does() {
    let mut compared = 0;
    for line in GO_VERDICTS.lines() {
        let mut fields = line.split('\t');
        let (input, verdict) = (fields.next().unwrap(), fields.next().unwrap());
        let expected = (verdict != "error").then(|| verdict.parse::<i128>().unwrap());
        assert_eq!(signed_nanos(input), expected, "{input:?}");
        if let (Some(nanos), Some(go_string)) = (expected, fields.next())
            && nanos >= 0
        {
            let duration = Duration::from_nanos(nanos as u64);
            assert_eq!(format_go_duration(duration), go_string, "{input:?}");
        }
        compared += 1;
    }
    assert_eq!(compared, 6000);
}

#[test]
fn negative_durations_are_refused_by_name() {
    assert_eq!(parse_go_duration("-0"), Ok(Duration::ZERO));
    assert_eq!(
        parse_go_duration("-5s").unwrap_err().to_string(),
        "\"-5s\" is negative; durations must be zero or more"
    );
}

#[test]
fn errors_name_the_value_and_what_is_wrong() {
    let message = |text: &str| parse_go_duration(text).unwrap_err().to_string();
    assert_eq!(
        message("999999999999999999999h"),
        "\"999999999999999999999h\" is too long: no duration can exceed 2562047h47m16.854775807s"
    );
    assert_eq!(
        message("fast"),
        "\"fast\" is not a duration (try 30s, 5m or 1h30m)"
    );
    assert_eq!(
        message("30"),
        "\"30\" is not a duration: a number needs a unit (ns, us, ms, s, m or h), as in 30s"
    );
    assert_eq!(
        message("1d"),
        "\"1d\" is not a duration: \"d\" is not a unit (use ns, us, ms, s, m or h)"
    );
    // What kube's parser panicked on, and what it silently turned into zero.
    assert!(matches!(
        parse_go_duration("5000000000000000h"),
        Err(DurationError::TooLong { .. })
    ));
}

#[test]
fn sums_that_go_wraps_to_zero_are_too_long_here() {
    let text = "9223372036854775808ns9223372036854775808ns";
    assert!(matches!(
        parse_go_duration(text),
        Err(DurationError::TooLong { .. })
    ));
}

#[test]
fn short_form_drops_zero_minutes_and_seconds() {
    let short = |secs| format_short(Duration::from_secs(secs));
    assert_eq!(short(86_400), "24h");
    assert_eq!(short(5_400), "1h30m");
    assert_eq!(short(3_630), "1h0m30s");
    assert_eq!(short(300), "5m");
    assert_eq!(short(1), "1s");
    assert_eq!(format_short(Duration::from_millis(100)), "100ms");
    assert_eq!(format_short(Duration::ZERO), "0s");
}

/// Strings that look like durations, with the mistakes people make (signs, stray spaces,
/// unknown units, numbers far past int64).
fn duration_like() -> impl Strategy<Value = String> {
    proptest::string::string_regex(
        r"[-+]?([0-9]{0,25}(\.[0-9]{0,25})?( |ns|us|µs|μs|ms|s|m|h|d|x|)){1,4}",
    )
    .unwrap()
}

/// Go durations in the grammar, of every size (many overflow).
fn well_formed() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r"([0-9]{1,20}(\.[0-9]{1,20})?(ns|us|µs|μs|ms|s|m|h)){1,3}")
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        let _ = parse_go_duration(&text);
    }

    #[test]
    fn duration_like_strings_never_panic(text in duration_like()) {
        if let Ok(duration) = parse_go_duration(&text) {
            prop_assert!(duration <= LONGEST_GO_DURATION);
        }
    }

    #[test]
    fn every_go_duration_round_trips_through_its_go_string(nanos in 0..=i64::MAX as u64) {
        let duration = Duration::from_nanos(nanos);
        prop_assert_eq!(parse_go_duration(&format_go_duration(duration)), Ok(duration));
        prop_assert_eq!(parse_go_duration(&format_short(duration)), Ok(duration));
    }

    #[test]
    fn valid_go_durations_round_trip(text in well_formed()) {
        match parse_go_duration(&text) {
            Ok(duration) => {
                let printed = format_go_duration(duration);
                prop_assert_eq!(parse_go_duration(&printed), Ok(duration), "{} printed as {}", text, printed);
            }
            Err(error) => prop_assert!(
                matches!(error, DurationError::TooLong { .. }),
                "{text:?}: {error}"
            ),
        }
    }
}
