//! `meta.k8s.io/v1` Table rendering for kubectl (`Accept: application/json;as=Table;...`).
//!
//! Custom resources use their CRD's `additionalPrinterColumns` (JSONPath subset `.a.b`,
//! `.a[0].b`), framed by NAME and, unless a column already shows it, AGE. Built-ins get the
//! real server's columns (see `printers`), including the `-o wide` ones.
//! Like the real server, `date` cells (AGE and CRD columns of type date) are rendered as a human
//! age (`5m`, `3h2m`) at the time of the response.

use super::printers;
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

/// Column definitions between NAME and AGE, whether a CRD column shows the age, and the
/// columns after AGE.
fn columns(def: &ResourceDef, version: &str) -> (Vec<Value>, bool, Vec<Value>) {
    if let Some(v) = def.crd_version(version) {
        let (cols, has_age) = custom_columns(&v.printer_columns);
        return (cols, has_age, vec![]);
    }
    let defs = |cols: Vec<printers::Column>| -> Vec<Value> {
        cols.into_iter()
            .map(|(name, type_, priority)| col(name, type_, "", "", priority))
            .collect()
    };
    let (mid, after) = printers::columns(&def.group, &def.plural);
    (defs(mid), false, defs(after))
}

/// Cells between NAME and AGE, and after AGE.
fn cells(def: &ResourceDef, version: &str, obj: &Value) -> (Vec<Value>, Vec<Value>) {
    if let Some(v) = def.crd_version(version) {
        let cells = v
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
        return (cells, vec![]);
    }
    printers::cells(&def.group, &def.plural, obj)
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
    let (mid, has_age, after) = columns(def, version);
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
    defs.extend(after);
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cs = vec![cell(o["metadata"].get("name"))];
            let (mid, after) = cells(def, version, o);
            cs.extend(mid);
            if !has_age {
                cs.push(age_cell(o["metadata"].get("creationTimestamp")));
            }
            cs.extend(after);
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
