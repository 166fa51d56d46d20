//! `faultline validate`: offline checks of faultline manifests, the same ones the API server
//! makes (the CRD schema and its CEL rules) plus semantic checks the schema cannot express.
//!
//! Pure: text in, problems out; no file system, no cluster. The CLI (`cli::validate`) does the
//! reading and printing.
//!
//! Per document, in order:
//! 1. `apiVersion` / `kind`: a document that is not a faultline resource is skipped with a note;
//! 2. `metadata` (name, namespace, labels, annotations) as the API server checks it;
//! 3. the structural schema ([`schema`]);
//! 4. the CEL rules ([`cel`]), with schema defaults applied;
//! 5. semantic checks on the typed object ([`semantic`]), once the structure is right.
//!
//! Guarantees: never panics, whatever the input (parsing has a budget and a depth limit; see
//! [`yaml_lines`]); every problem carries the 1-based line of the node it is about.

mod cel;
mod durations;
mod labels;
mod metadata;
mod schema;
mod semantic;
pub mod yaml_lines;

pub use semantic::VALIDATE_ONLY;

use std::{fmt, sync::OnceLock};

use serde::Serialize;
use serde_json::Value;

use crate::api::{API_GROUP, API_VERSION, GROUP_VERSION, all_crds};

/// How bad a problem is. Only errors make a document invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Note,
}

/// One thing wrong with a manifest, located in its file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: String,
    /// 1-based line in the file (counting across all documents of the file).
    pub line: usize,
    /// The field path, like `spec.faults[0].networkLatency.latency`; empty for the document.
    pub path: String,
    pub message: String,
    pub severity: Severity,
    /// 0-based index of the document in the file (empty documents not counted).
    pub document: usize,
    /// Set when the API server does not make this check (cron, time zones, ...): the name of the
    /// check in [`VALIDATE_ONLY`]. `kubectl apply` would accept the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validate_only: Option<&'static str>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if self.severity == Severity::Note {
            f.write_str("note: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// The outcome for one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub documents: usize,
    pub invalid: usize,
    pub skipped: usize,
    pub problems: Vec<Problem>,
}

/// A problem found by a check, before it is placed on a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub path: String,
    pub message: String,
    pub severity: Severity,
    /// A CEL rule that could not be evaluated (not a verdict on the manifest).
    pub evaluation_failed: bool,
    /// The check of [`semantic::VALIDATE_ONLY`] that found it: the API server does not make it.
    pub validate_only: Option<&'static str>,
    /// A schema violation after which the API server runs no CEL rule (wrong type, missing
    /// required field, value not in the enum, too long, too many, unknown field).
    pub blocks_rules: bool,
}

impl Finding {
    pub fn new(path: &str, message: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            message: message.into(),
            severity: Severity::Error,
            evaluation_failed: false,
            validate_only: None,
            blocks_rules: false,
        }
    }

    /// A schema violation that stops the API server from running the CEL rules.
    pub fn blocking(path: &str, message: impl Into<String>) -> Self {
        Self {
            blocks_rules: true,
            ..Self::new(path, message)
        }
    }

    /// A finding of one of the [`semantic::VALIDATE_ONLY`] checks.
    pub fn validate_only(check: &'static str, path: &str, message: impl Into<String>) -> Self {
        Self {
            validate_only: Some(check),
            ..Self::new(path, message)
        }
    }

    pub(crate) fn note(message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Note,
            ..Self::new("", message)
        }
    }
}

/// Checks every document of `text`; the problems of the whole file, in line order.
pub fn validate_documents(file_name: &str, text: &str) -> Vec<Problem> {
    check_text(file_name, text).problems
}

/// Like [`validate_documents`], for bytes that may not be UTF-8.
pub fn check_bytes(file_name: &str, bytes: &[u8]) -> FileReport {
    match std::str::from_utf8(bytes) {
        Ok(text) => check_text(file_name, text),
        Err(err) => {
            let valid = bytes.get(..err.valid_up_to()).unwrap_or_default();
            let line = 1 + valid.iter().filter(|b| **b == b'\n').count();
            FileReport {
                documents: 1,
                invalid: 1,
                skipped: 0,
                problems: vec![Problem {
                    file: file_name.to_string(),
                    line,
                    path: String::new(),
                    message: "not UTF-8 text; save the file as UTF-8".into(),
                    severity: Severity::Error,
                    document: 0,
                    validate_only: None,
                }],
            }
        }
    }
}

/// Checks every document of `text`, counting documents for the summary.
pub fn check_text(file_name: &str, text: &str) -> FileReport {
    let problem = |line, path: &str, message: String, document| Problem {
        file: file_name.to_string(),
        line,
        path: path.to_string(),
        message,
        severity: Severity::Error,
        document,
        validate_only: None,
    };
    let docs = match yaml_lines::parse_documents(text) {
        Ok(docs) => docs,
        Err(err) => {
            return FileReport {
                documents: 1,
                invalid: 1,
                skipped: 0,
                problems: vec![problem(err.line, "", err.message, 0)],
            };
        }
    };
    if docs.is_empty() {
        return FileReport {
            documents: 1,
            invalid: 1,
            skipped: 0,
            problems: vec![problem(
                1,
                "",
                "no documents found: the file is empty or holds only comments".into(),
                0,
            )],
        };
    }
    let mut report = FileReport {
        documents: docs.len(),
        ..FileReport::default()
    };
    for (index, doc) in docs.iter().enumerate() {
        let findings = check_document(&doc.value);
        if findings.iter().any(|f| f.severity == Severity::Error) {
            report.invalid += 1;
        } else if !findings.is_empty() {
            report.skipped += 1;
        }
        report
            .problems
            .extend(findings.into_iter().map(|finding| Problem {
                line: if finding.path.is_empty() {
                    doc.lines.root()
                } else {
                    doc.lines.line_of(&finding.path)
                },
                severity: finding.severity,
                validate_only: finding.validate_only,
                ..problem(0, &finding.path, finding.message, index)
            }));
    }
    report
        .problems
        .sort_by(|a, b| (a.line, &a.path).cmp(&(b.line, &b.path)));
    report
}

/// The `openAPIV3Schema` of a faultline kind, as JSON.
pub(crate) fn kind_schema(kind: &str) -> Option<&'static Value> {
    static SCHEMAS: OnceLock<Vec<(String, Value)>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            all_crds()
                .into_iter()
                .filter_map(|crd| {
                    let version = crd.spec.versions.first()?;
                    let schema = version.schema.as_ref()?.open_api_v3_schema.as_ref()?;
                    Some((
                        crd.spec.names.kind.clone(),
                        serde_json::to_value(schema).ok()?,
                    ))
                })
                .collect()
        })
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, schema)| schema)
}

fn known_kinds() -> Vec<&'static str> {
    vec![
        "ChaosExperiment",
        "ChaosSchedule",
        "GameDay",
        "FaultInjection",
    ]
}

/// All findings of one document, in no particular order.
fn check_document(value: &Value) -> Vec<Finding> {
    let Some(object) = value.as_object() else {
        return vec![Finding::new(
            "",
            "a manifest must be a mapping with apiVersion, kind, metadata and spec",
        )];
    };
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        let mut found = Vec::new();
        for (field, example) in [("apiVersion", GROUP_VERSION), ("kind", "ChaosExperiment")] {
            match object.get(field) {
                None => found.push(Finding::new(
                    "",
                    format!("{field} is missing; every manifest needs apiVersion and kind (e.g. {field}: {example})"),
                )),
                Some(v) if !v.is_string() => {
                    found.push(Finding::new(field, format!("must be a string such as {example}")));
                }
                Some(_) => {}
            }
        }
        return found;
    };
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    if group != API_GROUP {
        return vec![Finding::note(format!(
            "skipping kind {kind} ({api_version}): not a faultline resource"
        ))];
    }
    let mut found = Vec::new();
    if api_version != GROUP_VERSION {
        found.push(Finding::new(
            "apiVersion",
            format!(
                "{API_GROUP} serves only version {API_VERSION}; write apiVersion: {GROUP_VERSION}"
            ),
        ));
    }
    let Some(schema) = kind_schema(kind) else {
        let kinds = known_kinds();
        let hint = schema::closest(kind, &kinds)
            .map_or_else(String::new, |k| format!(" (did you mean {k}?)"));
        found.push(Finding::new(
            "kind",
            format!(
                "{GROUP_VERSION} has no kind {kind}{hint}; it has {}",
                kinds.join(", ")
            ),
        ));
        return found;
    };
    found.extend(metadata::check(object.get("metadata")));

    // The API server checks apiVersion, kind and metadata itself; the CRD schema covers the
    // rest. `status` belongs to the controller: the server ignores it on create and apply.
    let mut body = object.clone();
    for field in ["apiVersion", "kind", "metadata"] {
        body.remove(field);
    }
    if body.remove("status").is_some() {
        let mut note = Finding::note("status is ignored: the controller writes it");
        note.path = "status".into();
        found.push(note);
    }
    let body = Value::Object(body);
    let mut structural = Vec::new();
    schema::SchemaChecker::new().check(schema, &body, "", &mut structural);
    let structure_ok = structural.is_empty();
    // What does not stop the API server's rules (a pattern, a bound, a duplicate) leaves an
    // object that still reads as its type.
    let typed = if structural.iter().all(|s| !s.blocks_rules) {
        // The typed read sees what the server keeps: no status, no nulls it drops.
        let mut readable = object.clone();
        readable.remove("status");
        let mut readable = Value::Object(readable);
        drop_nulls(schema, &mut readable);
        semantic::check(kind, &readable)
    } else {
        None
    };
    // Rules at the root see `metadata.name` and `metadata.generateName`, nothing else of it;
    // the server has generated the name from `generateName` by then.
    let mut rule_input = body.clone();
    let no_metadata = serde_json::Map::new();
    let metadata = object
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&no_metadata);
    let mut visible: serde_json::Map<String, Value> = ["name", "generateName"]
        .iter()
        .filter_map(|k| {
            Some((
                k.to_string(),
                metadata.get(*k).filter(|v| v.is_string())?.clone(),
            ))
        })
        .collect();
    if !visible.contains_key("name") {
        // A missing name is metadata's finding; the rules see an empty one rather than
        // failing to read it.
        let prefix = visible.get("generateName").and_then(Value::as_str);
        let name = prefix.map(generated_name).unwrap_or_default();
        visible.insert("name".into(), Value::String(name));
    }
    rule_input["metadata"] = Value::Object(visible);
    for finding in cel::check(kind, schema, &rule_input) {
        // After a blocking schema violation the API server runs no rule: one that fails where
        // the schema already failed adds noise, not news, and one that cannot be evaluated on
        // a malformed object says nothing at all. Rules elsewhere still say something useful.
        let overlaps = structural.iter().any(|s| {
            s.blocks_rules
                && (is_within(&finding.path, &s.path) || is_within(&s.path, &finding.path))
        });
        if (finding.evaluation_failed && !structure_ok) || overlaps {
            continue;
        }
        found.push(finding);
    }
    found.extend(structural);
    if let Some(semantic) = typed {
        let unreadable = |f: &Finding| f.path.is_empty() && f.validate_only.is_none();
        // A semantic finding on a path a CEL rule already reported (a bad duration) repeats it;
        // an object that does not read as its type, once the schema said why, says nothing new.
        for finding in semantic.findings {
            if unreadable(&finding) && found.iter().any(|f| f.severity == Severity::Error) {
                continue;
            }
            if !found.iter().any(|f| f.path == finding.path) {
                found.push(finding);
            }
        }
    }
    found
}

/// Removes the null fields the API server drops (those whose schema is not nullable).
fn drop_nulls(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            map.retain(|key, child| {
                let nullable = properties
                    .and_then(|p| p.get(key))
                    .and_then(|s| s.get("nullable"))
                    .and_then(Value::as_bool)
                    == Some(true);
                !child.is_null() || nullable || properties.is_none_or(|p| !p.contains_key(key))
            });
            for (key, child) in map.iter_mut() {
                let child_schema = properties
                    .and_then(|p| p.get(key))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                if let Some(child_schema) = child_schema {
                    drop_nulls(child_schema, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                items
                    .iter_mut()
                    .for_each(|item| drop_nulls(item_schema, item));
            }
        }
        _ => {}
    }
}

/// Whether `path` is `ancestor` or below it.
/// A name as the API server generates it from `generateName` (its five random characters'
/// value does not matter to any rule here).
fn generated_name(generate_name: &str) -> String {
    format!(
        "{}xxxxx",
        crate::crd_validation::generated_name_prefix(generate_name)
    )
}

fn is_within(path: &str, ancestor: &str) -> bool {
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod rules_tests;
