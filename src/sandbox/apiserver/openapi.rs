//! A custom resource's value checked against its `openAPIV3Schema` as kube-apiserver v1.36
//! checks it (kube-openapi's SchemaValidator, then apiextensions' conversion of its errors into
//! field errors), with the real server's words: which errors it reports, on which field, and
//! how it prints values.
//!
//! Every validator that applies to a value runs, as in kube-openapi: a float in an `int64` field
//! gets both the type error and the `Checked value` range error; a string checks `maxLength`,
//! then `minLength`, then `pattern`, stopping at the first that fails. Errors kube-openapi does
//! not attach to a field (`Checked value ...`, `must validate all the schemas (allOf)`) come out
//! as the real server prints them: on field `<nil>`, with `Invalid value: ""`.
//!
//! Simplification: `anyOf` and `oneOf` report the first failing branch's errors (kube-openapi
//! picks the branch that matched most); faultline's CRDs use neither.

use regex::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;

use super::errors::Cause;
use crate::crd_validation::formats::{
    GoNumber, fits_integer_format, go_quote, is_date_time, is_json_integer,
};

/// The errors of `value` at `path` (`spec.faults[0]`, empty for the root).
pub fn validate(schema: &Value, value: &Value, path: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    node(schema, value, path, &mut out);
    out
}

fn cause(field: &str, reason: &str, message: String) -> Cause {
    Cause {
        field: field.to_string(),
        reason: reason.to_string(),
        message,
    }
}

/// An error kube-openapi raises without a field: the real server shows it on `<nil>`.
fn unattached(message: String) -> Cause {
    cause(
        "<nil>",
        "FieldValueInvalid",
        format!("Invalid value: \"\": {message}"),
    )
}

/// `value` as the real server prints a bad value: Go's `%q` for strings, `%v` for numbers.
pub fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        Value::Number(n) => GoNumber::of(n).go_display(),
        Value::Bool(b) => b.to_string(),
        // Go marshals anything else as JSON: `null`, `{}`, `["a"]`.
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The JSON type and Go format kube-openapi infers for a value (`schemaInfoForType`).
fn type_of(value: &Value) -> (&'static str, &'static str) {
    match value {
        Value::Null => ("null", ""),
        Value::Bool(_) => ("boolean", ""),
        Value::String(_) => ("string", ""),
        Value::Number(n) => match GoNumber::of(n) {
            GoNumber::Int(_) => ("integer", "int64"),
            GoNumber::Float(_) => ("number", "float64"),
        },
        Value::Array(_) => ("array", ""),
        Value::Object(_) => ("object", ""),
    }
}

fn node(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(s) = schema.as_object() else { return };
    let types: Vec<&str> = if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        vec!["integer", "string"]
    } else {
        s.get("type").and_then(Value::as_str).into_iter().collect()
    };
    let format = s.get("format").and_then(Value::as_str).unwrap_or_default();
    check_type(s, &types, format, value, path, out);
    if value.is_null() {
        return;
    }
    combinators(s, value, path, out);
    match value {
        Value::String(text) => {
            check_string(s, text, path, out);
            if format == "date-time" && !is_date_time(text) {
                let quoted = go_quote(text);
                out.push(cause(
                    path,
                    "FieldValueTypeInvalid",
                    format!("Invalid value: {quoted}: {path} in body must be of type date-time: {quoted}"),
                ));
            }
        }
        Value::Number(n) => check_number(
            s,
            types.first().copied().unwrap_or_default(),
            format,
            GoNumber::of(n),
            path,
            out,
        ),
        Value::Array(items) => check_array(s, items, path, out),
        Value::Object(map) => check_object(s, map, path, out),
        Value::Bool(_) | Value::Null => {}
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed
            .iter()
            .map(|v| match v {
                Value::String(s) => go_quote(s),
                other => go_quote(&other.to_string()),
            })
            .collect();
        out.push(cause(
            path,
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                listed.join(", ")
            ),
        ));
    }
}

/// kube-openapi's type validator, with its quirks: an integral float is an integer, a field
/// with a `format` names the format in the error (`must be of type int32: "float64"`).
fn check_type(
    s: &Map<String, Value>,
    types: &[&str],
    format: &str,
    value: &Value,
    path: &str,
    out: &mut Vec<Cause>,
) {
    let mut fail = |expected: &str, got: &str| {
        out.push(cause(
            path,
            "FieldValueTypeInvalid",
            format!(
                "Invalid value: \"{got}\": {path} in body must be of type {expected}: \"{got}\""
            ),
        ));
    };
    if value.is_null() {
        if !types.is_empty() && s.get("nullable") != Some(&Value::Bool(true)) {
            fail(&types.join(","), "null");
        }
        return;
    }
    if types.is_empty() && format.is_empty() {
        return;
    }
    let (actual, actual_format) = type_of(value);
    let contains = |t: &str| types.contains(&t);
    let float_int = match value {
        Value::Number(n) => {
            actual == "number" && is_json_integer(GoNumber::of(n)) && contains("integer")
        }
        _ => false,
    };
    let int_float = actual == "integer" && contains("number");
    let lower_int = format == "int64" && actual_format == "int32";
    let is_string_or_list = matches!(value, Value::String(_) | Value::Array(_));
    let format_fits =
        contains(actual) || actual_format == format || float_int || int_float || lower_int;
    if !(is_string_or_list || format.is_empty() || format_fits) {
        fail(format, actual_format);
        return;
    }
    // A string or list in a field with a format of its own (`date-time`) is the format
    // validator's to judge.
    let numeric = contains("number") || contains("integer");
    if is_string_or_list && !format.is_empty() && !numeric {
        return;
    }
    if !(contains(actual) || float_int || int_float) {
        fail(&types.join(","), actual);
    }
}

/// maxLength, then minLength, then pattern: the first that fails is the only one reported.
fn check_string(s: &Map<String, Value>, text: &str, path: &str, out: &mut Vec<Cause>) {
    let runes = text.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && runes > max
    {
        let unit = if max == 1 { "byte" } else { "bytes" };
        out.push(cause(
            path,
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} {unit}"),
        ));
        return;
    }
    let quoted = go_quote(text);
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && runes < min
    {
        out.push(cause(
            path,
            "FieldValueInvalid",
            format!("Invalid value: {quoted}: {path} in body should be at least {min} chars long"),
        ));
        return;
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        match pattern(p) {
            Ok(re) if !re.is_match(text) => out.push(cause(
                path,
                "FieldValueInvalid",
                format!("Invalid value: {quoted}: {path} in body should match '{p}'"),
            )),
            Ok(_) => {}
            Err(_) => tracing::warn!(pattern = p, "schema pattern does not compile; not checked"),
        }
    }
}

fn check_number(
    s: &Map<String, Value>,
    schema_type: &str,
    format: &str,
    n: GoNumber,
    path: &str,
    out: &mut Vec<Cause>,
) {
    // `Checked value must be of type integer with format int32`: the value must fit the
    // declared format (integers), or the default int64 when none is given.
    if schema_type == "integer" {
        let effective = if format.is_empty() { "int64" } else { format };
        if !fits_integer_format(n, effective) {
            let described = if format.is_empty() {
                "integer (default format)".to_string()
            } else {
                format!("integer with format {format}")
            };
            out.push(unattached(format!(
                "Checked value must be of type {described} in {path}"
            )));
        }
    } else if matches!(format, "float" | "float32")
        && n.as_f64().is_finite()
        && (n.as_f64() as f32).is_infinite()
    {
        out.push(unattached(format!(
            "Checked value must be of type {schema_type} with format {format} in {path}"
        )));
    }
    let f = n.as_f64();
    let shown = n.go_display();
    let bound = |key: &str| s.get(key).and_then(Value::as_f64);
    let exclusive = |key: &str| s.get(key) == Some(&Value::Bool(true));
    if let Some(m) = bound("multipleOf")
        && m > 0.0
        && (f / m).fract() != 0.0
    {
        out.push(cause(
            path,
            "FieldValueInvalid",
            format!(
                "Invalid value: {shown}: {path} in body should be a multiple of {}",
                go_f64(m)
            ),
        ));
    }
    if let Some(max) = bound("maximum") {
        let excl = exclusive("exclusiveMaximum");
        if f > max || (excl && f == max) {
            let op = if excl {
                "less than"
            } else {
                "less than or equal to"
            };
            out.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {shown}: {path} in body should be {op} {}",
                    go_f64(max)
                ),
            ));
        }
    }
    if let Some(min) = bound("minimum") {
        let excl = exclusive("exclusiveMinimum");
        if f < min || (excl && f == min) {
            let op = if excl {
                "greater than"
            } else {
                "greater than or equal to"
            };
            out.push(cause(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {shown}: {path} in body should be {op} {}",
                    go_f64(min)
                ),
            ));
        }
    }
}

fn go_f64(f: f64) -> String {
    GoNumber::Float(f).go_display()
}

fn check_array(s: &Map<String, Value>, items: &[Value], path: &str, out: &mut Vec<Cause>) {
    let n = items.len() as u64;
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        let unit = if max == 1 { "item" } else { "items" };
        out.push(cause(
            path,
            "FieldValueTooMany",
            format!("Too many: {n}: must have at most {max} {unit}"),
        ));
    }
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        out.push(cause(
            path,
            "FieldValueInvalid",
            format!("Invalid value: {n}: {path} in body should have at least {min} items"),
        ));
    }
    if let Some(item_schema) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            node(item_schema, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn check_object(
    s: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Cause>,
) {
    let properties = s.get("properties").and_then(Value::as_object);
    for name in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(name) {
            out.push(cause(
                &join(path, name),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
    }
    let n = map.len() as u64;
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && n > max
    {
        let unit = if max == 1 { "item" } else { "items" };
        out.push(cause(
            path,
            "FieldValueTooMany",
            format!("Too many: {n}: must have at most {max} {unit}"),
        ));
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && n < min
    {
        out.push(cause(
            path,
            "FieldValueInvalid",
            format!("Invalid value: {n}: {path} in body should have at least {min} properties"),
        ));
    }
    let additional = s.get("additionalProperties").filter(|a| a.is_object());
    for (key, child) in map {
        // The root's apiVersion, kind and metadata are the server's to check.
        if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(child_schema), _) | (None, Some(child_schema)) => {
                node(child_schema, child, &join(path, key), out)
            }
            (None, None) => {}
        }
    }
}

/// `allOf`, `anyOf`, `oneOf`, `not`: value checks of the branches, and kube-openapi's
/// composite message when they do not hold.
fn combinators(s: &Map<String, Value>, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let branch = |b: &Value| validate(b, value, path);
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        let mut validated = 0;
        for b in all {
            let errors = branch(b);
            if errors.is_empty() {
                validated += 1;
            }
            out.extend(errors);
        }
        if validated != all.len() {
            let none = if validated == 0 {
                ". None validated"
            } else {
                ""
            };
            out.push(unattached(format!(
                "{} must validate all the schemas (allOf){none}",
                go_quote(path)
            )));
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let results: Vec<Vec<Cause>> = any.iter().map(branch).collect();
        if !results.iter().any(Vec::is_empty) {
            out.push(unattached(format!(
                "{} must validate at least one schema (anyOf)",
                go_quote(path)
            )));
            out.extend(results.into_iter().next().unwrap_or_default());
        }
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let results: Vec<Vec<Cause>> = one.iter().map(branch).collect();
        let valid = results.iter().filter(|r| r.is_empty()).count();
        if valid != 1 {
            let found = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            out.push(unattached(format!(
                "{} must validate one and only one schema (oneOf). {found}",
                go_quote(path)
            )));
            if valid == 0 {
                out.extend(results.into_iter().next().unwrap_or_default());
            }
        }
    }
    if let Some(not) = s.get("not")
        && branch(not).is_empty()
    {
        out.push(unattached(format!(
            "{} must not validate the schema (not)",
            go_quote(path)
        )));
    }
}

/// A schema `pattern`, compiled once per thread (compiling costs far more than matching).
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn messages(schema: Value, value: Value) -> Vec<String> {
        let mut found: Vec<String> = validate(&schema, &value, "spec")
            .into_iter()
            .map(|c| format!("{} [{}] {}", c.field, c.reason, c.message))
            .collect();
        found.sort();
        found
    }

    #[test]
    fn integers_are_checked_against_their_format_as_kube_openapi_does() {
        let int32 = json!({"type": "integer", "format": "int32", "minimum": 1});
        assert_eq!(
            messages(int32.clone(), json!(3_000_000_000u64)),
            [
                "<nil> [FieldValueInvalid] Invalid value: \"\": Checked value must be of type integer with format int32 in spec"
            ]
        );
        assert_eq!(
            messages(int32.clone(), json!(1.5)),
            [
                "<nil> [FieldValueInvalid] Invalid value: \"\": Checked value must be of type integer with format int32 in spec",
                "spec [FieldValueTypeInvalid] Invalid value: \"float64\": spec in body must be of type int32: \"float64\"",
            ]
        );
        assert!(messages(int32.clone(), json!(3.0)).is_empty());
        assert_eq!(
            messages(int32, json!(-4_294_967_296i64)),
            [
                "<nil> [FieldValueInvalid] Invalid value: \"\": Checked value must be of type integer with format int32 in spec",
                "spec [FieldValueInvalid] Invalid value: -4294967296: spec in body should be greater than or equal to 1",
            ]
        );
    }

    #[test]
    fn strings_stop_at_the_first_failing_check_and_print_values_as_go() {
        let s = json!({"type": "string", "maxLength": 3, "minLength": 2, "pattern": "^[a-z]+$"});
        assert_eq!(
            messages(s.clone(), json!("ABCDE")),
            ["spec [FieldValueTooLong] Too long: may not be more than 3 bytes"]
        );
        assert_eq!(
            messages(s, json!("A\u{200b}")),
            [
                "spec [FieldValueInvalid] Invalid value: \"A\\u200b\": spec in body should match '^[a-z]+$'"
            ]
        );
        assert_eq!(
            messages(
                json!({"type": "string", "format": "date-time"}),
                json!("next tuesday")
            ),
            [
                "spec [FieldValueTypeInvalid] Invalid value: \"next tuesday\": spec in body must be of type date-time: \"next tuesday\""
            ]
        );
    }

    #[test]
    fn all_of_adds_the_composite_message() {
        let s = json!({"type": "string", "allOf": [{"pattern": "^a"}]});
        assert_eq!(
            messages(s, json!("b")),
            [
                "<nil> [FieldValueInvalid] Invalid value: \"\": \"spec\" must validate all the schemas (allOf). None validated",
                "spec [FieldValueInvalid] Invalid value: \"b\": spec in body should match '^a'",
            ]
        );
    }
}
