//! CustomResourceDefinitions: registering their resource on create/update, the status the real
//! server reports (`NamesAccepted`, `Established`, `acceptedNames`, `storedVersions`), and
//! removing the resource and its objects when the CRD is deleted.
//!
//! A CRD whose CEL rules cost more than the real server's budget is refused as the real server
//! refuses it (`crd_validation::cost`: the same estimate, the same limits, the same errors).
//!
//! Simplification: a CRD is Established at once (the real server takes a moment); name conflicts
//! between CRDs are not detected.

use super::State;
use super::errors::{ApiError, ApiResult, Cause};
use super::meta;
use super::resources::{ResourceDef, def_from_crd};
use serde_json::{Value, json};

pub fn is_crd(def: &ResourceDef) -> bool {
    def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions"
}

/// The real server's refusal of CRDs whose CEL rules cost more than its budget: one error per
/// rule over the per-rule limit, and for a total over the CRD limit, the (up to) four rules
/// that contribute most and the total. Paths as the server names them: `spec.validation` when
/// every version has the same schema (the server then keeps one), `spec.versions[i].schema`
/// otherwise.
fn cel_budget(crd: &Value) -> Vec<Cause> {
    use crate::crd_validation::cost;
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let schemas: Vec<&Value> = versions
        .iter()
        .map(|v| &v["schema"]["openAPIV3Schema"])
        .collect();
    let shared = schemas.windows(2).all(|w| w[0] == w[1]);
    let mut causes = Vec::new();
    for (i, schema) in schemas.iter().enumerate() {
        if schema.is_null() || (shared && i > 0) {
            continue;
        }
        let prefix = if shared {
            "spec.validation".to_string()
        } else {
            format!("spec.versions[{i}].schema")
        };
        let costs = cost::estimate_schema(schema);
        causes.extend(
            cost::budget_errors(&costs, &prefix)
                .into_iter()
                .map(|(field, message)| Cause {
                    field,
                    message,
                    reason: "FieldValueForbidden".into(),
                }),
        );
    }
    causes
}

/// Validate a CRD and fill in its status.
pub fn prepare(crd: &mut Value) -> ApiResult<()> {
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let budget = cel_budget(crd);
    if !budget.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &name,
            budget,
        ));
    }
    let def = def_from_crd(crd).map_err(|errs| {
        let causes = errs
            .into_iter()
            .map(|(field, message)| Cause {
                field,
                message,
                reason: "FieldValueInvalid".into(),
            })
            .collect();
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &name,
            causes,
        )
    })?;
    let now = meta::now();
    let keep_time = |t: &str| {
        crd["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .and_then(|c| c["lastTransitionTime"].as_str().map(String::from))
            .unwrap_or_else(|| now.clone())
    };
    let mut accepted = json!({
        "plural": def.plural,
        "singular": def.singular,
        "kind": def.kind,
        "listKind": crd["spec"]["names"]["listKind"].as_str().map(String::from).unwrap_or(format!("{}List", def.kind)),
    });
    if !def.short_names.is_empty() {
        accepted["shortNames"] = json!(def.short_names);
    }
    if !def.categories.is_empty() {
        accepted["categories"] = json!(def.categories);
    }
    let storage = def.versions.first().cloned().unwrap_or_default();
    let mut stored: Vec<Value> = crd["status"]["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&json!(storage)) {
        stored.push(json!(storage));
    }
    crd["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": keep_time("NamesAccepted")},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": keep_time("Established")},
        ],
        "acceptedNames": accepted,
        "storedVersions": stored,
    });
    Ok(())
}

/// Make the CRD's resource servable (called after the CRD object is stored).
pub fn register(st: &mut State, crd: &Value) {
    match def_from_crd(crd) {
        Ok(def) => {
            tracing::info!(group = %def.group, plural = %def.plural, versions = ?def.versions, "custom resource registered");
            st.registry.upsert(def);
        }
        Err(errs) => tracing::warn!(?errs, "stored CRD could not be registered"),
    }
}

/// Remove the CRD's resource and every object of it (called when the CRD is deleted).
pub fn unregister(st: &mut State, crd: &Value) {
    let Ok(def) = def_from_crd(crd) else { return };
    let key = def.key();
    let objects: Vec<(String, String)> = st
        .store
        .list(&key, None)
        .map(super::store::obj_key)
        .collect();
    for (ns, name) in objects {
        super::gc::remove_now(st, &key, &ns, &name);
    }
    st.registry.remove(&key);
    tracing::info!(group = %def.group, plural = %def.plural, "custom resource unregistered");
}
