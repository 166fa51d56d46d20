//! Server-side apply's conflicts: an apply that would change a field another manager owns is
//! refused (409 Conflict, one cause per field) unless it is forced, as on the real server. The
//! manager's own `Update` entry counts as another manager there, and so it does here; a field
//! applied with the value it already has is shared, not a conflict.
//!
//! Leader election rests on this: two replicas applying themselves as the Lease's holder at the
//! same moment must not both succeed.
//!
//! Simplification (the sandbox's `fieldsV1` sets are simplified, see `patch::fields_v1`): only
//! scalar fields conflict. Lists, which the real server tracks item by item, and maps never do
//! here, so the sandbox may accept an apply the real server refuses, never the other way round.
//! A field no longer on the object conflicts with nobody (the real server drops removed fields
//! from every manager's set; the sandbox's sets keep them, so it judges by the object).

use serde_json::Value;

use super::errors::{ApiError, Cause};

/// One field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Sorts the managers as the real server's message does (by their encoded identifier).
    order: (String, String, String, String),
    /// As the real server prints it: `"name"`, `"name" using v1`, `... with subresource "status"`.
    manager: String,
    path: Vec<String>,
}

impl Conflict {
    fn field(&self) -> String {
        self.path.iter().map(|p| format!(".{p}")).collect()
    }
}

/// The conflicts of an apply by `manager` (to `subresource`) that turns `old` into `new`, given
/// the object's `managedFields` before it.
pub fn find(
    old: &Value,
    new: &Value,
    managed_fields: &Value,
    manager: &str,
    subresource: Option<&str>,
) -> Vec<Conflict> {
    let mut conflicts = Vec::new();
    for entry in managed_fields.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let operation = entry["operation"].as_str().unwrap_or_default();
        let entry_subresource = entry["subresource"].as_str();
        if entry["manager"] == manager && operation == "Apply" && entry_subresource == subresource {
            continue;
        }
        let name = entry["manager"].as_str().unwrap_or_default();
        let api_version = entry["apiVersion"].as_str().unwrap_or_default();
        let mut printed = format!("{name:?}");
        if let Some(sub) = entry_subresource {
            printed.push_str(&format!(" with subresource {sub:?}"));
        }
        if operation == "Update" {
            printed.push_str(&format!(" using {api_version}"));
        }
        let order = (
            name.to_string(),
            operation.to_string(),
            api_version.to_string(),
            entry_subresource.unwrap_or_default().to_string(),
        );
        let mut owned = Vec::new();
        leaves(&entry["fieldsV1"], &mut Vec::new(), &mut owned);
        for path in owned {
            let (Some(was), Some(now)) = (at(old, &path), at(new, &path)) else {
                continue;
            };
            let scalar = matches!(was, Value::String(_) | Value::Number(_) | Value::Bool(_));
            if scalar && was != now {
                conflicts.push(Conflict {
                    order: order.clone(),
                    manager: printed.clone(),
                    path,
                });
            }
        }
    }
    conflicts.sort_by(|a, b| (&a.order, &a.path).cmp(&(&b.order, &b.path)));
    conflicts.dedup();
    conflicts
}

/// The leaf fields (`f:` keys with nothing under them) of a `fieldsV1` set, as paths.
fn leaves(set: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Some(map) = set.as_object() else {
        return;
    };
    if map.is_empty() && !path.is_empty() {
        out.push(path.clone());
        return;
    }
    for (key, child) in map {
        if let Some(field) = key.strip_prefix("f:") {
            path.push(field.to_string());
            leaves(child, path, out);
            path.pop();
        }
    }
}

fn at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |v, field| v.get(field))
        .filter(|v| !v.is_null())
}

/// The real server's answer to an apply with `conflicts` (not empty).
pub fn refusal(conflicts: &[Conflict]) -> ApiError {
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager,
            one.field()
        ),
        _ => {
            let mut lines = Vec::new();
            let mut last: Option<&str> = None;
            for conflict in conflicts {
                if last != Some(conflict.manager.as_str()) {
                    lines.push(format!("conflicts with {}:", conflict.manager));
                    last = Some(&conflict.manager);
                }
                lines.push(format!("- {}", conflict.field()));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    let mut error = ApiError::failure(409, message);
    error.reason = "Conflict";
    error.details.causes = conflicts
        .iter()
        .map(|c| Cause {
            field: c.field(),
            message: format!("conflict with {}", c.manager),
            reason: "FieldManagerConflict".into(),
        })
        .collect();
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The `managedFields` entry of a write.
    fn entry(manager: &str, operation: &str, fields: Value) -> Value {
        json!({"manager": manager, "operation": operation, "apiVersion": "coordination.k8s.io/v1",
               "fieldsType": "FieldsV1", "fieldsV1": fields})
    }

    fn lease(holder: &str, renewed: &str) -> Value {
        json!({"spec": {"holderIdentity": holder, "renewTime": renewed,
                        "leaseDurationSeconds": 6}})
    }

    fn held_by_a() -> Value {
        json!([
            entry("creator", "Update", json!({"f:spec": {}})),
            entry(
                "lm-a",
                "Apply",
                json!({"f:spec": {"f:holderIdentity": {},
                "f:renewTime": {}, "f:leaseDurationSeconds": {}}})
            ),
            entry("upd-a", "Update", json!({"f:spec": {"f:renewTime": {}}})),
        ])
    }

    #[test]
    fn a_second_holder_conflicts_with_each_owner_of_what_it_changes_in_the_real_servers_words() {
        let old = lease("a", "01:00:00");
        let new = lease("b", "01:00:09");
        let conflicts = find(&old, &new, &held_by_a(), "lm-b", None);
        let refusal = refusal(&conflicts);
        assert_eq!((refusal.code, refusal.reason), (409, "Conflict"));
        assert_eq!(
            refusal.message,
            "Apply failed with 3 conflicts: conflicts with \"lm-a\":\n- .spec.holderIdentity\n\
             - .spec.renewTime\nconflicts with \"upd-a\" using coordination.k8s.io/v1:\n\
             - .spec.renewTime"
        );
        let causes: Vec<(&str, &str)> = refusal
            .details
            .causes
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect();
        assert_eq!(
            causes,
            [
                (".spec.holderIdentity", "conflict with \"lm-a\""),
                (".spec.renewTime", "conflict with \"lm-a\""),
                (
                    ".spec.renewTime",
                    "conflict with \"upd-a\" using coordination.k8s.io/v1"
                ),
            ]
        );
        // The same value is shared, not a conflict (leaseDurationSeconds above).
        let one = find(&old, &lease("b", "01:00:00"), &held_by_a(), "lm-b", None);
        assert_eq!(
            refusal_message(&one),
            "Apply failed with 1 conflict: conflict with \"lm-a\": .spec.holderIdentity"
        );
    }

    fn refusal_message(conflicts: &[Conflict]) -> String {
        refusal(conflicts).message
    }

    #[test]
    fn a_managers_own_apply_never_conflicts_but_its_own_update_does() {
        let old = lease("a", "01:00:00");
        let new = lease("a", "01:00:04");
        let only_its_apply = json!([entry(
            "lm-a",
            "Apply",
            json!({"f:spec": {
            "f:holderIdentity": {}, "f:renewTime": {}}})
        )]);
        assert!(find(&old, &new, &only_its_apply, "lm-a", None).is_empty());
        let its_update = json!([entry(
            "lm-a",
            "Update",
            json!({"f:spec": {"f:renewTime": {}}})
        )]);
        assert_eq!(
            refusal_message(&find(&old, &new, &its_update, "lm-a", None)),
            "Apply failed with 1 conflict: conflict with \"lm-a\" using coordination.k8s.io/v1: .spec.renewTime"
        );
    }

    #[test]
    fn fields_gone_from_the_object_lists_and_maps_conflict_with_nobody() {
        // Released (holder and renewTime nulled by a patch): taking the lease is no conflict.
        let released = json!({"spec": {"leaseDurationSeconds": 6}});
        assert!(
            find(
                &released,
                &lease("b", "01:00:09"),
                &held_by_a(),
                "lm-b",
                None
            )
            .is_empty()
        );
        let owned = json!([entry(
            "other",
            "Update",
            json!({
            "f:metadata": {"f:finalizers": {}, "f:labels": {}}})
        )]);
        let old = json!({"metadata": {"finalizers": ["x"], "labels": {"a": "1"}}});
        let new = json!({"metadata": {"finalizers": ["y"], "labels": {"a": "2"}}});
        assert!(find(&old, &new, &owned, "me", None).is_empty());
    }
}
