//! The first thing a real server does with a server-side apply of a custom resource: turn the
//! apply configuration into a typed value of the CRD's schema (structured-merge-diff). What does
//! not fit is a 500, before any validation: `failed to create typed patch object (ns/name;
//! group/version, Kind=K): .spec.x: field not declared in schema`. Whatever
//! `fieldValidation` says.
//!
//! It refuses fields the schema does not declare, scalars of the wrong kind and two entries of a
//! list-map with the same key, naming list-map entries by key (`.spec.stages[name="one"]`). A
//! mapping is read up to its first undeclared field (the real server stops there too, in Go's
//! map order, which is random: here it is sorted, so one undeclared field per mapping is what
//! both report the same way).

use serde_json::{Map, Value};

use crate::crd_validation::formats::GoNumber;

/// The errors of the apply configuration `value` against `schema`, as structured-merge-diff
/// words them; empty when the typed patch can be made.
pub fn errors(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, value, String::new(), &mut out);
    out
}

/// The message of the 500 for `errors` (one, or a list).
pub fn message(
    namespace: &str,
    name: &str,
    api_version: &str,
    kind: &str,
    errors: &[String],
) -> String {
    let detail = match errors {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    format!(
        "failed to create typed patch object ({namespace}/{name}; {api_version}, Kind={kind}): {detail}"
    )
}

fn walk(schema: &Value, value: &Value, path: String, out: &mut Vec<String>) {
    let Some(s) = schema.as_object() else { return };
    if value.is_null()
        || s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
            && !s.contains_key("properties")
    {
        return;
    }
    let at = |message: String| format!("{path}: {message}");
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            out.push(at(format!("expected any scalar, got {}", pointer(value))));
        }
        return;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => match value {
            Value::Object(map) => walk_map(s, map, &path, out),
            other => out.push(at(format!("expected map, got {}", pointer(other)))),
        },
        Some("array") => match value {
            Value::Array(items) => walk_list(s, items, &path, out),
            other => out.push(at(format!("expected list, got {}", pointer(other)))),
        },
        Some("string") if !value.is_string() => {
            out.push(at(format!("expected string, got {}", unstructured(value))));
        }
        Some("integer" | "number") if !value.is_number() => out.push(at(format!(
            "expected numeric (int or float), got {}",
            go_type(value)
        ))),
        Some("boolean") if !value.is_boolean() => {
            out.push(at(format!("expected boolean, got {}", pointer(value))));
        }
        _ => {}
    }
}

fn walk_map(s: &Map<String, Value>, map: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let properties = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || s.get("additionalProperties") == Some(&Value::Bool(true));
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let child = format!("{path}.{key}");
        // apiVersion, kind and metadata of the root are the server's own.
        if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match properties.and_then(|p| p.get(key)).or(additional) {
            Some(child_schema) => walk(child_schema, &map[key], child, out),
            None if preserve => {}
            None => {
                out.push(format!("{child}: field not declared in schema"));
                return;
            }
        }
    }
}

fn walk_list(s: &Map<String, Value>, items: &[Value], path: &str, out: &mut Vec<String>) {
    let item_schema = s.get("items").cloned().unwrap_or(Value::Null);
    let keys: Option<Vec<&str>> =
        (s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map")).then(|| {
            s.get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        });
    let mut seen: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let element = match &keys {
            None => format!("[{i}]"),
            Some(keys) => {
                let parts: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{k}={}", item.get(*k).map(key_value).unwrap_or_default()))
                    .collect();
                let element = format!("[{}]", parts.join(","));
                if seen.contains(&element) {
                    out.push(format!("{path}: duplicate entries for key {element}"));
                }
                seen.push(element.clone());
                element
            }
        };
        walk(&item_schema, item, format!("{path}{element}"), out);
    }
}

/// A list-map key's value as structured-merge-diff prints it (`"one"`, `5`).
fn key_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// Go's `%T` of the value structured-merge-diff holds.
fn go_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Bool(_) => "bool",
        Value::Number(n) => match GoNumber::of(n) {
            GoNumber::Int(_) => "int64",
            GoNumber::Float(_) => "float64",
        },
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        Value::Null => "<nil>",
    }
}

/// Go's `%v` of structured-merge-diff's `*valueUnstructured`: `&{60}`.
fn pointer(value: &Value) -> String {
    format!("&{{{}}}", go_plain(value))
}

/// Go's `%#v` of structured-merge-diff's `*valueUnstructured`:
/// `&value.valueUnstructured{Value:60}`.
fn unstructured(value: &Value) -> String {
    let inner = match value {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => format!("[]interface {{}}{{{}}}", go_plain(value)),
        Value::Object(_) => format!("map[string]interface {{}}{{{}}}", go_plain(value)),
        other => go_plain(other),
    };
    format!("&value.valueUnstructured{{Value:{inner}}}")
}

fn go_plain(value: &Value) -> String {
    match value {
        Value::Number(n) => GoNumber::of(n).go_display(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(go_plain).collect::<Vec<_>>().join(" "),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}:{}", go_plain(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_wrong_scalars_and_duplicate_keys_are_named_as_the_server_names_them() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "duration": {"type": "string"},
            "percent": {"type": "number"},
            "stages": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                       "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }}}});
        assert_eq!(
            errors(&schema, &json!({"spec": {"duration": 60, "percent": "5"}})),
            [
                ".spec.duration: expected string, got &value.valueUnstructured{Value:60}",
                ".spec.percent: expected numeric (int or float), got string",
            ]
        );
        assert_eq!(
            errors(
                &schema,
                &json!({"spec": {"stages": [{"name": "one"}, {"name": "one", "aproval": true}]}})
            ),
            [
                ".spec.stages: duplicate entries for key [name=\"one\"]",
                ".spec.stages[name=\"one\"].aproval: field not declared in schema",
            ]
        );
        assert_eq!(
            message(
                "default",
                "x",
                "faultline.dev/v1alpha1",
                "ChaosExperiment",
                &[".a: b".into()]
            ),
            "failed to create typed patch object (default/x; faultline.dev/v1alpha1, Kind=ChaosExperiment): .a: b"
        );
    }
}
