//! Create, update (PUT) and patch: one pipeline that turns a request into a stored object.
//! Creation is here; updates and patches are in `update` (re-exported here).
//!
//! All writes go through [`commit_create`] or [`commit_update`], which apply the rules the real
//! server applies to every resource: type checks, name and namespace rules, server-set metadata,
//! optimistic concurrency (409 on a stale resourceVersion), status subresource isolation,
//! generation bumps on spec changes, finalizer rules, CRD schema processing, dryRun, and
//! "nothing changed, nothing written" (no new resourceVersion, no watch event).

use super::State;
use super::crd;
use super::defaults;
use super::errors::{ApiError, ApiResult, Cause};
use super::events;
use super::meta;
use super::request::{FieldValidation, Target};
use super::schema;
pub use super::update::{commit_update, patch, update};
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
    /// A forced apply (`force=true`): it takes the fields other managers own.
    pub force: bool,
    /// Whether the object came from a merge or JSON patch (an unknown field is then a 422 on
    /// `patch`, not a 400).
    pub patched: bool,
    /// `Warning` headers to send back (fieldValidation=Warn).
    pub warnings: Vec<String>,
}

/// Check `kind`/`apiVersion` of a body against the target (filling them in when absent).
pub(super) fn check_type_meta(t: &Target, body: Value) -> ApiResult<Value> {
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

pub(super) fn check_namespace(t: &Target, obj: &mut Value) -> ApiResult<()> {
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

/// Schema processing for custom resources (decoding, defaults, pruning, validation, CEL), with
/// the metadata errors `meta` found by the caller: one 422 for all of them, as the real server
/// answers.
pub(super) fn process_custom(
    t: &Target,
    obj: &mut Value,
    old: Option<&Value>,
    ctx: &mut WriteCtx,
    meta: Vec<Cause>,
) -> ApiResult<()> {
    let Some(schema) = t.def.crd_version(&t.version).and_then(|v| v.schema.clone()) else {
        return finish(t, obj, meta);
    };
    let source = if ctx.apply {
        schema::Source::Apply
    } else {
        schema::Source::Body
    };
    let out = schema::process(&schema, obj, old, source, meta);
    if !out.unknown_fields.is_empty() {
        match ctx.validation {
            FieldValidation::Strict if ctx.patched => {
                return Err(strict_patch_error(t, obj, &out.unknown_fields));
            }
            FieldValidation::Strict => {
                return Err(strict_decoding_error(t, &out.unknown_fields));
            }
            FieldValidation::Warn => {
                ctx.warnings.extend(
                    out.unknown_fields
                        .iter()
                        .map(|f| format!("unknown field \"{f}\"")),
                );
            }
            FieldValidation::Ignore => {}
        }
    }
    finish(t, obj, out.causes)
}

fn finish(t: &Target, obj: &Value, causes: Vec<Cause>) -> ApiResult<()> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    Err(ApiError::invalid(&t.def.group, &t.def.kind, name, causes))
}

/// The real server's answer to a create or update with fields the schema does not declare,
/// under `fieldValidation=Strict`: a 400 before any validation.
pub(super) fn strict_decoding_error(t: &Target, unknown: &[String]) -> ApiError {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    ApiError::bad_request(format!(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
        fields.join(", "),
        kind = t.def.kind,
        version = t.version,
    ))
}

/// The same for a merge or JSON patch: a 422 on the field `patch`, naming the patched object.
fn strict_patch_error(t: &Target, obj: &Value, unknown: &[String]) -> ApiError {
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    let mut e = ApiError::invalid(
        "",
        "",
        "",
        vec![Cause {
            field: "patch".into(),
            message: format!(
                "Invalid value: {}: strict decoding error: {}",
                crate::crd_validation::formats::go_quote(&obj.to_string()),
                fields.join(", ")
            ),
            reason: "FieldValueInvalid".into(),
        }],
    );
    e.details.kind = Some(t.def.kind.clone());
    e
}

/// Fields of a custom resource's body the schema does not declare, as a strict decoding error
/// names them (`spec.faults[0].bogus`); empty for other kinds.
pub(super) fn undeclared_fields(t: &Target, obj: &Value) -> Vec<String> {
    let Some(schema) = t.def.crd_version(&t.version).and_then(|v| v.schema.clone()) else {
        return Vec::new();
    };
    let mut copy = obj.clone();
    schema::process(&schema, &mut copy, None, schema::Source::Body, Vec::new()).unknown_fields
}

/// POST: create a new object.
pub fn create(
    st: &mut State,
    t: &Target,
    body: Value,
    ctx: &mut WriteCtx,
) -> ApiResult<(u16, Value)> {
    let obj = check_type_meta(t, body)?;
    // Decoding comes first: an undeclared field under Strict is a 400 before anything else.
    if t.def.is_custom() && ctx.validation == FieldValidation::Strict {
        let unknown = undeclared_fields(t, &obj);
        if !unknown.is_empty() {
            return Err(strict_decoding_error(t, &unknown));
        }
    }
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
            let prefix = crate::crd_validation::generated_name_prefix(prefix);
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
        _ => String::new(),
    };
    // Metadata errors: one answer with the schema's for a custom resource (as its strategy
    // validates both together), at once for other kinds.
    let mut meta_causes = Vec::new();
    if name.is_empty() {
        meta_causes.push(Cause {
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
            reason: "FieldValueRequired".into(),
        });
    } else if let Some(c) = meta::validate_name(&t.def, &name) {
        meta_causes.push(c);
    }
    meta_causes.extend(meta::validate_labels_and_annotations(&obj));
    if !meta_causes.is_empty() && !t.def.is_custom() {
        return Err(ApiError::invalid(
            &t.def.group,
            &t.def.kind,
            &name,
            meta_causes,
        ));
    }
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if t.def.namespaced && st.store.get(&super::namespace_key(), "", &ns).is_none() {
        return Err(ApiError::not_found("", "namespaces", &ns));
    }
    super::crd::refuse_while_terminating(st, &t.def, &name)?;
    if t.def.namespaced && super::namespaces::is_terminating(st, &ns) {
        return Err(super::namespaces::refuse_content(
            &t.def.group,
            &t.def.plural,
            &name,
            &ns,
        ));
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
        if defaults::tracks_generation(&t.def) {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
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
    if !t.def.is_custom() {
        defaults::apply(&t.def, &mut obj);
    }
    if is_pod(t) {
        let account = obj["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let account = st.store.get(&service_accounts(), &ns, &account);
        defaults::admit_pod(&mut obj, account, &meta::name_suffix())?;
    }
    if t.def.has_status(&t.version) {
        // As in the real strategies' PrepareForCreate: status is not user-settable on create.
        let initial = match (t.def.group.as_str(), t.def.plural.as_str()) {
            ("", "pods") => {
                Some(json!({"phase": "Pending", "qosClass": defaults::qos_class(&obj)}))
            }
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
    process_custom(t, &mut obj, None, ctx, meta_causes)?;
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
    super::store::check_fits(&obj)?;
    let stored = st.store.put(&t.def.key(), obj);
    if crd::is_crd(&t.def) {
        crd::register(st, &stored);
    }
    if t.def.key() == super::namespace_key() {
        default_service_account(st, &name);
    }
    tracing::debug!(resource = %t.def.plural, namespace = %ns, name = %name, "created");
    Ok((201, stored))
}

fn is_pod(t: &Target) -> bool {
    t.def.group.is_empty() && t.def.plural == "pods" && t.sub.is_none()
}

fn service_accounts() -> super::resources::ResKey {
    super::resources::ResKey {
        group: String::new(),
        plural: "serviceaccounts".into(),
    }
}

/// Every namespace has a ServiceAccount `default`: on a cluster kube-controller-manager's
/// serviceaccount controller creates it a moment after the namespace; here it comes with it.
pub fn default_service_account(st: &mut State, namespace: &str) {
    if st
        .store
        .get(&service_accounts(), namespace, "default")
        .is_some()
    {
        return;
    }
    st.store.put(
        &service_accounts(),
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": namespace,
                         "uid": uuid::Uuid::new_v4().to_string(),
                         "creationTimestamp": meta::now()},
        }),
    );
}
