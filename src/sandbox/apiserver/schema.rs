//! Custom resources against their CRD's `openAPIV3Schema`, in the order and the words of
//! kube-apiserver v1.36:
//!
//! 1. decoding: fields the schema does not declare are pruned (and reported to the caller, who
//!    answers them as the real server does: a 400 strict decoding error, a warning, or nothing);
//!    a null in a field that is not nullable is dropped (from a request body) or defaulted (from
//!    a server-side apply, which keeps a null without default: the schema then refuses it);
//!    defaults are applied;
//! 2. validation: the object's metadata (the caller's), the schema ([`super::openapi`]: types,
//!    formats, enums, bounds, lengths, patterns, combinators) and `x-kubernetes-list-type`
//!    uniqueness, all in one answer;
//! 3. the CEL rules (`x-kubernetes-validations`, through [`LocalRules`]: kube-cel, reading IPs and
//!    durations as Go does), unless step 2 found an error that blocks them (a wrong type, a
//!    missing required field, a value not in the enum, too long, too many): then none runs and
//!    the answer says `some validation rules were not checked because the object was invalid`.
//!
//! Messages are the real server's: `Invalid value: "fast": must be a duration ...` for a rule on
//! a string, no value at all for a rule on an object, `Required value: ...` and `Forbidden: ...`
//! for rules with those reasons. Transition rules (`oldSelf`) are evaluated on updates when
//! kube-cel can, and skipped on create as the real server does.
//!
//! Not done: CEL's runtime cost limit (a rule that is cheap to estimate and dear to run is
//! rare); `anyOf`/`oneOf` pick the first failing branch (see `openapi`).

use super::errors::Cause;
use super::openapi::{self, go_value};
use crate::api::duration_bounds::judge_duration_rule;
use crate::crd_validation::cel::LocalRules;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Where an object being written comes from: what happens to its nulls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A create, an update or a merge / JSON patch: nulls in fields that are not nullable are
    /// dropped (then defaulted).
    Body,
    /// A server-side apply: a null is defaulted when the field has a default, kept otherwise.
    Apply,
}

/// What happened to an object while it was processed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Field errors (422 Invalid), including the metadata errors the caller passed in.
    pub causes: Vec<Cause>,
    /// Fields that were not declared and have been pruned, as the real server names them in a
    /// strict decoding error (`spec.faults[0].bogus`), sorted.
    pub unknown_fields: Vec<String>,
}

/// The error after which the real server runs no CEL rule.
const NOT_CHECKED: &str = "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

/// Errors that stop the CEL rules (apiextensions' `hasBlockingErr`).
fn blocks_rules(cause: &Cause) -> bool {
    matches!(
        cause.reason.as_str(),
        "FieldValueNotSupported"
            | "FieldValueRequired"
            | "FieldValueTooLong"
            | "FieldValueTooMany"
            | "FieldValueTypeInvalid"
    )
}

/// Decode, default, prune and validate `obj` in place against `schema` (a CRD version's
/// `openAPIV3Schema`), then evaluate its CEL rules. `meta` are the metadata errors the caller
/// found; `old` enables transition rules on update.
pub fn process(
    schema: &Value,
    obj: &mut Value,
    old: Option<&Value>,
    source: Source,
    meta: Vec<Cause>,
) -> Outcome {
    let mut unknown_fields = Vec::new();
    decode(schema, obj, "", source, &mut unknown_fields);
    unknown_fields.sort();
    let mut causes = meta;
    causes.extend(openapi::validate(schema, obj, ""));
    list_types(schema, obj, "", &mut causes);
    if causes.iter().any(blocks_rules) {
        causes.push(Cause {
            field: "<nil>".into(),
            message: NOT_CHECKED.into(),
            reason: "FieldValueInvalid".into(),
        });
    } else {
        causes.extend(cel_causes(schema, obj, old));
    }
    Outcome {
        causes,
        unknown_fields,
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Prunes undeclared fields (recording them), handles nulls and applies defaults.
fn decode(schema: &Value, v: &mut Value, path: &str, source: Source, unknown: &mut Vec<String>) {
    let Some(s) = schema.as_object() else { return };
    match v {
        Value::Object(m) => decode_object(s, m, path, source, unknown),
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    decode(item_schema, item, &format!("{path}[{i}]"), source, unknown);
                }
            }
        }
        _ => {}
    }
}

fn decode_object(
    s: &Map<String, Value>,
    m: &mut Map<String, Value>,
    path: &str,
    source: Source,
    unknown: &mut Vec<String>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let preserve = s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        || additional == Some(&Value::Bool(true));
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        // The root's apiVersion, kind and metadata are the server's to handle.
        if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let child_schema = props
            .and_then(|p| p.get(&k))
            .or(additional.filter(|a| a.is_object()));
        let Some(child_schema) = child_schema else {
            if !preserve {
                m.remove(&k);
                unknown.push(join(path, &k));
            }
            continue;
        };
        if m.get(&k).is_some_and(Value::is_null)
            && child_schema.get("nullable") != Some(&Value::Bool(true))
            && props.is_some_and(|p| p.contains_key(&k))
        {
            match (source, child_schema.get("default")) {
                (_, Some(default)) => {
                    m.insert(k.clone(), default.clone());
                }
                (Source::Body, None) => {
                    m.remove(&k);
                    continue;
                }
                (Source::Apply, None) => continue,
            }
        }
        if let Some(child) = m.get_mut(&k) {
            decode(child_schema, child, &join(path, &k), source, unknown);
        }
    }
    if let Some(props) = props {
        for (k, ps) in props {
            if !m.contains_key(k)
                && let Some(d) = ps.get("default")
            {
                let mut d = d.clone();
                decode(ps, &mut d, &join(path, k), source, unknown);
                m.insert(k.clone(), d);
            }
        }
    }
}

/// `x-kubernetes-list-type`: `map` lists hold one entry per key, `set` lists no value twice
/// (the real server's words: `Duplicate value: {"name":"a"}`).
fn list_types(schema: &Value, v: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(s) = schema.as_object() else { return };
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let additional = s.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if let Some(cs) = props.and_then(|p| p.get(k)).or(additional) {
                    list_types(cs, child, &join(path, k), out);
                }
            }
        }
        Value::Array(items) => {
            let keys: Option<Vec<&str>> =
                match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => Some(
                        s.get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|keys| keys.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default(),
                    ),
                    Some("set") => Some(Vec::new()),
                    _ => None,
                };
            if let Some(keys) = keys {
                let mut seen: Vec<Value> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let identity = if keys.is_empty() {
                        item.clone()
                    } else {
                        let mut key = Map::new();
                        for k in &keys {
                            if let Some(v) = item.get(*k) {
                                key.insert((*k).to_string(), v.clone());
                            }
                        }
                        Value::Object(key)
                    };
                    if seen.contains(&identity) {
                        out.push(Cause {
                            field: format!("{path}[{i}]"),
                            message: format!("Duplicate value: {identity}"),
                            reason: "FieldValueDuplicate".into(),
                        });
                    } else {
                        seen.push(identity);
                    }
                }
            }
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    list_types(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// CEL rules compiled once per schema: compiling every rule of a CRD on each write made a status
/// patch of a ChaosExperiment cost ~10 ms. kube-cel's compiled rules are not `Send`, hence a
/// cache per thread.
fn compiled(schema: &Value, text: String) -> std::rc::Rc<LocalRules> {
    thread_local! {
        static COMPILED: std::cell::RefCell<HashMap<String, std::rc::Rc<LocalRules>>> =
            std::cell::RefCell::default();
    }
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        // Schemas change only when a CRD does: a small bound is plenty.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache
            .entry(text)
            .or_insert_with(|| std::rc::Rc::new(LocalRules::compile(schema)))
            .clone()
    })
}

fn cel_causes(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let text = schema.to_string();
    if !text.contains("x-kubernetes-validations") {
        return Vec::new();
    }
    let rules = compiled(schema, text);
    // kube-cel converts every node it walks (and everything under it) to CEL values, rules or
    // not: hand it only the parts a rule can see. A ChaosExperiment's status (hundreds of
    // target records, no rules) made every status write spend most of its time there.
    let mut with_rules = HashMap::new();
    let obj_view = rule_view(schema, obj, &mut with_rules, true);
    let old_view = old.map(|o| rule_view(schema, o, &mut with_rules, true));
    rules
        .evaluate(&obj_view, old_view.as_ref())
        .into_iter()
        .filter_map(|e| {
            let field = e.field_path.clone();
            // Durations as the real server reads them (Go's parser): kube-cel reads them as f64.
            let judged = obj_at(obj, &field)
                .and_then(Value::as_str)
                .and_then(|text| judge_duration_rule(&e.rule, text));
            let message = match judged {
                Some(Ok(())) => return None,
                // The rule's own message: fields with the same limits share a rule, not an
                // example.
                Some(Err(message)) => rule_message(schema, &field, &e.rule).unwrap_or(message),
                None => e.message.clone(),
            };
            // The value is the rule's own node, shown only when it is a scalar; a rule with a
            // fieldPath sits on an object above the field it names.
            let value = rule_node_value(schema, obj, &field, &e.rule);
            let (reason, message) = match e.reason.as_deref() {
                Some("FieldValueRequired") => {
                    ("FieldValueRequired", format!("Required value: {message}"))
                }
                Some("FieldValueForbidden") => {
                    ("FieldValueForbidden", format!("Forbidden: {message}"))
                }
                Some("FieldValueDuplicate") => (
                    "FieldValueDuplicate",
                    format!("Duplicate value: {}", value.as_deref().unwrap_or("\"\"")),
                ),
                _ => (
                    "FieldValueInvalid",
                    match &value {
                        Some(v) => format!("Invalid value: {v}: {message}"),
                        None => format!("Invalid value: {message}"),
                    },
                ),
            };
            tracing::debug!(field = %field, rule = %e.rule, "CEL rule rejected object");
            Some(Cause {
                field: if field.is_empty() {
                    "<nil>".into()
                } else {
                    field
                },
                message,
                reason: reason.into(),
            })
        })
        .collect()
}

/// The value of the node a rule sits on, as the real server prints it: `Some` for a scalar,
/// `None` for an object or a list (and for a rule that names a field below its node).
fn rule_node_value(schema: &Value, obj: &Value, field: &str, rule: &str) -> Option<String> {
    let node_schema = schema_at(schema, field)?;
    let own_rule = node_schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)?
        .iter()
        .any(|r| r.get("rule").and_then(Value::as_str) == Some(rule));
    if !own_rule {
        return None;
    }
    match obj_at(obj, field)? {
        Value::Object(_) | Value::Array(_) => None,
        scalar => Some(go_value(scalar)),
    }
}

/// The `message` the CRD gives `rule` on the node at `path`.
fn rule_message(schema: &Value, path: &str, rule: &str) -> Option<String> {
    schema_at(schema, path)?
        .get("x-kubernetes-validations")?
        .as_array()?
        .iter()
        .find(|r| r.get("rule").and_then(Value::as_str) == Some(rule))?
        .get("message")?
        .as_str()
        .map(str::to_owned)
}

/// The schema of the node at `path` (`spec.faults[0].networkLatency`).
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = schema;
    for part in path_parts(path) {
        current = match part {
            Part::Key(k) => current
                .get("properties")
                .and_then(|p| p.get(k))
                .or_else(|| {
                    current
                        .get("additionalProperties")
                        .filter(|a| a.is_object())
                })?,
            Part::Index(_) => current.get("items")?,
        };
    }
    Some(current)
}

enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_parts(path: &str) -> Vec<Part<'_>> {
    let mut parts = Vec::new();
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            parts.push(Part::Key(name));
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = index.trim_end_matches(']').parse() {
                parts.push(Part::Index(i));
            }
        }
    }
    parts
}

/// `obj` without the properties whose schema has no CEL rule anywhere below it. A node with a
/// rule keeps everything under it (its rules see the whole of `self`), but the root keeps only
/// what a root rule can see of metadata (`name`, `generateName`) and, unless a root rule names
/// it, drops `status`; so does a node whose schema is more than plain `properties` / `items`
/// (combinators, additionalProperties).
fn rule_view(
    schema: &Value,
    obj: &Value,
    with_rules: &mut HashMap<*const Value, bool>,
    root: bool,
) -> Value {
    let plain = ["allOf", "anyOf", "oneOf", "not", "additionalProperties"]
        .iter()
        .all(|k| schema.get(k).is_none());
    if root && let Some(rules) = schema.get("x-kubernetes-validations") {
        let mut view = obj.clone();
        if let Some(m) = view.as_object_mut() {
            if let Some(meta) = obj.get("metadata").and_then(Value::as_object) {
                let visible: Map<String, Value> = ["name", "generateName"]
                    .iter()
                    .filter_map(|k| Some((k.to_string(), meta.get(*k)?.clone())))
                    .collect();
                m.insert("metadata".into(), Value::Object(visible));
            }
            if !rules.to_string().contains("status")
                && let (Some(status), Some(status_schema)) = (
                    obj.get("status"),
                    schema.get("properties").and_then(|p| p.get("status")),
                )
            {
                m.insert(
                    "status".into(),
                    rule_view(status_schema, status, with_rules, false),
                );
            }
        }
        return view;
    }
    if schema.get("x-kubernetes-validations").is_some() || !plain {
        return obj.clone();
    }
    match (obj, schema.get("properties"), schema.get("items")) {
        (Value::Object(fields), Some(Value::Object(properties)), _) => Value::Object(
            fields
                .iter()
                .filter_map(|(key, value)| {
                    let child = properties.get(key)?;
                    has_rules(child, with_rules)
                        .then(|| (key.clone(), rule_view(child, value, with_rules, false)))
                })
                .collect(),
        ),
        (Value::Array(items), _, Some(child)) if has_rules(child, with_rules) => Value::Array(
            items
                .iter()
                .map(|item| rule_view(child, item, with_rules, false))
                .collect(),
        ),
        (Value::Array(_), _, Some(_)) => Value::Array(Vec::new()),
        _ => obj.clone(),
    }
}

/// Whether a CEL rule appears anywhere in `schema` (memoized by node for one write).
fn has_rules(schema: &Value, memo: &mut HashMap<*const Value, bool>) -> bool {
    let key = schema as *const Value;
    if let Some(known) = memo.get(&key) {
        return *known;
    }
    let found = match schema {
        Value::Object(m) => {
            m.contains_key("x-kubernetes-validations") || m.values().any(|v| has_rules(v, memo))
        }
        Value::Array(a) => a.iter().any(|v| has_rules(v, memo)),
        _ => false,
    };
    memo.insert(key, found);
    found
}

fn obj_at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = obj;
    for part in path_parts(path) {
        current = match part {
            Part::Key(k) => current.get(k)?,
            Part::Index(i) => current.get(i)?,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["target"],
                    "x-kubernetes-validations": [{"rule": "self.replicas <= 5", "message": "too many replicas"}],
                    "properties": {
                        "target": {"type": "string", "minLength": 1, "maxLength": 10, "pattern": "^[a-z]+$"},
                        "duration": {"type": "string", "default": "30s"},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "mode": {"type": "string", "enum": ["one", "all"]},
                        "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "maybe": {"type": "string", "nullable": true},
                        "port": {"x-kubernetes-int-or-string": true}
                    }
                },
                "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
            }
        })
    }

    fn run(obj: Value) -> (Value, Outcome) {
        let mut o = obj;
        let out = process(&schema(), &mut o, None, Source::Body, vec![]);
        (o, out)
    }

    #[test]
    fn defaults_and_pruning() {
        let (o, out) = run(
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"target": "abc", "foo": 1, "extra": {"any": [1]}, "labels": {"a": "b"}, "maybe": null, "port": "http"}}),
        );
        assert!(out.causes.is_empty(), "{:?}", out.causes);
        assert_eq!(out.unknown_fields, vec!["spec.foo"]);
        assert_eq!(o["spec"]["duration"], "30s");
        assert_eq!(o["spec"]["replicas"], 1);
        assert!(o["spec"].get("foo").is_none());
        assert_eq!(o["spec"]["extra"], json!({"any": [1]}));
        assert_eq!(o["metadata"]["name"], "a");
    }

    #[test]
    fn type_error_message() {
        let (_, out) = run(json!({"spec": {"target": "abc", "duration": 5}}));
        assert_eq!(out.causes.len(), 2, "{:?}", out.causes);
        assert_eq!(out.causes[0].field, "spec.duration");
        assert_eq!(
            out.causes[0].message,
            "Invalid value: \"integer\": spec.duration in body must be of type string: \"integer\""
        );
        // A wrong type blocks the CEL rules, and the answer says so.
        assert_eq!(out.causes[1].field, "<nil>");
        assert_eq!(out.causes[1].message, NOT_CHECKED);
    }

    #[test]
    fn value_checks() {
        let (_, out) = run(
            json!({"spec": {"target": "ABCDEFGHIJKL", "replicas": 0, "mode": "x", "tags": ["a", "b", "c"]}}),
        );
        let fields: Vec<&str> = out.causes.iter().map(|c| c.field.as_str()).collect();
        assert!(fields.contains(&"spec.target"));
        assert!(fields.contains(&"spec.replicas"));
        assert!(fields.contains(&"spec.mode"));
        assert!(fields.contains(&"spec.tags"));
        let (_, out) = run(json!({"spec": {}}));
        assert_eq!(out.causes[0].field, "spec.target");
        assert_eq!(out.causes[0].message, "Required value");
        let (_, out) = run(json!({"spec": {"target": "a", "port": true}}));
        assert_eq!(out.causes[0].field, "spec.port");
    }

    #[test]
    fn cel_rule_rejects() {
        let (_, out) = run(json!({"spec": {"target": "abc", "replicas": 7}}));
        assert_eq!(out.causes.len(), 1, "{:?}", out.causes);
        assert!(
            out.causes[0].message.contains("too many replicas"),
            "{:?}",
            out.causes
        );
    }

    #[test]
    fn cel_sees_only_what_rules_cover_and_still_reports_nested_rules_at_their_path() {
        let s = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "items": {"type": "array", "items": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "self.n < 3", "message": "n too big"}],
                    "properties": {"n": {"type": "integer"}}}},
                "note": {"type": "string"}}},
            "status": {"type": "object", "properties": {"records": {"type": "array",
                "items": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}}});
        let obj = json!({"spec": {"items": [{"n": 1}, {"n": 5}], "note": "x"},
                         "status": {"records": [{"n": 9}]}});
        let mut memo = HashMap::new();
        assert_eq!(
            rule_view(&s, &obj, &mut memo, true),
            json!({"spec": {"items": [{"n": 1}, {"n": 5}]}})
        );
        let mut o = obj.clone();
        let out = process(&s, &mut o, None, Source::Body, vec![]);
        assert_eq!(out.causes.len(), 1, "{:?}", out.causes);
        assert_eq!(out.causes[0].field, "spec.items[1]");
        assert!(
            out.causes[0].message.contains("n too big"),
            "{:?}",
            out.causes
        );
    }

    #[test]
    fn one_of() {
        let s = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}]});
        let mut ok = json!({"a": "x"});
        assert!(
            process(&s, &mut ok, None, Source::Body, vec![])
                .causes
                .is_empty()
        );
        let mut both = json!({"a": "x", "b": "y"});
        assert!(
            process(&s, &mut both, None, Source::Body, vec![]).causes[0]
                .message
                .contains("oneOf")
        );
    }
}
