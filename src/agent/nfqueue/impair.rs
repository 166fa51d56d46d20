//! What happens to each packet: dropped, or released after a delay. Pure (the random source is
//! passed in), so the statistics are unit-tested.
//!
//! Delay follows netem without a distribution table: uniform in `delay ± jitter`, where the
//! uniform value is correlated with the previous one (netem's `get_crandom`):
//! `u = (1 - ρ)·fresh + ρ·last`. Correlation narrows the spread around `delay`, as in netem.
//! With jitter larger than the delay, packets drawn below zero go at once, as in netem.
//!
//! Loss is a two-state Markov chain: after a kept packet the next is lost with probability
//! `(1 - ρ)·p`, after a lost one with `ρ + (1 - ρ)·p`. Its long-run loss rate is exactly `p`
//! and losses come in bursts as ρ grows. (netem applies `get_crandom` to loss too, which makes
//! the real loss rate drift away from `p` as ρ grows; we keep the rate the user asked for.)

use std::time::Duration;

use rand::{Rng, RngCore};

use crate::api::{
    Direction, LatencyFault, LossFault, NetworkFault, NetworkFaultKind,
    duration_bounds::{JITTER, LATENCY},
};

/// The impairment of one queue.
#[derive(Clone, Debug, PartialEq)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    /// 0.0-1.0
    pub delay_correlation: f64,
    /// 0.0-1.0
    pub loss: f64,
    /// 0.0-1.0
    pub loss_correlation: f64,
}

impl Impairment {
    pub const NONE: Impairment = Impairment {
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
        delay_correlation: 0.0,
        loss: 0.0,
        loss_correlation: 0.0,
    };

    /// The impairment and direction of a latency or loss fault; other kinds are not ours.
    pub fn from_fault(fault: &NetworkFault) -> Result<(Self, Direction), String> {
        match fault.kind() {
            Some(NetworkFaultKind::Latency(latency)) => Self::latency(latency),
            Some(NetworkFaultKind::Loss(loss)) => Self::loss(loss),
            Some(other) => Err(format!(
                "the nfqueue path carries out latency and loss, not {other:?}"
            )),
            None => Err("the fault must set exactly one kind".to_string()),
        }
    }

    fn latency(fault: &LatencyFault) -> Result<(Self, Direction), String> {
        // Within the CRD's limits: a FaultInjection that bypassed the schema is refused by
        // name rather than holding packets for years.
        let delay = fault.latency.parse_within("latency.latency", &LATENCY)?;
        let jitter = match &fault.jitter {
            Some(jitter) => jitter.parse_within("latency.jitter", &JITTER)?,
            None => Duration::ZERO,
        };
        let impairment = Self {
            delay,
            jitter,
            delay_correlation: percent(fault.correlation.unwrap_or(0).into())?,
            ..Self::NONE
        };
        Ok((impairment, fault.direction))
    }

    fn loss(fault: &LossFault) -> Result<(Self, Direction), String> {
        let impairment = Self {
            loss: percent(fault.percent)?,
            loss_correlation: percent(fault.correlation.unwrap_or(0).into())?,
            ..Self::NONE
        };
        Ok((impairment, fault.direction))
    }

    /// The longest a packet is held.
    pub fn max_delay(&self) -> Duration {
        self.delay + self.jitter
    }
}

fn percent(value: f64) -> Result<f64, String> {
    if (0.0..=100.0).contains(&value) {
        Ok(value / 100.0)
    } else {
        Err(format!("{value} is not a percentage between 0 and 100"))
    }
}

/// What to do with one packet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fate {
    Drop,
    /// Accept after this long (zero: at once).
    Release(Duration),
}

/// The per-queue state behind [`Fate`]s: the last correlated values.
#[derive(Debug)]
pub struct Impairer {
    impairment: Impairment,
    last_uniform: f64,
    last_lost: bool,
}

impl Impairer {
    pub fn new(impairment: Impairment) -> Self {
        Self {
            impairment,
            last_uniform: 0.5,
            last_lost: false,
        }
    }

    pub fn impairment(&self) -> &Impairment {
        &self.impairment
    }

    /// Changes the parameters, keeping the correlation state.
    pub fn set(&mut self, impairment: Impairment) {
        self.impairment = impairment;
    }

    pub fn fate(&mut self, rng: &mut impl RngCore) -> Fate {
        let Impairment {
            delay,
            jitter,
            delay_correlation,
            loss,
            loss_correlation,
        } = self.impairment;
        if loss > 0.0 {
            let p = if self.last_lost {
                loss_correlation + (1.0 - loss_correlation) * loss
            } else {
                (1.0 - loss_correlation) * loss
            };
            self.last_lost = rng.random_bool(p.clamp(0.0, 1.0));
            if self.last_lost {
                return Fate::Drop;
            }
        }
        if jitter.is_zero() {
            return Fate::Release(delay);
        }
        let fresh: f64 = rng.random();
        let uniform = (1.0 - delay_correlation) * fresh + delay_correlation * self.last_uniform;
        self.last_uniform = uniform;
        // delay - jitter + 2·jitter·u, in [delay - jitter, delay + jitter]
        let offset = jitter.as_secs_f64() * (2.0 * uniform - 1.0);
        Fate::Release(Duration::from_secs_f64(
            (delay.as_secs_f64() + offset).max(0.0),
        ))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::api::GoDuration;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn delays(impairment: Impairment, n: usize) -> Vec<f64> {
        let mut impairer = Impairer::new(impairment);
        let mut rng = rng();
        (0..n)
            .map(|_| match impairer.fate(&mut rng) {
                Fate::Release(d) => d.as_secs_f64() * 1000.0,
                Fate::Drop => panic!("no loss configured"),
            })
            .collect()
    }

    fn mean(values: &[f64]) -> f64 {
        values.iter().sum::<f64>() / values.len() as f64
    }

    /// Lag-1 autocorrelation.
    fn autocorrelation(values: &[f64]) -> f64 {
        let m = mean(values);
        let var: f64 = values.iter().map(|v| (v - m).powi(2)).sum();
        let cov: f64 = values.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum();
        cov / var
    }

    #[test]
    fn delay_without_jitter_is_exact() {
        let d = delays(
            Impairment {
                delay: Duration::from_millis(50),
                ..Impairment::NONE
            },
            100,
        );
        assert!(d.iter().all(|&ms| (ms - 50.0).abs() < 1e-9));
    }

    #[test]
    fn jitter_is_uniform_within_range_around_the_delay() {
        let d = delays(
            Impairment {
                delay: Duration::from_millis(50),
                jitter: Duration::from_millis(10),
                ..Impairment::NONE
            },
            20_000,
        );
        assert!(d.iter().all(|&ms| (40.0..=60.0).contains(&ms)));
        assert!((mean(&d) - 50.0).abs() < 0.2, "{}", mean(&d));
        // Uniform over 20 ms: each 5 ms quarter holds about a quarter of the packets.
        for quarter in 0..4 {
            let low = 40.0 + 5.0 * quarter as f64;
            let share =
                d.iter().filter(|&&ms| ms >= low && ms < low + 5.0).count() as f64 / d.len() as f64;
            assert!((share - 0.25).abs() < 0.02, "quarter {quarter}: {share}");
        }
        assert!(autocorrelation(&d).abs() < 0.03);
    }

    #[test]
    fn correlated_jitter_follows_the_previous_value() {
        let d = delays(
            Impairment {
                delay: Duration::from_millis(50),
                jitter: Duration::from_millis(10),
                delay_correlation: 0.75,
                ..Impairment::NONE
            },
            20_000,
        );
        assert!(d.iter().all(|&ms| (40.0..=60.0).contains(&ms)));
        assert!((mean(&d) - 50.0).abs() < 0.5);
        // u_n = 0.25·fresh + 0.75·u_{n-1}: lag-1 autocorrelation 0.75.
        let rho = autocorrelation(&d);
        assert!((rho - 0.75).abs() < 0.03, "{rho}");
    }

    fn losses(loss: f64, correlation: f64, n: usize) -> Vec<bool> {
        let mut impairer = Impairer::new(Impairment {
            loss,
            loss_correlation: correlation,
            ..Impairment::NONE
        });
        let mut rng = rng();
        (0..n)
            .map(|_| impairer.fate(&mut rng) == Fate::Drop)
            .collect()
    }

    #[test]
    fn loss_rate_is_the_requested_percentage() {
        let lost = losses(0.2, 0.0, 100_000);
        let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        assert!((rate - 0.2).abs() < 0.005, "{rate}");
    }

    #[test]
    fn correlated_loss_keeps_the_rate_and_comes_in_bursts() {
        let lost = losses(0.1, 0.5, 200_000);
        let rate = lost.iter().filter(|&&l| l).count() as f64 / lost.len() as f64;
        assert!((rate - 0.1).abs() < 0.01, "{rate}");
        // P(lost | previous lost) = 0.5 + 0.5·0.1 = 0.55
        let after_loss: Vec<bool> = lost.windows(2).filter(|w| w[0]).map(|w| w[1]).collect();
        let conditional =
            after_loss.iter().filter(|&&l| l).count() as f64 / after_loss.len() as f64;
        assert!((conditional - 0.55).abs() < 0.02, "{conditional}");
    }

    #[test]
    fn no_loss_and_full_loss_are_exact() {
        assert!(losses(0.0, 0.0, 1000).iter().all(|&l| !l));
        assert!(losses(1.0, 0.3, 1000).iter().all(|&l| l));
    }

    #[test]
    fn faults_convert_to_impairments() {
        let fault = NetworkFault {
            latency: Some(LatencyFault {
                latency: GoDuration::from("100ms"),
                jitter: Some(GoDuration::from("10ms")),
                correlation: Some(25),
                direction: Direction::Both,
                to: None,
            }),
            ..NetworkFault::default()
        };
        let (impairment, direction) = Impairment::from_fault(&fault).unwrap();
        assert_eq!(direction, Direction::Both);
        assert_eq!(impairment.delay, Duration::from_millis(100));
        assert_eq!(impairment.max_delay(), Duration::from_millis(110));
        assert_eq!(impairment.delay_correlation, 0.25);

        let fault = NetworkFault {
            loss: Some(LossFault {
                percent: 0.5,
                correlation: None,
                direction: Direction::From,
                to: None,
            }),
            ..NetworkFault::default()
        };
        let (impairment, direction) = Impairment::from_fault(&fault).unwrap();
        assert_eq!(direction, Direction::From);
        assert_eq!(impairment.loss, 0.005);
        assert_eq!(impairment.max_delay(), Duration::ZERO);

        let partition = NetworkFault {
            partition: Some(Direction::Both),
            peer_cidrs: vec!["10.0.0.0/8".into()],
            ..NetworkFault::default()
        };
        assert!(Impairment::from_fault(&partition).is_err());
    }

    #[test]
    fn jitter_larger_than_the_delay_releases_early_packets_at_once_like_netem() {
        let d = delays(
            Impairment {
                delay: Duration::from_millis(5),
                jitter: Duration::from_millis(10),
                ..Impairment::NONE
            },
            10_000,
        );
        assert!(d.iter().all(|&ms| (0.0..=15.0).contains(&ms)));
        // Uniform over [-5, 15] ms: a quarter would be negative and goes at once.
        let immediate = d.iter().filter(|&&ms| ms == 0.0).count() as f64 / d.len() as f64;
        assert!((immediate - 0.25).abs() < 0.02, "{immediate}");
    }
}
