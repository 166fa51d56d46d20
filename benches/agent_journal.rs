//! The agent's start with a journal of 100,000 stale entries (faults of pods that are gone,
//! half expired, half no longer backed by an injection, as after a long absence): how long
//! until a new injection is applied, and until the backlog is drained (the journal compacted).
//! The real runner against the embedded API server, with the in-memory kernel (no root
//! needed). `FAULTLINE_BENCH_STALE` changes the count.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use faultline::agent::journal::{JournalEntry, put_line};
use faultline::agent::kernel::RecordingKernel;
use faultline::agent::runner::{self, AgentConfig};
use faultline::agent::tag::InjectionTag;
use faultline::agent::telemetry::AgentMetrics;
use faultline::api::{
    Direction, FaultInjection, FaultInjectionSpec, InjectionPhase, LatencyFault, NODE_LABEL,
    NetworkFault, ObjectRef, PodRef, all_crds,
};
use faultline::sandbox::apiserver::ApiServer;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

const NODE: &str = "bench-node";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    faultline::cli::install_crypto_provider();
    let stale: usize = std::env::var("FAULTLINE_BENCH_STALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let server = ApiServer::start(0).await.unwrap();
    server.install_crds(&all_crds()).await.unwrap();
    let client = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    {
        let mut out =
            std::io::BufWriter::new(std::fs::File::create(journal.join("journal.log")).unwrap());
        let expired = Utc::now() - TimeDelta::minutes(1);
        for n in 0..stale {
            let uid = format!("{n:08x}-0000-4000-8000-000000000000");
            let entry = JournalEntry {
                tag: InjectionTag::from_uid(&uid).unwrap().to_string(),
                injection: format!("default/old-{n}"),
                injection_uid: uid,
                pod_uid: format!("gone-pod-{}", n % 1000),
                fault: NetworkFault::default(),
                expires_at: if n % 2 == 0 {
                    expired
                } else {
                    Utc::now() + TimeDelta::minutes(5)
                },
                generation: Some(1),
                mechanism: Some("nfqueue".into()),
                baseline: Some("pod: nft table inet filter".into()),
                applied_at: Some(expired),
            };
            out.write_all(put_line(&entry).unwrap().as_bytes()).unwrap();
        }
    }
    let size = std::fs::metadata(journal.join("journal.log"))
        .unwrap()
        .len();
    let kernel = RecordingKernel::full();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = pods
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "target"},
                "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "demo"}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    kernel.add_pod(&pod.uid().unwrap());
    let mut injection = FaultInjection::new(
        "new",
        FaultInjectionSpec {
            experiment: ObjectRef {
                name: "exp".into(),
                uid: None,
            },
            target: PodRef {
                namespace: "default".into(),
                name: "target".into(),
                uid: pod.uid().unwrap(),
            },
            node_name: NODE.into(),
            fault: NetworkFault {
                latency: Some(LatencyFault {
                    latency: "50ms".into(),
                    direction: Direction::To,
                    ..Default::default()
                }),
                ..Default::default()
            },
            expires_at: Utc::now() + TimeDelta::minutes(5),
        },
    );
    injection
        .labels_mut()
        .insert(NODE_LABEL.into(), NODE.into());
    faultline::sandbox::testkit::vouch_for(&client, &mut injection)
        .await
        .unwrap();
    let injections: Api<FaultInjection> = Api::namespaced(client.clone(), "default");
    injections
        .create(&PostParams::default(), &injection)
        .await
        .unwrap();

    let started = Instant::now();
    let config = AgentConfig {
        nodes: vec![NODE.into()],
        journal_dir: journal.clone(),
        resync: Duration::from_secs(1),
        policy: faultline::agent::admission::Policy::new("faultline-system"),
    };
    let agent = tokio::spawn(runner::run(
        client.clone(),
        Arc::new(kernel),
        config,
        AgentMetrics::new(),
        std::future::pending(),
    ));
    let applied = loop {
        let now = injections.get("new").await.unwrap();
        if now
            .status
            .is_some_and(|s| s.phase == InjectionPhase::Applied)
        {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let drained = loop {
        if std::fs::metadata(journal.join("journal.log"))
            .unwrap()
            .len()
            < 4096
        {
            break started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    agent.abort();
    println!("\n## Agent start with a backlog of stale journal entries\n");
    println!(
        "| stale entries | journal size | new injection Applied after start | backlog drained (journal compacted) after start |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {stale} | {:.1} MB | {applied:.2?} | {drained:.2?} |",
        size as f64 / 1e6
    );
}
