//! Kubernetes names, label syntax and label selectors that can never match. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Finding, yaml_lines::join_index, yaml_lines::join_key};

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', starting and ending alphanumeric
/// (namespaces, most names).
pub fn dns_label_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 63 {
        return Some(format!(
            "{name:?} is {} characters long; at most 63 are allowed",
            name.len()
        ));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !name.chars().all(ok_char) || name.starts_with('-') || name.ends_with('-') {
        return Some(format!(
            "{name:?} is not a valid name: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. {:?})",
            suggest_dns(name)
        ));
    }
    None
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters (object names).
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 253 {
        return Some(format!(
            "{name:?} is {} characters long; at most 253 are allowed",
            name.len()
        ));
    }
    let valid = name.split('.').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    (!valid).then(|| {
        format!(
            "{name:?} is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. {:?})",
            suggest_dns(name)
        )
    })
}

fn suggest_dns(name: &str) -> String {
    let lowered: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = lowered.trim_matches(|c: char| c == '-' || c == '.');
    if trimmed.is_empty() {
        "my-experiment".into()
    } else {
        trimmed.chars().take(63).collect()
    }
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain, the name at most 63
/// alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && dns_subdomain_problem(prefix).is_some()
    {
        return Some(format!(
            "key {key:?} has an invalid prefix {prefix:?}: it must be a DNS subdomain such as example.com"
        ));
    }
    if name.contains('/') || !is_label_name(name) {
        return Some(format!(
            "key {key:?} is not a valid label key: the name part must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    None
}

/// A label value: empty, or at most 63 characters of the label name syntax.
pub fn label_value_problem(value: &str) -> Option<String> {
    (!value.is_empty() && !is_label_name(value)).then(|| {
        format!(
            "value {value:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        )
    })
}

fn is_label_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(ok)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// What the requirements on one label key allow so far.
#[derive(Default)]
struct KeyConstraint {
    /// Values the key may take (None = any); intersected over matchLabels and `In`.
    allowed: Option<BTreeSet<String>>,
    forbidden: BTreeSet<String>,
    must_exist: bool,
    must_not_exist: bool,
}

impl KeyConstraint {
    fn impossible(&self) -> bool {
        let allowed_left = self
            .allowed
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|v| !self.forbidden.contains(v)));
        let needs_key = self.must_exist || self.allowed.is_some();
        !allowed_left || (self.must_not_exist && needs_key)
    }
}

/// Reports the requirements of a `metav1.LabelSelector` at `path` that contradict the ones
/// before them, so that no pod could ever match. Malformed requirements (an unknown operator,
/// values where none belong) are the CRD's to report and are skipped here.
pub fn check_selector(selector: &LabelSelector, path: &str, out: &mut Vec<Finding>) {
    let mut keys: BTreeMap<&str, KeyConstraint> = BTreeMap::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        let c = keys.entry(key).or_default();
        c.allowed = Some(BTreeSet::from([value.clone()]));
    }
    let exprs_path = join_key(path, "matchExpressions");
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values: BTreeSet<String> = expr.values.iter().flatten().cloned().collect();
        let c = keys.entry(&expr.key).or_default();
        let was_impossible = c.impossible();
        match (expr.operator.as_str(), values.is_empty()) {
            ("In", false) => {
                c.allowed = Some(match c.allowed.take() {
                    Some(allowed) => allowed.intersection(&values).cloned().collect(),
                    None => values,
                });
            }
            ("NotIn", false) => c.forbidden.extend(values),
            ("Exists", true) => c.must_exist = true,
            ("DoesNotExist", true) => c.must_not_exist = true,
            _ => continue,
        }
        if c.impossible() && !was_impossible {
            out.push(Finding::validate_only(
                "selectorNeverMatches",
                &join_index(&exprs_path, i),
                format!(
                    "this requirement on key {:?} contradicts the ones before it: the selector can never match any pod",
                    expr.key
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn check(labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> Vec<String> {
        let selector = LabelSelector {
            match_labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions: Some(exprs),
        };
        let mut out = Vec::new();
        check_selector(&selector, "sel", &mut out);
        out.into_iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn match_labels_and_in_with_another_value_can_never_match() {
        assert_eq!(
            check(&[("app", "a")], vec![expr("app", "In", &["b"])]),
            [
                "sel.matchExpressions[0]: this requirement on key \"app\" contradicts the ones before it: the selector can never match any pod"
            ]
        );
        assert!(check(&[("app", "a")], vec![expr("app", "In", &["a", "b"])]).is_empty());
    }

    #[test]
    fn not_in_exists_and_does_not_exist_contradictions_are_found() {
        assert_eq!(
            check(&[("app", "a")], vec![expr("app", "NotIn", &["a"])]).len(),
            1
        );
        assert_eq!(
            check(
                &[],
                vec![expr("app", "Exists", &[]), expr("app", "DoesNotExist", &[])]
            )
            .len(),
            1
        );
        assert_eq!(
            check(&[("app", "a")], vec![expr("app", "DoesNotExist", &[])]).len(),
            1
        );
        assert_eq!(
            check(
                &[],
                vec![expr("app", "In", &["a"]), expr("app", "In", &["b"])]
            )
            .len(),
            1
        );
        // NotIn and Exists together are fine: pods with other values match.
        assert!(
            check(
                &[],
                vec![expr("app", "Exists", &[]), expr("app", "NotIn", &["a"])]
            )
            .is_empty()
        );
    }

    #[test]
    fn malformed_requirements_are_left_to_the_crd() {
        assert!(check(&[], vec![expr("app", "In", &[])]).is_empty());
        assert!(check(&[], vec![expr("app", "Exists", &["x"])]).is_empty());
        assert!(check(&[("app", "a")], vec![expr("app", "in", &["b"])]).is_empty());
    }

    #[test]
    fn label_keys_and_values_follow_kubernetes_syntax() {
        assert_eq!(label_key_problem("app.kubernetes.io/name"), None);
        assert_eq!(label_key_problem("app"), None);
        assert!(label_key_problem("Bad_Prefix/name").is_some());
        assert!(label_key_problem("-app").is_some());
        assert!(label_key_problem("a/b/c").is_some());
        assert_eq!(label_value_problem(""), None);
        assert!(label_value_problem("has space").is_some());
        assert!(label_value_problem(&"x".repeat(64)).is_some());
    }

    #[test]
    fn names_follow_rfc_1123() {
        assert_eq!(dns_subdomain_problem("checkout-latency.v2"), None);
        assert_eq!(
            dns_subdomain_problem("Checkout_Latency"),
            Some("\"Checkout_Latency\" is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit (e.g. \"checkout-latency\")".into())
        );
        assert!(dns_label_problem("a.b").is_some());
        assert!(dns_label_problem(&"a".repeat(64)).is_some());
        assert_eq!(dns_label_problem("shop"), None);
    }
}
