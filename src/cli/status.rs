//! `faultline status`: a table of experiments, those still going first, then game days and
//! schedules when there are any.
//!
//! Exit codes: 0 listed (also when there is nothing to list); 3 cluster errors.

use std::process::ExitCode;

use kube::{Api, Resource, api::ListParams, core::NamespaceResourceScope};
use serde::de::DeserializeOwned;

use super::run::{Cluster, connect, explain};
use crate::cli::stdout::{out, outln};
use crate::{
    api::{ChaosExperiment, ChaosSchedule, GameDay},
    report::table::{gameday_table, schedule_table, status_table},
};

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
        let namespace =
            (!all_namespaces).then(|| namespace.unwrap_or_else(|| cluster.namespace.clone()));
        let scope = namespace
            .as_ref()
            .map_or_else(|| "any namespace".into(), |ns| format!("namespace {ns}"));
        let experiments: Vec<ChaosExperiment> =
            list(&cluster, namespace.as_deref(), "experiments", &scope).await?;
        let gamedays: Vec<GameDay> =
            list(&cluster, namespace.as_deref(), "game days", &scope).await?;
        let schedules: Vec<ChaosSchedule> =
            list(&cluster, namespace.as_deref(), "schedules", &scope).await?;
        let now = chrono::Utc::now();
        if experiments.is_empty() {
            outln!("no experiments in {scope}");
        } else {
            out!("{}", status_table(&experiments, now));
        }
        if !gamedays.is_empty() {
            out!("\n{}", gameday_table(&gamedays, now));
        }
        if !schedules.is_empty() {
            out!("\n{}", schedule_table(&schedules, now));
        }
        Ok(())
    }
}

async fn list<K>(
    cluster: &Cluster,
    namespace: Option<&str>,
    what: &str,
    scope: &str,
) -> Result<Vec<K>, String>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(cluster.client.clone(), ns),
        None => Api::all(cluster.client.clone()),
    };
    api.list(&ListParams::default())
        .await
        .map(|list| list.items)
        .map_err(|e| explain(&e, cluster, &format!("listing {what} in {scope}")))
}
