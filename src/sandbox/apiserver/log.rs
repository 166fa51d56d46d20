//! `GET pods/{name}/log` (`kubectl logs`): the output of a sandbox pod's container, read from
//! the files the real-pod runtime writes (see [`crate::sandbox::pod_logs`]), with the options
//! kubectl sends: `container`, `previous`, `tailLines`, `limitBytes`, `timestamps`,
//! `sinceSeconds`, `sinceTime` and `follow`.
//!
//! Errors are the real server's (which passes on the kubelet's): 400 for a container name that
//! is missing or wrong, for a container that has not run yet and for `previous` without an
//! earlier run; an empty 200 for a pod no node has taken. Simulated pods (the sandbox's pods
//! when it does not run as root) never ran a process: their containers are reported the way the
//! kubelet reports a container that never started.
//!
//! Simplification: the runtime writes a container's raw output, so the time of a line (for
//! `timestamps` and `since...`) is the RFC 3339 timestamp the line starts with (every log line
//! of `faultline demo-app` has one), or that of the line before; lines before the first
//! timestamp take the file's creation time.

use super::Shared;
use super::errors::{ApiError, ApiResult};
use super::request::{Params, Target};
use axum::body::Body;
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often `follow` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// What to read and how to show it.
struct Request {
    path: PathBuf,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    timestamps: bool,
    since: Option<DateTime<Utc>>,
    follow: bool,
}

pub fn logs(shared: Arc<Shared>, t: &Target, p: &Params) -> ApiResult<Response> {
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let pod = shared
        .lock()
        .store
        .get(&t.def.key(), &ns, &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found("", "pods", &name))?;
    let container = container_name(&pod, &name, p.get("container"))?;
    if pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        // No node has the pod: the real server answers with nothing at all.
        return text(Body::empty());
    }
    let status = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|s| s["name"] == container.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    let Some(dir) = &shared.pod_logs else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the sandbox \
             simulates this pod, so no process ever ran and there are no logs (as root, \
             `faultline sandbox up` runs real pods)"
        )));
    };
    let previous = p.flag("previous");
    let restarts = status["restartCount"].as_i64().unwrap_or(0) as i32;
    let run = if previous {
        if status["lastState"]["terminated"].is_null() {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        restarts - 1
    } else {
        restarts
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let path = crate::sandbox::pod_logs::container_log(dir, &ns, &name, uid, &container, run);
    if !path.exists() {
        let why = status["state"]["waiting"]["reason"]
            .as_str()
            .map(|r| format!(": {r}"))
            .unwrap_or_else(|| " - no logs yet".into());
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start{why}"
        )));
    }
    let since = match (p.int("sinceSeconds")?, p.get("sinceTime")) {
        (Some(secs), _) => Some(Utc::now() - chrono::Duration::seconds(secs as i64)),
        (None, Some(t)) => Some(
            DateTime::parse_from_rfc3339(t)
                .map_err(|e| ApiError::bad_request(format!("invalid sinceTime {t:?}: {e}")))?
                .with_timezone(&Utc),
        ),
        (None, None) => None,
    };
    let req = Request {
        path,
        tail_lines: p.int("tailLines")?.map(|n| n as usize),
        limit_bytes: p.int("limitBytes")?.map(|n| n as usize),
        timestamps: p.flag("timestamps"),
        since,
        follow: p.flag("follow") && !previous,
    };
    let (first, offset) = read(&req)?;
    if !req.follow {
        return text(Body::from(first));
    }
    let pod_uid = uid.to_string();
    let key = t.def.key();
    let mut shutdown = shared.shutdown.clone();
    let stream = async_stream::stream! {
        let mut sent = first.len();
        yield Ok::<_, std::convert::Infallible>(first);
        let mut offset = offset;
        let mut last_time = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = shutdown.changed() => break,
            }
            // The run ends (and so does the stream) when the pod goes or its container restarts.
            let running = shared.lock().store.get(&key, &ns, &name).is_some_and(|p| {
                p["metadata"]["uid"] == pod_uid.as_str()
                    && p["metadata"].get("deletionTimestamp").is_none()
                    && restart_count(p, &container) == restarts
            });
            let (chunk, next) = match more(&req, offset, &mut last_time) {
                Ok(read) => read,
                Err(_) => break,
            };
            offset = next;
            if !chunk.is_empty() {
                let chunk = limit(chunk, req.limit_bytes.map(|l| l.saturating_sub(sent)));
                sent += chunk.len();
                yield Ok(chunk);
            }
            if !running || req.limit_bytes.is_some_and(|l| sent >= l) {
                break;
            }
        }
    };
    text(Body::from_stream(stream))
}

fn text(body: Body) -> ApiResult<Response> {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("cache-control", "no-cache, private")
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn restart_count(pod: &Value, container: &str) -> i32 {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == container)
        .and_then(|s| s["restartCount"].as_i64())
        .unwrap_or(0) as i32
}

/// The container the request names, or the pod's only one.
fn container_name(pod: &Value, pod_name: &str, asked: Option<&str>) -> ApiResult<String> {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(String::from))
            .collect()
    };
    let (containers, init) = (names("containers"), names("initContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// The output so far, as asked, and the offset up to which the file was read.
fn read(req: &Request) -> ApiResult<(Vec<u8>, u64)> {
    let bytes = std::fs::read(&req.path)
        .map_err(|e| ApiError::internal(format!("reading {}: {e}", req.path.display())))?;
    // Only whole lines: a line being written is sent once it is complete (follow).
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let created = std::fs::metadata(&req.path)
        .and_then(|m| m.created().or_else(|_| m.modified()))
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now());
    let mut last_time = None;
    let lines: Vec<(DateTime<Utc>, &[u8])> = bytes[..complete]
        .split_inclusive(|b| *b == b'\n')
        .map(|line| {
            let time = line_time(line).or(last_time);
            last_time = time;
            (time, line)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(time, line)| (time.unwrap_or(created), line))
        .filter(|(time, _)| req.since.is_none_or(|s| *time >= s))
        .collect();
    let skip = req.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = Vec::new();
    for (time, line) in &lines[skip..] {
        push_line(&mut out, req.timestamps, *time, line);
    }
    Ok((limit(out, req.limit_bytes), complete as u64))
}

/// Complete lines written after `offset`, and the new offset.
fn more(
    req: &Request,
    offset: u64,
    last_time: &mut Option<DateTime<Utc>>,
) -> std::io::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(&req.path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut out = Vec::new();
    for line in bytes[..complete].split_inclusive(|b| *b == b'\n') {
        let time = line_time(line).or(*last_time).unwrap_or_else(Utc::now);
        *last_time = Some(time);
        if req.since.is_none_or(|s| time >= s) {
            push_line(&mut out, req.timestamps, time, line);
        }
    }
    Ok((out, offset + complete as u64))
}

fn push_line(out: &mut Vec<u8>, timestamps: bool, time: DateTime<Utc>, line: &[u8]) {
    if timestamps {
        // The kubelet's format: RFC 3339 with nine fractional digits.
        out.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(line);
}

fn limit(mut bytes: Vec<u8>, limit: Option<usize>) -> Vec<u8> {
    if let Some(l) = limit {
        bytes.truncate(l);
    }
    bytes
}

/// The RFC 3339 timestamp a line starts with.
fn line_time(line: &[u8]) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(line.get(..40.min(line.len()))?).ok()?;
    let first = text.split_whitespace().next()?;
    DateTime::parse_from_rfc3339(first)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_the_named_one_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(container_name(&one, "p", None).unwrap(), "app");
        assert_eq!(container_name(&one, "p", Some("app")).unwrap(), "app");
        let e = container_name(&one, "p", Some("nope")).unwrap_err();
        assert_eq!(e.message, "container nope is not valid for pod p");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                  "initContainers": [{"name": "i"}]}});
        let e = container_name(&two, "p", None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        assert_eq!(container_name(&two, "p", Some("i")).unwrap(), "i");
    }

    #[test]
    fn tail_since_timestamps_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "banner\n2026-01-01T00:00:01.5Z INFO one\ncontinued\n2026-01-01T00:00:03Z INFO two\npartial",
        )
        .unwrap();
        let req = |tail, since: Option<&str>, timestamps, limit| Request {
            path: path.clone(),
            tail_lines: tail,
            limit_bytes: limit,
            timestamps,
            since: since.map(|s| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)),
            follow: false,
        };
        let text = |r: Request| String::from_utf8(read(&r).unwrap().0).unwrap();
        // The unfinished last line is not shown yet.
        assert_eq!(
            text(req(None, None, false, None)),
            "banner\n2026-01-01T00:00:01.5Z INFO one\ncontinued\n2026-01-01T00:00:03Z INFO two\n"
        );
        assert_eq!(
            text(req(Some(1), None, false, None)),
            "2026-01-01T00:00:03Z INFO two\n"
        );
        // The banner before the first timestamp is as old as the file (just written).
        assert_eq!(
            text(req(None, Some("2026-01-01T00:00:02Z"), false, None)),
            "banner\n2026-01-01T00:00:03Z INFO two\n"
        );
        assert_eq!(
            text(req(Some(3), None, true, None)),
            "2026-01-01T00:00:01.500000000Z 2026-01-01T00:00:01.5Z INFO one\n\
             2026-01-01T00:00:01.500000000Z continued\n\
             2026-01-01T00:00:03.000000000Z 2026-01-01T00:00:03Z INFO two\n"
        );
        assert_eq!(text(req(None, None, false, Some(4))), "bann");
        let (_, offset) = read(&req(None, None, false, None)).unwrap();
        std::fs::write(
            &path,
            "banner\n2026-01-01T00:00:01.5Z INFO one\ncontinued\n2026-01-01T00:00:03Z INFO two\npartial line\n",
        )
        .unwrap();
        let mut last = None;
        let (chunk, _) = more(&req(None, None, false, None), offset, &mut last).unwrap();
        assert_eq!(chunk, b"partial line\n");
    }
}
