//! `faultline controller`: the controller process, with leader election so that several
//! replicas are safe (only the lease holder reconciles) and an admin port.

use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    admin,
    controller::{self, Clients, Settings, Telemetry, fence::Fence, probe_hub::ProbeHub},
    selection::SafetyPolicy,
};

#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// The namespace the controller runs in: never a target, and home of its Lease and the
    /// pause switch (ConfigMap `faultline-pause`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "faultline-system")]
    namespace: String,
    /// Allow targets in namespaces without the `faultline.dev/chaos=enabled` label.
    #[arg(long, env = "FAULTLINE_ALLOW_ALL_NAMESPACES")]
    allow_all_namespaces: bool,
    /// A cap on targets per experiment, on top of each experiment's own `maxTargets`.
    #[arg(long, env = "FAULTLINE_MAX_TARGETS")]
    max_targets: Option<usize>,
    /// A namespace whose pods are never targets, on top of kube-system and the controller's
    /// own (repeat it for several).
    #[arg(long = "protected-namespace", value_name = "NAMESPACE")]
    protected_namespaces: Vec<String>,
    /// How long node agents get to report a network fault applied before the experiment is
    /// reverted and fails.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    injection_timeout: Duration,
    /// How many experiments are reconciled at once (0: no limit).
    #[arg(long, env = "FAULTLINE_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Lease name for leader election.
    #[arg(long, default_value = "faultline-controller")]
    lease_name: String,
    /// How long a leader's lease lasts without renewal: the longest a crashed leader's
    /// experiments wait for the standby to take over.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// How early before expiry the leader renews.
    #[arg(long, default_value_t = 5)]
    lease_grace_seconds: u64,
    /// This replica's identity in the Lease (defaults to the pod name, or a random id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

impl ControllerArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(self.run_async())
    }

    async fn run_async(self) -> anyhow::Result<ExitCode> {
        let Self {
            namespace,
            allow_all_namespaces,
            max_targets,
            protected_namespaces,
            injection_timeout,
            concurrency,
            admin_addr,
            lease_name,
            lease_duration_seconds,
            lease_grace_seconds,
            identity,
        } = self;
        let config = kube::Config::infer().await.context(
            "no Kubernetes API to talk to: set KUBECONFIG (or run inside a cluster), e.g. `faultline sandbox up` and use its kubeconfig",
        )?;
        let telemetry = Telemetry::default();
        // The Lease (and the fence's reads of it) go through a client the fence never holds
        // back; everything else through fenced ones.
        let lease_client = crate::api_requests::counted_client(
            config.clone(),
            telemetry.metrics.api_requests.clone(),
        )
        .context("building the Kubernetes client")?;
        let grace = lease_grace_seconds.min(lease_duration_seconds.saturating_sub(1));
        let fence = Fence::new(Duration::from_secs(grace.max(1)));
        let clients = Clients::counted_and_fenced(config, &telemetry.metrics, &fence)
            .context("building the Kubernetes client")?;
        crate::probes::hosts::install_from_env();
        let bound = admin::serve(
            admin_addr,
            telemetry.readiness.clone(),
            telemetry.metrics.clone(),
        )
        .await
        .with_context(|| format!("binding the admin port {admin_addr}"))?;
        info!(%bound, "admin endpoints at /healthz /readyz /metrics");
        let settings = Settings {
            policy: SafetyPolicy {
                allow_all_namespaces,
                controller_namespace: namespace.clone(),
                max_targets,
                protected_namespaces,
            },
            injection_timeout,
            concurrency,
            ..Settings::default()
        };

        let identity =
            identity.unwrap_or_else(|| format!("faultline-controller-{}", uuid::Uuid::new_v4()));
        let keeper = tokio::spawn(fence.clone().keep(
            lease_client.clone(),
            namespace.clone(),
            lease_name.clone(),
            identity.clone(),
        ));
        let manager = LeaseManagerBuilder::new(lease_client, lease_name)
            .with_namespace(namespace)
            .with_duration(lease_duration_seconds)
            .with_grace(grace)
            .with_identity(identity)
            .build()
            .await
            .context("setting up leader election")?;
        let (mut leadership, lease_task) = manager.watch().await;
        let shutdown = super::shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            let leader = *leadership.borrow_and_update();
            telemetry.readiness.set_leader(leader);
            telemetry.metrics.is_leader.set(i64::from(leader));
            if leader {
                info!("this replica holds the lease: reconciling");
                // A fresh probe hub per term: probes run only on the leader.
                let (trigger, triggers) = mpsc::unbounded_channel();
                let hub = Arc::new(ProbeHub::new(
                    clients.main.clone(),
                    trigger,
                    telemetry.metrics.clone(),
                ));
                let mut lost = leadership.clone();
                let stop = async move {
                    while lost.changed().await.is_ok() {
                        if !*lost.borrow() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = controller::run(clients.clone(), settings.clone(), hub, triggers, telemetry.clone(), stop) => {
                        warn!("lost the lease: stopped reconciling");
                    }
                    _ = &mut shutdown => break,
                }
            } else {
                info!("standby: another replica holds the lease");
                tokio::select! {
                    changed = leadership.changed() => if changed.is_err() { break },
                    _ = &mut shutdown => break,
                }
            }
        }
        keeper.abort();
        // Dropping the receiver makes the lease manager release the lease for a fast handover.
        drop(leadership);
        let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
        info!("controller stopped");
        Ok(ExitCode::SUCCESS)
    }
}
