//! CustomResourceDefinitions: registering their resource on create/update, the status the real
//! server reports (`NamesAccepted`, `Established`, `acceptedNames`, `storedVersions`), and
//! the deletion as the real server carries it out: the CRD is marked (its cleanup finalizer,
//! condition `Terminating`), refuses new objects (403), deletes every object of its resource,
//! each through the usual deletion so that a finalizer holds it (and the CRD) until its owner
//! lets go, and goes with the last of them.
//!
//! A CRD whose CEL rules cost more than the real server's budget is refused as the real server
//! refuses it (`crd_validation::cost`: the same estimate, the same limits, the same errors), and
//! so is one with a malformed rule entry (`crd_rules`).
//!
//! Simplification: a CRD is Established at once (the real server takes a moment); name conflicts
//! between CRDs are not detected.

use super::State;
use super::crd_rules;
use super::errors::{ApiError, ApiResult, Cause};
use super::meta;
use super::resources::{ResKey, ResourceDef, def_from_crd};
use serde_json::{Value, json};

pub fn is_crd(def: &ResourceDef) -> bool {
    def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions"
}

/// `check` run on each version's `openAPIV3Schema`, with fields under the path the real server
/// names it by: `spec.validation` when every version has the same schema (the server then keeps
/// one), `spec.versions[i].schema` otherwise.
fn per_schema(crd: &Value, check: impl Fn(&Value, &str) -> Vec<Cause>) -> Vec<Cause> {
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
        causes.extend(check(schema, &prefix));
    }
    causes
}

/// The real server's refusal of CRDs whose CEL rules cost more than its budget: one error per
/// rule over the per-rule limit, and for a total over the CRD limit, the (up to) four rules
/// that contribute most and the total.
fn cel_budget(schema: &Value, prefix: &str) -> Vec<Cause> {
    use crate::crd_validation::cost;
    let costs = cost::estimate_schema(schema);
    cost::budget_errors(&costs, prefix)
        .into_iter()
        .map(|(field, message)| Cause {
            field,
            message,
            reason: "FieldValueForbidden".into(),
        })
        .collect()
}

/// Validate a CRD and fill in its status.
pub fn prepare(crd: &mut Value) -> ApiResult<()> {
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // A malformed rule entry stops the real server before it costs any rule.
    let mut refused = per_schema(crd, crd_rules::shape_errors);
    if refused.is_empty() {
        refused = per_schema(crd, cel_budget);
    }
    if !refused.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            &name,
            refused,
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

/// The finalizer the real server puts on a CRD when it is deleted, and removes once every object
/// of its resource is gone.
const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// Marks `crd` for deletion and deletes the objects of its resource; the CRD goes with the
/// last of them (at once when there are none). Returns the CRD as the DELETE answers it.
pub fn begin_deletion(st: &mut State, crd: &Value) -> Value {
    if crd["metadata"].get("deletionTimestamp").is_some() {
        return crd.clone();
    }
    let mut marked = crd.clone();
    marked["metadata"]["deletionTimestamp"] = json!(meta::now());
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    marked["metadata"]["finalizers"] = json!([CLEANUP_FINALIZER]);
    if let Some(conditions) = marked["status"]["conditions"].as_array_mut() {
        conditions.retain(|c| c["type"] != "Terminating");
        conditions.push(json!({"type": "Terminating", "status": "True",
            "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress",
            "lastTransitionTime": meta::now()}));
    }
    let marked = st.store.put(&crd_key(), marked);
    if let Ok(def) = def_from_crd(&marked) {
        proceed(st, &def.key());
    }
    marked
}

/// The real server's answer to a create of an object whose CRD is being deleted.
pub fn refuse_while_terminating(st: &State, def: &ResourceDef, name: &str) -> ApiResult<()> {
    if def.is_custom() && terminating_crd(st, &def.key()).is_some() {
        return Err(ApiError::forbidden(
            &def.group,
            &def.plural,
            name,
            "create not allowed while custom resource definition is terminating",
        ));
    }
    Ok(())
}

/// After an object of resource `key` went: if its CRD is being deleted, delete what may be
/// deleted now, and the CRD (and its resource) once nothing of it is left.
pub fn proceed(st: &mut State, key: &ResKey) {
    let Some(crd) = terminating_crd(st, key) else {
        return;
    };
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Deleting objects removes them, and each removal comes back here: once is enough.
    if !st.ending.insert(format!("crd/{name}")) {
        return;
    }
    let objects: Vec<(String, String, bool)> = st
        .store
        .list(key, None)
        .map(|o| {
            let (ns, name) = super::store::obj_key(o);
            (ns, name, o["metadata"].get("deletionTimestamp").is_some())
        })
        .collect();
    for (ns, object, _) in objects.into_iter().filter(|(_, _, marked)| !marked) {
        let _ = super::gc::delete(st, key, &ns, &object, &super::gc::DeleteOpts::background());
    }
    st.ending.remove(&format!("crd/{name}"));
    if st.store.list(key, None).next().is_none() {
        st.registry.remove(key);
        super::gc::remove_now(st, &crd_key(), "", &name);
        tracing::info!(resource = %key.plural, group = %key.group, "custom resource unregistered with its last object");
    }
}

/// The CRD that defines `key`, when it is being deleted.
fn terminating_crd(st: &State, key: &ResKey) -> Option<Value> {
    let def = st.registry.by_key(key)?;
    if !def.is_custom() {
        return None;
    }
    let crd = st
        .store
        .get(&crd_key(), "", &format!("{}.{}", key.plural, key.group))?;
    crd["metadata"]
        .get("deletionTimestamp")
        .map(|_| crd.clone())
}

fn crd_key() -> ResKey {
    ResKey {
        group: "apiextensions.k8s.io".into(),
        plural: "customresourcedefinitions".into(),
    }
}

/// Remove the CRD's resource and every object of it at once (when the CRD goes without its
/// cleanup: its finalizer removed by hand).
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
