//! Pod cgroups laid out the way a kubelet's cgroupfs driver lays them out
//! (`.../kubepods/besteffort/pod<uid>/`), so that the node agent finds a sandbox pod's processes
//! by scanning `/proc/*/cgroup` for `pod<uid>`, exactly as on a real node. Only directories are
//! made and processes moved: no controller limits are set.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const CGROUP_FS: &str = "/sys/fs/cgroup";

/// The hierarchies pods are placed in: cgroup v1 `pids` and the v2 hierarchy at `unified` on a
/// hybrid machine, or the one v2 hierarchy on a pure cgroup v2 machine.
pub fn default_mounts() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_FS);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    [root.join("pids"), root.join("unified")]
        .into_iter()
        .filter(|m| m.join("cgroup.procs").exists())
        .collect()
}

/// `<mount>/<root>/kubepods/besteffort/pod<uid>`: what the kubelet (cgroupfs driver, QoS class
/// BestEffort) makes under its cgroup root; the uid keeps its dashes.
pub fn pod_dir(mount: &Path, root: &str, uid: &str) -> PathBuf {
    mount
        .join(root)
        .join("kubepods")
        .join("besteffort")
        .join(format!("pod{uid}"))
}

pub fn create(dirs: &[PathBuf]) -> io::Result<()> {
    for dir in dirs {
        std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Moves process `pid` (all its threads) into every one of `dirs`.
pub fn add_process(dirs: &[PathBuf], pid: u32) -> io::Result<()> {
    for dir in dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("moving pid {pid} into {}: {e}", procs.display()),
            )
        })?;
    }
    Ok(())
}

/// The processes in cgroup `dir` itself (not its children).
pub fn processes(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every cgroup directory at or below `dir`, deepest first (the order `rmdir` needs).
pub fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(subtree(&entry.path()));
            }
        }
    }
    if dir.is_dir() {
        out.push(dir.to_path_buf());
    }
    out
}

/// SIGKILLs every process in `dir` and below; returns their pids.
pub fn kill_all(dir: &Path) -> Vec<i32> {
    let mut killed = Vec::new();
    for cgroup in subtree(dir) {
        for pid in processes(&cgroup) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed.push(pid);
        }
    }
    killed
}

/// Removes `dir` and every cgroup below it. A cgroup that still holds a process cannot be
/// removed (EBUSY); a process that was just killed leaves it within moments, so busy
/// directories are retried for up to `patience`. Returns how many directories were removed.
pub fn remove_tree(dir: &Path, patience: Duration) -> io::Result<usize> {
    let deadline = Instant::now() + patience;
    let mut removed = 0;
    for cgroup in subtree(dir) {
        loop {
            match std::fs::remove_dir(&cgroup) {
                Ok(()) => {
                    removed += 1;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e)
                    if Instant::now() < deadline
                        && e.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32) =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("removing cgroup {}: {e}", cgroup.display()),
                    ));
                }
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_dirs_follow_the_kubelet_cgroupfs_layout() {
        let dir = pod_dir(
            Path::new("/sys/fs/cgroup/pids"),
            "faultline-sandbox",
            "0d3c-9a",
        );
        assert_eq!(
            dir,
            Path::new("/sys/fs/cgroup/pids/faultline-sandbox/kubepods/besteffort/pod0d3c-9a")
        );
    }

    #[test]
    fn subtree_lists_the_deepest_directories_first() {
        let tmp = tempfile::tempdir().unwrap();
        let leaf = tmp.path().join("a/b/c");
        std::fs::create_dir_all(&leaf).unwrap();
        let order = subtree(&tmp.path().join("a"));
        assert_eq!(
            order,
            [leaf.clone(), tmp.path().join("a/b"), tmp.path().join("a")]
        );
        assert!(subtree(&tmp.path().join("missing")).is_empty());
    }
}
