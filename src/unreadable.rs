//! Why an object that bypassed the schema (an old or hand-edited CRD, a direct write to etcd)
//! cannot be read, said with the field's path. The watch's error names only what serde
//! expected ("invalid type: string \"all of them\", expected a sequence"); the user needs to
//! know where. (client required)

use kube::api::{ApiResource, DynamicObject};
use kube::core::NamespaceResourceScope;
use kube::core::error_boundary::InvalidObject;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

/// What is wrong with `invalid` and where (`spec.stages: invalid type: ...`): the object is
/// read again as plain JSON and decoded field by field. When that read fails, or the object
/// has been fixed meanwhile, the watch's own words.
pub async fn explain<K>(client: &Client, invalid: &InvalidObject) -> String
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + DeserializeOwned,
{
    let (Some(name), Some(namespace)) = (&invalid.metadata.name, &invalid.metadata.namespace)
    else {
        return invalid.error.clone();
    };
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    match api.get(name).await {
        Ok(object) => where_it_fails::<K>(&object).unwrap_or_else(|| invalid.error.clone()),
        Err(error) => {
            tracing::debug!(%error, "cannot read the object again to say where it is wrong");
            invalid.error.clone()
        }
    }
}

/// The first field of `object` that does not decode as `K`, with what is wrong with it; `None`
/// when it decodes. Pure.
pub fn where_it_fails<K: DeserializeOwned>(object: &DynamicObject) -> Option<String> {
    let value = serde_json::to_value(object).ok()?;
    let error = serde_path_to_error::deserialize::<_, K>(value).err()?;
    let path = error.path().to_string();
    let what = error.inner().to_string();
    Some(if path == "." || what.starts_with(&path) {
        what
    } else {
        format!("{path}: {what}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChaosExperiment, GameDay};
    use serde_json::json;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named_by_its_path() {
        let day = object(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
            "metadata": {"name": "d", "namespace": "shop"},
            "spec": {"stages": "all of them"},
        }));
        assert_eq!(
            where_it_fails::<GameDay>(&day).unwrap(),
            "spec.stages: invalid type: string \"all of them\", expected a sequence"
        );
    }

    #[test]
    fn a_field_deep_in_a_list_is_named_with_its_index() {
        let experiment = object(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": "e", "namespace": "shop"},
            "spec": {
                "target": {"namespace": "shop", "selector": {"matchLabels": {"app": "web"}}},
                "faults": [{"podKill": {}}, {"networkLatency": {"latency": 5}}],
                "duration": "1m",
            },
        }));
        let said = where_it_fails::<ChaosExperiment>(&experiment).unwrap();
        assert!(
            said.starts_with("spec.faults[1].networkLatency.latency: invalid type: integer `5`"),
            "{said}"
        );
    }

    #[test]
    fn an_object_that_decodes_has_nothing_to_say() {
        let day = object(json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "GameDay",
            "metadata": {"name": "d", "namespace": "shop"},
            "spec": {"stages": []},
        }));
        assert_eq!(where_it_fails::<GameDay>(&day), None);
    }
}
