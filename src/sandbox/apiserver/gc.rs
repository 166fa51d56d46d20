//! Deletion: DELETE and deletecollection, finalizers, ownerReference garbage collection, and the
//! cascades of namespace and CRD deletion.
//!
//! Simplifications (documented for test authors):
//! * Garbage collection runs synchronously inside the deleting request instead of in a
//!   background controller: dependents are gone (or marked for deletion when they carry
//!   finalizers) by the time the owner's DELETE returns. Observable order is the same as the real
//!   background policy, only faster.
//! * `propagationPolicy=Foreground` is treated as `Background` (no `foregroundDeletion`
//!   finalizer on the owner).
//! * `propagationPolicy=Orphan` removes the owner's reference from its dependents at once (the
//!   real server does it through the `orphan` finalizer).
//! * A dependent with several owners is deleted only when none of its owners remains; otherwise
//!   only the reference to the deleted owner is dropped.
//! * A namespace's DELETE marks it `Terminating` and deletes its content through the rules
//!   here, pods first (see `namespaces`); a CRD's DELETE its objects likewise (see `crd`).
//! * Pods are deleted at once (no kubelet, so no graceful termination period), unless they carry
//!   finalizers: then, as in the real server, a scheduled, non-terminal pod gets
//!   `deletionTimestamp = now + grace` and `deletionGracePeriodSeconds = grace` (from the
//!   DeleteOptions, else `spec.terminationGracePeriodSeconds`, else 30), which a kubelet (the
//!   sandbox's workload simulator) honours before it confirms the deletion.

use super::errors::{ApiError, ApiResult};
use super::meta;
use super::resources::ResKey;
use super::{State, namespace_key};
use serde_json::{Value, json};
use std::collections::HashSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Orphan,
}

/// DELETE options gathered from the query and the optional DeleteOptions body.
#[derive(Debug, Clone)]
pub struct DeleteOpts {
    pub propagation: Propagation,
    pub dry_run: bool,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `gracePeriodSeconds` (body or query); only pods use it.
    pub grace_period_seconds: Option<i64>,
}

impl DeleteOpts {
    /// A plain DELETE, as the server's own controllers send one (garbage collection, a
    /// namespace's or a CRD's cleanup).
    pub fn background() -> Self {
        DeleteOpts {
            propagation: Propagation::Background,
            dry_run: false,
            precondition_uid: None,
            precondition_rv: None,
            grace_period_seconds: None,
        }
    }

    pub fn from_request(
        query_policy: Option<&str>,
        query_dry_run: bool,
        body: Option<&Value>,
    ) -> ApiResult<Self> {
        let body_policy = body.and_then(|b| b["propagationPolicy"].as_str());
        let orphan_flag = body.and_then(|b| b["orphanDependents"].as_bool());
        let policy = query_policy.filter(|p| !p.is_empty()).or(body_policy);
        let propagation = match (policy, orphan_flag) {
            (Some("Orphan"), _) | (None, Some(true)) => Propagation::Orphan,
            (Some("Background") | Some("Foreground") | None, _) => Propagation::Background,
            (Some(other), _) => {
                return Err(ApiError::bad_request(format!(
                    "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        };
        let dry_run = query_dry_run
            || body
                .and_then(|b| b["dryRun"].as_array())
                .is_some_and(|a| a.iter().any(|v| v == "All"));
        let pre = body.map(|b| &b["preconditions"]);
        Ok(DeleteOpts {
            propagation,
            dry_run,
            precondition_uid: pre.and_then(|p| p["uid"].as_str()).map(String::from),
            precondition_rv: pre
                .and_then(|p| p["resourceVersion"].as_str())
                .map(String::from),
            grace_period_seconds: body.and_then(|b| b["gracePeriodSeconds"].as_i64()),
        })
    }
}

/// Delete one object. Returns the object (marked for deletion, or as it was when removed).
pub fn delete(
    st: &mut State,
    key: &ResKey,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> ApiResult<Value> {
    let (group, plural) = (key.group.clone(), key.plural.clone());
    let old = st
        .store
        .get(key, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&group, &plural, name))?;
    if let Some(uid) = &opts.precondition_uid
        && uid != meta::uid(&old)
    {
        let mut e = ApiError::conflict(&group, &plural, name);
        e.message = format!(
            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
            meta::uid(&old)
        );
        return Err(e);
    }
    if let Some(rv) = &opts.precondition_rv
        && Some(rv.as_str()) != old["metadata"]["resourceVersion"].as_str()
    {
        let mut e = ApiError::conflict(&group, &plural, name);
        e.message = format!(
            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
            old["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
        );
        return Err(e);
    }
    if opts.dry_run {
        return Ok(old);
    }
    if opts.propagation == Propagation::Orphan {
        orphan_dependents(st, meta::uid(&old));
    }
    if *key == namespace_key() {
        return Ok(super::namespaces::begin(st, &old, name));
    }
    if st.registry.by_key(key).is_some_and(super::crd::is_crd) {
        return Ok(super::crd::begin_deletion(st, &old));
    }
    if !meta::finalizers(&old).is_empty() {
        if old["metadata"].get("deletionTimestamp").is_some() {
            // A second DELETE may shorten a pod's grace period (never lengthen it); a kubelet
            // confirms a finished termination this way with a grace period of 0.
            let current = old["metadata"]["deletionGracePeriodSeconds"]
                .as_i64()
                .unwrap_or(0);
            let wanted = grace_period(key, &old, opts.grace_period_seconds);
            if wanted >= current {
                return Ok(old);
            }
            let mut shortened = old.clone();
            let at = chrono::Utc::now() + chrono::Duration::seconds(wanted);
            shortened["metadata"]["deletionTimestamp"] =
                json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            shortened["metadata"]["deletionGracePeriodSeconds"] = json!(wanted);
            return Ok(st.store.put(key, shortened));
        }
        let mut marked = old.clone();
        let grace = grace_period(key, &old, opts.grace_period_seconds);
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        marked["metadata"]["deletionTimestamp"] =
            json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
        marked["metadata"]["generation"] = json!(g + 1);
        tracing::debug!(resource = %plural, namespace = %ns, name = %name, "deletion pending on finalizers");
        return Ok(st.store.put(key, marked));
    }
    finish_deletion(st, key, ns, name).ok_or_else(|| ApiError::not_found(&group, &plural, name))
}

/// The graceful deletion period the real pod strategy (`CheckGracefulDelete`) picks: pods that
/// were never scheduled or have finished go at once; other kinds have no grace period.
fn grace_period(key: &ResKey, obj: &Value, requested: Option<i64>) -> i64 {
    if !(key.group.is_empty() && key.plural == "pods") {
        return 0;
    }
    let unscheduled = obj["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let finished = matches!(
        obj["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || finished {
        return 0;
    }
    requested
        .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}

/// Remove an object whose deletion may proceed, with the cascades its kind implies (a CRD's
/// resource and objects, owned dependents).
pub fn finish_deletion(st: &mut State, key: &ResKey, ns: &str, name: &str) -> Option<Value> {
    let is_crd = st.registry.by_key(key).is_some_and(super::crd::is_crd);
    if is_crd && let Some(obj) = st.store.get(key, ns, name).cloned() {
        super::crd::unregister(st, &obj);
    }
    remove_now(st, key, ns, name)
}

/// Remove an object from storage now and collect its dependents.
pub fn remove_now(st: &mut State, key: &ResKey, ns: &str, name: &str) -> Option<Value> {
    let removed = st.store.remove(key, ns, name)?;
    tracing::debug!(resource = %key.plural, namespace = %ns, name = %name, "removed");
    collect_dependents(st, meta::uid(&removed).to_string());
    // Its namespace, or its CRD, may be waiting for it to go.
    super::namespaces::proceed(st, ns);
    super::crd::proceed(st, key);
    Some(removed)
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn without_owner(obj: &Value, uid: &str) -> Value {
    let mut o = obj.clone();
    if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
        refs.retain(|r| r["uid"].as_str() != Some(uid));
        if refs.is_empty()
            && let Some(m) = o["metadata"].as_object_mut()
        {
            m.remove("ownerReferences");
        }
    }
    o
}

fn orphan_dependents(st: &mut State, uid: &str) {
    for (key, obj) in st.store.all_objects() {
        if owner_uids(&obj).iter().any(|u| u == uid) {
            st.store.put(&key, without_owner(&obj, uid));
        }
    }
}

/// Background garbage collection of the dependents of a removed owner.
fn collect_dependents(st: &mut State, owner_uid: String) {
    if owner_uid.is_empty() {
        return;
    }
    // Every removal lands here: find the dependents by reference and copy only them (copying
    // the whole store per removal made each deletion cost as much as the cluster is big).
    let dependents: Vec<(ResKey, Value)> = st
        .store
        .iter_all()
        .filter(|(_, o)| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(&owner_uid)))
        })
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    if dependents.is_empty() {
        return;
    }
    let live: HashSet<String> = st
        .store
        .iter_all()
        .map(|(_, o)| meta::uid(o).to_string())
        .collect();
    for (key, obj) in dependents {
        let owners = owner_uids(&obj);
        let (ns, name) = super::store::obj_key(&obj);
        if owners.iter().any(|u| *u != owner_uid && live.contains(u)) {
            st.store.put(&key, without_owner(&obj, &owner_uid));
            continue;
        }
        // The dependent may already be gone (removed by an earlier step of this cascade).
        if let Err(e) = delete(st, &key, &ns, &name, &DeleteOpts::background()) {
            tracing::debug!(error = %e, name = %name, "garbage collection skipped a dependent");
        }
    }
}
