//! GET of one object and LIST (with selectors and pagination).
//!
//! Pagination is simple: the `continue` token is the (namespace, name) key after which the next
//! page starts, and each page reads the latest state (the real server serves all pages from one
//! snapshot). `remainingItemCount` is reported when no selector is given: the real server
//! counts what is left in storage, which a selector would make wrong, so it leaves it out.

use super::State;
use super::errors::{ApiError, ApiResult};
use super::events;
use super::partial;
use super::request::{Format, Params, Target};
use super::selectors::{FieldSelector, LabelSelector};
use super::table;
use serde_json::{Value, json};

/// Set the `apiVersion` a client asked for (custom resources may be read through any served version).
pub fn present(t: &Target, obj: Value) -> Value {
    let mut obj = events::from_storage(&t.def, obj);
    obj["apiVersion"] = json!(t.def.api_version(&t.version));
    obj["kind"] = json!(t.def.kind);
    obj
}

/// Label and field selectors of a list or watch, validated against the resource.
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Events: field labels are read through `events::field` (they are core labels by now).
    events: bool,
}

impl Filter {
    pub fn from_params(t: &Target, p: &Params) -> ApiResult<Self> {
        let labels = LabelSelector::parse(p.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
        let mut fields = FieldSelector::parse(p.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
        if let Some(bad) = fields.paths().find(|f| !t.def.field_selectable(f)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {bad}"
            )));
        }
        let events = events::is_event(&t.def);
        if events {
            // `regarding.name` and friends are core labels on the stored (core) objects.
            for req in &mut fields.0 {
                if let Some(label) = events::selector_label(&t.def, &req.path) {
                    req.path = label;
                }
            }
        }
        Ok(Filter {
            namespace: t.namespace.clone(),
            labels,
            fields,
            events,
        })
    }

    /// No label or field selector (the namespace of the URL does not count).
    pub fn selects_everything(&self) -> bool {
        self.labels.0.is_empty() && self.fields.0.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj["metadata"]["namespace"].as_str() != Some(ns.as_str())
        {
            return false;
        }
        let fields = if self.events {
            self.fields.matches_with(|label| events::field(obj, label))
        } else {
            self.fields.matches(obj)
        };
        self.labels.matches(obj["metadata"].get("labels")) && fields
    }
}

pub fn get(st: &State, t: &Target, format: Format) -> ApiResult<Value> {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_default();
    let obj = st
        .store
        .get(&t.def.key(), &ns, &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.def.group, &t.def.plural, &name))?;
    let obj = present(t, obj);
    Ok(match format {
        Format::Table => {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            table::table(&t.def, &t.version, &[obj], &rv, None)
        }
        Format::Metadata | Format::MetadataList => partial::convert(t, obj, format)?,
        Format::Json | Format::Protobuf => obj,
    })
}

pub fn list(st: &State, t: &Target, p: &Params, format: Format) -> ApiResult<Value> {
    let filter = Filter::from_params(t, p)?;
    let limit = p.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let after = match p.get("continue").filter(|c| !c.is_empty()) {
        Some(c) => Some(decode_continue(c)?),
        None => None,
    };
    let matching: Vec<&Value> = st
        .store
        .list(&t.def.key(), t.namespace.as_deref())
        .filter(|o| filter.matches(o))
        .filter(|o| after.as_ref().is_none_or(|a| super::store::obj_key(o) > *a))
        .collect();
    let total = matching.len();
    // Metadata only: only the metadata is copied (under the store's lock), not whole objects
    // (500 pods each second, for the controller's target reads).
    let page: Vec<Value> = matching
        .into_iter()
        .take(limit.unwrap_or(usize::MAX))
        .map(|o| match format {
            Format::MetadataList => partial::object(o),
            _ => present(t, o.clone()),
        })
        .collect();
    let rv = st.store.current_rv().to_string();
    let cont = (page.len() < total)
        .then(|| {
            page.last()
                .map(|o| encode_continue(&super::store::obj_key(o)))
        })
        .flatten();
    match format {
        Format::Table => Ok(table::table(
            &t.def,
            &t.version,
            &page,
            &rv,
            cont.as_deref(),
        )),
        Format::Json | Format::Protobuf | Format::Metadata | Format::MetadataList => {
            let mut md = json!({"resourceVersion": rv});
            if let Some(c) = &cont {
                md["continue"] = json!(c);
                if filter.selects_everything() {
                    md["remainingItemCount"] = json!(total - page.len());
                }
            }
            let list = json!({
                "kind": format!("{}List", t.def.kind),
                "apiVersion": t.def.api_version(&t.version),
                "metadata": md,
                "items": page,
            });
            // Only now, after the selectors and the continue token were checked (400s come
            // first): the real server converts the list it has read.
            partial::convert(t, list, format)
        }
    }
}

fn encode_continue(key: &(String, String)) -> String {
    // Names and namespaces cannot contain '/', so this is unambiguous.
    format!("{}/{}", key.0, key.1)
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    token
        .split_once('/')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .ok_or_else(|| ApiError::bad_request(format!("invalid continue token {token:?}")))
}
