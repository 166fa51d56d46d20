//! `faultline run -f FILE`: validate a manifest offline, create its ChaosExperiments (or
//! GameDays) through the current kubeconfig, and with `--wait` follow them to their verdicts.
//!
//! Exit codes: 0 every experiment Passed (or, with `--dry-run`, ended DryRun); 1 a hypothesis
//! failed (verdict Failed); 2 an experiment was Aborted, or the run was interrupted (Ctrl-C or
//! SIGTERM abort the experiments first); 3 usage, an invalid manifest, a cluster error, a
//! timeout, or an experiment faultline could not carry out (verdict Error). With several
//! experiments the highest code wins.
//!
//! Names: every run creates new objects, so earlier runs and their reports stay readable.
//! - `metadata.generateName` (and no name): the API server picks a fresh name each run.
//! - `metadata.name` that is free: the object is created under that name.
//! - `metadata.name` taken by a finished run: this run is created as `<name>-<5 characters>`
//!   (through `generateName`), and the name is printed.
//! - `metadata.name` taken by a run still going: nothing is created; exit 3 and say how to
//!   follow or abort it.

mod follow;

use std::{
    io::{IsTerminal, Read},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    api::{ChaosExperiment, GameDay, GoDuration, Phase, Verdict},
    manifest::parse_documents,
    report::Format,
    validate::{Severity, check_bytes},
};

pub(super) use follow::Created;

/// Usage, validation, cluster errors and timeouts.
const USAGE: u8 = 3;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The manifest: ChaosExperiments and/or GameDays, several documents separated by `---`;
    /// `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    file: PathBuf,
    /// The namespace for objects that name none. Default: the kubeconfig's namespace.
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
                    println!("created {} {}/{}", one.kind.noun(), one.namespace, one.name);
                    created.push(one);
                }
                Err(message) => return Err(Usage(with_created(message, &created))),
            }
        }
        if !wait {
            for one in &created {
                println!(
                    "follow it with `faultline status -n {ns}`; its report: `faultline report {name} -n {ns}`",
                    ns = one.namespace,
                    name = one.name
                );
            }
            return Ok(0);
        }
        let options = follow::Options {
            timeout,
            tty: std::io::stdout().is_terminal(),
        };
        let outcome = follow::follow(&cluster.client, created, &options).await;
        let title = format!("faultline run {source}");
        let now = chrono::Utc::now();
        for (path, format) in [
            (junit.as_ref(), Some(Format::Junit)),
            (
                report.as_ref(),
                report.as_deref().and_then(Format::from_path),
            ),
        ] {
            if let (Some(path), Some(format)) = (path, format) {
                let text = format.render(&title, &outcome.experiments, now);
                std::fs::write(path, text)
                    .map_err(|e| Usage(format!("cannot write {}: {e}", path.display())))?;
                println!("wrote {}", path.display());
            }
        }
        follow::print_results(&outcome.experiments, dry_run);
        Ok(outcome.exit_code())
    }
}

/// The exit code for a set of verdicts (None: no verdict yet); the highest wins.
pub(super) fn exit_code_for(verdicts: impl IntoIterator<Item = Option<Verdict>>) -> u8 {
    verdicts
        .into_iter()
        .map(|v| match v {
            Some(Verdict::Passed | Verdict::DryRun) => 0,
            Some(Verdict::Failed) => 1,
            Some(Verdict::Aborted) => 2,
            Some(Verdict::Error) | None => USAGE,
        })
        .max()
        .unwrap_or(0)
}

fn read_manifest(file: &Path) -> Result<(String, Vec<u8>), Usage> {
    if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Usage(format!("cannot read stdin: {e}")))?;
        return Ok(("<stdin>".into(), bytes));
    }
    let bytes = std::fs::read(file).map_err(|e| {
        Usage(format!(
            "cannot read {}: {e}; pass the manifest with -f FILE (or -f - for stdin)",
            file.display()
        ))
    })?;
    Ok((file.display().to_string(), bytes))
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

/// The cluster the kubeconfig points at.
pub(super) struct Cluster {
    pub client: Client,
    pub url: String,
    /// The kubeconfig context's namespace (or `default`).
    pub namespace: String,
}

/// Connects as kubectl would (KUBECONFIG, ~/.kube/config, or in-cluster).
pub(super) async fn connect() -> Result<Cluster, String> {
    let config = kube::Config::infer().await.map_err(|e| {
        format!(
            "cannot load a kubeconfig ({e}): set KUBECONFIG to your cluster's kubeconfig, or try faultline locally with `faultline sandbox up`"
        )
    })?;
    let url = config.cluster_url.to_string();
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config)
        .map_err(|e| format!("cannot build a client for the cluster at {url}: {e}"))?;
    Ok(Cluster {
        client,
        url,
        namespace,
    })
}

/// A kube error as a sentence that says what to do next. `what` says what was being done.
pub(super) fn explain(error: &kube::Error, cluster: &Cluster, what: &str) -> String {
    match error {
        kube::Error::Api(status) => match status.code {
            401 => format!(
                "{what}: the cluster at {} does not accept your credentials: check the kubeconfig's user (kubectl auth whoami)",
                cluster.url
            ),
            403 => format!(
                "{what}: forbidden ({}): your kubeconfig's user lacks the RBAC permission (kubectl auth can-i --list)",
                status.message
            ),
            _ => format!(
                "{what}: {} ({} {})",
                status.message, status.code, status.reason
            ),
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
            "cannot reach the cluster at {}: is your kubeconfig right? (kubectl cluster-info) [{what}: {error}]",
            cluster.url
        ),
        other => format!("{what}: {other}"),
    }
}

fn with_created(message: String, created: &[Created]) -> String {
    if created.is_empty() {
        return message;
    }
    let list: Vec<String> = created
        .iter()
        .map(|c| format!("faultline abort {} -n {}", c.name, c.namespace))
        .collect();
    format!(
        "{message}\nthese were created before the error and keep running; stop them with: {}",
        list.join("; ")
    )
}

/// Whether an existing object is a finished run (a new run may then take a fresh name).
trait Finished {
    fn finished(&self) -> bool;
    fn phase_text(&self) -> String;
}

impl Finished for ChaosExperiment {
    fn finished(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.phase.is_terminal())
    }
    fn phase_text(&self) -> String {
        format!(
            "{:?}",
            self.status.as_ref().map_or(Phase::Pending, |s| s.phase)
        )
    }
}

impl Finished for GameDay {
    fn finished(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.verdict.is_some())
    }
    fn phase_text(&self) -> String {
        self.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into())
    }
}

/// Creates one object under the naming rules in the module doc.
async fn create<K>(cluster: &Cluster, mut object: K, default_ns: &str) -> Result<Created, String>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Finished
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let kind = follow::TrackedKind::of::<K>();
    let namespace = object.namespace().unwrap_or_else(|| default_ns.to_string());
    let api: Api<K> = Api::namespaced(cluster.client.clone(), &namespace);
    let meta: &mut ObjectMeta = object.meta_mut();
    meta.namespace = Some(namespace.clone());
    meta.resource_version = None;
    meta.uid = None;
    if let Some(name) = meta.name.clone() {
        let what = format!("looking for an earlier {} {namespace}/{name}", kind.noun());
        let existing = api.get_opt(&name).await.map_err(|e| {
            not_served(&e, cluster, kind).unwrap_or_else(|| explain(&e, cluster, &what))
        })?;
        if let Some(existing) = existing {
            if !existing.finished() {
                return Err(format!(
                    "{} {namespace}/{name} already exists and is still going (phase {}): follow it with `faultline status -n {namespace}`, stop it with `faultline abort {name} -n {namespace}`, or rename this one (or use metadata.generateName)",
                    kind.noun(),
                    existing.phase_text()
                ));
            }
            println!(
                "{} {namespace}/{name} exists from an earlier run (phase {}); creating this run under a fresh name",
                kind.noun(),
                existing.phase_text()
            );
            let meta = object.meta_mut();
            // Room for `-xxxxx` within the 63 characters label values allow.
            let base: String = name.chars().take(57).collect();
            meta.generate_name = Some(format!("{}-", base.trim_end_matches('-')));
            meta.name = None;
        }
    }
    let what = format!("creating {} in namespace {namespace}", kind.noun());
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .map_err(|e| {
            if let kube::Error::Api(s) = &e
                && s.code == 404
                && s.message.contains("namespaces")
            {
                return format!(
                    "namespace {namespace} does not exist: create it (kubectl create namespace {namespace}) or pass -n NAMESPACE"
                );
            }
            not_served(&e, cluster, kind).unwrap_or_else(|| explain(&e, cluster, &what))
        })?;
    Ok(Created {
        kind,
        namespace,
        name: created.name_any(),
    })
}

/// A 404 from the collection itself: the CRD is not installed.
fn not_served(error: &kube::Error, cluster: &Cluster, kind: follow::TrackedKind) -> Option<String> {
    match error {
        kube::Error::Api(s) if s.code == 404 && !s.message.contains("namespaces") => Some(format!(
            "the cluster at {} does not serve {}s: install faultline's CRDs (faultline crds | kubectl apply -f -) and the controller",
            cluster.url,
            kind.noun()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_verdict_decides_the_exit_code() {
        assert_eq!(exit_code_for([Some(Verdict::Passed)]), 0);
        assert_eq!(
            exit_code_for([Some(Verdict::DryRun), Some(Verdict::Passed)]),
            0
        );
        assert_eq!(
            exit_code_for([Some(Verdict::Passed), Some(Verdict::Failed)]),
            1
        );
        assert_eq!(
            exit_code_for([Some(Verdict::Aborted), Some(Verdict::Failed)]),
            2
        );
        assert_eq!(
            exit_code_for([Some(Verdict::Error), Some(Verdict::Aborted)]),
            3
        );
        assert_eq!(exit_code_for([None]), 3);
    }
}
