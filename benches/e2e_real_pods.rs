//! End to end, what a user lives through, with N real target pods (root only):
//!
//! - **injection**: from the experiment's create (what `kubectl apply` sends) to every target's
//!   fault reported applied by the real node agent (its node's applied receipt, or the
//!   injection's own status), which reports after the kernel took the rule (each pod's network
//!   namespace is checked for the rule afterwards); printed beside it, when the first and the
//!   last FaultInjection were created;
//! - **break → Aborted**: a real HTTP probe checks a service (an HTTP server in this process)
//!   every 100 ms; the service starts failing at T; measured from T to the experiment Aborted,
//!   which it says once every fault is confirmed reverted (by the agents' revert receipts, one
//!   per node); each pod's network namespace is checked for leftovers at that moment;
//! - `status.abortLatency`: what the controller records (violation seen → every fault
//!   confirmed reverted);
//! - **break → objects gone**: from T to every FaultInjection object deleted (housekeeping
//!   after the receipts: no fault is in by then, but the API server's work is done only then).
//!
//! Everything is real: `faultline sandbox up` (as root: pods are `faultline demo-app` processes
//! in their own network namespaces, the real node agent, the controller with its real probe
//! hub), on the embedded API server and, when a control plane runs (`scripts/cluster.sh up`),
//! on kube-apiserver + kube-controller-manager + kube-scheduler, where the sandbox only plays
//! the kubelets. The fault is 50 ms of latency towards 192.0.2.0/24 (TEST-NET-1: rules are
//! installed in every target, no traffic of the bench is delayed by them).
//!
//! With `FAULTLINE_BENCH_SIDE_BY_SIDE` set, every other run goes without the agents' applied
//! receipts (the revert signal's ConfigMap deleted before it: the agents then write each
//! injection's status as its fault goes in, as before the receipts), and each size prints both
//! sets' injection figures; the table holds the runs with receipts.
//!
//! `FAULTLINE_BENCH_PODS` (default `10,100,500`), `FAULTLINE_BENCH_RUNS` (default 3),
//! `FAULTLINE_BENCH_CLUSTER` (`sandbox`, `real` or `both`, default: both when a control plane
//! runs, else sandbox). `FAULTLINE_BENCH_BREAK_AFTER` (ms, default: at once) breaks the
//! service that long after every fault is applied: to see an abort that meets the agents' held
//! `Applied` statuses, which follow 3 s after a node's last apply.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use faultline::api::{
    ChaosExperiment, EXPERIMENT_LABEL, FaultInjection, InjectionPhase, Phase, REVERTING_LABEL,
};
use faultline::controller::applied_receipts::{applied_of, overlay};
use faultline::controller::{REVERTING_CONFIGMAP, revert_signal::Signal};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector;
use kube::{Api, Client};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_faultline");
const NAMESPACE: &str = "bench";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A service whose health the bench flips.
struct Service {
    status: Arc<AtomicU16>,
    url: String,
}

async fn service() -> Service {
    use axum::{Router, extract::State, http::StatusCode, routing::get};
    let status = Arc::new(AtomicU16::new(200));
    let app = Router::new()
        .route(
            "/healthz",
            get(|State(s): State<Arc<AtomicU16>>| async move {
                StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK)
            }),
        )
        .with_state(status.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Service { status, url }
}

/// A detached `faultline sandbox up`; `down` when dropped.
struct Sandbox {
    state: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Sandbox {
    fn up(cluster: Option<&Path>, nodes: usize) -> Sandbox {
        let mut state = tempfile::tempdir().unwrap();
        // FAULTLINE_BENCH_KEEP keeps the state directory (the processes' logs) for a look after.
        if std::env::var_os("FAULTLINE_BENCH_KEEP").is_some() {
            state.disable_cleanup(true);
            eprintln!("  sandbox state (kept): {}", state.path().display());
        }
        let dir = state.path().display().to_string();
        let kubeconfig = cluster.map_or_else(|| state.path().join("kubeconfig"), Path::to_path_buf);
        let mut args = vec![
            "sandbox".to_string(),
            "--state-dir".into(),
            dir,
            "up".into(),
        ];
        args.extend(["--detach".into(), "--nodes".into(), nodes.to_string()]);
        if let Some(cluster) = cluster {
            args.extend(["--cluster".into(), cluster.display().to_string()]);
        }
        let out = Command::new(BIN)
            .args(&args)
            .current_dir(repo())
            .env(
                "FAULTLINE_LOG",
                std::env::var("FAULTLINE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .output()
            .unwrap();
        let sandbox = Sandbox { state, kubeconfig };
        if !out.status.success() {
            let log = std::fs::read_to_string(sandbox.state.path().join("sandbox.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            // Dropping `sandbox` runs `sandbox down`, which removes what a half-started
            // sandbox left (pods, namespaces, cgroups) before the next size or cluster.
            panic!(
                "sandbox up: {}{}\nlast lines of its log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        sandbox
    }

    async fn client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }

    fn netns_prefix(&self) -> String {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(self.state.path().join("sandbox.json")).unwrap(),
        )
        .unwrap();
        match state["pod_slot"].as_u64().expect("real pods (root)") {
            0 => "flsbx-".into(),
            slot => format!("flsbx{slot}-"),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(BIN)
            .args(["sandbox", "--state-dir"])
            .arg(self.state.path())
            .arg("down")
            .output();
    }
}

/// How far [`pods_with_rules`] looks.
#[derive(Clone, Copy, PartialEq)]
enum Look {
    /// nftables only, through netlink: a few milliseconds for 500 namespaces, so it can run
    /// inside a measured window without loading the machine it measures.
    Nftables,
    /// And the iptables fallback's chains: an `iptables-save` process per pod namespace (the
    /// run prints how long that takes), kept out of the measured windows: it used to run
    /// between Aborted and the objects gone, and just before the break.
    AlsoIptables,
}

/// The pods (by UID) that hold a rule of faultline's: a table of the agent's in the pod's own
/// network namespace (partitions, ingress faults) or in the node's, naming the pod (what the
/// NFQUEUE path steers on the node side of the pod's veth), or (with [`Look::AlsoIptables`]) an
/// iptables chain of the fallback in the pod's namespace. Read through the agent's own netlink
/// code: the kernel is asked, not the agent.
fn pods_with_rules(prefix: &str, look: Look) -> std::collections::BTreeSet<String> {
    use faultline::agent::{netns::Netns, nft};
    let mut pods = std::collections::BTreeSet::new();
    let node = Netns::current().expect("this process's network namespace");
    for table in nft::owned_tables(&node).unwrap_or_default() {
        if let Some(comment) = table.comment {
            pods.insert(comment.pod);
        }
    }
    let namespaces: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    for name in namespaces {
        let Ok(ns) = Netns::named(&name) else {
            continue;
        };
        for table in nft::owned_tables(&ns).unwrap_or_default() {
            if let Some(comment) = table.comment {
                pods.insert(comment.pod);
            }
        }
        let chains = look == Look::AlsoIptables
            && ns
                .command("iptables-save", &[], None)
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(":FL-"))
                .unwrap_or(false);
        if chains {
            pods.insert(name);
        }
    }
    pods
}

/// How many of `uids` hold a rule (see [`pods_with_rules`]).
fn holding(prefix: &str, uids: &[String], look: Look) -> usize {
    let held = pods_with_rules(prefix, look);
    uids.iter()
        .filter(|uid| held.contains(*uid) || held.iter().any(|h| h.ends_with(&uid[..8])))
        .count()
}

async fn scale(client: &Client, pods: usize) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE,
        "labels": {"faultline.dev/chaos": "enabled"}}});
    namespaces
        .patch(
            NAMESPACE,
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "target", "namespace": NAMESPACE},
        "spec": {"replicas": pods, "selector": {"matchLabels": {"app": "target"}},
            "template": {"metadata": {"labels": {"app": "target"}},
                "spec": {"containers": [{"name": "app", "image": "faultline:dev"}]}}},
    });
    deployments
        .patch(
            "target",
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&deployment),
        )
        .await
        .unwrap();
    // Ready as the controller selects them: each pod Running with its Ready condition, not
    // going away (the Deployment's readyReplicas can count one whose pod object lags).
    let pod_api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    loop {
        let d = deployments.get("target").await.unwrap();
        let replicas_ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0) as usize;
        let listed = pod_api
            .list(&ListParams::default().labels("app=target"))
            .await
            .unwrap()
            .items;
        let ready = listed
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.phase.as_deref() == Some("Running")
                        && s.conditions
                            .iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if replicas_ready >= pods && ready >= pods {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {ready} of {pods} pods became ready in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "  {pods} real pods ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// A watch of `K` in `namespace` into a store, and its events.
fn reflected<K>(
    client: &Client,
    namespace: &str,
    config: kube::runtime::watcher::Config,
) -> (reflector::Store<K>, futures::stream::BoxStream<'static, ()>)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let (store, writer) = reflector::store();
    let events = watcher(Api::<K>::namespaced(client.clone(), namespace), config)
        .default_backoff()
        .reflect(writer)
        .map(|_| ())
        .boxed();
    (store, events)
}

/// The experiment, its FaultInjections and the agents' receipts (beside the revert signal) as
/// the bench's own watches see them.
struct Watched {
    experiment: reflector::Store<ChaosExperiment>,
    injections: reflector::Store<FaultInjection>,
    signal: reflector::Store<ConfigMap>,
    events: futures::stream::BoxStream<'static, ()>,
}

impl Watched {
    /// Starts both watches and returns once both have listed.
    async fn start(client: &Client, name: &str) -> Watched {
        use futures::StreamExt;
        use kube::runtime::watcher::Config;
        let (experiment, experiments) = reflected::<ChaosExperiment>(
            client,
            NAMESPACE,
            Config::default().fields(&format!("metadata.name={name}")),
        );
        let (injections, faults) = reflected::<FaultInjection>(
            client,
            NAMESPACE,
            Config::default().labels(&format!("{EXPERIMENT_LABEL}={name}")),
        );
        let (signal, receipts) = reflected::<ConfigMap>(
            client,
            "faultline-system",
            Config::default().fields(&format!("metadata.name={REVERTING_CONFIGMAP}")),
        );
        let mut watched = Watched {
            experiment,
            injections,
            signal,
            events: futures::stream::select_all([experiments, faults, receipts]).boxed(),
        };
        let (a, b, c) = (
            watched.experiment.clone(),
            watched.injections.clone(),
            watched.signal.clone(),
        );
        let listed = async move {
            a.wait_until_ready().await.unwrap();
            b.wait_until_ready().await.unwrap();
            c.wait_until_ready().await.unwrap();
        };
        tokio::select! {
            _ = listed => {}
            _ = async { while watched.events.next().await.is_some() {} } => panic!("the watches ended"),
        }
        watched
    }

    fn phase(&self) -> Option<Phase> {
        self.experiment
            .state()
            .first()
            .and_then(|e| e.status.as_ref())
            .map(|s| s.phase)
    }

    /// FaultInjections whose fault the agent reported in the kernel: by its own status, or
    /// by its node's applied receipt (read as the controller reads it).
    fn applied(&self) -> usize {
        let uid = self
            .experiment
            .state()
            .first()
            .and_then(|e| e.metadata.uid.clone())
            .unwrap_or_default();
        let receipts = self
            .signal
            .state()
            .first()
            .and_then(|map| map.data.as_ref().map(|data| applied_of(data, &uid)))
            .unwrap_or_default();
        overlay(self.injections.state(), &receipts)
            .iter()
            .filter(|i| {
                i.status
                    .as_ref()
                    .is_some_and(|s| s.phase == InjectionPhase::Applied)
            })
            .count()
    }

    /// Takes in the events the watches have delivered so far, without waiting for more.
    fn catch_up(&mut self) {
        use futures::{FutureExt, StreamExt};
        while let Some(Some(())) = self.events.next().now_or_never() {}
    }

    /// Why the experiment is aborting or over, if it is: its phase says so, or the agents were
    /// told to revert (the revert signal, or the reverting label where the signal cannot be
    /// written, goes out before status says Aborting).
    async fn aborting_or_over(&self, client: &Client) -> Option<String> {
        let uid = self.experiment.state().first()?.metadata.uid.clone()?;
        let signal = Api::<ConfigMap>::namespaced(client.clone(), "faultline-system")
            .get_opt(REVERTING_CONFIGMAP)
            .await
            .ok()
            .flatten()
            .and_then(|map| map.data?.get(&uid).map(|v| Signal::parse(v)));
        if let Some(signal) = signal {
            return Some(
                signal
                    .abort
                    .map_or_else(|| "reverting".to_string(), |abort| abort.message),
            );
        }
        self.told_or_over().then(|| {
            self.experiment
                .state()
                .first()
                .and_then(|e| e.status.as_ref()?.message.clone())
                .unwrap_or_default()
        })
    }

    fn told_or_over(&self) -> bool {
        let reverting = self.experiment.state().first().is_some_and(|e| {
            e.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVERTING_LABEL))
                .is_some_and(|v| v == "true")
        });
        reverting
            || self
                .phase()
                .is_some_and(|p| p == Phase::Aborting || p.is_terminal())
    }

    /// Follows the watches until `done` holds; when the event that made it so arrived.
    async fn until(&mut self, what: &str, done: impl Fn(&Self) -> bool) -> Instant {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            if done(self) {
                return Instant::now();
            }
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Ok(Some(())) => {}
                Ok(None) => panic!("{what}: the watches ended"),
                Err(_) => panic!(
                    "{what}: not within 300 s; experiment {:?}: {}; {} FaultInjections, {} applied",
                    self.phase(),
                    self.experiment
                        .state()
                        .first()
                        .and_then(|e| e.status.as_ref()?.message.clone())
                        .unwrap_or_default(),
                    self.injections.state().len(),
                    self.applied()
                ),
            }
        }
    }
}

/// A client for the cluster a kubeconfig file names.
async fn client_for(kubeconfig: &Path) -> Client {
    let parsed = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Removes what an interrupted earlier bench left on the real control plane: its Deployment
/// and pods would all start at once with the next sandbox's kubelets and swamp it.
async fn forget_earlier_runs(kubeconfig: &Path) {
    let client = client_for(kubeconfig).await;
    // Its experiments go once the new sandbox's controller has reverted and released them.
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = experiments
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = deployments.delete("target", &DeleteParams::default()).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, NAMESPACE);
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default().labels("app=target"),
        )
        .await;
}

/// Says why a run measures nothing, deletes its experiment and waits for its faults to go.
async fn abandon(experiments: &Api<ChaosExperiment>, view: &mut Watched, name: &str, why: &str) {
    eprintln!("  note: {name} was aborting before the service broke ({why}); the run is repeated");
    experiments
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    view.until("every FaultInjection gone", |v| {
        v.injections.state().is_empty()
    })
    .await;
}

struct Run {
    injection: f64,
    break_to_aborted: f64,
    break_to_gone: f64,
    recorded: f64,
}

/// One measured run; `None` when the experiment was aborting or over before the bench broke
/// the service (its probe timed out while hundreds of pods were being injected on two cores:
/// the abort was real, the run measures nothing), after cleaning it up.
async fn one_run(
    client: &Client,
    service: &Service,
    pods: usize,
    name: &str,
    prefix: &str,
) -> Option<Run> {
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), NAMESPACE);
    let spec = json!({
        "duration": "10m",
        "target": {"labelSelector": {"matchLabels": {"app": "target"}}, "maxTargets": pods},
        "faults": [{"networkLatency": {"latency": "50ms", "to": {"cidrs": ["192.0.2.0/24"]}}}],
        "steadyState": {"probes": [{"name": "service", "http": {"url": service.url},
            "interval": "100ms", "timeout": "90ms", "failureThreshold": 1,
            "phases": ["before", "during"]}]},
    });
    let experiment: ChaosExperiment = serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}))
    .unwrap();
    // Watched, not polled: listing every injection every few milliseconds would load the
    // very API server whose speed is measured, and an event says when a change happened.
    let mut view = Watched::start(client, name).await;
    let created = Instant::now();
    experiments
        .create(&PostParams::default(), &experiment)
        .await
        .unwrap();
    // Where the injection's time goes: before the first FaultInjection (selection, the
    // hypothesis checked before injecting, the status writes between), the creates, the rest.
    let over = |v: &Watched| v.phase().is_some_and(|p| p.is_terminal());
    let first = view
        .until("a FaultInjection", |v| {
            !v.injections.state().is_empty() || over(v)
        })
        .await
        - created;
    let all_created = view
        .until("every FaultInjection", |v| {
            v.injections.state().len() >= pods || v.phase() == Some(Phase::Running) || over(v)
        })
        .await
        - created;
    let injection = (view
        .until("every fault applied", |v| {
            // Fewer targets than pods when a pod was not Running at selection time (said below).
            v.applied() >= pods
                || (v.phase() == Some(Phase::Running) && v.applied() == v.injections.state().len())
                || v.phase().is_some_and(|p| p.is_terminal())
        })
        .await
        - created)
        .as_secs_f64();
    eprintln!(
        "  {name}: first FaultInjection created at {:.0} ms, the last at {:.0} ms, every fault applied at {:.0} ms",
        first.as_secs_f64() * 1e3,
        all_created.as_secs_f64() * 1e3,
        injection * 1e3
    );
    // An abort that began before the break (the probe timed out under the injection's load)
    // would be measured from the wrong moment.
    if let Some(why) = view.aborting_or_over(client).await {
        abandon(&experiments, &mut view, name, &why).await;
        return None;
    }
    let targets: Vec<String> = view
        .injections
        .state()
        .iter()
        .map(|i| i.spec.target.uid.clone())
        .collect();
    if targets.len() < pods {
        eprintln!(
            "  note: {} of {pods} pods were targets (the others were not Running when selected)",
            targets.len()
        );
    }
    // The fallback's chains are looked for only when nftables does not account for every target.
    let in_kernel = match holding(prefix, &targets, Look::Nftables) {
        all if all >= targets.len() => all,
        _ => holding(prefix, &targets, Look::AlsoIptables),
    };
    if let Some(wait) = break_after() {
        tokio::time::sleep_until((created + Duration::from_secs_f64(injection) + wait).into())
            .await;
    }
    view.catch_up();
    if let Some(why) = view.aborting_or_over(client).await {
        abandon(&experiments, &mut view, name, &why).await;
        return None;
    }
    assert!(
        in_kernel >= targets.len(),
        "only {in_kernel} of {} targets hold the rule",
        targets.len()
    );

    service.status.store(500, Ordering::SeqCst);
    let broke = Instant::now();
    if std::env::var_os("FAULTLINE_BENCH_KEEP").is_some() {
        // To line the kept logs up with the break.
        eprintln!(
            "  {name}: service broken at {}",
            chrono::Utc::now().to_rfc3339()
        );
    }
    let break_to_aborted = (view
        .until("aborted", |v| v.phase() == Some(Phase::Aborted))
        .await
        - broke)
        .as_secs_f64();
    // Aborted says every fault is confirmed reverted: the kernel must agree at that moment.
    let left = holding(prefix, &targets, Look::Nftables);
    assert_eq!(
        left, 0,
        "{left} pods still hold a rule when the experiment says Aborted"
    );
    let break_to_gone = (view
        .until("every FaultInjection gone", |v| {
            v.injections.state().is_empty()
        })
        .await
        - broke)
        .as_secs_f64();
    // The fallback's chains too, once nothing is measured any more.
    let looked = Instant::now();
    let left = holding(prefix, &targets, Look::AlsoIptables);
    eprintln!(
        "  {name}: every pod's iptables looked at in {:.0} ms (outside the measured windows)",
        looked.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(
        left, 0,
        "{left} pods hold an iptables chain of faultline's after the experiment said Aborted"
    );
    let ended = experiments.get(name).await.unwrap();
    // With FAULTLINE_BENCH_KEEP the ended experiment is kept too, to see what each write of it costs.
    if std::env::var_os("FAULTLINE_BENCH_KEEP").is_some() {
        let path = std::env::temp_dir().join(format!("faultline-bench-{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&ended).unwrap()).unwrap();
        eprintln!("  ended experiment (kept): {}", path.display());
    }
    let recorded = ended
        .status
        .and_then(|s| s.abort_latency)
        .and_then(|d| d.parse().ok())
        .map_or(f64::NAN, |d| d.as_secs_f64());
    eprintln!(
        "  {name}: break → Aborted {:.0} ms, status.abortLatency {:.0} ms, break → objects gone {:.0} ms",
        break_to_aborted * 1e3,
        recorded * 1e3,
        break_to_gone * 1e3
    );
    service.status.store(200, Ordering::SeqCst);
    experiments
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    Some(Run {
        injection,
        break_to_aborted,
        break_to_gone,
        recorded,
    })
}

/// `FAULTLINE_BENCH_BREAK_AFTER` (milliseconds): how long after every fault is applied the
/// service breaks; at once by default.
fn break_after() -> Option<Duration> {
    std::env::var("FAULTLINE_BENCH_BREAK_AFTER")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
}

fn min_median_max(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let ms = |s: f64| format!("{:.0}", s * 1000.0);
    format!(
        "{} / {} / {}",
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1])
    )
}

/// RSS of the sandbox's demo-app processes, in MiB, per pod.
fn mib_per_pod(pods: usize) -> f64 {
    let mut kib = 0u64;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("demo-app") {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            kib += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    kib as f64 / 1024.0 / pods.max(1) as f64
}

#[tokio::main]
async fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("e2e_real_pods: SKIPPED (needs root: real pods, the real agent and real rules)");
        return;
    }
    faultline::cli::install_crypto_provider();
    let sizes: Vec<usize> = std::env::var("FAULTLINE_BENCH_PODS")
        .unwrap_or_else(|_| "10,100,500".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs: usize = std::env::var("FAULTLINE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Runs with and without the agents' applied receipts, alternating (see the module doc).
    let side_by_side = std::env::var_os("FAULTLINE_BENCH_SIDE_BY_SIDE").is_some();
    let real_kubeconfig = repo().join(".faultline/cluster/admin.kubeconfig");
    let control_plane_runs = real_kubeconfig.exists()
        && Command::new(repo().join("scripts/cluster.sh"))
            .arg("status")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("kube-apiserver: running"));
    let clusters: Vec<&str> = match std::env::var("FAULTLINE_BENCH_CLUSTER").as_deref() {
        Ok("sandbox") => vec!["sandbox"],
        Ok("real") => vec!["real"],
        _ if control_plane_runs => vec!["sandbox", "real"],
        _ => {
            println!("(no control plane runs: `scripts/cluster.sh up` to measure on one too)");
            vec!["sandbox"]
        }
    };
    let service = service().await;
    let mut rows = Vec::new();
    for cluster in clusters {
        // A node takes at most 110 pods (its allocatable `pods`, which kube-scheduler honours):
        // enough nodes for the largest size, and at least three.
        let nodes = sizes
            .iter()
            .max()
            .map_or(3, |most| most.div_ceil(100).max(3));
        if cluster == "real" {
            forget_earlier_runs(&real_kubeconfig).await;
        }
        let sandbox = Sandbox::up(
            (cluster == "real").then_some(real_kubeconfig.as_path()),
            nodes,
        );
        let client = sandbox.client().await;
        let prefix = sandbox.netns_prefix();
        let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), NAMESPACE);
        let started = Instant::now();
        while !experiments
            .list(&ListParams::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "an earlier run's experiments are still there after 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for &pods in &sizes {
            eprintln!("{cluster}: {pods} target pods");
            scale(&client, pods).await;
            let memory = mib_per_pod(pods);
            let mut results = Vec::new();
            let mut without = Vec::new();
            let mut attempt = 0;
            while results.len() < runs || (side_by_side && without.len() < runs) {
                assert!(
                    attempt < runs * if side_by_side { 6 } else { 3 },
                    "{attempt} runs at {pods} targets, {} measured: the probe keeps failing before the service breaks",
                    results.len()
                );
                let name = format!("bench-{pods}-{attempt}");
                attempt += 1;
                // Side by side: every other run without the applied receipts (the agents write
                // each injection's status at once while the signal's ConfigMap is missing; the
                // abort's signal makes it again).
                let plain = side_by_side && results.len() > without.len();
                if plain {
                    without_the_signal_configmap(&client).await;
                }
                let run = one_run(&client, &service, pods, &name, &prefix).await;
                if plain {
                    without.extend(run);
                } else {
                    results.extend(run);
                }
            }
            if side_by_side {
                for (what, figure) in [
                    (
                        "create → every fault applied",
                        (|r: &Run| r.injection) as fn(&Run) -> f64,
                    ),
                    ("break → Aborted", |r: &Run| r.break_to_aborted),
                    ("status.abortLatency", |r: &Run| r.recorded),
                ] {
                    let pick = |runs: &[Run]| runs.iter().map(figure).collect::<Vec<f64>>();
                    eprintln!(
                        "  side by side, {pods} targets, {what}: with applied receipts {} ms, each status at once {} ms",
                        min_median_max(&pick(&results)),
                        min_median_max(&pick(&without))
                    );
                }
            }
            let pick = |f: fn(&Run) -> f64| results.iter().map(f).collect::<Vec<f64>>();
            let row = vec![
                cluster.to_string(),
                pods.to_string(),
                min_median_max(&pick(|r| r.injection)),
                min_median_max(&pick(|r| r.break_to_aborted)),
                min_median_max(&pick(|r| r.recorded)),
                min_median_max(&pick(|r| r.break_to_gone)),
                format!("{memory:.1}"),
            ];
            // Each row as soon as it is measured: a later size that fails loses nothing.
            eprintln!("  | {} |", row.join(" | "));
            rows.push(row);
        }
        // The pods go with the sandbox's kubelets; a real control plane keeps the objects.
        remove_targets(&client).await;
        drop(sandbox);
    }
    println!(
        "\n## End to end with real pods, the real agent and real rules ({runs} runs each; {})\n",
        machine()
    );
    println!(
        "| cluster | target pods | injection: create → all applied, ms (min / median / max) | break → Aborted (every fault confirmed reverted), ms | status.abortLatency, ms | break → every FaultInjection object gone, ms | RSS per pod, MiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}

/// Deletes the revert signal's ConfigMap and waits until the agents can have seen it gone.
async fn without_the_signal_configmap(client: &Client) {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "faultline-system");
    let _ = maps
        .delete(REVERTING_CONFIGMAP, &DeleteParams::default())
        .await;
    while maps
        .get_opt(REVERTING_CONFIGMAP)
        .await
        .ok()
        .flatten()
        .is_some()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Deletes the target Deployment and its pods (at once: no kubelet is left to confirm a
/// graceful deletion once the sandbox is down).
async fn remove_targets(client: &Client) {
    // Its experiments go once the new sandbox's controller has reverted and released them.
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = experiments
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = deployments.delete("target", &DeleteParams::default()).await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let _ = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default().labels("app=target"),
        )
        .await;
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("nproc={cores}")
}
