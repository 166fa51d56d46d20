//! The agent's on-disk journal: what it applied, where, and until when.
//!
//! Written *before* a fault is applied and cleared only after its revert is confirmed, so that
//! an agent restarted after a crash knows every fault it may have left behind and its deadline,
//! even before it can reach the API server. On a hostPath in production.
//!
//! Format: `journal.log`, one record per line, appended and synced (`fdatasync`) before a call
//! returns:
//!
//! ```text
//! P <tag> <pod uid> <expiresAt, unix ms> <generation|-> <mechanism|-> <namespace/name> <entry as JSON>
//! F <tag> <tag> ...
//! ```
//!
//! `P` records or replaces an entry, `F` drops entries. Opening replays the lines in one pass
//! (linear in the file) and reads only the words in front of each entry: what planning and the
//! drain of stale entries need. The JSON is parsed when the entry is first looked at (to revert
//! or re-apply it), so thousands of stale entries cost a scan, not a parse. Changes of many
//! entries (the drain of stale entries at start) are one line and one sync.
//!
//! Bounds: the file is rewritten (compacted: one `put` per live entry, written to a temporary
//! file, synced and renamed over) when it holds more than [`COMPACT_SLACK`] lines beyond the
//! live entries, so its size follows the live entries; at most [`MAX_ENTRIES`] entries may be
//! live (a new fault is refused beyond), and a baseline longer than [`MAX_BASELINE`] bytes is
//! not kept (its residue check is skipped, which the status says).
//!
//! A torn last line (the agent died in the middle of an append) is ignored: its change never
//! completed, so no fault was applied after it. Anything else unreadable means the file is not
//! ours to trust: it is kept aside under a unique name (`journal.log.corrupt-<time>-<pid>`,
//! never overwritten), reported, and a new journal starts; orphan cleanup then finds what the
//! lost entries described. A journal written by an older agent (`journal.json`) is imported
//! once.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tag::InjectionTag;
use crate::api::NetworkFault;

const FILE_NAME: &str = "journal.log";
/// What agents before the line format wrote (one JSON document).
const LEGACY_FILE_NAME: &str = "journal.json";
/// Compaction happens when the file holds this many lines more than there are live entries.
pub const COMPACT_SLACK: usize = 4096;
/// At most this many live entries (each is a fault on this node).
pub const MAX_ENTRIES: usize = 65_536;
/// Baselines longer than this are not kept.
pub const MAX_BASELINE: usize = 64 * 1024;

/// One fault the agent applied (or was about to apply) and has not confirmed reverted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub tag: InjectionTagRepr,
    /// `namespace/name` of the FaultInjection, for messages.
    pub injection: String,
    pub injection_uid: String,
    pub pod_uid: String,
    pub fault: NetworkFault,
    pub expires_at: DateTime<Utc>,
    /// The spec generation applied; a newer one is re-applied.
    #[serde(default)]
    pub generation: Option<i64>,
    /// The mechanism used, once applied (`None`: the agent crashed while applying).
    #[serde(default)]
    pub mechanism: Option<String>,
    /// The namespaces' rules before the fault, to verify the revert left nothing behind.
    #[serde(default)]
    pub baseline: Option<String>,
    #[serde(default)]
    pub applied_at: Option<DateTime<Utc>>,
}

/// [`InjectionTag`] as stored (a plain string, validated on load).
pub type InjectionTagRepr = String;

impl JournalEntry {
    pub fn tag(&self) -> Option<InjectionTag> {
        InjectionTag::from_uid(&self.tag)
    }

    fn head(&self) -> EntryHead {
        EntryHead {
            tag: self.tag.clone(),
            pod_uid: self.pod_uid.clone(),
            expires_at: self.expires_at,
            generation: self.generation,
            mechanism: self.mechanism.clone(),
            injection: self.injection.clone(),
        }
    }
}

/// The words in front of an entry: what planning needs, read without parsing the entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryHead {
    pub tag: InjectionTagRepr,
    pub pod_uid: String,
    pub expires_at: DateTime<Utc>,
    pub generation: Option<i64>,
    pub mechanism: Option<String>,
    /// `namespace/name` of the FaultInjection.
    pub injection: String,
}

impl EntryHead {
    pub fn tag(&self) -> Option<InjectionTag> {
        InjectionTag::parse(&self.tag).or_else(|| InjectionTag::from_uid(&self.tag))
    }
}

/// An entry as kept in memory: its head, its JSON, and the entry once parsed.
#[derive(Debug)]
struct Stored {
    head: EntryHead,
    json: Box<str>,
    parsed: std::sync::OnceLock<Box<JournalEntry>>,
}

impl Stored {
    fn entry(&self) -> &JournalEntry {
        self.parsed.get_or_init(|| {
            Box::new(serde_json::from_str(&self.json).unwrap_or_else(|error| {
                tracing::error!(%error, tag = %self.head.tag, "a journal entry's details are unreadable; keeping what its head says");
                JournalEntry {
                    tag: self.head.tag.clone(),
                    injection: self.head.injection.clone(),
                    injection_uid: String::new(),
                    pod_uid: self.head.pod_uid.clone(),
                    fault: NetworkFault::default(),
                    expires_at: self.head.expires_at,
                    generation: self.head.generation,
                    mechanism: self.head.mechanism.clone(),
                    baseline: None,
                    applied_at: None,
                }
            }))
        })
    }
}

/// One line of the log.
enum Record {
    Put(Stored),
    Forget(Vec<InjectionTagRepr>),
}

fn word(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// The log line that records `entry` (for tools and tests that write a journal directly).
pub fn put_line(entry: &JournalEntry) -> Result<String, JournalError> {
    let json = serde_json::to_string(entry).map_err(|e| JournalError::Io {
        path: PathBuf::from(FILE_NAME),
        source: io::Error::other(e),
    })?;
    let words = [
        entry.tag.as_str(),
        entry.pod_uid.as_str(),
        entry.injection.as_str(),
        word(entry.mechanism.as_deref()),
    ];
    if words
        .iter()
        .any(|w| w.is_empty() || w.contains(char::is_whitespace))
    {
        return Err(JournalError::Io {
            path: PathBuf::from(FILE_NAME),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("journal words may not be empty or hold spaces: {words:?}"),
            ),
        });
    }
    let generation = entry
        .generation
        .map_or_else(|| "-".to_string(), |g| g.to_string());
    Ok(format!(
        "P {} {} {} {generation} {} {} {json}\n",
        entry.tag,
        entry.pod_uid,
        entry.expires_at.timestamp_millis(),
        word(entry.mechanism.as_deref()),
        entry.injection,
    ))
}

/// Parses one line (without its newline).
fn parse_line(line: &str) -> Result<Record, String> {
    let mut words = line.splitn(8, ' ');
    match words.next() {
        Some("F") => Ok(Record::Forget(
            words
                .flat_map(|w| w.split(' '))
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect(),
        )),
        Some("P") => {
            let mut next = |what: &str| words.next().ok_or_else(|| format!("no {what}"));
            let tag = next("tag")?.to_string();
            let pod_uid = next("pod uid")?.to_string();
            let millis: i64 = next("expiry")?
                .parse()
                .map_err(|e| format!("expiry: {e}"))?;
            let generation = match next("generation")? {
                "-" => None,
                g => Some(g.parse().map_err(|e| format!("generation: {e}"))?),
            };
            let mechanism = match next("mechanism")? {
                "-" => None,
                m => Some(m.to_string()),
            };
            let injection = next("injection")?.to_string();
            let json = next("entry")?;
            if !json.starts_with('{') || !json.ends_with('}') {
                return Err("the entry is not a JSON object".into());
            }
            let expires_at =
                DateTime::from_timestamp_millis(millis).ok_or("expiry out of range")?;
            Ok(Record::Put(Stored {
                head: EntryHead {
                    tag,
                    pod_uid,
                    expires_at,
                    generation,
                    mechanism,
                    injection,
                },
                json: json.into(),
                parsed: std::sync::OnceLock::new(),
            }))
        }
        _ => Err("neither P nor F".into()),
    }
}

#[derive(Debug, Default, Deserialize)]
struct LegacyFile {
    entries: Vec<JournalEntry>,
}

/// Why the journal cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot use the agent journal at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the agent journal holds {MAX_ENTRIES} faults already; refusing more until some are reverted"
    )]
    Full,
}

impl JournalError {
    fn at(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
        move |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What opening found, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// Lines replayed.
    pub lines: usize,
    /// Where an unreadable journal was kept aside.
    pub kept_aside: Option<PathBuf>,
    /// Entries imported from an older agent's `journal.json`.
    pub imported: usize,
}

/// The journal in a directory. Every change is written through to disk before it returns.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    file: fs::File,
    entries: BTreeMap<String, Stored>,
    /// Lines in the file (to know when to compact).
    lines: usize,
    opened: Opened,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, JournalError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(JournalError::at(&dir))?;
        let path = dir.join(FILE_NAME);
        let mut opened = Opened::default();
        let mut entries = BTreeMap::new();
        match replay(&path) {
            Ok((replayed, lines)) => {
                entries = replayed;
                opened.lines = lines;
            }
            Err(Replay::Io(e)) => return Err(JournalError::at(&path)(e)),
            Err(Replay::Corrupt(why)) => {
                let aside = keep_aside(&path).map_err(JournalError::at(&path))?;
                tracing::error!(error = %why, path = %aside.display(), "agent journal unreadable; kept aside, orphan cleanup will find what it described");
                opened.kept_aside = Some(aside);
            }
        }
        let legacy = dir.join(LEGACY_FILE_NAME);
        let mut import = Vec::new();
        match fs::read(&legacy) {
            Ok(bytes) => match serde_json::from_slice::<LegacyFile>(&bytes) {
                Ok(file) => import = file.entries,
                Err(error) => {
                    let aside = keep_aside(&legacy).map_err(JournalError::at(&legacy))?;
                    tracing::error!(%error, path = %aside.display(), "an older agent's journal is unreadable; kept aside");
                    opened.kept_aside.get_or_insert(aside);
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::at(&legacy)(e)),
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(JournalError::at(&path))?;
        let mut journal = Self {
            dir,
            file,
            entries,
            lines: opened.lines,
            opened,
        };
        if opened_needs_compaction(&journal) || journal.opened.kept_aside.is_some() {
            journal.compact()?;
        }
        if !import.is_empty() {
            journal.opened.imported = import.len();
            for entry in import {
                let stored = stored(entry)?;
                journal.entries.insert(stored.head.tag.clone(), stored);
            }
            journal.compact()?;
            fs::remove_file(&legacy).map_err(JournalError::at(&legacy))?;
        }
        Ok(journal)
    }

    /// What opening found.
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every entry's head (cheap: nothing is parsed).
    pub fn heads(&self) -> impl Iterator<Item = &EntryHead> {
        self.entries.values().map(|s| &s.head)
    }

    pub fn head(&self, tag: &InjectionTag) -> Option<&EntryHead> {
        self.entries.get(tag.as_str()).map(|s| &s.head)
    }

    /// Every entry, parsed.
    pub fn entries(&self) -> impl Iterator<Item = &JournalEntry> {
        self.entries.values().map(Stored::entry)
    }

    /// The entry of `tag`, parsed (once) on first use.
    pub fn get(&self, tag: &InjectionTag) -> Option<&JournalEntry> {
        self.entries.get(tag.as_str()).map(Stored::entry)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records or replaces an entry, durably.
    pub fn record(&mut self, entry: JournalEntry) -> Result<(), JournalError> {
        self.record_many(vec![entry])
    }

    /// Records or replaces entries, durably, in one append.
    pub fn record_many(&mut self, entries: Vec<JournalEntry>) -> Result<(), JournalError> {
        let new = entries
            .iter()
            .filter(|e| !self.entries.contains_key(&e.tag))
            .count();
        if new > 0 && self.entries.len() + new > MAX_ENTRIES {
            return Err(JournalError::Full);
        }
        let mut text = String::new();
        let mut bounded = Vec::with_capacity(entries.len());
        for mut entry in entries {
            if entry
                .baseline
                .as_ref()
                .is_some_and(|b| b.len() > MAX_BASELINE)
            {
                entry.baseline = None;
            }
            text.push_str(&put_line(&entry)?);
            bounded.push(stored(entry)?);
        }
        self.append(&text, bounded.len())?;
        for stored in bounded {
            self.entries.insert(stored.head.tag.clone(), stored);
        }
        self.maybe_compact()
    }

    /// Forgets an entry (its revert was confirmed), durably.
    pub fn forget(&mut self, tag: &InjectionTag) -> Result<(), JournalError> {
        self.forget_many(std::slice::from_ref(tag))
    }

    /// Forgets entries, durably, in one append.
    pub fn forget_many(&mut self, tags: &[InjectionTag]) -> Result<(), JournalError> {
        let present: Vec<String> = tags
            .iter()
            .filter(|t| self.entries.contains_key(t.as_str()))
            .map(|t| t.as_str().to_string())
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        let text = format!("F {}\n", present.join(" "));
        self.append(&text, 1)?;
        for tag in present {
            self.entries.remove(&tag);
        }
        self.maybe_compact()
    }

    fn append(&mut self, text: &str, lines: usize) -> Result<(), JournalError> {
        let path = self.dir.join(FILE_NAME);
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(JournalError::at(&path))?;
        self.lines += lines;
        Ok(())
    }

    fn maybe_compact(&mut self) -> Result<(), JournalError> {
        if opened_needs_compaction(self) {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the file with one line per live entry (temporary file, sync, rename, sync the
    /// directory), then appends to the new file.
    fn compact(&mut self) -> Result<(), JournalError> {
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut text = String::new();
        for stored in self.entries.values() {
            text.push_str(&put_line(stored.entry())?);
        }
        (|| -> io::Result<()> {
            let mut out = fs::File::create(&tmp)?;
            out.write_all(text.as_bytes())?;
            out.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is synced.
            fs::File::open(&self.dir)?.sync_all()?;
            self.file = fs::OpenOptions::new().append(true).open(&path)?;
            Ok(())
        })()
        .map_err(JournalError::at(&path))?;
        self.lines = self.entries.len();
        Ok(())
    }

    /// Bytes of the file (for tests and metrics).
    pub fn file_len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

fn opened_needs_compaction(journal: &Journal) -> bool {
    journal.lines > journal.entries.len() + COMPACT_SLACK
}

fn stored(entry: JournalEntry) -> Result<Stored, JournalError> {
    let json = serde_json::to_string(&entry).map_err(|e| JournalError::Io {
        path: PathBuf::from(FILE_NAME),
        source: io::Error::other(e),
    })?;
    let parsed = std::sync::OnceLock::new();
    let head = entry.head();
    let _ = parsed.set(Box::new(entry));
    Ok(Stored {
        head,
        json: json.into(),
        parsed,
    })
}

enum Replay {
    Io(io::Error),
    Corrupt(String),
}

/// Reads the log in one pass. A last line without its newline is a torn append: ignored.
fn replay(path: &Path) -> Result<(BTreeMap<String, Stored>, usize), Replay> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((BTreeMap::new(), 0)),
        Err(e) => return Err(Replay::Io(e)),
    };
    if file.metadata().map_err(Replay::Io)?.is_dir() {
        return Err(Replay::Io(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a directory",
        )));
    }
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut entries = BTreeMap::new();
    let mut lines = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(Replay::Io)?;
        if read == 0 {
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        if !complete {
            // A torn append: the change never completed.
            break;
        }
        lines += 1;
        let text = std::str::from_utf8(&buf[..buf.len() - 1])
            .map_err(|e| Replay::Corrupt(format!("line {lines}: {e}")))?;
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(Record::Put(stored)) => {
                entries.insert(stored.head.tag.clone(), stored);
            }
            Ok(Record::Forget(tags)) => {
                for tag in tags {
                    entries.remove(&tag);
                }
            }
            Err(error) => return Err(Replay::Corrupt(format!("line {lines}: {error}"))),
        }
    }
    Ok((entries, lines))
}

/// Moves `path` to a name no earlier corrupt journal has: `<name>.corrupt-<utc>-<pid>[-n]`.
fn keep_aside(path: &Path) -> io::Result<PathBuf> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let pid = std::process::id();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0.. {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let aside = path.with_file_name(format!("{name}.corrupt-{stamp}-{pid}{suffix}"));
        // hard_link fails if the name exists: never overwrite an earlier one.
        match fs::hard_link(path, &aside) {
            Ok(()) => {
                fs::remove_file(path)?;
                return Ok(aside);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("an unbounded range ends only by returning")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(uid: &str) -> JournalEntry {
        JournalEntry {
            tag: InjectionTag::from_uid(uid).unwrap().to_string(),
            injection: "default/x".into(),
            injection_uid: uid.into(),
            pod_uid: "p".into(),
            fault: NetworkFault::default(),
            expires_at: Utc::now(),
            generation: Some(1),
            mechanism: None,
            baseline: None,
            applied_at: None,
        }
    }

    const A: &str = "0f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37";
    const B: &str = "1f3c2a9e-7b1d-4c55-9a0e-2b6f8d4e1a37";

    fn uid(n: usize) -> String {
        format!("{n:08x}-7b1d-4c55-9a0e-2b6f8d4e1a37")
    }

    #[test]
    fn entries_survive_a_reopen_and_forgotten_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.record(entry(A)).unwrap();
        journal.record(entry(B)).unwrap();
        journal.forget(&InjectionTag::from_uid(A).unwrap()).unwrap();
        let reopened = Journal::open(dir.path()).unwrap();
        let tags: Vec<_> = reopened
            .entries()
            .map(|e| e.injection_uid.clone())
            .collect();
        assert_eq!(tags, vec![B.to_string()]);
    }

    #[test]
    fn a_corrupt_journal_is_kept_aside_under_a_new_name_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut asides = Vec::new();
        for round in 0..3 {
            fs::write(dir.path().join(FILE_NAME), format!("{{not json {round}\n")).unwrap();
            let journal = Journal::open(dir.path()).unwrap();
            assert!(journal.is_empty());
            let aside = journal.opened().kept_aside.clone().unwrap();
            assert_eq!(
                fs::read_to_string(&aside).unwrap(),
                format!("{{not json {round}\n"),
                "the corrupt file is kept as it was"
            );
            asides.push(aside);
        }
        asides.sort();
        asides.dedup();
        assert_eq!(asides.len(), 3, "none overwritten: {asides:?}");
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        journal.record(entry(A)).unwrap();
        drop(journal);
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        file.write_all(b"P 1f3c2a9e7b1d4c559a0e2b6f p 17").unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.len(), 1);
        assert!(journal.opened().kept_aside.is_none());
    }

    #[test]
    fn an_older_agents_journal_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = serde_json::json!({"entries": [entry(A)]});
        fs::write(dir.path().join(LEGACY_FILE_NAME), legacy.to_string()).unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.len(), 1);
        assert_eq!(journal.opened().imported, 1);
        assert!(!dir.path().join(LEGACY_FILE_NAME).exists());
        drop(journal);
        assert_eq!(Journal::open(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn a_directory_in_place_of_the_journal_is_an_error_that_says_where() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        let error = Journal::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains(FILE_NAME), "{error}");
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        assert!(Journal::open(&file).is_err());
    }

    #[test]
    fn the_file_stays_bounded_by_the_live_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        for n in 0..3 * COMPACT_SLACK {
            journal.record(entry(&uid(n))).unwrap();
            journal
                .forget(&InjectionTag::from_uid(&uid(n)).unwrap())
                .unwrap();
        }
        journal.record(entry(A)).unwrap();
        // Without compaction this would be 6 * COMPACT_SLACK lines.
        assert!(journal.lines <= 1 + COMPACT_SLACK + 1, "{}", journal.lines);
        let one = put_line(&entry(A)).unwrap().len() as u64;
        assert!(journal.file_len() < one * (COMPACT_SLACK as u64 + 2));
        assert_eq!(Journal::open(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn many_entries_replay_and_drain_in_one_pass_each() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let entries: Vec<JournalEntry> = (0..100_000).map(|n| entry(&uid(n))).collect();
        let tags: Vec<InjectionTag> = entries.iter().filter_map(JournalEntry::tag).collect();
        journal.record_many(entries).unwrap_err(); // beyond MAX_ENTRIES at once
        journal
            .record_many(
                tags[..MAX_ENTRIES]
                    .iter()
                    .map(|t| entry(&format!("{t}")))
                    .collect(),
            )
            .unwrap();
        drop(journal);
        let started = std::time::Instant::now();
        let mut journal = Journal::open(dir.path()).unwrap();
        let replayed = started.elapsed();
        assert_eq!(journal.len(), MAX_ENTRIES);
        let started = std::time::Instant::now();
        journal.forget_many(&tags).unwrap();
        let drained = started.elapsed();
        eprintln!("{MAX_ENTRIES} entries: replayed in {replayed:?}, forgotten in {drained:?}");
        assert!(journal.is_empty());
        assert!(journal.file_len() < 1024, "compacted after the drain");
    }

    #[test]
    fn oversized_baselines_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path()).unwrap();
        let mut big = entry(A);
        big.baseline = Some("x".repeat(MAX_BASELINE + 1));
        journal.record(big).unwrap();
        assert_eq!(
            journal
                .get(&InjectionTag::from_uid(A).unwrap())
                .unwrap()
                .baseline,
            None
        );
    }
}
