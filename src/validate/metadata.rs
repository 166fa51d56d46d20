//! `metadata` as the API server checks it for every object: a name (or generateName) that is a
//! DNS subdomain, a namespace that is a DNS label, label and annotation syntax, known fields.
//! Pure.

use serde_json::Value;

use super::{
    Finding,
    labels::{dns_label_problem, dns_subdomain_problem, label_key_problem, label_value_problem},
    schema::closest,
    yaml_lines::join_key,
};

const KNOWN_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Total size limit of all annotations of an object (256 KiB), as the API server enforces it.
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

pub fn check(metadata: Option<&Value>) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(metadata) = metadata else {
        out.push(Finding::new(
            "metadata",
            "metadata is missing; add metadata.name (e.g. metadata: {name: checkout-latency})",
        ));
        return out;
    };
    let Some(map) = metadata.as_object() else {
        out.push(Finding::new(
            "metadata",
            "must be a mapping with at least a name",
        ));
        return out;
    };
    for key in map.keys() {
        if !KNOWN_FIELDS.contains(&key.as_str()) {
            let hint = closest(key, KNOWN_FIELDS)
                .map_or_else(String::new, |k| format!(" (did you mean \"{k}\"?)"));
            out.push(Finding::new(
                &join_key("metadata", key),
                format!("unknown field \"{key}\"{hint}"),
            ));
        }
    }
    let string = |field: &str, out: &mut Vec<Finding>| -> Option<String> {
        match map.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                out.push(Finding::new(
                    &join_key("metadata", field),
                    format!("must be a string, not {other}"),
                ));
                None
            }
        }
    };
    let name = string("name", &mut out);
    let generate_name = string("generateName", &mut out);
    match (&name, &generate_name) {
        (Some(name), _) => {
            if let Some(problem) = dns_subdomain_problem(name) {
                out.push(Finding::new("metadata.name", problem));
            }
        }
        (None, Some(prefix)) => {
            // The server appends 5 random characters to the prefix.
            let probe = format!("{prefix}x");
            if let Some(problem) = dns_subdomain_problem(&probe) {
                out.push(Finding::new(
                    "metadata.generateName",
                    problem.replace(&format!("{probe:?}"), &format!("{prefix:?}")),
                ));
            }
        }
        (None, None) => out.push(Finding::new(
            "metadata.name",
            "metadata.name is missing (and there is no generateName); give the object a name",
        )),
    }
    if let Some(namespace) = string("namespace", &mut out)
        && let Some(problem) = dns_label_problem(&namespace)
    {
        out.push(Finding::new("metadata.namespace", problem));
    }
    check_string_map(map.get("labels"), "metadata.labels", true, &mut out);
    check_string_map(
        map.get("annotations"),
        "metadata.annotations",
        false,
        &mut out,
    );
    out
}

fn check_string_map(value: Option<&Value>, path: &str, labels: bool, out: &mut Vec<Finding>) {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return;
    };
    let Some(map) = value.as_object() else {
        out.push(Finding::new(
            path,
            "must be a mapping of keys to string values",
        ));
        return;
    };
    let mut total = 0;
    for (key, value) in map {
        let at = join_key(path, key);
        let Some(text) = value.as_str() else {
            out.push(Finding::new(
                &at,
                format!("must be a string, not {value} (put it in quotes)"),
            ));
            continue;
        };
        total += key.len() + text.len();
        let problem = label_key_problem(key).or_else(|| {
            if labels {
                label_value_problem(text)
            } else {
                None
            }
        });
        // The API server names the map, not the key (`metadata.labels: Invalid value: "a b"`).
        if let Some(problem) = problem {
            out.push(Finding::new(path, problem));
        }
    }
    if !labels && total > MAX_ANNOTATION_BYTES {
        out.push(Finding::new(
            path,
            format!("annotations take {total} bytes; the API server allows at most 262144"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check_json(value: Value) -> Vec<String> {
        check(Some(&value))
            .into_iter()
            .map(|f| format!("{}: {}", f.path, f.message))
            .collect()
    }

    #[test]
    fn a_name_or_generate_name_is_required() {
        assert_eq!(
            check_json(json!({"namespace": "shop"})),
            [
                "metadata.name: metadata.name is missing (and there is no generateName); give the object a name"
            ]
        );
        assert!(check_json(json!({"generateName": "latency-"})).is_empty());
        assert_eq!(check(None).len(), 1);
    }

    #[test]
    fn names_namespaces_labels_and_unknown_fields_are_checked() {
        let found = check_json(json!({
            "name": "Checkout",
            "namespace": "my_ns",
            "labels": {"team": "a b", "ok": 5},
            "annotations": {"bad key!": "x"},
            "lables": {},
        }));
        assert_eq!(found.len(), 6, "{found:#?}");
        assert!(found.contains(
            &"metadata.lables: unknown field \"lables\" (did you mean \"labels\"?)".to_string()
        ));
    }
}
