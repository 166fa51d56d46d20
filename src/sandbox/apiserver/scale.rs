//! The `scale` subresource of Deployments and ReplicaSets (`kubectl scale`): an
//! `autoscaling/v1` `Scale` that shows `spec.replicas`, `status.replicas` and the selector as a
//! string, and whose writes change only the parent's `spec.replicas`. Writes go through
//! [`write::commit_update`], so generation, resourceVersion, managedFields (subresource
//! `scale`), dryRun and "nothing changed, nothing written" behave as for any write.

use super::State;
use super::errors::{ApiError, ApiResult, Cause};
use super::patch::{self, PatchError};
use super::request::Target;
use super::write::{self, WriteCtx};
use serde_json::{Map, Value, json};

/// The Scale of the object `t` names.
pub fn get(st: &State, t: &Target) -> ApiResult<Value> {
    Ok(scale_of(&parent(st, t)?))
}

/// PUT of a Scale: sets the parent's `spec.replicas`.
pub fn update(st: &mut State, t: &Target, body: Value, ctx: &mut WriteCtx) -> ApiResult<Value> {
    let old = parent(st, t)?;
    let name = t.name.clone().unwrap_or_default();
    let Value::Object(scale) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a Scale object",
        ));
    };
    match scale.get("kind").and_then(Value::as_str) {
        None | Some("Scale") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: wrong kind {other:?}"
            )));
        }
    }
    let md = scale.get("metadata").cloned().unwrap_or_else(|| json!({}));
    if let Some(n) = md["name"].as_str().filter(|n| !n.is_empty())
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(rv) = md["resourceVersion"].as_str().filter(|r| !r.is_empty())
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::conflict(&t.def.group, &t.def.plural, &name));
    }
    let replicas = match &scale.get("spec").and_then(|s| s.get("replicas")) {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|r| i32::try_from(*r).is_ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!("spec.replicas must be an int32, got {v}"))
            })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            &name,
            vec![Cause {
                field: "spec.replicas".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                reason: "FieldValueInvalid".into(),
            }],
        ));
    }
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    let fields_body = json!({"spec": {"replicas": replicas}});
    let (_, stored) = write::commit_update(st, t, &old, new, &fields_body, ctx)?;
    Ok(scale_of(&stored))
}

/// PATCH of a Scale: the patch applies to the current Scale, the result is written as a PUT.
pub fn patch(
    st: &mut State,
    t: &Target,
    body: &[u8],
    content_type: &str,
    ctx: &mut WriteCtx,
) -> ApiResult<Value> {
    let ctype = content_type.split(';').next().unwrap_or_default().trim();
    let patch_body = super::request::decode_body(body, ctype)?;
    let mut scale = get(st, t)?;
    // The Scale shown carries the current resourceVersion; a patch that does not set one
    // must not turn it into a precondition that a concurrent write would break.
    let result = match ctype {
        "application/json-patch+json" => patch::json_patch(&mut scale, &patch_body),
        "application/merge-patch+json" => {
            patch::merge_patch(&mut scale, &patch_body);
            Ok(())
        }
        "application/strategic-merge-patch+json" => patch::strategic_merge(&mut scale, &patch_body),
        "application/apply-patch+yaml" => {
            ctx.apply = true;
            patch::apply_merge(&mut scale, &patch_body, true)
        }
        _ => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json-patch+json, application/merge-patch+json, \
                 application/apply-patch+yaml, application/strategic-merge-patch+json (got \
                 {content_type})"
            )));
        }
    };
    result.map_err(|e| match e {
        PatchError::Malformed(m) | PatchError::Failed(m) => ApiError::bad_request(m),
    })?;
    let sets_rv = patch_body["metadata"]["resourceVersion"].is_string()
        || patch_body.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|op| op["path"] == "/metadata/resourceVersion")
        });
    if !sets_rv && let Some(md) = scale["metadata"].as_object_mut() {
        md.remove("resourceVersion");
    }
    update(st, t, scale, ctx)
}

fn parent(st: &State, t: &Target) -> ApiResult<Value> {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    st.store
        .get(&t.def.key(), &ns, &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, &name))
}

fn scale_of(obj: &Value) -> Value {
    let md = &obj["metadata"];
    let mut metadata = Map::new();
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = md.get(k) {
            metadata.insert(k.into(), v.clone());
        }
    }
    // Go's ScaleSpec leaves out replicas: 0 (omitempty); the status always says it.
    let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let spec = if replicas == 0 {
        json!({})
    } else {
        json!({"replicas": replicas})
    };
    let mut status = json!({"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0)});
    let selector = selector_string(&obj["spec"]["selector"]);
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// A LabelSelector as the real server prints it (`labels.Selector.String()`): requirements
/// sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-joined.
pub fn selector_string(selector: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector["matchLabels"].as_object() {
        for (k, v) in labels {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default().to_string();
        let mut values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key, text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_as_the_real_server_prints_them() {
        let s = json!({
            "matchLabels": {"tier": "web", "app": "shop"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["b", "a"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "owner", "operator": "Exists"}
            ]
        });
        assert_eq!(
            selector_string(&s),
            "app=shop,!canary,env notin (dev),owner,tier=web,zone in (a,b)"
        );
        assert_eq!(selector_string(&json!({})), "");
    }

    #[test]
    fn a_scale_shows_replicas_and_leaves_out_zero() {
        let d = json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                         "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "b"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}},
            "status": {"replicas": 2}
        });
        let s = scale_of(&d);
        assert_eq!(s["spec"], json!({"replicas": 3}));
        assert_eq!(s["status"], json!({"replicas": 2, "selector": "app=web"}));
        assert!(s["metadata"].get("labels").is_none());
        let mut zero = d.clone();
        zero["spec"]["replicas"] = json!(0);
        assert_eq!(scale_of(&zero)["spec"], json!({}));
    }
}
