//! The structural part of the CRD schema, checked the way the API server checks it: types,
//! required fields, enums, bounds, lengths, item counts, patterns (and `allOf` patterns),
//! formats (`int32`, `int64`, `date-time`, as kube-openapi reads them), list-map and set
//! uniqueness, and unknown fields. Patterns faultline's CRDs use are explained in words
//! (`explain_pattern`): a regex is not what someone who typed `kubectl apply` wants to read.
//!
//! Unknown fields: the API server prunes them silently, or rejects them under kubectl's default
//! `--validate=strict`. Either way the user meant something else, so we report them, with the
//! closest known name. Pure; no IO.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

use super::{
    Finding,
    labels::{dns_label_problem, label_key_problem, label_value_problem},
    yaml_lines::{join_index, join_key},
};
use crate::api::{bounds, duration_bounds::DURATION_MESSAGE_PREFIX, rules};
use crate::crd_validation::formats::{
    GoNumber, fits_integer_format, is_date_time, is_json_integer,
};

/// Checks `value` at `path` against one `openAPIV3Schema` node, collecting findings.
pub struct SchemaChecker {
    patterns: HashMap<String, Option<Regex>>,
}

impl Default for SchemaChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaChecker {
    pub fn new() -> Self {
        Self {
            patterns: HashMap::new(),
        }
    }

    pub fn check(&mut self, schema: &Value, value: &Value, path: &str, out: &mut Vec<Finding>) {
        if value.is_null() {
            if schema.get("nullable").and_then(Value::as_bool) != Some(true)
                && schema.get("type").is_some()
            {
                out.push(Finding::blocking(
                    path,
                    format!(
                        "has no value; give it {} or remove the line",
                        type_phrase(schema_type(schema))
                    ),
                ));
            }
            return;
        }
        let expected = schema_type(schema);
        if !type_matches(expected, value) || !integer_matches(schema, value) {
            let message = match value {
                // `duration: 60` is a number to YAML; say what the user needs to hear.
                Value::Number(n) if is_duration(schema) => {
                    let field = path.rsplit(['.', '[']).next().unwrap_or(path);
                    super::durations::duration_problem(&n.to_string(), field)
                }
                _ => type_mismatch(expected, value),
            };
            out.push(Finding::blocking(path, message));
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            out.push(Finding::blocking(path, enum_mismatch(allowed, value)));
        }
        match value {
            Value::Object(map) => self.check_object(schema, map, path, out),
            Value::Array(items) => {
                check_count(schema, items.len(), path, out);
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &join_index(path, i), out);
                    }
                }
                check_unique(schema, items, path, out);
            }
            Value::String(text) => self.check_string(schema, text, path, out),
            Value::Number(_) => check_number(schema, value, path, out),
            Value::Bool(_) | Value::Null => {}
        }
        // `allOf` branches in faultline's CRDs add value checks (a second pattern) only.
        for branch in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match value {
                Value::String(text) => self.check_string(branch, text, path, out),
                Value::Number(_) => check_number(branch, value, path, out),
                _ => {}
            }
        }
    }

    fn check_object(
        &mut self,
        schema: &Value,
        map: &serde_json::Map<String, Value>,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        let preserve = schema
            .get("x-kubernetes-preserve-unknown-fields")
            .and_then(Value::as_bool)
            == Some(true);
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for name in &required {
            let name = *name;
            let dropped = map.get(name).is_some_and(Value::is_null)
                && properties
                    .and_then(|p| p.get(name))
                    .and_then(|s| s.get("nullable"))
                    .and_then(Value::as_bool)
                    != Some(true);
            if dropped {
                let wanted =
                    type_phrase(properties.and_then(|p| p.get(name)).and_then(schema_type));
                out.push(Finding::blocking(
                    &join_key(path, name),
                    format!("has no value, and it is required: give it {wanted}"),
                ));
            } else if !map.contains_key(name) {
                out.push(Finding::blocking(
                    &join_key(path, name),
                    format!("required field \"{name}\" is missing"),
                ));
            }
        }
        for (key, child) in map {
            let child_path = join_key(path, key);
            // The API server drops a null from a field that is not nullable, then defaults it:
            // it is only missing (the `required` check above says so when it must be there).
            if child.is_null()
                && let Some(child_schema) = properties.and_then(|p| p.get(key))
                && child_schema.get("nullable").and_then(Value::as_bool) != Some(true)
            {
                if !required.contains(&key.as_str()) {
                    let mut note = Finding::note(format!(
                        "has no value, so the API server drops it{}; remove the line or give it a value",
                        if child_schema.get("default").is_some() {
                            " and uses the default"
                        } else {
                            ""
                        }
                    ));
                    note.path = child_path;
                    out.push(note);
                }
                continue;
            }
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(child_schema), _) => self.check(child_schema, child, &child_path, out),
                (None, Some(child_schema)) => self.check(child_schema, child, &child_path, out),
                (None, None) if preserve => {}
                (None, None) => {
                    let known = properties.map(|p| p.keys().map(String::as_str).collect());
                    out.push(Finding::blocking(
                        &child_path,
                        unknown_field(key, &known.unwrap_or_default()),
                    ));
                }
            }
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && map.len() as u64 > max
        {
            out.push(Finding::blocking(
                path,
                format!("has {} entries; at most {max} are allowed", map.len()),
            ));
        }
    }

    fn check_string(&mut self, schema: &Value, text: &str, path: &str, out: &mut Vec<Finding>) {
        // Kubernetes counts characters (runes), not bytes.
        let len = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && len < min
        {
            out.push(Finding::new(
                path,
                if len == 0 {
                    "must not be empty".to_string()
                } else {
                    format!("is {len} characters long; it must have at least {min}")
                },
            ));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && len > max
        {
            out.push(Finding::blocking(
                path,
                format!("is {len} characters long; at most {max} are allowed"),
            ));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let regex = self
                .patterns
                .entry(pattern.to_string())
                .or_insert_with(|| compiled_pattern(pattern));
            if let Some(regex) = regex
                && !regex.is_match(text)
            {
                out.push(Finding::new(path, explain_pattern(pattern, text)));
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(text)
        {
            out.push(Finding::blocking(
                path,
                format!("{text:?} is not an RFC 3339 time (try 2026-03-01T09:00:00Z)"),
            ));
        }
    }
}

/// Whether `schema` is a faultline duration (it carries the duration CEL rule).
fn is_duration(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|rules| {
            rules.iter().any(|r| {
                r.get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.starts_with(DURATION_MESSAGE_PREFIX))
            })
        })
}

/// CRD patterns compiled once per thread (compiling is far dearer than matching).
fn compiled_pattern(pattern: &str) -> Option<Regex> {
    thread_local! {
        static PATTERNS: std::cell::RefCell<HashMap<String, Option<Regex>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    PATTERNS.with(|cache| {
        cache
            .borrow_mut()
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).ok())
            .clone()
    })
}

fn check_count(schema: &Value, len: usize, path: &str, out: &mut Vec<Finding>) {
    let len = len as u64;
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && len < min
    {
        out.push(Finding::new(
            path,
            if len == 0 {
                format!(
                    "must list at least {min} {}",
                    plural(min, "entry", "entries")
                )
            } else {
                format!("has {len} entries; at least {min} are required")
            },
        ));
    }
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && len > max
    {
        out.push(Finding::blocking(
            path,
            format!("has {len} entries; at most {max} are allowed"),
        ));
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, out: &mut Vec<Finding>) {
    let Some(n) = value.as_f64() else { return };
    let shown = value.to_string();
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
        if n < min || (exclusive && n == min) {
            let op = if exclusive { "more than" } else { "at least" };
            out.push(Finding::new(
                path,
                format!("{shown} is too small; it must be {op} {}", number(min)),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        let exclusive = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
        if n > max || (exclusive && n == max) {
            let op = if exclusive { "less than" } else { "at most" };
            out.push(Finding::new(
                path,
                format!("{shown} is too large; it must be {op} {}", number(max)),
            ));
        }
    }
    // The controller reads these into i32 / i64: the API server refuses what does not fit.
    let format = schema.get("format").and_then(Value::as_str);
    if let (Some(format @ ("int32" | "int64")), Value::Number(number)) = (format, value)
        && schema_type(schema) == Some("integer")
        && !fits_integer_format(GoNumber::of(number), format)
    {
        let (low, high) = if format == "int32" {
            (i64::from(i32::MIN), i64::from(i32::MAX))
        } else {
            (i64::MIN, i64::MAX)
        };
        out.push(Finding::new(
            path,
            format!("{shown} does not fit this field (a {format}: {low} to {high})"),
        ));
    }
}

/// An integer field holds JSON integers only as kube-openapi counts them: `3.0` is one, `1e20`
/// (past 2^53) is not.
fn integer_matches(schema: &Value, value: &Value) -> bool {
    match value {
        Value::Number(number) if schema_type(schema) == Some("integer") => {
            is_json_integer(GoNumber::of(number))
        }
        _ => true,
    }
}

/// `x-kubernetes-list-type`: a `map` list holds one entry per key (reported on the second
/// entry, as the API server reports it), a `set` list no value twice.
fn check_unique(schema: &Value, items: &[Value], path: &str, out: &mut Vec<Finding>) {
    let keys: Vec<&str> = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|keys| keys.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
        Some("set") => Vec::new(),
        _ => return,
    };
    let identity = |item: &Value| -> Value {
        if keys.is_empty() {
            item.clone()
        } else {
            Value::Array(
                keys.iter()
                    .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                    .collect(),
            )
        }
    };
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = identity(item);
        match seen.iter().position(|s| *s == id) {
            Some(first) => {
                let first = join_index(path, first);
                // `spec.stages` holds stages: "stage name ... must be unique".
                let list = path.rsplit(['.', '[']).next().unwrap_or(path);
                let noun = list.strip_suffix('s').unwrap_or("entry");
                let message = match (
                    keys.as_slice(),
                    item.get(keys.first().copied().unwrap_or_default()),
                ) {
                    ([key], Some(Value::String(value))) => format!(
                        "{noun} {key} {value:?} is already used by {first}; {noun} {key}s must be unique"
                    ),
                    _ => format!("duplicates {first}; entries of this list must be unique"),
                };
                out.push(Finding::new(&join_index(path, i), message));
            }
            None => seen.push(id),
        }
    }
}

/// What a pattern of faultline's CRDs asks for, in words, for `text` that does not match it.
fn explain_pattern(pattern: &str, text: &str) -> String {
    let known = if pattern == bounds::DNS_LABEL_PATTERN {
        dns_label_problem(text)
    } else if pattern == bounds::QUALIFIED_NAME_PATTERN {
        label_key_problem(text)
    } else if pattern == bounds::QUALIFIED_NAME_PREFIX_PATTERN {
        Some(format!(
            "key {text:?} has a prefix (before the '/') of {} characters; at most 253 are allowed",
            text.split('/').next().unwrap_or_default().chars().count()
        ))
    } else if pattern == bounds::LABEL_VALUE_PATTERN {
        label_value_problem(text)
    } else if pattern == bounds::FIELD_SELECTOR_VALUE_PATTERN {
        Some(format!(
            "{text:?} is no pod's node name, phase or name: one value of letters, digits, '-' and '.', starting and ending with a letter or digit (a field selector matches one value exactly)"
        ))
    } else if pattern == bounds::RATE_PATTERN {
        Some(format!(
            "{text:?} is not a rate: a number and a unit, bit, kbit, mbit or gbit (bits per second) or bps, kbps, mbps or gbps (bytes per second), e.g. 1mbit or 500kbps"
        ))
    } else if pattern == bounds::HTTP_URL_PATTERN {
        Some(format!(
            "{text:?} is not an http:// or https:// URL (e.g. http://checkout.shop.svc:8080/healthz)"
        ))
    } else if pattern == bounds::HTTP_HEADER_VALUE_PATTERN {
        // Not quoted: header values are often credentials.
        Some(
            "the header value has a control character (a CR or LF would end the header and start another one); only tab is allowed".into(),
        )
    } else if pattern == bounds::HTTP_METHOD_PATTERN {
        Some(format!(
            "{text:?} is not an HTTP method a probe sends: GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS (in capitals)"
        ))
    } else if pattern == bounds::CONDITION_STATUS_PATTERN {
        Some(format!(
            "{text:?} is not a condition status: True, False or Unknown"
        ))
    } else if pattern == bounds::WINDOW_START_PATTERN {
        Some(format!(
            "{text:?} is not a time of day as HH:MM, 00:00 to 23:59 (e.g. 09:00)"
        ))
    } else if pattern == bounds::WINDOW_END_PATTERN {
        Some(format!(
            "{text:?} is not a time of day as HH:MM, 00:00 to 24:00 (e.g. 17:30, or 24:00 for midnight)"
        ))
    } else if pattern == rules::API_VERSION_PATTERN {
        Some(format!(
            "{text:?} is not an apiVersion (try apps/v1, or v1 for core kinds)"
        ))
    } else if pattern == rules::FIELD_PATH_PATTERN {
        Some(format!(
            "{text:?} is not a field path (try .status.readyReplicas or .status.conditions[0].status)"
        ))
    } else {
        None
    };
    known.unwrap_or_else(|| format!("{text:?} does not match the pattern {pattern}"))
}

fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str)
}

fn type_matches(expected: Option<&str>, value: &Value) -> bool {
    match expected {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("number") => value.is_number(),
        // JSON has one number type; the API server accepts 3.0 for an integer.
        Some("integer") => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        Some(_) => true,
    }
}

fn type_phrase(expected: Option<&str>) -> &'static str {
    match expected {
        Some("object") => "a mapping",
        Some("array") => "a list",
        Some("string") => "a string",
        Some("boolean") => "true or false",
        Some("number") => "a number",
        Some("integer") => "a whole number",
        _ => "a value",
    }
}

fn value_phrase(value: &Value) -> &'static str {
    match value {
        Value::Object(_) => "a mapping",
        Value::Array(_) => "a list",
        Value::String(_) => "a string",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::Null => "empty",
    }
}

fn type_mismatch(expected: Option<&str>, value: &Value) -> String {
    let want = type_phrase(expected);
    let got = value_phrase(value);
    let hint = match (expected, value) {
        (Some("string"), Value::Bool(_) | Value::Number(_)) => {
            format!(" (YAML read {value}; put it in quotes to keep it a string)")
        }
        (Some("integer" | "number"), Value::String(s)) if s.trim().parse::<f64>().is_ok() => {
            " (remove the quotes)".to_string()
        }
        (Some("boolean"), Value::String(s))
            if matches!(s.to_ascii_lowercase().as_str(), "true" | "false") =>
        {
            " (remove the quotes)".to_string()
        }
        (Some("integer"), Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() != 0.0) => {
            format!(" ({value} has a fraction)")
        }
        (Some("integer"), Value::Number(_)) => {
            format!(" ({value} is beyond what a JSON integer holds exactly)")
        }
        (Some("array"), Value::Object(_) | Value::String(_)) => {
            " (start each entry with \"- \")".to_string()
        }
        _ => String::new(),
    };
    format!("must be {want}, not {got}{hint}")
}

fn enum_mismatch(allowed: &[Value], value: &Value) -> String {
    let names: Vec<String> = allowed
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect();
    let shown = value
        .as_str()
        .map_or_else(|| value.to_string(), |s| format!("{s:?}"));
    let candidates: Vec<&str> = names.iter().map(String::as_str).collect();
    match (
        value.as_str(),
        value.as_str().and_then(|s| closest(s, &candidates)),
    ) {
        (Some(_), Some(best)) => format!(
            "{shown} is not one of {} (did you mean \"{best}\"?)",
            names.join(", ")
        ),
        _ => format!("{shown} is not one of {}", names.join(", ")),
    }
}

fn unknown_field(key: &str, known: &Vec<&str>) -> String {
    match closest(key, known) {
        Some(best) => format!("unknown field \"{key}\" (did you mean \"{best}\"?)"),
        None if known.is_empty() => format!("unknown field \"{key}\" (this object has no fields)"),
        None => format!(
            "unknown field \"{key}\" (known fields: {})",
            known.join(", ")
        ),
    }
}

/// The known name closest to `typed`, if it is close enough to be a typo: same letters in
/// another case, or an edit distance of at most a third of the name (and at most 3).
pub fn closest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some(same) = known.iter().find(|k| k.eq_ignore_ascii_case(typed)) {
        return Some(same);
    }
    let limit = (typed.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| {
            (
                edit_distance(&typed.to_ascii_lowercase(), &k.to_ascii_lowercase()),
                *k,
            )
        })
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions, so that
/// `duratoin` is one edit from `duration`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(prev2[j - 2] + 1);
            }
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
