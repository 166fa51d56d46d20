//! `faultline report [KIND/]NAME`: a report from live status, as Markdown, HTML, JSON or JUnit
//! XML, to stdout or a file: of one experiment (`NAME`, `fex/NAME`), of a game day with the
//! experiments of its stages (`gameday/NAME`, `fgd/NAME`), or of the runs a schedule keeps
//! (`schedule/NAME`, `fsched/NAME`). Rendering is `crate::report`'s; this only fetches and
//! writes.
//!
//! Exit codes: 0 written; 3 usage or cluster errors (including an object that does not exist).

use std::{path::PathBuf, process::ExitCode};

use chrono::Utc;
use kube::{Api, ResourceExt, api::ListParams};

use super::{
    run::{Cluster, connect, explain},
    subject::Subject,
};
use crate::cli::stdout::out;
use crate::{
    api::{ChaosExperiment, ChaosSchedule, GameDay, SCHEDULE_LABEL},
    report::{Format, html, json, junit, markdown},
    schedule::scheduled_at,
};

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Markdown tables.
    Md,
    /// One self-contained HTML page with an SVG timeline.
    Html,
    /// Spec, status and a computed summary.
    Json,
    /// JUnit XML: the experiment and each probe as test cases.
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The experiment (`NAME` or `fex/NAME`), a game day and its stages' experiments
    /// (`gameday/NAME`, `fgd/NAME`), or the runs a schedule keeps (`schedule/NAME`,
    /// `fsched/NAME`).
    name: String,
    /// Its namespace. Default: the kubeconfig's namespace.
    #[arg(short, long)]
    namespace: Option<String>,
    /// The format. Default: from --output's extension (.md, .html, .json, .xml), else md.
    #[arg(short = 'o', long = "format", value_enum)]
    format: Option<ReportFormat>,
    /// Write the report to this file instead of stdout.
    #[arg(long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

impl ReportArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new()?;
        Ok(match runtime.block_on(self.run_async()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::from(3)
            }
        })
    }

    async fn run_async(self) -> Result<(), String> {
        let Self {
            name,
            namespace,
            format,
            output,
        } = self;
        let format = match (format, output.as_deref().and_then(Format::from_path)) {
            (Some(ReportFormat::Md), _) => Format::Markdown,
            (Some(ReportFormat::Html), _) => Format::Html,
            (Some(ReportFormat::Json), _) => Format::Json,
            (Some(ReportFormat::Junit), _) => Format::Junit,
            (None, Some(from_extension)) => from_extension,
            (None, None) => Format::Markdown,
        };
        let cluster = connect().await?;
        let namespace = namespace.unwrap_or_else(|| cluster.namespace.clone());
        let now = Utc::now();
        let text = match Subject::parse(&name)? {
            Subject::Experiment(name) => {
                let experiment = experiment(&cluster, &namespace, &name).await?;
                match format {
                    Format::Markdown => markdown::render(&experiment),
                    Format::Html => html::render(&experiment, now),
                    Format::Json => json::to_text(&json::report(&experiment)),
                    Format::Junit => junit::render(
                        &format!("faultline report {namespace}/{name}"),
                        std::slice::from_ref(&experiment),
                        now,
                    ),
                }
            }
            Subject::GameDay(name) => {
                let (day, experiments) = game_day(&cluster, &namespace, &name).await?;
                let title = format!("faultline report gameday {namespace}/{name}");
                format.render_run(&title, &experiments, std::slice::from_ref(&day), now)
            }
            Subject::Schedule(name) => {
                let runs = schedule_runs(&cluster, &namespace, &name).await?;
                let title = format!("faultline report schedule {namespace}/{name}");
                format.render_run(&title, &runs, &[], now)
            }
        };
        match output {
            Some(path) => {
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => out!("{text}"),
        }
        Ok(())
    }
}

async fn experiment(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<ChaosExperiment, String> {
    let hint = format!(
        "`faultline status -n {namespace}` lists the experiments there (-A for every namespace)"
    );
    named(cluster, namespace, name, "experiment", &hint).await
}

/// The `kind` object `namespace/name`, or an error that says it is not there and `hint`: how
/// to list those that are.
async fn named<K>(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    kind: &str,
    hint: &str,
) -> Result<K, String>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(cluster.client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|e| explain(&e, cluster, &format!("reading {kind} {namespace}/{name}")))?
        .ok_or_else(|| format!("{kind} {namespace}/{name} not found: {hint}"))
}

/// The game day and the experiments its stages name (those of its latest run). One that is
/// gone (deleted by hand) is left out of the report, with a word on stderr.
async fn game_day(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<(GameDay, Vec<ChaosExperiment>), String> {
    let hint = format!("`kubectl get fgd -n {namespace}` lists the game days there");
    let day: GameDay = named(cluster, namespace, name, "game day", &hint).await?;
    let api: Api<ChaosExperiment> = Api::namespaced(cluster.client.clone(), namespace);
    let mut experiments = Vec::new();
    let stages = day.status.iter().flat_map(|s| &s.stages);
    for (stage, experiment) in stages.flat_map(|s| s.experiments.iter().map(move |e| (s, e))) {
        let found = api.get_opt(experiment).await.map_err(|e| {
            explain(
                &e,
                cluster,
                &format!("reading experiment {namespace}/{experiment}"),
            )
        })?;
        match found {
            Some(found) => experiments.push(found),
            None => eprintln!(
                "experiment {namespace}/{experiment} of stage {} no longer exists: the report shows the stage without it",
                stage.name
            ),
        }
    }
    Ok((day, experiments))
}

/// The experiments a schedule created that are still kept (its history limits), oldest run
/// first.
async fn schedule_runs(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<Vec<ChaosExperiment>, String> {
    let hint = format!("`kubectl get fsched -n {namespace}` lists the schedules there");
    let schedule: ChaosSchedule = named(cluster, namespace, name, "schedule", &hint).await?;
    let api: Api<ChaosExperiment> = Api::namespaced(cluster.client.clone(), namespace);
    let selector = format!("{SCHEDULE_LABEL}={name}");
    let mut runs = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| {
            explain(
                &e,
                cluster,
                &format!("listing the runs of schedule {namespace}/{name}"),
            )
        })?
        .items;
    if runs.is_empty() {
        let next = schedule
            .status
            .and_then(|s| s.next_schedule_time)
            .map_or_else(|| "not scheduled".into(), |t| format!("next at {t}"));
        return Err(format!(
            "schedule {namespace}/{name} has no runs kept ({next}): nothing to report"
        ));
    }
    runs.sort_by_key(|run| (scheduled_at(run), run.name_any()));
    Ok(runs)
}
