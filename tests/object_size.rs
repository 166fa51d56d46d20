//! etcd's limit on one object, as the API server meets it on a status write: the sandbox
//! refuses what the real server refuses (with `FAULTLINE_TEST_CLUSTER=real`, side by side
//! with a real kube-apiserver and etcd at their default limits), and an experiment's status
//! with its target records filling faultline's whole budget
//! (`lifecycle::status_size::TARGET_RECORDS_BUDGET`), at their largest, beside a full
//! timeline and probe history, is stored by both, as a plain list and packed
//! (`api::packed_records`). Both servers store the packed form, read it back as the same
//! records, and clear it when the records go back to a plain list.

mod common;

use chrono::Utc;
use common::cluster::{TestCluster, real_cluster_requested};
use faultline::{
    api::{
        ChaosExperiment, ChaosExperimentStatus, FIELD_MANAGER, GROUP_VERSION, Phase, ProbeSample,
        ProbeStatus, TargetRecord, TargetState, TimelineEntry, all_crds,
        packed_records::PLAIN_RECORDS_LIMIT,
    },
    lifecycle::{
        record::TIMELINE_LIMIT,
        status_size::{TARGET_RECORDS_BUDGET, largest_form, largest_size},
    },
    probes::hypothesis::SAMPLE_BUDGET,
};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// A target record with names as long as Kubernetes allows them (a 63-character namespace,
/// 253-character pod, node and FaultInjection names), at its largest.
fn longest_record(i: usize) -> TargetRecord {
    let long = |prefix: &str, len: usize| {
        let head = format!("{prefix}-{i:06}-");
        format!("{head}{}", "x".repeat(len - head.len()))
    };
    largest_form(&TargetRecord {
        namespace: long("ns", 63),
        name: long("pod", 253),
        uid: format!("0c1f6e1a-4f7b-4b39-9a55-{i:012}"),
        node_name: Some(long("node", 253)),
        pod_ip: Some("fd00:1234:5678:9abc:def0:1234:5678:9abc".into()),
        fault_index: 0,
        fault: "networkBandwidth".into(),
        injection: Some(long("injection", 253)),
        ..Default::default()
    })
}

/// As many records as fit the budget, and not one more.
fn records_filling_the_budget() -> Vec<TargetRecord> {
    let mut records = Vec::new();
    let mut used = 0;
    loop {
        let record = longest_record(records.len());
        used += largest_size(&record);
        if used > TARGET_RECORDS_BUDGET {
            return records;
        }
        records.push(record);
    }
}

/// A status as large as faultline lets one grow: the target budget full, the timeline at its
/// limit with long entries, every probe sample kept.
fn largest_status() -> ChaosExperimentStatus {
    let now = Utc::now();
    let records = records_filling_the_budget();
    ChaosExperimentStatus {
        phase: Phase::Running,
        target_count: records.len() as i32,
        targets: records,
        timeline: (0..TIMELINE_LIMIT)
            .map(|i| TimelineEntry {
                time: now,
                reason: "PodKillRound".into(),
                message: format!("{i}: {}", "a long entry ".repeat(78)),
            })
            .collect(),
        probes: vec![ProbeStatus {
            name: "checkout-healthy".into(),
            samples: (0..SAMPLE_BUDGET)
                .map(|_| ProbeSample {
                    time: now,
                    ok: true,
                    value: Some("200 in 12.345ms".into()),
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn experiment(client: &Client) -> Api<ChaosExperiment> {
    let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), "default");
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/pod-kill-http.yaml"),
    )
    .unwrap();
    let mut experiment: ChaosExperiment = serde_yaml::from_str(&manifest).unwrap();
    experiment.metadata.name = Some("size".into());
    let _ = api.delete("size", &Default::default()).await;
    common::wait_for(
        "the previous experiment to be gone",
        std::time::Duration::from_secs(10),
        || async { api.get_opt("size").await.ok()?.is_none().then_some(()) },
    )
    .await;
    api.create(&PostParams::default(), &experiment)
        .await
        .expect("create the experiment");
    api
}

/// Writes `status` as sent: `to_plain_json` to keep its records a plain list, `to_value` to
/// send them as faultline does.
async fn write_status(
    api: &Api<ChaosExperiment>,
    status: serde_json::Value,
) -> Result<usize, kube::Error> {
    let patch = json!({ "status": status });
    let sent = patch.to_string().len();
    api.patch_status("size", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|_| sent)
}

// Multi-threaded: the embedded API server answers on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_at_the_target_budget_is_stored_and_one_past_etcds_limit_is_refused_alike() {
    let mut clusters = vec![("sandbox", TestCluster::Sandbox(common::server().await))];
    if real_cluster_requested() {
        clusters.push(("real", TestCluster::start().await));
    }
    let largest = largest_status();
    eprintln!(
        "largest status: {} target records of {} bytes at most each, {} timeline entries, {} samples",
        largest.targets.len(),
        largest_size(&largest.targets[0]),
        largest.timeline.len(),
        largest.probes[0].samples.len()
    );
    let mut past_the_limit = largest.clone();
    let more = largest.targets.len() / 2;
    past_the_limit.targets.extend((0..more).map(longest_record));

    for (name, cluster) in clusters {
        cluster.install_crds(&all_crds()).await;
        let client = cluster.client().await;
        let api = experiment(&client).await;

        // Plain: what it would take were packing no smaller.
        let sent = write_status(&api, largest.to_plain_json().unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}: the largest status faultline writes: {e}"));
        let stored = api.get("size").await.unwrap();
        assert_eq!(stored.status.unwrap().targets, largest.targets, "{name}");
        eprintln!("{name}: stored the largest status as a plain list: {sent} bytes sent");
        let packed = write_status(&api, serde_json::to_value(&largest).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}: the largest status, packed: {e}"));
        let stored = api.get("size").await.unwrap();
        assert_eq!(stored.status.unwrap().targets, largest.targets, "{name}");
        eprintln!("{name}: stored the largest status packed: {packed} bytes sent");
        assert!(packed < sent / 4, "{name}: {packed} of {sent}");

        let refused = write_status(&api, past_the_limit.to_plain_json().unwrap()).await;
        let Err(kube::Error::Api(status)) = refused else {
            panic!("{name}: a status of 1.5x the budget: {refused:?}");
        };
        assert_eq!(
            (status.code, status.message.as_str()),
            (500, "etcdserver: request is too large"),
            "{name}: {status:?}"
        );
        // Nothing of the refused write was kept.
        let kept = api.get("size").await.unwrap().status.unwrap();
        assert_eq!(kept.targets.len(), largest.targets.len(), "{name}");
        cluster.shutdown().await;
    }
}

/// `count` records as an experiment on everyday pods has them.
fn everyday_records(count: usize, state: TargetState) -> Vec<TargetRecord> {
    (0..count)
        .map(|i| TargetRecord {
            namespace: "shop".into(),
            name: format!("api-7d9f8c6b5-{i:05}"),
            uid: uuid::Uuid::new_v4().to_string(),
            node_name: Some(format!("node-{}", i % 5)),
            pod_ip: Some(format!("10.244.{}.{}", i / 250, i % 250)),
            fault: "networkLatency".into(),
            state,
            injection: Some(format!("size-0-{i:08}")),
            injected_at: Some(Utc::now()),
            message: Some("nfqueue".into()),
            ..Default::default()
        })
        .collect()
}

/// What the server stores under `status`, as it stores it.
async fn stored_status(client: &Client) -> serde_json::Value {
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::erase::<ChaosExperiment>(&()),
    );
    raw.get("size").await.unwrap().data["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_target_records_are_stored_packed_read_back_alike_and_cleared_when_few_again() {
    let mut clusters = vec![("sandbox", TestCluster::Sandbox(common::server().await))];
    if real_cluster_requested() {
        clusters.push(("real", TestCluster::start().await));
    }
    for (name, cluster) in clusters {
        cluster.install_crds(&all_crds()).await;
        let client = cluster.client().await;
        let api = experiment(&client).await;
        // As the controller writes it: a server-side apply of the whole status.
        let apply = |status: ChaosExperimentStatus| {
            let api = api.clone();
            async move {
                let patch = json!({
                    "apiVersion": GROUP_VERSION,
                    "kind": "ChaosExperiment",
                    "status": status,
                });
                api.patch_status(
                    "size",
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(patch),
                )
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"))
            }
        };
        let status = |records: Vec<TargetRecord>| ChaosExperimentStatus {
            phase: Phase::Running,
            target_count: records.len() as i32,
            targets: records,
            ..Default::default()
        };

        let many = everyday_records(500, TargetState::Injected);
        let answered = apply(status(many.clone())).await;
        assert_eq!(answered.status.unwrap().targets, many, "{name}: the answer");
        assert_eq!(api.get("size").await.unwrap().status.unwrap().targets, many);
        let stored = stored_status(&client).await;
        assert_eq!(stored["targets"], json!([]), "{name}");
        let packed = stored["targetRecords"].as_str().expect("packed records");
        let plain = serde_json::to_vec(&many).unwrap().len();
        eprintln!(
            "{name}: 500 records: {plain} bytes as a list, {} packed",
            packed.len()
        );
        assert!(
            packed.len() * 3 < plain,
            "{name}: {} of {plain}",
            packed.len()
        );

        // Every record changes (an abort's verdict): still packed, read back alike.
        let reverted = everyday_records(500, TargetState::Reverted);
        apply(status(reverted.clone())).await;
        assert_eq!(
            api.get("size").await.unwrap().status.unwrap().targets,
            reverted
        );

        // Few again (a hold clears them): a plain list, the packed one gone.
        let few = everyday_records(PLAIN_RECORDS_LIMIT, TargetState::Selected);
        apply(status(few.clone())).await;
        let stored = stored_status(&client).await;
        assert!(
            stored["targetRecords"].is_null(),
            "{name}: {}",
            stored["targetRecords"]
        );
        assert_eq!(
            stored["targets"].as_array().unwrap().len(),
            PLAIN_RECORDS_LIMIT
        );
        assert_eq!(api.get("size").await.unwrap().status.unwrap().targets, few);

        // The same status again, either form: nothing changes, so no watcher hears of it.
        for records in [few, many] {
            let first = apply(status(records.clone()))
                .await
                .metadata
                .resource_version;
            let again = apply(status(records)).await.metadata.resource_version;
            assert_eq!(first, again, "{name}: an identical status moved the object");
        }
        cluster.shutdown().await;
    }
}
