//! CRDs: registration, discovery, schema pruning / rejection, CEL, status subresource, deletion.

mod common;

use common::{api_err, server};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
#[kube(
    group = "test.faultline.dev",
    version = "v1",
    kind = "Probe",
    namespaced,
    shortname = "prb"
)]
#[kube(status = "ProbeStatus", derive = "Default")]
#[kube(printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target"}"#)]
#[kube(validation = "!has(self.spec.replicas) || self.spec.replicas <= 5")]
pub struct ProbeSpec {
    pub target: String,
    pub duration: String,
    pub replicas: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, JsonSchema)]
pub struct ProbeStatus {
    pub phase: Option<String>,
}

fn probe(name: &str) -> Probe {
    Probe::new(
        name,
        ProbeSpec {
            target: "svc".into(),
            duration: "30s".into(),
            replicas: Some(1),
        },
    )
}

fn dynamic_api(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.faultline.dev", "v1", "Probe"),
        "probes",
    );
    Api::namespaced_with(client, "default", &ar)
}

#[tokio::test]
async fn crd_lifecycle_and_validation() {
    let srv = server().await;
    let client = srv.client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds
        .create(&PostParams::default(), &Probe::crd())
        .await
        .unwrap();
    let status = crd.status.unwrap();
    let conds = status.conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
    );
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "NamesAccepted" && c.status == "True")
    );
    assert_eq!(
        status.accepted_names.unwrap().short_names,
        Some(vec!["prb".to_string()])
    );

    // discovery shows it, usable at once
    let rl = client
        .list_api_group_resources("test.faultline.dev/v1")
        .await
        .unwrap();
    let names: Vec<&str> = rl.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["probes", "probes/status"]);
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "test.faultline.dev"));

    let probes: Api<Probe> = Api::default_namespaced(client.clone());
    let p = probes
        .create(&PostParams::default(), &probe("one"))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));

    // unknown fields are pruned by default; a server-side apply refuses them whatever
    // fieldValidation says, with the real server's 500 (it cannot make the typed patch)
    let dynamic = dynamic_api(client.clone());
    let mut obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.faultline.dev/v1", "kind": "Probe", "metadata": {"name": "two"},
        "spec": {"target": "svc", "duration": "1m", "foo": 1}
    }))
    .unwrap();
    let pruned = dynamic.create(&PostParams::default(), &obj).await.unwrap();
    assert!(pruned.data["spec"].get("foo").is_none());
    obj.metadata.name = Some("three".into());
    // (kube's PostParams cannot carry fieldValidation; an apply can)
    let strict = PatchParams::apply("tester").validation_strict();
    let s = api_err(dynamic.patch("three", &strict, &Patch::Apply(&obj)).await);
    assert_eq!(s.code, 500);
    assert_eq!(
        s.message,
        "failed to create typed patch object (/three; test.faultline.dev/v1, Kind=Probe): .spec.foo: field not declared in schema"
    );

    // wrong type, missing required field
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.faultline.dev/v1", "kind": "Probe", "metadata": {"name": "bad"},
        "spec": {"target": "svc", "duration": 5}
    }))
    .unwrap();
    let s = api_err(dynamic.create(&PostParams::default(), &bad).await);
    assert_eq!(s.code, 422);
    assert!(
        s.message.contains("spec.duration: Invalid value: \"integer\": spec.duration in body must be of type string: \"integer\""),
        "{}",
        s.message
    );
    let missing: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.faultline.dev/v1", "kind": "Probe", "metadata": {"name": "bad"}, "spec": {"target": "svc"}
    }))
    .unwrap();
    let s = api_err(dynamic.create(&PostParams::default(), &missing).await);
    assert_eq!(s.details.unwrap().causes[0].field, "spec.duration");

    // CEL rule
    let mut many = probe("many");
    many.spec.replicas = Some(9);
    let s = api_err(probes.create(&PostParams::default(), &many).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains("self.spec.replicas <= 5"),
        "{}",
        s.message
    );

    // strategic merge patch is not offered for custom resources
    let s = api_err(
        probes
            .patch(
                "one",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"target": "x"}})),
            )
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));

    // status subresource, via SSA, validated against the schema
    let applied = json!({"apiVersion": "test.faultline.dev/v1", "kind": "Probe", "status": {"phase": "Running"}});
    let st = probes
        .patch_status(
            "one",
            &PatchParams::apply("ctrl").force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(st.metadata.generation, Some(1));
    let s = api_err(
        probes
            .patch_status(
                "one",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": 3}})),
            )
            .await,
    );
    assert_eq!(s.code, 422);
    let spec_change = probes
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"target": "other"}, "status": {"phase": "X"}})),
        )
        .await
        .unwrap();
    assert_eq!(spec_change.metadata.generation, Some(2));
    assert_eq!(
        spec_change.status.unwrap().phase.as_deref(),
        Some("Running")
    );

    // deleting the CRD removes its objects and the resource
    crds.delete("probes.test.faultline.dev", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        client
            .list_api_group_resources("test.faultline.dev/v1")
            .await
            .is_err()
    );
    let s = api_err(probes.list(&ListParams::default()).await);
    assert_eq!(s.code, 404);
    // re-creating it starts empty
    srv.install_crds(&[Probe::crd()]).await.unwrap();
    assert!(
        probes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn install_crds_is_idempotent_and_dry_run_does_not_persist() {
    let srv = server().await;
    srv.install_crds(&[Probe::crd()]).await.unwrap();
    srv.install_crds(&[Probe::crd()]).await.unwrap();
    let probes: Api<Probe> = Api::default_namespaced(srv.client().await);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let out = probes.create(&dry, &probe("dry")).await.unwrap();
    assert_eq!(out.metadata.name.as_deref(), Some("dry"));
    assert!(probes.get_opt("dry").await.unwrap().is_none());
    srv.shutdown().await;
}
