//! Object storage, the global resourceVersion counter and the bounded event log.
//!
//! Like etcd behind the real server, every write (create, update, delete) takes the next value
//! of one global counter as its `metadata.resourceVersion` and appends an event to a log. Watches
//! replay the log from the requested resourceVersion and then follow a broadcast channel. The log
//! is bounded ([`Store::new`]'s `history`); asking for a resourceVersion older than what it still
//! holds yields 410 Gone, exactly the situation a real server reaches after etcd compaction.
//! Simplification: lists always read the latest state (a list `resourceVersion` is ignored).

use super::errors::{ApiError, ApiResult};
use super::resources::ResKey;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub key: ResKey,
    pub type_: EventType,
    pub object: Value,
    /// The object before the change (for MODIFIED), used by filtered watches to turn a change
    /// that leaves / enters the selector into DELETED / ADDED as the real server does.
    pub old: Option<Value>,
}

/// (namespace or "", name)
pub type ObjKey = (String, String);

/// The largest object etcd stores: its default `--max-request-bytes`, 1.5 MiB, which the real
/// API server meets on every write of a custom resource (stored as JSON). The request also
/// carries the key and some framing, so the real limit sits a little lower: measured on
/// v1.36 with etcd 3.4, a ChaosExperiment of 1,381,123 bytes was stored and one of about
/// 1,580,000 refused.
pub const MAX_STORED_BYTES: usize = 1_572_864;

/// Refuses `obj` as the real server does when etcd refuses it: a 500 with etcd's words and no
/// reason (nothing is stored, and no retry helps).
pub fn check_fits(obj: &Value) -> ApiResult<()> {
    let mut size = ByteCount(0);
    // Writing into a counter cannot fail; a Value always serializes.
    let _ = serde_json::to_writer(&mut size, obj);
    if size.0 > MAX_STORED_BYTES {
        return Err(ApiError::failure(500, "etcdserver: request is too large"));
    }
    Ok(())
}

struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Store {
    rv: u64,
    objects: HashMap<ResKey, BTreeMap<ObjKey, Value>>,
    log: VecDeque<Arc<Event>>,
    history: usize,
    /// Highest resourceVersion that fell out of the log; watches from below it get 410.
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

pub fn obj_key(obj: &Value) -> ObjKey {
    let md = &obj["metadata"];
    (
        md["namespace"].as_str().unwrap_or_default().to_string(),
        md["name"].as_str().unwrap_or_default().to_string(),
    )
}

impl Store {
    pub fn new(history: usize) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            rv: 1,
            objects: HashMap::new(),
            log: VecDeque::new(),
            history: history.max(1),
            compacted: 0,
            tx,
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &ResKey, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Objects of a resource, optionally restricted to one namespace, in (namespace, name) order.
    pub fn list<'a>(
        &'a self,
        key: &ResKey,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .get(key)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |((ons, _), _)| ns.is_none_or(|n| n == ons))
            .map(|(_, v)| v)
    }

    /// Every object of every resource, by reference (a scan that copies nothing).
    pub fn iter_all(&self) -> impl Iterator<Item = (&ResKey, &Value)> {
        self.objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k, v)))
    }

    /// All objects of every resource (for garbage collection and namespace deletion).
    pub fn all_objects(&self) -> Vec<(ResKey, Value)> {
        self.objects
            .iter()
            .flat_map(|(k, m)| m.values().map(move |v| (k.clone(), v.clone())))
            .collect()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        self.log.push_back(ev.clone());
        while self.log.len() > self.history {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// Store `obj` (create or update), stamping a fresh resourceVersion. Returns the stored object.
    pub fn put(&mut self, key: &ResKey, mut obj: Value) -> Value {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let k = obj_key(&obj);
        let old = self
            .objects
            .entry(key.clone())
            .or_default()
            .insert(k, obj.clone());
        let type_ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rv,
            key: key.clone(),
            type_,
            object: obj.clone(),
            old,
        });
        obj
    }

    /// Remove an object; the DELETED event carries the deletion's resourceVersion.
    pub fn remove(&mut self, key: &ResKey, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self
            .objects
            .get_mut(key)?
            .remove(&(ns.to_string(), name.to_string()))?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(Event {
            rv,
            key: key.clone(),
            type_: EventType::Deleted,
            object: obj.clone(),
            old: None,
        });
        Some(obj)
    }

    /// Events after `rv` for `key`, or `Err(compacted)` when some of them were already dropped.
    pub fn events_since(&self, key: &ResKey, rv: u64) -> Result<Vec<Arc<Event>>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        Ok(self
            .log
            .iter()
            .filter(|e| e.rv > rv && &e.key == key)
            .cloned()
            .collect())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn set_history(&mut self, history: usize) {
        self.history = history.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ResKey {
        ResKey {
            group: String::new(),
            plural: "configmaps".into(),
        }
    }

    #[test]
    fn rv_is_global_and_log_is_bounded() {
        let mut s = Store::new(2);
        let a = s.put(&key(), json!({"metadata": {"name": "a", "namespace": "d"}}));
        let b = s.put(&key(), json!({"metadata": {"name": "b", "namespace": "d"}}));
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        assert_eq!(b["metadata"]["resourceVersion"], "3");
        assert_eq!(s.events_since(&key(), 2).unwrap().len(), 1);
        let gone = s.remove(&key(), "d", "a").unwrap();
        assert_eq!(gone["metadata"]["resourceVersion"], "4");
        // The event at rv 2 has been dropped: resuming from 1 is no longer possible.
        assert_eq!(s.events_since(&key(), 1).unwrap_err(), 2);
        assert_eq!(s.events_since(&key(), 2).unwrap().len(), 2);
        assert_eq!(s.list(&key(), Some("d")).count(), 1);
    }
}
