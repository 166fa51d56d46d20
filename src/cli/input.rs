//! Reading a manifest (a file, or stdin for `-`) with a size limit, for `validate` and `run`.
//!
//! Without a limit `faultline validate /dev/zero` (or `run -f -` fed by an endless pipe) reads
//! until memory runs out. The limit is far above any real manifest: the API server refuses an
//! object over 3 MiB, and a file of many documents stays well under 64 MiB.

use std::{io::Read, path::Path};

/// The most bytes read from one manifest.
pub(super) const MAX_MANIFEST_BYTES: u64 = 64 * 1024 * 1024;

/// `MAX_MANIFEST_BYTES` as people write it.
const MAX_MANIFEST_TEXT: &str = "64 MiB";

/// Why a manifest was not read; each message names it.
#[derive(Debug)]
pub(super) enum ReadError {
    /// It does not exist, is not readable, or reading failed.
    Unreadable(String),
    /// It is over the limit; the message says what to do.
    TooLarge(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Unreadable(message) | ReadError::TooLarge(message) => f.write_str(message),
        }
    }
}

/// The manifest at `path` (`-`: stdin) as its display name and bytes.
pub(super) fn read_manifest(path: &Path) -> Result<(String, Vec<u8>), ReadError> {
    if path.as_os_str() == "-" {
        let name = "<stdin>".to_string();
        let bytes = read_limited(std::io::stdin().lock(), &name, MAX_MANIFEST_BYTES)?;
        return Ok((name, bytes));
    }
    let name = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| ReadError::Unreadable(format!("cannot read {name}: {e}")))?;
    let bytes = read_limited(file, &name, MAX_MANIFEST_BYTES)?;
    Ok((name, bytes))
}

/// Reads `reader` to its end, refusing to read more than `limit` bytes.
fn read_limited(reader: impl Read, name: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    // One byte past the limit tells a file of exactly `limit` bytes from a longer one.
    reader
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Unreadable(format!("cannot read {name}: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge(too_large(name, limit)));
    }
    Ok(bytes)
}

fn too_large(name: &str, limit: u64) -> String {
    let limit = if limit == MAX_MANIFEST_BYTES {
        MAX_MANIFEST_TEXT.to_string()
    } else {
        format!("{limit} bytes")
    };
    format!(
        "{name} is larger than {limit}, the most faultline reads from one manifest: split it into several files (the API server takes at most 3 MiB per object)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_of_exactly_the_limit_is_read_and_one_byte_more_is_refused() {
        let limit = 16;
        let exact = read_limited(&[b'a'; 16][..], "m.yaml", limit).unwrap();
        assert_eq!(exact.len(), 16);
        let refused = read_limited(&[b'a'; 17][..], "m.yaml", limit)
            .unwrap_err()
            .to_string();
        assert!(
            refused.starts_with("m.yaml is larger than 16 bytes"),
            "{refused}"
        );
    }

    #[test]
    fn an_endless_input_stops_at_the_limit() {
        let refused = read_limited(std::io::repeat(0), "<stdin>", 1024)
            .unwrap_err()
            .to_string();
        assert!(refused.contains("split it into several files"), "{refused}");
    }
}
