//! Where the sandbox's real pods keep their containers' output, in the kubelet's layout:
//! `<dir>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`. The pod runtime writes one
//! file per run of a container; the API server's `pods/log` reads them (the current run, or the
//! one before with `--previous`). A pod deleted and created again under the same name gets a
//! new uid, hence a folder of its own, as on a node.

use std::path::{Path, PathBuf};

/// The log file of run `restart_count` of `container` in pod `namespace/pod` (uid `uid`).
pub fn container_log(
    dir: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
    restart_count: i32,
) -> PathBuf {
    dir.join(format!("{namespace}_{pod}_{uid}"))
        .join(container)
        .join(format!("{restart_count}.log"))
}
