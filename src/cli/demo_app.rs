//! `faultline demo-app`: the sandbox's demo HTTP service (see [`crate::demo_app`]). Every flag
//! also reads an environment variable, so that a pod spec can configure it with `env:`.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context;

use crate::cli::stdout::outln;
use crate::demo_app::{DemoConfig, serve};

#[derive(Debug, clap::Args)]
pub struct DemoAppArgs {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "DEMO_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// A URL that `GET /work` calls (repeat the flag; DEMO_DOWNSTREAM takes a comma-separated list).
    #[arg(
        long = "downstream",
        value_name = "URL",
        env = "DEMO_DOWNSTREAM",
        value_delimiter = ','
    )]
    downstreams: Vec<String>,
    /// The name `/work` answers with.
    #[arg(long, env = "DEMO_NAME", default_value = "demo-app")]
    name: String,
    /// How long one downstream call may take, in milliseconds.
    #[arg(long, env = "DEMO_DOWNSTREAM_TIMEOUT_MS", default_value_t = 2000)]
    downstream_timeout_ms: u64,
    /// A `name address` file consulted before DNS (the sandbox's stand-in for cluster DNS).
    #[arg(long, env = "DEMO_HOSTS_FILE")]
    hosts_file: Option<std::path::PathBuf>,
}

impl DemoAppArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            listen,
            downstreams,
            name,
            downstream_timeout_ms,
            hosts_file,
        } = self;
        let config = DemoConfig {
            name,
            downstreams: downstreams
                .into_iter()
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
                .collect(),
            downstream_timeout: Duration::from_millis(downstream_timeout_ms),
            hosts_file,
        };
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(async move {
            let shutdown = super::shutdown_signal();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            let bound = listener.local_addr()?;
            // Tests and scripts read this line to learn the port when they asked for port 0.
            outln!("demo-app {} listening on {bound}", config.name);
            tracing::info!(%bound, downstreams = ?config.downstreams, "demo-app serving");
            serve(listener, config, shutdown).await.context("serving")?;
            tracing::info!("demo-app stopped");
            anyhow::Ok(ExitCode::SUCCESS)
        })
    }
}
