//! Watch: a streamed, newline-delimited sequence of `{"type": ..., "object": ...}` events.
//!
//! Semantics follow the real server:
//! * `resourceVersion` unset or `"0"`: synthetic ADDED events for the current objects first,
//!   then changes. With `sendInitialEvents=true` the initial events end with a BOOKMARK carrying
//!   the `k8s.io/initial-events-end` annotation.
//! * `resourceVersion=N`: every change after N from the retained history, then live changes; if
//!   N is older than the history, a single ERROR event with a 410 `Expired` Status, after which
//!   the stream ends (kube-runtime's watcher then relists).
//! * Selectors filter events; an object that stops (starts) matching is sent as DELETED (ADDED).
//! * `allowWatchBookmarks=true`: periodic BOOKMARK events with the latest resourceVersion.
//! * `timeoutSeconds` ends the stream; server shutdown ends all streams.
//!
//! A client that accepts only protobuf gets `application/vnd.kubernetes.protobuf;stream=watch`:
//! length-prefixed `WatchEvent` frames (built-in kinds only; 406 for custom resources).
//!
//! A client that asks for PartialObjectMetadata (kube-rs's `watcher` over
//! `Api<PartialObjectMeta<K>>`, or `metadata_watcher`) gets each event's object, bookmarks
//! included, as PartialObjectMetadata. One that asks for
//! PartialObjectMetadataList gets a stream that ends at the first object it would carry: the
//! real server fails to convert that object, logs it and closes the stream.

use super::Shared;
use super::errors::{ApiError, ApiResult};
use super::partial;
use super::protobuf;
use super::read::{Filter, present};
use super::request::{Format, Params, Target};
use super::store::{Event, EventType};
use super::table;
use axum::body::Body;
use axum::response::Response;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

struct Ctx {
    t: Target,
    filter: Filter,
    format: Format,
}

impl Ctx {
    /// One event on the wire: a JSON line, or a protobuf frame.
    fn event(&self, type_: &str, object: Value) -> Vec<u8> {
        if self.format == Format::Protobuf {
            return match protobuf::watch_frame(type_, &object) {
                Ok(frame) => frame,
                Err(e) => {
                    // Every stored object of a kind with tables encodes; this is a stored
                    // value of the wrong type (the sandbox does not type-check built-ins).
                    tracing::warn!(error = %e, "watch event not encodable as protobuf; skipped");
                    Vec::new()
                }
            };
        }
        let mut line = json!({"type": type_, "object": object}).to_string();
        line.push('\n');
        line.into_bytes()
    }

    /// An object's event; an error when the object cannot take the asked-for form (the stream
    /// then ends).
    fn render(&self, type_: &str, obj: Value) -> ApiResult<Vec<u8>> {
        let obj = present(&self.t, obj);
        let object = match self.format {
            Format::Table => {
                let rv = obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                table::table(&self.t.def, &self.t.version, &[obj], &rv, None)
            }
            Format::Metadata | Format::MetadataList => partial::convert(&self.t, obj, self.format)?,
            Format::Json | Format::Protobuf => obj,
        };
        Ok(self.event(type_, object))
    }

    /// The event as this watcher sees it (None when it is filtered out).
    fn translate(&self, ev: &Event) -> Option<ApiResult<Vec<u8>>> {
        if ev.key != self.t.def.key() {
            return None;
        }
        let now = self.filter.matches(&ev.object);
        let before = ev.old.as_ref().is_some_and(|o| self.filter.matches(o));
        let type_ = match (ev.type_, before, now) {
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) | (EventType::Added, _, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            (EventType::Deleted, _, true) => "DELETED",
            _ => return None,
        };
        Some(self.render(type_, ev.object.clone()))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> ApiResult<Vec<u8>> {
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.t.def.kind, "apiVersion": self.t.def.api_version(&self.t.version), "metadata": md});
        // A bookmark is an object like any other to the real server's conversion.
        let obj = match self.format {
            Format::Metadata | Format::MetadataList => partial::convert(&self.t, obj, self.format)?,
            Format::Json | Format::Table | Format::Protobuf => obj,
        };
        Ok(self.event("BOOKMARK", obj))
    }
}

pub fn watch(shared: Arc<Shared>, t: Target, p: &Params, format: Format) -> ApiResult<Response> {
    let filter = Filter::from_params(&t, p)?;
    let (api_version, kind) = t.object_kind();
    if format == Format::Protobuf && !protobuf::supports(&api_version, &kind) {
        return Err(super::respond::protobuf_not_acceptable());
    }
    let timeout = p
        .int("timeoutSeconds")?
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = p.flag("allowWatchBookmarks");
    let send_initial = p.flag("sendInitialEvents");
    let requested = match p
        .get("resourceVersion")
        .filter(|r| !r.is_empty() && *r != "0")
    {
        None => None,
        Some(r) => Some(
            r.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {r}")))?,
        ),
    };
    let ctx = Ctx { t, filter, format };
    let mut first: Vec<ApiResult<Vec<u8>>> = Vec::new();
    let mut gone = false;
    let (mut rx, start_rv) = {
        let st = shared.lock();
        let rx = st.store.subscribe();
        let current = st.store.current_rv();
        match requested {
            None => {
                for o in st.store.list(&ctx.t.def.key(), ctx.t.namespace.as_deref()) {
                    if ctx.filter.matches(o) {
                        first.push(ctx.render("ADDED", o.clone()));
                    }
                }
                if send_initial {
                    first.push(ctx.bookmark(current, true));
                }
            }
            Some(rv) => match st.store.events_since(&ctx.t.def.key(), rv) {
                Ok(events) => first.extend(events.iter().filter_map(|e| ctx.translate(e))),
                Err(compacted) => {
                    let e =
                        ApiError::expired(format!("too old resource version: {rv} ({compacted})"));
                    first.push(Ok(ctx.event("ERROR", e.to_status())));
                    gone = true;
                }
            },
        }
        (rx, current)
    };
    tracing::debug!(resource = %ctx.t.def.plural, from = ?requested, gone, "watch started");
    let mut shutdown = shared.shutdown.clone();
    let interval = shared.bookmark_interval;
    let stream = async_stream::stream! {
        for line in first {
            match line {
                Ok(line) => yield Ok::<_, std::convert::Infallible>(line),
                Err(e) => {
                    unconvertible(&e);
                    return;
                }
            }
        }
        if gone {
            return;
        }
        let mut last_rv = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = shutdown.changed() => break,
                _ = ticker.tick(), if bookmarks => match ctx.bookmark(last_rv, false) {
                    Ok(line) => yield Ok(line),
                    Err(e) => {
                        unconvertible(&e);
                        break;
                    }
                },
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        match ctx.translate(&ev) {
                            Some(Ok(line)) => yield Ok(line),
                            Some(Err(e)) => {
                                unconvertible(&e);
                                break;
                            }
                            None => {}
                        }
                    }
                    // A watcher that fell behind is closed; the client resumes from its last rv.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => break,
                },
            }
            if *shutdown.borrow() {
                break;
            }
        }
    };
    let content_type = match format {
        Format::Protobuf => protobuf::WATCH_MEDIA_TYPE,
        Format::Json | Format::Table | Format::Metadata | Format::MetadataList => {
            "application/json"
        }
    };
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("cache-control", "no-cache, private")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// A watch whose object cannot take the asked-for form ends; the real server logs it the same
/// way ("failed to transform object").
fn unconvertible(e: &ApiError) {
    tracing::warn!(error = %e, "watch event cannot be converted; ending the stream");
}
