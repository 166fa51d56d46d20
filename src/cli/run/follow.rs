//! Following a run: watches every created object until each has a verdict and prints what
//! happens as it happens (phase changes, events, targets, probe checks): timestamped lines when
//! stdout is not a terminal (CI logs), the same lines under a progress bar when it is.
//!
//! Ctrl-C (or SIGTERM, which CI systems send a cancelled job) asks the controller to abort every
//! experiment still going, the same way `faultline abort` does, and keeps waiting until they
//! report Aborted with their faults reverted; a second one stops waiting (the aborts go on).

use std::{
    collections::{HashMap, HashSet},
    io::Write,
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    core::NamespaceResourceScope,
    runtime::{WatchStreamExt, watcher},
};
use serde::de::DeserializeOwned;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
};

use super::exit_code_for;
use crate::{
    api::{ChaosExperiment, GameDay, GoDuration, Phase, Verdict},
    cli::stop::request_abort,
};

/// What kind of object a run created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::cli) enum TrackedKind {
    Experiment,
    GameDay,
}

impl TrackedKind {
    pub fn of<K: Resource<DynamicType = ()>>() -> Self {
        if K::kind(&()) == "GameDay" {
            TrackedKind::GameDay
        } else {
            TrackedKind::Experiment
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            TrackedKind::Experiment => "chaosexperiment",
            TrackedKind::GameDay => "gameday",
        }
    }
}

/// An object the run created.
pub(in crate::cli) struct Created {
    pub kind: TrackedKind,
    pub namespace: String,
    pub name: String,
}

pub(super) struct Options {
    pub timeout: Duration,
    /// Draw a progress bar (stdout is a terminal).
    pub tty: bool,
}

/// Why following stopped.
pub(super) enum End {
    /// Everything has a verdict.
    Finished,
    /// Ctrl-C: every experiment was aborted and has finished.
    Interrupted,
    /// A second Ctrl-C: stopped waiting for the aborts.
    StoppedWaiting,
    TimedOut,
    /// An experiment was deleted before it finished.
    Deleted(String),
}

pub(super) struct Outcome {
    /// The last state seen of every experiment, in the order they were created.
    pub experiments: Vec<ChaosExperiment>,
    pub gameday_verdicts: Vec<Option<Verdict>>,
    pub end: End,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self.end {
            End::Finished => exit_code_for(
                self.experiments
                    .iter()
                    .map(|e| e.status.as_ref().and_then(|s| s.verdict))
                    .chain(self.gameday_verdicts.iter().copied()),
            ),
            End::Interrupted | End::StoppedWaiting => 2,
            End::TimedOut | End::Deleted(_) => 3,
        }
    }
}

enum Update {
    Experiment(Box<ChaosExperiment>),
    GameDay(Box<GameDay>),
    Deleted(String),
    WatchError(String),
}

/// What has been printed about one experiment.
struct Seen {
    namespace: String,
    name: String,
    latest: Option<ChaosExperiment>,
    phase: Option<Phase>,
    events: HashSet<(DateTime<Utc>, String, String)>,
    last_sample: HashMap<String, DateTime<Utc>>,
    targets_printed: bool,
}

struct GameDaySeen {
    namespace: String,
    name: String,
    latest: Option<GameDay>,
    stage_phases: HashMap<String, String>,
}

impl GameDaySeen {
    fn done(&self) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|g| g.status.as_ref().is_some_and(|s| s.verdict.is_some()))
    }
}

impl Seen {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn done(&self) -> bool {
        self.phase.is_some_and(|p| p.is_terminal())
    }
}

/// Writes lines, and keeps the progress bar under them on a terminal.
struct Printer {
    tty: bool,
    bar: String,
}

impl Printer {
    fn line(&mut self, text: &str) {
        let now = Utc::now();
        let mut out = std::io::stdout().lock();
        let _ = if self.tty {
            write!(
                out,
                "\r\x1b[2K{} {text}\n{}",
                now.format("%H:%M:%S"),
                self.bar
            )
        } else {
            writeln!(out, "{} {text}", now.format("%Y-%m-%dT%H:%M:%SZ"))
        };
        let _ = out.flush();
    }

    fn bar(&mut self, bar: String) {
        if !self.tty {
            return;
        }
        self.bar = bar;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K{}", self.bar);
        let _ = out.flush();
    }

    fn clear(&mut self) {
        if self.tty && !self.bar.is_empty() {
            self.bar.clear();
            print!("\r\x1b[2K");
            let _ = std::io::stdout().flush();
        }
    }
}

fn spawn_watch<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    updates: &mpsc::UnboundedSender<Update>,
    wrap: fn(K) -> Update,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let key = format!("{namespace}/{name}");
    let updates = updates.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, config).default_backoff().boxed();
        while let Some(event) = stream.next().await {
            let update = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => wrap(o),
                Ok(watcher::Event::Delete(_)) => Update::Deleted(key.clone()),
                Ok(_) => continue,
                Err(e) => Update::WatchError(format!("watching {key}: {e}")),
            };
            if updates.send(update).is_err() {
                return;
            }
        }
    })
}

struct Follower<'a> {
    client: &'a Client,
    updates: mpsc::UnboundedSender<Update>,
    tasks: Vec<JoinHandle<()>>,
    experiments: Vec<Seen>,
    gamedays: Vec<GameDaySeen>,
    printer: Printer,
}

impl Follower<'_> {
    fn track(&mut self, kind: TrackedKind, namespace: &str, name: &str) {
        let task = match kind {
            TrackedKind::Experiment => {
                self.experiments.push(Seen {
                    namespace: namespace.into(),
                    name: name.into(),
                    latest: None,
                    phase: None,
                    events: HashSet::new(),
                    last_sample: HashMap::new(),
                    targets_printed: false,
                });
                spawn_watch(self.client, namespace, name, &self.updates, |e| {
                    Update::Experiment(Box::new(e))
                })
            }
            TrackedKind::GameDay => {
                self.gamedays.push(GameDaySeen {
                    namespace: namespace.into(),
                    name: name.into(),
                    latest: None,
                    stage_phases: HashMap::new(),
                });
                spawn_watch(self.client, namespace, name, &self.updates, |g| {
                    Update::GameDay(Box::new(g))
                })
            }
        };
        self.tasks.push(task);
    }

    fn all_done(&self) -> bool {
        self.experiments.iter().all(Seen::done) && self.gamedays.iter().all(GameDaySeen::done)
    }

    fn unfinished(&self) -> Vec<(String, String)> {
        self.experiments
            .iter()
            .filter(|s| !s.done())
            .map(|s| (s.namespace.clone(), s.name.clone()))
            .collect()
    }

    fn experiment(&mut self, experiment: ChaosExperiment) {
        let key = (
            experiment.namespace().unwrap_or_default(),
            experiment.name_any(),
        );
        let Some(seen) = self
            .experiments
            .iter_mut()
            .find(|s| (s.namespace.as_str(), s.name.as_str()) == (key.0.as_str(), key.1.as_str()))
        else {
            return;
        };
        let lines = news(seen, &experiment);
        seen.latest = Some(experiment);
        for line in lines {
            self.printer.line(&line);
        }
    }

    /// Prints stage changes; returns experiments the GameDay created that are not yet followed.
    fn gameday(&mut self, gameday: GameDay) -> Vec<(String, String)> {
        let namespace = gameday.namespace().unwrap_or_default();
        let name = gameday.name_any();
        let Some(index) = self
            .gamedays
            .iter()
            .position(|g| g.namespace == namespace && g.name == name)
        else {
            return Vec::new();
        };
        let mut lines = Vec::new();
        let mut new = Vec::new();
        let status = gameday.status.clone().unwrap_or_default();
        for stage in &status.stages {
            let seen = &mut self.gamedays[index];
            if seen.stage_phases.get(&stage.name) != Some(&stage.phase) {
                seen.stage_phases
                    .insert(stage.name.clone(), stage.phase.clone());
                lines.push(format!(
                    "gameday {namespace}/{name} stage {}: {}",
                    stage.name, stage.phase
                ));
            }
            for experiment in &stage.experiments {
                let known = self
                    .experiments
                    .iter()
                    .any(|s| s.namespace == namespace && &s.name == experiment);
                if !known && !new.iter().any(|(_, n)| n == experiment) {
                    new.push((namespace.clone(), experiment.clone()));
                }
            }
        }
        let seen = &mut self.gamedays[index];
        let was_done = seen.done();
        seen.latest = Some(gameday);
        if !was_done && let Some(verdict) = status.verdict {
            lines.push(format!(
                "gameday {namespace}/{name} finished: {verdict:?}: {}",
                status.message.as_deref().unwrap_or("")
            ));
        }
        for line in lines {
            self.printer.line(&line);
        }
        for (ns, experiment) in &new {
            self.track(TrackedKind::Experiment, ns, experiment);
        }
        new
    }

    /// The progress bar: the first unfinished experiment, and how many others are going.
    fn progress(&self, now: DateTime<Utc>) -> String {
        let mut going = self.experiments.iter().filter(|s| !s.done());
        let Some(first) = going.next() else {
            return String::new();
        };
        let others = going.count();
        let more = if others > 0 {
            format!(" (+{others} more)")
        } else {
            String::new()
        };
        let Some(experiment) = &first.latest else {
            return format!("{} waiting for the controller{more}", first.key());
        };
        let status = experiment.status.clone().unwrap_or_default();
        let duration = experiment.spec.duration.parse().unwrap_or_default();
        let since = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
        match (status.phase, status.injected_at) {
            (Phase::Injecting | Phase::Running, Some(injected)) if !duration.is_zero() => {
                let elapsed = since(injected).min(duration);
                let fraction = elapsed.as_secs_f64() / duration.as_secs_f64();
                let filled = (fraction * 30.0).round() as usize;
                format!(
                    "[{}{}] {}/{} {} {:?}{more}",
                    "#".repeat(filled),
                    ".".repeat(30 - filled.min(30)),
                    short(elapsed),
                    short(duration),
                    first.key(),
                    status.phase
                )
            }
            (phase, _) => {
                let elapsed = status.started_at.map(since).unwrap_or_default();
                format!("{} {phase:?} ({}){more}", first.key(), short(elapsed))
            }
        }
    }
}

/// Whole seconds, as a Go duration.
fn short(duration: Duration) -> String {
    GoDuration::from_duration(Duration::from_secs(duration.as_secs())).0
}

/// What is new in `experiment` since `seen`, as lines; updates `seen`.
fn news(seen: &mut Seen, experiment: &ChaosExperiment) -> Vec<String> {
    let key = seen.key();
    let mut lines = Vec::new();
    let Some(status) = &experiment.status else {
        return lines;
    };
    if seen.phase != Some(status.phase) {
        let from = seen.phase.map_or_else(|| "-".into(), |p| format!("{p:?}"));
        lines.push(format!("{key} phase {from} -> {:?}", status.phase));
        seen.phase = Some(status.phase);
    }
    for entry in &status.timeline {
        let id = (entry.time, entry.reason.clone(), entry.message.clone());
        if seen.events.insert(id) {
            lines.push(format!("{key} {}: {}", entry.reason, entry.message));
        }
    }
    if !seen.targets_printed && !status.targets.is_empty() {
        seen.targets_printed = true;
        let mut names: Vec<String> = status
            .targets
            .iter()
            .take(10)
            .map(|t| {
                let node = t.node_name.as_deref().unwrap_or("no node");
                format!("{}/{} ({node}, {})", t.namespace, t.name, t.fault)
            })
            .collect();
        if status.targets.len() > 10 {
            names.push(format!("and {} more", status.targets.len() - 10));
        }
        lines.push(format!(
            "{key} targets ({}): {}",
            status.target_count,
            names.join(", ")
        ));
    }
    for probe in &status.probes {
        let last = seen.last_sample.get(&probe.name).copied();
        let fresh: Vec<_> = probe
            .samples
            .iter()
            .filter(|s| last.is_none_or(|l| s.time > l))
            .collect();
        for (i, sample) in fresh.iter().enumerate() {
            let value = sample.value.as_deref().unwrap_or("-");
            let mut line = format!(
                "{key} probe {} {} {value}",
                probe.name,
                if sample.ok { "pass" } else { "FAIL" }
            );
            if !sample.ok
                && i + 1 == fresh.len()
                && let Some(error) = &probe.last_error
            {
                line.push_str(&format!(" ({error})"));
            }
            lines.push(line);
        }
        if let Some(newest) = fresh.last() {
            seen.last_sample.insert(probe.name.clone(), newest.time);
        }
    }
    if status.phase.is_terminal()
        && seen
            .latest
            .as_ref()
            .is_none_or(|l| !l.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
    {
        lines.push(format!(
            "{key} finished: {} ({}): {}",
            status
                .verdict
                .map_or_else(|| "no verdict".into(), |v| format!("{v:?}")),
            status.reason.as_deref().unwrap_or("-"),
            status.message.as_deref().unwrap_or("")
        ));
    }
    lines
}

async fn received(signal: &mut Option<Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Follows `created` until everything has a verdict, the timeout passes, or the user stops it.
pub(super) async fn follow(client: &Client, created: Vec<Created>, options: &Options) -> Outcome {
    let (updates, mut incoming) = mpsc::unbounded_channel();
    let mut f = Follower {
        client,
        updates,
        tasks: Vec::new(),
        experiments: Vec::new(),
        gamedays: Vec::new(),
        printer: Printer {
            tty: options.tty,
            bar: String::new(),
        },
    };
    for c in &created {
        f.track(c.kind, &c.namespace, &c.name);
    }
    f.printer.line(&format!(
        "waiting up to {} for a verdict (Ctrl-C aborts the experiments)",
        GoDuration::from_duration(options.timeout)
    ));
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    let mut interrupted = false;
    let mut warned = false;
    let mut end = loop {
        if f.all_done() {
            break End::Finished;
        }
        let mut stop = false;
        tokio::select! {
            update = incoming.recv() => match update {
                Some(Update::Experiment(e)) => f.experiment(*e),
                Some(Update::GameDay(g)) => {
                    for (ns, name) in f.gameday(*g) {
                        if interrupted {
                            abort(&mut f, &ns, &name).await;
                        }
                    }
                }
                Some(Update::Deleted(key)) => {
                    if f.experiments.iter().any(|s| s.key() == key && !s.done()) {
                        break End::Deleted(key);
                    }
                }
                Some(Update::WatchError(message)) => {
                    // The watcher retries with backoff; say so once, not on every retry.
                    if !warned {
                        warned = true;
                        f.printer.line(&format!("warning: {message} (retrying)"));
                    }
                }
                None => {}
            },
            _ = ticker.tick() => {
                let bar = f.progress(Utc::now());
                f.printer.bar(bar);
            }
            _ = tokio::time::sleep_until(deadline) => break End::TimedOut,
            _ = received(&mut sigint) => stop = true,
            _ = received(&mut sigterm) => stop = true,
        }
        if stop {
            if interrupted {
                break End::StoppedWaiting;
            }
            interrupted = true;
            f.printer.line(
                "interrupted: aborting every experiment still going and waiting for its faults to be reverted (again to stop waiting)",
            );
            for (ns, name) in f.unfinished() {
                abort(&mut f, &ns, &name).await;
            }
        }
    };
    if interrupted && matches!(end, End::Finished) {
        end = End::Interrupted;
    }
    for task in f.tasks.drain(..) {
        task.abort();
    }
    f.printer.clear();
    explain_end(&end, &f, options.timeout);
    Outcome {
        experiments: f
            .experiments
            .iter()
            .filter_map(|s| s.latest.clone())
            .collect(),
        gameday_verdicts: f
            .gamedays
            .iter()
            .map(|g| g.latest.as_ref().and_then(|g| g.status.as_ref()?.verdict))
            .collect(),
        end,
    }
}

async fn abort(f: &mut Follower<'_>, namespace: &str, name: &str) {
    let reason = "interrupted: faultline run got Ctrl-C or SIGTERM";
    match request_abort(f.client, namespace, name, reason).await {
        Ok(()) => f.printer.line(&format!("abort requested: {namespace}/{name}")),
        Err(e) => f.printer.line(&format!(
            "could not request the abort of {namespace}/{name}: {e}; run `faultline abort {name} -n {namespace}`"
        )),
    }
}

fn explain_end(end: &End, f: &Follower<'_>, timeout: Duration) {
    let going: Vec<&Seen> = f.experiments.iter().filter(|s| !s.done()).collect();
    match end {
        End::Finished => {}
        End::Interrupted => {
            eprintln!("interrupted: every experiment has finished and its faults are reverted");
        }
        End::StoppedWaiting => {
            for s in going {
                eprintln!(
                    "stopped waiting for {}; its abort is requested and the controller reverts its faults: `faultline status -n {}`",
                    s.key(),
                    s.namespace
                );
            }
        }
        End::TimedOut => {
            for s in going {
                let phase = s
                    .phase
                    .map_or_else(|| "Pending".into(), |p| format!("{p:?}"));
                eprintln!(
                    "timed out after {} waiting for {} in phase {phase}; the experiment keeps running: faultline abort {} -n {}",
                    GoDuration::from_duration(timeout),
                    s.key(),
                    s.name,
                    s.namespace
                );
            }
            for g in f.gamedays.iter().filter(|g| !g.done()) {
                eprintln!(
                    "timed out after {} waiting for gameday {}/{}; it keeps running (is the GameDay controller installed?)",
                    GoDuration::from_duration(timeout),
                    g.namespace,
                    g.name
                );
            }
        }
        End::Deleted(key) => {
            eprintln!("{key} was deleted before it finished; there is no verdict to wait for");
        }
    }
}

/// The closing lines: each experiment's verdict, numbers, and for a dry run the plan.
pub(super) fn print_results(experiments: &[ChaosExperiment], dry_run: bool) {
    for experiment in experiments {
        let s = crate::report::summarize(experiment);
        let verdict = s.verdict.map_or_else(
            || format!("no verdict ({:?})", s.phase),
            |v| format!("{v:?}"),
        );
        println!(
            "{}/{}: {verdict} ({}) {}",
            s.namespace,
            s.name,
            s.reason.as_deref().unwrap_or("-"),
            s.message.as_deref().unwrap_or("")
        );
        if let Some(failure) = &s.failure {
            println!("  {failure}");
        }
        for (label, value) in [
            ("elapsed", &s.elapsed),
            ("abort latency", &s.abort_latency),
            ("recovery time", &s.recovery_time),
        ] {
            if let Some(value) = value {
                println!("  {label}: {value}");
            }
        }
        if dry_run || s.dry_run {
            let status = experiment.status.clone().unwrap_or_default();
            println!("  targets ({}):", status.target_count);
            for t in &status.targets {
                println!(
                    "    {}/{} node {} ip {} fault {}",
                    t.namespace,
                    t.name,
                    t.node_name.as_deref().unwrap_or("-"),
                    t.pod_ip.as_deref().unwrap_or("-"),
                    t.fault
                );
            }
            for entry in status.timeline.iter().filter(|e| e.reason == "WouldInject") {
                println!("  would inject: {}", entry.message);
            }
            for p in &s.probes {
                println!(
                    "  preflight probe {}: {} passes, {} failures, last value {}",
                    p.name,
                    p.passes,
                    p.failures,
                    p.last_value.as_deref().unwrap_or("-")
                );
            }
        }
        if !matches!(s.verdict, Some(Verdict::Passed | Verdict::DryRun)) {
            println!(
                "  the full story: faultline report {} -n {} -o html --output report.html",
                s.name, s.namespace
            );
        }
    }
}
