//! The units of traffic control, computed exactly as iproute2's `tc` computes them (tc_core.c,
//! tc_util.c), so that our requests carry the same numbers as `tc`'s for the same parameters:
//! rates from `1mbit` / `100kbps`, scheduler ticks from `/proc/net/psched`, rate tables, and
//! percentages scaled to `u32`.
//!
//! Pure: reading `/proc/net/psched` is [`Psched::read`], everything else takes its values.

use std::io;

/// `TIME_UNITS_PER_SEC` of iproute2: tc works in microseconds.
const TIME_UNITS_PER_SEC: f64 = 1_000_000.0;

/// `enum tc_link_layer`: no per-cell adjustment.
const LINKLAYER_ETHERNET: u8 = 1;

/// The packet scheduler clock, from `/proc/net/psched`: how many ticks make a microsecond.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Psched {
    tick_in_usec: f64,
}

/// What every kernel since 2.6.x writes there (64 ns ticks, nanosecond clock).
pub(crate) const PSCHED_MODERN: &str = "000003e8 00000040 000f4240 3b9aca00";

impl Default for Psched {
    fn default() -> Self {
        Self::parse(PSCHED_MODERN).expect("built-in psched line parses")
    }
}

impl Psched {
    /// The running kernel's clock; the modern default when the file cannot be read (it has the
    /// same content on every kernel faultline supports).
    pub(crate) fn read() -> Self {
        match std::fs::read_to_string("/proc/net/psched") {
            Ok(text) => Self::parse(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable /proc/net/psched; assuming 64 ns ticks");
                Self::default()
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /proc/net/psched; assuming 64 ns ticks");
                Self::default()
            }
        }
    }

    /// Parses the file's first three hex words (tick-to-usec numerator and denominator, clock
    /// resolution) the way `tc_core_init` does.
    pub(crate) fn parse(text: &str) -> io::Result<Self> {
        let invalid = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/net/psched: expected three hex numbers, got {text:?}"),
            )
        };
        let words: Vec<u32> = text
            .split_whitespace()
            .take(3)
            .map(|w| u32::from_str_radix(w, 16))
            .collect::<Result<_, _>>()
            .map_err(|_| invalid())?;
        let [mut t2us, us2t, clock_res] = words[..] else {
            return Err(invalid());
        };
        if us2t == 0 {
            return Err(invalid());
        }
        // The kernel advertises a tick multiplier of 1000 to old tc binaries when its clock has
        // nanosecond resolution; it really is 1 (tc's "compatibility hack").
        if clock_res == 1_000_000_000 {
            t2us = us2t;
        }
        let clock_factor = f64::from(clock_res) / TIME_UNITS_PER_SEC;
        Ok(Self {
            tick_in_usec: f64::from(t2us) / f64::from(us2t) * clock_factor,
        })
    }

    /// Ticks to send `size` bytes at `rate` bytes per second (`tc_calc_xmittime`): rounded up,
    /// at most `u32::MAX`.
    pub(crate) fn xmittime(&self, rate: u64, size: u64) -> u32 {
        let usecs = TIME_UNITS_PER_SEC * (size as f64 / rate as f64);
        // `as` saturates: a time beyond u32 ticks is u32::MAX, as tc clamps it.
        (usecs * self.tick_in_usec).ceil() as u32
    }
}

/// `struct tc_ratespec`: a rate and how its table is laid out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RateSpec {
    pub cell_log: u8,
    pub linklayer: u8,
    pub overhead: u16,
    pub cell_align: i16,
    pub mpu: u16,
    /// Bytes per second, `u32::MAX` when the real rate needs a 64-bit attribute.
    pub rate: u32,
}

impl RateSpec {
    pub(crate) const ZERO: RateSpec = RateSpec {
        cell_log: 0,
        linklayer: 0,
        overhead: 0,
        cell_align: 0,
        mpu: 0,
        rate: 0,
    };

    pub(crate) fn to_bytes(self) -> [u8; 12] {
        let mut out = [0; 12];
        out[0] = self.cell_log;
        out[1] = self.linklayer;
        out[2..4].copy_from_slice(&self.overhead.to_ne_bytes());
        out[4..6].copy_from_slice(&self.cell_align.to_ne_bytes());
        out[6..8].copy_from_slice(&self.mpu.to_ne_bytes());
        out[8..12].copy_from_slice(&self.rate.to_ne_bytes());
        out
    }
}

/// The 32-bit field of a rate: the rate itself, or `u32::MAX` meaning "see the 64-bit attribute".
pub(crate) fn rate32(rate: u64) -> u32 {
    u32::try_from(rate).unwrap_or(u32::MAX)
}

/// The rate spec and 256-entry rate table for `rate` bytes/s over packets up to `mtu`
/// (`tc_calc_rtable` with no mpu, no overhead, Ethernet): entry i is the time to send
/// `(i + 1) << cell_log` bytes. Like tc, the table uses the 32-bit rate field.
pub(crate) fn rate_table(psched: &Psched, rate: u64, mtu: u32) -> (RateSpec, Vec<u8>) {
    let mtu = if mtu == 0 { 2047 } else { mtu };
    let mut cell_log = 0u8;
    while (mtu >> cell_log) > 255 {
        cell_log += 1;
    }
    let spec = RateSpec {
        cell_log,
        linklayer: LINKLAYER_ETHERNET,
        overhead: 0,
        cell_align: -1,
        mpu: 0,
        rate: rate32(rate),
    };
    let mut table = Vec::with_capacity(256 * 4);
    for i in 0..256u64 {
        let size = (i + 1) << cell_log;
        table.extend_from_slice(&psched.xmittime(u64::from(spec.rate), size).to_ne_bytes());
    }
    (spec, table)
}

/// tc's rate units (case-insensitive), in bits per second: bits or bytes, SI or binary
/// multiples.
const RATE_UNITS: &[(&str, u128)] = &[
    ("bit", 1),
    ("kibit", 1 << 10),
    ("kbit", 1_000),
    ("mibit", 1 << 20),
    ("mbit", 1_000_000),
    ("gibit", 1 << 30),
    ("gbit", 1_000_000_000),
    ("tibit", 1 << 40),
    ("tbit", 1_000_000_000_000),
    ("bps", 8),
    ("kibps", 8 << 10),
    ("kbps", 8_000),
    ("mibps", 8 << 20),
    ("mbps", 8_000_000),
    ("gibps", 8 << 30),
    ("gbps", 8_000_000_000),
    ("tibps", 8 << 40),
    ("tbps", 8_000_000_000_000),
];

/// A rate as `tc` reads it (`1mbit`, `100kbps`, `8.5mbit`), in bytes per second, truncated as tc
/// truncates. Unlike tc, a unit is required (a bare number is ambiguous to a reader), and the
/// number is read exactly in decimal, not as a float: the CRD refuses a rate below one byte per
/// second by its digits (`api::rules::SUB_BYTE_RATE_PATTERN`), and `0.000008mbit`, which it
/// accepts, must not become 0.99999 bytes here.
pub(crate) fn parse_rate(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(format!(
            "rate {text:?} does not start with a number (write it like 1mbit or 100kbps)"
        ));
    }
    let scale = RATE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|(_, scale)| *scale)
        .ok_or_else(|| {
            format!("rate {text:?} has no known unit (use bit, kbit, mbit, gbit, bps, kbps, mbps or gbps)")
        })?;
    let too_large =
        || format!("rate {text:?} is too large: the kernel counts at most 2^64 bytes per second");
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let bits_scaled: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse::<u128>().map_err(|_| too_large())?
    };
    // number = bits_scaled / 10^fraction digits; bytes = number * scale / 8.
    let denominator = u32::try_from(fraction.len())
        .ok()
        .and_then(|places| 10u128.checked_pow(places))
        .and_then(|power| power.checked_mul(8))
        .ok_or_else(too_large)?;
    let bytes = bits_scaled.checked_mul(scale).ok_or_else(too_large)? / denominator;
    let bytes = u64::try_from(bytes).map_err(|_| too_large())?;
    if bytes == 0 {
        return Err(format!("rate {text:?} is less than one byte per second"));
    }
    Ok(bytes)
}

/// A percentage (0-100) as the kernel's probabilities are written: scaled to `u32::MAX`,
/// rounded half to even (C's `rint`), as tc's `get_percent`.
pub(crate) fn percent(value: f64) -> u32 {
    ((value / 100.0) * f64::from(u32::MAX)).round_ties_even() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_kernels_count_in_64_nanosecond_ticks() {
        let psched = Psched::default();
        assert_eq!(psched.tick_in_usec, 15.625);
        // 32768 bytes at 1mbit (125000 B/s) take 262144 us.
        assert_eq!(psched.xmittime(125_000, 32_768), 4_096_000);
    }

    #[test]
    fn a_nanosecond_clock_res_uses_the_compatibility_hack() {
        let psched = Psched::parse("000003e8 00000040 3b9aca00").unwrap();
        assert_eq!(psched.tick_in_usec, 1000.0);
        assert!(Psched::parse("garbage").is_err());
        assert!(Psched::parse("000003e8 00000000 000f4240").is_err());
    }

    #[test]
    fn rates_read_like_tc_reads_them() {
        assert_eq!(parse_rate("1mbit"), Ok(125_000));
        assert_eq!(parse_rate("100kbps"), Ok(100_000));
        assert_eq!(parse_rate("100KBps"), Ok(100_000));
        assert_eq!(parse_rate("8.5mbit"), Ok(1_062_500));
        assert_eq!(parse_rate("40gbit"), Ok(5_000_000_000));
        assert_eq!(parse_rate("1kibit"), Ok(128));
        assert!(parse_rate("1000").unwrap_err().contains("unit"));
        assert!(parse_rate("mbit").unwrap_err().contains("number"));
        assert!(parse_rate("1furlong").is_err());
        assert!(
            parse_rate("4bit")
                .unwrap_err()
                .contains("less than one byte")
        );
        assert!(parse_rate("1.2.3mbit").unwrap_err().contains("number"));
        assert!(
            parse_rate("99999999999gbps")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_rate("1000000000000000000000000000000000000000bit")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn rates_at_one_byte_per_second_are_read_exactly_in_decimal() {
        for text in [
            "8bit",
            "1bps",
            "0.008kbit",
            "0.001kbps",
            "0.000008mbit",
            "0.000001mbps",
        ] {
            assert_eq!(parse_rate(text), Ok(1), "{text}");
        }
        for text in [
            "7.999bit",
            "0.9bps",
            "0.0079kbit",
            "0.0000079mbit",
            "0.000000001gbit",
        ] {
            assert!(parse_rate(text).is_err(), "{text}");
        }
    }

    /// The CRD refuses by a pattern on the text what this parser would refuse once the fault
    /// is due: the two must draw the line at the same place.
    #[test]
    fn the_crd_rule_refuses_exactly_the_rates_below_one_byte_per_second() {
        let sub_byte = regex::Regex::new(crate::api::rules::SUB_BYTE_RATE_PATTERN).unwrap();
        let shape = regex::Regex::new(crate::api::bounds::RATE_PATTERN).unwrap();
        let numbers = [
            "0",
            "00",
            "0.0",
            "1",
            "7",
            "07",
            "7.9",
            "8",
            "08",
            "8.0",
            "9",
            "10",
            "0.5",
            "0.9",
            "1.0",
            "0.1",
            "0.01",
            "0.001",
            "0.0009",
            "0.008",
            "0.0079",
            "0.0081",
            "0.000001",
            "0.0000009",
            "0.000008",
            "0.0000079",
            "0.00000799999",
            "0.000000001",
            "0.0000000009",
            "0.000000008",
            "0.0000000079",
            "0.00000001",
            "0.0000001",
            "12.345",
            "0.000",
            "0.00000000",
            "0.000000000",
            "0.0000000081",
            "0.0000081",
        ];
        let units = ["bit", "kbit", "mbit", "gbit", "bps", "kbps", "mbps", "gbps"];
        for number in numbers {
            for unit in units {
                let text = format!("{number}{unit}");
                assert!(shape.is_match(&text), "{text}");
                assert_eq!(
                    sub_byte.is_match(&text),
                    parse_rate(&text).is_err(),
                    "{text}: the CRD and the agent disagree"
                );
            }
        }
    }

    #[test]
    fn percentages_scale_to_u32_rounding_half_to_even() {
        assert_eq!(percent(1.0), 0x028f_5c29);
        assert_eq!(percent(0.5), 21_474_836);
        assert_eq!(percent(25.0), 0x4000_0000);
        assert_eq!(percent(30.0), 0x4ccc_cccc);
        assert_eq!(percent(100.0), u32::MAX);
        assert_eq!(percent(0.0), 0);
    }

    #[test]
    fn rate_tables_use_the_32_bit_rate_and_cells_of_eight_bytes_for_small_mtus() {
        let psched = Psched::default();
        let (spec, table) = rate_table(&psched, 1_000_000, 0);
        assert_eq!((spec.cell_log, spec.linklayer, spec.cell_align), (3, 1, -1));
        assert_eq!(table.len(), 1024);
        // 8 bytes at 1 MB/s: 8 us = 125 ticks.
        assert_eq!(&table[..4], &125u32.to_ne_bytes());
        let (spec, _) = rate_table(&psched, 12_500_000_000, 1600);
        assert_eq!((spec.cell_log, spec.rate), (3, u32::MAX));
    }
}
