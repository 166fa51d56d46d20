//! Custom resources against their CRD's `openAPIV3Schema`: defaulting, pruning, structural
//! validation and CEL rules (`x-kubernetes-validations`).
//!
//! Order as in the real server: defaults are applied and unknown fields pruned while walking the
//! schema, then the value checks run (type, `required`, `enum`, `minimum`/`maximum`,
//! `minLength`/`maxLength`, `minItems`/`maxItems`, `pattern`, `nullable`, `oneOf`/`anyOf`/`allOf`/
//! `not`), then CEL rules via `kube::core::cel::Validator` (kube-cel). Error messages mimic the
//! real ones (`spec.x: Invalid value: "integer": spec.x in body must be of type string: "integer"`).
//!
//! Simplifications: `metadata` is not pruned or validated beyond what the handlers do; `format`
//! is not checked; CEL cost limits are not
//! computed. Transition rules (`oldSelf`) are evaluated on updates when kube-cel can, and skipped
//! on create as the real server does.

use super::errors::Cause;
use crate::api::duration_bounds::judge_duration_rule;
use kube::core::cel::CompiledSchema;
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// What happened to an object while it was processed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Field errors (422 Invalid).
    pub causes: Vec<Cause>,
    /// Paths (`.spec.foo`) of fields that were not declared and have been pruned.
    pub unknown_fields: Vec<String>,
}

fn cause(field: &str, reason: &str, message: String) -> Cause {
    Cause {
        field: field.to_string(),
        message,
        reason: reason.to_string(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The short rendering of a value in `Invalid value: X` messages.
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn type_matches(ty: &str, v: &Value, int_or_string: bool) -> bool {
    if int_or_string {
        return matches!(json_type(v), "integer" | "string");
    }
    match ty {
        "number" => v.is_number(),
        "integer" => json_type(v) == "integer" || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        other => json_type(v) == other,
    }
}

struct Walker {
    /// Prune undeclared fields (false inside `oneOf` branches etc., which only check values).
    prune: bool,
    out: Outcome,
}

impl Walker {
    fn walk(&mut self, v: &mut Value, s: &Value, path: &str) {
        let Some(schema) = s.as_object() else { return };
        let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if v.is_null() {
            if schema.get("nullable") == Some(&Value::Bool(true)) {
                return;
            }
            if let Some(d) = schema.get("default") {
                *v = d.clone();
            }
        }
        let declared = schema.get("type").and_then(Value::as_str);
        if let Some(ty) = declared.or(int_or_string.then_some("integer-or-string"))
            && !type_matches(ty, v, int_or_string)
        {
            let actual = json_type(v);
            self.out.causes.push(cause(
                path,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: \"{actual}\": {path} in body must be of type {ty}: \"{actual}\""
                ),
            ));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            let list: Vec<String> = allowed.iter().map(render).collect();
            self.out.causes.push(cause(
                path,
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {}: supported values: {}",
                    render(v),
                    list.join(", ")
                ),
            ));
        }
        match v {
            Value::Object(m) => self.object(m, schema, path),
            Value::Array(a) => {
                let n = a.len() as u64;
                if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                    && n > max
                {
                    self.out.causes.push(cause(
                        path,
                        "FieldValueTooMany",
                        format!("Too many: {n}: must have at most {max} items"),
                    ));
                }
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && n < min
                {
                    self.out.causes.push(cause(
                        path,
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: {n}: {path} in body should have at least {min} items"
                        ),
                    ));
                }
                if let Some(items) = schema.get("items") {
                    for (i, item) in a.iter_mut().enumerate() {
                        self.walk(item, items, &format!("{path}[{i}]"));
                    }
                }
                self.list_type(a, schema, path);
            }
            Value::String(st) => self.string(st, schema, path),
            Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    self.number(f, v, schema, path);
                }
            }
            _ => {}
        }
        self.combinators(v, schema, path);
    }

    /// `x-kubernetes-list-type`: `map` lists hold one entry per key, `set` lists no value twice
    /// (the real server's words: `Duplicate value: {"name":"a"}`).
    fn list_type(&mut self, items: &[Value], schema: &Map<String, Value>, path: &str) {
        let keys: Vec<&str> = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| keys.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
            Some("set") => Vec::new(),
            _ => return,
        };
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
                self.out.causes.push(cause(
                    &format!("{path}[{i}]"),
                    "FieldValueDuplicate",
                    format!("Duplicate value: {identity}"),
                ));
            } else {
                seen.push(identity);
            }
        }
    }

    fn object(&mut self, m: &mut Map<String, Value>, schema: &Map<String, Value>, path: &str) {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(props) = props {
            for (k, ps) in props {
                if !m.contains_key(k)
                    && let Some(d) = ps.get("default")
                {
                    m.insert(k.clone(), d.clone());
                }
            }
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    self.out.causes.push(cause(
                        &join(path, r),
                        "FieldValueRequired",
                        "Required value".into(),
                    ));
                }
            }
        }
        let preserve =
            schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        let additional = schema.get("additionalProperties");
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            let child = join(path, &k);
            if let Some(ps) = props.and_then(|p| p.get(&k)) {
                if let Some(val) = m.get_mut(&k) {
                    self.walk(val, ps, &child);
                }
            } else if let Some(ap) = additional.filter(|a| a.is_object()) {
                if let Some(val) = m.get_mut(&k) {
                    self.walk(val, ap, &child);
                }
            } else if preserve || additional == Some(&Value::Bool(true)) {
                // Kept as-is.
            } else if self.prune {
                // Root-level apiVersion/kind/metadata are handled by the caller.
                if !(path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) {
                    m.remove(&k);
                    self.out.unknown_fields.push(format!(".{child}"));
                }
            }
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && m.len() as u64 > max
        {
            self.out.causes.push(cause(
                path,
                "FieldValueTooMany",
                format!("Too many: {}: must have at most {max} items", m.len()),
            ));
        }
    }

    fn string(&mut self, st: &str, schema: &Map<String, Value>, path: &str) {
        let len = st.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            self.out.causes.push(cause(
                path,
                "FieldValueTooLong",
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            self.out.causes.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {st:?}: {path} in body should be at least {min} chars long"
                ),
            ));
        }
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            match pattern(p) {
                Ok(re) if !re.is_match(st) => self.out.causes.push(cause(
                    path,
                    "FieldValueInvalid",
                    format!("Invalid value: {st:?}: {path} in body should match '{p}'"),
                )),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(pattern = p, "schema pattern does not compile; not checked")
                }
            }
        }
    }

    fn number(&mut self, f: f64, v: &Value, schema: &Map<String, Value>, path: &str) {
        let excl_min = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
        let excl_max = schema.get("exclusiveMaximum") == Some(&Value::Bool(true));
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (f < min || (excl_min && f == min))
        {
            let op = if excl_min {
                "greater than"
            } else {
                "greater than or equal to"
            };
            self.out.causes.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: {path} in body should be {op} {}",
                    render(v),
                    fmt_num(min)
                ),
            ));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && (f > max || (excl_max && f == max))
        {
            let op = if excl_max {
                "less than"
            } else {
                "less than or equal to"
            };
            self.out.causes.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: {path} in body should be {op} {}",
                    render(v),
                    fmt_num(max)
                ),
            ));
        }
    }

    /// `oneOf` / `anyOf` / `allOf` / `not`: value checks only (branches never prune).
    fn combinators(&mut self, v: &Value, schema: &Map<String, Value>, path: &str) {
        let passes = |branch: &Value| {
            let mut w = Walker {
                prune: false,
                out: Outcome::default(),
            };
            let mut copy = v.clone();
            w.walk(&mut copy, branch, path);
            w.out.causes.is_empty()
        };
        let shown = if path.is_empty() { "<root>" } else { path };
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let n = branches.iter().filter(|b| passes(b)).count();
            if n != 1 {
                self.out.causes.push(cause(
                    path,
                    "FieldValueInvalid",
                    format!("Invalid value: {}: {shown} in body must validate one and only one schema (oneOf)", render(v)),
                ));
            }
        }
        if let Some(branches) = schema.get("anyOf").and_then(Value::as_array)
            && !branches.iter().any(&passes)
        {
            self.out.causes.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: {shown} in body must validate at least one schema (anyOf)",
                    render(v)
                ),
            ));
        }
        if let Some(branches) = schema.get("allOf").and_then(Value::as_array) {
            for b in branches {
                let mut w = Walker {
                    prune: false,
                    out: Outcome::default(),
                };
                let mut copy = v.clone();
                w.walk(&mut copy, b, path);
                self.out.causes.extend(w.out.causes);
            }
        }
        if let Some(not) = schema.get("not")
            && passes(not)
        {
            self.out.causes.push(cause(
                path,
                "FieldValueInvalid",
                format!("Invalid value: {}: {shown} in body should not be valid against the given schema", render(v)),
            ));
        }
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Default, prune and validate `obj` in place against `schema` (a CRD version's
/// `openAPIV3Schema`), then evaluate its CEL rules. `old` enables transition rules on update.
pub fn process(schema: &Value, obj: &mut Value, old: Option<&Value>) -> Outcome {
    let mut w = Walker {
        prune: true,
        out: Outcome::default(),
    };
    w.walk(obj, schema, "");
    let mut out = w.out;
    // CEL only runs on structurally valid objects, as in the real server (its rules assume types).
    if out.causes.is_empty() {
        out.causes.extend(cel_causes(schema, obj, old));
    }
    out
}

/// A schema `pattern`, compiled once per thread (it used to be compiled for every string value
/// it checks, on every write).
fn pattern(p: &str) -> Result<Regex, regex::Error> {
    thread_local! {
        static PATTERNS: std::cell::RefCell<HashMap<String, Result<Regex, regex::Error>>> =
            std::cell::RefCell::default();
    }
    PATTERNS.with(|patterns| {
        let mut patterns = patterns.borrow_mut();
        if patterns.len() >= 256 {
            patterns.clear();
        }
        patterns
            .entry(p.to_string())
            .or_insert_with(|| Regex::new(p))
            .clone()
    })
}

/// CEL rules compiled once per schema (and a validator per thread): compiling every rule of a
/// CRD on each write made a status patch of a ChaosExperiment cost ~10 ms.
fn compiled(schema: &Value, text: String) -> Arc<CompiledSchema> {
    static COMPILED: OnceLock<Mutex<HashMap<String, Arc<CompiledSchema>>>> = OnceLock::new();
    let mut compiled = COMPILED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(schema) = compiled.get(&text) {
        return schema.clone();
    }
    // Schemas change only when a CRD does: a small bound is plenty.
    if compiled.len() >= 64 {
        compiled.clear();
    }
    let schema = Arc::new(kube::core::cel::compile_schema(schema));
    compiled.insert(text, schema.clone());
    schema
}

thread_local! {
    static VALIDATOR: kube::core::cel::Validator = kube::core::cel::Validator::new();
}

fn cel_causes(schema: &Value, obj: &Value, old: Option<&Value>) -> Vec<Cause> {
    let text = schema.to_string();
    if !text.contains("x-kubernetes-validations") {
        return Vec::new();
    }
    let compiled = compiled(schema, text);
    // kube-cel converts every node it walks (and everything under it) to CEL values, rules or
    // not: hand it only the parts a rule can see. A ChaosExperiment's status (hundreds of
    // target records, no rules) made every status write spend most of its time there.
    let mut with_rules = HashMap::new();
    let obj_view = rule_view(schema, obj, &mut with_rules);
    let old_view = old.map(|o| rule_view(schema, o, &mut with_rules));
    match VALIDATOR
        .with(|validator| validator.validate_compiled(&compiled, &obj_view, old_view.as_ref()))
    {
        Ok(()) => Vec::new(),
        Err(errs) => errs
            .iter()
            .filter_map(|e| {
                let field = e.field_path.trim_start_matches('.').to_string();
                // Durations as the real server reads them (Go's parser): kube-cel reads them
                // as f64 and does not know `µs`.
                let judged = obj_at(obj, &field)
                    .and_then(Value::as_str)
                    .and_then(|text| judge_duration_rule(&e.rule, text));
                let message = match judged {
                    Some(Ok(())) => return None,
                    Some(Err(message)) => message,
                    None => e.message.clone(),
                };
                let value = obj_at(obj, &field)
                    .map(render)
                    .unwrap_or_else(|| "\"object\"".into());
                let reason = e
                    .reason
                    .clone()
                    .unwrap_or_else(|| "FieldValueInvalid".into());
                let shown = if field.is_empty() {
                    "<nil>".to_string()
                } else {
                    field.clone()
                };
                tracing::debug!(field = %shown, rule = %e.rule, "CEL rule rejected object");
                Some(cause(
                    &field,
                    &reason,
                    format!("Invalid value: {value}: {message}"),
                ))
            })
            .collect(),
    }
}

/// `obj` without the properties whose schema has no CEL rule anywhere below it. A node with a
/// rule keeps everything under it (its rules see the whole of `self`); so does one whose
/// schema is more than plain `properties` / `items` (combinators, additionalProperties).
fn rule_view(schema: &Value, obj: &Value, with_rules: &mut HashMap<*const Value, bool>) -> Value {
    let plain = ["allOf", "anyOf", "oneOf", "not", "additionalProperties"]
        .iter()
        .all(|k| schema.get(k).is_none());
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
                        .then(|| (key.clone(), rule_view(child, value, with_rules)))
                })
                .collect(),
        ),
        (Value::Array(items), _, Some(child)) if has_rules(child, with_rules) => Value::Array(
            items
                .iter()
                .map(|item| rule_view(child, item, with_rules))
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
    if path.is_empty() {
        return Some(obj);
    }
    path.split('.').try_fold(obj, |cur, k| cur.get(k))
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
        let out = process(&schema(), &mut o, None);
        (o, out)
    }

    #[test]
    fn defaults_and_pruning() {
        let (o, out) = run(
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"target": "abc", "foo": 1, "extra": {"any": [1]}, "labels": {"a": "b"}, "maybe": null, "port": "http"}}),
        );
        assert!(out.causes.is_empty(), "{:?}", out.causes);
        assert_eq!(out.unknown_fields, vec![".spec.foo"]);
        assert_eq!(o["spec"]["duration"], "30s");
        assert_eq!(o["spec"]["replicas"], 1);
        assert!(o["spec"].get("foo").is_none());
        assert_eq!(o["spec"]["extra"], json!({"any": [1]}));
        assert_eq!(o["metadata"]["name"], "a");
    }

    #[test]
    fn type_error_message() {
        let (_, out) = run(json!({"spec": {"target": "abc", "duration": 5}}));
        assert_eq!(out.causes.len(), 1);
        assert_eq!(out.causes[0].field, "spec.duration");
        assert_eq!(
            out.causes[0].message,
            "Invalid value: \"integer\": spec.duration in body must be of type string: \"integer\""
        );
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
            rule_view(&s, &obj, &mut memo),
            json!({"spec": {"items": [{"n": 1}, {"n": 5}]}})
        );
        let mut o = obj.clone();
        let out = process(&s, &mut o, None);
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
        assert!(process(&s, &mut ok, None).causes.is_empty());
        let mut both = json!({"a": "x", "b": "y"});
        assert!(
            process(&s, &mut both, None).causes[0]
                .message
                .contains("oneOf")
        );
    }
}
