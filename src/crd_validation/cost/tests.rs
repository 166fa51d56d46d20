//! The estimator against the real server's own numbers (scripts/celcost, run on the same CRDs):
//! every rule of faultline's CRDs, and the CRDs built to sit either side of the budget.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// A rule: (CRD, schema path, index).
type RuleKey = (String, String, usize);
/// Its cost, cardinality, total and messageExpression cost.
type RuleCosts = (u64, u64, u64, u64);

/// The rules' costs and the totals, from a scripts/celcost output.
#[derive(Default)]
struct Oracle {
    rules: BTreeMap<RuleKey, RuleCosts>,
    totals: BTreeMap<String, u64>,
}

fn oracle(file: &str) -> Oracle {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/celcost")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut oracle = Oracle::default();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split('\t').collect();
        if f.get(1) == Some(&"total") {
            oracle.totals.insert(f[0].into(), f[2].parse().unwrap());
            continue;
        }
        let n = |i: usize| f[i].parse::<u64>().unwrap();
        oracle.rules.insert(
            (f[0].into(), f[1].into(), n(2) as usize),
            (n(3), n(4), n(5), n(6)),
        );
    }
    oracle
}

/// Every CRD document of a YAML file, with its name and first version's schema.
fn crds(text: &str) -> Vec<(String, Value)> {
    text.split("\n---")
        .filter(|d| !d.trim().is_empty())
        .map(|doc| {
            let crd: Value = serde_yaml::from_str(doc).unwrap();
            let name = crd["metadata"]["name"].as_str().unwrap().to_string();
            (
                name,
                crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
            )
        })
        .collect()
}

/// Every difference between the estimator and the oracle for the CRDs of `yaml`.
fn differences(yaml: &str, oracle: &Oracle) -> Vec<String> {
    let mut out = Vec::new();
    for (name, schema) in crds(yaml) {
        let costs = estimate_schema(&schema);
        let mut ours: BTreeMap<RuleKey, RuleCosts> = BTreeMap::new();
        for r in &costs.rules {
            let entry = ours
                .entry((name.clone(), r.path.clone(), r.index))
                .or_default();
            if r.field == "rule" {
                (entry.0, entry.1, entry.2) = (r.cost, r.cardinality, r.total);
            } else {
                entry.3 = r.cost;
            }
        }
        for (key, theirs) in oracle.rules.iter().filter(|(k, _)| k.0 == name) {
            match ours.get(key) {
                Some(mine) if mine == theirs => {}
                mine => out.push(format!("{key:?}: ours {mine:?}, the server's {theirs:?}")),
            }
        }
        for key in ours.keys().filter(|k| !oracle.rules.contains_key(*k)) {
            out.push(format!("{key:?}: costed here, not by the server"));
        }
        if oracle.totals.get(&name) != Some(&costs.total) {
            out.push(format!(
                "{name}: total {} here, {:?} on the server",
                costs.total,
                oracle.totals.get(&name)
            ));
        }
    }
    out
}

#[test]
fn every_rule_of_faultlines_crds_costs_what_the_real_server_says() {
    let oracle = oracle("crds.tsv");
    let mut yaml = String::new();
    for crd in crate::api::all_crds() {
        yaml.push_str(&serde_yaml::to_string(&crd).unwrap());
        yaml.push_str("\n---\n");
    }
    assert!(
        oracle.rules.len() > 150,
        "{} rules in the fixture",
        oracle.rules.len()
    );
    let found = differences(&yaml, &oracle);
    assert!(
        found.is_empty(),
        "{} differences:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn every_construct_costs_what_the_real_server_says() {
    let yaml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/celcost/constructs.yaml"),
    )
    .unwrap();
    let yaml = yaml
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let found = differences(&yaml, &oracle("constructs.tsv"));
    assert!(
        found.is_empty(),
        "{} differences:\n{}",
        found.len(),
        found.join("\n")
    );
}

/// The CRDs built to sit just either side of the budget (tests/fixtures/celcost/budget/: one
/// list item or a GameDay stage apart), with the real server's costs and verdicts: the
/// estimator lands on the same side every time.
#[test]
fn crds_either_side_of_the_budget_land_where_the_real_server_puts_them() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/celcost/budget");
    let oracle = oracle("budget.tsv");
    let mut pairs = 0;
    for side in ["rule", "total", "gameday"] {
        for (file, refused) in [
            (format!("{side}-under.yaml"), false),
            (format!("{side}-over.yaml"), true),
        ] {
            let yaml = std::fs::read_to_string(dir.join(&file)).unwrap();
            let found = differences(&yaml, &oracle);
            assert!(found.is_empty(), "{file}: {}", found.join("\n"));
            let (_, schema) = crds(&yaml).remove(0);
            let errors = budget_errors(&estimate_schema(&schema), "spec.validation");
            assert_eq!(!errors.is_empty(), refused, "{file}: {errors:#?}");
        }
        pairs += 1;
    }
    assert_eq!(pairs, 3);
}

/// faultline's own CRDs install: every rule and every CRD within the real server's limits.
/// (Adding a rule that breaks this breaks `kubectl apply -f crds/` on every cluster.)
#[test]
fn faultlines_crds_are_within_the_cel_budget() {
    for crd in crate::api::all_crds() {
        let schema =
            serde_json::to_value(&crd.spec.versions[0].schema).unwrap()["openAPIV3Schema"].clone();
        let costs = estimate_schema(&schema);
        let errors = budget_errors(&costs, "spec.validation");
        assert!(
            errors.is_empty(),
            "{}: {errors:#?}",
            crd.metadata.name.unwrap_or_default()
        );
    }
}
