//! Run the sandbox API server in the foreground (for poking at it with kubectl).
//! `cargo run --example sandbox_apiserver -- [PORT] [KUBECONFIG_PATH]`
use faultline::sandbox::apiserver::ApiServer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let mut args = std::env::args().skip(1);
    let port = args.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let srv = ApiServer::start(port).await?;
    if let Some(path) = args.next() {
        std::fs::write(&path, srv.kubeconfig_yaml())?;
    }
    println!("listening on {}", srv.url());
    tokio::signal::ctrl_c().await?;
    srv.shutdown().await;
    Ok(())
}
