//! The four PATCH flavours: JSON merge, JSON patch, strategic merge and server-side apply.
//!
//! * Merge patch is RFC 7386.
//! * JSON patch is RFC 6902 with the real server's leniency (evanphx/json-patch): a `test` op
//!   whose path does not exist and whose value is `null` succeeds. kube's `finalizer()` helper
//!   sends exactly that on objects without finalizers.
//! * Strategic merge patch implements the parts faultline uses: lists of objects merged by their
//!   merge key (`containers`/`volumes`/`env`/... by `name`, `ports` by `containerPort`/`port`,
//!   `conditions` by `type`, `volumeMounts` by `mountPath`, `ownerReferences` by `uid`),
//!   `finalizers` merged as a set, `$patch: delete|replace`, `$deleteFromPrimitiveList/...`;
//!   `$retainKeys` and `$setElementOrder` directives are dropped (ignored). It is only offered
//!   for built-in kinds; the handler answers 415 for custom resources like the real server.
//! * Server-side apply is simplified to merge semantics: the applied configuration is merged
//!   into the live object (strategic rules for built-ins, merge-patch rules for custom
//!   resources, except that `null` is kept out). A non-forced apply that would change a
//!   scalar field another manager owns is refused as on the real server (`apply_conflicts`).
//!   managedFields entries are recorded (see `managed_fields`), with a simplified `fieldsV1` set
//!   derived from the request body (object keys; a list is one field). On custom resources, a
//!   field the manager applied before and leaves out now is removed unless another entry owns
//!   it ([`prune_unapplied`]), as the real server does; on built-in kinds it stays.

use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("{0}")]
    Malformed(String),
    /// JSON patch op failed to apply (the real server answers 422 for these).
    #[error("{0}")]
    Failed(String),
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 JSON patch with the real server's `test`-on-missing-path-with-null leniency.
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| PatchError::Malformed("json patch must be an array of operations".into()))?;
    for op in ops {
        let is_lenient_test = op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value").is_some_and(Value::is_null)
            && op
                .get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| doc.pointer(p).is_none());
        if is_lenient_test {
            continue;
        }
        let parsed: json_patch::PatchOperation = serde_json::from_value(op.clone())
            .map_err(|e| PatchError::Malformed(format!("invalid json patch operation: {e}")))?;
        json_patch::patch(doc, &[parsed]).map_err(|e| PatchError::Failed(e.to_string()))?;
    }
    Ok(())
}

/// Merge key of a list field, by field name (and, for `ports`, by what the elements carry).
fn merge_key(field: &str, sample: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "ports" => {
            if sample.iter().any(|p| p.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        "conditions" => "type",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// Lists of scalars merged as sets rather than replaced.
fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Strategic merge patch of `patch` into `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    smp_value(target, patch, "", true)
}

/// Apply (SSA, simplified): like strategic merge, but `null` values in the applied configuration
/// are not deletions, and for custom resources lists are replaced (`use_keys = false`).
pub fn apply_merge(target: &mut Value, applied: &Value, use_keys: bool) -> Result<(), PatchError> {
    let cleaned = strip_nulls(applied);
    smp_value(target, &cleaned, "", use_keys)
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

fn smp_value(
    target: &mut Value,
    patch: &Value,
    field: &str,
    use_keys: bool,
) -> Result<(), PatchError> {
    match patch {
        Value::Object(pm) => {
            match pm.get("$patch").and_then(Value::as_str) {
                Some("replace") => {
                    let mut m = pm.clone();
                    m.remove("$patch");
                    *target = Value::Object(m);
                    return Ok(());
                }
                Some("delete") => {
                    *target = Value::Null;
                    return Ok(());
                }
                Some(other) => {
                    return Err(PatchError::Malformed(format!(
                        "unknown patch type: {other}"
                    )));
                }
                None => {}
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Some(tm) = target.as_object_mut() else {
                return Ok(());
            };
            for (k, pv) in pm {
                if k == "$retainKeys" || k.starts_with("$setElementOrder/") {
                    continue;
                }
                if let Some(list_field) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(cur)), Some(del)) =
                        (tm.get_mut(list_field), pv.as_array())
                    {
                        cur.retain(|x| !del.contains(x));
                    }
                    continue;
                }
                if k.starts_with('$') {
                    return Err(PatchError::Malformed(format!("unknown directive {k}")));
                }
                if pv.is_null() {
                    tm.remove(k);
                    continue;
                }
                let entry = tm.entry(k.clone()).or_insert(Value::Null);
                smp_value(entry, pv, k, use_keys)?;
                if entry.is_null() {
                    tm.remove(k);
                }
            }
            Ok(())
        }
        Value::Array(pl) => {
            if use_keys && is_set_list(field) {
                let cur = target.as_array().cloned().unwrap_or_default();
                let mut out = cur;
                for x in pl {
                    if !out.contains(x) {
                        out.push(x.clone());
                    }
                }
                *target = Value::Array(out);
                return Ok(());
            }
            let key = if use_keys { merge_key(field, pl) } else { None };
            match (key, target.as_array_mut()) {
                (Some(key), Some(cur)) => {
                    for item in pl {
                        let Some(kv) = item.get(key) else {
                            return Err(PatchError::Malformed(format!(
                                "map: {item} does not contain declared merge key: {key}"
                            )));
                        };
                        let pos = cur.iter().position(|c| c.get(key) == Some(kv));
                        let is_delete =
                            item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, is_delete) {
                            (Some(i), true) => {
                                cur.remove(i);
                            }
                            (None, true) => {}
                            (Some(i), false) => smp_value(&mut cur[i], item, "", use_keys)?,
                            (None, false) => {
                                let mut fresh = Value::Object(Map::new());
                                smp_value(&mut fresh, item, "", use_keys)?;
                                cur.push(fresh);
                            }
                        }
                    }
                    Ok(())
                }
                (Some(_), None) => {
                    let mut fresh = Value::Array(Vec::new());
                    smp_value(&mut fresh, patch, field, use_keys)?;
                    *target = fresh;
                    Ok(())
                }
                (None, _) => {
                    *target = patch.clone();
                    Ok(())
                }
            }
        }
        other => {
            *target = other.clone();
            Ok(())
        }
    }
}

/// The simplified `fieldsV1` set of a request body: every object key as `f:<key>`, lists and
/// scalars as leaves. Server-managed metadata is left out.
pub fn fields_v1(body: &Value) -> Value {
    fn walk(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (format!("f:{k}"), walk(v))).collect())
            }
            _ => json!({}),
        }
    }
    let mut v = body.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                md.remove(k);
            }
            if md.is_empty() {
                m.remove("metadata");
            }
        }
    }
    walk(&v)
}

/// Which part of an object a write may change: an apply to `/status` prunes only within
/// `status`, one to the main resource of a kind with a status subresource everything but it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyScope {
    Status,
    Main { has_status: bool },
}

/// Removes from `doc` what `manager` applied before (its `Apply` entry of this scope in
/// `managed_fields`, the object's list as it was) and leaves out of `applied` now: the real
/// server's "fields a manager stops applying are removed", unless another entry (another
/// manager, or an `Update`) owns the field or something under it.
pub fn prune_unapplied(
    doc: &mut Value,
    managed_fields: &Value,
    manager: &str,
    scope: ApplyScope,
    applied: &Value,
) {
    let subresource = match scope {
        ApplyScope::Status => Some("status"),
        ApplyScope::Main { .. } => None,
    };
    let entries = managed_fields.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let is_ours = |e: &Value| {
        e["manager"] == manager
            && e["operation"] == "Apply"
            && e["subresource"].as_str() == subresource
    };
    let Some(before) = entries.iter().find(|e| is_ours(e)) else {
        return;
    };
    let others: Vec<&Value> = entries
        .iter()
        .filter(|e| !is_ours(e))
        .map(|e| &e["fieldsV1"])
        .collect();
    let now = fields_v1(applied);
    let Some(before) = before["fieldsV1"].as_object() else {
        return;
    };
    let in_scope = |key: &str| match scope {
        ApplyScope::Status => key == "f:status",
        ApplyScope::Main { has_status } => !(has_status && key == "f:status"),
    };
    let before: Map<String, Value> = before
        .iter()
        .filter(|(k, _)| in_scope(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    prune(doc, &before, now.as_object(), &others, &mut Vec::new());
}

fn prune(
    doc: &mut Value,
    before: &Map<String, Value>,
    now: Option<&Map<String, Value>>,
    others: &[&Value],
    path: &mut Vec<String>,
) {
    for (field, was) in before {
        let Some(key) = field.strip_prefix("f:") else {
            continue;
        };
        let still = now.and_then(|n| n.get(field));
        path.push(field.clone());
        let children = was.as_object().filter(|m| !m.is_empty());
        match (still, children) {
            // Still applied, with parts of its own: some of them may have gone.
            (Some(still), Some(children)) => {
                if let Some(child) = doc.get_mut(key) {
                    prune(child, children, still.as_object(), others, path);
                }
            }
            (Some(_), None) => {}
            (None, _) if !owned_by(others, path) => {
                if let Some(map) = doc.as_object_mut() {
                    map.remove(key);
                }
            }
            // Another owns it or a part of it: only the parts nobody else owns go.
            (None, Some(children)) => {
                if let Some(child) = doc.get_mut(key) {
                    prune(child, children, None, others, path);
                }
            }
            (None, None) => {}
        }
        path.pop();
    }
}

/// Whether any of `sets` holds `path`, a part of it, or the whole of which it is a part.
fn owned_by(sets: &[&Value], path: &[String]) -> bool {
    sets.iter().any(|set| {
        let mut node = *set;
        for field in path {
            match node.get(field) {
                Some(next) => node = next,
                // A leaf above the path owns everything under it.
                None => return node.as_object().is_some_and(|m| m.is_empty()) && node != *set,
            }
        }
        true
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_test_on_missing_path() {
        let mut doc = json!({"metadata": {"name": "x"}});
        let patch = json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": ["a"]}
        ]);
        json_patch(&mut doc, &patch).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["a"]));
        // A failing test on an existing path still fails.
        let bad = json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]);
        assert!(matches!(
            json_patch(&mut doc, &bad),
            Err(PatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!({"op": "x"})),
            Err(PatchError::Malformed(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!([{"op": "nope"}])),
            Err(PatchError::Malformed(_))
        ));
    }

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut doc, &json!({"a": null, "b": {"c": 5}}));
        assert_eq!(doc, json!({"b": {"c": 5, "d": 3}}));
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}
        ]}});
        strategic_merge(&mut pod, &patch).unwrap();
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "c", "image": "c:1"}
            ]}})
        );
    }

    #[test]
    fn strategic_conditions_ports_finalizers_and_replace() {
        let mut obj = json!({
            "metadata": {"finalizers": ["a"]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]},
            "spec": {"ports": [{"port": 80, "name": "http"}], "tolerations": [{"key": "x"}], "sel": {"a": "1"}}
        });
        let patch = json!({
            "metadata": {"finalizers": ["b"]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "True"}]},
            "spec": {"ports": [{"port": 443, "name": "https"}], "tolerations": [{"key": "y"}],
                     "sel": {"$patch": "replace", "b": "2"}, "$retainKeys": ["sel"]}
        });
        strategic_merge(&mut obj, &patch).unwrap();
        assert_eq!(obj["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(obj["status"]["conditions"][0]["status"], "True");
        assert_eq!(obj["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(obj["spec"]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(obj["spec"]["tolerations"], json!([{"key": "y"}]));
        assert_eq!(obj["spec"]["sel"], json!({"b": "2"}));
        let mut o2 = json!({"metadata": {"finalizers": ["a", "b"]}});
        strategic_merge(
            &mut o2,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        )
        .unwrap();
        assert_eq!(o2["metadata"]["finalizers"], json!(["b"]));
        assert!(
            strategic_merge(&mut o2, &json!({"spec": {"containers": [{"image": "x"}]}})).is_err()
        );
    }

    #[test]
    fn apply_keeps_unmentioned_fields_and_ignores_null() {
        let mut obj = json!({"spec": {"a": 1, "list": [1, 2]}, "status": {"phase": "x"}});
        apply_merge(
            &mut obj,
            &json!({"spec": {"b": 2, "a": null, "list": [3]}}),
            false,
        )
        .unwrap();
        assert_eq!(
            obj,
            json!({"spec": {"a": 1, "b": 2, "list": [3]}, "status": {"phase": "x"}})
        );
    }

    #[test]
    fn fields_v1_shape() {
        let f = fields_v1(
            &json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "b"}}, "spec": {"n": 1}}),
        );
        assert_eq!(
            f,
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:n": {}}})
        );
    }

    fn entry(manager: &str, operation: &str, subresource: Option<&str>, body: Value) -> Value {
        let mut e =
            json!({"manager": manager, "operation": operation, "fieldsV1": fields_v1(&body)});
        if let Some(s) = subresource {
            e["subresource"] = json!(s);
        }
        e
    }

    #[test]
    fn an_apply_removes_what_its_manager_stopped_applying_and_nobody_else_owns() {
        let mut doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                             "spec": {"x": 1, "y": 2, "z": [1, 2], "nested": {"p": 1, "q": 2}}});
        let managed = json!([
            entry(
                "ctl",
                "Apply",
                None,
                json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                  "spec": {"x": 1, "y": 2, "z": [1], "nested": {"p": 1, "q": 2}}})
            ),
            // Another manager's write owns spec.y.
            entry("kubectl", "Update", None, json!({"spec": {"y": 2}})),
        ]);
        let applied =
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1, "nested": {"p": 1}}});
        prune_unapplied(
            &mut doc,
            &managed,
            "ctl",
            ApplyScope::Main { has_status: true },
            &applied,
        );
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1, "y": 2, "nested": {"p": 1}}})
        );
    }

    #[test]
    fn an_apply_prunes_only_within_its_own_subresource_and_only_its_own_entry() {
        let status = json!({"status": {"seed": 7, "targets": [1], "phase": "Pending"}});
        let managed = json!([
            entry("ctl", "Apply", Some("status"), status.clone()),
            entry(
                "agent",
                "Apply",
                Some("status"),
                json!({"status": {"receipts": [1]}})
            ),
            entry("ctl", "Apply", None, json!({"spec": {"x": 1}})),
        ]);
        // A main-resource apply leaves status alone, whatever it applied before.
        let mut doc = json!({"spec": {"x": 1}, "status": {"seed": 7, "receipts": [1]}});
        prune_unapplied(
            &mut doc,
            &managed,
            "ctl",
            ApplyScope::Main { has_status: true },
            &json!({"spec": {}}),
        );
        assert_eq!(
            doc,
            json!({"spec": {}, "status": {"seed": 7, "receipts": [1]}})
        );
        // A status apply that leaves seed and targets out removes them, not the agent's field.
        let mut doc =
            json!({"status": {"seed": 7, "targets": [1], "phase": "Pending", "receipts": [1]}});
        prune_unapplied(
            &mut doc,
            &managed,
            "ctl",
            ApplyScope::Status,
            &json!({"status": {"phase": "Running"}}),
        );
        assert_eq!(
            doc,
            json!({"status": {"phase": "Pending", "receipts": [1]}})
        );
        // A manager with no earlier apply removes nothing.
        let mut doc = json!({"status": {"seed": 7}});
        prune_unapplied(
            &mut doc,
            &managed,
            "new",
            ApplyScope::Status,
            &json!({"status": {}}),
        );
        assert_eq!(doc, json!({"status": {"seed": 7}}));
    }
}
