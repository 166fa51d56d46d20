//! The `faultline` command line. Each subcommand lives in its own module; this one only parses
//! and dispatches.

mod agent;
mod controller;
pub mod crds;
mod demo_app;
mod report;
mod run;
mod sandbox;
mod status;
mod stop;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// faultline: chaos experiments for Kubernetes whose faults never outlive the experiment.
#[derive(Debug, Parser)]
#[command(name = "faultline", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter, e.g. `faultline=debug,kube=info`.
    #[arg(
        long,
        global = true,
        env = "FAULTLINE_LOG",
        default_value = "faultline=info,warn"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller: reconciles ChaosExperiments (leader-elected; admin port for health and
    /// metrics).
    Controller(controller::ControllerArgs),
    /// Run the node agent: applies and reverts network faults in pod network namespaces on
    /// this node (a DaemonSet in production; needs root).
    Agent(agent::AgentArgs),
    /// Print every faultline CustomResourceDefinition as YAML (or write one file per CRD).
    Crds(crds::CrdsArgs),
    /// A local Kubernetes API server with faultline's CRDs, to try faultline without a cluster.
    Sandbox(sandbox::SandboxArgs),
    /// The sandbox's demo HTTP service (/healthz, /work calling downstreams, /metrics).
    DemoApp(demo_app::DemoAppArgs),
    /// Check manifests offline: CRD schema, CEL rules and semantic checks (exit 0 valid, 1 invalid, 3 usage).
    Validate(validate::ValidateArgs),
    /// Abort an experiment (or every running one): its faults are reverted at once.
    Abort(stop::AbortArgs),
    /// Emergency stop for the whole cluster: running experiments abort, nothing new injects.
    Pause(stop::PauseArgs),
    /// Lift `faultline pause`.
    Resume(stop::PauseArgs),
    /// Create the experiments of a manifest and (--wait) follow them to a verdict (exit 0 passed, 1 failed, 2 aborted, 3 usage/cluster/timeout).
    Run(run::RunArgs),
    /// Write the report (Markdown, HTML, JSON or JUnit) of an experiment, a game day (fgd/NAME) or a schedule's runs (fsched/NAME) from their status.
    Report(report::ReportArgs),
    /// List experiments, those still going first.
    Status(status::StatusArgs),
}

impl Cli {
    /// Runs the command; the exit code is the command's own (see each command's help).
    pub fn run(self) -> ExitCode {
        let Cli { log, command } = self;
        init_tracing(&log);
        install_crypto_provider();
        let result = match command {
            Command::Controller(args) => args.run(),
            Command::Agent(args) => args.run(),
            Command::Crds(args) => args.run(),
            Command::Sandbox(args) => args.run(),
            Command::DemoApp(args) => args.run(),
            Command::Validate(args) => args.run(),
            Command::Abort(args) => args.run(),
            Command::Pause(args) => args.run(true),
            Command::Resume(args) => args.run(false),
            Command::Run(args) => args.run(),
            Command::Report(args) => args.run(),
            Command::Status(args) => args.run(),
        };
        match result {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(3)
            }
        }
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("faultline=info,warn"));
    // Logs go to stderr so that commands whose stdout is data (`crds`, `report`) stay pipeable.
    // Colours only on a terminal: a log file or CI output must stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// kube pulls in rustls with the ring provider and reqwest brings aws-lc-rs; with both present
/// rustls cannot pick one and the kube client panics. Choosing ring explicitly settles it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A command-line duration in Go's notation (`30s`, `1m30s`), as manifests write them.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::api::GoDuration::from(text).parse()
}

/// Resolves on Ctrl-C or SIGTERM (what Kubernetes sends a pod it stops). The SIGTERM handler
/// is installed when this is called, not when the future is first polled: a signal in between
/// (a process told to stop right after it said it was serving) would otherwise kill it.
/// Call it inside the runtime.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match terminate.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}
