//! Metadata-only answers: `meta.k8s.io/v1` PartialObjectMetadata and PartialObjectMetadataList,
//! for `Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` (kube-rs's
//! `Api::get_metadata`, `list_metadata`, `patch_metadata` and `metadata_watcher`, client-go's
//! metadata informers).
//!
//! As on the real server, the conversion applies to whatever a request answers with, writes
//! included; a `Status` passes unchanged; an object asked for as a list, or a list as an
//! object, is 406 Not Acceptable (in a watch, where every event is one object, that ends the
//! stream).

use super::errors::{ApiError, ApiResult};
use super::request::{Format, Target};
use serde_json::{Value, json};

const API_VERSION: &str = "meta.k8s.io/v1";

/// `body` in the form `format` asks for: unchanged unless metadata only was asked for.
pub fn convert(t: &Target, body: Value, format: Format) -> ApiResult<Value> {
    let is_list = body.get("items").is_some_and(Value::is_array);
    match format {
        Format::Json | Format::Table | Format::Protobuf => Ok(body),
        _ if body["kind"] == "Status" => Ok(body),
        Format::Metadata if is_list => Err(ApiError::not_acceptable(format!(
            "you requested PartialObjectMetadata, but the requested object is a list ({})",
            go_type(t, true)
        ))),
        Format::Metadata => Ok(object(&body)),
        Format::MetadataList if is_list => Ok(list(&body)),
        Format::MetadataList => Err(ApiError::not_acceptable(format!(
            "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
            go_type(t, false)
        ))),
    }
}

/// One object as PartialObjectMetadata: all of its `metadata`, nothing else.
pub fn object(obj: &Value) -> Value {
    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({"kind": "PartialObjectMetadata", "apiVersion": API_VERSION, "metadata": metadata})
}

/// A list's own metadata (resourceVersion, continue, remainingItemCount) and each item's.
fn list(list: &Value) -> Value {
    let items: Vec<Value> = list["items"]
        .as_array()
        .map(|items| items.iter().map(object).collect())
        .unwrap_or_default();
    // The real server writes an empty list's items as `null` (a nil Go slice), unlike in the
    // full form; clients read both.
    let items = if items.is_empty() {
        Value::Null
    } else {
        Value::Array(items)
    };
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": API_VERSION,
        "metadata": list.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "items": items,
    })
}

/// The Go type the real server names in its 406: `*core.PodList`, `*apps.Deployment`,
/// `*unstructured.UnstructuredList` for custom resources (their scale is `*autoscaling.Scale`).
fn go_type(t: &Target, is_list: bool) -> String {
    let list = if is_list { "List" } else { "" };
    if t.def.is_custom() && !t.is_scale() {
        return format!("*unstructured.Unstructured{list}");
    }
    let (api_version, kind) = t.object_kind();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let package = group.split('.').next().filter(|p| !p.is_empty());
    format!("*{}.{kind}{list}", package.unwrap_or("core"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::apiserver::resources::Registry;

    fn target(group: &str, plural: &str) -> Target {
        let def = Registry::with_builtins()
            .find(group, "v1", plural)
            .cloned()
            .unwrap();
        Target {
            def,
            version: "v1".into(),
            namespace: Some("ns".into()),
            name: None,
            sub: None,
        }
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
               "spec": {"containers": []}, "status": {"phase": "Running"}})
    }

    #[test]
    fn an_object_keeps_only_its_metadata() {
        let got = convert(&target("", "pods"), pod(), Format::Metadata).unwrap();
        assert_eq!(
            got,
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": pod()["metadata"]})
        );
    }

    #[test]
    fn a_list_keeps_its_paging_metadata_and_each_items_metadata() {
        let md = json!({"resourceVersion": "7", "continue": "ns/a", "remainingItemCount": 1});
        let list = json!({"kind": "PodList", "apiVersion": "v1", "metadata": md, "items": [pod()]});
        let got = convert(&target("", "pods"), list, Format::MetadataList).unwrap();
        assert_eq!(got["kind"], "PartialObjectMetadataList");
        assert_eq!(got["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(got["metadata"], md);
        assert_eq!(got["items"][0]["kind"], "PartialObjectMetadata");
        assert_eq!(got["items"][0]["metadata"], pod()["metadata"]);
        assert!(got["items"][0].get("spec").is_none());
    }

    #[test]
    fn an_empty_list_has_null_items_as_on_the_real_server() {
        let list = json!({"kind": "PodList", "apiVersion": "v1",
                          "metadata": {"resourceVersion": "7"}, "items": []});
        let got = convert(&target("", "pods"), list, Format::MetadataList).unwrap();
        assert_eq!(got["items"], Value::Null);
    }

    #[test]
    fn the_wrong_shape_is_not_acceptable_and_names_the_go_type() {
        let list = json!({"kind": "DeploymentList", "apiVersion": "apps/v1",
                          "metadata": {}, "items": []});
        let e = convert(&target("apps", "deployments"), list, Format::Metadata).unwrap_err();
        assert_eq!((e.code, e.reason), (406, "NotAcceptable"));
        assert_eq!(
            e.message,
            "you requested PartialObjectMetadata, but the requested object is a list \
             (*apps.DeploymentList)"
        );
        let e = convert(&target("", "pods"), pod(), Format::MetadataList).unwrap_err();
        assert_eq!(
            e.message,
            "you requested PartialObjectMetadataList, but the requested object is not a list \
             (*core.Pod)"
        );
    }

    #[test]
    fn a_status_and_other_formats_pass_unchanged() {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
        let t = target("", "pods");
        assert_eq!(
            convert(&t, status.clone(), Format::Metadata).unwrap(),
            status
        );
        assert_eq!(
            convert(&t, status.clone(), Format::MetadataList).unwrap(),
            status
        );
        assert_eq!(convert(&t, pod(), Format::Json).unwrap(), pod());
    }
}
