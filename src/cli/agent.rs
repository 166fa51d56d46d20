//! `faultline agent`: the node agent (a DaemonSet in production; the sandbox runs it itself).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::{Router, routing::get};

use crate::agent::admission::Policy;
use crate::agent::linux::LinuxKernel;
use crate::agent::runner::{self, AgentConfig};
use crate::agent::telemetry::AgentMetrics;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The node this agent serves (the DaemonSet passes spec.nodeName). Repeat it, or separate
    /// names with commas, for several simulated nodes on one machine.
    #[arg(
        long = "node",
        env = "NODE_NAME",
        required = true,
        value_delimiter = ','
    )]
    nodes: Vec<String>,
    /// Where the journal of applied faults lives: a hostPath, so a restarted agent (even a new
    /// pod) reverts what the previous one applied.
    #[arg(long, default_value = "/var/lib/faultline")]
    journal_dir: PathBuf,
    /// /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:9091")]
    admin_addr: SocketAddr,
    /// The host's /proc (hostPID: true), where pods' processes and namespaces are found.
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// How often to re-check targets and counters without an event.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    resync: Duration,
    /// The network namespace the pods' veths are in (a path such as /run/netns/NAME), when
    /// it is not the agent's own (the DaemonSet runs with hostNetwork: leave it unset).
    #[arg(long)]
    node_netns: Option<PathBuf>,
    /// faultline's own namespace (the controller's): its pods are never faulted, and its
    /// `faultline-pause` ConfigMap is the pause switch the agent honours.
    #[arg(long, env = "POD_NAMESPACE", default_value = "faultline-system")]
    controller_namespace: String,
    /// Apply faults in namespaces without the `faultline.dev/chaos=enabled` label (match the
    /// controller's `--allow-all-namespaces`).
    #[arg(long, env = "FAULTLINE_ALLOW_ALL_NAMESPACES")]
    allow_all_namespaces: bool,
    /// A namespace whose pods are never faulted, on top of kube-system and faultline's own
    /// (repeat it; match the controller's `--protected-namespace`).
    #[arg(long = "protected-namespace", value_name = "NAMESPACE")]
    protected_namespaces: Vec<String>,
}

impl AgentArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        if !nix::unistd::geteuid().is_root() {
            anyhow::bail!(
                "the agent needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to enter pod network namespaces; run it as the Helm chart's DaemonSet or with sudo"
            );
        }
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async move {
            let metrics = AgentMetrics::new();
            let client = async {
                let config = kube::Config::infer().await.map_err(kube::Error::InferConfig)?;
                crate::api_requests::counted_client(config, metrics.api_requests())
            }
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot build a Kubernetes client: {e} (in a pod: is the ServiceAccount mounted? elsewhere: KUBECONFIG)")
            })?;
            let Self {
                nodes,
                journal_dir,
                admin_addr,
                proc_root,
                resync,
                node_netns,
                controller_namespace,
                allow_all_namespaces,
                protected_namespaces,
            } = self;
            let kernel = tokio::task::spawn_blocking(move || {
                let kernel = LinuxKernel::detect(proc_root);
                match node_netns {
                    Some(path) => kernel.with_node_netns(path),
                    None => kernel,
                }
            })
            .await?;
            let listener = tokio::net::TcpListener::bind(admin_addr).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {admin_addr} for /healthz and /metrics: {e}")
            })?;
            tokio::spawn(serve_admin(listener, metrics.clone()));
            let config = AgentConfig {
                nodes,
                journal_dir,
                resync,
                policy: Policy {
                    controller_namespace,
                    protected_namespaces: protected_namespaces.into_iter().collect(),
                    allow_all_namespaces,
                },
            };
            runner::run(client, Arc::new(kernel), config, metrics, crate::cli::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        })
    }
}

async fn serve_admin(listener: tokio::net::TcpListener, metrics: AgentMetrics) {
    let readiness = metrics.clone();
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // Ready once the journal is usable and replayed: until then the agent applies nothing,
        // and says why.
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness.readiness() {
                        Ok(()) => (StatusCode::OK, "ok".to_string()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        );
    if let Err(error) = axum::serve(listener, router).await {
        tracing::error!(%error, "agent admin server stopped");
    }
}
