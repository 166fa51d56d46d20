//! CustomResourceDefinitions: registering their resource on create/update, the status the real
//! server reports (`NamesAccepted`, `Established`, `acceptedNames`, `storedVersions`), and
//! removing the resource and its objects when the CRD is deleted.
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

/// Validate a CRD and fill in its status.
pub fn prepare(crd: &mut Value) -> ApiResult<()> {
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
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
