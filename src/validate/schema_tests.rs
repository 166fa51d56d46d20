//! Unit tests for the structural schema check.

use serde_json::json;

use super::*;

fn check(schema: Value, value: Value) -> Vec<String> {
    let mut out = Vec::new();
    SchemaChecker::new().check(&schema, &value, "spec", &mut out);
    let mut found: Vec<String> = out
        .into_iter()
        .map(|f| format!("{}: {}", f.path, f.message))
        .collect();
    found.sort();
    found
}

fn object_schema() -> Value {
    json!({
        "type": "object",
        "required": ["duration"],
        "properties": {
            "duration": {"type": "string", "maxLength": 5},
            "mode": {"type": "string", "enum": ["One", "All", "Fixed"]},
            "value": {"type": "integer", "format": "int32", "minimum": 1.0},
            "faults": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "object"}},
            "rate": {"type": "string", "pattern": "^[0-9]+mbit$"},
            "startAt": {"type": "string", "format": "date-time", "nullable": true},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        }
    })
}

#[test]
fn unknown_fields_are_reported_with_the_closest_known_name() {
    let found = check(object_schema(), json!({"duratoin": "5s"}));
    assert_eq!(
        found,
        [
            "spec.duration: required field \"duration\" is missing",
            "spec.duratoin: unknown field \"duratoin\" (did you mean \"duration\"?)",
        ]
    );
    let found = check(object_schema(), json!({"duration": "5s", "zzzzzz": 1}));
    assert!(
        found[0].contains("known fields: duration, faults, labels"),
        "{found:?}"
    );
}

#[test]
fn additional_properties_accept_any_key_but_check_the_value() {
    let found = check(
        object_schema(),
        json!({"duration": "5s", "labels": {"a.b/c": 5}}),
    );
    assert_eq!(
        found,
        [
            "spec.labels[a.b/c]: must be a string, not a number (YAML read 5; put it in quotes to keep it a string)"
        ]
    );
}

#[test]
fn types_enums_bounds_lengths_counts_patterns_and_formats() {
    let found = check(
        object_schema(),
        json!({
            "duration": "123456",
            "mode": "fixed",
            "value": 0,
            "faults": [],
            "rate": "1gbit",
            "startAt": "tomorrow",
        }),
    );
    assert_eq!(
        found,
        [
            "spec.duration: is 6 characters long; at most 5 are allowed",
            "spec.faults: must list at least 1 entry",
            "spec.mode: \"fixed\" is not one of One, All, Fixed (did you mean \"Fixed\"?)",
            "spec.rate: \"1gbit\" does not match the pattern ^[0-9]+mbit$",
            "spec.startAt: \"tomorrow\" is not an RFC 3339 time (try 2026-03-01T09:00:00Z)",
            "spec.value: 0 is too small; it must be at least 1",
        ]
    );
    let found = check(
        object_schema(),
        json!({"duration": 5, "value": "3", "faults": [{}, {}, {}]}),
    );
    assert_eq!(
        found,
        [
            "spec.duration: must be a string, not a number (YAML read 5; put it in quotes to keep it a string)",
            "spec.faults: has 3 entries; at most 2 are allowed",
            "spec.value: must be a whole number, not a string (remove the quotes)",
        ]
    );
    let found = check(
        object_schema(),
        json!({"duration": null, "value": 3000000000u64, "startAt": null}),
    );
    assert_eq!(
        found,
        [
            "spec.duration: has no value, and it is required: give it a string",
            "spec.value: 3000000000 does not fit this field (a int32: -2147483648 to 2147483647)",
        ]
    );
}

#[test]
fn edit_distance_counts_transpositions_as_one_edit() {
    assert_eq!(edit_distance("duratoin", "duration"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(
        closest("labelselector", &["labelSelector", "mode"]),
        Some("labelSelector")
    );
    assert_eq!(closest("xyz", &["labelSelector", "mode"]), None);
}
