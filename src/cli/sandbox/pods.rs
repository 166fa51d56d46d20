//! The sandbox's pods: real `faultline demo-app` processes in network namespaces on one of the
//! machine's sandbox slots (as root), or simulated ones; and removing what a sandbox left.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;

use crate::cli::stdout::outln;
use crate::sandbox::workloads::{
    PodRuntime,
    realpod::{self, RealPodConfig, RealPods, SlotLease},
};

/// How the sandbox runs its pods.
pub(super) enum Pods {
    Simulated {
        why: &'static str,
    },
    Real {
        pods: std::sync::Arc<RealPods>,
        /// Held until the sandbox ends: the slot's names are ours meanwhile.
        lease: SlotLease,
    },
}

/// Real pods as root unless asked otherwise (and a slot is free); simulated ones otherwise.
pub(super) async fn choose_pods(state_dir: &Path, simulated: bool) -> anyhow::Result<Pods> {
    if simulated {
        return Ok(Pods::Simulated {
            why: "--simulated-pods",
        });
    }
    if !nix::unistd::geteuid().is_root() {
        return Ok(Pods::Simulated { why: "not root" });
    }
    let Some(lease) = realpod::claim_slot().context("claiming a sandbox slot")? else {
        return Ok(Pods::Simulated {
            why: "every real-pod slot of this machine is in use",
        });
    };
    let mut config = RealPodConfig::slot(
        lease.slot(),
        std::env::current_exe().context("finding the faultline binary")?,
    );
    config.log_dir = Some(state_dir.join("pods"));
    config.hosts_file = Some(crate::sandbox::node_agent::hosts_file(state_dir));
    // Whatever is left under our slot's names is from a sandbox that crashed: nobody held it.
    let leftover = config.clone();
    let cleaned = tokio::task::spawn_blocking(move || realpod::cleanup(&leftover))
        .await?
        .context("removing what an earlier sandbox left behind")?;
    if !cleaned.is_empty() {
        outln!("removed what an earlier sandbox left behind: {cleaned}");
    }
    let pods = RealPods::new(config).context("starting the pod runtime")?;
    Ok(Pods::Real { pods, lease })
}

impl Pods {
    /// Where real pods' containers write their output; `None` for simulated pods.
    pub(super) fn log_dir(&self) -> Option<PathBuf> {
        match self {
            Pods::Simulated { .. } => None,
            Pods::Real { pods, .. } => pods.config().log_dir.clone(),
        }
    }

    /// The prefix of the real pods' network namespaces; `None` for simulated pods.
    pub(super) fn netns_prefix(&self) -> Option<String> {
        match self {
            Pods::Simulated { .. } => None,
            Pods::Real { pods, .. } => Some(pods.config().netns_prefix.clone()),
        }
    }

    pub(super) fn runtime(&self) -> PodRuntime {
        match self {
            Pods::Simulated { .. } => PodRuntime::Simulated,
            Pods::Real { pods, .. } => PodRuntime::Real(pods.clone()),
        }
    }

    pub(super) fn slot(&self) -> Option<u8> {
        match self {
            Pods::Simulated { .. } => None,
            Pods::Real { lease, .. } => Some(lease.slot()),
        }
    }

    pub(super) fn describe(&self, state_dir: &Path) -> String {
        match self {
            Pods::Simulated { why } => format!(
                "simulated ({why}): nothing runs in them, and network faults will be refused \
                 (no node agent runs); run as root for real pods"
            ),
            Pods::Real { pods, .. } => {
                let config = pods.config();
                format!(
                    "real: `faultline demo-app` processes in network namespaces {}*, on bridge \
                     {} ({}; logs in {}); the node agent applies network faults in them",
                    config.netns_prefix,
                    config.bridge,
                    config.pod_cidr(),
                    state_dir.join("pods").display()
                )
            }
        }
    }

    /// Removes the bridge and cgroups (the pods themselves are stopped by the simulator).
    pub(super) async fn clean_up(self) {
        let Pods::Real { pods, lease } = self else {
            return;
        };
        let config = pods.config().clone();
        match tokio::task::spawn_blocking(move || realpod::cleanup(&config)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("warning: the pod network was not fully removed: {e}"),
            Err(e) => eprintln!("warning: removing the pod network failed: {e}"),
        }
        drop(lease);
    }
}

/// As root: removes what the stopped sandbox left in its own slot, waiting a little for a
/// process that holds the slot for a moment (another `down` cleaning it, a check) to let go.
pub(super) fn remove_own_slot_pods(slot: u8) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    match realpod::cleanup_slot_when_free(slot, Duration::from_secs(10))
        .with_context(|| format!("removing the pods of sandbox slot {slot}"))?
    {
        Some(cleaned) if !cleaned.is_empty() => {
            outln!("removed leftovers of sandbox slot {slot}: {cleaned}")
        }
        Some(_) => {}
        None => outln!(
            "sandbox slot {slot} is in use by a sandbox started since; it cleaned the slot when it claimed it"
        ),
    }
    Ok(())
}

/// As root: removes the namespaces, veths, bridges and cgroups of every slot no running sandbox
/// holds (a sandbox that was killed, or crashed, leaves them). Idempotent.
pub(super) fn remove_leftover_pods() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    for (slot, cleaned) in
        realpod::cleanup_unclaimed_slots().context("removing leftover sandbox pods")?
    {
        outln!("removed leftovers of sandbox slot {slot}: {cleaned}");
    }
    Ok(())
}
