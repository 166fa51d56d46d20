//! `faultline controller` processes against a test cluster, as separate replicas under the
//! Lease API: start one, read who holds the lease, and a bed for them (CRDs, namespaces, a
//! node, the stand-in agent, a kubeconfig file).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use faultline::api::all_crds;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};

use super::TestCluster;

/// A controller process, killed (SIGKILL) when dropped, woken first if it was stopped.
pub struct Replica {
    pub child: Child,
    pub identity: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// A replica named `identity` (its pod name, which survives the restarts of its
    /// container) whose lease lasts `duration` seconds and is renewed `grace` seconds early
    /// (the chart's values are 15 and 5).
    pub fn start(kubeconfig: &Path, identity: &str, duration: u64, grace: u64) -> Replica {
        let child = Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args([
                "controller",
                "--admin-addr",
                "127.0.0.1:0",
                "--namespace",
                "faultline-system",
            ])
            .args([
                "--lease-duration-seconds",
                &duration.to_string(),
                "--lease-grace-seconds",
                &grace.to_string(),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .stdout(Stdio::null())
            .stderr(log_of(identity))
            .spawn()
            .expect("start faultline controller");
        Replica {
            child,
            identity: identity.to_string(),
        }
    }

    /// Sends signal `name` (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status();
    }
}

/// Where a replica's log goes: appended to `$FAULTLINE_REPLICA_LOGS/<identity>.log` when set
/// (to find out afterwards what each replica believed), nowhere otherwise.
fn log_of(identity: &str) -> Stdio {
    let Some(dir) = std::env::var_os("FAULTLINE_REPLICA_LOGS") else {
        return Stdio::null();
    };
    let path = Path::new(&dir).join(format!("{identity}.log"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Who holds the controllers' lease, if anyone.
pub async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "faultline-system");
    leases
        .get_opt("faultline-controller")
        .await
        .ok()??
        .spec?
        .holder_identity
}

/// What controller replicas need: the CRDs, `faultline-system` and the opted-in `shop`, a
/// `node-1` on the real cluster, the stand-in agent, and a kubeconfig file for the processes.
pub struct ReplicaBed {
    pub cluster: TestCluster,
    pub client: Client,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    stop_agent: tokio::sync::oneshot::Sender<()>,
    agent: tokio::task::JoinHandle<()>,
}

impl ReplicaBed {
    pub async fn start() -> ReplicaBed {
        let cluster = TestCluster::start().await;
        cluster.install_crds(&all_crds()).await;
        let client = cluster.client().await;
        super::cluster::apply_namespace(&client, "faultline-system", false).await;
        super::cluster::apply_namespace(&client, "shop", true).await;
        if cluster.is_real() {
            super::cluster::cordoned_node(&client, "node-1").await;
        }
        let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(faultline::sandbox::testkit::stand_in_agent(
            client.clone(),
            agent_stopped,
        ));
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).unwrap();
        ReplicaBed {
            cluster,
            client,
            kubeconfig,
            _dir: dir,
            stop_agent,
            agent,
        }
    }

    pub async fn shutdown(self) {
        let _ = self.stop_agent.send(());
        let _ = self.agent.await;
        self.cluster.shutdown().await;
    }
}
