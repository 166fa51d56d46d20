//! Revert verification: a snapshot of a namespace's rules before a fault, compared with one
//! taken after its revert. What differs is the residue (`residualRules` in the injection's
//! status); a clean revert leaves none.
//!
//! A snapshot is the nftables ruleset, the iptables and ip6tables rules (without counters) and
//! every interface's qdiscs (without statistics), as text. Tables the sandbox programs for its
//! Services (`flsbx_services`: its kube-proxy stand-in, rewritten whenever endpoints change)
//! are left out, as a real node's kube-proxy rules would be (they live in the node's namespace).

use std::collections::BTreeMap;

use super::netns::Netns;

/// Tables whose contents change on their own and are not the agent's business.
const IGNORED_NFT_TABLES: &[&str] = &["flsbx_services"];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    lines: Vec<String>,
}

/// Takes a snapshot of the namespace's rules. A tool that is not installed contributes nothing.
pub fn snapshot(ns: &Netns) -> std::io::Result<Snapshot> {
    ns.run(|| {
        let mut lines = Vec::new();
        if let Ok(out) = super::netns::run_command("nft", &["list", "ruleset"], None) {
            lines.extend(normalise_nft(&String::from_utf8_lossy(&out.stdout)));
        }
        for tool in ["iptables-save", "ip6tables-save"] {
            if let Ok(out) = super::netns::run_command(tool, &[], None) {
                lines.extend(normalise_iptables(
                    tool,
                    &String::from_utf8_lossy(&out.stdout),
                ));
            }
        }
        if let Ok(out) = super::netns::run_command("tc", &["qdisc", "show"], None) {
            lines.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("tc: {}", l.trim())),
            );
        }
        Snapshot { lines }
    })
}

impl Snapshot {
    /// The snapshot as text (kept in the agent's journal).
    pub fn to_text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn from_text(text: &str) -> Option<Self> {
        Some(Self {
            lines: text.lines().map(str::to_string).collect(),
        })
    }
}

/// Lines present after and not before (as a multiset), i.e. what the fault left behind.
pub fn residual(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for line in &before.lines {
        *counts.entry(line).or_default() += 1;
    }
    let mut left = Vec::new();
    for line in &after.lines {
        let count = counts.entry(line).or_default();
        if *count > 0 {
            *count -= 1;
        } else {
            left.push(line.clone());
        }
    }
    left
}

fn normalise_nft(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut table = String::new();
    let mut ignored = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if raw.starts_with("table ") {
            table = line.trim_end_matches(" {").to_string();
            ignored = IGNORED_NFT_TABLES
                .iter()
                .any(|t| table.ends_with(&format!(" {t}")));
        }
        if ignored {
            continue;
        }
        // Handles and counters change without anyone changing a rule.
        let line = strip_after(line, " # handle ");
        let line = strip_counters(&line);
        out.push(format!("nft: {table}: {line}"));
    }
    out
}

fn strip_after(line: &str, marker: &str) -> String {
    line.split(marker).next().unwrap_or(line).to_string()
}

fn strip_counters(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter" && words.get(i + 1) == Some(&"packets") {
            out.push("counter");
            i += 5;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

fn normalise_iptables(tool: &str, text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && l.trim() != "COMMIT")
        .map(|l| {
            // ":CHAIN POLICY [packets:bytes]" → without the counters.
            let l = match l.rfind(" [") {
                Some(at) if l.starts_with(':') => &l[..at],
                _ => l,
            };
            format!("{tool}: {l}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_handles_and_ignored_tables_do_not_make_a_residue() {
        let before = Snapshot {
            lines: normalise_nft(
                "table inet filter {\n\tchain input {\n\t\tcounter packets 1 bytes 60 accept # handle 3\n\t}\n}\ntable ip flsbx_services {\n\tchain output {\n\t\tip daddr 10.96.0.1 dnat to 10.244.0.2\n\t}\n}\n",
            ),
        };
        let after = Snapshot {
            lines: normalise_nft(
                "table inet filter {\n\tchain input {\n\t\tcounter packets 9 bytes 900 accept # handle 3\n\t}\n}\ntable ip flsbx_services {\n\tchain output {\n\t\tip daddr 10.96.0.1 dnat to 10.244.0.9\n\t}\n}\n",
            ),
        };
        assert_eq!(residual(&before, &after), Vec::<String>::new());
    }

    #[test]
    fn a_rule_left_behind_is_the_residue() {
        let before = Snapshot {
            lines: normalise_iptables("iptables-save", "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"),
        };
        let after = Snapshot {
            lines: normalise_iptables(
                "iptables-save",
                "*filter\n:INPUT ACCEPT [5:300]\n:FL-0123 - [0:0]\n-A INPUT -j FL-0123\nCOMMIT\n",
            ),
        };
        assert_eq!(
            residual(&before, &after),
            vec![
                "iptables-save: :FL-0123 -".to_string(),
                "iptables-save: -A INPUT -j FL-0123".to_string()
            ]
        );
        let text = after.to_text();
        assert_eq!(Snapshot::from_text(&text).unwrap(), after);
    }
}
