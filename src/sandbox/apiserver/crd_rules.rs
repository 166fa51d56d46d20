//! The real server's checks of each `x-kubernetes-validations` entry of a CRD before it
//! compiles or costs any rule (apiextensions' CRD validation, v1.36): a rule is given, a
//! message has no line break (and is given when the rule has one), a reason is one of the four
//! it knows, and a `fieldPath` names a field the schema declares (`.spec.peers`,
//! `.labels['app']` into a map, `['a.b']` for a name with a dot; no list index). A CRD that
//! fails one is refused with the real server's field and words; its rules are then not costed,
//! as the real server compiles nothing of a schema with such an error.

use serde_json::Value;

use super::errors::Cause;

const REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// Every rule entry's shape error in `schema` (a version's `openAPIV3Schema`), with fields
/// under `prefix` (`spec.validation` or `spec.versions[i].schema`).
pub fn shape_errors(schema: &Value, prefix: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    walk(schema, &format!("{prefix}.openAPIV3Schema"), &mut causes);
    causes
}

fn walk(schema: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for (index, rule) in rules.iter().enumerate() {
            let at = format!("{path}.x-kubernetes-validations[{index}]");
            check_rule(schema, rule, &at, out);
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let mut names: Vec<&String> = properties.keys().collect();
        names.sort();
        for name in names {
            walk(
                &properties[name],
                &format!("{path}.properties[{name}]"),
                out,
            );
        }
    }
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        walk(additional, &format!("{path}.additionalProperties"), out);
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}.items"), out);
    }
}

fn check_rule(schema: &Value, rule: &Value, at: &str, out: &mut Vec<Cause>) {
    let text = |key: &str| rule.get(key).and_then(Value::as_str).unwrap_or_default();
    let (body, message) = (text("rule"), text("message"));
    let mut push = |field: &str, message: String, reason: &str| {
        out.push(Cause {
            field: format!("{at}.{field}"),
            message,
            reason: reason.into(),
        })
    };
    if body.trim().is_empty() {
        push(
            "rule",
            "Required value: rule is not specified".into(),
            "FieldValueRequired",
        );
    } else if !message.is_empty() && message.trim().is_empty() {
        push(
            "message",
            format!("Invalid value: {message:?}: must be non-empty if specified"),
            "FieldValueInvalid",
        );
    } else if has_line_break(message.trim()) {
        push(
            "message",
            format!("Invalid value: {message:?}: must not contain line breaks"),
            "FieldValueInvalid",
        );
    } else if has_line_break(body.trim()) && message.trim().is_empty() {
        push(
            "message",
            "Required value: message must be specified if rule contains line breaks".into(),
            "FieldValueRequired",
        );
    }
    let expression = text("messageExpression");
    if !expression.is_empty() && expression.trim().is_empty() {
        push(
            "messageExpression",
            "Required value: messageExpression must be non-empty if specified".into(),
            "FieldValueRequired",
        );
    }
    if let Some(reason) = rule.get("reason").and_then(Value::as_str)
        && !REASONS.contains(&reason)
    {
        let supported: Vec<String> = REASONS.iter().map(|r| format!("{r:?}")).collect();
        push(
            "reason",
            format!(
                "Unsupported value: {reason:?}: supported values: {}",
                supported.join(", ")
            ),
            "FieldValueNotSupported",
        );
    }
    let field_path = text("fieldPath");
    if field_path.is_empty() {
        return;
    }
    if field_path.trim().is_empty() {
        push(
            "fieldPath",
            format!("Invalid value: {field_path:?}: must be non-empty if specified"),
            "FieldValueInvalid",
        );
    }
    if has_line_break(field_path) {
        push(
            "fieldPath",
            format!("Invalid value: {field_path:?}: must not contain line breaks"),
            "FieldValueInvalid",
        );
    }
    if !field_path_valid(schema, field_path) {
        push(
            "fieldPath",
            format!("Invalid value: {field_path:?}: must be a valid path"),
            "FieldValueInvalid",
        );
    }
}

fn has_line_break(text: &str) -> bool {
    text.contains(['\n', '\r'])
}

/// Whether `path` leads from `schema` through declared properties (`.name`, `['name']`) or
/// into a map's values (`.key`, `['key']` where the node has `additionalProperties`), as the
/// real server's `ValidFieldPath` reads it. The empty path names the node itself.
pub fn field_path_valid(schema: &Value, path: &str) -> bool {
    let mut node = schema;
    let mut rest = path;
    while !rest.is_empty() {
        let (name, after) = if let Some(after_dot) = rest.strip_prefix('.') {
            let end = after_dot.find(['.', '[', ']']).unwrap_or(after_dot.len());
            (after_dot[..end].to_string(), &after_dot[end..])
        } else if let Some(after_bracket) = rest.strip_prefix('[') {
            let Some((name, after)) = quoted(after_bracket) else {
                return false;
            };
            let Some(after) = after.strip_prefix(']') else {
                return false;
            };
            (name, after)
        } else {
            return false;
        };
        let next = if let Some(properties) = node.get("properties").and_then(Value::as_object) {
            properties.get(&name)
        } else {
            node.get("additionalProperties").filter(|a| a.is_object())
        };
        match next {
            Some(child) => node = child,
            None => return false,
        }
        rest = after;
    }
    true
}

/// A single-quoted string at the start of `text` (Go's escapes `\'` and `\\` and the usual
/// control ones), unescaped, and what follows it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let inner = text.strip_prefix('\'')?;
    let mut name = String::new();
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => return Some((name, &inner[i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                name.push(match escaped {
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    '\'' | '\\' => escaped,
                    _ => return None,
                });
            }
            c => name.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "peers": {"type": "array", "items": {"type": "string"}},
                "a.b": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
        }})
    }

    #[test]
    fn a_field_path_follows_declared_fields_and_map_keys_only() {
        let schema = schema();
        for valid in [
            "",
            ".spec",
            ".spec.peers",
            "['spec']['a.b']",
            ".spec.labels.app",
            ".spec.labels['app.kubernetes.io/name']",
        ] {
            assert!(field_path_valid(&schema, valid), "{valid:?}");
        }
        for invalid in [
            ".metadata.name",
            ".spec.missing",
            ".spec.peers[0]",
            "spec",
            ".spec.a.b",
            "['spec'",
            ".spec.peers.x",
            ".spec.labels.app.more",
        ] {
            assert!(!field_path_valid(&schema, invalid), "{invalid:?}");
        }
    }

    #[test]
    fn each_malformed_entry_is_refused_with_the_real_servers_words() {
        let mut schema = schema();
        schema["x-kubernetes-validations"] = json!([
            {"rule": "  "},
            {"rule": "true", "message": "two\nlines"},
            {"rule": "true &&\ntrue"},
            {"rule": "true", "reason": "FieldValueTooLong"},
            {"rule": "true", "fieldPath": ".metadata.name"},
            {"rule": "true", "fieldPath": ".spec.peers", "reason": "FieldValueInvalid",
             "message": "fine"},
        ]);
        let found: Vec<(String, String)> = shape_errors(&schema, "spec.validation")
            .into_iter()
            .map(|c| (c.field, c.message))
            .collect();
        let at = "spec.validation.openAPIV3Schema.x-kubernetes-validations";
        assert_eq!(
            found,
            [
                (format!("{at}[0].rule"), "Required value: rule is not specified".into()),
                (
                    format!("{at}[1].message"),
                    "Invalid value: \"two\\nlines\": must not contain line breaks".into()
                ),
                (
                    format!("{at}[2].message"),
                    "Required value: message must be specified if rule contains line breaks"
                        .into()
                ),
                (
                    format!("{at}[3].reason"),
                    "Unsupported value: \"FieldValueTooLong\": supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\"".into()
                ),
                (
                    format!("{at}[4].fieldPath"),
                    "Invalid value: \".metadata.name\": must be a valid path".into()
                ),
            ]
        );
    }
}
