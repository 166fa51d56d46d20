//! CEL rules (`x-kubernetes-validations`) evaluated locally with kube-cel, made to agree with
//! kube-apiserver v1.36 where kube-cel does not: shared by `faultline validate` and the sandbox
//! API server.
//!
//! kube-cel parses IP addresses and durations with Rust's parsers; the API server uses Go's.
//! Where they disagree, the rule is rewritten before kube-cel compiles it into one that means,
//! on kube-cel, what the original means on the API server:
//!
//! - `isCIDR(x)` and `cidr(x)`: Go's `netip.ParsePrefix` refuses a leading zero in an IPv4 octet
//!   (`010.0.0.0/8`) and in the prefix length (`/08`); kube-cel accepts both. The rewrite adds
//!   that refusal ([`LEADING_ZEROS`]). `isIP` and `ip` agree already (tests/fixtures/netip.tsv
//!   pins all four against Go).
//! - `duration(x)`: Go reads `µs` (U+00B5) and `μs` (U+03BC) as microseconds; kube-cel does not
//!   know them. The rewrite spells them `us` first.
//!
//! Errors name the rule as it was written, never the rewrite.

use std::collections::HashMap;

use kube::core::cel::{CompiledSchema, ErrorKind, ValidationError, Validator, compile_schema};
use serde_json::Value;

/// What Go's netip refuses and kube-cel's parser accepts: a leading zero in an IPv4 octet (at
/// the start, after a `.`, or after the `:` of an embedded IPv4 part) or in a prefix length.
pub const LEADING_ZEROS: &str = r"(^|\.)0[0-9]+(\.|/|$)|:0[0-9]+\.|/0[0-9]";

/// A schema's rules, compiled for kube-cel after the rewrites.
pub struct LocalRules {
    compiled: CompiledSchema,
    /// Rewritten rule text -> the rule as the CRD has it.
    originals: HashMap<String, String>,
}

/// One rule that failed (or could not be evaluated), named as the CRD has it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleFailure {
    /// `spec.faults[0].networkLatency`, or empty for the root.
    pub field_path: String,
    pub rule: String,
    pub message: String,
    pub reason: Option<String>,
    pub kind: ErrorKind,
}

impl LocalRules {
    /// Compiles every rule of `schema` (an `openAPIV3Schema`).
    pub fn compile(schema: &Value) -> LocalRules {
        let mut originals = HashMap::new();
        let mut rewritten = schema.clone();
        rewrite_schema(&mut rewritten, &mut originals);
        LocalRules {
            compiled: compile_schema(&rewritten),
            originals,
        }
    }

    /// Runs the rules on `object` (defaults applied first, as the API server does); `old` is the
    /// stored object for transition rules on update.
    pub fn evaluate(&self, object: &Value, old: Option<&Value>) -> Vec<RuleFailure> {
        thread_local! {
            static VALIDATOR: Validator = Validator::new();
        }
        // The API server's rules see a null field of an object as absent (`has()` is false).
        let object = without_null_fields(&self.compiled, object);
        let old = old.map(|o| without_null_fields(&self.compiled, o));
        let result = VALIDATOR
            .with(|validator| validator.validate_compiled(&self.compiled, &object, old.as_ref()));
        match result {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .into_vec()
                .into_iter()
                .map(|error| self.restore(error))
                .collect(),
        }
    }

    fn restore(&self, error: ValidationError) -> RuleFailure {
        let (rule, message) = match self.originals.get(&error.rule) {
            Some(original) => {
                let message = error.message.replace(&error.rule, original);
                (original.clone(), message)
            }
            None => (error.rule.clone(), error.message.clone()),
        };
        RuleFailure {
            field_path: error.field_path.trim_start_matches('.').to_string(),
            rule,
            message,
            reason: error.reason.clone(),
            kind: error.kind,
        }
    }
}

/// `value` without the null-valued fields of objects that declare properties (maps keep theirs),
/// as the API server's CEL values read them.
fn without_null_fields(schema: &CompiledSchema, value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null() || schema.properties.is_empty())
                .map(|(k, v)| {
                    let child = schema
                        .properties
                        .get(k)
                        .or(schema.additional_properties.as_deref());
                    (
                        k.clone(),
                        child.map_or_else(|| v.clone(), |c| without_null_fields(c, v)),
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| match schema.items.as_deref() {
                    Some(c) => without_null_fields(c, item),
                    None => item.clone(),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn rewrite_schema(schema: &mut Value, originals: &mut HashMap<String, String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                for rule in rules.iter_mut() {
                    for key in ["rule", "messageExpression"] {
                        if let Some(Value::String(text)) = rule.get_mut(key)
                            && let Some(new) = rewrite_rule(text)
                        {
                            originals.insert(new.clone(), text.clone());
                            *text = new;
                        }
                    }
                }
            }
            for (key, child) in map.iter_mut() {
                if key != "x-kubernetes-validations" {
                    rewrite_schema(child, originals);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_schema(item, originals)),
        _ => {}
    }
}

/// The rule with the calls kube-cel reads differently from Go rewritten; `None` when it has
/// none.
pub fn rewrite_rule(rule: &str) -> Option<String> {
    let rewritten = rewrite(rule);
    (rewritten != rule).then_some(rewritten)
}

fn rewrite(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if let Some(end) = string_literal_end(&chars, i) {
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let global = previous_significant(&chars, start) != Some('.');
            let open = next_significant(&chars, i);
            if global
                && matches!(name.as_str(), "isCIDR" | "cidr" | "duration")
                && let Some(open) = open.filter(|&o| chars[o] == '(')
                && let Some(close) = matching_paren(&chars, open)
            {
                let argument: String = chars[open + 1..close].iter().collect();
                let argument = rewrite(&argument);
                out.push_str(&match name.as_str() {
                    "isCIDR" => format!(
                        "(isCIDR({argument}) && !({argument}).matches('{}'))",
                        cel_literal(LEADING_ZEROS)
                    ),
                    "cidr" => format!(
                        "cidr(({argument}).matches('{}') ? '' : ({argument}))",
                        cel_literal(LEADING_ZEROS)
                    ),
                    _ => format!(
                        "duration(({argument}).replace('\u{b5}s', 'us').replace('\u{3bc}s', 'us'))"
                    ),
                });
                i = close + 1;
                continue;
            }
            out.push_str(&name);
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A regex as the body of a single-quoted CEL string.
fn cel_literal(pattern: &str) -> String {
    pattern.replace('\\', r"\\").replace('\'', r"\'")
}

fn previous_significant(chars: &[char], before: usize) -> Option<char> {
    chars[..before]
        .iter()
        .rev()
        .find(|c| !c.is_whitespace())
        .copied()
}

fn next_significant(chars: &[char], from: usize) -> Option<usize> {
    (from..chars.len()).find(|&i| !chars[i].is_whitespace())
}

/// The index of the `)` closing the `(` at `open`, skipping string literals.
fn matching_paren(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        if let Some(end) = string_literal_end(chars, i) {
            i = end;
            continue;
        }
        match chars[i] {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// If a string or bytes literal starts at `i` (`'a'`, `"a"`, `'''a'''`, `r'\d'`, `b"x"`), the
/// index just past it.
fn string_literal_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    let mut raw = false;
    // Prefixes: r, R, b, B, and their pairs (rb, br, ...), directly before the quote, and not
    // the end of a longer identifier.
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    while j < chars.len() && j - i < 2 && matches!(chars[j], 'r' | 'R' | 'b' | 'B') {
        raw |= matches!(chars[j], 'r' | 'R');
        j += 1;
    }
    let quote = *chars.get(j).filter(|c| **c == '\'' || **c == '"')?;
    let triple = chars.get(j..j + 3) == Some(&[quote, quote, quote][..]);
    let mut k = if triple { j + 3 } else { j + 1 };
    while k < chars.len() {
        if chars[k] == '\\' && !raw {
            k += 2;
            continue;
        }
        if triple {
            if chars.get(k..k + 3) == Some(&[quote, quote, quote][..]) {
                return Some(k + 3);
            }
        } else if chars[k] == quote {
            return Some(k + 1);
        }
        k += 1;
    }
    Some(chars.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ip_and_duration_calls_are_rewritten_and_nothing_else() {
        assert_eq!(rewrite_rule("self.size() > 0"), None);
        assert_eq!(rewrite_rule("self.duration > 1"), None);
        assert_eq!(rewrite_rule("'isCIDR(self)' == self"), None);
        let rewritten = rewrite_rule("isCIDR(self)").unwrap();
        assert!(
            rewritten.starts_with("(isCIDR(self) && !(self).matches('"),
            "{rewritten}"
        );
        let rewritten = rewrite_rule("duration(self.a) < duration('1s')").unwrap();
        assert_eq!(
            rewritten,
            "duration((self.a).replace('µs', 'us').replace('μs', 'us')) < duration(('1s').replace('µs', 'us').replace('μs', 'us'))"
        );
    }

    #[test]
    fn leading_zeros_are_refused_as_the_api_server_refuses_them() {
        let schema = json!({"type": "object", "properties": {"cidr": {"type": "string",
            "x-kubernetes-validations": [{"rule": "isCIDR(self)"}]}}});
        let rules = LocalRules::compile(&schema);
        let verdict = |cidr: &str| rules.evaluate(&json!({ "cidr": cidr }), None);
        assert!(verdict("10.0.0.0/8").is_empty());
        assert!(verdict("fe80::0123/64").is_empty());
        for bad in [
            "010.0.0.0/8",
            "10.0.0.0/08",
            "1.2.3.04/32",
            "2001:db8::1.2.3.04/128",
        ] {
            let failures = verdict(bad);
            assert_eq!(failures.len(), 1, "{bad}");
            assert_eq!(failures[0].rule, "isCIDR(self)");
            assert_eq!(failures[0].message, "failed rule: isCIDR(self)");
            assert_eq!(failures[0].field_path, "cidr");
        }
    }

    #[test]
    fn microseconds_are_durations_as_in_go() {
        let schema = json!({"type": "object", "properties": {"d": {"type": "string",
            "x-kubernetes-validations": [{"rule": "duration(self) < duration('1ms')", "message": "short"}]}}});
        let rules = LocalRules::compile(&schema);
        assert!(rules.evaluate(&json!({"d": "5µs"}), None).is_empty());
        assert!(rules.evaluate(&json!({"d": "5μs"}), None).is_empty());
        assert_eq!(
            rules.evaluate(&json!({"d": "5000µs"}), None)[0].message,
            "short"
        );
    }
}
