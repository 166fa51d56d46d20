//! `faultline pause` and `faultline resume`: the cluster-wide emergency stop (`faultline
//! abort`, for one experiment or game day, is in `abort`).
//!
//! `pause` sets the cluster-wide switch (ConfigMap `faultline-pause` in the controller's
//! namespace): every experiment with faults in aborts; experiments that have not injected yet
//! (and new ones) wait in Pending, with a `Paused` condition saying why, and start on `resume`,
//! as schedules and game days do.

use std::{collections::BTreeMap, process::ExitCode};

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams},
};

use crate::cli::stdout::outln;
use crate::{controller::PAUSE_CONFIGMAP, manifest::CLI_FIELD_MANAGER};

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
                outln!("chaos paused: experiments with faults in abort and revert; the others (and new ones) wait in Pending until `faultline resume`");
            } else {
                outln!("chaos resumed");
            }
            Ok(ExitCode::SUCCESS)
        })
    }
}
