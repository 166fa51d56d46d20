//! The revert signal: one small ConfigMap in the controller's namespace,
//! `faultline-reverting`, with a key per experiment whose faults are coming out (the
//! experiment's UID). Its value names the experiment and, for an abort, carries the abort's
//! cause and start (a [`Signal`] in JSON). The agents watch it and take the experiment's faults
//! out; the controller watches it too, and an abort it finds there is one under way (a
//! controller that stopped after raising it carries the abort on).
//!
//! Why not the experiment's `faultline.dev/reverting` label, as before: that is a write of the
//! whole experiment, and an experiment of 500 targets is a 240 KB object whose writes took
//! 0.2-0.3 s on the real control plane under an abort's load, during which the API server's
//! CPU was not the agents' and the receipts' writes of the same object met it. A key in a
//! ConfigMap of a few hundred bytes is written in milliseconds. The label (with the abort in the
//! `faultline.dev/aborting` annotation) is still written when the signal cannot be (no
//! permission, say), and agents act on either. The signal can only take faults out: whoever may
//! write the ConfigMap can end experiments early, never start or extend one.
//!
//! Keys are removed by [`sweep`] once nothing can need them (see [`settled`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::caches::not_ended;
use super::signal_receipts::uid_of;
use crate::api::{AbortBegun, ChaosExperiment, FaultInjection};

/// The ConfigMap, in the controller's namespace.
pub const REVERTING_CONFIGMAP: &str = "faultline-reverting";

/// How often keys nothing needs any more are removed, by default.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What a key's value says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// `namespace/name`, for a human reading the ConfigMap.
    pub experiment: String,
    /// The abort, when the revert is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortBegun>,
}

impl Signal {
    /// A value this controller did not write (or an older one's plain `namespace/name`) still
    /// says the experiment is reverting, without an abort.
    pub fn parse(value: &str) -> Signal {
        serde_json::from_str(value).unwrap_or_else(|_| Signal {
            experiment: value.to_string(),
            abort: None,
        })
    }
}

/// Adds the experiment's key, creating the ConfigMap when it is missing.
pub async fn raise(
    client: &Client,
    controller_namespace: &str,
    experiment: &ChaosExperiment,
    abort: Option<&AbortBegun>,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), controller_namespace);
    let uid = experiment.uid().unwrap_or_default();
    let signal = Signal {
        experiment: format!(
            "{}/{}",
            experiment.namespace().unwrap_or_default(),
            experiment.name_any()
        ),
        abort: abort.cloned(),
    };
    let value = serde_json::to_string(&signal).map_err(kube::Error::SerdeError)?;
    let patch = json!({"data": {uid.clone(): value.clone()}});
    // Created at most once; a create that loses to another reconcile's is patched after all.
    for _ in 0..2 {
        match merge(&api, &patch).await {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            other => return other.map(|_| ()),
        }
        let map: ConfigMap = serde_json::from_value(json!({
            "metadata": {
                "name": REVERTING_CONFIGMAP,
                "labels": {"app.kubernetes.io/managed-by": "faultline"},
            },
            "data": {uid.clone(): value.clone()},
        }))
        .map_err(kube::Error::SerdeError)?;
        match api.create(&PostParams::default(), &map).await {
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            other => return other.map(|_| ()),
        }
    }
    Ok(())
}

/// Creates the signal's ConfigMap, empty, where it does not exist yet. Best effort: without it
/// (no permission, say) the first signal creates it, and agents write each injection's status
/// instead of an applied receipt (see `applied_receipts`).
pub async fn ensure(client: Client, controller_namespace: String) {
    let api: Api<ConfigMap> = Api::namespaced(client, &controller_namespace);
    if let Ok(Some(_)) = api.get_opt(REVERTING_CONFIGMAP).await {
        return;
    }
    let map: ConfigMap = match serde_json::from_value(json!({
        "metadata": {
            "name": REVERTING_CONFIGMAP,
            "labels": {"app.kubernetes.io/managed-by": "faultline"},
        },
    })) {
        Ok(map) => map,
        Err(_) => return,
    };
    match api.create(&PostParams::default(), &map).await {
        Ok(_) => {
            tracing::debug!(namespace = %controller_namespace, "created the revert signal's ConfigMap")
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => {
            tracing::debug!(%error, "cannot create the revert signal's ConfigMap yet; the first signal will")
        }
    }
}

/// A JSON merge patch of the signal's ConfigMap (keys added, or removed with `null`).
async fn merge(api: &Api<ConfigMap>, patch: &serde_json::Value) -> Result<ConfigMap, kube::Error> {
    api.patch(
        REVERTING_CONFIGMAP,
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
}

/// Says once per process that the signal cannot be raised (the label still works), then keeps
/// quiet: an older chart without the permission would otherwise warn on every abort.
pub fn report_failure(error: &kube::Error, controller_namespace: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        tracing::debug!(%error, "cannot raise the revert signal");
    } else {
        tracing::warn!(
            %error,
            configmap = REVERTING_CONFIGMAP,
            namespace = controller_namespace,
            "cannot raise the revert signal; the experiments' label tells the agents instead, later on a loaded API server: grant the controller get, list, watch and patch on this ConfigMap (the chart does, and creates it)"
        );
    }
}

/// The keys nothing needs any more: no FaultInjection of the experiment is left (nothing an
/// agent could apply or still has to revert), and the experiment is gone or over. A receipt
/// (see `signal_receipts`) goes with its experiment's signal: by then the verdict has taken it
/// into the experiment's status.
pub fn settled(
    keys: &BTreeMap<String, String>,
    with_injections: &BTreeSet<String>,
    still_running: &BTreeSet<String>,
) -> Vec<String> {
    keys.keys()
        .filter(|key| {
            let uid = uid_of(key);
            !with_injections.contains(uid) && !still_running.contains(uid)
        })
        .cloned()
        .collect()
}

/// Removes settled keys every `every`, until the future is dropped.
pub async fn sweep(
    client: Client,
    controller_namespace: String,
    injections: Store<FaultInjection>,
    experiments: Store<DeserializeGuard<ChaosExperiment>>,
    every: Duration,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &controller_namespace);
    loop {
        tokio::time::sleep(every).await;
        let keys = match api.get_opt(REVERTING_CONFIGMAP).await {
            Ok(Some(map)) => map.data.unwrap_or_default(),
            Ok(None) => continue,
            Err(error) => {
                tracing::debug!(%error, "cannot read the revert signal to sweep it");
                continue;
            }
        };
        if keys.is_empty() {
            continue;
        }
        let with_injections: BTreeSet<String> = injections
            .state()
            .iter()
            .filter_map(|i| i.spec.experiment.uid.clone())
            .collect();
        let still_running = not_ended(&experiments);
        let done = settled(&keys, &with_injections, &still_running);
        if done.is_empty() {
            continue;
        }
        let removals: serde_json::Map<String, serde_json::Value> = done
            .iter()
            .map(|uid| (uid.clone(), serde_json::Value::Null))
            .collect();
        let patch = json!({"data": removals});
        match merge(&api, &patch).await {
            Ok(_) => tracing::debug!(removed = done.len(), "revert signal swept"),
            Err(error) => tracing::debug!(%error, "cannot sweep the revert signal"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_key_stays_while_its_experiment_runs_or_has_injections_left() {
        let keys: BTreeMap<String, String> = [
            ("running", "ns/a"),
            ("over-with-injections", "ns/b"),
            ("over", "ns/c"),
            ("gone", "ns/d"),
            ("gone-with-injections", "ns/e"),
            ("running.node-1", "a receipt"),
            ("over.node-1", "a receipt"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let with_injections = set(&["over-with-injections", "gone-with-injections", "running"]);
        let still_running = set(&["running"]);
        assert_eq!(
            settled(&keys, &with_injections, &still_running),
            vec![
                "gone".to_string(),
                "over".to_string(),
                "over.node-1".to_string()
            ]
        );
    }

    #[test]
    fn a_signal_reads_back_with_its_abort_and_a_plain_name_reads_as_a_revert() {
        let abort = AbortBegun {
            reason: "ProbeFailed".into(),
            message: "probe web: status 503".into(),
            since: chrono::Utc::now(),
        };
        let signal = Signal {
            experiment: "shop/x".into(),
            abort: Some(abort),
        };
        let value = serde_json::to_string(&signal).unwrap();
        assert_eq!(Signal::parse(&value), signal);
        assert_eq!(
            Signal::parse("shop/x"),
            Signal {
                experiment: "shop/x".into(),
                abort: None
            }
        );
    }

    #[test]
    fn nothing_settles_while_everything_is_needed() {
        let keys: BTreeMap<String, String> = [("a".to_string(), "ns/a".to_string())].into();
        assert!(settled(&keys, &set(&[]), &set(&["a"])).is_empty());
        assert!(settled(&keys, &set(&["a"]), &set(&[])).is_empty());
    }
}
