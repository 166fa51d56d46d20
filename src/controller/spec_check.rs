//! The checks the controller makes on a spec before acting on it. The API server enforces the
//! same rules through the CRD schema; these catch an object that bypassed it (an old CRD, a
//! direct etcd write), so that a bad spec fails with a message naming the field instead of
//! failing halfway through an injection.

use std::time::Duration;

use crate::{
    api::{
        ChaosExperimentSpec, FaultKind, SteadyState,
        duration_bounds::{
            EXPERIMENT_DURATION, HTTP_MAX_LATENCY, JITTER, LATENCY, POD_KILL_INTERVAL,
            PROBE_INTERVAL, PROBE_TIMEOUT, RECOVERY_TIMEOUT, REVERT_TIMEOUT,
        },
        rules::NAME_LIMIT,
    },
    selection::LabelMatcher,
};

/// Durations the controller needs, parsed once.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedTimes {
    pub duration: Duration,
    pub recovery_timeout: Duration,
    pub revert_timeout: Duration,
}

/// Checks an experiment's name: its FaultInjections carry it as a label value.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > NAME_LIMIT {
        return Err(format!(
            "metadata.name: {} characters, over the {NAME_LIMIT} a label value holds: the experiment's FaultInjections carry it as one. Create the experiment again under a shorter name",
            name.len()
        ));
    }
    Ok(())
}

/// Checks the spec; the error names the field and says what is wrong.
pub fn check_spec(spec: &ChaosExperimentSpec) -> Result<ParsedTimes, String> {
    check_spec_at(spec, "spec")
}

/// [`check_spec`] for a spec found at `path` (a GameDay's stage experiment, a schedule's
/// template), so that the error names the field where the user wrote it.
pub fn check_spec_at(spec: &ChaosExperimentSpec, path: &str) -> Result<ParsedTimes, String> {
    let duration = spec
        .duration
        .parse_within(&format!("{path}.duration"), &EXPERIMENT_DURATION)?;
    if spec.faults.is_empty() {
        return Err(format!("{path}.faults: at least one fault is required"));
    }
    for (i, fault) in spec.faults.iter().enumerate() {
        let at = format!("{path}.faults[{i}]");
        let Some(kind) = fault.kind() else {
            return Err(format!(
                "{at}: set exactly one of podKill, networkLatency, networkLoss, networkBandwidth or networkPartition"
            ));
        };
        match kind {
            FaultKind::PodKill(kill) => {
                if let Some(interval) = &kill.interval {
                    interval.parse_within(&format!("{at}.podKill.interval"), &POD_KILL_INTERVAL)?;
                }
            }
            FaultKind::NetworkLatency(latency) => {
                let at = format!("{at}.networkLatency");
                latency
                    .latency
                    .parse_within(&format!("{at}.latency"), &LATENCY)?;
                if let Some(jitter) = &latency.jitter {
                    jitter.parse_within(&format!("{at}.jitter"), &JITTER)?;
                }
            }
            FaultKind::NetworkLoss(loss) if !(0.0..=100.0).contains(&loss.percent) => {
                return Err(format!(
                    "{at}.networkLoss.percent: {} is not a percentage (0-100)",
                    loss.percent
                ));
            }
            FaultKind::NetworkPartition(partition)
                if partition.peers.cidrs.is_empty() && partition.peers.selector.is_none() =>
            {
                return Err(format!(
                    "{at}.networkPartition.peers: name CIDRs or a pod selector"
                ));
            }
            _ => {}
        }
    }
    if let Some(selector) = &spec.target.label_selector {
        LabelMatcher::new(selector).map_err(|e| e.to_string())?;
    }
    let recovery_timeout = match &spec.steady_state {
        Some(steady) => check_steady_state(steady, &format!("{path}.steadyState"))?,
        None => Duration::from_secs(60),
    };
    let revert_timeout = spec
        .abort
        .revert_timeout
        .parse_within(&format!("{path}.abort.revertTimeout"), &REVERT_TIMEOUT)?;
    Ok(ParsedTimes {
        duration,
        recovery_timeout,
        revert_timeout,
    })
}

/// What is wrong with a probe's `bodyRegex`, the way the probe would compile it; `None` when it
/// compiles.
pub fn regex_problem(pattern: &str) -> Option<String> {
    let err = regex::Regex::new(pattern).err()?.to_string();
    let reason = err.lines().last().unwrap_or("invalid").trim().to_string();
    Some(format!(
        "{pattern:?} is not a regular expression ({reason})"
    ))
}

/// Checks a steady-state hypothesis found at `path`; returns its recovery timeout.
pub fn check_steady_state(steady: &SteadyState, path: &str) -> Result<Duration, String> {
    let recovery_timeout = steady
        .recovery_timeout
        .parse_within(&format!("{path}.recoveryTimeout"), &RECOVERY_TIMEOUT)?;
    for (i, probe) in steady.probes.iter().enumerate() {
        let at = format!("{path}.probes[{i}]");
        if probe.check().is_none() {
            return Err(format!(
                "{at}: set exactly one of http, kubernetes or prometheus"
            ));
        }
        probe
            .interval
            .parse_within(&format!("{at}.interval"), &PROBE_INTERVAL)?;
        probe
            .timeout
            .parse_within(&format!("{at}.timeout"), &PROBE_TIMEOUT)?;
        if let Some(max) = probe.http.as_ref().and_then(|h| h.max_latency.as_ref()) {
            max.parse_within(&format!("{at}.http.maxLatency"), &HTTP_MAX_LATENCY)?;
        }
        // The CRD cannot check this one (CEL compiles no regex it is given as data).
        if let Some(pattern) = probe.http.as_ref().and_then(|h| h.body_regex.as_ref())
            && let Some(problem) = regex_problem(pattern)
        {
            return Err(format!("{at}.http.bodyRegex: {problem}"));
        }
    }
    Ok(recovery_timeout)
}

#[cfg(test)]
mod name_tests {
    #[test]
    fn a_name_longer_than_a_label_value_is_refused_naming_the_field() {
        assert!(super::check_name(&"a".repeat(63)).is_ok());
        let refused = super::check_name(&"a".repeat(64)).unwrap_err();
        assert!(
            refused.starts_with("metadata.name: 64 characters"),
            "{refused}"
        );
    }
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

        // What used to panic the controller, and what used to run for 11,400 years.
        for poison in ["999999999999999999999h", "100000000h"] {
            let mut bad = spec();
            bad.duration = poison.into();
            assert_eq!(
                check_spec(&bad).unwrap_err(),
                format!("spec.duration: {poison:?} is longer than the maximum of 24h")
            );
        }
        let mut bad = spec();
        bad.faults[0].pod_kill = Some(PodKillFault {
            interval: Some("1ms".into()),
            ..Default::default()
        });
        assert_eq!(
            check_spec_at(&bad, "spec.experimentTemplate.spec").unwrap_err(),
            "spec.experimentTemplate.spec.faults[0].podKill.interval: \"1ms\" is shorter than the minimum of 1s"
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
