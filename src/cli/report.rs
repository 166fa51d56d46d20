//! `faultline report NAME`: an experiment's report from its live status, as Markdown, HTML,
//! JSON or JUnit XML, to stdout or a file. Rendering is `crate::report`'s; this only fetches
//! and writes.
//!
//! Exit codes: 0 written; 3 usage or cluster errors (including an experiment that does not
//! exist).

use std::{path::PathBuf, process::ExitCode};

use kube::Api;

use super::run::{connect, explain};
use crate::{
    api::ChaosExperiment,
    report::{Format, html, json, junit, markdown},
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
    /// The experiment.
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
        let api: Api<ChaosExperiment> = Api::namespaced(cluster.client.clone(), &namespace);
        let experiment = api
            .get_opt(&name)
            .await
            .map_err(|e| explain(&e, &cluster, &format!("reading experiment {namespace}/{name}")))?
            .ok_or_else(|| {
                format!(
                    "experiment {namespace}/{name} not found: `faultline status -n {namespace}` lists the experiments there (-A for every namespace)"
                )
            })?;
        let now = chrono::Utc::now();
        let text = match format {
            Format::Markdown => markdown::render(&experiment),
            Format::Html => html::render(&experiment, now),
            Format::Json => json::to_text(&json::report(&experiment)),
            Format::Junit => junit::render(
                &format!("faultline report {namespace}/{name}"),
                std::slice::from_ref(&experiment),
                now,
            ),
        };
        match output {
            Some(path) => {
                std::fs::write(&path, text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => print!("{text}"),
        }
        Ok(())
    }
}
