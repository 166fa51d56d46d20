//! `sandbox up --apply`: the manifests, workloads first and the chaos resources once the
//! workloads are Ready.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;

use crate::cli::stdout::outln;
use crate::manifest;

/// How long `--apply` waits for the Deployments it applied to be Ready before it applies the
/// chaos resources.
pub(super) const APPLY_READY_WAIT: Duration = Duration::from_secs(30);

/// Applies the manifests: workloads first, then, once the Deployments among them are Ready
/// ([`APPLY_READY_WAIT`] at most), the chaos resources, so that an experiment applied together
/// with its targets finds them. Deployments it did not apply (a real cluster's own) are not
/// waited for.
pub(super) async fn apply_in_order(client: &kube::Client, paths: &[PathBuf]) -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use kube::api::Api;
    let mut chaos = Vec::new();
    let mut deployments: Vec<(String, String)> = Vec::new();
    for path in paths {
        for (name, text) in read_manifests(path)? {
            let objects = manifest::parse_documents(&name, &text)?;
            let (faultline, others): (Vec<_>, Vec<_>) = objects.into_iter().partition(|o| {
                o.types
                    .as_ref()
                    .is_some_and(|t| t.api_version.starts_with("faultline.dev/"))
            });
            for applied in manifest::apply_all(client, &name, &others, "default").await? {
                outln!("applied {applied} ({name})");
            }
            deployments.extend(
                others
                    .iter()
                    .filter(|o| {
                        o.types
                            .as_ref()
                            .is_some_and(|t| t.api_version == "apps/v1" && t.kind == "Deployment")
                    })
                    .map(|o| {
                        (
                            o.namespace().unwrap_or_else(|| "default".into()),
                            o.name_any(),
                        )
                    }),
            );
            chaos.push((name, faultline));
        }
    }
    let deadline = tokio::time::Instant::now() + APPLY_READY_WAIT;
    for (namespace, name) in deployments {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        loop {
            let ready = api.get_opt(&name).await?.is_none_or(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                d.status.and_then(|s| s.ready_replicas).unwrap_or(0) >= want
            });
            if ready || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for (name, objects) in chaos {
        for applied in manifest::apply_all(client, &name, &objects, "default").await? {
            outln!("applied {applied} ({name})");
        }
    }
    Ok(())
}

/// Every manifest under `path`: the file itself, or the `.yaml`/`.yml` files of a directory
/// (recursively, sorted, so the order is stable).
fn read_manifests(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    collect_yaml_files(path, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            Ok((file.display().to_string(), text))
        })
        .collect()
}

fn collect_yaml_files(path: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("{} does not exist", path.display()))?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry = entry?.path();
            let is_yaml = entry.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if entry.is_dir() || is_yaml {
                collect_yaml_files(&entry, files)?;
            }
        }
    } else {
        files.push(path.to_path_buf());
    }
    Ok(())
}
