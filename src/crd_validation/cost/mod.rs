//! The CEL cost budget of a CRD, estimated as kube-apiserver v1.36 estimates it before it
//! accepts the CRD (apiextensions' `ValidateCustomResourceDefinitionOpenAPISchema`): every
//! `x-kubernetes-validations` rule (and `messageExpression`) is costed
//! ([`estimate::estimate`]), a rule's cost is multiplied by how many times it can run (the
//! product of the `maxItems` / `maxProperties` above it, or what the 3 MiB request limit allows
//! where one is missing), and the CRD is refused when one rule costs more than 10,000,000 or
//! all of them together more than 100,000,000.
//!
//! Exactness: `scripts/celcost` runs the real server's code on a CRD and prints its costs;
//! tests/fixtures/celcost holds its output for faultline's CRDs and for CRDs built to sit just
//! either side of the budget, and the tests here compare. A function this estimator does not
//! know costs `u64::MAX` (the CRD is refused: conservative).

pub mod decl;
pub mod estimate;

use serde_json::Value;

use decl::Decl;

/// The most one rule may cost (apiextensions' `StaticEstimatedCostLimit`).
pub const RULE_LIMIT: u64 = 10_000_000;
/// The most the rules of one CRD version may cost together (`StaticEstimatedCRDCostLimit`).
pub const CRD_LIMIT: u64 = 100_000_000;

/// The cost of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleCost {
    /// The schema path of the rule's node (`openAPIV3Schema.properties[spec]`, as the server's
    /// errors name it).
    pub path: String,
    /// Index of the rule in the node's `x-kubernetes-validations`.
    pub index: usize,
    /// `rule` or `messageExpression`.
    pub field: &'static str,
    /// One evaluation's worst case.
    pub cost: u64,
    /// How many times the rule can run.
    pub cardinality: u64,
    /// What counts towards the limits: `cost × cardinality` for a rule; a messageExpression
    /// counts once (the server does not multiply it).
    pub total: u64,
}

/// The costs of a CRD version's rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Costs {
    pub rules: Vec<RuleCost>,
    pub total: u64,
}

/// Estimates every rule of `schema` (a version's `openAPIV3Schema`).
pub fn estimate_schema(schema: &Value) -> Costs {
    let mut costs = Costs::default();
    walk(schema, "openAPIV3Schema", Some(1), true, &mut costs);
    costs.total = costs
        .rules
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.total));
    costs
}

fn walk(schema: &Value, path: &str, cardinality: Option<u64>, root: bool, out: &mut Costs) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        let embedded = schema.get("x-kubernetes-embedded-resource") == Some(&Value::Bool(true));
        let decl = Decl::of(schema, root || embedded);
        for (index, rule) in rules.iter().enumerate() {
            let Some(decl) = decl.as_ref() else { continue };
            // Where nothing above bounds it, the rule runs as often as the smallest value of
            // its node fits in a request.
            let times = cardinality
                .unwrap_or(decl::MAX_REQUEST_SIZE_BYTES / (decl.min_serialized_size + 1));
            for (field, multiply) in [("rule", true), ("messageExpression", false)] {
                let Some(text) = rule.get(field).and_then(Value::as_str) else {
                    continue;
                };
                if text.trim().is_empty() {
                    continue;
                }
                let cost = estimate::estimate(text, decl).unwrap_or(u64::MAX);
                let total = if multiply {
                    cost.saturating_mul(times)
                } else {
                    cost
                };
                out.rules.push(RuleCost {
                    path: path.to_string(),
                    index,
                    field,
                    cost,
                    cardinality: times,
                    total,
                });
            }
        }
    }
    let child = |factor: Option<u64>| match (cardinality, factor) {
        (Some(c), Some(f)) => Some(c.saturating_mul(f)),
        _ => None,
    };
    // The factor a node multiplies its children's runs by: a list's maxItems, a map's
    // maxProperties (unbounded without), 1 for an object's fields.
    let factor = match schema.get("type").and_then(Value::as_str) {
        Some("array") => schema.get("maxItems").and_then(Value::as_u64),
        Some("object")
            if schema
                .get("additionalProperties")
                .is_some_and(Value::is_object) =>
        {
            schema.get("maxProperties").and_then(Value::as_u64)
        }
        _ => Some(1),
    };
    if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        walk(
            additional,
            &format!("{path}.additionalProperties"),
            child(factor),
            false,
            out,
        );
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let mut names: Vec<&String> = properties.keys().collect();
        names.sort();
        for name in names {
            walk(
                &properties[name],
                &format!("{path}.properties[{name}]"),
                child(factor),
                false,
                out,
            );
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, &format!("{path}.items"), child(factor), false, out);
    }
}

/// What the real server answers about `costs` when it refuses a CRD: the field errors (path,
/// message) of `spec.versions[index].schema`, empty when the CRD is within the budget.
pub fn budget_errors(costs: &Costs, version_path: &str) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    for rule in &costs.rules {
        if rule.total > RULE_LIMIT {
            let what = if rule.field == "rule" {
                "estimated rule cost"
            } else {
                "estimated messageExpression cost"
            };
            errors.push((
                format!(
                    "{version_path}.{}.x-kubernetes-validations[{}].{}",
                    rule.path, rule.index, rule.field
                ),
                format!("Forbidden: {}", exceeds(what, rule.total, RULE_LIMIT)),
            ));
        }
    }
    if costs.total > CRD_LIMIT {
        let mut expensive: Vec<&RuleCost> = costs
            .rules
            .iter()
            .filter(|r| r.total >= CRD_LIMIT / 100)
            .collect();
        expensive.sort_by_key(|r| std::cmp::Reverse(r.total));
        for rule in expensive.into_iter().take(4) {
            errors.push((
                format!(
                    "{version_path}.{}.x-kubernetes-validations[{}].{}",
                    rule.path, rule.index, rule.field
                ),
                "Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema".into(),
            ));
        }
        errors.push((
            format!("{version_path}.openAPIV3Schema"),
            format!(
                "Forbidden: {}",
                exceeds(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    costs.total,
                    CRD_LIMIT
                )
            ),
        ));
    }
    errors
}

/// apiextensions' `getCostErrorMessage`.
fn exceeds(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

#[cfg(test)]
mod tests;
