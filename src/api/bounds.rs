//! Schema transforms that bound what CEL rules reach, and that let the API server check list
//! shapes natively instead of through CEL.
//!
//! A real API server estimates the cost of every `x-kubernetes-validations` rule before it
//! accepts a CRD, and refuses the CRD when the estimate exceeds its budget. Every string, list
//! and map a rule touches is costed at its declared maximum (`maxLength`, `maxItems`,
//! `maxProperties`) or, without one, at the 3 MB request limit. Rules inside lists are
//! multiplied by every enclosing list's `maxItems`, so a GameDay (stages × experiments ×
//! faults) multiplies whatever its experiments cost. These transforms keep each rule's inputs
//! small and move uniqueness checks (quadratic in CEL) to `x-kubernetes-list-type: map`, which
//! the server checks itself.

use schemars::Schema;
use serde_json::json;

/// The longest CIDR in text: an IPv6 address with an embedded IPv4 part and a /128 suffix.
pub const CIDR_MAX_LENGTH: u64 = 49;

/// Items of a list of CIDRs: each checked with CEL's `isCIDR` (the real server's Go parser,
/// which for one refuses leading zeros such as `010.0.0.0/8`).
pub fn cidr_items(schema: &mut Schema) {
    schema.insert(
        "items".into(),
        json!({
            "type": "string",
            "maxLength": CIDR_MAX_LENGTH,
            "x-kubernetes-validations": [{
                "rule": "isCIDR(self)",
                "message": "must be a CIDR such as 10.0.0.0/8 or 192.168.1.10/32 (no leading zeros)",
            }],
        }),
    );
}

/// Items of a list of ports: 1 to 65535, checked by the schema (no CEL).
pub fn port_items(schema: &mut Schema) {
    schema.insert(
        "items".into(),
        json!({"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535}),
    );
}

/// Items of a list of namespace names (DNS labels).
pub fn namespace_items(schema: &mut Schema) {
    schema.insert(
        "items".into(),
        json!({"type": "string", "maxLength": 63, "minLength": 1}),
    );
}

/// A list whose entries are identified by `name`: the API server refuses two entries with the
/// same name (and server-side apply merges entries by name).
pub fn list_map_by_name(schema: &mut Schema) {
    schema.insert("x-kubernetes-list-type".into(), json!("map"));
    schema.insert("x-kubernetes-list-map-keys".into(), json!(["name"]));
}

/// `target.fieldSelectors`: at most the three supported keys, values of a bounded length.
pub fn field_selector_map(schema: &mut Schema) {
    schema.insert("maxProperties".into(), json!(3));
    schema.insert(
        "additionalProperties".into(),
        json!({"type": "string", "maxLength": 253}),
    );
}
