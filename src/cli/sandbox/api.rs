//! The Kubernetes API the sandbox serves (its embedded API server) or attaches to (a running
//! control plane, through its kubeconfig).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::sandbox::{
    apiserver::{ApiServer, ApiServerOptions},
    workloads::ControlPlane,
};

/// The Kubernetes API the sandbox serves or attaches to.
pub(super) enum Api {
    /// The embedded API server, started by the sandbox.
    Embedded(ApiServer),
    /// A running control plane, reached through its kubeconfig (boxed: a kube::Config is
    /// over a kilobyte, the embedded server a handle).
    Attached { config: Box<kube::Config> },
}

impl Api {
    /// `pod_logs`: where real pods' output is, for `kubectl logs`.
    pub(super) async fn embedded(port: u16, pod_logs: Option<PathBuf>) -> anyhow::Result<Api> {
        let server = ApiServer::start_with_options(ApiServerOptions {
            port,
            pod_logs,
            ..Default::default()
        })
        .await
        .with_context(|| format!("starting the API server on 127.0.0.1:{port}"))?;
        Ok(Api::Embedded(server))
    }

    pub(super) async fn attach(kubeconfig: &Path) -> anyhow::Result<Api> {
        let kubeconfig_file =
            kube::config::Kubeconfig::read_from(kubeconfig).with_context(|| {
                format!("reading the cluster's kubeconfig {}", kubeconfig.display())
            })?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig_file, &Default::default())
            .await
            .with_context(|| format!("using the kubeconfig {}", kubeconfig.display()))?;
        let client = kube::Client::try_from(config.clone())?;
        let version = client.apiserver_version().await.with_context(|| {
            format!(
                "no API server answers at {} (is the cluster up? `scripts/cluster.sh up`)",
                config.cluster_url
            )
        })?;
        tracing::info!(version = %version.git_version, "attached to a running control plane");
        Ok(Api::Attached {
            config: Box::new(config),
        })
    }

    pub(super) fn control_plane(&self) -> ControlPlane {
        match self {
            Api::Embedded(_) => ControlPlane::Simulated,
            Api::Attached { .. } => ControlPlane::Real,
        }
    }

    pub(super) async fn client(&self) -> anyhow::Result<kube::Client> {
        match self {
            Api::Embedded(server) => Ok(server.client().await),
            Api::Attached { config } => Ok(kube::Client::try_from(config.as_ref().clone())?),
        }
    }

    pub(super) fn client_config(&self) -> anyhow::Result<kube::Config> {
        match self {
            Api::Embedded(server) => Ok(server.client_config()),
            Api::Attached { config } => Ok(config.as_ref().clone()),
        }
    }

    pub(super) fn url(&self) -> String {
        match self {
            Api::Embedded(server) => server.url(),
            Api::Attached { config } => config.cluster_url.to_string(),
        }
    }
}
