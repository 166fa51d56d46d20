//! One object cannot wedge the controller: a poison duration is refused by the API server, and
//! when it bypassed the schema the experiment fails naming the field; a panic in one object's
//! reconcile quarantines that object (status says what and where, faults reverted, finalizer
//! released) while every other experiment, GameDay and schedule goes on, and so does an
//! experiment whose packed target records cannot be read; a GameDay or schedule that cannot be
//! read says why and starts nothing. On a real control plane the GameDay and schedule
//! controllers run as the chart's controller ServiceAccount, so their reports need the chart's
//! RBAC to allow them. Against the embedded API server, with
//! the controllers as they run in production.

mod common;
mod k8s_objects;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{
    api_err,
    harness::{Harness, latency_spec, shop_with_web_pods},
    wait_for,
};
use faultline::api::{
    ChaosExperiment, ChaosSchedule, GameDay, Phase, TargetState, Verdict, all_crds,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const POISON: &str = "999999999999999999999h";

fn poisoned(spec: Value) -> Value {
    let mut spec = spec;
    spec["duration"] = POISON.into();
    spec
}

async fn abort(h: &Harness, name: &str) {
    let patch = json!({"metadata": {"annotations": {"faultline.dev/abort": "enough"}}});
    h.experiments("shop")
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Deletes the experiment and waits until it is gone (its finalizer released).
async fn delete_and_wait_gone(h: &Harness, name: &str) {
    let api = h.experiments("shop");
    api.delete(name, &DeleteParams::default()).await.unwrap();
    wait_for(
        &format!("{name} to be deleted"),
        Duration::from_secs(10),
        || async { api.get_opt(name).await.unwrap().is_none().then_some(()) },
    )
    .await;
}

/// Whether any FaultInjection of `experiment` is left in `shop`.
async fn has_injections(h: &Harness, experiment: &str) -> bool {
    let mine = ListParams::default().labels(&format!("faultline.dev/experiment={experiment}"));
    !h.injections("shop")
        .list(&mine)
        .await
        .unwrap()
        .items
        .is_empty()
}

#[tokio::test]
async fn the_api_server_refuses_the_poison_duration_naming_the_field() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 1).await;
    let experiment: ChaosExperiment = serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
        "metadata": {"name": "poison", "namespace": "shop"},
        "spec": poisoned(latency_spec("1m")),
    }))
    .unwrap();
    let status = api_err(
        h.experiments("shop")
            .create(&PostParams::default(), &experiment)
            .await,
    );
    assert_eq!(status.code, 422, "{status:?}");
    println!("API server: {}", status.message);
    // As the real server words it: the field, the value, the rule's message.
    assert!(
        status.message.contains(&format!(
            "spec.duration: Invalid value: \"{POISON}\": must be a duration such as 60s, at least 1s, at most 24h"
        )),
        "{}",
        status.message
    );
    assert!(h.controller_alive());
    h.stop().await;
}

/// The CRD of `kind` with a schemaless spec, as an old or hand-edited CRD would be: the
/// controller is the last line.
fn schemaless_spec_crd(kind: &str) -> CustomResourceDefinition {
    let mut crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap();
    let schema = crd.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    // Rules on the whole object read the spec; an old CRD has none.
    schema.x_kubernetes_validations = None;
    schema.properties.as_mut().unwrap().insert(
        "spec".into(),
        serde_json::from_value(
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        )
        .unwrap(),
    );
    crd
}

async fn install_schemaless_experiment_crd(h: &Harness) {
    h.cluster
        .install_crds(&[schemaless_spec_crd("ChaosExperiment")])
        .await;
}

#[tokio::test]
async fn a_poison_duration_past_the_schema_fails_by_field_injects_nothing_and_the_others_abort() {
    let h = Harness::start().await;
    install_schemaless_experiment_crd(&h).await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "steady", latency_spec("10m")).await;
    h.wait_phase("shop", "steady", Phase::Running).await;

    h.create("shop", "poison", poisoned(latency_spec("1m")))
        .await;
    let failed = h.wait_phase("shop", "poison", Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.verdict, Some(Verdict::Error));
    assert_eq!(status.reason.as_deref(), Some("InvalidSpec"));
    let message = status.message.unwrap();
    println!("poison: {message}");
    assert!(
        message.contains(&format!(
            "spec.duration: \"{POISON}\" is longer than the maximum of 24h"
        )),
        "{message}"
    );
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert!(complete.message.contains("spec.duration"), "{complete:?}");
    assert!(
        status.targets.is_empty(),
        "nothing selected, nothing injected"
    );
    assert!(!has_injections(&h, "poison").await);

    // A name too long for the label its FaultInjections carry: stopped before targets are
    // chosen, not at the first FaultInjection's create.
    let long = "l".repeat(70);
    h.create("shop", &long, latency_spec("1m")).await;
    let failed = h.wait_phase("shop", &long, Phase::Failed).await;
    let status = failed.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("InvalidSpec"));
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("metadata.name: 70 characters, over the 63 a label value holds"),
        "{message}"
    );
    assert!(status.targets.is_empty(), "nothing selected");
    let all = h.injections("shop").list(&ListParams::default()).await;
    assert!(
        all.unwrap()
            .items
            .iter()
            .all(|i| i.spec.experiment.name != long)
    );

    // The other experiment is still in the controller's hands.
    abort(&h, "steady").await;
    h.wait_phase("shop", "steady", Phase::Aborted).await;
    assert_eq!(h.injection_count("shop").await, 0);
    delete_and_wait_gone(&h, "poison").await;
    delete_and_wait_gone(&h, &long).await;
    assert!(h.controller_alive());
    h.stop().await;
}

#[tokio::test]
async fn a_panic_quarantines_its_experiment_reverts_it_and_the_others_still_abort() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    // A bug in the probe code, once the faults are in.
    h.probes.panic_while("doomed", Phase::Running);
    h.create("shop", "steady", latency_spec("10m")).await;
    h.create("shop", "doomed", latency_spec("10m")).await;

    let doomed = wait_for(
        "the panicking experiment to be quarantined",
        Duration::from_secs(20),
        || async {
            let e = h.experiments("shop").get("doomed").await.ok()?;
            let quarantined = e.status.as_ref()?.reason.as_deref() == Some("ReconcilePanicked");
            let released = e.finalizers().is_empty();
            (quarantined && released).then_some(e)
        },
    )
    .await;
    let status = doomed.status.unwrap();
    assert_eq!(status.phase, Phase::Failed);
    assert_eq!(status.verdict, Some(Verdict::Error));
    let message = status.message.unwrap();
    assert!(
        message.contains("(panicked at src/sandbox/testkit.rs:")
            && message.contains("scripted panic while watching the probes of doomed")
            && message.contains("faultline bug"),
        "{message}"
    );
    println!("quarantined: {message}");
    let complete = status.conditions.iter().find(|c| c.type_ == "Complete");
    assert_eq!(
        complete.map(|c| c.reason.as_str()),
        Some("ReconcilePanicked")
    );
    // Its fault was in; quarantine reverted it from the labels alone.
    assert!(
        status
            .targets
            .iter()
            .any(|t| t.state == TargetState::Injected),
        "{:?}",
        status.targets
    );
    wait_for(
        "its faults to be reverted",
        Duration::from_secs(10),
        || async { (!has_injections(&h, "doomed").await).then_some(()) },
    )
    .await;

    // Every other experiment goes on: a new one runs, the first one still aborts.
    h.create("shop", "later", latency_spec("10m")).await;
    h.wait_phase("shop", "later", Phase::Running).await;
    h.wait_phase("shop", "steady", Phase::Running).await;
    abort(&h, "steady").await;
    abort(&h, "later").await;
    h.wait_phase("shop", "steady", Phase::Aborted).await;
    h.wait_phase("shop", "later", Phase::Aborted).await;
    delete_and_wait_gone(&h, "doomed").await;
    assert!(h.controller_alive());
    h.stop().await;
}

/// A `status.targetRecords` that cannot be unpacked (written by hand or by a broken tool: faultline
/// writes it only for more than 100 records) makes the experiment unreadable: it is quarantined
/// like any other, its faults are reverted from the labels, and the others go on.
#[tokio::test]
async fn garbled_packed_target_records_quarantine_their_experiment_and_revert_its_faults() {
    let h = Harness::start().await;
    shop_with_web_pods(&h, 2).await;
    h.create("shop", "steady", latency_spec("10m")).await;
    h.create("shop", "garbled", latency_spec("10m")).await;
    h.wait_phase("shop", "steady", Phase::Running).await;
    h.wait_phase("shop", "garbled", Phase::Running).await;

    let raw: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        "shop",
        &ApiResource::erase::<ChaosExperiment>(&()),
    );
    raw.patch_status(
        "garbled",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"targetRecords": "not base64!"}})),
    )
    .await
    .unwrap();

    let status = wait_for(
        "the garbled experiment to be quarantined and released",
        Duration::from_secs(20),
        || async {
            let object = raw.get("garbled").await.ok()?;
            let released = object.finalizers().is_empty();
            let status = object.data.get("status")?.clone();
            (status["reason"] == "InvalidSpec" && released).then_some(status)
        },
    )
    .await;
    assert_eq!(status["verdict"], "Error");
    let message = status["message"].as_str().unwrap();
    println!("quarantined: {message}");
    assert!(
        message.contains("status.targetRecords cannot be read (not base64:")
            && message.contains("\"targetRecords\":null")
            && !message.contains("Fix the manifest"),
        "{message}"
    );
    assert!(
        !has_injections(&h, "garbled").await,
        "its finalizer went before its faults"
    );

    abort(&h, "steady").await;
    h.wait_phase("shop", "steady", Phase::Aborted).await;
    raw.delete("garbled", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("garbled to be deleted", Duration::from_secs(10), || async {
        raw.get_opt("garbled")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(h.controller_alive());
    h.stop().await;
}

/// A pause switch that panics the first time it is asked: the first reconcile of whichever
/// owner comes first panics, every later one works.
fn panics_once() -> faultline::owned_experiments::PausedSwitch {
    let armed = AtomicBool::new(true);
    Arc::new(move || {
        if armed.swap(false, Ordering::SeqCst) {
            panic!("scripted panic in the pause switch");
        }
        false
    })
}

async fn owner_condition(client: &Client, resource: &ApiResource, name: &str) -> Option<Value> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", resource);
    let object = api.get(name).await.ok()?;
    let conditions = object.data["status"]["conditions"].as_array()?.clone();
    conditions
        .into_iter()
        .find(|c| c["reason"] == "ReconcilePanicked")
}

async fn status_of(client: &Client, resource: &ApiResource, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", resource);
    api.get(name).await.unwrap().data["status"].clone()
}

async fn owned_experiments(client: &Client, label: &str) -> usize {
    let api: Api<ChaosExperiment> = Api::namespaced(client.clone(), "shop");
    let list = api
        .list(&ListParams::default().labels(label))
        .await
        .unwrap();
    list.items.len()
}

/// The client the GameDay and schedule controllers run with: on a real cluster the chart's
/// controller ServiceAccount under the chart's RBAC (reporting on an owner is a write its role
/// must allow), on the embedded server (no authorization) the admin's.
async fn owners_controller_client(server: &common::TestCluster, admin: &Client) -> Client {
    if !server.is_real() {
        return admin.clone();
    }
    common::cluster::apply_namespace(admin, "faultline-system", false).await;
    for object in k8s_objects::chart_access_objects("faultline-system") {
        common::cluster::apply_object(admin, &object, "faultline-system").await;
    }
    common::cluster::client_as(server, "faultline-system", "faultline-controller", None).await
}

#[tokio::test]
async fn a_panicking_game_day_is_reported_and_the_next_one_runs() {
    let server = common::TestCluster::start().await;
    server.install_crds(&all_crds()).await;
    let client = server.client().await;
    common::cluster::apply_namespace(&client, "shop", false).await;
    let controller = tokio::spawn(faultline::gameday::run(
        owners_controller_client(&server, &client).await,
        panics_once(),
        std::future::pending(),
    ));
    let api: Api<GameDay> = Api::namespaced(client.clone(), "shop");
    let day = |name: &str| -> GameDay {
        serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"stages": [{"name": "one",
                                 "experiments": [{"name": "a", "spec": latency_spec("1m")}]}]},
        }))
        .unwrap()
    };
    api.create(&PostParams::default(), &day("first"))
        .await
        .unwrap();
    let resource = ApiResource::erase::<GameDay>(&());
    let condition = wait_for(
        "the game day's panic report",
        Duration::from_secs(10),
        || owner_condition(&client, &resource, "first"),
    )
    .await;
    let message = condition["message"].as_str().unwrap();
    println!("game day: {message}");
    assert!(
        message.contains("(panicked at tests/controller_containment.rs:")
            && message.contains("no further stage starts"),
        "{message}"
    );
    assert_eq!(condition["type"], "Complete");

    api.create(&PostParams::default(), &day("second"))
        .await
        .unwrap();
    wait_for(
        "the next game day to start its stage",
        Duration::from_secs(10),
        || async {
            (owned_experiments(&client, "faultline.dev/gameday=second").await == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        owned_experiments(&client, "faultline.dev/gameday=first").await,
        0
    );
    assert!(!controller.is_finished());
    controller.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_schedule_is_reported_and_the_next_one_runs() {
    let server = common::TestCluster::start().await;
    server.install_crds(&all_crds()).await;
    let client = server.client().await;
    common::cluster::apply_namespace(&client, "shop", false).await;
    let controller = tokio::spawn(faultline::schedule::run(
        owners_controller_client(&server, &client).await,
        panics_once(),
        std::future::pending(),
    ));
    let api: Api<ChaosSchedule> = Api::namespaced(client.clone(), "shop");
    let schedule = |name: &str| -> ChaosSchedule {
        serde_json::from_value(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"schedule": "* * * * * *",
                     "experimentTemplate": {"spec": latency_spec("1m")}},
        }))
        .unwrap()
    };
    api.create(&PostParams::default(), &schedule("first"))
        .await
        .unwrap();
    let resource = ApiResource::erase::<ChaosSchedule>(&());
    let condition = wait_for(
        "the schedule's panic report",
        Duration::from_secs(10),
        || owner_condition(&client, &resource, "first"),
    )
    .await;
    assert_eq!(condition["type"], "Active");
    assert_eq!(condition["status"], "False");
    let message = condition["message"].as_str().unwrap();
    assert!(
        message.contains("(panicked at tests/controller_containment.rs:")
            && message.contains("no run starts"),
        "{message}"
    );

    api.create(&PostParams::default(), &schedule("second"))
        .await
        .unwrap();
    wait_for(
        "the next schedule's first run",
        Duration::from_secs(10),
        || async {
            (owned_experiments(&client, "faultline.dev/schedule=second").await >= 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        owned_experiments(&client, "faultline.dev/schedule=first").await,
        0
    );
    assert!(!controller.is_finished());
    controller.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_game_day_or_schedule_says_why_and_starts_nothing() {
    let server = common::TestCluster::start().await;
    server.install_crds(&all_crds()).await;
    server
        .install_crds(&[
            schemaless_spec_crd("GameDay"),
            schemaless_spec_crd("ChaosSchedule"),
        ])
        .await;
    let client = server.client().await;
    common::cluster::apply_namespace(&client, "shop", false).await;
    let controller_client = owners_controller_client(&server, &client).await;
    let not_paused: faultline::owned_experiments::PausedSwitch = Arc::new(|| false);
    let game_days = tokio::spawn(faultline::gameday::run(
        controller_client.clone(),
        not_paused.clone(),
        std::future::pending(),
    ));
    let schedules = tokio::spawn(faultline::schedule::run(
        controller_client,
        not_paused,
        std::future::pending(),
    ));
    let create = |resource: ApiResource, body: Value| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "shop", &resource);
        async move {
            let object: DynamicObject = serde_json::from_value(body).unwrap();
            api.create(&PostParams::default(), &object).await.unwrap();
        }
    };
    let game_day = ApiResource::erase::<GameDay>(&());
    let schedule = ApiResource::erase::<ChaosSchedule>(&());
    create(
        game_day.clone(),
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
               "metadata": {"name": "garbled", "namespace": "shop"},
               "spec": {"stages": "all of them"}}),
    )
    .await;
    create(
        schedule.clone(),
        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosSchedule",
               "metadata": {"name": "garbled", "namespace": "shop"},
               "spec": {"schedule": 42,
                        "experimentTemplate": {"spec": latency_spec("1m")}}}),
    )
    .await;

    let day = wait_for("the game day's report", Duration::from_secs(10), || async {
        let status = status_of(&client, &game_day, "garbled").await;
        (status["phase"] == "Failed").then_some(status)
    })
    .await;
    let message = day["message"].as_str().unwrap();
    println!("game day: {message}");
    assert!(
        message.starts_with(
            "the game day cannot be read, so nothing is started: spec.stages: invalid type: string \"all of them\", expected a sequence"
        ),
        "{message}"
    );
    assert_eq!(day["verdict"], "Error");
    assert_eq!(day["conditions"][0]["type"], "Complete");

    let condition = wait_for("the schedule's report", Duration::from_secs(10), || async {
        let status = status_of(&client, &schedule, "garbled").await;
        let condition = status["conditions"][0].clone();
        (condition["reason"] == "InvalidSpec").then_some(condition)
    })
    .await;
    let message = condition["message"].as_str().unwrap();
    println!("schedule: {message}");
    assert_eq!(condition["type"], "Active");
    assert_eq!(condition["status"], "False");
    assert!(
        message.starts_with(
            "the schedule cannot be read, so no run starts: spec.schedule: invalid type: integer `42`, expected a string"
        ),
        "{message}"
    );

    assert_eq!(
        owned_experiments(&client, "faultline.dev/gameday").await
            + owned_experiments(&client, "faultline.dev/schedule").await,
        0,
        "nothing started for an owner that cannot be read"
    );
    assert!(!game_days.is_finished() && !schedules.is_finished());
    game_days.abort();
    schedules.abort();
    server.shutdown().await;
}
