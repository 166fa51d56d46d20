//! The `faultline` command line. Each subcommand lives in its own module; this one only parses
//! and dispatches.
//!
//! Exit codes are one contract across commands (each command's `--help` lists its own): 0
//! success (`run`: passed), 1 hypothesis failed, 2 aborted, 3 usage error, invalid manifest,
//! cluster error or timeout, 4 inconclusive, 5 could not run. Usage errors that clap finds are
//! 3 too, not clap's 2, which would read as "aborted".

// stdout goes through `stdout::out!`/`outln!`: `print!` panics when the reader has gone.
#![deny(clippy::print_stdout)]

mod abort;
mod agent;
mod controller;
pub mod crds;
mod demo_app;
mod exit_codes;
mod input;
mod report;
mod run;
mod sandbox;
mod status;
mod stdout;
mod stop;
mod subject;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use exit_codes::*;

/// Usage errors, invalid manifests, cluster errors and timeouts.
const USAGE: u8 = 3;

/// Parses the command line and runs the command. A usage error exits 3 (see the module doc);
/// `--help` and `--version` exit 0.
pub fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => cli.run(),
        Err(error) => {
            // Help goes to stdout; a reader that has gone is no reason to fail (see `stdout`).
            let _ = error.print();
            if error.use_stderr() {
                ExitCode::from(USAGE)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// faultline: chaos experiments for Kubernetes whose faults never outlive the experiment.
#[derive(Debug, Parser)]
#[command(
    name = "faultline",
    version,
    about,
    propagate_version = true,
    after_help = TOP_EXIT_CODES
)]
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
    #[command(after_help = SERVER_EXIT_CODES)]
    Controller(controller::ControllerArgs),
    /// Run the node agent: applies and reverts network faults in pod network namespaces on
    /// this node (a DaemonSet in production; needs root).
    #[command(after_help = SERVER_EXIT_CODES)]
    Agent(agent::AgentArgs),
    /// Print every faultline CustomResourceDefinition as YAML (or write one file per CRD).
    #[command(after_help = DONE_EXIT_CODES)]
    Crds(crds::CrdsArgs),
    /// A local Kubernetes API server with faultline's CRDs, to try faultline without a cluster.
    #[command(after_help = SANDBOX_EXIT_CODES)]
    Sandbox(sandbox::SandboxArgs),
    /// The sandbox's demo HTTP service (/healthz, /work calling downstreams, /metrics).
    #[command(after_help = SERVER_EXIT_CODES)]
    DemoApp(demo_app::DemoAppArgs),
    /// Check manifests offline: CRD schema, CEL rules and semantic checks.
    #[command(after_help = VALIDATE_EXIT_CODES)]
    Validate(validate::ValidateArgs),
    /// Abort an experiment or a game day (or every running one): faults are reverted at once.
    #[command(after_help = ABORT_EXIT_CODES)]
    Abort(abort::AbortArgs),
    /// Emergency stop for the whole cluster: running experiments abort, nothing new injects.
    #[command(after_help = DONE_EXIT_CODES)]
    Pause(stop::PauseArgs),
    /// Lift `faultline pause`.
    #[command(after_help = DONE_EXIT_CODES)]
    Resume(stop::PauseArgs),
    /// Create the experiments of a manifest and (--wait) follow them to a verdict.
    #[command(after_help = RUN_EXIT_CODES)]
    Run(run::RunArgs),
    /// Write the report (Markdown, HTML, JSON or JUnit) of an experiment, a game day (fgd/NAME) or a schedule's runs (fsched/NAME) from their status.
    #[command(after_help = REPORT_EXIT_CODES)]
    Report(report::ReportArgs),
    /// List experiments, those still going first.
    #[command(after_help = LISTED_EXIT_CODES)]
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
        let code = match result {
            Ok(code) => code,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::from(USAGE)
            }
        };
        stdout::finish(code)
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
