//! Create, update (PUT) and patch: one pipeline that turns a request into a stored object.
//!
//! All writes go through [`commit_create`] or [`commit_update`], which apply the rules the real
//! server applies to every resource: type checks, name and namespace rules, server-set metadata,
//! optimistic concurrency (409 on a stale resourceVersion), status subresource isolation,
//! generation bumps on spec changes, finalizer rules, CRD schema processing, dryRun, and
//! "nothing changed, nothing written" (no new resourceVersion, no watch event).

use super::State;
use super::crd;
use super::errors::{ApiError, ApiResult, Cause};
use super::events;
use super::gc;
use super::meta;
use super::patch::{self, PatchError};
use super::request::{FieldValidation, Target};
use super::schema;
use serde_json::{Value, json};

/// Per-request write options.
#[derive(Debug)]
pub struct WriteCtx {
    pub dry_run: bool,
    pub validation: FieldValidation,
    /// Manager recorded in managedFields for this write.
    pub manager: String,
    /// Whether this write is a server-side apply (managedFields operation `Apply`).
    pub apply: bool,
    /// `Warning` headers to send back (fieldValidation=Warn).
    pub warnings: Vec<String>,
}

/// Check `kind`/`apiVersion` of a body against the target (filling them in when absent).
fn check_type_meta(t: &Target, body: Value) -> ApiResult<Value> {
    let Value::Object(mut m) = body else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let want_kind = &t.def.kind;
    let want_av = t.def.api_version(&t.version);
    match m.get("kind") {
        None => {
            m.insert("kind".into(), json!(want_kind));
        }
        Some(Value::String(k)) if k == want_kind => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "{want_kind} in version \"{}\" cannot be handled as a {want_kind}: wrong kind {other}",
                t.version
            )));
        }
    }
    match m.get("apiVersion") {
        None => {
            m.insert("apiVersion".into(), json!(want_av));
        }
        Some(Value::String(av)) if *av == want_av => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({want_av})",
                other.as_str().unwrap_or("?")
            )));
        }
    }
    match m.get("metadata") {
        None => {
            m.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
    }
    Ok(Value::Object(m))
}

fn check_namespace(t: &Target, obj: &mut Value) -> ApiResult<()> {
    let body_ns = obj["metadata"]["namespace"].as_str().map(String::from);
    match (&t.namespace, t.def.namespaced) {
        (Some(url_ns), true) => match body_ns {
            Some(b) if !b.is_empty() && &b != url_ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                obj["metadata"]["namespace"] = json!(url_ns);
                Ok(())
            }
        },
        (None, true) => Err(ApiError::bad_request(
            "a namespace is required for this resource",
        )),
        (_, false) => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            Ok(())
        }
    }
}

/// Schema processing for custom resources (defaults, pruning, validation, CEL).
fn process_custom(
    t: &Target,
    obj: &mut Value,
    old: Option<&Value>,
    ctx: &mut WriteCtx,
) -> ApiResult<()> {
    let Some(schema) = t.def.crd_version(&t.version).and_then(|v| v.schema.clone()) else {
        return Ok(());
    };
    let out = schema::process(&schema, obj, old);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !out.unknown_fields.is_empty() {
        match ctx.validation {
            FieldValidation::Strict => {
                let causes = out
                    .unknown_fields
                    .iter()
                    .map(|f| Cause {
                        field: String::new(),
                        message: format!("{f}: field not declared in schema"),
                        reason: "FieldValueInvalid".into(),
                    })
                    .collect();
                return Err(ApiError::invalid(&t.def.group, &t.def.kind, &name, causes));
            }
            FieldValidation::Warn => {
                ctx.warnings.extend(
                    out.unknown_fields
                        .iter()
                        .map(|f| format!("unknown field \"{}\"", &f[1..])),
                );
            }
            FieldValidation::Ignore => {}
        }
    }
    if !out.causes.is_empty() {
        return Err(ApiError::invalid(
            &t.def.group,
            &t.def.kind,
            &name,
            out.causes,
        ));
    }
    Ok(())
}

/// POST: create a new object.
pub fn create(
    st: &mut State,
    t: &Target,
    body: Value,
    ctx: &mut WriteCtx,
) -> ApiResult<(u16, Value)> {
    let obj = check_type_meta(t, body)?;
    commit_create(st, t, events::to_storage(&t.def, obj), ctx)
}

pub fn commit_create(
    st: &mut State,
    t: &Target,
    mut obj: Value,
    ctx: &mut WriteCtx,
) -> ApiResult<(u16, Value)> {
    check_namespace(t, &mut obj)?;
    let md = &obj["metadata"];
    let name = match (
        md["name"].as_str().filter(|n| !n.is_empty()),
        md["generateName"].as_str(),
    ) {
        (Some(n), _) => n.to_string(),
        (None, Some(prefix)) if !prefix.is_empty() => {
            // Retry a few times on the (unlikely) collision, as the real server does.
            let mut candidate = format!("{prefix}{}", meta::name_suffix());
            for _ in 0..8 {
                let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
                if st.store.get(&t.def.key(), ns, &candidate).is_none() {
                    break;
                }
                candidate = format!("{prefix}{}", meta::name_suffix());
            }
            candidate
        }
        _ => {
            return Err(ApiError::invalid(
                &t.def.group,
                &t.def.kind,
                "",
                vec![Cause {
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                    reason: "FieldValueRequired".into(),
                }],
            ));
        }
    };
    if let Some(c) = meta::validate_name(&t.def, &name) {
        return Err(ApiError::invalid(&t.def.group, &t.def.kind, &name, vec![c]));
    }
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if t.def.namespaced && st.store.get(&super::namespace_key(), "", &ns).is_none() {
        return Err(ApiError::not_found("", "namespaces", &ns));
    }
    if st.store.get(&t.def.key(), &ns, &name).is_some() {
        return Err(ApiError::already_exists(&t.def.group, &t.def.plural, &name));
    }
    {
        let Some(m) = obj["metadata"].as_object_mut() else {
            return Err(ApiError::bad_request("metadata must be an object"));
        };
        m.insert("name".into(), json!(name));
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        m.insert("generation".into(), json!(1));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    if t.def.has_status(&t.version) {
        // As in the real strategies' PrepareForCreate: status is not user-settable on create.
        let initial = match (t.def.group.as_str(), t.def.plural.as_str()) {
            ("", "pods") => Some(json!({"phase": "Pending", "qosClass": qos_class(&obj)})),
            ("", "namespaces") => Some(json!({"phase": "Active"})),
            _ => None,
        };
        match (initial, obj.as_object_mut()) {
            (Some(s), Some(m)) => {
                m.insert("status".into(), s);
            }
            (None, Some(m)) => {
                m.remove("status");
            }
            _ => {}
        }
    }
    process_custom(t, &mut obj, None, ctx)?;
    if crd::is_crd(&t.def) {
        crd::prepare(&mut obj)?;
    }
    let body = obj.clone();
    let op = if ctx.apply { "Apply" } else { "Update" };
    meta::record_managed_fields(
        &mut obj,
        &ctx.manager,
        op,
        &t.def.api_version(&t.version),
        None,
        &body,
    );
    if ctx.dry_run {
        return Ok((201, obj));
    }
    let stored = st.store.put(&t.def.key(), obj);
    if crd::is_crd(&t.def) {
        crd::register(st, &stored);
    }
    tracing::debug!(resource = %t.def.plural, namespace = %ns, name = %name, "created");
    Ok((201, stored))
}

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
    process_custom(t, &mut new, Some(old), ctx)?;
    if crd::is_crd(&t.def) {
        crd::prepare(&mut new)?;
    }
    if meta::spec_changed(old, &new, has_status) {
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
    }
    let Some(old) = existing else {
        if kind == "apply" && !t.is_status() {
            let mut obj = check_type_meta(t, patch_body)?;
            let mut fresh = json!({});
            patch::apply_merge(&mut fresh, &obj, !t.def.is_custom()).map_err(patch_failed)?;
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
            let checked = check_type_meta(t, patch_body.clone())?;
            patch::apply_merge(&mut doc, &checked, !t.def.is_custom()).map_err(patch_failed)?;
            // An apply never carries a precondition of its own unless it names a resourceVersion.
        }
    }
    let doc = events::to_storage(&t.def, check_type_meta(t, doc)?);
    commit_update(st, t, &old, doc, &patch_body, ctx)
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

/// A pod's QoS class, as the real API server sets it on create (and never lets change):
/// Guaranteed when every container's requests equal its limits for cpu and memory, BestEffort
/// when no container asks for either, Burstable otherwise.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| pod["spec"][k].as_array())
        .flatten()
        .collect();
    let resource =
        |c: &Value, kind: &str, name: &str| c["resources"][kind][name].as_str().map(str::to_owned);
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        for name in ["cpu", "memory"] {
            let limit = resource(c, "limits", name);
            // A limit without a request makes the request equal to the limit.
            let request = resource(c, "requests", name).or_else(|| limit.clone());
            any |= request.is_some() || limit.is_some();
            guaranteed &= limit.is_some() && request == limit;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}
