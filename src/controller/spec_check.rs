//! The checks the controller makes on a spec before acting on it. The API server enforces the
//! same rules through the CRD schema; these catch an object that bypassed it (an old CRD, a
//! direct etcd write), so that a bad spec fails with a message naming the field instead of
//! failing halfway through an injection.

use std::time::Duration;

use crate::{
    api::{ChaosExperimentSpec, FaultKind, GoDuration},
    selection::LabelMatcher,
};

/// Durations the controller needs, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedTimes {
    pub duration: Duration,
    pub recovery_timeout: Duration,
    pub revert_timeout: Duration,
}

fn parse(field: &str, value: &GoDuration) -> Result<Duration, String> {
    value.parse().map_err(|e| format!("{field}: {e}"))
}

/// Checks the spec; the error names the field and says what is wrong.
pub fn check_spec(spec: &ChaosExperimentSpec) -> Result<ParsedTimes, String> {
    let duration = parse("spec.duration", &spec.duration)?;
    if duration.is_zero() {
        return Err("spec.duration: must be more than 0s".into());
    }
    if spec.faults.is_empty() {
        return Err("spec.faults: at least one fault is required".into());
    }
    for (i, fault) in spec.faults.iter().enumerate() {
        let Some(kind) = fault.kind() else {
            return Err(format!(
                "spec.faults[{i}]: set exactly one of podKill, networkLatency, networkLoss, networkBandwidth or networkPartition"
            ));
        };
        match kind {
            FaultKind::PodKill(kill) => {
                if let Some(interval) = &kill.interval {
                    parse(&format!("spec.faults[{i}].podKill.interval"), interval)?;
                }
            }
            FaultKind::NetworkLatency(latency) => {
                parse(
                    &format!("spec.faults[{i}].networkLatency.latency"),
                    &latency.latency,
                )?;
                if let Some(jitter) = &latency.jitter {
                    parse(&format!("spec.faults[{i}].networkLatency.jitter"), jitter)?;
                }
            }
            FaultKind::NetworkLoss(loss) if !(0.0..=100.0).contains(&loss.percent) => {
                return Err(format!(
                    "spec.faults[{i}].networkLoss.percent: {} is not a percentage (0-100)",
                    loss.percent
                ));
            }
            FaultKind::NetworkPartition(partition)
                if partition.peers.cidrs.is_empty() && partition.peers.selector.is_none() =>
            {
                return Err(format!(
                    "spec.faults[{i}].networkPartition.peers: name CIDRs or a pod selector"
                ));
            }
            _ => {}
        }
    }
    if let Some(selector) = &spec.target.label_selector {
        LabelMatcher::new(selector).map_err(|e| e.to_string())?;
    }
    let mut recovery_timeout = Duration::from_secs(60);
    if let Some(steady) = &spec.steady_state {
        recovery_timeout = parse("spec.steadyState.recoveryTimeout", &steady.recovery_timeout)?;
        for (i, probe) in steady.probes.iter().enumerate() {
            if probe.check().is_none() {
                return Err(format!(
                    "spec.steadyState.probes[{i}]: set exactly one of http, kubernetes or prometheus"
                ));
            }
            let interval = parse(
                &format!("spec.steadyState.probes[{i}].interval"),
                &probe.interval,
            )?;
            if interval.is_zero() {
                return Err(format!(
                    "spec.steadyState.probes[{i}].interval: must be more than 0s"
                ));
            }
            parse(
                &format!("spec.steadyState.probes[{i}].timeout"),
                &probe.timeout,
            )?;
        }
    }
    let revert_timeout = parse("spec.abort.revertTimeout", &spec.abort.revert_timeout)?;
    Ok(ParsedTimes {
        duration,
        recovery_timeout,
        revert_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Fault, LatencyFault, PodKillFault};

    fn spec() -> ChaosExperimentSpec {
        ChaosExperimentSpec {
            duration: "30s".into(),
            faults: vec![Fault {
                pod_kill: Some(PodKillFault::default()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_spec_parses_its_times() {
        let times = check_spec(&spec()).unwrap();
        assert_eq!(times.duration, Duration::from_secs(30));
        assert_eq!(times.revert_timeout, Duration::from_secs(30));
    }

    #[test]
    fn errors_name_the_field() {
        let mut bad = spec();
        bad.duration = "fast".into();
        assert_eq!(
            check_spec(&bad).unwrap_err(),
            "spec.duration: \"fast\" is not a duration (try 30s, 5m or 1h30m)"
        );

        let mut bad = spec();
        bad.faults.push(Fault::default());
        assert!(
            check_spec(&bad)
                .unwrap_err()
                .starts_with("spec.faults[1]: set exactly one")
        );

        let mut bad = spec();
        bad.faults[0] = Fault {
            network_latency: Some(LatencyFault {
                latency: "soon".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            check_spec(&bad)
                .unwrap_err()
                .starts_with("spec.faults[0].networkLatency.latency:")
        );
    }
}
