//! Applying manifests to a cluster the way `kubectl apply --server-side` does: each document is
//! resolved to its resource through discovery and written with server-side apply, so applying
//! the same file twice changes nothing.

use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    core::GroupVersionKind,
    discovery::{self, Scope},
};
use serde::Deserialize;

/// The field manager for objects the CLI applies on a user's behalf.
pub const CLI_FIELD_MANAGER: &str = "faultline-cli";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{source_name}: document {index} is not valid YAML: {message}")]
    Parse {
        source_name: String,
        index: usize,
        message: String,
    },
    #[error("{source_name}: document {index} has no apiVersion/kind")]
    NoKind { source_name: String, index: usize },
    #[error(
        "{source_name}: {kind} is not served by this cluster (are faultline's CRDs installed? try `faultline crds | kubectl apply -f -`): {source}"
    )]
    Unknown {
        source_name: String,
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Splits a multi-document YAML text into objects, skipping empty documents.
pub fn parse_documents(source_name: &str, text: &str) -> Result<Vec<DynamicObject>, ApplyError> {
    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document).map_err(|e| ApplyError::Parse {
            source_name: source_name.to_string(),
            index: index + 1,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|e| ApplyError::Parse {
                source_name: source_name.to_string(),
                index: index + 1,
                message: e.to_string(),
            })?;
        if object.types.is_none() {
            return Err(ApplyError::NoKind {
                source_name: source_name.to_string(),
                index: index + 1,
            });
        }
        objects.push(object);
    }
    Ok(objects)
}

/// Applies every object with server-side apply; namespaced objects without a namespace go to
/// `default_namespace`. Returns `kind/name` of each applied object, in order.
pub async fn apply_all(
    client: &Client,
    source_name: &str,
    objects: &[DynamicObject],
    default_namespace: &str,
) -> Result<Vec<String>, ApplyError> {
    let mut applied = Vec::with_capacity(objects.len());
    for object in objects {
        let types = object.types.clone().unwrap_or_default();
        let gvk = GroupVersionKind::try_from(&types).map_err(|_| ApplyError::NoKind {
            source_name: source_name.to_string(),
            index: applied.len() + 1,
        })?;
        let (resource, caps) = discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|source| ApplyError::Unknown {
                source_name: source_name.to_string(),
                kind: gvk.kind.clone(),
                source,
            })?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = object
                    .namespace()
                    .unwrap_or_else(|| default_namespace.to_string());
                Api::namespaced_with(client.clone(), &ns, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let name = object.name_any();
        let params = PatchParams::apply(CLI_FIELD_MANAGER).force();
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| ApplyError::Apply {
                kind: gvk.kind.clone(),
                name: name.clone(),
                source,
            })?;
        applied.push(format!("{}/{}", gvk.kind.to_lowercase(), name));
    }
    Ok(applied)
}

/// Installs (or updates) CRDs with server-side apply and waits until the API server serves
/// each one (`Established`), at most `timeout`.
pub async fn install_crds(
    client: &Client,
    crds: &[k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition],
    timeout: std::time::Duration,
) -> Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(CLI_FIELD_MANAGER).force();
    for crd in crds {
        let mut crd = crd.clone();
        crd.metadata.managed_fields = None;
        api.patch(&crd.name_any(), &params, &Patch::Apply(&crd))
            .await?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    for crd in crds {
        let name = crd.name_any();
        loop {
            let current = api.get(&name).await?;
            let established = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}
