//! `meta.k8s.io/v1` Table rendering for kubectl (`Accept: application/json;as=Table;...`).
//!
//! Custom resources use their CRD's `additionalPrinterColumns` (JSONPath subset `.a.b`,
//! `.a[0].b`), framed by NAME and, unless a column already shows it, AGE. Built-ins get a
//! reasonable default (NAME, AGE; pods NAME/READY/STATUS/RESTARTS/AGE; namespaces NAME/STATUS/AGE;
//! deployments NAME/READY/UP-TO-DATE/AVAILABLE/AGE), simpler than the real server's printers.
//! Like the real server, `date` cells (AGE and CRD columns of type date) are rendered as a human
//! age (`5m`, `3h2m`) at the time of the response.

use super::resources::{PrinterColumn, ResourceDef};
use serde_json::{Value, json};

fn col(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

/// Evaluate the simple JSONPath subset printer columns use.
pub fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur = obj;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (field, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let n: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(n)?;
        }
    }
    Some(cur)
}

/// kubectl's short human duration (the shape of apimachinery's `HumanDuration`).
pub fn human_age(secs: i64) -> String {
    if secs < 0 {
        return "0s".into();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    let with = |a: i64, ua: &str, b: i64, ub: &str| {
        if b == 0 {
            format!("{a}{ua}")
        } else {
            format!("{a}{ua}{b}{ub}")
        }
    };
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        with(m, "m", secs % 60, "s")
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        with(h, "h", m % 60, "m")
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        with(d, "d", h % 24, "h")
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        with(d / 365, "y", d % 365, "d")
    }
}

fn age_cell(v: Option<&Value>) -> Value {
    let Some(ts) = v.and_then(Value::as_str) else {
        return Value::Null;
    };
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => json!(human_age(
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()
        )),
        Err(_) => json!("<invalid>"),
    }
}

fn cell(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) => json!(s),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.clone(),
        Some(other) => json!(other.to_string()),
    }
}

fn custom_columns(cols: &[PrinterColumn]) -> (Vec<Value>, bool) {
    let has_age = cols
        .iter()
        .any(|c| c.json_path.trim() == ".metadata.creationTimestamp");
    let defs = cols
        .iter()
        .map(|c| col(&c.name, &c.type_, &c.format, &c.description, c.priority))
        .collect();
    (defs, has_age)
}

fn pod_cells(obj: &Value) -> Vec<Value> {
    let containers = obj["spec"]["containers"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    let statuses = obj["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ready = statuses
        .iter()
        .filter(|s| s["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    let status = if obj["metadata"].get("deletionTimestamp").is_some() {
        "Terminating".to_string()
    } else {
        obj["status"]["reason"]
            .as_str()
            .or(obj["status"]["phase"].as_str())
            .unwrap_or("Unknown")
            .to_string()
    };
    vec![
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts),
    ]
}

/// Column definitions and per-object cells (excluding NAME and AGE) for a resource.
fn columns(def: &ResourceDef, version: &str) -> (Vec<Value>, bool) {
    if let Some(v) = def.crd_version(version) {
        return custom_columns(&v.printer_columns);
    }
    let c = |n: &str, t: &str| col(n, t, "", "", 0);
    let cols = match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => vec![
            c("Ready", "string"),
            c("Status", "string"),
            c("Restarts", "integer"),
        ],
        ("", "namespaces") | ("", "nodes") => vec![c("Status", "string")],
        ("apps", "deployments") => vec![
            c("Ready", "string"),
            c("Up-to-date", "integer"),
            c("Available", "integer"),
        ],
        ("", "configmaps") | ("", "secrets") => vec![c("Data", "integer")],
        _ => vec![],
    };
    (cols, false)
}

fn cells(def: &ResourceDef, version: &str, obj: &Value) -> Vec<Value> {
    if let Some(v) = def.crd_version(version) {
        return v
            .printer_columns
            .iter()
            .map(|c| {
                let raw = json_path(obj, &c.json_path);
                if c.type_ == "date" {
                    age_cell(raw)
                } else {
                    cell(raw)
                }
            })
            .collect();
    }
    match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => pod_cells(obj),
        ("", "namespaces") => vec![cell(obj["status"].get("phase"))],
        ("", "nodes") => {
            let ready = obj["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            vec![json!(match ready {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "Unknown",
            })]
        }
        ("apps", "deployments") => {
            let s = &obj["status"];
            let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            vec![
                json!(format!(
                    "{}/{want}",
                    s["readyReplicas"].as_i64().unwrap_or(0)
                )),
                json!(s["updatedReplicas"].as_i64().unwrap_or(0)),
                json!(s["availableReplicas"].as_i64().unwrap_or(0)),
            ]
        }
        ("", "configmaps") | ("", "secrets") => {
            let n = obj["data"].as_object().map(|m| m.len()).unwrap_or(0)
                + obj["binaryData"].as_object().map(|m| m.len()).unwrap_or(0);
            vec![json!(n)]
        }
        _ => vec![],
    }
}

/// Render objects as a Table.
pub fn table(
    def: &ResourceDef,
    version: &str,
    objs: &[Value],
    rv: &str,
    cont: Option<&str>,
) -> Value {
    if super::events::is_event(def) {
        return super::events::table(objs, rv, cont);
    }
    let (mid, has_age) = columns(def, version);
    let mut defs = vec![col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )];
    defs.extend(mid);
    if !has_age {
        defs.push(col(
            "Age",
            "date",
            "",
            "CreationTimestamp of the object.",
            0,
        ));
    }
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cs = vec![cell(o["metadata"].get("name"))];
            cs.extend(cells(def, version, o));
            if !has_age {
                cs.push(age_cell(o["metadata"].get("creationTimestamp")));
            }
            json!({
                "cells": cs,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    let mut md = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"spec": {"items": [{"b": 1}, {"b": 2}]}, "status": {"phase": "Running"}});
        assert_eq!(json_path(&o, ".status.phase"), Some(&json!("Running")));
        assert_eq!(json_path(&o, ".spec.items[1].b"), Some(&json!(2)));
        assert_eq!(json_path(&o, "{.spec.items[0].b}"), Some(&json!(1)));
        assert_eq!(json_path(&o, ".spec.nope"), None);
        assert_eq!(json_path(&o, ".spec.items[x]"), None);
    }

    #[test]
    fn ages() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(125), "2m5s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(3 * 3600 + 120), "3h2m");
        assert_eq!(human_age(10 * 3600), "10h");
        assert_eq!(human_age(3 * 86400), "3d");
        assert_eq!(human_age(800 * 86400), "2y70d");
    }
}
