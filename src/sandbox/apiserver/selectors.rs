//! Label and field selectors: parsing and matching (pure, no I/O).
//!
//! Label selectors support the full string syntax of the real server: equality (`=`, `==`, `!=`),
//! set-based (`in`, `notin`), existence (`key`) and non-existence (`!key`), comma-joined (AND).
//! Field selectors support `=`, `==` and `!=` on dotted paths; which paths a resource accepts is
//! decided by the caller (see `resources::field_selectable`), as the real server rejects
//! unsupported field labels with 400.

use serde_json::Value;
use std::collections::BTreeSet;

/// Selectors longer than this are refused, so that a hostile query cannot make us do
/// unbounded work (the real server is bounded by its URL length limit).
pub const MAX_SELECTOR_LEN: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelReq>);

/// Split on commas that are not inside parentheses (`a in (x,y),b` has two terms).
fn split_terms(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!("unbalanced parenthesis in {s:?}")));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!("unbalanced parenthesis in {s:?}")));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn key(k: &str) -> Result<String, SelectorError> {
    let k = k.trim();
    if valid_key(k) {
        Ok(k.to_string())
    } else {
        Err(SelectorError(format!("invalid label key {k:?}")))
    }
}

fn value(v: &str) -> Result<String, SelectorError> {
    let v = v.trim();
    if valid_value(v) {
        Ok(v.to_string())
    } else {
        Err(SelectorError(format!("invalid label value {v:?}")))
    }
}

fn parse_set_term(
    term: &str,
    op: &str,
) -> Result<Option<(String, BTreeSet<String>)>, SelectorError> {
    // `key in (a,b)`: find ` op ` followed by `(`.
    let needle = format!(" {op} ");
    let Some(pos) = term.find(&needle).or_else(|| term.find(&format!(" {op}("))) else {
        return Ok(None);
    };
    let k = key(&term[..pos])?;
    let rest = term[pos + op.len() + 1..].trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError(format!("expected '(...)' after {op} in {term:?}")))?;
    let mut values = BTreeSet::new();
    for v in inner.split(',') {
        values.insert(value(v)?);
    }
    Ok(Some((k, values)))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError("selector too long".into()));
        }
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_terms(s)? {
            let term = term.trim();
            if term.is_empty() {
                return Err(SelectorError(format!("empty requirement in {s:?}")));
            }
            if let Some((k, v)) = parse_set_term(term, "notin")? {
                reqs.push(LabelReq::NotIn(k, v));
            } else if let Some((k, v)) = parse_set_term(term, "in")? {
                reqs.push(LabelReq::In(k, v));
            } else if let Some((k, v)) = term.split_once("!=") {
                reqs.push(LabelReq::NotEq(key(k)?, value(v)?));
            } else if let Some((k, v)) = term.split_once("==") {
                reqs.push(LabelReq::Eq(key(k)?, value(v)?));
            } else if let Some((k, v)) = term.split_once('=') {
                reqs.push(LabelReq::Eq(key(k)?, value(v)?));
            } else if let Some(k) = term.strip_prefix('!') {
                reqs.push(LabelReq::NotExists(key(k)?));
            } else {
                reqs.push(LabelReq::Exists(key(term)?));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether `labels` (the object's `metadata.labels`, possibly absent) satisfies every requirement.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            // As in Kubernetes: `!=` also matches objects without the label.
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldReq {
    pub path: String,
    pub value: String,
    pub negate: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldReq>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.len() > MAX_SELECTOR_LEN {
            return Err(SelectorError("selector too long".into()));
        }
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for term in s.split(',') {
            let term = term.trim();
            let (path, val, negate) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, v, false)
            } else {
                return Err(SelectorError(format!("invalid field selector: {term:?}")));
            };
            let path = path.trim();
            if path.is_empty() || !path.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                return Err(SelectorError(format!("invalid field selector: {term:?}")));
            }
            reqs.push(FieldReq {
                path: path.to_string(),
                value: val.trim().to_string(),
                negate,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Field paths used by this selector (checked against the resource's allowed set).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| r.path.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_with(|path| field_value(obj, path))
    }

    /// Like [`FieldSelector::matches`], with the value of each field label from `value` (for
    /// resources whose labels are not plain paths, e.g. an Event's `source`).
    pub fn matches_with(&self, value: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|r| (value(&r.path) == r.value) != r.negate)
    }
}

/// The string form of a dotted field path; absent fields compare as "" like in Kubernetes.
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(sel: &str, labels: Value) -> bool {
        LabelSelector::parse(sel).unwrap().matches(Some(&labels))
    }

    #[test]
    fn equality() {
        assert!(m("app=web", json!({"app": "web"})));
        assert!(m("app==web", json!({"app": "web"})));
        assert!(!m("app=web", json!({"app": "db"})));
        assert!(m("app!=web", json!({"app": "db"})));
        assert!(m("app!=web", json!({})));
        assert!(m("app=web,tier=fe", json!({"app": "web", "tier": "fe"})));
        assert!(!m("app=web,tier=fe", json!({"app": "web"})));
        assert!(m("app=", json!({"app": ""})));
    }

    #[test]
    fn set_based() {
        assert!(m("env in (prod, staging)", json!({"env": "prod"})));
        assert!(!m("env in (prod,staging)", json!({"env": "dev"})));
        assert!(!m("env in (prod)", json!({})));
        assert!(m("env notin (prod)", json!({"env": "dev"})));
        assert!(m("env notin (prod)", json!({})));
        assert!(m("env in (a,b),app=x", json!({"env": "b", "app": "x"})));
    }

    #[test]
    fn existence() {
        assert!(m("app", json!({"app": "x"})));
        assert!(!m("app", json!({})));
        assert!(m("!app", json!({})));
        assert!(!m("!app", json!({"app": "x"})));
        assert!(LabelSelector::parse("").unwrap().matches(None));
        assert!(!LabelSelector::parse("a").unwrap().matches(None));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "a in (b", "a in b)", "=x", "a=b=c", ",", "a,,b", "a in (", "a!=(x)", "a b",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
        assert!(LabelSelector::parse(&"a".repeat(MAX_SELECTOR_LEN + 1)).is_err());
    }

    #[test]
    fn fields() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = |s: &str| FieldSelector::parse(s).unwrap().matches(&pod);
        assert!(f("metadata.name=p"));
        assert!(f("metadata.name==p,metadata.namespace=ns"));
        assert!(f("spec.nodeName!=n2"));
        assert!(!f("status.phase=Pending"));
        assert!(f("spec.missing="));
        assert!(FieldSelector::parse("nope").is_err());
        assert_eq!(
            FieldSelector::parse("a.b=c")
                .unwrap()
                .paths()
                .collect::<Vec<_>>(),
            vec!["a.b"]
        );
    }
}
