//! Choosing targets: the first selection (recorded, with its seed, before anything is
//! injected) and the fresh selections of a repeating pod kill. Reads the cluster (namespaces,
//! pods, nodes) and returns what it chose; it never writes: recording and acting on a
//! selection is `act`'s. (client required, read only)

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::{
    api::core::v1::{Namespace, Node, Pod},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{Api, ResourceExt, api::ListParams, core::Selector};

use super::{Context, Error, Result, injections};
use crate::{
    api::{
        ChaosExperiment, ChaosExperimentStatus, FaultKind, NODE_CAPABILITIES_ANNOTATION,
        TargetRecord, TargetState, Verdict,
    },
    lifecycle::status_size::{TARGET_RECORDS_BUDGET, check_budget},
    selection::{self, LabelMatcher, select_targets, target_namespaces},
};

/// What the first selection found.
pub(super) struct Selection {
    /// The seed of the random choice (recorded even when the selection was refused).
    pub seed: i64,
    /// One record per target and fault, `Selected`.
    pub records: Vec<TargetRecord>,
    /// How many pods were selected.
    pub target_count: i32,
    /// For the timeline: what was selected out of what matched (None when selection itself
    /// failed).
    pub summary: Option<String>,
    /// Set when nothing may be injected.
    pub refused: Option<Refusal>,
}

/// Why nothing may be injected, as the verdict to end with.
pub(super) struct Refusal {
    pub verdict: Verdict,
    pub reason: &'static str,
    pub message: String,
}

/// Selects the targets (with `seed`, or a fresh one) and checks that their nodes can take the
/// faults.
pub(super) async fn select(
    ctx: &Context,
    experiment: &ChaosExperiment,
    seed: Option<i64>,
) -> Result<Selection> {
    let namespace = experiment.namespace().unwrap_or_default();
    let spec = &experiment.spec.target;
    let (namespace_objects, pods) = candidates(ctx, experiment).await?;
    let seed = seed.map(|s| s as u64).unwrap_or_else(rand::random);
    match select_targets(
        spec,
        &namespace,
        &namespace_objects,
        &pods,
        &ctx.settings.policy,
        seed,
    ) {
        Ok(selection) => {
            let records = records_for(experiment, &selection);
            if let Err(over) = check_budget(&records, TARGET_RECORDS_BUDGET) {
                // Not one of them recorded: the status write would fail as this one would.
                return Ok(Selection {
                    seed: seed as i64,
                    records: Vec::new(),
                    target_count: 0,
                    summary: None,
                    refused: Some(Refusal {
                        verdict: Verdict::Failed,
                        reason: "SelectionRefused",
                        message: format!(
                            "nothing was injected: the selection is too large to record: {over}"
                        ),
                    }),
                });
            }
            let names: Vec<String> = selection
                .targets
                .iter()
                .map(|t| format!("{}/{}", t.namespace, t.name))
                .collect();
            let summary = selection_summary(&names, selection.matched);
            let refused = node_preflight(ctx, experiment, &selection)
                .await?
                .map(|problem| Refusal {
                    verdict: Verdict::Failed,
                    reason: "PreflightFailed",
                    message: format!("preflight failed, nothing was injected: {problem}"),
                });
            Ok(Selection {
                seed: seed as i64,
                records,
                target_count: selection.targets.len() as i32,
                summary: Some(summary),
                refused,
            })
        }
        Err(error) => {
            let (verdict, reason) = match error {
                selection::SelectionError::InvalidSelector(_)
                | selection::SelectionError::InvalidFieldSelector(_)
                | selection::SelectionError::MissingValue { .. } => (Verdict::Error, "InvalidSpec"),
                _ => (Verdict::Failed, "SelectionRefused"),
            };
            Ok(Selection {
                seed: seed as i64,
                records: Vec::new(),
                target_count: 0,
                summary: None,
                refused: Some(Refusal {
                    verdict,
                    reason,
                    message: format!("nothing was injected: {error}"),
                }),
            })
        }
    }
}

/// The target namespaces' objects and their pods: what selection chooses from.
/// How many pods the selection's timeline entry and Event name; the rest are counted (every
/// one is in `status.targets`). Named in full, 500 targets made a 17 KB timeline entry that
/// every status write carried.
const NAMED_IN_SUMMARY: usize = 10;

/// "selected 3 of 5 matching pods: shop/a, shop/b, shop/c".
fn selection_summary(names: &[String], matched: usize) -> String {
    let shown = names
        .iter()
        .take(NAMED_IN_SUMMARY)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let rest = names.len().saturating_sub(NAMED_IN_SUMMARY);
    let more = if rest > 0 {
        format!(" and {rest} more (status.targets lists every one)")
    } else {
        String::new()
    };
    format!(
        "selected {} of {matched} matching pods: {shown}{more}",
        names.len()
    )
}

async fn candidates(
    ctx: &Context,
    experiment: &ChaosExperiment,
) -> Result<(Vec<Namespace>, Vec<Pod>)> {
    let namespace = experiment.namespace().unwrap_or_default();
    let target = &experiment.spec.target;
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let params = pod_list_params(
        target.label_selector.as_ref(),
        &target.field_selectors,
        !target.include_not_ready,
    );
    let mut namespace_objects = Vec::new();
    let mut pods = Vec::new();
    for ns in target_namespaces(target, &namespace) {
        if let Some(object) = namespaces.get_opt(&ns).await.map_err(Error::Observe)? {
            namespace_objects.push(object);
        }
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        pods.extend(api.list(&params).await.map_err(Error::Observe)?.items);
    }
    Ok((namespace_objects, pods))
}

/// List parameters that have the API server filter pods the way selection will: by the label
/// selector, the field selectors, and `status.phase=Running` when only running pods count.
/// Selection still applies every rule itself; the server only keeps the pods it would reject
/// off the wire and out of memory, so its filter must never be narrower than selection's.
/// Whatever the server might refuse with a 400 (a label value no label can have, which then
/// simply matches nothing) is left to selection alone.
pub(super) fn pod_list_params(
    labels: Option<&LabelSelector>,
    fields: &BTreeMap<String, String>,
    running_only: bool,
) -> ListParams {
    let mut params = ListParams::default();
    if let Some(selector) = labels
        && LabelMatcher::new(selector).is_ok()
        && plain_label_selector(selector)
        && let Ok(selector) = Selector::try_from(selector.clone())
        && !selector.selects_all()
    {
        params = params.labels_from(&selector);
    }
    // An unsupported field fails the selection whatever is listed: filter on none then.
    let supported = |key: &str| matches!(key, "spec.nodeName" | "status.phase" | "metadata.name");
    let mut terms: Vec<String> = Vec::new();
    if fields.keys().all(|k| supported(k)) {
        terms.extend(
            fields
                .iter()
                .filter(|(_, value)| !value.is_empty() && plain(value, 253))
                .map(|(key, value)| format!("{key}={value}")),
        );
    }
    if running_only && !fields.contains_key("status.phase") {
        terms.push("status.phase=Running".into());
    }
    if !terms.is_empty() {
        params = params.fields(&terms.join(","));
    }
    params
}

/// Every key and value is one the selector syntax carries as is.
fn plain_label_selector(selector: &LabelSelector) -> bool {
    let key = |k: &str| {
        !k.is_empty()
            && k.len() <= 317
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    };
    let labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| key(k) && plain(v, 63));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        key(&e.key)
            && e.values
                .iter()
                .flatten()
                .all(|v| !v.is_empty() && plain(v, 63))
    });
    labels && expressions
}

/// At most `max` characters, each a letter, digit, `.`, `_` or `-`.
fn plain(value: &str, max: usize) -> bool {
    value.len() <= max
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A round of a repeating pod kill, as selected.
pub(super) enum Round {
    /// Kill these targets: fresh records (`Injecting`) that replace the previous round's
    /// records of the due faults.
    Kill {
        due: Vec<usize>,
        records: Vec<TargetRecord>,
        /// For the timeline: the round's seed and targets.
        summary: String,
    },
    /// The world changed under the experiment (e.g. more pods than the cap now): kill nothing
    /// this round, for this reason.
    Skip { due: Vec<usize>, why: String },
}

/// Selects the targets of the repeating kills due at `now`, afresh (a new seed each round,
/// written in the timeline).
pub(super) async fn select_round(
    ctx: &Context,
    experiment: &ChaosExperiment,
    status: &ChaosExperimentStatus,
    now: DateTime<Utc>,
) -> Result<Round> {
    let namespace = experiment.namespace().unwrap_or_default();
    let (namespace_objects, pods) = candidates(ctx, experiment).await?;
    let round_seed = status.seed.unwrap_or_default() as u64 ^ now.timestamp_millis() as u64;
    let due = super::observe::due_kills(experiment, status, now);
    let selection = match select_targets(
        &experiment.spec.target,
        &namespace,
        &namespace_objects,
        &pods,
        &ctx.settings.policy,
        round_seed,
    ) {
        Ok(selection) => selection,
        Err(error) => {
            return Ok(Round::Skip {
                due,
                why: error.to_string(),
            });
        }
    };
    let records: Vec<TargetRecord> = records_for(experiment, &selection)
        .into_iter()
        .filter(|r| due.contains(&(r.fault_index as usize)))
        .map(|mut r| {
            r.state = TargetState::Injecting;
            r
        })
        .collect();
    // The round's records replace the due faults' previous ones; the others stay.
    let kept = status
        .targets
        .iter()
        .filter(|r| !due.contains(&(r.fault_index as usize)));
    let after_round: Vec<TargetRecord> = kept.chain(&records).cloned().collect();
    if let Err(over) = check_budget(&after_round, TARGET_RECORDS_BUDGET) {
        return Ok(Round::Skip {
            due,
            why: format!("the selection is too large to record: {over}"),
        });
    }
    let names: Vec<String> = selection
        .targets
        .iter()
        .map(|t| format!("{}/{}", t.namespace, t.name))
        .collect();
    Ok(Round::Kill {
        due,
        records,
        summary: format!("kill round (seed {round_seed}): {}", names.join(", ")),
    })
}

pub(super) fn records_for(
    experiment: &ChaosExperiment,
    selection: &selection::Selection,
) -> Vec<TargetRecord> {
    let mut records = Vec::new();
    for (index, fault) in experiment.spec.faults.iter().enumerate() {
        let Some(kind) = fault.kind() else { continue };
        for target in &selection.targets {
            records.push(TargetRecord {
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                uid: target.uid.clone(),
                node_name: target.node_name.clone(),
                pod_ip: target.pod_ip.clone(),
                fault_index: index as i32,
                fault: kind.name().into(),
                state: TargetState::Selected,
                injection: kind.is_network().then(|| {
                    injections::injection_name(&experiment.name_any(), index as i32, &target.uid)
                }),
                ..Default::default()
            });
        }
    }
    records
}

/// What a fault needs from the node's kernel, as alternatives: any one will do.
pub(super) fn required_capabilities(kind: FaultKind<'_>) -> &'static [&'static str] {
    match kind {
        FaultKind::PodKill(_) => &[],
        FaultKind::NetworkLatency(_) | FaultKind::NetworkLoss(_) => &["netem", "nfqueue"],
        // Agents since the kernel-deadline gates cap bandwidth with htb; older ones said tbf.
        FaultKind::NetworkBandwidth(_) => &["htb", "tbf"],
        FaultKind::NetworkPartition(_) => &["nftables", "iptables"],
    }
}

/// Refuses a network fault that no agent could apply: its target runs on no node, or its
/// node's agent has said (through the `faultline.dev/capabilities` annotation) that the
/// node's kernel cannot do it. A node without the annotation has no agent report yet: a real
/// run waits for it (the injection timeout covers an agent that never comes), a dry run says
/// that the fault could not be applied there now.
async fn node_preflight(
    ctx: &Context,
    experiment: &ChaosExperiment,
    selection: &selection::Selection,
) -> Result<Option<String>> {
    let network: Vec<&'static str> = experiment
        .spec
        .faults
        .iter()
        .filter_map(|f| f.kind())
        .filter(|k| k.is_network())
        .map(|k| k.name())
        .collect();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut checked = std::collections::BTreeMap::new();
    for target in &selection.targets {
        let Some(node_name) = target.node_name.as_ref().filter(|n| !n.is_empty()) else {
            if let Some(fault) = network.first() {
                return Ok(Some(format!(
                    "pod {}/{} runs on no node (it is not scheduled), so no faultline agent can apply {fault} to it",
                    target.namespace, target.name
                )));
            }
            continue;
        };
        if !checked.contains_key(node_name) {
            let node = nodes.get_opt(node_name).await.map_err(Error::Observe)?;
            let capabilities = node
                .and_then(|n| n.metadata.annotations)
                .and_then(|a| a.get(NODE_CAPABILITIES_ANNOTATION).cloned());
            checked.insert(node_name.clone(), capabilities);
        }
        let Some(Some(capabilities)) = checked.get(node_name) else {
            if experiment.spec.dry_run
                && let Some(fault) = network.first()
            {
                return Ok(Some(format!(
                    "no faultline agent has reported on node {node_name} (pod {}/{}): it has no {NODE_CAPABILITIES_ANNOTATION} annotation, so {fault} could not be applied there now; is the agent DaemonSet running on that node?",
                    target.namespace, target.name
                )));
            }
            continue;
        };
        let offered: Vec<&str> = capabilities.split(',').map(str::trim).collect();
        for fault in &experiment.spec.faults {
            let Some(kind) = fault.kind() else { continue };
            let needs = required_capabilities(kind);
            if !needs.is_empty() && !needs.iter().any(|n| offered.contains(n)) {
                return Ok(Some(format!(
                    "node {node_name} (pod {}/{}) cannot do {}: it needs {} and the node's agent reports only [{}]",
                    target.namespace,
                    target.name,
                    kind.name(),
                    needs.join(" or "),
                    capabilities
                )));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_selection_summary_names_ten_pods_and_counts_the_rest() {
        let names: Vec<String> = (0..3).map(|i| format!("shop/web-{i}")).collect();
        assert_eq!(
            super::selection_summary(&names, 5),
            "selected 3 of 5 matching pods: shop/web-0, shop/web-1, shop/web-2"
        );
        let many: Vec<String> = (0..500).map(|i| format!("shop/web-{i}")).collect();
        let summary = super::selection_summary(&many, 512);
        assert!(
            summary.starts_with("selected 500 of 512 matching pods: shop/web-0, shop/web-1,"),
            "{summary}"
        );
        assert!(
            summary.ends_with("shop/web-9 and 490 more (status.targets lists every one)"),
            "{summary}"
        );
    }

    use super::*;

    fn selector(json: serde_json::Value) -> LabelSelector {
        serde_json::from_value(json).unwrap()
    }

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_api_server_filters_on_the_selector_the_fields_and_the_running_phase() {
        let labels = selector(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}],
        }));
        let params = pod_list_params(Some(&labels), &fields(&[("spec.nodeName", "node-1")]), true);
        assert_eq!(
            params.label_selector.as_deref(),
            Some("app=web,tier notin (db)")
        );
        assert_eq!(
            params.field_selector.as_deref(),
            Some("spec.nodeName=node-1,status.phase=Running")
        );
    }

    #[test]
    fn a_phase_the_experiment_names_is_not_overridden_and_not_ready_pods_are_listed_when_wanted() {
        let params = pod_list_params(None, &fields(&[("status.phase", "Pending")]), true);
        assert_eq!(
            params.field_selector.as_deref(),
            Some("status.phase=Pending")
        );
        let params = pod_list_params(None, &BTreeMap::new(), false);
        assert_eq!(params.label_selector, None);
        assert_eq!(params.field_selector, None);
    }

    #[test]
    fn what_the_api_server_could_refuse_is_left_to_selection() {
        // Not a valid label value: it matches no pod, but the server would answer 400.
        let odd = selector(serde_json::json!({"matchLabels": {"app": "web shop"}}));
        assert_eq!(
            pod_list_params(Some(&odd), &BTreeMap::new(), false).label_selector,
            None
        );
        // An invalid expression fails selection whatever is listed.
        let invalid = selector(serde_json::json!({
            "matchExpressions": [{"key": "tier", "operator": "In", "values": []}],
        }));
        assert_eq!(
            pod_list_params(Some(&invalid), &BTreeMap::new(), false).label_selector,
            None
        );
        // An unsupported field fails selection: no field is sent then (but the phase still is).
        let params = pod_list_params(
            None,
            &fields(&[("spec.nodeName", "node-1"), ("spec.hostname", "x")]),
            true,
        );
        assert_eq!(
            params.field_selector.as_deref(),
            Some("status.phase=Running")
        );
    }
}
