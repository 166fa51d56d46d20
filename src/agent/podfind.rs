//! Finding a pod's network namespace from its UID, whatever the container runtime.
//!
//! The kubelet puts every container of a pod under one cgroup named after the pod's UID, and
//! the name is the same for containerd, CRI-O and Docker (cri-dockerd):
//!
//! - cgroupfs driver: `/kubepods/besteffort/pod0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37/<container>`
//!   (Guaranteed pods sit directly under `/kubepods`);
//! - systemd driver: `/kubepods.slice/kubepods-burstable.slice/`
//!   `kubepods-burstable-pod0f3c2a9e_7b1d_4c55_9a0e_2b6f8d4e1a37.slice/cri-containerd-<id>.scope`
//!   (systemd reserves `-` for nesting, so the UID's dashes become underscores).
//!
//! kind and other nested setups put a prefix in front (`/kubelet.slice/kubelet-kubepods.slice/`,
//! `/docker/<id>/kubepods/`), which the parser allows. Every process of a pod shares the pod's
//! network namespace, so any process found under the pod's cgroup leads to it.
//!
//! Static pods: the kubelet's own UID for a static pod is its config hash (32 hex digits), not
//! the mirror pod's `metadata.uid`; both forms are recognised, the caller picks which to ask for.
//!
//! Guarantee: a process in the agent's own network namespace (the node's, for a hostNetwork
//! DaemonSet) is never returned. A hostNetwork pod is refused with an error that says so: a
//! fault there would hit the whole node.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::netns::Netns;

/// Why a pod's network namespace could not be found. Every message is a sentence a user can act
/// on (it ends up in the FaultInjection's status).
#[derive(Debug, thiserror::Error)]
pub enum PodNetnsError {
    #[error(
        "\"{uid}\" is not a pod UID (expected a UUID such as 0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37)"
    )]
    InvalidUid { uid: String },
    #[error(
        "no process of pod {uid} found on this node under {} (is the pod running on this node?)",
        proc_root.display()
    )]
    NotFound { uid: String, proc_root: PathBuf },
    #[error(
        "pod {uid} uses the host network (its process {pid} is in the node's own network \
         namespace); faultline never changes the node's network, so network faults need a pod \
         without hostNetwork"
    )]
    HostNetwork { uid: String, pid: u32 },
    #[error(
        "cannot read {}: {source} (the agent needs the node's /proc, through hostPID or a \
         hostPath mount, and must run as root)",
        path.display()
    )]
    Proc {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<PodNetnsError> for io::Error {
    fn from(err: PodNetnsError) -> Self {
        let kind = match &err {
            PodNetnsError::InvalidUid { .. } => io::ErrorKind::InvalidInput,
            PodNetnsError::NotFound { .. } => io::ErrorKind::NotFound,
            PodNetnsError::HostNetwork { .. } => io::ErrorKind::PermissionDenied,
            PodNetnsError::Proc { source, .. } => source.kind(),
        };
        io::Error::new(kind, err)
    }
}

/// The pod UID in one line of `/proc/PID/cgroup` (cgroup v1 `N:controllers:/path` or v2
/// `0::/path`), canonical: lowercase, with dashes. `None` for a process outside any pod.
pub fn pod_uid_in_cgroup_line(line: &str) -> Option<String> {
    let mut fields = line.trim_end().splitn(3, ':');
    let hierarchy = fields.next()?;
    let _controllers = fields.next()?;
    let path = fields.next()?;
    if hierarchy.parse::<u32>().is_err() || !path.starts_with('/') {
        return None;
    }
    pod_uid_in_cgroup_path(path)
}

fn pod_uid_in_cgroup_path(path: &str) -> Option<String> {
    let mut under_kubepods = false;
    for segment in path.split('/') {
        if let Some(uid) = systemd_pod_slice(segment) {
            return Some(uid);
        }
        // cgroupfs: `pod<uid>` below a `kubepods` ancestor (so a stray "pod..." directory
        // elsewhere is not mistaken for a pod).
        if under_kubepods
            && let Some(uid) = segment
                .strip_prefix("pod")
                .and_then(|u| canonical_uid(u, '-'))
        {
            return Some(uid);
        }
        under_kubepods |= segment.contains("kubepods");
    }
    None
}

/// `kubepods[-qos]-pod<uid_with_underscores>.slice`, with any prefix such as `kubelet-`.
fn systemd_pod_slice(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice")?;
    let (parent, uid) = name.rsplit_once("-pod")?;
    if !parent.split('-').any(|word| word == "kubepods") {
        return None;
    }
    canonical_uid(uid, '_')
}

/// A UUID written with `sep` between its groups (8-4-4-4-12 hex digits), or 32 hex digits (a
/// static pod's config hash), as lowercase with dashes.
fn canonical_uid(raw: &str, sep: char) -> Option<String> {
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    if raw.len() == 32 && hex(raw) {
        return Some(raw.to_ascii_lowercase());
    }
    let groups: Vec<&str> = raw.split(sep).collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lengths == [8, 4, 4, 4, 12] && groups.iter().all(|g| hex(g)))
        .then(|| groups.join("-").to_ascii_lowercase())
}

/// The UID as the cgroup parser returns it, from what a user or the API wrote (any case,
/// dashes or underscores).
fn normalise_query(uid: &str) -> Result<String, PodNetnsError> {
    let trimmed = uid.trim();
    canonical_uid(trimmed, '-')
        .or_else(|| canonical_uid(trimmed, '_'))
        .ok_or_else(|| PodNetnsError::InvalidUid {
            uid: uid.to_string(),
        })
}

/// (device, inode) of a namespace file, following `/proc`'s magic links.
fn ns_key(path: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// The agent's own network namespace: `/proc/self` (the main thread), not `thread-self`, so the
/// answer is the same from a thread that has entered a pod's namespace.
fn host_key() -> Result<(u64, u64), PodNetnsError> {
    let path = Path::new("/proc/self/ns/net");
    ns_key(path).map_err(|source| PodNetnsError::Proc {
        path: path.to_path_buf(),
        source,
    })
}

/// Every process under `proc_root` that belongs to a pod, as (pid, pod UID). Processes that exit
/// while we read are skipped.
fn pod_processes(proc_root: &Path) -> Result<Vec<(u32, String)>, PodNetnsError> {
    let entries = fs::read_dir(proc_root).map_err(|source| PodNetnsError::Proc {
        path: proc_root.to_path_buf(),
        source,
    })?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(uid) = pod_of_process(proc_root, pid) {
            found.push((pid, uid));
        }
    }
    found.sort_unstable();
    Ok(found)
}

fn pod_of_process(proc_root: &Path, pid: u32) -> Option<String> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    text.lines().find_map(pod_uid_in_cgroup_line)
}

/// A PID of each pod as the last scan of each `/proc` found them. A lookup tries its pod's
/// first, with the same checks as after a scan (the process is still the pod's, not in the
/// node's namespace); only a miss scans again. A scan reads the cgroup file of every process
/// (15 ms at 500 pods here), and the agent looks a pod up for each apply and revert.
type Remembered = BTreeMap<PathBuf, BTreeMap<String, u32>>;

fn remembered() -> &'static std::sync::Mutex<Remembered> {
    static REMEMBERED: std::sync::OnceLock<std::sync::Mutex<Remembered>> =
        std::sync::OnceLock::new();
    REMEMBERED.get_or_init(Default::default)
}

fn remember_pids(proc_root: &Path, processes: &[(u32, String)]) {
    let mut pids = BTreeMap::new();
    for (pid, uid) in processes {
        pids.entry(uid.clone()).or_insert(*pid);
    }
    remembered()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(proc_root.to_path_buf(), pids);
}

fn remembered_pid(proc_root: &Path, uid: &str) -> Option<u32> {
    remembered()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(proc_root)?
        .get(uid)
        .copied()
}

/// What the scan found for one pod.
enum Scan {
    /// A process in the pod's own namespace.
    Pod(u32),
    /// Only processes in the agent's namespace: a hostNetwork pod.
    HostNetwork(u32),
    Absent,
}

fn scan_pod(proc_root: &Path, uid: &str, host: (u64, u64)) -> Result<Scan, PodNetnsError> {
    let mut host_pid = None;
    let processes = pod_processes(proc_root)?;
    remember_pids(proc_root, &processes);
    for (pid, _) in processes.into_iter().filter(|(_, u)| u == uid) {
        match ns_key(&proc_root.join(pid.to_string()).join("ns/net")) {
            Ok(key) if key == host => host_pid = Some(pid),
            Ok(_) => return Ok(Scan::Pod(pid)),
            Err(_) => {} // exited, or a kernel thread
        }
    }
    Ok(host_pid.map_or(Scan::Absent, Scan::HostNetwork))
}

/// A process of pod `pod_uid` under `proc_root` (normally `/proc`), in the pod's own network
/// namespace. `Ok(None)` when the pod has no process on this node; an error when the pod uses
/// the host network (it must never be touched) or `/proc` cannot be read.
pub fn find_pod_pid(proc_root: &Path, pod_uid: &str) -> io::Result<Option<u32>> {
    let uid = normalise_query(pod_uid)?;
    match scan_pod(proc_root, &uid, host_key()?)? {
        Scan::Pod(pid) => Ok(Some(pid)),
        Scan::HostNetwork(pid) => Err(PodNetnsError::HostNetwork { uid, pid }.into()),
        Scan::Absent => Ok(None),
    }
}

/// Every pod with a process on this node, each with one of its PIDs (for orphan cleanup).
/// hostNetwork pods are left out: their namespace is the node's, which the agent never touches.
pub fn pods_on_host(proc_root: &Path) -> io::Result<BTreeMap<String, u32>> {
    let host = host_key()?;
    let mut pods = BTreeMap::new();
    for (pid, uid) in pod_processes(proc_root)? {
        if pods.contains_key(&uid) {
            continue;
        }
        if let Ok(key) = ns_key(&proc_root.join(pid.to_string()).join("ns/net"))
            && key != host
        {
            pods.insert(uid, pid);
        }
    }
    Ok(pods)
}

/// The network namespace of pod `pod_uid`, opened (the handle keeps it reachable even if the
/// process we found it through exits).
pub fn pod_netns(proc_root: &Path, pod_uid: &str) -> Result<Netns, PodNetnsError> {
    let uid = normalise_query(pod_uid)?;
    let host = host_key()?;
    if let Some(pid) = remembered_pid(proc_root, &uid)
        && let Ok(ns) = Netns::of_pid(proc_root, pid)
        && pod_of_process(proc_root, pid).as_deref() == Some(uid.as_str())
        && ns.id().is_ok_and(|id| (id.dev, id.ino) != host)
    {
        return Ok(ns);
    }
    // A process can exit (and its PID be reused) between the scan and the open: check after
    // opening that it is still the pod's, and scan again if not.
    for _attempt in 0..3 {
        let pid = match scan_pod(proc_root, &uid, host)? {
            Scan::Pod(pid) => pid,
            Scan::HostNetwork(pid) => return Err(PodNetnsError::HostNetwork { uid, pid }),
            Scan::Absent => break,
        };
        let Ok(ns) = Netns::of_pid(proc_root, pid) else {
            continue;
        };
        let still_the_pods = pod_of_process(proc_root, pid).as_deref() == Some(uid.as_str());
        match ns.id() {
            Ok(id) if still_the_pods && (id.dev, id.ino) != host => return Ok(ns),
            _ => continue,
        }
    }
    Err(PodNetnsError::NotFound {
        uid,
        proc_root: proc_root.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37";
    const UID_SYSTEMD: &str = "0f3c2a9e_7b1d_4c55_9a0e_2b6f8d4e1a37";

    fn uid_of(line: &str) -> Option<String> {
        pod_uid_in_cgroup_line(line)
    }

    #[test]
    fn cgroup_v1_cgroupfs_paths_of_every_qos_class_and_runtime() {
        for line in [
            // containerd, BestEffort
            format!("12:pids:/kubepods/besteffort/pod{UID}/4f5e6d7c8b9a"),
            // CRI-O, Burstable
            format!("5:memory:/kubepods/burstable/pod{UID}/crio-4f5e6d7c8b9a"),
            // Guaranteed pods sit directly under kubepods; Docker names containers by id
            format!("3:cpu,cpuacct:/kubepods/pod{UID}/0123456789abcdef0123456789abcdef"),
            // the pause container's cgroup is the pod's too
            format!("8:devices:/kubepods/besteffort/pod{UID}"),
            // kind / Docker-in-Docker: a prefix before kubepods
            format!("4:pids:/docker/3a4b5c/kubepods/besteffort/pod{UID}/9f8e"),
            // named hierarchy
            format!("1:name=systemd:/kubepods/burstable/pod{UID}/abc"),
        ] {
            assert_eq!(uid_of(&line).as_deref(), Some(UID), "{line}");
        }
    }

    #[test]
    fn cgroup_v1_and_v2_systemd_slices_with_underscores() {
        for line in [
            format!(
                "11:memory:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-4f5e.scope"
            ),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-4f5e.scope"
            ),
            format!("0::/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/docker-4f5e.scope"),
            // kind: kubelet's cgroup root is /kubelet
            format!(
                "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-4f5e.scope"
            ),
            // the pod slice itself (pause process under crio-conmon or the slice)
            format!(
                "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice"
            ),
        ] {
            assert_eq!(uid_of(&line).as_deref(), Some(UID), "{line}");
        }
    }

    #[test]
    fn cgroup_v2_cgroupfs_path() {
        assert_eq!(
            uid_of(&format!("0::/kubepods/burstable/pod{UID}/c0ffee")).as_deref(),
            Some(UID)
        );
    }

    #[test]
    fn uids_come_back_lowercase_with_dashes_and_static_pod_hashes_are_kept() {
        let upper = UID.to_ascii_uppercase();
        assert_eq!(
            uid_of(&format!("0::/kubepods/pod{upper}/x")).as_deref(),
            Some(UID)
        );
        let hash = "6c1a3e0b9f8d7c6b5a4f3e2d1c0b9a8f";
        assert_eq!(
            uid_of(&format!("0::/kubepods/burstable/pod{hash}/x")).as_deref(),
            Some(hash)
        );
        assert_eq!(
            uid_of(&format!("0::/kubepods.slice/kubepods-pod{hash}.slice/x")).as_deref(),
            Some(hash)
        );
    }

    #[test]
    fn lines_outside_pods_and_junk_are_not_pods() {
        for line in [
            "0::/".to_string(),
            "9:name=systemd:/".to_string(),
            "0::/system.slice/containerd.service".to_string(),
            "0::/kubepods.slice".to_string(),
            "0::/kubepods/besteffort".to_string(),
            "0::/user.slice/user-1000.slice/session-3.scope".to_string(),
            // pod<uid> not under kubepods
            format!("0::/machine/pod{UID}/x"),
            // systemd slice not of kubepods
            format!("0::/system.slice/other-pod{UID_SYSTEMD}.slice"),
            // dashes in a systemd slice, underscores in cgroupfs: not what the kubelet writes
            format!("0::/kubepods.slice/kubepods-pod{UID}.slice"),
            format!("0::/kubepods/pod{UID_SYSTEMD}/x"),
            // truncated or malformed UIDs
            "0::/kubepods/pod0f3c2a9e-7b1d-4c55-9a0e/x".to_string(),
            "0::/kubepods/podzz3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37/x".to_string(),
            // not a cgroup line
            String::new(),
            "garbage".to_string(),
            format!("x::/kubepods/pod{UID}"),
            format!("0::kubepods/pod{UID}"),
        ] {
            assert_eq!(uid_of(&line), None, "{line}");
        }
    }

    #[test]
    fn other_uids_are_returned_as_themselves() {
        let other = "11111111-2222-3333-4444-555555555555";
        assert_eq!(
            uid_of(&format!("0::/kubepods/besteffort/pod{other}/x")).as_deref(),
            Some(other)
        );
    }

    /// A fake /proc: `pid -> (cgroup text, namespace)`; the namespace is a regular file per
    /// name, or the agent's own namespace through a symlink.
    fn fake_proc(processes: &[(u32, String, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let namespaces = dir.path().join("namespaces");
        fs::create_dir(&namespaces).unwrap();
        for (pid, cgroup, ns) in processes {
            let proc_dir = dir.path().join(pid.to_string());
            fs::create_dir_all(proc_dir.join("ns")).unwrap();
            fs::write(proc_dir.join("cgroup"), cgroup).unwrap();
            let net = proc_dir.join("ns/net");
            if *ns == "host" {
                std::os::unix::fs::symlink("/proc/self/ns/net", net).unwrap();
            } else {
                let target = namespaces.join(ns);
                if !target.exists() {
                    fs::write(&target, ns).unwrap();
                }
                std::os::unix::fs::symlink(target, net).unwrap();
            }
        }
        // Entries that are not processes.
        fs::write(dir.path().join("uptime"), "1.0 1.0").unwrap();
        fs::create_dir(dir.path().join("sys")).unwrap();
        dir
    }

    fn v1(path: &str) -> String {
        format!("12:pids:{path}\n8:devices:{path}\n0::/\n")
    }

    #[test]
    fn fake_proc_finds_pods_and_refuses_host_network_pods() {
        let host_uid = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        let gone_uid = "99999999-8888-7777-6666-555555555555";
        let proc = fake_proc(&[
            (1, "0::/init.scope\n".into(), "host"),
            (
                200,
                v1(&format!("/kubepods/besteffort/pod{UID}/pause")),
                "pod-a",
            ),
            (
                201,
                v1(&format!("/kubepods/besteffort/pod{UID}/app")),
                "pod-a",
            ),
            (
                300,
                format!(
                    "0::/kubepods.slice/kubepods-pod{}.slice/x\n",
                    host_uid.replace('-', "_")
                ),
                "host",
            ),
        ]);
        let root = proc.path();

        assert_eq!(find_pod_pid(root, UID).unwrap(), Some(200));
        // The query may be written like a systemd slice or in capitals.
        assert_eq!(find_pod_pid(root, UID_SYSTEMD).unwrap(), Some(200));
        assert_eq!(
            find_pod_pid(root, &UID.to_ascii_uppercase()).unwrap(),
            Some(200)
        );
        assert_eq!(find_pod_pid(root, gone_uid).unwrap(), None);

        let err = find_pod_pid(root, host_uid).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("uses the host network"), "{err}");

        let pods = pods_on_host(root).unwrap();
        assert_eq!(pods, BTreeMap::from([(UID.to_string(), 200)]));

        let ns = pod_netns(root, UID).unwrap();
        assert_eq!(ns.path(), root.join("200/ns/net"));
        assert!(matches!(
            pod_netns(root, host_uid),
            Err(PodNetnsError::HostNetwork { pid: 300, .. })
        ));
        let not_found = pod_netns(root, gone_uid).unwrap_err();
        assert_eq!(
            not_found.to_string(),
            format!(
                "no process of pod {gone_uid} found on this node under {} (is the pod running on this node?)",
                root.display()
            )
        );
        assert!(matches!(
            pod_netns(root, "not-a-uid"),
            Err(PodNetnsError::InvalidUid { .. })
        ));
    }

    #[test]
    fn a_process_without_a_namespace_file_is_skipped() {
        let proc = fake_proc(&[(500, v1(&format!("/kubepods/pod{UID}/app")), "pod-b")]);
        // Process 400 of the same pod has exited: its ns link is gone.
        let gone = proc.path().join("400");
        fs::create_dir(&gone).unwrap();
        fs::write(gone.join("cgroup"), v1(&format!("/kubepods/pod{UID}/app"))).unwrap();
        assert_eq!(find_pod_pid(proc.path(), UID).unwrap(), Some(500));
    }

    #[test]
    fn an_unreadable_proc_root_says_what_the_agent_needs() {
        let err = pod_netns(Path::new("/nonexistent/proc"), UID).unwrap_err();
        assert!(err.to_string().contains("hostPID"), "{err}");
    }
}
