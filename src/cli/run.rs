//! `faultline run -f FILE`: validate a manifest offline, create its ChaosExperiments (or
//! GameDays) through the current kubeconfig, and with `--wait` follow them to their verdicts.
//!
//! Exit codes:
//! - 0: every experiment Passed (or, with `--dry-run`, ended DryRun: it would run);
//! - 1: a hypothesis failed (verdict Failed: before injection, or no recovery after);
//! - 2: an experiment was Aborted, or the run was interrupted (Ctrl-C or SIGTERM abort the
//!   experiments first);
//! - 3: usage, an invalid manifest, a cluster error, a timeout, or an experiment faultline
//!   could not carry out (verdict Error);
//! - 4: an experiment was Inconclusive: no fault went in (e.g. every eviction refused by a
//!   PodDisruptionBudget), so its hypothesis was not tested;
//! - 5: an experiment could not run: its preflight refused it (no pod matched, a selection
//!   over the cap, a target on no node or on a node whose agent cannot do the fault, and for a
//!   dry run a node without an agent) and nothing was injected.
//!
//! With several experiments the most serious wins, in this order: 3, 2, 1, 5, 4, 0.
//!
//! Names: every run creates new objects, so earlier runs and their reports stay readable.
//! - `metadata.generateName` (and no name): the API server picks a fresh name each run.
//! - `metadata.name` that is free: the object is created under that name.
//! - `metadata.name` taken by a finished run: this run is created as `<name>-<5 characters>`
//!   (through `generateName`), and the name is printed.
//! - `metadata.name` taken by a run still going: nothing is created; exit 3 and say how to
//!   follow or abort it.
//!
//! Refused before anything is created (exit 3): `-n` contradicting a namespace the manifest
//! names, and a `--report`/`--junit` path that cannot be written. A report that still cannot
//! be written after the run is an error on stderr, and the exit code stays the verdict's.

mod create;
mod destinations;
mod follow;
mod print;

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use kube::ResourceExt;

use super::{
    input::{self, ReadError},
    stdout::outln,
};
use crate::{
    api::{ChaosExperiment, GameDay, GoDuration, Verdict},
    manifest::parse_documents,
    report::Format,
    validate::{Severity, check_bytes},
};

pub(super) use create::{Cluster, Created, TrackedKind, connect, explain};
use create::{create, with_created};
use destinations::{cannot_write, check_writable};

/// Usage, validation, cluster errors and timeouts (and verdict Error).
const USAGE: u8 = 3;
/// Verdict Inconclusive: nothing was injected.
const INCONCLUSIVE: u8 = 4;
/// The experiment could not run: preflight refused it.
const COULD_NOT_RUN: u8 = 5;
/// The reasons of a Failed verdict given by preflight: the experiment could not run (nothing
/// was injected and the hypothesis was never in question).
const PREFLIGHT_REASONS: [&str; 3] = ["PreflightFailed", "NoTargets", "SelectionRefused"];

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The manifest: ChaosExperiments and/or GameDays, several documents separated by `---`;
    /// `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// The namespace for objects that name none. Default: the kubeconfig's namespace. An
    /// object that names another namespace is refused, as kubectl does.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Follow the experiments until each has a verdict; the exit code says how they ended.
    #[arg(long)]
    wait: bool,
    /// Stop waiting after this long (`90s`, `10m`) and exit 3; the experiments keep running.
    /// Default: the longest experiment's duration + recovery timeout + revert timeout + 2m.
    #[arg(long, value_name = "DURATION")]
    timeout: Option<String>,
    /// Write JUnit XML here when the run ends (implies --wait).
    #[arg(long, value_name = "PATH")]
    junit: Option<PathBuf>,
    /// Write a report here when the run ends: `.md`, `.html` or `.json` (implies --wait).
    #[arg(long, value_name = "PATH")]
    report: Option<PathBuf>,
    /// Resolve targets, run preflight and the before-hypothesis, inject nothing, and print what
    /// would be done (implies --wait).
    #[arg(long)]
    dry_run: bool,
}

/// A document of the manifest that `run` creates.
enum Document {
    Experiment(Box<ChaosExperiment>),
    GameDay(Box<GameDay>),
}

/// A failure that ends the command with exit code 3 and this message.
struct Usage(String);

impl RunArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new()?;
        Ok(match runtime.block_on(self.run_async()) {
            Ok(code) => ExitCode::from(code),
            Err(Usage(message)) => {
                eprintln!("error: {message}");
                ExitCode::from(USAGE)
            }
        })
    }

    async fn run_async(self) -> Result<u8, Usage> {
        let Self {
            file,
            namespace,
            wait,
            timeout,
            junit,
            report,
            dry_run,
        } = self;
        let wait = wait || dry_run || junit.is_some() || report.is_some();
        if let Some(path) = &report
            && !matches!(
                Format::from_path(path),
                Some(Format::Markdown | Format::Html | Format::Json)
            )
        {
            return Err(Usage(format!(
                "--report {}: the extension picks the format; use .md, .html or .json (--junit writes JUnit XML)",
                path.display()
            )));
        }
        // Checked before anything is created: a report that cannot be written is otherwise
        // found out only after the faults went in.
        for (flag, path) in [("--junit", &junit), ("--report", &report)] {
            if let Some(path) = path {
                check_writable(flag, path)?;
            }
        }
        let timeout = match &timeout {
            Some(text) => Some(
                GoDuration::from(text.as_str())
                    .parse()
                    .map_err(|e| Usage(format!("--timeout: {e}")))?,
            ),
            None => None,
        };
        let (source, bytes) = read_manifest(&file)?;
        let documents = load(&source, &bytes, dry_run)?;
        if let Some(namespace) = &namespace {
            check_namespaces(&source, &documents, namespace)?;
        }
        let timeout = timeout.unwrap_or_else(|| default_timeout(&documents));
        let cluster = connect().await.map_err(Usage)?;
        let default_ns = namespace.unwrap_or_else(|| cluster.namespace.clone());
        let mut created: Vec<Created> = Vec::new();
        for document in documents {
            let result = match document {
                Document::Experiment(e) => create(&cluster, *e, &default_ns).await,
                Document::GameDay(g) => create(&cluster, *g, &default_ns).await,
            };
            match result {
                Ok(one) => {
                    outln!("created {} {}/{}", one.kind.noun(), one.namespace, one.name);
                    created.push(one);
                }
                Err(message) => return Err(Usage(with_created(message, &created))),
            }
        }
        if !wait {
            for one in &created {
                outln!(
                    "follow it with `faultline status -n {ns}`; its report: `faultline report {name} -n {ns}`",
                    ns = one.namespace,
                    name = one.name
                );
            }
            return Ok(0);
        }
        // `faultline report` can write the report again from the objects' status.
        let subjects: Vec<String> = created
            .iter()
            .map(|one| {
                let kind = match one.kind {
                    TrackedKind::Experiment => "",
                    TrackedKind::GameDay => "fgd/",
                };
                format!("{kind}{} -n {}", one.name, one.namespace)
            })
            .collect();
        let options = follow::Options {
            timeout,
            tty: std::io::stdout().is_terminal(),
        };
        let outcome = follow::follow(&cluster.client, created, &options).await;
        let title = format!("faultline run {source}");
        let now = chrono::Utc::now();
        let mut unwritten = Vec::new();
        for (path, format) in [
            (junit.as_ref(), Some(Format::Junit)),
            (
                report.as_ref(),
                report.as_deref().and_then(Format::from_path),
            ),
        ] {
            if let (Some(path), Some(format)) = (path, format) {
                let text = format.render_run(&title, &outcome.experiments, &outcome.gamedays, now);
                match std::fs::write(path, text) {
                    Ok(()) => outln!("wrote {}", path.display()),
                    Err(error) => unwritten.push(cannot_write(path, format, &error, &subjects)),
                }
            }
        }
        print::print_results(&outcome.experiments, &outcome.gamedays, dry_run);
        // The verdict's exit code stands when a report could not be written: the verdict is
        // what a pipeline gates on, exit 3 would pass a failed hypothesis off as a tool error
        // (or make a passed run look broken), and the report can be written again from the
        // experiments' status. The error comes last, where it is seen.
        for message in &unwritten {
            eprintln!("error: {message}");
        }
        Ok(outcome.exit_code())
    }
}

/// Refuses `-n` that contradicts a namespace the manifest names, as kubectl does: the user
/// meant one of the two, and creating in the other could put chaos where nobody expects it.
fn check_namespaces(source: &str, documents: &[Document], namespace: &str) -> Result<(), Usage> {
    for document in documents {
        let (kind, meta) = match document {
            Document::Experiment(e) => ("chaosexperiment", &e.metadata),
            Document::GameDay(g) => ("gameday", &g.metadata),
        };
        if let Some(named) = meta.namespace.as_deref()
            && named != namespace
        {
            let name = meta
                .name
                .clone()
                .or_else(|| meta.generate_name.clone())
                .unwrap_or_default();
            return Err(Usage(format!(
                "{source}: {kind} {name}: the namespace from the provided object \"{named}\" does not match the namespace \"{namespace}\": pass -n {named} or remove it from the manifest"
            )));
        }
    }
    Ok(())
}

/// The exit code of one outcome: its verdict (None: no verdict yet) and the verdict's reason.
fn exit_code(verdict: Option<Verdict>, reason: Option<&str>) -> u8 {
    match verdict {
        Some(Verdict::Passed | Verdict::DryRun) => 0,
        Some(Verdict::Failed) if reason.is_some_and(|r| PREFLIGHT_REASONS.contains(&r)) => {
            COULD_NOT_RUN
        }
        Some(Verdict::Failed) => 1,
        Some(Verdict::Aborted) => 2,
        Some(Verdict::Inconclusive) => INCONCLUSIVE,
        Some(Verdict::Error) | None => USAGE,
    }
}

/// The exit code for a set of outcomes (verdict and reason); the most serious wins.
pub(super) fn exit_code_for<'a>(
    outcomes: impl IntoIterator<Item = (Option<Verdict>, Option<&'a str>)>,
) -> u8 {
    let seriousness = |code: &u8| match *code {
        0 => 0,
        INCONCLUSIVE => 1,
        COULD_NOT_RUN => 2,
        1 => 3,
        2 => 4,
        _ => 5,
    };
    outcomes
        .into_iter()
        .map(|(verdict, reason)| exit_code(verdict, reason))
        .max_by_key(seriousness)
        .unwrap_or(0)
}

fn read_manifest(file: &Path) -> Result<(String, Vec<u8>), Usage> {
    input::read_manifest(file).map_err(|error| match error {
        ReadError::Unreadable(message) => Usage(format!(
            "{message}; pass the manifest with -f FILE (or -f - for stdin)"
        )),
        ReadError::TooLarge(message) => Usage(message),
    })
}

/// Validates offline (the same checks as `faultline validate`), then reads the documents.
fn load(source: &str, bytes: &[u8], dry_run: bool) -> Result<Vec<Document>, Usage> {
    let report = check_bytes(source, bytes);
    if report.invalid > 0 {
        for problem in report
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
        {
            eprintln!("{problem}");
        }
        return Err(Usage(format!(
            "{source} is invalid ({} of {} documents): fix the problems above and run again; `faultline validate {source}` checks without a cluster",
            report.invalid, report.documents
        )));
    }
    let text = String::from_utf8_lossy(bytes);
    let objects = parse_documents(source, &text).map_err(|e| Usage(e.to_string()))?;
    let mut documents = Vec::new();
    for (index, object) in objects.into_iter().enumerate() {
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let value = serde_json::to_value(&object).map_err(|e| Usage(e.to_string()))?;
        let typed = |e: serde_json::Error| Usage(format!("{source}: document {}: {e}", index + 1));
        match kind.as_str() {
            "ChaosExperiment" => {
                let mut experiment: ChaosExperiment =
                    serde_json::from_value(value).map_err(typed)?;
                experiment.spec.dry_run |= dry_run;
                experiment.status = None;
                documents.push(Document::Experiment(Box::new(experiment)));
            }
            "GameDay" => {
                let mut gameday: GameDay = serde_json::from_value(value).map_err(typed)?;
                for stage in &mut gameday.spec.stages {
                    for experiment in &mut stage.experiments {
                        experiment.spec.dry_run |= dry_run;
                    }
                }
                gameday.status = None;
                documents.push(Document::GameDay(Box::new(gameday)));
            }
            other => {
                return Err(Usage(format!(
                    "{source}: document {} is a {other} ({}); faultline run creates ChaosExperiments and GameDays only: apply other objects with `kubectl apply -f`",
                    index + 1,
                    object.name_any()
                )));
            }
        }
    }
    if documents.is_empty() {
        return Err(Usage(format!(
            "{source} holds no ChaosExperiment or GameDay to run"
        )));
    }
    Ok(documents)
}

/// Long enough for the longest experiment to inject, run, revert and recover, plus 2 minutes
/// for the before-checks and the controller to get to it.
fn default_timeout(documents: &[Document]) -> Duration {
    let one = |spec: &crate::api::ChaosExperimentSpec| {
        let parse = |d: &crate::api::GoDuration| d.parse().unwrap_or_default();
        parse(&spec.duration)
            + spec
                .steady_state
                .as_ref()
                .map_or(Duration::ZERO, |s| parse(&s.recovery_timeout))
            + parse(&spec.abort.revert_timeout)
    };
    let longest = documents
        .iter()
        .map(|d| match d {
            Document::Experiment(e) => one(&e.spec),
            // Stages run one after another.
            Document::GameDay(g) => g
                .spec
                .stages
                .iter()
                .map(|s| {
                    s.experiments
                        .iter()
                        .map(|e| one(&e.spec))
                        .max()
                        .unwrap_or_default()
                        + s.pause_after
                            .as_ref()
                            .and_then(|p| p.parse().ok())
                            .unwrap_or_default()
                })
                .sum(),
        })
        .max()
        .unwrap_or_default();
    longest + Duration::from_secs(120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_verdict_decides_the_exit_code() {
        let v = |verdict: Verdict| (Some(verdict), None);
        assert_eq!(exit_code_for([v(Verdict::Passed)]), 0);
        assert_eq!(exit_code_for([v(Verdict::DryRun), v(Verdict::Passed)]), 0);
        assert_eq!(exit_code_for([v(Verdict::Passed), v(Verdict::Failed)]), 1);
        assert_eq!(exit_code_for([v(Verdict::Aborted), v(Verdict::Failed)]), 2);
        assert_eq!(exit_code_for([v(Verdict::Error), v(Verdict::Aborted)]), 3);
        assert_eq!(exit_code_for([(None, None)]), 3);
        // Nothing injected is not a pass, and less serious than a failed hypothesis.
        assert_eq!(
            exit_code_for([v(Verdict::Inconclusive), v(Verdict::Passed)]),
            4
        );
        assert_eq!(
            exit_code_for([v(Verdict::Inconclusive), v(Verdict::Failed)]),
            1
        );
        // A preflight refusal: the experiment could not run.
        let refused = (Some(Verdict::Failed), Some("PreflightFailed"));
        assert_eq!(exit_code_for([refused]), 5);
        assert_eq!(
            exit_code_for([(Some(Verdict::Failed), Some("NoTargets"))]),
            5
        );
        assert_eq!(exit_code_for([refused, v(Verdict::Inconclusive)]), 5);
        assert_eq!(exit_code_for([refused, v(Verdict::Failed)]), 1);
        assert_eq!(
            exit_code_for([(Some(Verdict::Failed), Some("SteadyStateNotMet"))]),
            1
        );
    }
}
