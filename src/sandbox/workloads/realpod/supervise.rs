//! One task per container: start its process inside the pod's namespace and cgroup, report it
//! ready once `/healthz` answers on the pod IP, and when it dies start it again in the same
//! namespace and cgroup (a new pid, `restartCount` + 1), with a back-off like the kubelet's
//! CrashLoopBackOff (shorter: 100 ms doubling to 10 s, reset after 10 s of running).

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::super::lock;
use super::{RealPods, RunningPod, cgroup};
use crate::agent::netns::Netns;

/// The port a container listens on when its spec names none.
pub const DEFAULT_PORT: u16 = 8080;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long before dying restarts without back-off.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// A container of a running pod: what to run, and what happened to it so far.
#[derive(Debug)]
pub struct Container {
    name: String,
    image: String,
    port: u16,
    env: Vec<(String, String)>,
    state: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    pid: Option<u32>,
    started_at: Option<Timestamp>,
    ready: bool,
    restart_count: i32,
    /// Why the container is not running (when `pid` is none).
    waiting: Option<(String, String)>,
    last_terminated: Option<ContainerStateTerminated>,
}

/// The containers of `pod`, from its spec.
pub fn containers(pod: &Pod, pod_ip: Ipv4Addr) -> Vec<Arc<Container>> {
    let base = [
        ("DEMO_NAME", pod.name_any()),
        ("POD_NAME", pod.name_any()),
        ("POD_NAMESPACE", pod.namespace().unwrap_or_default()),
        ("POD_UID", pod.uid().unwrap_or_default()),
        ("POD_IP", pod_ip.to_string()),
    ];
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let port = c
                .ports
                .iter()
                .flatten()
                .find_map(|p| u16::try_from(p.container_port).ok())
                .unwrap_or(DEFAULT_PORT);
            // The spec's own values win over the defaults above.
            let mut env: Vec<(String, String)> = base
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            env.extend(
                c.env
                    .iter()
                    .flatten()
                    .filter_map(|e| Some((e.name.clone(), e.value.clone()?))),
            );
            Arc::new(Container {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                port,
                env,
                state: Mutex::new(Record {
                    waiting: Some(("ContainerCreating".into(), String::new())),
                    restart_count: restarts_so_far(pod, &c.name),
                    ..Default::default()
                }),
            })
        })
        .collect()
}

/// The restart count a container starts with: 0 for a new pod; for a pod whose status shows
/// the container started before (its processes died with an earlier sandbox, which a kubelet
/// restart finds), one more than the status says.
fn restarts_so_far(pod: &Pod, container: &str) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find(|s| s.name == container && s.container_id.is_some())
        .map_or(0, |s| s.restart_count.saturating_add(1))
}

impl Container {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        lock(&self.state).pid
    }

    pub fn ready(&self) -> bool {
        lock(&self.state).ready
    }

    /// The container's status as the kubelet reports it.
    pub fn status(&self) -> ContainerStatus {
        let record = lock(&self.state);
        let state = match (record.pid, &record.waiting) {
            (Some(_), _) => ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: record.started_at.map(Time),
                }),
                ..Default::default()
            },
            (None, Some((reason, message))) => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..Default::default()
            },
            (None, None) => ContainerState::default(),
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: format!("sandbox://{}", self.image),
            // The pid, so that a person (or a test) can find the process.
            container_id: record.pid.map(|pid| format!("process://{pid}")),
            ready: record.ready,
            started: Some(record.pid.is_some()),
            restart_count: record.restart_count,
            state: Some(state),
            last_state: record.last_terminated.clone().map(|t| ContainerState {
                terminated: Some(t),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Runs `container` of `pod` until the pod stops.
pub async fn supervise(pods: Arc<RealPods>, pod: Arc<RunningPod>, container: Arc<Container>) {
    let mut stop = pod.stop.subscribe();
    let mut backoff = Duration::ZERO;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut child = match spawn(&pods, &pod, &container) {
            Ok(child) => child,
            Err(error) => {
                tracing::warn!(pod = %pod.name, container = %container.name, %error, "container did not start");
                lock(&container.state).waiting =
                    Some(("RunContainerError".into(), error.to_string()));
                pods.publish(&pod);
                backoff = next_backoff(backoff);
                if pause(&mut stop, backoff).await {
                    return;
                }
                continue;
            }
        };
        let pid = child.id();
        let started = Instant::now();
        {
            let mut record = lock(&container.state);
            record.pid = pid;
            record.started_at = Some(Timestamp::now());
            record.waiting = None;
        }
        pods.publish(&pod);
        tracing::debug!(pod = %pod.name, container = %container.name, pid, "container process started");

        let exit = tokio::select! {
            exit = child.wait() => Some(exit),
            () = stopped(&mut stop) => None,
            () = become_ready(&pods, &pod, &container) => None,
        };
        let Some(exit) = exit else {
            terminate(&mut child, pods.config.termination_grace).await;
            let mut record = lock(&container.state);
            record.pid = None;
            record.ready = false;
            record.waiting = Some(("Terminated".into(), String::new()));
            return;
        };
        let (exit_code, signal) = match &exit {
            Ok(status) => (
                status.code().unwrap_or(128 + status.signal().unwrap_or(0)),
                status.signal(),
            ),
            Err(_) => (-1, None),
        };
        tracing::info!(pod = %pod.name, container = %container.name, pid, exit_code, ?signal, "container process exited; restarting it");
        backoff = if started.elapsed() >= STABLE_AFTER {
            Duration::ZERO
        } else {
            next_backoff(backoff)
        };
        {
            let mut record = lock(&container.state);
            record.last_terminated = Some(ContainerStateTerminated {
                exit_code,
                signal,
                reason: Some(if exit_code == 0 { "Completed" } else { "Error" }.into()),
                started_at: record.started_at.map(Time),
                finished_at: Some(Time(Timestamp::now())),
                ..Default::default()
            });
            record.pid = None;
            record.ready = false;
            record.waiting = Some((
                "CrashLoopBackOff".into(),
                format!("back-off {backoff:?} restarting the failed container"),
            ));
        }
        pods.publish(&pod);
        if pause(&mut stop, backoff).await {
            return;
        }
        lock(&container.state).restart_count += 1;
    }
}

fn next_backoff(previous: Duration) -> Duration {
    if previous.is_zero() {
        BACKOFF_START
    } else {
        (previous * 2).min(BACKOFF_MAX)
    }
}

/// Sleeps `duration`; true when the pod was stopped meanwhile.
async fn pause(stop: &mut tokio::sync::watch::Receiver<bool>, duration: Duration) -> bool {
    tokio::select! {
        () = stopped(stop) => true,
        () = tokio::time::sleep(duration) => false,
    }
}

/// Resolves once the pod is told to stop.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `<faultline> demo-app --listen 0.0.0.0:<port>` with the container's environment only, forked
/// from a thread inside the pod's network namespace (so no scan ever sees it in the node's, as a
/// hostNetwork pod) and moved into the pod's cgroups before anything waits on it.
fn spawn(
    pods: &RealPods,
    pod: &RunningPod,
    container: &Container,
) -> std::io::Result<tokio::process::Child> {
    let config = &pods.config;
    let (stdout, stderr) = match &config.log_dir {
        Some(dir) => {
            let restart_count = lock(&container.state).restart_count;
            let path = crate::sandbox::pod_logs::container_log(
                dir,
                &pod.namespace,
                &pod.name,
                &pod.uid,
                &container.name,
                restart_count,
            );
            let file = open_log(&path)?;
            (Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    let mut command = tokio::process::Command::new(&config.exe);
    command
        .arg("demo-app")
        .arg("--listen")
        .arg(format!("0.0.0.0:{}", container.port))
        // A container sees its own environment, not the sandbox's.
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env(
            "FAULTLINE_LOG",
            std::env::var("FAULTLINE_LOG").unwrap_or_else(|_| "faultline=info,warn".into()),
        )
        .envs(container.env.iter().map(|(k, v)| (k, v)))
        .envs(config.hosts_file.iter().map(|f| ("DEMO_HOSTS_FILE", f)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        // If the sandbox itself goes away without stopping its pods, so do they.
        .kill_on_drop(true);
    let netns = Netns::named(&pod.netns)?;
    // tokio reaps children through the runtime's signal driver: the thread needs its handle.
    let runtime = tokio::runtime::Handle::current();
    let mut child = netns.run(|| {
        let _runtime = runtime.enter();
        command.spawn()
    })??;
    let Some(pid) = child.id() else {
        return Err(std::io::Error::other("the container process ended at once"));
    };
    if let Err(e) = cgroup::add_process(&pod.cgroups, pid) {
        let _ = child.start_kill();
        return Err(e);
    }
    Ok(child)
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Polls `GET /healthz` on the pod IP until it answers 200, then marks the container ready and
/// never returns (so that it does not end the `select!` it runs in).
async fn become_ready(pods: &RealPods, pod: &RunningPod, container: &Container) {
    let url = format!("http://{}:{}/healthz", pod.ip, container.port);
    loop {
        let healthy = pods
            .http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if healthy {
            lock(&container.state).ready = true;
            pods.publish(pod);
            tracing::debug!(pod = %pod.name, container = %container.name, "container ready");
            return std::future::pending().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then SIGKILL if the process is still there after `grace`.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(statuses: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "uid": "u1"},
            "spec": {"containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {"containerStatuses": statuses},
        }))
        .unwrap()
    }

    #[test]
    fn restart_counts_go_on_from_the_status_of_containers_that_ran() {
        let ran = pod(serde_json::json!([
            {"name": "app", "image": "", "imageID": "", "ready": false, "restartCount": 2,
             "containerID": "process://41"},
            {"name": "sidecar", "image": "", "imageID": "", "ready": false, "restartCount": 0},
        ]));
        assert_eq!(restarts_so_far(&ran, "app"), 3);
        assert_eq!(
            restarts_so_far(&ran, "sidecar"),
            0,
            "never started: no container id"
        );
        assert_eq!(restarts_so_far(&ran, "other"), 0);
        assert_eq!(restarts_so_far(&pod(serde_json::Value::Null), "app"), 0);
    }
}
