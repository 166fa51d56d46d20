//! Qdisc faults: tbf (bandwidth) and netem (latency, loss) as the root qdisc of an interface.
//!
//! Every root qdisc faultline installs has handle `fa17:`, so the agent recognises its own and
//! never removes anyone else's. This version drives the `tc` binary inside the namespace (one
//! process per apply); building the rtnetlink messages ourselves is planned.
//! Scoping a bandwidth or netem fault to destinations (classful qdiscs with filters) is not
//! done yet: such a fault is refused with that reason.

use std::io;

use super::netns::{Netns, run_command};
use crate::api::{NetworkFault, NetworkFaultKind};

/// The handle major of every root qdisc faultline installs.
pub const HANDLE: &str = "fa17:";

/// Whether the kernel has `sch_netem`: tried on `lo` in a throwaway namespace.
pub fn netem_available() -> bool {
    probe_qdisc(&["netem", "delay", "1ms"])
}

/// Whether the kernel has `sch_tbf`.
pub fn tbf_available() -> bool {
    probe_qdisc(&["tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms"])
}

fn probe_qdisc(qdisc: &[&str]) -> bool {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
                let mut args = vec!["qdisc", "add", "dev", "lo", "root"];
                args.extend_from_slice(qdisc);
                run_command("tc", &args, None).ok()
            })
            .join()
            .ok()
            .flatten()
            .is_some()
    })
}

/// An interface's root qdisc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QdiscInfo {
    pub kind: String,
    pub handle: String,
}

impl QdiscInfo {
    /// What an interface has when nobody installed anything.
    pub fn is_default(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "noqueue" | "pfifo_fast" | "mq" | "fq_codel" | "fq" | "pfifo" | "noop"
        ) && self.handle != HANDLE
    }

    pub fn is_ours(&self) -> bool {
        self.handle == HANDLE
    }
}

/// The root qdisc of `ifname` in `ns`.
pub fn root_qdisc(ns: &Netns, ifname: &str) -> io::Result<Option<QdiscInfo>> {
    let out = ns.command("tc", &["qdisc", "show", "dev", ifname, "root"], None)?;
    Ok(parse_root(&String::from_utf8_lossy(&out.stdout)))
}

/// `qdisc tbf fa17: root refcnt 2 rate ...` → kind and handle.
fn parse_root(text: &str) -> Option<QdiscInfo> {
    let line = text.lines().find(|l| l.contains(" root"))?;
    let mut words = line.split_whitespace();
    (words.next()? == "qdisc").then_some(())?;
    Some(QdiscInfo {
        kind: words.next()?.to_string(),
        handle: words.next()?.to_string(),
    })
}

/// Installs (replaces) our tbf root qdisc for a bandwidth fault.
pub fn apply_bandwidth(ns: &Netns, ifname: &str, fault: &NetworkFault) -> io::Result<()> {
    let args = bandwidth_args(ifname, fault).map_err(io::Error::other)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.command("tc", &args, None).map(|_| ())
}

/// Installs (replaces) our netem root qdisc for a latency or loss fault.
pub fn apply_netem(ns: &Netns, ifname: &str, fault: &NetworkFault) -> io::Result<()> {
    let args = netem_args(ifname, fault).map_err(io::Error::other)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.command("tc", &args, None).map(|_| ())
}

/// Deletes our root qdisc on `ifname`; `Ok(false)` when the root qdisc is not ours.
pub fn remove(ns: &Netns, ifname: &str) -> io::Result<bool> {
    match root_qdisc(ns, ifname)? {
        Some(q) if q.is_ours() => {
            ns.command("tc", &["qdisc", "del", "dev", ifname, "root"], None)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Interfaces in `ns` whose root qdisc is ours.
pub fn owned(ns: &Netns) -> io::Result<Vec<String>> {
    let out = ns.command("tc", &["qdisc", "show"], None)?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!(" {HANDLE} root")))
        .filter_map(|l| {
            let at = l.find(" dev ")?;
            Some(l[at + 5..].split_whitespace().next()?.to_string())
        })
        .collect())
}

fn refuse_scoped(fault: &NetworkFault) -> Result<(), String> {
    if fault.peer_cidrs.is_empty() && fault.ports.is_empty() {
        Ok(())
    } else {
        Err("scoping a qdisc fault to destinations (to.cidrs, to.selector, to.ports) is not supported by this agent yet; remove `to`, or use a kernel without netem (the NFQUEUE path scopes)".into())
    }
}

fn bandwidth_args(ifname: &str, fault: &NetworkFault) -> Result<Vec<String>, String> {
    let Some(NetworkFaultKind::Bandwidth(b)) = fault.kind() else {
        return Err("not a bandwidth fault".into());
    };
    refuse_scoped(fault)?;
    let burst = b.burst.unwrap_or(32 * 1024);
    let limit = b.limit.unwrap_or(burst.max(64 * 1024));
    Ok([
        "qdisc",
        "replace",
        "dev",
        ifname,
        "root",
        "handle",
        HANDLE,
        "tbf",
        "rate",
        &b.rate,
        "burst",
        &burst.to_string(),
        "limit",
        &limit.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
}

fn netem_args(ifname: &str, fault: &NetworkFault) -> Result<Vec<String>, String> {
    refuse_scoped(fault)?;
    let mut args: Vec<String> = [
        "qdisc", "replace", "dev", ifname, "root", "handle", HANDLE, "netem",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ms = |d: &str| -> Result<String, String> {
        let d = crate::api::GoDuration::from(d).parse()?;
        Ok(format!("{}us", d.as_micros()))
    };
    match fault.kind() {
        Some(NetworkFaultKind::Latency(l)) => {
            args.push("delay".into());
            args.push(ms(l.latency.as_str())?);
            if let Some(jitter) = &l.jitter {
                args.push(ms(jitter.as_str())?);
                if let Some(c) = l.correlation {
                    args.push(format!("{c}%"));
                }
            }
        }
        Some(NetworkFaultKind::Loss(l)) => {
            args.push("loss".into());
            args.push(format!("{}%", l.percent));
            if let Some(c) = l.correlation {
                args.push(format!("{c}%"));
            }
        }
        _ => return Err("netem carries latency and loss only".into()),
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BandwidthFault, LatencyFault};

    #[test]
    fn netem_and_tbf_arguments_are_what_tc_expects() {
        let latency = NetworkFault {
            latency: Some(LatencyFault {
                latency: "50ms".into(),
                jitter: Some("10ms".into()),
                correlation: Some(25),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            netem_args("eth0", &latency).unwrap().join(" "),
            "qdisc replace dev eth0 root handle fa17: netem delay 50000us 10000us 25%"
        );
        let bandwidth = NetworkFault {
            bandwidth: Some(BandwidthFault {
                rate: "1mbit".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            bandwidth_args("eth0", &bandwidth).unwrap().join(" "),
            "qdisc replace dev eth0 root handle fa17: tbf rate 1mbit burst 32768 limit 65536"
        );
        let mut scoped = bandwidth.clone();
        scoped.peer_cidrs = vec!["10.0.0.0/8".into()];
        assert!(bandwidth_args("eth0", &scoped).is_err());
    }

    #[test]
    fn root_qdiscs_parse_and_ours_is_recognised() {
        let ours =
            parse_root("qdisc tbf fa17: root refcnt 2 rate 1Mbit burst 32Kb lat 32ms\n").unwrap();
        assert!(ours.is_ours() && !ours.is_default());
        let default = parse_root("qdisc noqueue 0: root refcnt 2\n").unwrap();
        assert!(default.is_default() && !default.is_ours());
        let foreign = parse_root("qdisc htb 1: root refcnt 2 r2q 10\n").unwrap();
        assert!(!foreign.is_default() && !foreign.is_ours());
    }
}
