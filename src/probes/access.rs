//! What a `kubernetes` probe needs to be allowed to do, and what to tell the user when it is
//! not. Pure: no client. The controller asks the API server (a SelfSubjectAccessReview per
//! permission) before it injects anything; a check that is refused at run time (403) says the
//! same words.
//!
//! A probe the controller may not run is a configuration error (the chart's
//! `controller.probeReadRules` lacks the kind), never a failed hypothesis: the system under
//! test did nothing wrong.

/// The Helm value that grants `kubernetes` probes read access, named in every refusal.
pub const PROBE_READ_RULES_KEY: &str = "controller.probeReadRules";

/// One request a probe makes: `verb` on `group`/`resource`, in `namespace` (None: cluster-wide
/// or cluster-scoped).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
}

impl Permission {
    pub fn new(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Self {
        Permission {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.filter(|n| !n.is_empty()).map(str::to_string),
        }
    }

    /// `get policy/poddisruptionbudgets in namespace shop`; the core group shows as `core`.
    pub fn describe(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        let place = match &self.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "cluster-wide".to_string(),
        };
        format!("{} {group}/{} {place}", self.verb, self.resource)
    }

    /// The `controller.probeReadRules` entry that grants it, as YAML flow.
    pub fn rule(&self) -> String {
        format!(
            "{{apiGroups: [\"{}\"], resources: [\"{}\"]}}",
            self.group, self.resource
        )
    }
}

/// The sentence for probes the controller may not run: every missing permission (verb, group,
/// resource, namespace), each probe that needs it, and the value to set.
pub fn refusal(denied: &[(String, Permission)]) -> Option<String> {
    if denied.is_empty() {
        return None;
    }
    let mut rules: Vec<String> = denied.iter().map(|(_, p)| p.rule()).collect();
    rules.sort();
    rules.dedup();
    let each: Vec<String> = denied
        .iter()
        .map(|(probe, p)| format!("probe {probe} needs to {}", p.describe()))
        .collect();
    Some(format!(
        "the controller is not allowed to read what its kubernetes probes name ({}); this is a configuration error, not a failed hypothesis: add {} to the Helm value {PROBE_READ_RULES_KEY} and upgrade the release",
        each.join("; "),
        rules.join(" and ")
    ))
}

/// The sentence for a check the API server refused (403) while the experiment ran.
pub fn refused_at_run_time(permission: &Permission, server_says: &str) -> String {
    format!(
        "the API server refused to let the controller {} ({server_says}); this is a configuration error, not a failed hypothesis: add {} to the Helm value {PROBE_READ_RULES_KEY} and upgrade the release",
        permission.describe(),
        permission.rule()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_verb_group_resource_namespace_and_the_helm_value() {
        let denied = vec![
            (
                "budget".to_string(),
                Permission::new("get", "policy", "poddisruptionbudgets", Some("shop")),
            ),
            (
                "cm".to_string(),
                Permission::new("list", "", "configmaps", Some("shop")),
            ),
        ];
        let message = refusal(&denied).unwrap();
        assert!(
            message.contains(
                "probe budget needs to get policy/poddisruptionbudgets in namespace shop"
            ),
            "{message}"
        );
        assert!(
            message.contains("probe cm needs to list core/configmaps in namespace shop"),
            "{message}"
        );
        assert!(
            message.contains("{apiGroups: [\"\"], resources: [\"configmaps\"]}"),
            "{message}"
        );
        assert!(message.contains("controller.probeReadRules"), "{message}");
        assert!(message.contains("not a failed hypothesis"), "{message}");
    }

    #[test]
    fn nothing_denied_is_no_refusal() {
        assert_eq!(refusal(&[]), None);
    }

    #[test]
    fn a_cluster_scoped_read_says_cluster_wide() {
        let p = Permission::new("get", "", "nodes", None);
        assert_eq!(p.describe(), "get core/nodes cluster-wide");
        let p = Permission::new("get", "", "nodes", Some(""));
        assert_eq!(p.namespace, None);
    }
}
