//! tbf, the token bucket filter: a bandwidth cap. Its options are encoded as `tc qdisc ... tbf
//! rate R burst B limit L` encodes them: `TCA_TBF_PARMS` (struct tc_tbf_qopt with the rate
//! spec and the bucket in ticks), `TCA_TBF_BURST` (the bucket in bytes, which kernels since
//! 3.13 prefer), `TCA_TBF_RATE64` for rates of 4 GB/s and more, and the rate table.

use std::io;

use crate::api::BandwidthFault;

use super::netlink::{Message, TCA_OPTIONS};
use super::psched::{Psched, RateSpec, rate_table, rate32};

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RTAB: u16 = 2;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;

/// The smallest default bucket: a few full-size packets, so that a low rate still lets
/// 1500-byte (and GSO-split) packets through without the kernel's "burst lower than mtu".
const MIN_DEFAULT_BURST: u64 = 16 * 1024;
/// The default queue holds this much time at the capped rate, behind the bucket (tc's
/// `latency` parameter: limit = rate * latency + burst).
const DEFAULT_QUEUE_MILLIS: u64 = 100;

/// A token bucket: `rate` bytes/s, a bucket of `burst` bytes, a queue of `limit` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tbf {
    pub rate: u64,
    pub burst: u32,
    pub limit: u32,
}

impl Tbf {
    /// The bucket a fault asks for. An unset burst is 10 ms at the rate (at least 16 KiB); an
    /// unset limit queues 100 ms at the rate behind the bucket.
    pub(crate) fn from_fault(fault: &BandwidthFault) -> io::Result<Self> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let rate = super::psched::parse_rate(&fault.rate).map_err(invalid)?;
        let bytes = |field: &str, value: Option<i64>, default: u64| -> io::Result<u32> {
            match value {
                None => Ok(u32::try_from(default).unwrap_or(u32::MAX)),
                Some(v) => u32::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                    invalid(format!(
                        "networkBandwidth.{field} is {v}; it must be between 1 and {} bytes",
                        u32::MAX
                    ))
                }),
            }
        };
        let burst = bytes("burst", fault.burst, (rate / 100).max(MIN_DEFAULT_BURST))?;
        let queued = rate.saturating_mul(DEFAULT_QUEUE_MILLIS) / 1000;
        let limit = bytes(
            "limit",
            fault.limit,
            u64::from(burst).saturating_add(queued),
        )?;
        Ok(Self { rate, burst, limit })
    }

    /// Appends `TCA_OPTIONS` as tc does.
    pub(crate) fn write_options(&self, msg: &mut Message, psched: &Psched) {
        // mtu 0: tc sizes the table for 2047-byte packets (cells of 8 bytes).
        let (spec, table) = rate_table(psched, self.rate, 0);
        let mut qopt = Vec::with_capacity(36);
        qopt.extend_from_slice(&spec.to_bytes());
        qopt.extend_from_slice(&RateSpec::ZERO.to_bytes()); // no peak rate
        qopt.extend_from_slice(&self.limit.to_ne_bytes());
        // tc computes the bucket's ticks from the 32-bit rate field; kernels use TCA_TBF_BURST.
        let buffer = psched.xmittime(u64::from(rate32(self.rate)), u64::from(self.burst));
        qopt.extend_from_slice(&buffer.to_ne_bytes());
        qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only with a peak rate

        let nest = msg.begin_nest(TCA_OPTIONS);
        msg.attr(TCA_TBF_PARMS, &qopt);
        msg.attr_u32(TCA_TBF_BURST, self.burst);
        if self.rate >= 1 << 32 {
            msg.attr_u64(TCA_TBF_RATE64, self.rate);
        }
        msg.attr(TCA_TBF_RTAB, &table);
        msg.end_nest(nest);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{assert_same_request, load};
    use super::super::netlink::{TC_H_ROOT, TcHeader, Verb};
    use super::*;

    fn root_replace(fixture: &str, tbf: Tbf) {
        let fixture = load(fixture);
        let tcm = TcHeader {
            handle: 0xfa17_0000,
            parent: TC_H_ROOT,
            ..TcHeader::default()
        };
        let mut msg = Message::new_qdisc(Verb::Replace, tcm, "tbf", "t".into());
        tbf.write_options(&mut msg, &fixture.psched);
        assert_same_request(&fixture, &msg);
    }

    #[test]
    fn tbf_1mbit_is_encoded_as_tc_encodes_it() {
        // tc qdisc replace dev lo root handle fa17: tbf rate 1mbit burst 32768 limit 65536
        root_replace(
            "tbf_1mbit",
            Tbf {
                rate: 125_000,
                burst: 32_768,
                limit: 65_536,
            },
        );
    }

    #[test]
    fn tbf_in_bytes_per_second_is_encoded_as_tc_encodes_it() {
        // tc qdisc replace dev lo root handle fa17: tbf rate 100kbps burst 10000 limit 20000
        root_replace(
            "tbf_100kbps",
            Tbf {
                rate: 100_000,
                burst: 10_000,
                limit: 20_000,
            },
        );
    }

    #[test]
    fn tbf_with_a_fractional_rate_is_encoded_as_tc_encodes_it() {
        // tc qdisc replace dev lo root handle fa17: tbf rate 8.5mbit burst 20000 limit 150000
        root_replace(
            "tbf_8mbit_fractional",
            Tbf {
                rate: 1_062_500,
                burst: 20_000,
                limit: 150_000,
            },
        );
    }

    #[test]
    fn tbf_above_4_gigabytes_per_second_carries_rate64_as_tc_does() {
        // tc qdisc replace dev lo root handle fa17: tbf rate 40gbit burst 4000000 limit 8000000
        root_replace(
            "tbf_40gbit_rate64",
            Tbf {
                rate: 5_000_000_000,
                burst: 4_000_000,
                limit: 8_000_000,
            },
        );
    }

    #[test]
    fn unset_burst_and_limit_get_ten_and_a_hundred_milliseconds() {
        let fault = BandwidthFault {
            rate: "8mbit".into(),
            ..BandwidthFault::default()
        };
        assert_eq!(
            Tbf::from_fault(&fault).unwrap(),
            Tbf {
                rate: 1_000_000,
                burst: 16_384,
                limit: 116_384
            }
        );
        let fast = BandwidthFault {
            rate: "1gbit".into(),
            ..BandwidthFault::default()
        };
        assert_eq!(Tbf::from_fault(&fast).unwrap().burst, 1_250_000);
    }

    #[test]
    fn bad_rates_and_sizes_are_invalid_input() {
        for fault in [
            BandwidthFault {
                rate: "fast".into(),
                ..BandwidthFault::default()
            },
            BandwidthFault {
                rate: "1mbit".into(),
                burst: Some(0),
                ..BandwidthFault::default()
            },
            BandwidthFault {
                rate: "1mbit".into(),
                limit: Some(1 << 40),
                ..BandwidthFault::default()
            },
        ] {
            let err = Tbf::from_fault(&fault).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{fault:?}");
        }
    }
}
