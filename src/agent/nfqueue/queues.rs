//! Queue numbers: how many per side of an injection, and binding a free range of them in a
//! namespace (free of other sockets and of the numbers our other injections' rules name).

use std::collections::BTreeSet;
use std::io;

use super::Steering;
use super::netlink::{QueueConfig, QueueSocket};
use super::rules;
use crate::agent::netns::Netns;
use crate::agent::nft;
use crate::agent::nftables;
use crate::agent::tag::InjectionTag;

/// Queue numbers we choose from; each injection starts at a point derived from its tag.
const QUEUE_FIRST: u16 = 16_384;
/// Candidate starting numbers tried before giving up.
const QUEUE_ATTEMPTS: usize = 256;
/// At most this many queues (and worker pairs) per side of an injection.
pub(super) const MAX_QUEUES: u16 = 4;

/// Queues per side by default: one per CPU (at most [`MAX_QUEUES`]). Flows are hashed over
/// them, so many flows use every CPU; one flow stays on one queue (its order is kept).
pub fn default_queues() -> u16 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    u16::try_from(cpus)
        .unwrap_or(MAX_QUEUES)
        .clamp(1, MAX_QUEUES)
}

/// Binds `count` consecutive queue numbers, from the tag's starting point on, that no rule of
/// ours names and no socket holds in `ns`.
pub(super) fn bind_free_queues(
    ns: &Netns,
    tag: &InjectionTag,
    count: u16,
    config: &QueueConfig,
    steering: Steering,
) -> io::Result<Vec<QueueSocket>> {
    let mut taken = bound_queues(ns)?;
    match steering {
        Steering::Iptables => taken.extend(rules::queue_numbers_in_use(ns)?),
        Steering::Nftables => taken.extend(named_by_other_tables(ns, tag)?),
    }
    let span = u32::from(u16::MAX - QUEUE_FIRST) + 2 - u32::from(count);
    let start = u32::from_str_radix(&tag.as_str()[..8], 16).unwrap_or(0) % span;
    let mut attempts = 0;
    let mut last_refusal = None;
    'candidates: for offset in 0..span {
        let first = QUEUE_FIRST + u16::try_from((start + offset) % span).expect("within span");
        let numbers = first..first + count;
        if numbers.clone().any(|q| taken.contains(&q)) {
            continue;
        }
        attempts += 1;
        let mut sockets = Vec::with_capacity(usize::from(count));
        for queue in numbers {
            match QueueSocket::open_in(ns, queue, config) {
                Ok(socket) => sockets.push(socket),
                // Bound meanwhile by someone else (another of our threads, whose tag hashed
                // near ours): next candidate (ours close on drop). The kernel says EPERM for a
                // queue another socket holds, EBUSY when it was created a moment ago.
                Err(e) if matches!(e.raw_os_error(), Some(nix::libc::EBUSY | nix::libc::EPERM)) => {
                    last_refusal = Some(e);
                    if attempts >= QUEUE_ATTEMPTS {
                        break 'candidates;
                    }
                    continue 'candidates;
                }
                Err(e) => return Err(e),
            }
        }
        return Ok(sockets);
    }
    Err(io::Error::other(format!(
        "no {count} free consecutive nfqueue numbers in {} after {attempts} attempts{}",
        ns.path().display(),
        last_refusal.map_or_else(String::new, |e| format!(" (the last one: {e})"))
    )))
}

/// Queue numbers bound by some socket in `ns`, from the kernel's
/// `/proc/net/netfilter/nfnetlink_queue` (first column).
fn bound_queues(ns: &Netns) -> io::Result<BTreeSet<u16>> {
    // thread-self: /proc/self/net would show the namespace of the process's main thread.
    let text =
        ns.run(|| std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue"))?;
    let text = match text {
        Ok(text) => text,
        // No nfnetlink_queue module loaded yet: nothing bound.
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect())
}

/// The queue numbers our other injections' tables in `ns` name (their workers may be between
/// binds, after an agent restart). Read from the tables' comments: the node's namespace holds
/// a table per injection of every pod on the node, and a dump of every rule there cost 2.4 ms
/// at 500 injections, per apply. Only where a table of ours does not say (an older agent's)
/// are the rules dumped.
fn named_by_other_tables(ns: &Netns, tag: &InjectionTag) -> io::Result<Vec<u16>> {
    let others: Vec<nft::OwnedTable> = nft::owned_tables(ns)?
        .into_iter()
        .filter(|table| table.tag != *tag)
        .collect();
    let unsaid = others.iter().any(|table| {
        table
            .comment
            .as_ref()
            .is_none_or(|c| c.queues.is_none() && c.qdisc.is_none())
    });
    let ranges: Vec<(u16, u16)> = if unsaid {
        nftables::with_socket(ns, |socket| socket.all_rules())?
            .into_iter()
            .filter(|(_, table, _)| {
                InjectionTag::from_nft_table(table).is_some_and(|other| other != *tag)
            })
            .filter_map(|(_, _, rule)| rule.queues)
            .collect()
    } else {
        others
            .iter()
            .filter_map(|table| table.comment.as_ref()?.queues)
            .collect()
    };
    Ok(ranges
        .into_iter()
        .flat_map(|(first, count)| first..first.saturating_add(count))
        .collect())
}
