//! `faultline status`: a table of experiments, those still going first.
//!
//! Exit codes: 0 listed (also when there is nothing to list); 3 cluster errors.

use std::process::ExitCode;

use kube::{Api, api::ListParams};

use super::run::{connect, explain};
use crate::{api::ChaosExperiment, report::table::status_table};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The namespace to list. Default: the kubeconfig's namespace.
    #[arg(short, long, conflicts_with = "all_namespaces")]
    namespace: Option<String>,
    /// List experiments in every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
}

impl StatusArgs {
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
            namespace,
            all_namespaces,
        } = self;
        let cluster = connect().await?;
        let (api, scope): (Api<ChaosExperiment>, String) = if all_namespaces {
            (Api::all(cluster.client.clone()), "any namespace".into())
        } else {
            let namespace = namespace.unwrap_or_else(|| cluster.namespace.clone());
            (
                Api::namespaced(cluster.client.clone(), &namespace),
                format!("namespace {namespace}"),
            )
        };
        let experiments = api
            .list(&ListParams::default())
            .await
            .map_err(|e| explain(&e, &cluster, &format!("listing experiments in {scope}")))?
            .items;
        if experiments.is_empty() {
            println!("no experiments in {scope}");
            return Ok(());
        }
        print!("{}", status_table(&experiments, chrono::Utc::now()));
        Ok(())
    }
}
