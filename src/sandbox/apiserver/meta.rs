//! Object metadata rules shared by the write handlers: names, server-set fields, generation,
//! status isolation and managedFields.

use super::errors::Cause;
use super::patch::fields_v1;
use super::resources::ResourceDef;
use rand::Rng;
use serde_json::{Value, json};

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The 5-character suffix the real server appends to `generateName` (consonants and digits).
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain as Kubernetes checks one: at most 253 characters, dot-separated labels
/// of lowercase alphanumerics and '-' (a label is not limited to 63 characters here).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

const LABEL_KEY_NAME_MESSAGE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

fn is_label_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    !name.is_empty()
        && name.chars().all(ok)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// What Kubernetes says of a label key (apimachinery's `content.IsLabelKey`), one message per
/// problem; empty when it is valid.
pub fn label_key_problems(key: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                problems.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    problems.push("prefix part must be no more than 253 bytes".to_string());
                }
                if !is_dns_subdomain_shape(prefix) {
                    problems.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
                }
            }
            name
        }
        _ => {
            return vec![format!(
                "a valid label key {LABEL_KEY_NAME_MESSAGE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )];
        }
    };
    if name.is_empty() {
        problems.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        problems.push("name part must be no more than 63 bytes".to_string());
    }
    if !is_label_name(name) {
        problems.push(format!("name part {LABEL_KEY_NAME_MESSAGE}"));
    }
    problems
}

fn is_dns_subdomain_shape(s: &str) -> bool {
    s.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// What Kubernetes says of a label value (`content.IsLabelValue`).
pub fn label_value_problems(value: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if value.len() > 63 {
        problems.push("must be no more than 63 bytes".to_string());
    }
    if !value.is_empty() && !is_label_name(value) {
        problems.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    problems
}

/// `metadata.labels` and `metadata.annotations` as `ValidateObjectMeta` checks them: every
/// problem names the map, with the bad key or value as the value.
pub fn validate_labels_and_annotations(obj: &Value) -> Vec<Cause> {
    let invalid = |field: &str, value: &str, message: String| Cause {
        field: field.into(),
        message: format!(
            "Invalid value: {}: {message}",
            crate::crd_validation::formats::go_quote(value)
        ),
        reason: "FieldValueInvalid".into(),
    };
    let mut causes = Vec::new();
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (key, value) in labels {
            for problem in label_key_problems(key) {
                causes.push(invalid("metadata.labels", key, problem));
            }
            for problem in label_value_problems(value.as_str().unwrap_or_default()) {
                causes.push(invalid(
                    "metadata.labels",
                    value.as_str().unwrap_or_default(),
                    problem,
                ));
            }
        }
    }
    if let Some(annotations) = obj["metadata"]["annotations"].as_object() {
        let mut total = 0;
        for (key, value) in annotations {
            total += key.len() + value.as_str().map_or(0, str::len);
            // The rule is a label key's, but case does not matter.
            for problem in label_key_problems(&key.to_lowercase()) {
                causes.push(invalid("metadata.annotations", key, problem));
            }
        }
        if total > 262_144 {
            causes.push(Cause {
                field: "metadata.annotations".into(),
                message: "Too long: may not be more than 262144 bytes".into(),
                reason: "FieldValueTooLong".into(),
            });
        }
    }
    causes
}

/// Validate `metadata.name` the way the real server does for the resource.
pub fn validate_name(def: &ResourceDef, name: &str) -> Option<Cause> {
    let (ok, what) = if def.plural == "namespaces" {
        (
            is_dns_label(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        )
    } else {
        (
            is_dns_subdomain(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or \
             '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used \
             for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    };
    (!ok).then(|| Cause {
        field: "metadata.name".into(),
        message: format!("Invalid value: {name:?}: {what}"),
        reason: "FieldValueInvalid".into(),
    })
}

/// The object without metadata (and without status when status is a subresource): what
/// "spec" means for the generation counter.
fn spec_part(obj: &Value, has_status: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if has_status {
            m.remove("status");
        }
    }
    v
}

pub fn spec_changed(old: &Value, new: &Value, has_status: bool) -> bool {
    spec_part(old, has_status) != spec_part(new, has_status)
}

/// Equal apart from resourceVersion and managedFields (a write that changes nothing is not stored).
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(md) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            md.remove("resourceVersion");
            md.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or_default()
}

/// Record a managedFields entry for `manager`, replacing its previous entry for the same
/// operation and subresource.
pub fn record_managed_fields(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
    body: &Value,
) {
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(body),
    });
    if let Some(s) = subresource {
        entry["subresource"] = json!(s);
    }
    let mut list: Vec<Value> = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.retain(|e| {
        !(e["manager"] == manager
            && e["operation"] == operation
            && e["subresource"].as_str() == subresource)
    });
    list.push(entry);
    obj["metadata"]["managedFields"] = Value::Array(list);
}

/// Manager name of a non-apply write: `fieldManager` or the user agent's program name.
pub fn update_manager(field_manager: Option<&str>, user_agent: Option<&str>) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    user_agent
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("A"));
        assert!(!is_dns_subdomain("a_b"));
        assert!(!is_dns_subdomain(""));
        assert_eq!(name_suffix().len(), 5);
    }

    #[test]
    fn generation_ignores_status_and_metadata() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"p": 1}});
        let b = json!({"metadata": {"labels": {"a": "2"}}, "spec": {"x": 1}, "status": {"p": 2}});
        assert!(!spec_changed(&a, &b, true));
        assert!(spec_changed(&a, &b, false));
        let c = json!({"metadata": {}, "spec": {"x": 2}});
        assert!(spec_changed(&a, &c, true));
    }

    #[test]
    fn managed_fields_replace_same_manager() {
        let mut o = json!({"metadata": {}});
        record_managed_fields(&mut o, "m", "Apply", "v1", None, &json!({"spec": {"a": 1}}));
        record_managed_fields(&mut o, "m", "Apply", "v1", None, &json!({"spec": {"b": 1}}));
        record_managed_fields(
            &mut o,
            "m",
            "Apply",
            "v1",
            Some("status"),
            &json!({"status": {}}),
        );
        let mf = o["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2);
        assert_eq!(mf[0]["fieldsV1"], json!({"f:spec": {"f:b": {}}}));
    }
}
