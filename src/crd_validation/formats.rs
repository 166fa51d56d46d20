//! The `format`s of the CRD schemas, judged as kube-apiserver v1.36 judges them (kube-openapi's
//! `strfmt` and number validators), and the JSON number model the server decodes into.
//!
//! The formats faultline's schemas use: `int32` and `int64` (integers), `double` (numbers; no
//! check), `date-time` (strings). Other string formats the server knows are not used and not
//! checked.

/// A JSON number as the API server holds it after decoding: an `int64` when the text is an
/// integer that fits, a `float64` otherwise (`1.0`, `1e3`, `18446744073709551615`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GoNumber {
    Int(i64),
    Float(f64),
}

impl GoNumber {
    pub fn of(number: &serde_json::Number) -> GoNumber {
        match number.as_i64() {
            Some(i) => GoNumber::Int(i),
            None => GoNumber::Float(number.as_f64().unwrap_or(f64::NAN)),
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            GoNumber::Int(i) => i as f64,
            GoNumber::Float(f) => f,
        }
    }

    /// Go's `%v`: `150`, `150.5`, `1e+21`.
    pub fn go_display(self) -> String {
        match self {
            GoNumber::Int(i) => i.to_string(),
            GoNumber::Float(f) => format_float_g(f),
        }
    }
}

/// Whether `value` is a JSON integer to kube-openapi: an int64, or a float64 without fraction
/// within ±2^53 (`3.0` is an integer, `1e20` is not).
pub fn is_json_integer(value: GoNumber) -> bool {
    match value {
        GoNumber::Int(_) => true,
        GoNumber::Float(f) => {
            f.is_finite() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0
        }
    }
}

/// The Go type name kube-openapi infers for a number, as its type errors print it.
pub fn go_number_format(value: GoNumber) -> &'static str {
    match value {
        GoNumber::Int(_) => "int64",
        GoNumber::Float(_) => "float64",
    }
}

/// kube-openapi's range check of an integer field with `format`: the value, written as Go writes
/// it (`strconv.FormatFloat(f, 'f', -1, 64)` for floats), must parse as that format. `false`
/// means the server answers `Checked value must be of type integer with format int32 in PATH`.
pub fn fits_integer_format(value: GoNumber, format: &str) -> bool {
    let text = match value {
        GoNumber::Int(i) => i.to_string(),
        GoNumber::Float(f) => format_float_f(f),
    };
    match format {
        "int32" => text.parse::<i32>().is_ok(),
        "uint32" => text.parse::<u32>().is_ok(),
        "uint64" => text.parse::<u64>().is_ok(),
        _ => text.parse::<i64>().is_ok(),
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that reads back as `f`,
/// never in exponent form.
fn format_float_f(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Rust's `Display` for f64 is the shortest round-trip form without exponent.
    format!("{f}")
}

/// Go's `%v` (`strconv.FormatFloat(f, 'g', -1, 64)` with Go's exponent threshold of 21): the
/// shortest round-trip digits, in exponent form when the exponent is below -4 or at least 21.
pub fn format_float_g(f: f64) -> String {
    if !f.is_finite() {
        return format_float_f(f);
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // `{:e}` gives the shortest round-trip digits: `1.5e2`, `1e21`.
    let sci = format!("{f:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..21).contains(&exponent) {
        return format_float_f(f);
    }
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// kube-openapi's `date-time` (strfmt `IsDateTime`): after lower-casing, the text up to the first
/// `t` is a calendar date (`2006-01-02`, a real day of that month), and what follows up to the
/// next `t` is `hh:mm:ss`, an optional fraction (any one character, then digits) and `z` or a
/// `±hh:mm` offset, with hours up to 23 and minutes and seconds up to 59. Quirks included: a
/// second `t` ends the check; the offset is not range-checked.
pub fn is_date_time(text: &str) -> bool {
    if text.len() < 4 {
        return false;
    }
    let lower = text.to_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    is_full_date(date) && is_time_of_day(time)
}

fn is_full_date(text: &str) -> bool {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$`, with
/// `hh <= "23"`, `mm <= "59"`, `ss <= "59"` compared as strings.
fn is_time_of_day(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    let two_digits = |i: usize| {
        chars
            .get(i..i + 2)
            .is_some_and(|d| d.iter().all(char::is_ascii_digit))
    };
    if !(two_digits(0)
        && chars.get(2) == Some(&':')
        && two_digits(3)
        && chars.get(5) == Some(&':')
        && two_digits(6))
    {
        return false;
    }
    let field = |i: usize| -> String { chars[i..i + 2].iter().collect() };
    if field(0).as_str() > "23" || field(3).as_str() > "59" || field(6).as_str() > "59" {
        return false;
    }
    let mut rest = &chars[8..];
    // `(.[0-9]+)?`: the dot is any character. Try with and without the fraction (RE2 would).
    let zone = |z: &[char]| match z {
        ['z'] => true,
        [sign, h1, h2, ':', m1, m2] => {
            (*sign == '+' || *sign == '-') && [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
        }
        _ => false,
    };
    if zone(rest) {
        return true;
    }
    if rest.len() >= 2 {
        rest = &rest[1..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        // Any split of the digits between the fraction and the zone: the zone starts with `z`,
        // `+` or `-`, never a digit, so all digits belong to the fraction.
        if digits >= 1 && zone(&rest[digits..]) {
            return true;
        }
    }
    false
}

/// Go's `strconv.Quote`, as `%q` prints a string in the API server's messages: printable
/// characters as they are, `"` and `\` escaped, the rest as `\n`, `\t`, `\x7f`, `\u200b`, ...
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint` for the characters that turn up in manifests: everything but control
/// characters, format characters (zero-width spaces, direction marks, the BOM), separators other
/// than the ASCII space, and private-use characters.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if c == ' ' {
        return true;
    }
    if c.is_control() {
        return false;
    }
    let format_or_separator = matches!(u,
        0x00A0 | 0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x1680 | 0x180E
        | 0x2000..=0x200F | 0x2028..=0x202F | 0x205F..=0x206F | 0x3000 | 0x3164
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB | 0x0600..=0x0605 | 0x06DD | 0x070F
        | 0x08E2 | 0x110BD | 0x110CD | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
        | 0xE0000..=0xE0FFF);
    let private_use = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    !(format_or_separator || private_use)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_as_kube_openapi_reads_them() {
        for ok in [
            "2026-03-01T09:00:00Z",
            "2026-03-01t09:00:00z",
            "2026-03-01T09:00:00.123456789+02:00",
            "2024-02-29T23:59:59-99:99",
            "2026-03-01T09:00:00,5Z",
            "2026-03-01T09:00:00Zt-anything",
        ] {
            assert!(is_date_time(ok), "{ok}");
        }
        for bad in [
            "next tuesday",
            "2026-02-29T09:00:00Z",
            "2026-03-01 09:00:00Z",
            "2026-03-01T24:00:00Z",
            "2026-03-01T09:00:60Z",
            "2026-03-01T09:00:00",
            "2026-3-01T09:00:00Z",
            "2026-03-01T09:00:00.Z",
            "2026-03-01T09:00:00+0200",
        ] {
            assert!(!is_date_time(bad), "{bad}");
        }
    }

    #[test]
    fn integer_formats_as_kube_openapi_checks_them() {
        assert!(fits_integer_format(GoNumber::Int(2_147_483_647), "int32"));
        assert!(!fits_integer_format(GoNumber::Int(3_000_000_000), "int32"));
        assert!(fits_integer_format(GoNumber::Float(3.0), "int32"));
        assert!(!fits_integer_format(GoNumber::Float(1.5), "int32"));
        assert!(!fits_integer_format(GoNumber::Float(1e20), "int64"));
        assert!(is_json_integer(GoNumber::Float(3.0)));
        assert!(!is_json_integer(GoNumber::Float(1e20)));
        let big: serde_json::Number = serde_json::from_str("18446744073709551615").unwrap();
        assert_eq!(go_number_format(GoNumber::of(&big)), "float64");
    }

    #[test]
    fn numbers_and_strings_print_as_go_prints_them() {
        assert_eq!(GoNumber::Float(150.0).go_display(), "150");
        assert_eq!(GoNumber::Float(150.5).go_display(), "150.5");
        assert_eq!(GoNumber::Float(1e21).go_display(), "1e+21");
        assert_eq!(GoNumber::Float(1e20).go_display(), "100000000000000000000");
        assert_eq!(GoNumber::Float(0.00001).go_display(), "1e-05");
        assert_eq!(go_quote("app\u{200b}"), "\"app\\u200b\"");
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote("µs ünï"), "\"µs ünï\"");
        assert_eq!(go_quote("\u{7f}"), "\"\\x7f\"");
    }
}
