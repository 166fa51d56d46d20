//! The agent's on-disk journal: what it applied, where, and until when.
//!
//! Written *before* a fault is applied and cleared only after its revert is confirmed, so that
//! an agent restarted after a crash knows every fault it may have left behind and its deadline,
//! even before it can reach the API server. One small JSON file, replaced atomically (write to
//! a temporary file, fsync, rename), on a hostPath in production.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::tag::InjectionTag;
use crate::api::NetworkFault;

const FILE_NAME: &str = "journal.json";

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
    /// The namespace's rules before the fault, to verify the revert left nothing behind.
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
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct JournalFile {
    entries: Vec<JournalEntry>,
}

/// The journal in a directory. Every change is written through to disk before it returns.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    entries: BTreeMap<String, JournalEntry>,
}

impl Journal {
    /// Opens (or creates) the journal in `dir`. A corrupt file is kept aside as
    /// `journal.json.corrupt` and reported, never silently dropped.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let path = dir.join(FILE_NAME);
        let entries = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<JournalFile>(&bytes) {
                Ok(file) => file.entries,
                Err(error) => {
                    let aside = dir.join(format!("{FILE_NAME}.corrupt"));
                    fs::rename(&path, &aside)?;
                    tracing::error!(%error, path = %aside.display(), "agent journal unreadable; kept aside, orphan cleanup will find what it described");
                    Vec::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir,
            entries: entries.into_iter().map(|e| (e.tag.clone(), e)).collect(),
        })
    }

    pub fn entries(&self) -> impl Iterator<Item = &JournalEntry> {
        self.entries.values()
    }

    pub fn get(&self, tag: &InjectionTag) -> Option<&JournalEntry> {
        self.entries.get(tag.as_str())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records or replaces an entry, durably.
    pub fn record(&mut self, entry: JournalEntry) -> io::Result<()> {
        self.entries.insert(entry.tag.clone(), entry);
        self.persist()
    }

    /// Forgets an entry (its revert was confirmed), durably.
    pub fn forget(&mut self, tag: &InjectionTag) -> io::Result<()> {
        if self.entries.remove(tag.as_str()).is_some() {
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&self) -> io::Result<()> {
        let file = JournalFile {
            entries: self.entries.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        {
            let mut out = fs::File::create(&tmp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(FILE_NAME))?;
        // The rename is durable only once the directory is synced.
        fs::File::open(&self.dir)?.sync_all()
    }
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
    fn a_corrupt_journal_is_kept_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert!(journal.is_empty());
        assert!(dir.path().join("journal.json.corrupt").exists());
    }
}
