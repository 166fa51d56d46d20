//! Field paths of Kubernetes probes (`.status.readyReplicas`, `.spec.containers[0].image`) and
//! the comparison of the value found there with the expected one. Pure: no client, no IO.
//!
//! The syntax is deliberately small: `.name` steps into an object, `[N]` into a list. No
//! filters (`[?(@.type=="Ready")]`; a probe's `condition` check covers that case), no
//! wildcards, no quoting (a key cannot contain `.`, `[` or `]`).

use serde_json::Value;

use crate::api::ComparisonOperator;

/// One step of a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Field(String),
    Index(usize),
}

/// A parsed path; [`FieldPath::parse`] keeps the text for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    steps: Vec<Step>,
}

impl FieldPath {
    /// Parses `.a.b[0].c`. The error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |at: usize, what: &str| format!("field path {text:?}: {what} at character {at}");
        if !text.starts_with('.') {
            return Err(format!("field path {text:?} must start with '.'"));
        }
        let bytes = text.as_bytes();
        let mut steps = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'.' => {
                    let start = i + 1;
                    let end = text[start..]
                        .find(['.', '['])
                        .map_or(text.len(), |n| start + n);
                    let name = &text[start..end];
                    if name.is_empty() {
                        return Err(bad(start, "expected a field name"));
                    }
                    if let Some(c) = name.chars().find(|c| c.is_whitespace() || *c == ']') {
                        return Err(bad(start, &format!("unexpected {c:?} in a field name")));
                    }
                    steps.push(Step::Field(name.to_string()));
                    i = end;
                }
                b'[' => {
                    let start = i + 1;
                    let Some(len) = text[start..].find(']') else {
                        return Err(bad(i, "'[' without ']'"));
                    };
                    let inner = &text[start..start + len];
                    let index = inner.parse::<usize>().map_err(|_| {
                        bad(start, &format!("expected a list index, found {inner:?}"))
                    })?;
                    steps.push(Step::Index(index));
                    i = start + len + 1;
                }
                other => {
                    return Err(bad(
                        i,
                        &format!("expected '.' or '[', found {:?}", other as char),
                    ));
                }
            }
        }
        Ok(FieldPath {
            text: text.to_string(),
            steps,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path; `None` when a step is missing or the value is `null` (the API
    /// server omits empty fields, so "absent" and "null" mean the same thing to a user).
    pub fn lookup<'a>(&self, object: &'a Value) -> Option<&'a Value> {
        let mut current = object;
        for step in &self.steps {
            current = match step {
                Step::Field(name) => current.get(name)?,
                Step::Index(i) => current.get(*i)?,
            };
        }
        (!current.is_null()).then_some(current)
    }
}

/// A value as a message shows it: strings without quotes, everything else as JSON.
pub fn display(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
        _ => None,
    }
}

/// Compares `actual` with `expected`: as numbers when both are numbers, otherwise as text for
/// `==` and `!=`. `Err` explains why the comparison cannot be made (an ordering operator on
/// something that is not a number).
pub fn compare(
    actual: &Value,
    operator: ComparisonOperator,
    expected: &str,
) -> Result<bool, String> {
    let wanted = expected
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite());
    if let (Some(a), Some(e)) = (as_number(actual), wanted) {
        return Ok(operator.holds(a, e));
    }
    match operator {
        ComparisonOperator::Equal => Ok(display(actual) == expected),
        ComparisonOperator::NotEqual => Ok(display(actual) != expected),
        _ => {
            let which = if as_number(actual).is_none() {
                format!("{} is not a number", quoted(actual))
            } else {
                format!("{expected:?} is not a number")
            };
            Err(format!(
                "{which}; {} compares numbers only",
                operator.symbol()
            ))
        }
    }
}

/// A value for a sentence: strings quoted, numbers and booleans bare.
fn quoted(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComparisonOperator::*;
    use serde_json::json;

    fn path(text: &str) -> FieldPath {
        FieldPath::parse(text).unwrap()
    }

    #[test]
    fn parses_fields_and_indexes() {
        assert_eq!(
            path(".status.conditions[0].status").steps,
            vec![
                Step::Field("status".into()),
                Step::Field("conditions".into()),
                Step::Index(0),
                Step::Field("status".into()),
            ]
        );
        assert_eq!(
            path(".items[2][1]").steps,
            vec![Step::Field("items".into()), Step::Index(2), Step::Index(1)]
        );
        assert_eq!(
            path(".metadata.labels.app-name").as_str(),
            ".metadata.labels.app-name"
        );
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        // Each row: a path, and a piece of the error.
        let rows = [
            ("status", "must start with '.'"),
            ("", "must start with '.'"),
            (".", "expected a field name"),
            (".a..b", "expected a field name"),
            (".a[", "'[' without ']'"),
            (".a[x]", "expected a list index"),
            (".a[-1]", "expected a list index"),
            (".a[?(@.type==\"Ready\")].status", "expected a list index"),
            (".a b", "unexpected ' '"),
            (".a]", "unexpected ']'"),
            (".a[0]b", "expected '.' or '['"),
        ];
        for (text, expected) in rows {
            let err = FieldPath::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn lookup_follows_the_path_and_treats_null_as_missing() {
        let obj = json!({"status": {"readyReplicas": 2, "gone": null,
            "conditions": [{"type": "Available", "status": "True"}]}});
        assert_eq!(path(".status.readyReplicas").lookup(&obj), Some(&json!(2)));
        assert_eq!(
            path(".status.conditions[0].status").lookup(&obj),
            Some(&json!("True"))
        );
        assert_eq!(path(".status.conditions[1].status").lookup(&obj), None);
        assert_eq!(path(".status.gone").lookup(&obj), None);
        assert_eq!(path(".spec.replicas").lookup(&obj), None);
        // An index into an object, a field of a list: missing, not a panic.
        assert_eq!(path(".status[0]").lookup(&obj), None);
        assert_eq!(path(".status.conditions.type").lookup(&obj), None);
    }

    #[test]
    fn numbers_compare_numerically() {
        assert_eq!(compare(&json!(2), GreaterOrEqual, "2"), Ok(true));
        assert_eq!(compare(&json!(1), GreaterOrEqual, "2"), Ok(false));
        assert_eq!(compare(&json!(3), Greater, "2.5"), Ok(true));
        assert_eq!(compare(&json!(0.5), Less, "1"), Ok(true));
        assert_eq!(compare(&json!(2), LessOrEqual, "2"), Ok(true));
        // 2 and "2.0" are the same number.
        assert_eq!(compare(&json!(2), Equal, "2.0"), Ok(true));
        assert_eq!(compare(&json!(2), NotEqual, "2.0"), Ok(false));
        // A number written as a string in the object is still a number.
        assert_eq!(compare(&json!("10"), Greater, "9"), Ok(true));
    }

    #[test]
    fn other_values_compare_as_text_for_equality() {
        assert_eq!(compare(&json!("Running"), Equal, "Running"), Ok(true));
        assert_eq!(compare(&json!("Running"), NotEqual, "Running"), Ok(false));
        assert_eq!(compare(&json!("Pending"), NotEqual, "Running"), Ok(true));
        assert_eq!(compare(&json!(true), Equal, "true"), Ok(true));
        assert_eq!(compare(&json!(false), Equal, "true"), Ok(false));
        assert_eq!(compare(&json!("2"), Equal, "two"), Ok(false));
    }

    #[test]
    fn ordering_needs_numbers_on_both_sides() {
        let err = compare(&json!("Running"), Greater, "1").unwrap_err();
        assert!(err.contains("\"Running\" is not a number"), "{err}");
        assert!(err.contains("> compares numbers only"), "{err}");
        let err = compare(&json!(3), LessOrEqual, "many").unwrap_err();
        assert!(err.contains("\"many\" is not a number"), "{err}");
        assert!(compare(&json!({"a": 1}), Less, "1").is_err());
    }

    #[test]
    fn display_shows_strings_bare() {
        assert_eq!(display(&json!("True")), "True");
        assert_eq!(display(&json!(1)), "1");
        assert_eq!(display(&json!([1, 2])), "[1,2]");
    }
}
