//! The registry of kinds the server serves: the built-in resources and those registered by CRDs.
//!
//! A [`ResourceDef`] is everything the server needs to route, validate and describe one resource:
//! group, served versions, plural/singular/kind, scope, short names, categories, whether it has a
//! status subresource, and, for custom resources, the per-version schema and printer columns.
//! Simplification: all served versions of a CRD share one stored object; a read through another
//! version just gets its `apiVersion` rewritten (conversion strategy `None`).

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// `additionalPrinterColumns` entry of a CRD version.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub description: String,
    pub priority: i64,
    pub format: String,
}

/// Per-version data of a custom resource.
#[derive(Debug, Clone, Default)]
pub struct CrdVersion {
    /// Shared: every request on the resource carries its definition, and a schema is large.
    pub schema: Option<Arc<Value>>,
    pub printer_columns: Vec<PrinterColumn>,
    pub status_subresource: bool,
}

#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<String>,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status_subresource: bool,
    /// `Some` for resources defined by a CustomResourceDefinition (keyed by version).
    pub crd: Option<BTreeMap<String, CrdVersion>>,
}

impl ResourceDef {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceDef {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced,
            short_names: vec![],
            categories: vec![],
            status_subresource: false,
            crd: None,
        }
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| s.to_string()).collect();
        self
    }

    fn status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    fn all(mut self) -> Self {
        self.categories = vec!["all".into()];
        self
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// A SelfSubjectAccessReview: a question (create only), answered and not stored.
    pub fn is_access_review(&self) -> bool {
        self.group == "authorization.k8s.io" && self.plural == "selfsubjectaccessreviews"
    }

    pub fn is_custom(&self) -> bool {
        self.crd.is_some()
    }

    /// Storage key, independent of the version the request used. events.k8s.io Events are
    /// core Events in another shape, stored once (see `events`).
    pub fn key(&self) -> ResKey {
        if super::events::is_events_v1(self) {
            return super::events::storage_key();
        }
        ResKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    pub fn crd_version(&self, version: &str) -> Option<&CrdVersion> {
        self.crd.as_ref().and_then(|m| m.get(version))
    }

    /// Whether writes to `version` go through the status subresource.
    pub fn has_status(&self, version: &str) -> bool {
        match self.crd_version(version) {
            Some(v) => v.status_subresource,
            None => self.status_subresource,
        }
    }

    /// Whether the resource has a `scale` subresource (autoscaling/v1 Scale).
    pub fn has_scale(&self) -> bool {
        self.group == "apps" && matches!(self.plural.as_str(), "deployments" | "replicasets")
    }

    /// Field selector paths the real server accepts for this resource.
    pub fn field_selectable(&self, path: &str) -> bool {
        if super::events::is_event(self) {
            return super::events::selector_label(self, path).is_some();
        }
        if matches!(path, "metadata.name" | "metadata.namespace") {
            return true;
        }
        match (self.group.as_str(), self.plural.as_str()) {
            ("", "pods") => matches!(
                path,
                "spec.nodeName"
                    | "spec.restartPolicy"
                    | "spec.schedulerName"
                    | "spec.serviceAccountName"
                    | "spec.hostNetwork"
                    | "status.phase"
                    | "status.podIP"
                    | "status.nominatedNodeName"
            ),
            ("", "secrets") => path == "type",
            ("", "namespaces") => path == "status.phase",
            ("", "nodes") => path == "spec.unschedulable",
            _ => false,
        }
    }
}

/// Identifies a resource in storage: group + plural (versions share storage).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResKey {
    pub group: String,
    pub plural: String,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    defs: Vec<ResourceDef>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let defs = vec![
            ResourceDef::builtin("", "v1", "namespaces", "Namespace", false)
                .short(&["ns"])
                .status(),
            ResourceDef::builtin("", "v1", "nodes", "Node", false)
                .short(&["no"])
                .status(),
            ResourceDef::builtin("", "v1", "pods", "Pod", true)
                .short(&["po"])
                .status()
                .all(),
            ResourceDef::builtin("", "v1", "services", "Service", true)
                .short(&["svc"])
                .status()
                .all(),
            ResourceDef::builtin("", "v1", "configmaps", "ConfigMap", true).short(&["cm"]),
            ResourceDef::builtin("", "v1", "secrets", "Secret", true),
            ResourceDef::builtin("", "v1", "events", "Event", true).short(&["ev"]),
            ResourceDef::builtin("", "v1", "serviceaccounts", "ServiceAccount", true)
                .short(&["sa"]),
            ResourceDef::builtin("apps", "v1", "deployments", "Deployment", true)
                .short(&["deploy"])
                .status()
                .all(),
            ResourceDef::builtin("apps", "v1", "replicasets", "ReplicaSet", true)
                .short(&["rs"])
                .status()
                .all(),
            ResourceDef::builtin("events.k8s.io", "v1", "events", "Event", true).short(&["ev"]),
            ResourceDef::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            ResourceDef::builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
            )
            .short(&["pdb"])
            .status(),
            // Answered, never stored: see `access_review`.
            ResourceDef::builtin(
                "authorization.k8s.io",
                "v1",
                "selfsubjectaccessreviews",
                "SelfSubjectAccessReview",
                false,
            ),
            ResourceDef::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )
            .short(&["crd", "crds"])
            .status(),
        ];
        Registry { defs }
    }

    /// The resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs.iter().find(|d| {
            d.group == group && d.plural == plural && d.versions.iter().any(|v| v == version)
        })
    }

    pub fn by_key(&self, key: &ResKey) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == key.group && d.plural == key.plural)
    }

    /// Groups in registration order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in &self.defs {
            if d.group.is_empty() {
                continue;
            }
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, vs)) => {
                    for v in &d.versions {
                        if !vs.contains(v) {
                            vs.push(v.clone());
                        }
                    }
                }
                None => out.push((d.group.clone(), d.versions.clone())),
            }
        }
        out
    }

    /// Resources served at `group/version`.
    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&ResourceDef> {
        self.defs
            .iter()
            .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
            .collect()
    }

    /// Register (or replace) a custom resource.
    pub fn upsert(&mut self, def: ResourceDef) {
        self.defs
            .retain(|d| !(d.group == def.group && d.plural == def.plural));
        self.defs.push(def);
    }

    pub fn remove(&mut self, key: &ResKey) {
        self.defs
            .retain(|d| !(d.group == key.group && d.plural == key.plural));
    }
}

/// Build a [`ResourceDef`] from a CustomResourceDefinition object (JSON).
/// Errors are the field causes the real server would report as Invalid.
pub fn def_from_crd(crd: &Value) -> Result<ResourceDef, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let spec = &crd["spec"];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let group = s(&spec["group"]);
    let names = &spec["names"];
    let plural = s(&names["plural"]);
    let kind = s(&names["kind"]);
    if group.is_empty() {
        errs.push(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty() {
        errs.push(("spec.names.plural".into(), "Required value".into()));
    }
    if kind.is_empty() {
        errs.push(("spec.names.kind".into(), "Required value".into()));
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errs.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = s(&spec["scope"]);
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push((
            "spec.scope".into(),
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let mut versions = Vec::new();
    let mut per_version = BTreeMap::new();
    let list = spec["versions"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        errs.push((
            "spec.versions".into(),
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        ));
    }
    // Storage version first so that it is the preferred one in discovery.
    let mut ordered: Vec<&Value> = list
        .iter()
        .filter(|v| v["storage"] == Value::Bool(true))
        .collect();
    ordered.extend(list.iter().filter(|v| v["storage"] != Value::Bool(true)));
    for v in ordered {
        let vname = s(&v["name"]);
        if vname.is_empty() {
            errs.push(("spec.versions[].name".into(), "Required value".into()));
            continue;
        }
        if v["served"] == Value::Bool(false) {
            continue;
        }
        let columns = v["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| PrinterColumn {
                        name: s(&c["name"]),
                        type_: s(&c["type"]),
                        json_path: s(&c["jsonPath"]),
                        description: s(&c["description"]),
                        priority: c["priority"].as_i64().unwrap_or(0),
                        format: s(&c["format"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        per_version.insert(
            vname.clone(),
            CrdVersion {
                schema: v["schema"].get("openAPIV3Schema").cloned().map(Arc::new),
                printer_columns: columns,
                status_subresource: v["subresources"].get("status").is_some(),
            },
        );
        versions.push(vname);
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let singular = names["singular"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| kind.to_lowercase());
    let status_subresource = per_version.values().any(|v| v.status_subresource);
    Ok(ResourceDef {
        group,
        versions,
        plural,
        singular,
        kind,
        namespaced: scope == "Namespaced",
        short_names: strs(&names["shortNames"]),
        categories: strs(&names["categories"]),
        status_subresource,
        crd: Some(per_version),
    })
}
