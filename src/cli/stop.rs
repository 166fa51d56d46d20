//! `faultline abort`, `faultline pause` and `faultline resume`: the emergency stops.
//!
//! `abort` annotates experiments (and with `--all`, game days) with `faultline.dev/abort` set
//! to the reason; the controller reverts their faults and ends them as Aborted, with the reason
//! in `status.abortReason` and the report. `pause` sets the cluster-wide switch (ConfigMap
//! `faultline-pause` in the controller's namespace): every experiment with faults in aborts;
//! experiments that have not injected yet (and new ones) wait in Pending, with a `Paused`
//! condition saying why, and start on `resume`, as schedules and game days do.

use std::{collections::BTreeMap, process::ExitCode};

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams},
};

use crate::{
    api::{ChaosExperiment, GameDay},
    controller::PAUSE_CONFIGMAP,
    manifest::CLI_FIELD_MANAGER,
    owned_experiments::request_abort,
};

#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    /// The experiment to abort.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    name: Option<String>,
    /// Its namespace. Default: the kubeconfig's namespace.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Abort every experiment and game day that has not finished, in every namespace.
    #[arg(long)]
    all: bool,
    /// Why (recorded in the annotation and shown in the experiment's status).
    #[arg(long, default_value = "requested with faultline abort")]
    reason: String,
}

#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// The controller's namespace (where the pause switch lives).
    #[arg(long, env = "FAULTLINE_NAMESPACE", default_value = "faultline-system")]
    controller_namespace: String,
}

async fn client() -> anyhow::Result<Client> {
    Client::try_default()
        .await
        .context("cannot reach a Kubernetes API: set KUBECONFIG or run `faultline sandbox up`")
}

impl AbortArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        tokio::runtime::Runtime::new()?.block_on(self.run_async())
    }

    async fn run_async(self) -> anyhow::Result<ExitCode> {
        let Self {
            name,
            namespace,
            all,
            reason,
        } = self;
        let client = client().await?;
        let targets: Vec<ChaosExperiment> = if all {
            let api: Api<ChaosExperiment> = Api::all(client.clone());
            api.list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|e| !e.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
                .collect()
        } else {
            let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), &namespace);
            let name = name.unwrap_or_default();
            vec![
                api.get(&name)
                    .await
                    .with_context(|| format!("experiment {namespace}/{name}"))?,
            ]
        };
        for experiment in &targets {
            let namespace = experiment.namespace().unwrap_or_default();
            request_abort::<ChaosExperiment>(&client, &namespace, &experiment.name_any(), &reason)
                .await?;
            println!("abort requested: {namespace}/{}", experiment.name_any());
        }
        // An emergency stop also stops game days from starting their next stage.
        let gamedays = if all {
            Api::<GameDay>::all(client.clone())
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|g| g.status.as_ref().is_none_or(|s| s.verdict.is_none()))
                .collect()
        } else {
            Vec::new()
        };
        for gameday in &gamedays {
            let namespace = gameday.namespace().unwrap_or_default();
            request_abort::<GameDay>(&client, &namespace, &gameday.name_any(), &reason).await?;
            println!(
                "abort requested: gameday {namespace}/{}",
                gameday.name_any()
            );
        }
        if targets.is_empty() && gamedays.is_empty() {
            println!("no running experiment to abort");
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl PauseArgs {
    /// Sets the cluster-wide pause switch to `paused`.
    pub fn run(self, paused: bool) -> anyhow::Result<ExitCode> {
        tokio::runtime::Runtime::new()?.block_on(async move {
            let client = client().await?;
            let api: Api<ConfigMap> = Api::namespaced(client, &self.controller_namespace);
            let map = ConfigMap {
                metadata: ObjectMeta { name: Some(PAUSE_CONFIGMAP.into()), ..Default::default() },
                data: Some(BTreeMap::from([("paused".to_string(), paused.to_string())])),
                ..Default::default()
            };
            api.patch(PAUSE_CONFIGMAP, &PatchParams::apply(CLI_FIELD_MANAGER).force(), &Patch::Apply(&map))
                .await
                .with_context(|| format!("writing {}/{PAUSE_CONFIGMAP}", self.controller_namespace))?;
            if paused {
                println!("chaos paused: experiments with faults in abort and revert; the others (and new ones) wait in Pending until `faultline resume`");
            } else {
                println!("chaos resumed");
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}
