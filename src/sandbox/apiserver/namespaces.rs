//! A namespace's deletion, carried out as kube-apiserver and the namespace controller carry it
//! out: the namespace is marked (`deletionTimestamp`, phase `Terminating`) and refuses new
//! content (403, cause `NamespaceTerminating`); its pods are deleted first and, once they are
//! gone, everything else (ordered namespace deletion, on by default since v1.33), each through
//! the usual deletion, so that a finalizer holds its object, and the namespace, until its
//! owner lets go; the namespace goes with its last object.
//!
//! Simplified: the real controller works in the background with backoff and reports progress
//! in the namespace's conditions; here each step runs at once, on the request that made it
//! possible (the namespace's DELETE, or the removal of an object in it).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::errors::{ApiError, Cause};
use super::gc::{self, DeleteOpts};
use super::resources::ResKey;
use super::{State, meta, namespace_key};

/// Marks namespace `name` for deletion and deletes what it can of its content now. Returns the
/// namespace as the DELETE answers it: marked, or already gone if it was empty.
pub fn begin(st: &mut State, old: &Value, name: &str) -> Value {
    if is_terminating(st, name) {
        return old.clone();
    }
    let mut marked = old.clone();
    marked["metadata"]["deletionTimestamp"] = json!(meta::now());
    marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    marked["status"]["phase"] = json!("Terminating");
    let marked = st.store.put(&namespace_key(), marked);
    proceed(st, name);
    marked
}

/// Whether namespace `name` is being deleted.
pub fn is_terminating(st: &State, name: &str) -> bool {
    st.store
        .get(&namespace_key(), "", name)
        .is_some_and(|ns| ns["metadata"].get("deletionTimestamp").is_some())
}

/// The real NamespaceLifecycle admission's answer to a create in a terminating namespace.
pub fn refuse_content(group: &str, plural: &str, name: &str, namespace: &str) -> ApiError {
    let mut error = ApiError::forbidden(
        group,
        plural,
        name,
        &format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        ),
    );
    error.details.causes = vec![Cause {
        field: "metadata.namespace".into(),
        message: format!("namespace {namespace} is being terminated"),
        reason: "NamespaceTerminating".into(),
    }];
    error
}

/// The next steps of a terminating namespace's deletion, after something in it went: delete
/// what may be deleted now, and the namespace once it is empty.
pub fn proceed(st: &mut State, namespace: &str) {
    if namespace.is_empty() || !is_terminating(st, namespace) {
        return;
    }
    // Deleting content removes objects, and each removal comes back here: once is enough.
    let ending = format!("namespace/{namespace}");
    if !st.ending.insert(ending.clone()) {
        return;
    }
    let pods = pods_key();
    let content = |st: &State| -> Vec<(ResKey, String, bool)> {
        st.store
            .iter_all()
            .filter(|(_, o)| o["metadata"]["namespace"].as_str() == Some(namespace))
            .map(|(k, o)| {
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (
                    k.clone(),
                    name,
                    o["metadata"].get("deletionTimestamp").is_some(),
                )
            })
            .collect()
    };
    let delete_all = |st: &mut State, objects: Vec<(ResKey, String, bool)>| {
        for (key, name, _) in objects.into_iter().filter(|(_, _, marked)| !marked) {
            let _ = gc::delete(st, &key, namespace, &name, &DeleteOpts::background());
        }
    };
    let pods_first: Vec<_> = content(st)
        .into_iter()
        .filter(|(k, _, _)| *k == pods)
        .collect();
    delete_all(st, pods_first);
    if !content(st).iter().any(|(k, _, _)| *k == pods) {
        let rest = content(st);
        delete_all(st, rest);
    }
    st.ending.remove(&ending);
    if content(st).is_empty() {
        gc::remove_now(st, &namespace_key(), "", namespace);
        tracing::debug!(namespace, "namespace deleted with its last object");
    }
}

fn pods_key() -> ResKey {
    ResKey {
        group: String::new(),
        plural: "pods".into(),
    }
}

/// Namespaces and CRDs whose content is being deleted right now (`namespace/NAME`,
/// `crd/NAME`): their deletion steps are not entered again from the removals they make.
pub type Ending = BTreeSet<String>;
