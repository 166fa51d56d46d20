//! Entering a network namespace.
//!
//! `setns(2)` changes the namespace of the calling thread only, so every piece of work inside a
//! pod's namespace runs on a fresh thread that enters it and then ends: no thread of the tokio
//! runtime is ever left inside a pod's namespace. Processes spawned from that thread (`nft`,
//! `iptables`, `tc`) inherit its namespace.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sched::{CloneFlags, setns};

/// An open handle on a network namespace (`/proc/PID/ns/net` or `/run/netns/NAME`). Holding the
/// file keeps the namespace reachable even after the process that owned it is gone.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

/// Identifies a namespace: two handles on the same namespace have the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl Netns {
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path)?;
        Ok(Self { file, path })
    }

    /// The namespace of process `pid`, through `proc_root` (normally `/proc`).
    pub fn of_pid(proc_root: &Path, pid: u32) -> io::Result<Self> {
        Self::open(proc_root.join(pid.to_string()).join("ns/net"))
    }

    /// The namespace of a named namespace made with `ip netns add NAME`.
    pub fn named(name: &str) -> io::Result<Self> {
        Self::open(Path::new("/run/netns").join(name))
    }

    /// The namespace the agent itself runs in (the host's, for a hostNetwork DaemonSet).
    pub fn current() -> io::Result<Self> {
        Self::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> io::Result<NetnsId> {
        let meta = self.file.metadata()?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            file: self.file.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// Runs `work` on a new thread inside this namespace and returns its result. Blocking: from
    /// async code call it through `tokio::task::spawn_blocking`.
    pub fn run<R, F>(&self, work: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    Ok(work())
                })
                .join()
                .map_err(|_| io::Error::other("work inside a network namespace panicked"))?
        })
    }

    /// Runs `program args` inside this namespace, feeding `stdin` when given, and returns its
    /// output. A non-zero exit is an error carrying the program's stderr.
    pub fn command(&self, program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
        self.run(|| run_command(program, args, stdin))?
    }
}

/// Runs a command in the calling thread's namespace; a non-zero exit is an error with stderr.
pub fn run_command(program: &str, args: &[&str], stdin: Option<&str>) -> io::Result<Output> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
    if let Some(input) = stdin {
        // Take the pipe so that it closes (EOF) before we wait.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output)
}
