//! Following a run: watches every created object until each has a verdict and prints what
//! happens as it happens (phase changes, events, targets, probe checks): timestamped lines when
//! stdout is not a terminal (CI logs), the same lines under a progress bar when it is.
//!
//! Ctrl-C (or SIGTERM, which CI systems send a cancelled job) asks the controller to abort every
//! experiment still going, the same way `faultline abort` does, and keeps waiting until they
//! report Aborted with their faults reverted; a second one stops waiting (the aborts go on).

use std::{
    collections::{HashMap, HashSet},
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

use super::{
    create::{Created, TrackedKind},
    exit_code_for,
    print::{Printer, Seen, news, short},
};
use crate::{
    api::{ChaosExperiment, GameDay, GoDuration, Phase},
    owned_experiments::request_abort,
};

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
    /// The last state seen of every game day (a day never seen has no status).
    pub gamedays: Vec<GameDay>,
    pub end: End,
}

impl Outcome {
    pub fn exit_code(&self) -> u8 {
        match self.end {
            End::Finished => exit_code_for(
                self.experiments
                    .iter()
                    .map(|e| {
                        let status = e.status.as_ref();
                        (
                            status.and_then(|s| s.verdict),
                            status.and_then(|s| s.reason.as_deref()),
                        )
                    })
                    .chain(
                        self.gamedays
                            .iter()
                            .map(|g| (g.status.as_ref().and_then(|s| s.verdict), None)),
                    ),
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

    fn unfinished_gamedays(&self) -> Vec<(String, String)> {
        self.gamedays
            .iter()
            .filter(|g| !g.done())
            .map(|g| (g.namespace.clone(), g.name.clone()))
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
        let lines = news(seen, &experiment, Utc::now());
        seen.latest = Some(experiment);
        for (at, line) in lines {
            self.printer.line_at(at, &line);
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
    // From here on Ctrl-C and SIGTERM abort instead of killing the process: the line below
    // tells the user (and tests) so.
    let mut sigint = signal(SignalKind::interrupt()).ok();
    let mut sigterm = signal(SignalKind::terminate()).ok();
    f.printer.line(&format!(
        "waiting up to {} for a verdict (Ctrl-C aborts the experiments)",
        GoDuration::from_duration(options.timeout)
    ));
    let deadline = tokio::time::Instant::now() + options.timeout;
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
                Some(Update::Deleted(key))
                    if f.experiments.iter().any(|s| s.key() == key && !s.done()) =>
                {
                    break End::Deleted(key);
                }
                // The watcher retries with backoff; say so once, not on every retry.
                Some(Update::WatchError(message)) if !warned => {
                    warned = true;
                    f.printer.line(&format!("warning: {message} (retrying)"));
                }
                Some(Update::Deleted(_) | Update::WatchError(_)) | None => {}
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
            // Game days first, so that none starts its next stage meanwhile.
            for (ns, name) in f.unfinished_gamedays() {
                let reason = "interrupted: faultline run got Ctrl-C or SIGTERM";
                if let Err(e) = request_abort::<GameDay>(f.client, &ns, &name, reason).await {
                    f.printer.line(&format!(
                        "could not request the abort of gameday {ns}/{name}: {e}; run `kubectl annotate gameday {name} -n {ns} faultline.dev/abort=stop`"
                    ));
                }
            }
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
        gamedays: f
            .gamedays
            .iter()
            .map(|g| {
                g.latest.clone().unwrap_or_else(|| {
                    let mut unseen = GameDay::new(&g.name, Default::default());
                    unseen.metadata.namespace = Some(g.namespace.clone());
                    unseen
                })
            })
            .collect(),
        end,
    }
}

async fn abort(f: &mut Follower<'_>, namespace: &str, name: &str) {
    let reason = "interrupted: faultline run got Ctrl-C or SIGTERM";
    match request_abort::<ChaosExperiment>(f.client, namespace, name, reason).await {
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
                    "timed out after {} waiting for gameday {ns}/{name}; it keeps running: kubectl get gameday {name} -n {ns}",
                    GoDuration::from_duration(timeout),
                    ns = g.namespace,
                    name = g.name
                );
            }
        }
        End::Deleted(key) => {
            eprintln!("{key} was deleted before it finished; there is no verdict to wait for");
        }
    }
}
