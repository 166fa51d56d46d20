//! netem, the network emulator: delay (with jitter and correlation) and loss.
//!
//! Encoded as iproute2 6.9 and later encode `tc qdisc ... netem delay D [J [C]] loss P [C]`:
//! `TCA_OPTIONS` is not a plain nest but `struct tc_netem_qopt` followed by attributes, the
//! delay and jitter in nanoseconds (`TCA_NETEM_LATENCY64`, `TCA_NETEM_JITTER64`, understood by
//! kernels since 4.15; the 32-bit tick fields of the struct stay 0), then `TCA_NETEM_CORR`
//! when a correlation is given. Older tc binaries put ticks in the struct instead, which limits
//! delays to about 4.3 s.

use std::io;
use std::time::Duration;

use crate::api::{
    NetworkFault,
    duration_bounds::{JITTER, LATENCY},
};

use super::netlink::{Message, TCA_OPTIONS};
use super::psched::percent;

const TCA_NETEM_CORR: u16 = 1;
const TCA_NETEM_LATENCY64: u16 = 10;
const TCA_NETEM_JITTER64: u16 = 11;

/// tc's default queue: 1000 packets.
const NETEM_LIMIT: u32 = 1000;

/// What netem does to each packet. Probabilities are scaled to `u32` ([`percent`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Netem {
    /// Added delay in nanoseconds; `None` adds none (and sends no delay attribute).
    pub latency_ns: Option<i64>,
    /// Random variation of the delay in nanoseconds.
    pub jitter_ns: Option<i64>,
    pub delay_correlation: Option<u32>,
    pub loss: u32,
    pub loss_correlation: Option<u32>,
    pub limit: u32,
}

/// A delay within the CRD's limits, in nanoseconds: a FaultInjection that bypassed the schema
/// is refused with the field's name rather than holding packets for years.
fn nanos(
    field: &str,
    text: &crate::api::GoDuration,
    bounds: &crate::api::duration_bounds::DurationBounds,
) -> io::Result<i64> {
    let duration: Duration = text
        .parse_within(field, bounds)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    i64::try_from(duration.as_nanos()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{field} {text} is too long"),
        )
    })
}

fn correlation(field: &str, value: Option<i32>) -> io::Result<Option<u32>> {
    value
        .map(|c| {
            if (0..=100).contains(&c) {
                Ok(percent(f64::from(c)))
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{field} is {c}; it must be between 0 and 100"),
                ))
            }
        })
        .transpose()
}

impl Netem {
    /// The netem settings of a latency or loss fault.
    pub(crate) fn from_fault(fault: &NetworkFault) -> io::Result<Self> {
        let mut netem = Netem {
            limit: NETEM_LIMIT,
            ..Netem::default()
        };
        match (&fault.latency, &fault.loss) {
            (Some(latency), None) => {
                netem.latency_ns = Some(nanos("latency.latency", &latency.latency, &LATENCY)?);
                netem.jitter_ns = latency
                    .jitter
                    .as_ref()
                    .map(|j| nanos("latency.jitter", j, &JITTER))
                    .transpose()?;
                // As tc: a delay correlation only goes with a jitter (it correlates the jitter).
                if netem.jitter_ns.is_some() {
                    netem.delay_correlation =
                        correlation("latency.correlation", latency.correlation)?;
                }
            }
            (None, Some(loss)) => {
                if !(0.0..=100.0).contains(&loss.percent) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "loss.percent is {}; it must be between 0 and 100",
                            loss.percent
                        ),
                    ));
                }
                netem.loss = percent(loss.percent);
                netem.loss_correlation = correlation("loss.correlation", loss.correlation)?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "netem carries out latency or loss faults; this fault sets neither (or both)",
                ));
            }
        }
        Ok(netem)
    }

    /// Appends `TCA_OPTIONS` as tc does.
    pub(crate) fn write_options(&self, msg: &mut Message) {
        let mut qopt = Vec::with_capacity(24);
        qopt.extend_from_slice(&0u32.to_ne_bytes()); // latency in ticks: see LATENCY64
        qopt.extend_from_slice(&self.limit.to_ne_bytes());
        qopt.extend_from_slice(&self.loss.to_ne_bytes());
        qopt.extend_from_slice(&0u32.to_ne_bytes()); // gap
        qopt.extend_from_slice(&0u32.to_ne_bytes()); // duplicate
        qopt.extend_from_slice(&0u32.to_ne_bytes()); // jitter in ticks: see JITTER64

        let options = msg.begin_nest(TCA_OPTIONS);
        msg.put(&qopt);
        if let Some(latency) = self.latency_ns {
            msg.attr(TCA_NETEM_LATENCY64, &latency.to_ne_bytes());
        }
        if let Some(jitter) = self.jitter_ns {
            msg.attr(TCA_NETEM_JITTER64, &jitter.to_ne_bytes());
        }
        if self.delay_correlation.is_some() || self.loss_correlation.is_some() {
            let mut corr = Vec::with_capacity(12);
            corr.extend_from_slice(&self.delay_correlation.unwrap_or(0).to_ne_bytes());
            corr.extend_from_slice(&self.loss_correlation.unwrap_or(0).to_ne_bytes());
            corr.extend_from_slice(&0u32.to_ne_bytes()); // duplicate correlation
            msg.attr(TCA_NETEM_CORR, &corr);
        }
        msg.end_nest(options);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{assert_same_request, load};
    use super::super::netlink::{TC_H_ROOT, TcHeader, Verb};
    use super::*;
    use crate::api::{LatencyFault, LossFault};

    fn latency(latency: &str, jitter: Option<&str>, correlation: Option<i32>) -> NetworkFault {
        NetworkFault {
            latency: Some(LatencyFault {
                latency: latency.into(),
                jitter: jitter.map(Into::into),
                correlation,
                ..LatencyFault::default()
            }),
            ..NetworkFault::default()
        }
    }

    fn loss(percent: f64, correlation: Option<i32>) -> NetworkFault {
        NetworkFault {
            loss: Some(LossFault {
                percent,
                correlation,
                ..LossFault::default()
            }),
            ..NetworkFault::default()
        }
    }

    fn root_replace(fixture: &str, netem: Netem) {
        let fixture = load(fixture);
        let tcm = TcHeader {
            handle: 0xfa17_0000,
            parent: TC_H_ROOT,
            ..TcHeader::default()
        };
        let mut msg = Message::new_qdisc(Verb::Replace, tcm, "netem", "t".into());
        netem.write_options(&mut msg);
        assert_same_request(&fixture, &msg);
    }

    #[test]
    fn delay_jitter_correlation_and_loss_are_encoded_as_tc_encodes_them() {
        // tc qdisc replace dev lo root handle fa17: netem delay 50ms 10ms 25% loss 1%
        // (one fault sets latency or loss; tc's command sets both, so the test merges them)
        let delay = Netem::from_fault(&latency("50ms", Some("10ms"), Some(25))).unwrap();
        let drop = Netem::from_fault(&loss(1.0, None)).unwrap();
        root_replace(
            "netem_delay_jitter_corr_loss",
            Netem {
                loss: drop.loss,
                ..delay
            },
        );
    }

    #[test]
    fn a_plain_delay_is_encoded_as_tc_encodes_it() {
        // tc qdisc replace dev lo root handle fa17: netem delay 100ms
        root_replace(
            "netem_delay",
            Netem::from_fault(&latency("100ms", None, None)).unwrap(),
        );
    }

    #[test]
    fn a_delay_with_jitter_is_encoded_as_tc_encodes_it() {
        // tc qdisc replace dev lo root handle fa17: netem delay 1s 250us
        root_replace(
            "netem_delay_jitter",
            Netem::from_fault(&latency("1s", Some("250us"), None)).unwrap(),
        );
    }

    #[test]
    fn delays_beyond_the_32_bit_tick_range_are_encoded_as_tc_encodes_them() {
        // tc qdisc replace dev lo root handle fa17: netem delay 300s 1ms 100%
        // Built directly: a fault's latency is at most 1m (LATENCY), but the encoding holds
        // any delay.
        let short = Netem::from_fault(&latency("1m", Some("1ms"), Some(100))).unwrap();
        root_replace(
            "netem_delay_long",
            Netem {
                latency_ns: Some(300_000_000_000),
                ..short
            },
        );
    }

    #[test]
    fn delays_past_the_crd_limits_are_refused_by_name() {
        let error = Netem::from_fault(&latency("5m", None, None)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "latency.latency: \"5m\" is longer than the maximum of 1m"
        );
        let error =
            Netem::from_fault(&latency("10ms", Some("999999999999999999999h"), None)).unwrap_err();
        assert!(error.to_string().starts_with("latency.jitter: "), "{error}");
    }

    #[test]
    fn loss_with_correlation_is_encoded_as_tc_encodes_it() {
        // tc qdisc replace dev lo root handle fa17: netem loss 0.5% 33%
        root_replace(
            "netem_loss_corr",
            Netem::from_fault(&loss(0.5, Some(33))).unwrap(),
        );
        // tc qdisc replace dev lo root handle fa17: netem loss 30% 10
        // (30% is a tie in rint: tc rounds it to even)
        root_replace(
            "netem_loss_30",
            Netem::from_fault(&loss(30.0, Some(10))).unwrap(),
        );
    }

    #[test]
    fn a_netem_leaf_under_the_scoped_class_is_encoded_as_tc_encodes_it() {
        // tc qdisc add dev lo parent fa17:2 handle 2: netem delay 20ms
        let fixture = load("netem_leaf");
        let tcm = TcHeader {
            handle: 0x0002_0000,
            parent: 0xfa17_0002,
            ..TcHeader::default()
        };
        let mut msg = Message::new_qdisc(Verb::Add, tcm, "netem", "t".into());
        Netem::from_fault(&latency("20ms", None, None))
            .unwrap()
            .write_options(&mut msg);
        assert_same_request(&fixture, &msg);
    }

    #[test]
    fn a_correlation_without_jitter_is_dropped_as_tc_drops_it() {
        let netem = Netem::from_fault(&latency("10ms", None, Some(50))).unwrap();
        assert_eq!(netem.delay_correlation, None);
    }

    #[test]
    fn faults_netem_cannot_carry_out_are_invalid_input() {
        for fault in [
            NetworkFault::default(),
            loss(101.0, None),
            loss(5.0, Some(-1)),
            latency("soon", None, None),
        ] {
            let err = Netem::from_fault(&fault).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{fault:?}");
        }
    }
}
