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
//!
//! How to stay under the budget when adding a rule:
//! - bound every string, list and map the rule reads (a string's cost is 4 bytes per character
//!   of its `maxLength`);
//! - say with the schema what the schema can say: a `pattern` (even a second one, in `allOf`)
//!   costs nothing, where `self.matches(...)` on a label key of a GameDay's selector would cost
//!   millions;
//! - check the total: `cargo test --lib crd_validation::cost` estimates every CRD exactly as
//!   the real server does (10,000,000 per rule, 100,000,000 per CRD); the GameDay is at 93.0M,
//!   its most expensive rule (`rules::day_probes_fit`) at 9.0M.

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
        json!({"type": "string", "maxLength": 63, "minLength": 1, "pattern": DNS_LABEL_PATTERN}),
    );
}

/// A list whose entries are identified by `name`: the API server refuses two entries with the
/// same name (and server-side apply merges entries by name).
pub fn list_map_by_name(schema: &mut Schema) {
    schema.insert("x-kubernetes-list-type".into(), json!("map"));
    schema.insert("x-kubernetes-list-map-keys".into(), json!(["name"]));
}

/// A list with one entry per node (`node` is the key: server-side apply merges each node
/// agent's entry into the list without touching the others').
pub fn list_map_by_node(schema: &mut Schema) {
    schema.insert("x-kubernetes-list-type".into(), json!("map"));
    schema.insert("x-kubernetes-list-map-keys".into(), json!(["node"]));
}

/// `target.fieldSelectors`: at most the three supported keys, values of a bounded length.
pub fn field_selector_map(schema: &mut Schema) {
    schema.insert("maxProperties".into(), json!(3));
    schema.insert(
        "additionalProperties".into(),
        json!({"type": "string", "maxLength": 253, "pattern": FIELD_SELECTOR_VALUE_PATTERN}),
    );
}

/// A value a pod's `spec.nodeName`, `status.phase` or `metadata.name` can hold: letters, digits,
/// '-' and '.', starting and ending with a letter or digit. One value: `Running,Pending` or
/// `web-0,web-1` could never match a pod, and would read as a selector's syntax.
pub const FIELD_SELECTOR_VALUE_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$";

/// A bandwidth as `tc` writes it: a number and a unit of bits or bytes per second.
pub const RATE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$";

/// A probe's URL: http or https (the probes speak nothing else).
pub const HTTP_URL_PATTERN: &str = r"^https?://";

/// The HTTP methods a probe may send.
pub const HTTP_METHOD_PATTERN: &str = r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$";

/// Items of a probe's `expectedStatus`: HTTP status codes, 100 to 599, checked by the schema
/// (the controller's own check refuses the same for an object that bypassed the CRD).
pub fn http_status_items(schema: &mut Schema) {
    schema.insert(
        "items".into(),
        json!({"type": "integer", "format": "int32", "minimum": 100, "maximum": 599}),
    );
}

/// How many headers a probe may send: far more than a health check needs, and the bound the
/// header-name rule's cost is estimated with (it runs for every probe of every experiment of a
/// GameDay).
pub const HTTP_MAX_HEADERS: u64 = 16;
/// The longest header value a probe may send (a long bearer token fits).
pub const HTTP_HEADER_VALUE_MAX_LENGTH: u64 = 8192;
/// A header name: an HTTP token (RFC 9110 `tchar`s), what the controller's HTTP client accepts.
/// No `\` or `"` in it, so it goes into a CEL string as it is.
pub const HTTP_HEADER_NAME_PATTERN: &str = r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";
/// A header value: no control character but tab (a CR or LF would end the header and start
/// another one the spec never named; the controller's HTTP client refuses exactly these).
pub const HTTP_HEADER_VALUE_PATTERN: &str = r"^[^\x00-\x08\x0a-\x1f\x7f]*$";

/// A probe's `headers`: at most [`HTTP_MAX_HEADERS`], values bounded and free of control
/// characters (a schema `pattern`, no CEL), names HTTP tokens. A CRD schema cannot constrain a
/// map's keys (no `propertyNames` in a structural schema), so the names take a CEL rule.
pub fn http_headers(schema: &mut Schema) {
    schema.insert("maxProperties".into(), json!(HTTP_MAX_HEADERS));
    schema.insert(
        "additionalProperties".into(),
        json!({
            "type": "string",
            "maxLength": HTTP_HEADER_VALUE_MAX_LENGTH,
            "pattern": HTTP_HEADER_VALUE_PATTERN,
        }),
    );
    schema.insert(
        "x-kubernetes-validations".into(),
        json!([{
            "rule": format!("self.all(k, k.matches(\"{HTTP_HEADER_NAME_PATTERN}\"))"),
            "message": "every header name must be an HTTP token: letters, digits and !#$%&'*+-.^_`|~, no spaces or colons (e.g. X-Request-Id)",
        }]),
    );
}

/// A Kubernetes condition's status.
pub const CONDITION_STATUS_PATTERN: &str = r"^(True|False|Unknown)$";

/// A window's start: a time of day, `00:00` to `23:59`.
pub const WINDOW_START_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// A window's end: a time of day, or `24:00` for the end of the day.
pub const WINDOW_END_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$";

/// An RFC 1123 label (namespace names): 1-63 lowercase letters, digits and '-', starting and
/// ending with a letter or digit. Kubernetes' own regex, anchored.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A label value: empty, or up to 63 letters, digits, '-', '_' and '.', starting and ending with
/// a letter or digit (Kubernetes' `IsValidLabelValue`, with maxLength 63 beside it).
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// A label key (Kubernetes' `IsQualifiedName`): an optional DNS subdomain prefix and '/', then a
/// name of 1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit.
/// The prefix's own limit (253 characters) is [`QUALIFIED_NAME_PREFIX_PATTERN`]: RE2 cannot count
/// a repeated group.
pub const QUALIFIED_NAME_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// The longest label key: a 253-character prefix, '/', a 63-character name.
pub const QUALIFIED_NAME_MAX_LENGTH: u64 = 317;

/// The prefix of a label key (before its one '/') holds at most 253 characters. A second
/// `pattern` (in `allOf`) costs nothing at admission, where a CEL rule would run once per key of
/// every selector of a GameDay.
pub const QUALIFIED_NAME_PREFIX_PATTERN: &str = r"^([^/]{0,253}/)?[^/]*$";

/// How many requirements and labels one selector may hold. Every rule below runs once per
/// requirement of every selector, and a GameDay holds up to 16 × 16 experiments of up to 16
/// faults with a selector each: the CRD's CEL cost budget is what bounds these.
pub const SELECTOR_MAX_REQUIREMENTS: u64 = 8;
/// How many values one `In` / `NotIn` requirement may list.
pub const SELECTOR_MAX_VALUES: u64 = 64;

/// A `metav1.LabelSelector` as the API server validates one in a Deployment, said in the CRD:
/// the operator is one of the four, In and NotIn need values and Exists and DoesNotExist take
/// none (in the words of the server's own selector validation), keys and values follow the
/// label syntax, and every list and map is bounded.
pub fn label_selector(schema: &mut Schema) {
    let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    if let Some(expressions) = properties.get_mut("matchExpressions") {
        expressions["maxItems"] = json!(SELECTOR_MAX_REQUIREMENTS);
        let requirement = &mut expressions["items"];
        let fields = &mut requirement["properties"];
        fields["key"]["maxLength"] = json!(QUALIFIED_NAME_MAX_LENGTH);
        fields["key"]["pattern"] = json!(QUALIFIED_NAME_PATTERN);
        fields["key"]["allOf"] = json!([{"pattern": QUALIFIED_NAME_PREFIX_PATTERN}]);
        fields["operator"]["enum"] = json!(["In", "NotIn", "Exists", "DoesNotExist"]);
        fields["values"]["maxItems"] = json!(SELECTOR_MAX_VALUES);
        fields["values"]["items"] = label_value();
        requirement["x-kubernetes-validations"] = json!([
            {
                "rule": "!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
                "message": "must be specified when `operator` is 'In' or 'NotIn'",
                "fieldPath": ".values",
                "reason": "FieldValueRequired",
            },
            {
                "rule": "!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
                "message": "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                "fieldPath": ".values",
                "reason": "FieldValueForbidden",
            },
        ]);
    }
    if let Some(labels) = properties.get_mut("matchLabels") {
        labels["maxProperties"] = json!(SELECTOR_MAX_REQUIREMENTS);
        labels["additionalProperties"] = label_value();
        labels["x-kubernetes-validations"] = json!([{
            "rule": format!(
                "self.all(k, k.matches('{}') && k.matches('{}'))",
                QUALIFIED_NAME_PATTERN.replace('\\', r"\\"),
                QUALIFIED_NAME_PREFIX_PATTERN,
            ),
            "message": "every key must be a label key: an optional DNS subdomain prefix of at most 253 characters and '/', then 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (e.g. app.kubernetes.io/name)",
        }]);
    }
}

fn label_value() -> serde_json::Value {
    json!({"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN})
}
