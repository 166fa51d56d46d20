//! Root tests of the nf_tables commit path in the node's namespace: a kept socket (no close,
//! so no wait for the kernel, per transaction) and merged transactions (one grace period for
//! the pods applied together). Merging must never change an answer: every good batch lands,
//! a bad one fails alone with its own error, whether merged or not. And the one dump of every
//! rule (what picking free NFQUEUE numbers reads) sees every table of every family. A pod's
//! lingering socket closes on its own, so a deleted pod's namespace is not held alive.

use std::io;

use faultline::agent::nft;
use faultline::agent::nftables::{self, Family, Hook, HookPoint, Table, Verdict};
use faultline::agent::testnet::{TestNs, root_or_skip};

/// A steering-like table: a base chain jumping to a regular chain with a counter.
fn good(name: &str) -> Table {
    let mut table = Table::new(Family::Ip, name, Some(format!("test {name}")));
    let inner = table.chain("inner", None);
    let pre = table.chain(
        "pre",
        Some(Hook {
            point: HookPoint::Prerouting,
            priority: -90,
            device: None,
        }),
    );
    table.rule(inner, &[], &[nftables::Expr::Counter], None);
    table.rule(pre, &[], &[], Some(Verdict::Jump("inner".into())));
    table
}

/// A table the kernel refuses: its rule jumps to a chain that does not exist.
fn bad(name: &str) -> Table {
    let mut table = Table::new(Family::Ip, name, None);
    let pre = table.chain(
        "pre",
        Some(Hook {
            point: HookPoint::Prerouting,
            priority: -90,
            device: None,
        }),
    );
    table.rule(pre, &[], &[], Some(Verdict::Jump("nowhere".into())));
    table
}

fn table_names(ns: &faultline::agent::netns::Netns) -> Vec<String> {
    let mut names: Vec<String> = nftables::with_socket(ns, |socket| socket.tables())
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    names.sort();
    names
}

#[test]
fn merged_batches_answer_each_on_its_own_and_a_bad_one_fails_alone() {
    if !root_or_skip("merged_batches_answer_each_on_its_own_and_a_bad_one_fails_alone") {
        return;
    }
    let test_ns = TestNs::new("merge").unwrap();
    let ns = test_ns.netns().unwrap();
    let batches: Vec<Vec<nftables::Msg>> = ["t0", "t1", "broken", "t3"]
        .iter()
        .map(|name| {
            if *name == "broken" {
                bad(name).replace()
            } else {
                good(name).replace()
            }
        })
        .collect();
    let answers = nftables::commit_merged(&ns, &batches);
    let outcome: Vec<bool> = answers.iter().map(Result::is_ok).collect();
    assert_eq!(outcome, vec![true, true, false, true], "{answers:?}");
    let refused = answers[2].as_ref().unwrap_err().to_string();
    assert!(refused.contains("nf_tables refused"), "{refused}");
    assert_eq!(table_names(&ns), vec!["t0", "t1", "t3"]);

    // All good: one transaction, every answer Ok.
    let batches: Vec<_> = ["u0", "u1"].iter().map(|n| good(n).replace()).collect();
    assert!(
        nftables::commit_merged(&ns, &batches)
            .iter()
            .all(Result::is_ok)
    );
    assert_eq!(table_names(&ns), vec!["t0", "t1", "t3", "u0", "u1"]);
}

#[test]
fn concurrent_commits_through_a_kept_socket_all_land_and_a_bad_one_fails_alone() {
    if !root_or_skip("concurrent_commits_through_a_kept_socket_all_land_and_a_bad_one_fails_alone")
    {
        return;
    }
    let test_ns = TestNs::new("kept").unwrap();
    let ns = test_ns.netns().unwrap();
    let kept = nftables::keep_open(&ns).unwrap();
    let answers: Vec<(usize, io::Result<()>)> = std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let ns = &ns;
                scope.spawn(move || {
                    let table = if i == 7 {
                        bad(&format!("c{i:02}"))
                    } else {
                        good(&format!("c{i:02}"))
                    };
                    (i, nft::replace(ns, &[table]))
                })
            })
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (i, answer) in &answers {
        assert_eq!(answer.is_ok(), *i != 7, "batch {i}: {answer:?}");
    }
    let expected: Vec<String> = (0..24)
        .filter(|i| *i != 7)
        .map(|i| format!("c{i:02}"))
        .collect();
    assert_eq!(table_names(&ns), expected);

    // The kept socket goes with its last guard; the namespace is then deleted on drop (an
    // open socket would keep it alive, which `ip netns` cannot see, so only no error here).
    drop(kept);
    nft::replace(&ns, &[good("after")]).unwrap();
    assert!(table_names(&ns).contains(&"after".to_string()));
}

#[test]
fn one_dump_lists_the_rules_of_every_table_of_every_family() {
    if !root_or_skip("one_dump_lists_the_rules_of_every_table_of_every_family") {
        return;
    }
    let test_ns = TestNs::new("dump").unwrap();
    let ns = test_ns.netns().unwrap();
    let mut v6 = Table::new(Family::Ip6, "six", None);
    let chain = v6.chain("inner", None);
    v6.rule(chain, &[], &[nftables::Expr::Counter], None);
    nft::replace(&ns, &[good("one"), good("two"), v6]).unwrap();
    let mut rules: Vec<(String, String)> = nftables::with_socket(&ns, |socket| socket.all_rules())
        .unwrap()
        .into_iter()
        .map(|(family, table, _)| (family.name().to_string(), table))
        .collect();
    rules.sort();
    let per_table = |table: &str| rules.iter().filter(|(_, t)| t == table).count();
    assert_eq!(per_table("one"), 2, "{rules:?}");
    assert_eq!(per_table("two"), 2, "{rules:?}");
    assert_eq!(per_table("six"), 1, "{rules:?}");
    assert!(
        rules.contains(&("ip6".to_string(), "six".to_string())),
        "{rules:?}"
    );
}

/// A pod's socket lingers after a transaction (so that the next one there does not wait for
/// its close), and an open socket keeps its namespace alive: once the pod's namespace is
/// deleted, the lingering socket must still close on its own, or every deleted pod's network
/// (its veth, its routes) would outlive it for as long as the agent runs.
#[test]
fn a_lingering_socket_lets_a_deleted_pod_namespace_go() {
    if !root_or_skip("a_lingering_socket_lets_a_deleted_pod_namespace_go") {
        return;
    }
    let host = TestNs::new("linger-host").unwrap();
    let pod = TestNs::new("linger-pod").unwrap();
    host.ip(&[
        "link",
        "add",
        "lingerh",
        "type",
        "veth",
        "peer",
        "name",
        "lingerp",
        "netns",
        pod.name(),
    ])
    .unwrap();
    let ns = pod.netns().unwrap();
    nftables::commit(&ns, good("linger").replace()).unwrap();
    nftables::commit(&ns, nftables::table::delete(Family::Ip, "linger")).unwrap();
    drop(ns);
    drop(pod);

    // The host side of the veth goes when the pod's namespace is really gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let gone = loop {
        let links = host.ip(&["-o", "link", "show"]).unwrap();
        if !String::from_utf8_lossy(&links.stdout).contains("lingerh") {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        gone,
        "the deleted pod namespace is still alive 30 s later: a socket in it was never closed"
    );
}
