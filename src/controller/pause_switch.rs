//! The cluster-wide pause switch (`faultline pause`): `paused: "true"` in ConfigMap
//! [`PAUSE_CONFIGMAP`] of the controller's namespace. Both the controller and the agents read
//! it from their watch caches; before a step that cannot be taken back on a stale cache's word
//! (the first injection of an experiment, refusing a work item), they read it from the API
//! server.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client};

use crate::api::{ChaosExperimentStatus, ConditionStatus};

/// The ConfigMap (in the controller's namespace) whose `paused: "true"` stops all chaos.
pub const PAUSE_CONFIGMAP: &str = "faultline-pause";

/// Whether the experiment waits for chaos to resume (its `Paused` condition).
pub fn held(status: &ChaosExperimentStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Paused" && c.status == ConditionStatus::True)
}

/// Whether this pause ConfigMap says chaos is paused.
pub fn says_paused(map: &ConfigMap) -> bool {
    map.data
        .as_ref()
        .and_then(|d| d.get("paused"))
        .is_some_and(|v| v == "true")
}

/// Whether chaos is paused, as the API server says now (no ConfigMap: not paused).
pub async fn paused_now(client: &Client, controller_namespace: &str) -> Result<bool, kube::Error> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), controller_namespace);
    Ok(maps
        .get_opt(PAUSE_CONFIGMAP)
        .await?
        .is_some_and(|map| says_paused(&map)))
}

/// Whether chaos is paused after all, where a watch cache said it is not: the API server's
/// word. A read that fails leaves the cache's word (the agents check the switch too).
pub async fn paused_after_all(client: &Client, controller_namespace: &str) -> bool {
    match paused_now(client, controller_namespace).await {
        Ok(paused) => {
            if paused {
                tracing::info!(
                    "chaos was paused a moment ago; the watch cache has not seen it yet"
                );
            }
            paused
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the pause switch; going by the watch cache");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(data: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_paused_true_pauses() {
        assert!(says_paused(&map(&[("paused", "true")])));
        for data in [
            &[("paused", "false")][..],
            &[("paused", "True")],
            &[("other", "true")],
            &[],
        ] {
            assert!(!says_paused(&map(data)), "{data:?}");
        }
        assert!(!says_paused(&ConfigMap::default()));
    }
}
