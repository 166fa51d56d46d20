//! `faultline sandbox up | down | status`: a local Kubernetes API with faultline's CRDs, for
//! trying faultline without a cluster and for the tests.
//!
//! `up` runs in the foreground until Ctrl-C (or SIGTERM), or with `--detach` re-runs itself in
//! the background and returns once the API answers. The state file in the state directory
//! (`.faultline/sandbox.json`) tells `down` and `status` where the sandbox is.
//!
//! Pods (see `pods`): as root, every pod is a real `faultline demo-app` process in its own
//! network namespace on a bridge (see [`crate::sandbox::workloads::realpod`]), unless
//! `--simulated-pods`; without root pods are simulated (nothing runs, network faults cannot be
//! injected). Real pods use one of the machine's sandbox slots (slot 0: bridge `flsbx0`,
//! 10.244.0.0/16, namespaces `flsbx-*`, cgroup `faultline-sandbox`), held with a lock for the
//! life of `up`; `down` removes whatever an unheld slot left behind, so a crashed `up` leaves
//! nothing once `down` ran.

mod api;
mod manifests;
mod pods;

use std::{
    path::{Path, PathBuf},
    process::{Command as Process, ExitCode, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::cli::stdout::{out, outln};
use crate::{
    api::all_crds,
    api::{NAMESPACE_OPT_IN_LABEL, NAMESPACE_OPT_IN_VALUE},
    controller::{self, probe_hub::ProbeHub},
    manifest,
    sandbox::workloads::{ControlPlane, WorkloadOptions, Workloads, realpod::RealPodConfig},
};
use api::Api;
use manifests::{APPLY_READY_WAIT, apply_in_order};
use pods::{choose_pods, remove_leftover_pods, remove_own_slot_pods};

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    #[command(subcommand)]
    command: SandboxCommand,
    /// Where the sandbox keeps its state file, log and default kubeconfig.
    #[arg(long, global = true, default_value = ".faultline")]
    state_dir: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum SandboxCommand {
    /// Start the sandbox API server with faultline's CRDs installed.
    Up(UpArgs),
    /// Stop a sandbox started with `up --detach`.
    Down,
    /// Say whether a sandbox is running, and where.
    Status,
}

#[derive(Debug, Clone, clap::Args)]
struct UpArgs {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write the kubeconfig. Default: STATE_DIR/kubeconfig.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Run in the background and return once the API answers; `sandbox down` stops it.
    #[arg(long)]
    detach: bool,
    /// Manifests (files or directories) to apply once the API is up.
    #[arg(long, value_name = "PATH")]
    apply: Vec<PathBuf>,
    /// How many simulated nodes run the sandbox's workloads (Deployments get pods on them).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
    nodes: u8,
    /// Keep pods simulated even as root: no processes, no network namespaces.
    #[arg(long)]
    simulated_pods: bool,
    /// Attach to a running control plane instead of starting the embedded API server: the
    /// kubeconfig of a real kube-apiserver with kube-controller-manager and kube-scheduler
    /// (`scripts/cluster.sh up` starts one). The sandbox then installs the CRDs, plays the
    /// kubelets of its nodes and runs the node agent and the controller as usual; the real
    /// controllers run Deployments and scheduling.
    #[arg(long, value_name = "KUBECONFIG")]
    cluster: Option<PathBuf>,
    /// Do not run the controller in the sandbox (run `faultline controller` yourself, e.g. with
    /// the chart's ServiceAccount).
    #[arg(long)]
    no_controller: bool,
    /// Do not run the node agent in the sandbox (run `faultline agent --node sandbox-node-1,...`
    /// yourself, as root).
    #[arg(long)]
    no_agent: bool,
}

/// What `down` and `status` need to find a running sandbox.
#[derive(Debug, Serialize, Deserialize)]
struct SandboxState {
    pid: u32,
    url: String,
    kubeconfig: PathBuf,
    /// The real-pod slot the sandbox holds; none when its pods are simulated.
    #[serde(default)]
    pod_slot: Option<u8>,
}

impl SandboxArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Self { command, state_dir } = self;
        match command {
            SandboxCommand::Up(args) if args.detach => up_detached(&state_dir, args),
            SandboxCommand::Up(args) => {
                let runtime = tokio::runtime::Runtime::new()?;
                runtime.block_on(up_foreground(&state_dir, args))
            }
            SandboxCommand::Down => down(&state_dir),
            SandboxCommand::Status => status(&state_dir),
        }
    }
}

fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("sandbox.json")
}

fn read_state(state_dir: &Path) -> Option<SandboxState> {
    let text = std::fs::read_to_string(state_file(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
}

async fn up_foreground(state_dir: &Path, args: UpArgs) -> anyhow::Result<ExitCode> {
    let UpArgs {
        port,
        kubeconfig,
        detach: _,
        apply,
        nodes,
        simulated_pods,
        cluster,
        no_controller,
        no_agent,
    } = args;
    if let Some(existing) = read_state(state_dir).filter(|s| process_alive(s.pid)) {
        bail!(
            "a sandbox is already running (pid {}, {}); stop it with `faultline sandbox down`",
            existing.pid,
            existing.url
        );
    }
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    let pods = choose_pods(state_dir, simulated_pods).await?;
    let api = match &cluster {
        Some(path) => Api::attach(path).await?,
        None => Api::embedded(port, pods.log_dir()).await?,
    };
    let client = api.client().await?;
    crate::manifest::install_crds(&client, &all_crds(), Duration::from_secs(30))
        .await
        .context("installing faultline's CRDs")?;
    let workloads = Workloads::start(
        client.clone(),
        WorkloadOptions {
            nodes,
            runtime: pods.runtime(),
            control_plane: api.control_plane(),
            ..Default::default()
        },
    )
    .await
    .context("starting the workload simulator")?;
    let node_names: Vec<String> = (1..=nodes)
        .map(|n| format!("{}{n}", crate::sandbox::workloads::naming::NODE_PREFIX))
        .collect();
    let _agents = crate::sandbox::node_agent::start(
        client.clone(),
        node_names.clone(),
        state_dir,
        pods.netns_prefix(),
        !no_agent,
    )
    .await
    .context("starting the node agent")?;
    prepare_namespaces(&client).await?;
    let (stop_controller, controller_stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = if no_controller {
        None
    } else {
        Some(tokio::spawn(run_controller(api.client_config()?, async {
            let _ = controller_stopped.await;
        })?))
    };

    let kubeconfig = match (&cluster, kubeconfig) {
        (Some(path), _) => path.clone(),
        (None, path) => {
            let path = path.unwrap_or_else(|| state_dir.join("kubeconfig"));
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let Api::Embedded(server) = &api else {
                unreachable!("no cluster given: the API server is embedded")
            };
            std::fs::write(&path, server.kubeconfig_yaml())
                .with_context(|| format!("writing kubeconfig {}", path.display()))?;
            path
        }
    };
    let state = SandboxState {
        pid: std::process::id(),
        url: api.url(),
        kubeconfig: kubeconfig.clone(),
        pod_slot: pods.slot(),
    };
    std::fs::write(state_file(state_dir), serde_json::to_string_pretty(&state)?)?;

    apply_in_order(&client, &apply).await?;

    outln!("faultline sandbox is up at {}", api.url());
    outln!("  kubeconfig: {}", kubeconfig.display());
    match api.control_plane() {
        ControlPlane::Simulated => {
            outln!("  nodes:      {nodes} simulated (Deployments get Running, Ready pods on them)")
        }
        ControlPlane::Real => outln!(
            "  nodes:      {} (this sandbox plays their kubelets; the cluster's own controllers and scheduler do the rest)",
            node_names.join(", ")
        ),
    }
    outln!("  pods:       {}", pods.describe(state_dir));
    if no_agent {
        outln!(
            "  agent:      not started here (--no-agent): run `faultline agent --node {}` as root",
            node_names.join(",")
        );
    }
    if no_controller {
        outln!(
            "  controller: not started here (--no-controller); namespace `default` is opted in to chaos"
        );
    } else {
        outln!("  controller: running (namespace `default` is opted in to chaos)");
    }
    outln!("  try:        export KUBECONFIG={}", kubeconfig.display());
    outln!("              kubectl get chaos            # every faultline resource");
    outln!("              kubectl get fex -o wide      # ChaosExperiments");
    outln!("  stop:       Ctrl-C (or `faultline sandbox down` when started with --detach)");

    super::shutdown_signal().await;
    outln!("stopping the sandbox");
    let _ = stop_controller.send(());
    if let Some(controller) = controller {
        let _ = tokio::time::timeout(Duration::from_secs(5), controller).await;
    }
    // Stops every pod first, then removes the bridge and cgroups the pods shared.
    workloads.shutdown().await;
    pods.clean_up().await;
    if let Api::Embedded(server) = api {
        server.shutdown().await;
    }
    let _ = std::fs::remove_file(state_file(state_dir));
    Ok(ExitCode::SUCCESS)
}

/// The sandbox's `default` namespace is opted in to chaos so that the examples run as they are;
/// `faultline-system` holds the controller's pause switch.
async fn prepare_namespaces(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, Patch, PatchParams};
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let opt_in = serde_json::json!({"metadata": {"labels": {NAMESPACE_OPT_IN_LABEL: NAMESPACE_OPT_IN_VALUE}}});
    namespaces
        .patch("default", &PatchParams::default(), &Patch::Merge(&opt_in))
        .await
        .context("opting the default namespace in to chaos")?;
    let system = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "faultline-system"}});
    namespaces
        .patch(
            "faultline-system",
            &PatchParams::apply(manifest::CLI_FIELD_MANAGER),
            &Patch::Apply(&system),
        )
        .await
        .context("creating the faultline-system namespace")?;
    Ok(())
}

/// The controller, in process, with the real probe hub.
fn run_controller(
    config: kube::Config,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let telemetry = controller::Telemetry::default();
    let clients = controller::Clients::counted(config, &telemetry.metrics)
        .context("building the controller's client")?;
    let (trigger, triggers) = tokio::sync::mpsc::unbounded_channel();
    let hub = std::sync::Arc::new(ProbeHub::new(
        clients.main.clone(),
        trigger,
        telemetry.metrics.clone(),
    ));
    Ok(controller::run(
        clients,
        controller::Settings::default(),
        hub,
        triggers,
        telemetry,
        stop,
    ))
}
fn up_detached(state_dir: &Path, args: UpArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(state_dir)?;
    let log_path = state_dir.join("sandbox.log");
    let log = std::fs::File::create(&log_path)?;
    let exe = std::env::current_exe().context("finding the faultline binary")?;
    let mut command = Process::new(exe);
    command
        .arg("sandbox")
        .arg("--state-dir")
        .arg(state_dir)
        .arg("up");
    command.arg("--port").arg(args.port.to_string());
    command.arg("--nodes").arg(args.nodes.to_string());
    if args.simulated_pods {
        command.arg("--simulated-pods");
    }
    if let Some(kubeconfig) = &args.kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    if let Some(cluster) = &args.cluster {
        command.arg("--cluster").arg(cluster);
    }
    if args.no_controller {
        command.arg("--no-controller");
    }
    if args.no_agent {
        command.arg("--no-agent");
    }
    for path in &args.apply {
        command.arg("--apply").arg(path);
    }
    // Its own process group, so the Ctrl-C of the shell that started it does not reach it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the background sandbox")?;

    // The child's own waits (the CRDs established, the applied Deployments ready) come first:
    // it reports a failure itself long before this.
    let patience = Duration::from_secs(60) + APPLY_READY_WAIT;
    let deadline = std::time::Instant::now() + patience;
    loop {
        if let Some(exit) = child.try_wait()? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the sandbox exited at start ({exit}):\n{log}");
        }
        if let Some(state) = read_state(state_dir).filter(|s| s.pid == child.id()) {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("faultline sandbox is up") {
                out!("{}", start_report(&log));
                outln!(
                    "  (running in the background as pid {}, full log: {})",
                    state.pid,
                    log_path.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the sandbox did not come up within {}s; see {}",
                patience.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The background sandbox's start as a person reads it: what it printed, with its warnings and
/// errors; its routine log records (INFO and below) stay in the log file.
fn start_report(log: &str) -> String {
    log.lines()
        .filter(|line| !routine_record(line))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// A log record below WARN, as the logger writes it: `2026-12-07T05:49:51.580771Z  INFO ...`.
fn routine_record(line: &str) -> bool {
    let mut words = line.split_whitespace();
    let stamped = words
        .next()
        .is_some_and(|word| chrono::DateTime::parse_from_rfc3339(word).is_ok());
    stamped && matches!(words.next(), Some("INFO" | "DEBUG" | "TRACE"))
}

fn down(state_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(state) = read_state(state_dir) else {
        outln!(
            "no sandbox is running (no {})",
            state_file(state_dir).display()
        );
        remove_leftover_pods()?;
        return Ok(ExitCode::SUCCESS);
    };
    if process_alive(state.pid) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(state.pid)?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_alive(state.pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if process_alive(state.pid) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let _ = std::fs::remove_file(state_file(state_dir));
    outln!("sandbox stopped (pid {})", state.pid);
    if let Some(slot) = state.pod_slot {
        remove_own_slot_pods(slot)?;
    }
    remove_leftover_pods()?;
    Ok(ExitCode::SUCCESS)
}

fn status(state_dir: &Path) -> anyhow::Result<ExitCode> {
    match read_state(state_dir) {
        Some(state) if process_alive(state.pid) => {
            outln!("sandbox running: pid {} at {}", state.pid, state.url);
            outln!("kubeconfig: {}", state.kubeconfig.display());
            match state.pod_slot {
                Some(slot) => {
                    let config = RealPodConfig::slot(slot, PathBuf::new());
                    outln!(
                        "pods: real (slot {slot}: bridge {}, {}, namespaces {}*)",
                        config.bridge,
                        config.pod_cidr(),
                        config.netns_prefix
                    );
                }
                None => outln!("pods: simulated"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(state) => {
            outln!(
                "sandbox not running (stale state for pid {}; `faultline sandbox down` clears it)",
                state.pid
            );
            Ok(ExitCode::from(1))
        }
        None => {
            outln!("sandbox not running");
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_report_keeps_what_was_printed_and_the_warnings_not_the_routine_records() {
        let log = "\
2026-12-07T05:49:51.580771Z  INFO faultline::sandbox::apiserver: sandbox API server listening addr=127.0.0.1:46745
removed what an earlier sandbox left behind: 2 namespaces
2026-12-07T05:49:52.249115Z DEBUG faultline::agent::runner: agent starting
2026-12-07T05:49:52.259903Z  WARN faultline::agent::writeback: could not publish the node's capabilities
applied deployment/web (experiments/workloads/demo-app.yaml)
2026-12-07T05:49:52.307570Z ERROR faultline::controller: the lease cannot be read
faultline sandbox is up at http://127.0.0.1:46745
  pods:       simulated (not root)
";
        assert_eq!(
            start_report(log),
            "\
removed what an earlier sandbox left behind: 2 namespaces
2026-12-07T05:49:52.259903Z  WARN faultline::agent::writeback: could not publish the node's capabilities
applied deployment/web (experiments/workloads/demo-app.yaml)
2026-12-07T05:49:52.307570Z ERROR faultline::controller: the lease cannot be read
faultline sandbox is up at http://127.0.0.1:46745
  pods:       simulated (not root)
"
        );
    }
}
