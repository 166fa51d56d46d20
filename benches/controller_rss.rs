//! The controller's peak memory with many experiments over 10,000 pods.
//!
//! The API server and the controller would share a process in-process, so the controller runs
//! as the real binary (`faultline controller`, built in this profile by `cargo bench`) against
//! an embedded API server that this process hosts, together with the stand-in node agent.
//! Its peak resident set is `VmHWM` in `/proc/PID/status`, read once every experiment is
//! terminal.
//!
//! Layout: 10 opted-in namespaces of 1,000 Running pods each; 100 experiments per namespace by
//! default (`FAULTLINE_BENCH_EXPERIMENTS`, `FAULTLINE_BENCH_PODS` change the totals),
//! each a one-second network latency fault on its own pod (so as many FaultInjections come and go).

mod common;

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    PodSpec, create_experiments, create_pods, machine, metric, namespace, pod_ip, print_table,
    start_server,
};
use faultline::{api::ChaosExperiment, sandbox::testkit::stand_in_agent};
use futures::StreamExt;
use kube::{
    Api, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::oneshot;

const NAMESPACES: usize = 10;

/// Pods per namespace: `FAULTLINE_BENCH_PODS` / 10, by default 1,000.
fn pods_per_namespace() -> usize {
    env_or("FAULTLINE_BENCH_PODS", 10_000) / NAMESPACES
}

/// Experiments per namespace: `FAULTLINE_BENCH_EXPERIMENTS` / 10, by default 100 (1,000 in all,
/// about a minute on 2 cores).
fn experiments_per_namespace() -> usize {
    env_or("FAULTLINE_BENCH_EXPERIMENTS", 1000) / NAMESPACES
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const CONTROLLER_NAMESPACE: &str = "faultline-system";

#[tokio::main]
async fn main() {
    faultline::cli::install_crypto_provider();
    if let Ok(mode) = std::env::var(CACHE_CHILD) {
        return pod_cache_child(&mode).await;
    }
    let binary = env!("CARGO_BIN_EXE_faultline");
    let server = start_server().await;
    let client = server.client().await;
    namespace(&client, CONTROLLER_NAMESPACE, false).await;

    let setup = Instant::now();
    for n in 0..NAMESPACES {
        let ns = format!("team-{n}");
        namespace(&client, &ns, true).await;
        let pods = (0..pods_per_namespace())
            .map(|i| PodSpec {
                namespace: ns.clone(),
                name: format!("pod-{i}"),
                app: format!("app-{i}"),
                ip: pod_ip(n * pods_per_namespace() + i),
            })
            .collect();
        create_pods(&client, pods).await;
    }
    let setup = setup.elapsed();
    let (stop_agent, agent_stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(stand_in_agent(client.clone(), agent_stopped));

    let kubeconfig = tempfile::NamedTempFile::new().expect("a temporary kubeconfig");
    kubeconfig
        .as_file()
        .write_all(server.kubeconfig_yaml().as_bytes())
        .expect("write the kubeconfig");
    let (mut controller, admin) = spawn_controller(binary, kubeconfig.path());
    let pid = controller.id();
    let metrics_url = format!("http://{admin}/metrics");
    let http = reqwest::Client::new();
    // Ready: it holds the lease and its watch caches have listed (10,000 pods are not among
    // them: the controller lists pods per experiment, filtered by the API server).
    let spawned = Instant::now();
    wait_ready(&http, &format!("http://{admin}/readyz")).await;
    let to_ready = spawned.elapsed();
    let idle = read_status(pid);

    let experiments_api: Api<ChaosExperiment> = Api::all(client.clone());
    let mut events = watcher(experiments_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let experiments = (0..NAMESPACES)
        .flat_map(|n| {
            (0..experiments_per_namespace()).map(move |i| {
                let app = format!("app-{i}");
                (
                    format!("team-{n}"),
                    format!("exp-{i}"),
                    common::latency_spec(&app, "1s"),
                )
            })
        })
        .collect::<Vec<_>>();
    let total = experiments.len();
    let started = Instant::now();
    let creating = tokio::spawn(create_experiments(client.clone(), experiments));
    let mut terminal = HashSet::new();
    let deadline = tokio::time::sleep(Duration::from_secs(600));
    let mut progress = tokio::time::interval(Duration::from_secs(15));
    tokio::pin!(deadline);
    while terminal.len() < total {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { panic!("the experiment watch ended") };
                let Ok(e) = event else { continue };
                if e.status.as_ref().is_some_and(|s| s.phase.is_terminal()) {
                    terminal.insert(format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any()));
                }
            }
            _ = progress.tick() => eprintln!("controller_rss: {} of {total} terminal after {:.0?}", terminal.len(), started.elapsed()),
            _ = &mut deadline => panic!("only {} of {total} experiments finished in 10 minutes", terminal.len()),
        }
    }
    let run = started.elapsed();
    creating.await.expect("creating experiments");
    let after = read_status(pid);
    let metrics = http
        .get(&metrics_url)
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let metrics = match metrics {
        Ok(r) => Ok(r.text().await.unwrap_or_default()),
        Err(error) => Err(error.to_string()),
    };
    let reconciles = match &metrics {
        Ok(text) => metric(text, "faultline_reconciliations_total").to_string(),
        Err(error) => format!("? ({error})"),
    };
    let requests = api_requests(metrics.as_deref().unwrap_or_default());
    let own = read_status(std::process::id());
    // The alternative to listing per experiment: a pod cache in the controller. Each variant
    // runs in a process of its own against the same 10,000 pods.
    let caches: Vec<(&str, Memory)> = ["none", "metadata", "full"]
        .into_iter()
        .map(|mode| (mode, pod_cache_process(mode, kubeconfig.path())))
        .collect();

    let _ = controller.kill();
    let _ = controller.wait();
    let _ = stop_agent.send(());
    let _ = agent.await;
    server.shutdown().await;

    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    print_table(
        &format!(
            "controller_rss: {total} experiments over {} pods in {NAMESPACES} namespaces ({})",
            NAMESPACES * pods_per_namespace(),
            machine()
        ),
        &["measured", "value"],
        &[
            vec![
                "controller VmRSS, idle once ready (MiB)".into(),
                mib(idle.rss),
            ],
            vec![
                "controller VmHWM (peak RSS) once all are terminal (MiB)".into(),
                mib(after.hwm),
            ],
            vec![
                "controller VmRSS once all are terminal (MiB)".into(),
                mib(after.rss),
            ],
            vec![
                "API server process VmHWM, for reference: server + stand-in agent + bench (MiB)"
                    .into(),
                mib(own.hwm),
            ],
            vec![
                "API server process VmRSS at the end (MiB)".into(),
                mib(own.rss),
            ],
            vec![
                "create -> all terminal (s)".into(),
                format!("{:.1}", run.as_secs_f64()),
            ],
            vec!["controller reconciles".into(), reconciles],
            vec![
                "controller start -> /readyz 200 (s)".into(),
                format!("{:.1}", to_ready.as_secs_f64()),
            ],
            vec![
                "setup: creating the pods (s)".into(),
                format!("{:.1}", setup.as_secs_f64()),
            ],
            vec![
                "alternative, a client process that caches no pods: VmHWM (MiB)".into(),
                mib(caches[0].1.hwm),
            ],
            vec![
                "alternative, + a metadata-only pod reflector (all pods): VmHWM (MiB)".into(),
                mib(caches[1].1.hwm),
            ],
            vec![
                "alternative, + a full pod reflector (all pods): VmHWM (MiB)".into(),
                mib(caches[2].1.hwm),
            ],
        ],
    );
    print_requests(&requests, total, &caches);
}

/// Requests by (verb, resource): how many, and how many were not answered 2xx.
type RequestTable = std::collections::BTreeMap<(String, String), (u64, u64)>;

/// `faultline_api_requests_total` of the controller's `/metrics`, summed over status codes.
fn api_requests(metrics: &str) -> RequestTable {
    let mut table = RequestTable::new();
    for line in metrics.lines() {
        let Some((labels, value)) = line
            .strip_prefix("faultline_api_requests_total{")
            .and_then(|rest| rest.split_once("} "))
        else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let count = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        let entry = table.entry((label("verb"), label("resource"))).or_default();
        entry.0 += count;
        if !label("code").starts_with('2') {
            entry.1 += count;
        }
    }
    table
}

/// The controller's API requests per experiment, and what the pod caches cost to fill.
fn print_requests(requests: &RequestTable, experiments: usize, caches: &[(&str, Memory)]) {
    let per = |n: u64| format!("{:.2}", n as f64 / experiments.max(1) as f64);
    let mut rows: Vec<Vec<String>> = requests
        .iter()
        .map(|((verb, resource), (count, failed))| {
            vec![
                verb.clone(),
                resource.clone(),
                count.to_string(),
                per(*count),
                failed.to_string(),
            ]
        })
        .collect();
    let (all, failed) = requests
        .values()
        .fold((0, 0), |(a, f), (count, bad)| (a + count, f + bad));
    rows.push(vec![
        "all".into(),
        "all".into(),
        all.to_string(),
        per(all),
        failed.to_string(),
    ]);
    print_table(
        &format!(
            "controller_rss: the controller's Kubernetes API requests, {experiments} experiments (faultline_api_requests_total; the stand-in agent's are not counted)"
        ),
        &["verb", "resource", "requests", "per experiment", "not 2xx"],
        &rows,
    );
    let pods: u64 = requests
        .iter()
        .filter(|((_, resource), _)| resource == "pods")
        .map(|(_, (count, _))| count)
        .sum();
    print_table(
        "controller_rss: reading pods, listing per experiment (chosen) against a pod cache",
        &["way", "requests to fill it", "then"],
        &caches
            .iter()
            .map(|(mode, memory)| match *mode {
                "none" => vec![
                    "list per experiment (the controller, measured above)".into(),
                    format!("{pods} pod requests ({} per experiment)", per(pods)),
                    "each filtered by the experiment's selector".into(),
                ],
                mode => vec![
                    format!("{mode} pod reflector (a process of its own)"),
                    format!("{} (list pages and the watch)", memory.requests),
                    "a watch event for every change of every pod in the cluster".into(),
                ],
            })
            .collect::<Vec<_>>(),
    );
}

/// Starts `faultline controller` against the kubeconfig and returns it with the address its
/// admin port bound (read from its log).
fn spawn_controller(binary: &str, kubeconfig: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(binary)
        .args([
            "controller",
            "--admin-addr",
            "127.0.0.1:0",
            "--namespace",
            CONTROLLER_NAMESPACE,
            "--injection-timeout",
            "5m",
        ])
        .env("KUBECONFIG", kubeconfig)
        .env(
            "FAULTLINE_LOG",
            std::env::var("FAULTLINE_BENCH_LOG").unwrap_or_else(|_| "faultline=info,warn".into()),
        )
        .env_remove("POD_NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {binary}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining its log so that a full pipe never blocks it. `FAULTLINE_BENCH_VERBOSE` echoes
    // every line; `FAULTLINE_BENCH_LOG` sets the controller's log filter.
    let verbose = std::env::var_os("FAULTLINE_BENCH_VERBOSE").is_some();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line
                .contains("admin endpoints")
                .then(|| line.split("bound=").nth(1))
                .flatten()
                .and_then(|rest| rest.split_whitespace().next())
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(addr.to_string());
            }
            if verbose || line.contains("WARN") || line.contains("ERROR") {
                eprintln!("controller: {line}");
            }
        }
    });
    let admin = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the controller logs its admin address within 30s");
    (child, admin)
}

/// Waits until `/readyz` answers 200 ("leader": the lease is held and the caches have listed).
async fn wait_ready(http: &reqwest::Client, readyz_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        if let Ok(r) = http.get(readyz_url).send().await {
            let ok = r.status().is_success();
            last = r.text().await.unwrap_or_default();
            if ok {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the controller was not ready within 60s (last /readyz: {last:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Memory {
    /// VmRSS, KiB.
    rss: u64,
    /// VmHWM (peak RSS), KiB.
    hwm: u64,
    /// API requests sent by then (pod cache children only).
    requests: u64,
}

fn read_status(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("VmRSS:"),
        hwm: field("VmHWM:"),
        requests: 0,
    }
}

/// Set in a child of this bench to measure one way of caching pods (`none`, `metadata`,
/// `full`) in a process of its own.
const CACHE_CHILD: &str = "FAULTLINE_BENCH_POD_CACHE";

/// Runs this bench's binary as a child that caches pods the way `mode` says, and returns its
/// memory once the cache holds every pod.
fn pod_cache_process(mode: &str, kubeconfig: &std::path::Path) -> Memory {
    let output = Command::new(std::env::current_exe().expect("the bench's own path"))
        .env(CACHE_CHILD, mode)
        .env("KUBECONFIG", kubeconfig)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the pod cache child");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
    let (rss, hwm, pods, requests) = (
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0),
        numbers.next().unwrap_or(0u64),
        numbers.next().unwrap_or(0u64),
    );
    eprintln!(
        "controller_rss: pod cache {mode}: {pods} pods cached, VmHWM {hwm} KiB, {requests} API requests"
    );
    Memory { rss, hwm, requests }
}

/// The child: a kube client, and a reflector over every pod (`metadata`: object metadata only,
/// through `PartialObjectMeta`; `full`: whole Pods, as `watcher` gets them), or none. Prints
/// "VmRSS VmHWM pods requests" (KiB) once the cache has listed.
async fn pod_cache_child(mode: &str) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::core::PartialObjectMeta;
    use kube::runtime::reflector;
    let counts = faultline::api_requests::RequestCounts::default();
    let config = kube::Config::infer().await.expect("a kubeconfig");
    let client = faultline::api_requests::counted_client(config, counts.clone()).expect("a client");
    let pods: Api<Pod> = Api::all(client.clone());
    let cached = match mode {
        "metadata" => {
            let (store, writer) = reflector::store();
            let metadata: Api<PartialObjectMeta<Pod>> = Api::all(client);
            let stream = reflector(writer, watcher(metadata, watcher::Config::default()));
            tokio::spawn(stream.for_each(|_| async {}));
            store.wait_until_ready().await.expect("the reflector lists");
            store.len()
        }
        "full" => {
            let (store, writer) = reflector::store();
            let stream = reflector(writer, watcher(pods, watcher::Config::default()));
            tokio::spawn(stream.for_each(|_| async {}));
            store.wait_until_ready().await.expect("the reflector lists");
            store.len()
        }
        _ => 0,
    };
    let memory = read_status(std::process::id());
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("requests", "", counts);
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    let requests: f64 = text
        .lines()
        .filter(|l| l.starts_with("requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    println!("{} {} {cached} {}", memory.rss, memory.hwm, requests as u64);
}
