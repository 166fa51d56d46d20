//! Events: one storage, two API versions.
//!
//! In a real cluster `core/v1` Events and `events.k8s.io/v1` Events are the same objects: one
//! etcd resource (`events`) served in two shapes, converted field by field on every read and
//! write. That is what makes an Event published through kube's `Recorder` (events.k8s.io/v1)
//! show in `kubectl get events` and `kubectl describe` (core/v1). This module does the same:
//! Events are stored once, in core/v1 shape, under the core key; requests through
//! events.k8s.io/v1 convert on the way in ([`to_core`]) and out ([`from_core`]).
//!
//! The conversion is the real server's (`pkg/apis/events/v1/conversion.go`): a renaming, no
//! more. In particular it does not fill core's `count`, `firstTimestamp`, `lastTimestamp` or
//! `source` from `series`, `eventTime` or `reportingController` — a client reading core/v1 sees
//! them empty, as it would in a cluster. The fallbacks live where the real server has them: in
//! the Table printer ([`table`]: LAST SEEN from `series.lastObservedTime` or `eventTime`, COUNT
//! from `series.count`, SOURCE from `reportingComponent`) and in the `source` field selector.
//!
//! Field selectors are those of the real server: core/v1 accepts `involvedObject.*`, `reason`,
//! `reportingComponent`, `source` and `type`; events.k8s.io/v1 accepts `regarding.*` and
//! `reportingController` (mapped to the core labels), `reason`, `source` and `type`; both accept
//! `metadata.name` and `metadata.namespace`.
//!
//! Simplification: no validation of Event bodies (the real server requires `eventTime`,
//! `reportingController` and friends on events.k8s.io/v1 creates, and an involved object in the
//! Event's namespace).

use super::resources::{ResKey, ResourceDef};
use super::table::human_age;
use serde_json::{Map, Value, json};

/// (events.k8s.io/v1 name, core/v1 name) of every field whose name differs. Every other field
/// (`metadata`, `eventTime`, `series`, `related`, `action`, `reason`, `type`,
/// `reportingInstance`) has the same name and shape in both.
const RENAMED: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

const INVOLVED_OBJECT_FIELDS: [&str; 7] = [
    "kind",
    "namespace",
    "name",
    "uid",
    "apiVersion",
    "resourceVersion",
    "fieldPath",
];

/// Whether `def` is one of the two Event resources.
pub fn is_event(def: &ResourceDef) -> bool {
    def.plural == "events" && matches!(def.group.as_str(), "" | "events.k8s.io")
}

/// Whether `def` is events.k8s.io Events (stored as core Events).
pub fn is_events_v1(def: &ResourceDef) -> bool {
    def.group == "events.k8s.io" && def.plural == "events"
}

/// Where both Event resources are stored.
pub fn storage_key() -> ResKey {
    ResKey {
        group: String::new(),
        plural: "events".into(),
    }
}

/// Renames the top-level fields of `obj` by `pairs` (from, to). A field that only exists under
/// the other version's name is dropped, as decoding into the other version's type would.
fn rename(obj: Value, pairs: impl Iterator<Item = (&'static str, &'static str)> + Clone) -> Value {
    let Value::Object(fields) = obj else {
        return obj;
    };
    let mut out = Map::new();
    for (key, value) in fields {
        if let Some((_, to)) = pairs.clone().find(|(from, _)| *from == key) {
            out.insert(to.to_string(), value);
        } else if !pairs.clone().any(|(_, to)| to == key) {
            out.insert(key, value);
        }
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in core/v1 shape.
pub fn to_core(obj: Value) -> Value {
    let mut core = rename(obj, RENAMED.iter().copied());
    core["apiVersion"] = json!("v1");
    core
}

/// A core/v1 Event in events.k8s.io/v1 shape.
pub fn from_core(obj: Value) -> Value {
    let mut v1 = rename(obj, RENAMED.iter().map(|(v1, core)| (*core, *v1)));
    v1["apiVersion"] = json!("events.k8s.io/v1");
    v1
}

/// A request body for `def` in the shape it is stored in.
pub fn to_storage(def: &ResourceDef, obj: Value) -> Value {
    if is_events_v1(def) { to_core(obj) } else { obj }
}

/// A stored object in the shape `def` serves.
pub fn from_storage(def: &ResourceDef, obj: Value) -> Value {
    if is_events_v1(def) {
        from_core(obj)
    } else {
        obj
    }
}

/// The core/v1 field label a field selector `label` on `def` stands for, or `None` when the
/// real server rejects it ("field label not supported").
pub fn selector_label(def: &ResourceDef, label: &str) -> Option<String> {
    if matches!(
        label,
        "metadata.name" | "metadata.namespace" | "reason" | "source" | "type"
    ) {
        return Some(label.to_string());
    }
    let (prefix, component) = if is_events_v1(def) {
        ("regarding.", "reportingController")
    } else {
        ("involvedObject.", "reportingComponent")
    };
    if label == component {
        return Some("reportingComponent".into());
    }
    label
        .strip_prefix(prefix)
        .filter(|f| INVOLVED_OBJECT_FIELDS.contains(f))
        .map(|f| format!("involvedObject.{f}"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// The value of a core field label of a stored (core/v1) Event; `source` is the component,
/// or the reporting controller when there is none (as `ToSelectableFields` does).
pub fn field(obj: &Value, label: &str) -> String {
    if label == "source" {
        let component = text(&obj["source"]["component"]);
        return if component.is_empty() {
            text(&obj["reportingComponent"]).to_string()
        } else {
            component.to_string()
        };
    }
    let mut current = obj;
    for part in label.split('.') {
        current = &current[part];
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `translateTimestampSince`: a human age, `<unknown>` for an absent time.
fn since(time: &Value) -> String {
    match chrono::DateTime::parse_from_rfc3339(text(time)) {
        Ok(t) => human_age((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

/// One Table row's cells, as the real server's event printer computes them (wide form;
/// kubectl hides the priority-1 columns unless `-o wide`).
fn cells(event: &Value) -> Vec<Value> {
    let first = if event["firstTimestamp"].is_string() {
        since(&event["firstTimestamp"])
    } else {
        since(&event["eventTime"])
    };
    let mut last = if event["lastTimestamp"].is_string() {
        since(&event["lastTimestamp"])
    } else {
        first.clone()
    };
    let mut count = event["count"].as_i64().unwrap_or(0);
    if event["series"].is_object() {
        last = since(&event["series"]["lastObservedTime"]);
        count = event["series"]["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        // Singleton events written through events.k8s.io have no count.
        count = 1;
    }
    let involved = &event["involvedObject"];
    let kind = text(&involved["kind"]).to_lowercase();
    let target = match text(&involved["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = first_non_empty(
        text(&event["source"]["component"]),
        text(&event["reportingComponent"]),
    );
    let instance = first_non_empty(
        text(&event["source"]["host"]),
        text(&event["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(text(&event["type"])),
        json!(text(&event["reason"])),
        json!(target),
        json!(text(&involved["fieldPath"])),
        json!(source),
        json!(text(&event["message"]).trim()),
        json!(first),
        json!(count),
        json!(text(&event["metadata"]["name"])),
    ]
}

/// The Table of Events (both versions print alike, from the core shape).
pub fn table(objs: &[Value], rv: &str, cont: Option<&str>) -> Value {
    let column = |name: &str, priority: i64, description: &str| {
        json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" },
               "description": description, "priority": priority})
    };
    let columns = vec![
        column(
            "Last Seen",
            0,
            "The time at which the most recent occurrence of this event was recorded.",
        ),
        column(
            "Type",
            0,
            "Type of this event (Normal, Warning), new types could be added in the future",
        ),
        column(
            "Reason",
            0,
            "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
        ),
        column("Object", 0, "The object that this event is about."),
        column(
            "Subobject",
            1,
            "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
        ),
        column(
            "Source",
            1,
            "The component reporting this event. Should be a short machine understandable string.",
        ),
        column(
            "Message",
            0,
            "A human-readable description of the status of this operation.",
        ),
        column(
            "First Seen",
            1,
            "The time at which the event was first recorded.",
        ),
        column("Count", 1, "The number of times this event has occurred."),
        column("Name", 1, "Name must be unique within a namespace."),
    ];
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let core = if text(&o["apiVersion"]) == "events.k8s.io/v1" {
                to_core(o.clone())
            } else {
                o.clone()
            };
            json!({
                "cells": cells(&core),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o["metadata"]},
            })
        })
        .collect();
    let mut md = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md,
           "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::apiserver::resources::Registry;

    fn v1_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.17a", "namespace": "shop"},
            "eventTime": "2025-01-01T00:00:00.000000Z",
            "series": {"count": 3, "lastObservedTime": "2025-01-01T00:05:00.000000Z"},
            "reportingController": "faultline.dev/controller",
            "reportingInstance": "faultline-0",
            "action": "Inject", "reason": "FaultInjected", "type": "Normal",
            "regarding": {"kind": "Pod", "name": "web-1", "namespace": "shop", "uid": "u1"},
            "related": {"kind": "ChaosExperiment", "name": "x"},
            "note": "latency 100ms on web-1",
            "deprecatedCount": 2,
            "deprecatedFirstTimestamp": "2025-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2025-01-01T00:01:00Z",
            "deprecatedSource": {"component": "old", "host": "node-1"},
        })
    }

    #[test]
    fn conversion_renames_fields_both_ways_and_round_trips() {
        let core = to_core(v1_event());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web-1");
        assert_eq!(core["message"], "latency 100ms on web-1");
        assert_eq!(core["reportingComponent"], "faultline.dev/controller");
        assert_eq!(core["reportingInstance"], "faultline-0");
        assert_eq!(
            core["source"],
            json!({"component": "old", "host": "node-1"})
        );
        assert_eq!(core["count"], 2);
        assert_eq!(core["firstTimestamp"], "2025-01-01T00:00:00Z");
        assert_eq!(core["lastTimestamp"], "2025-01-01T00:01:00Z");
        for same in [
            "eventTime",
            "series",
            "related",
            "action",
            "reason",
            "type",
            "metadata",
        ] {
            assert_eq!(core[same], v1_event()[same], "{same}");
        }
        for gone in [
            "regarding",
            "note",
            "reportingController",
            "deprecatedCount",
        ] {
            assert!(core.get(gone).is_none(), "{gone}");
        }
        assert_eq!(from_core(core), v1_event());
    }

    #[test]
    fn conversion_does_not_invent_deprecated_fields() {
        // As in the real server: a Recorder's event has no count, timestamps or source in core.
        let core = to_core(json!({"eventTime": "2025-01-01T00:00:00.000000Z",
            "series": {"count": 3}, "reportingController": "c", "note": "n"}));
        for absent in ["count", "firstTimestamp", "lastTimestamp", "source"] {
            assert!(core.get(absent).is_none(), "{absent}");
        }
        // A field of the other version in a body is not smuggled through.
        let core = to_core(json!({"message": "from the wrong version", "note": "right"}));
        assert_eq!(core["message"], "right");
    }

    #[test]
    fn field_selectors_are_the_real_servers() {
        let registry = Registry::with_builtins();
        let core = registry.find("", "v1", "events").unwrap();
        let v1 = registry.find("events.k8s.io", "v1", "events").unwrap();
        let label = |def, l| selector_label(def, l);
        assert_eq!(
            label(core, "involvedObject.name").as_deref(),
            Some("involvedObject.name")
        );
        assert_eq!(
            label(core, "reportingComponent").as_deref(),
            Some("reportingComponent")
        );
        assert_eq!(label(core, "regarding.name"), None);
        assert_eq!(label(core, "involvedObject.nope"), None);
        assert_eq!(
            label(v1, "regarding.uid").as_deref(),
            Some("involvedObject.uid")
        );
        assert_eq!(
            label(v1, "reportingController").as_deref(),
            Some("reportingComponent")
        );
        assert_eq!(label(v1, "involvedObject.name"), None);
        assert_eq!(label(v1, "note"), None);
        for both in ["reason", "type", "source", "metadata.name"] {
            assert!(
                label(core, both).is_some() && label(v1, both).is_some(),
                "{both}"
            );
        }
    }

    #[test]
    fn source_falls_back_to_the_reporting_controller() {
        let recorded = to_core(json!({"reportingController": "faultline", "reason": "R"}));
        assert_eq!(field(&recorded, "source"), "faultline");
        assert_eq!(field(&recorded, "reason"), "R");
        let legacy = json!({"source": {"component": "kubelet"}, "reportingComponent": "x"});
        assert_eq!(field(&legacy, "source"), "kubelet");
        assert_eq!(field(&recorded, "involvedObject.name"), "");
    }

    #[test]
    fn table_rows_use_series_and_reporting_controller() {
        let rendered = table(&[v1_event()], "7", None);
        let cells = rendered["rows"][0]["cells"].as_array().unwrap().clone();
        assert_eq!(
            rendered["columnDefinitions"].as_array().unwrap().len(),
            cells.len()
        );
        assert_eq!(cells[1], "Normal");
        assert_eq!(cells[2], "FaultInjected");
        assert_eq!(cells[3], "pod/web-1");
        // deprecatedSource wins over the reporting controller when it is set.
        assert_eq!(cells[5], "old, node-1");
        assert_eq!(cells[6], "latency 100ms on web-1");
        // The series count wins over deprecatedCount.
        assert_eq!(cells[8], 3);
        assert_eq!(cells[9], "web.17a");
        let bare = json!({"apiVersion": "events.k8s.io/v1", "metadata": {"name": "e"},
            "reportingController": "faultline", "reportingInstance": "pod-0",
            "regarding": {"kind": "Node"}, "eventTime": chrono::Utc::now().to_rfc3339()});
        let cells = table(&[bare], "7", None)["rows"][0]["cells"].clone();
        assert_eq!(cells[3], "node");
        assert_eq!(cells[5], "faultline, pod-0");
        assert_eq!(cells[8], 1, "a singleton counts once");
        assert!(cells[0].as_str().unwrap().ends_with('s'), "{}", cells[0]);
    }
}
