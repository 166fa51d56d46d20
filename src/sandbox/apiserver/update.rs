//! PUT and PATCH: the stored object replaced, or patched in one of the four flavours, then
//! written through [`commit_update`] with the rules every update follows (see `write`).

use super::State;
use super::crd;
use super::defaults;
use super::errors::{ApiError, ApiResult, Cause};
use super::events;
use super::gc;
use super::meta;
use super::patch::{self, PatchError};
use super::request::FieldValidation;
use super::request::Target;
use super::typed_patch;
use super::write::{
    WriteCtx, check_namespace, check_type_meta, commit_create, process_custom,
    strict_decoding_error, undeclared_fields,
};
use serde_json::{Value, json};

/// PUT: replace an object (or its status).
pub fn update(
    st: &mut State,
    t: &Target,
    body: Value,
    ctx: &mut WriteCtx,
) -> ApiResult<(u16, Value)> {
    let name = t.name.clone().unwrap_or_default();
    let new = events::to_storage(&t.def, check_type_meta(t, body)?);
    if let Some(n) = new["metadata"]["name"].as_str()
        && n != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if t.def.is_custom() && ctx.validation == FieldValidation::Strict {
        let unknown = undeclared_fields(t, &new);
        if !unknown.is_empty() {
            return Err(strict_decoding_error(t, &unknown));
        }
    }
    let ns = t.namespace.clone().unwrap_or_default();
    let old = st
        .store
        .get(&t.def.key(), &ns, &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, &name))?;
    let fields_body = new.clone();
    commit_update(st, t, &old, new, &fields_body, ctx)
}

pub fn commit_update(
    st: &mut State,
    t: &Target,
    old: &Value,
    mut new: Value,
    fields_body: &Value,
    ctx: &mut WriteCtx,
) -> ApiResult<(u16, Value)> {
    let name = t.name.clone().unwrap_or_default();
    check_namespace(t, &mut new)?;
    let old_rv = old["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if let Some(rv) = new["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && rv != old_rv
    {
        return Err(ApiError::conflict(&t.def.group, &t.def.plural, &name));
    }
    let has_status = t.def.has_status(&t.version);
    if t.is_status() {
        // A status write changes only .status (and managedFields, recorded below).
        let status = new.get("status").cloned();
        new = old.clone();
        match (status, new.as_object_mut()) {
            (Some(s), Some(m)) => {
                m.insert("status".into(), s);
            }
            (None, Some(m)) => {
                m.remove("status");
            }
            _ => {}
        }
    } else if has_status {
        match (old.get("status").cloned(), new.as_object_mut()) {
            (Some(s), Some(m)) => {
                m.insert("status".into(), s);
            }
            (None, Some(m)) => {
                m.remove("status");
            }
            _ => {}
        }
    }
    // Server-owned metadata is carried over from the stored object whatever the body says.
    {
        let Some(m) = new["metadata"].as_object_mut() else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            match old["metadata"].get(k) {
                Some(v) => m.insert(k.into(), v.clone()),
                None => m.remove(k),
            };
        }
        m.insert("name".into(), json!(name));
        m.insert("resourceVersion".into(), json!(old_rv));
    }
    if old["metadata"].get("deletionTimestamp").is_some() {
        let before = meta::finalizers(old);
        let added: Vec<String> = meta::finalizers(&new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            let msg = format!(
                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
            );
            return Err(ApiError::invalid(
                &t.def.group,
                &t.def.kind,
                &name,
                vec![Cause {
                    field: "metadata.finalizers".into(),
                    message: msg,
                    reason: "FieldValueForbidden".into(),
                }],
            ));
        }
    }
    if !t.def.is_custom() {
        defaults::apply(&t.def, &mut new);
    }
    let meta_causes = meta::validate_labels_and_annotations(&new);
    if !meta_causes.is_empty() && !t.def.is_custom() {
        return Err(ApiError::invalid(
            &t.def.group,
            &t.def.kind,
            &name,
            meta_causes,
        ));
    }
    process_custom(t, &mut new, Some(old), ctx, meta_causes)?;
    if crd::is_crd(&t.def) {
        crd::prepare(&mut new)?;
    }
    if defaults::tracks_generation(&t.def) && meta::spec_changed(old, &new, has_status) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if meta::same_content(old, &new) {
        // Nothing changed: the real server does not write (no new resourceVersion, no event).
        // SSA still records its manager, which we skip as it would force a write.
        return Ok((200, old.clone()));
    }
    let op = if ctx.apply { "Apply" } else { "Update" };
    meta::record_managed_fields(
        &mut new,
        &ctx.manager,
        op,
        &t.def.api_version(&t.version),
        t.sub.as_deref(),
        fields_body,
    );
    if ctx.dry_run {
        return Ok((200, new));
    }
    super::store::check_fits(&new)?;
    if new["metadata"].get("deletionTimestamp").is_some() && meta::finalizers(&new).is_empty() {
        // The last finalizer is gone: the pending deletion completes now.
        let ns = t.namespace.clone().unwrap_or_default();
        st.store.put(&t.def.key(), new);
        let removed = gc::finish_deletion(st, &t.def.key(), &ns, &name);
        return removed
            .map(|r| (200, r))
            .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, &name));
    }
    let stored = st.store.put(&t.def.key(), new);
    if crd::is_crd(&t.def) {
        crd::register(st, &stored);
    }
    Ok((200, stored))
}

/// PATCH in all four flavours.
pub fn patch(
    st: &mut State,
    t: &Target,
    body: &[u8],
    content_type: &str,
    ctx: &mut WriteCtx,
) -> ApiResult<(u16, Value)> {
    let name = t.name.clone().unwrap_or_default();
    let ctype = content_type.split(';').next().unwrap_or_default().trim();
    let kind = match ctype {
        "application/json-patch+json" => "json",
        "application/merge-patch+json" => "merge",
        "application/strategic-merge-patch+json" if !t.def.is_custom() => "strategic",
        "application/apply-patch+yaml" => "apply",
        _ => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                if t.def.is_custom() {
                    ""
                } else {
                    ", application/strategic-merge-patch+json"
                }
            )));
        }
    };
    let patch_body = super::request::decode_body(body, ctype)?;
    let ns = t.namespace.clone().unwrap_or_default();
    let existing = st.store.get(&t.def.key(), &ns, &name).cloned();
    if kind == "apply" {
        ctx.apply = true;
        if !patch_body.is_object() {
            return Err(ApiError::bad_request("apply patch must be an object"));
        }
        if let Some(n) = patch_body["metadata"]["name"].as_str()
            && n != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        // The apply configuration must make a typed value of the schema first (whatever
        // fieldValidation says): a 500 from the real server when it does not.
        if let Some(schema) = t.def.crd_version(&t.version).and_then(|v| v.schema.clone()) {
            let errors = typed_patch::errors(&schema, &patch_body);
            if !errors.is_empty() {
                return Err(ApiError::failure(
                    500,
                    typed_patch::message(
                        patch_body["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or_default(),
                        &name,
                        &t.def.api_version(&t.version),
                        &t.def.kind,
                        &errors,
                    ),
                ));
            }
        }
    } else {
        ctx.patched = true;
    }
    let Some(old) = existing else {
        if kind == "apply" && !t.is_status() {
            let mut obj = check_type_meta(t, patch_body)?;
            let mut fresh = json!({});
            patch::apply_merge(&mut fresh, &obj, !t.def.is_custom()).map_err(patch_failed)?;
            if t.def.is_custom() {
                keep_nulls(&mut fresh, &obj);
            }
            obj = fresh;
            obj["metadata"]["name"] = json!(name);
            return commit_create(st, t, events::to_storage(&t.def, obj), ctx);
        }
        return Err(ApiError::not_found(&t.def.group, &t.def.plural, &name));
    };
    // The patch applies to the object as this version shows it.
    let mut doc = events::from_storage(&t.def, old.clone());
    match kind {
        "json" => patch::json_patch(&mut doc, &patch_body).map_err(patch_failed)?,
        "merge" => {
            if !patch_body.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            patch::merge_patch(&mut doc, &patch_body)
        }
        "strategic" => patch::strategic_merge(&mut doc, &patch_body).map_err(patch_failed)?,
        _ => {
            let before = doc.clone();
            let checked = check_type_meta(t, patch_body.clone())?;
            patch::apply_merge(&mut doc, &checked, !t.def.is_custom()).map_err(patch_failed)?;
            if t.def.is_custom() {
                keep_nulls(&mut doc, &checked);
                let scope = if t.is_status() {
                    patch::ApplyScope::Status
                } else {
                    patch::ApplyScope::Main {
                        has_status: t.def.has_status(&t.version),
                    }
                };
                patch::prune_unapplied(
                    &mut doc,
                    &old["metadata"]["managedFields"],
                    &ctx.manager,
                    scope,
                    &checked,
                );
            }
            if !ctx.force {
                let conflicts = super::apply_conflicts::find(
                    &before,
                    &doc,
                    &old["metadata"]["managedFields"],
                    &ctx.manager,
                    t.sub.as_deref(),
                );
                if !conflicts.is_empty() {
                    return Err(super::apply_conflicts::refusal(&conflicts));
                }
            }
            // An apply never carries a precondition of its own unless it names a resourceVersion.
        }
    }
    let doc = events::to_storage(&t.def, check_type_meta(t, doc)?);
    commit_update(st, t, &old, doc, &patch_body, ctx)
}

/// A server-side apply of a custom resource keeps the nulls it was given (the schema's defaults
/// and `nullable` decide what becomes of them); the merge dropped them.
fn keep_nulls(target: &mut Value, applied: &Value) {
    if let (Value::Object(t), Value::Object(a)) = (target, applied) {
        for (k, v) in a {
            if v.is_null() {
                t.insert(k.clone(), Value::Null);
            } else if let Some(child) = t.get_mut(k) {
                keep_nulls(child, v);
            }
        }
    }
}

fn patch_failed(e: PatchError) -> ApiError {
    match e {
        PatchError::Malformed(m) => ApiError::bad_request(m),
        PatchError::Failed(m) => {
            let mut err = ApiError::invalid("", "", "", vec![]);
            err.message =
                format!("the server rejected our request due to an error in our request: {m}");
            err
        }
    }
}
