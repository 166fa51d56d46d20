//! CEL rules across fields, for the CRDs: what `faultline validate` used to check alone and the
//! API server now refuses too (the probe checks, names that must fit, jitter and latency).
//!
//! Every rule here is costed by the API server before it accepts a CRD (see [`super::bounds`]):
//! a rule on an experiment runs up to 16 × 16 times in a GameDay, so each one reads only bounded
//! strings and lists, and every `duration()` call is guarded by the duration pattern (CEL's
//! `duration()` fails on a malformed value; the field's own rule reports that one).

use kube::core::{Message, Rule};

use super::duration_bounds::cel_well_formed;

/// The most a Kubernetes object name may hold when it is also a label value (experiments'
/// names are, on their FaultInjections).
pub const NAME_LIMIT: usize = 63;

/// A ChaosSchedule's runs are named `<schedule>-<unix time>`: 10 digits and a dash.
pub const SCHEDULE_NAME_LIMIT: usize = NAME_LIMIT - 11;

/// A number as the `field` check of a Kubernetes probe compares it: digits with an optional
/// sign, fraction and exponent (`2`, `-0.5`, `1e3`).
pub const NUMBER_PATTERN: &str = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$";

/// A Kubernetes probe's `apiVersion`: `v1`, or a DNS-subdomain group and a version
/// (`apps/v1`, `example.com/v1beta1`).
pub const API_VERSION_PATTERN: &str =
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[A-Za-z0-9]+$";

/// A path into an object in the probe's dotted syntax: `.status.readyReplicas`,
/// `.status.conditions[0].status`, `.metadata.annotations['example.com/x']`.
pub const FIELD_PATH_PATTERN: &str =
    r#"^\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+|\[('[^\]]*'|"[^\]]*"|[0-9]+)\])*$"#;

/// A bandwidth `rate` (already in [`super::bounds::RATE_PATTERN`]'s shape) below one byte per
/// second, zero included: the kernel's shapers count whole bytes, so the agent could only refuse
/// it once the experiment had started. Exact in decimal, unit by unit: `bit` below 8, `bps`
/// below 1, `kbit` below 0.008, `kbps` below 0.001, and so on for `m` and `g`.
pub const SUB_BYTE_RATE_PATTERN: &str = concat!(
    r"^(0*[0-7](\.[0-9]+)?bit",
    r"|0+(\.[0-9]+)?bps",
    r"|0+(\.(0{1,2}|00[0-7][0-9]*))?kbit",
    r"|0+(\.(0{1,2}|000[0-9]*))?kbps",
    r"|0+(\.(0{1,5}|0{5}[0-7][0-9]*))?mbit",
    r"|0+(\.(0{1,5}|0{6}[0-9]*))?mbps",
    r"|0+(\.(0{1,8}|0{8}[0-7][0-9]*))?gbit",
    r"|0+(\.(0{1,8}|0{9}[0-9]*))?gbps)$",
);

/// A bandwidth `rate` of at least one byte per second (see [`SUB_BYTE_RATE_PATTERN`]).
pub fn rate_at_least_one_byte() -> Rule {
    Rule::new(format!(
        "!self.matches('{}')",
        SUB_BYTE_RATE_PATTERN.replace('\\', r"\\")
    ))
    .message(Message::Expression(
        "'rate ' + self + ' is less than one byte per second; use at least 8bit (or 1bps); to stop the traffic, use networkPartition (or networkLoss with percent 100)'".into(),
    ))
}

/// `networkLatency`: the jitter is at most the latency (a larger one would ask for negative
/// delays).
pub fn jitter_within_latency() -> Rule {
    Rule::new(format!(
        "!has(self.jitter) || !{} || !{} || duration(self.jitter) <= duration(self.latency)",
        cel_well_formed("self.jitter"),
        cel_well_formed("self.latency"),
    ))
    .field_path(".jitter")
    .message(Message::Expression(
        "'jitter ' + self.jitter + ' is larger than latency ' + self.latency + ': delays would go below zero; use a jitter of at most the latency'".into(),
    ))
}

/// A probe's timeout is shorter than its interval: checks would overlap otherwise.
pub fn timeout_within_interval() -> Rule {
    Rule::new(format!(
        "!{} || !{} || duration(self.timeout) < duration(self.interval)",
        cel_well_formed("self.timeout"),
        cel_well_formed("self.interval"),
    ))
    .field_path(".timeout")
    .message(Message::Expression(
        "'timeout ' + self.timeout + ' is not shorter than interval ' + self.interval + ': checks would overlap; make the timeout shorter than the interval'".into(),
    ))
}

/// The probes that run `during` the faults check at least once while they last: one whose
/// interval is longer than the experiment's duration would never run.
pub fn during_probes_run() -> Rule {
    let fits = |p: &str| {
        format!(
            "(has({p}.phases) && !('during' in {p}.phases)) || !{} || duration({p}.interval) <= duration(self.duration)",
            cel_well_formed(&format!("{p}.interval"))
        )
    };
    Rule::new(format!(
        "!has(self.steadyState) || !{} || self.steadyState.probes.all(p, {})",
        cel_well_formed("self.duration"),
        fits("p"),
    ))
    .field_path(".steadyState.probes")
    .message(Message::Expression(
        "'a probe that runs during the faults has an interval longer than the experiment\\'s duration (' + self.duration + '): it would never run while the faults are in; shorten its interval or lengthen the duration'".into(),
    ))
}

/// A Kubernetes probe's `field` check with an ordering operator compares numbers.
pub fn ordering_compares_numbers() -> Rule {
    Rule::new(format!(
        "self.operator in ['==', '!='] || self.value.matches('{}')",
        NUMBER_PATTERN.replace('\\', r"\\")
    ))
    .field_path(".value")
    .message(Message::Expression(
        "'\"' + self.value + '\" is not a number, but operator ' + self.operator + ' compares numbers'".into(),
    ))
}

/// The day's probes that run `during` the faults are added to every experiment of the day: each
/// must check at least once while any of them lasts (the experiment would be refused otherwise,
/// and the stage could not start).
pub fn day_probes_run() -> Rule {
    let during = |p: &str| format!("(!has({p}.phases) || 'during' in {p}.phases)");
    Rule::new(format!(
        "!has(self.steadyState) || self.stages.all(s, s.experiments.all(e, !{} || self.steadyState.probes.all(p, !{} || !{} || duration(p.interval) <= duration(e.spec.duration))))",
        cel_well_formed("e.spec.duration"),
        during("p"),
        cel_well_formed("p.interval"),
    ))
    .field_path(".steadyState.probes")
    .message("a probe of the game day runs during the faults of every experiment, so its interval must not be longer than any experiment's duration (it would never run): shorten its interval, or run it only before and after (phases: [before, after])")
}

/// A ChaosExperiment's name is a label value on its FaultInjections (as a Job's is on its
/// pods, which is why Job names have the same limit): a longer one would be accepted and then
/// refused at the first FaultInjection's create, after the targets were chosen.
pub fn experiment_name_fits() -> Rule {
    Rule::new(format!("size(self.metadata.name) <= {NAME_LIMIT}")).message(Message::Message(
        format!(
            "metadata.name: at most {NAME_LIMIT} characters: the experiment's FaultInjections carry it as a label value. Choose a shorter name"
        ),
    ))
}

/// A ChaosSchedule's name leaves room for the Unix time its runs add.
pub fn schedule_name_fits() -> Rule {
    Rule::new(format!(
        "size(self.metadata.name) <= {SCHEDULE_NAME_LIMIT}"
    ))
    .message(Message::Message(format!(
        "metadata.name: the runs of a schedule are named <schedule>-<unix time> and must fit in {NAME_LIMIT} characters, so the schedule's name may have at most {SCHEDULE_NAME_LIMIT}"
    )))
}

/// The experiments of a GameDay are named `<gameday>-<stage>-<experiment>`: every such name
/// fits.
pub fn gameday_names_fit() -> Rule {
    Rule::new(format!(
        "self.spec.stages.all(s, s.experiments.all(e, size(self.metadata.name) + size(s.name) + size(e.name) + 2 <= {NAME_LIMIT}))"
    ))
    .message(Message::Message(format!(
        "the game day's experiments are named <gameday>-<stage>-<experiment>, and each such name must fit in {NAME_LIMIT} characters: shorten the game day's name, a stage's or an experiment's"
    )))
}

/// The day's probes are added to every experiment of a GameDay: their names must not collide
/// with an experiment's own, and together they must fit the 32 probes an experiment holds.
pub fn day_probes_fit() -> Rule {
    Rule::new(
        "!has(self.steadyState) || self.stages.all(s, s.experiments.all(e, !has(e.spec.steadyState) || (size(e.spec.steadyState.probes) + size(self.steadyState.probes) <= 32 && e.spec.steadyState.probes.all(p, !self.steadyState.probes.exists(g, g.name == p.name)))))",
    )
    .field_path(".steadyState.probes")
    .message("the game day's probes are added to every experiment: none may have the name of an experiment's own probe, and with them an experiment may have at most 32 probes")
}
