//! The sandbox's node agent and Services: what a real cluster's agent DaemonSet and kube-proxy
//! do, run inside `faultline sandbox up` when its pods are real (root).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use super::services::{self, ServiceOptions};
use crate::agent::linux::LinuxKernel;
use crate::agent::runner::{self, AgentConfig};
use crate::agent::telemetry::AgentMetrics;
use crate::probes::hosts::StaticHosts;

/// What simulated nodes report as their capabilities: nothing, and why.
pub const SIMULATED_CAPABILITIES: &str =
    "none (sandbox pods are simulated; run the sandbox as root for network faults)";

/// Starts the Services stand-in (always: probes resolve Service names through it) and, when pods
/// are real and `run_agent`, the node agent for every sandbox node (one process serves them all:
/// they share this machine). Returns the tasks; dropping the sandbox runtime stops them.
pub async fn start(
    client: Client,
    nodes: Vec<String>,
    state_dir: &Path,
    pod_netns_prefix: Option<String>,
    run_agent: bool,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let real_pods = pod_netns_prefix.is_some();
    let hosts = StaticHosts::default();
    // The controller's probes in this process resolve `name.ns.svc` through the sandbox.
    let _ = crate::probes::hosts::install(hosts.clone());
    let mut tasks = vec![tokio::spawn(services::run(
        client.clone(),
        ServiceOptions {
            netns_prefix: pod_netns_prefix,
            hosts_file: Some(hosts_file(state_dir)),
            probe_hosts_file: Some(probe_hosts_file(state_dir)),
            hosts,
        },
    ))];
    if !real_pods {
        // No agent runs: say so where the controller looks, so a network fault is refused at
        // preflight with the reason instead of timing out.
        let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
        let patch = serde_json::json!({"metadata": {"annotations": {
            crate::api::NODE_CAPABILITIES_ANNOTATION: SIMULATED_CAPABILITIES
        }}});
        for node in &nodes {
            let _ = api
                .patch(
                    node,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await;
        }
    }
    if real_pods && run_agent {
        let kernel = tokio::task::spawn_blocking(|| LinuxKernel::detect("/proc")).await?;
        tracing::info!(
            capabilities = %crate::agent::kernel::Kernel::capabilities(&kernel).annotation(),
            "sandbox node agent starting"
        );
        let config = AgentConfig {
            nodes,
            journal_dir: state_dir.join("agent"),
            resync: Duration::from_secs(1),
            policy: crate::agent::admission::Policy::new("faultline-system"),
        };
        tasks.push(tokio::spawn(async move {
            if let Err(error) = runner::run(
                client,
                Arc::new(kernel),
                config,
                AgentMetrics::new(),
                std::future::pending(),
            )
            .await
            {
                tracing::error!(%error, "sandbox node agent stopped");
            }
        }));
    }
    Ok(tasks)
}

/// Service names → ready endpoints' IPs, for a controller that runs outside the sandbox process
/// on this machine (`FAULTLINE_PROBE_HOSTS_FILE`; it stands in for cluster DNS).
pub fn probe_hosts_file(state_dir: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(state_dir)
        .unwrap_or_else(|_| state_dir.to_path_buf())
        .join("probe-hosts")
}

/// The hosts file sandbox pods read (`DEMO_HOSTS_FILE`): Service names → ClusterIPs.
pub fn hosts_file(state_dir: &Path) -> std::path::PathBuf {
    std::fs::canonicalize(state_dir)
        .unwrap_or_else(|_| state_dir.to_path_buf())
        .join("hosts")
}
