//! Discovery (`/api`, `/apis`, `/api/v1`, `/apis/G/V`, `/version`) and a minimal OpenAPI.
//!
//! Discovery is the legacy (unaggregated) form; kubectl falls back to it when the response is
//! plain `application/json`. OpenAPI: kubectl 1.35 reads `/openapi/v3` to decide whether the
//! server supports `fieldValidation` (it looks for that parameter on each kind's PATCH operation,
//! identified by `x-kubernetes-group-version-kind`). We publish one document per group-version
//! with exactly those PATCH operations and minimal object schemas (`x-kubernetes-group-version-kind`
//! plus the CRD's openAPIV3Schema for custom resources), so kubectl relies on server-side
//! validation. `/openapi/v2` is answered with 404, which kubectl tolerates when v3 is present.

use super::resources::{Registry, ResourceDef};
use serde_json::{Value, json};

/// The release whose API server the sandbox answers like (validation, defaults, printers: the
/// one `scripts/cluster.sh` builds and `tests/differential.rs` compares against), so that
/// kubectl's version-skew check judges the pair a user really has.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "36",
        "emulationMajor": "1",
        "emulationMinor": "36",
        "gitVersion": "v1.36.3-faultline",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn groups(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    let (g, vs) = reg.groups().into_iter().find(|(g, _)| g == name)?;
    let mut v = group_json(&g, &vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Some(v)
}

fn verbs(def: &ResourceDef) -> Vec<&'static str> {
    if def.is_access_review() {
        return vec!["create"];
    }
    let mut v = vec![
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    if def.namespaced {
        v.push("deletecollection");
    }
    v
}

pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.in_group_version(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in defs {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": verbs(d),
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        // Subresources follow their resource, in name order as the real server lists them.
        let mut subresources = Vec::new();
        if d.has_status(version) {
            subresources.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if d.has_scale() {
            // kubectl scale finds the Scale kind of the subresource here.
            subresources.push(json!({
                "name": format!("{}/scale", d.plural),
                "singularName": "",
                "namespaced": true,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if d.group.is_empty() && d.plural == "pods" {
            // kubectl drain looks for this entry to decide whether it can evict.
            subresources.push(json!({
                "name": "pods/eviction",
                "singularName": "",
                "namespaced": true,
                "group": "policy",
                "version": "v1",
                "kind": "Eviction",
                "verbs": ["create"],
            }));
            subresources.push(json!({
                "name": "pods/log",
                "singularName": "",
                "namespaced": true,
                "kind": "Pod",
                "verbs": ["get"],
            }));
        }
        subresources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        resources.extend(subresources);
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// A hash of the registry so that kubectl's OpenAPI cache is invalidated when CRDs change.
fn registry_hash(reg: &Registry, group: &str, version: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    for d in reg.in_group_version(group, version) {
        d.plural.hash(&mut h);
        d.kind.hash(&mut h);
        if let Some(s) = d.crd_version(version).and_then(|v| v.schema.as_ref()) {
            s.to_string().hash(&mut h);
        }
    }
    format!("{:016X}", h.finish())
}

pub fn openapi_v3_index(reg: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    let mut add = |prefix: String, g: &str, v: &str| {
        let url = format!("/openapi/v3/{prefix}?hash={}", registry_hash(reg, g, v));
        paths.insert(prefix, json!({"serverRelativeURL": url}));
    };
    add("api/v1".into(), "", "v1");
    for (g, vs) in reg.groups() {
        for v in vs {
            add(format!("apis/{g}/{v}"), &g, &v);
        }
    }
    json!({"paths": paths})
}

pub fn openapi_v3_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.in_group_version(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    let prefix = if group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{group}/{version}")
    };
    let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
    for d in defs {
        let gvk = json!({"group": d.group, "version": version, "kind": d.kind});
        let schema_name = format!(
            "{}.{}.{}",
            if d.group.is_empty() { "core" } else { &d.group },
            version,
            d.kind
        );
        let path = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        let reference = json!({"$ref": format!("#/components/schemas/{schema_name}")});
        paths.insert(
            path,
            json!({
                "patch": {
                    "operationId": format!("patch{}", d.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")],
                    "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
                }
            }),
        );
        let mut schema = d
            .crd_version(version)
            .and_then(|v| v.schema.as_deref().cloned())
            .unwrap_or_else(
                || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            );
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        schemas.insert(schema_name, schema);
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.36.3"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
