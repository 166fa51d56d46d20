//! How an experiment's target records are stored when there are many of them.
//!
//! The API server's cost for every write of an object grows with the object, whatever the
//! write changes: measured on a real kube-apiserver v1.36 (idle, 2 cores), a server-side apply
//! of the status of an experiment with 500 target records (146 KB) takes 68-84 ms (min to
//! median), against 10-12 ms with its records gzip-compressed into one string, and under an
//! abort's load the list took 100-400 ms. An abort's verdict is such a write, so at hundreds
//! of targets the records' size was most of the time from "it broke" to "it is all gone"
//! (docs/performance-history.md).
//!
//! Up to [`PLAIN_RECORDS_LIMIT`] records stay a plain list (`status.targets`, readable with
//! `kubectl get -o yaml`); above it they are stored as `status.targetRecords`: the same JSON
//! list, gzip-compressed, base64-encoded, and `status.targets` is empty. faultline's own
//! readers (the controller, the agent, the CLI and the report) see a plain list either way:
//! the status type packs on serialization and unpacks on deserialization. Pure: no IO.

use std::io::{Read, Write};

use base64::Engine;
use flate2::{Compression, read::GzDecoder, write::GzEncoder};

use super::TargetRecord;

/// The most target records `status.targets` lists as they are; more are packed.
pub const PLAIN_RECORDS_LIMIT: usize = 100;

/// The longest `status.targetRecords` the CRD accepts: etcd's 1.5 MiB limit on one object.
pub const PACKED_RECORDS_MAX_LENGTH: u32 = 1_572_864;

/// The largest list a packed string may unpack to: a bound against a decompression bomb in a
/// status written by someone other than faultline (records over the status budget were never
/// written by it).
const UNPACKED_LIMIT: u64 = 8 * 1024 * 1024;

/// `records` packed for `status.targetRecords`, when they are more than
/// [`PLAIN_RECORDS_LIMIT`] and packing makes them smaller; `None` when they stay a plain list.
pub fn pack(records: &[TargetRecord]) -> Option<String> {
    if records.len() <= PLAIN_RECORDS_LIMIT {
        return None;
    }
    pack_smaller(&serde_json::to_vec(records).ok()?)
}

/// `json` compressed and encoded, when that is shorter than `json` (base64 adds a third, which
/// text as random as a message can be would not win back).
fn pack_smaller(json: &[u8]) -> Option<String> {
    // The fast level: 500 everyday records pack to 31 KB (the default level: 24), which the
    // server writes as fast, and the controller compresses on every write.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(json).ok()?;
    let packed = base64::engine::general_purpose::STANDARD.encode(encoder.finish().ok()?);
    (packed.len() < json.len()).then_some(packed)
}

/// How [`UnpackError`] begins, so that a reader can tell it from a problem with the spec.
pub const UNREADABLE: &str = "status.targetRecords cannot be read";

/// Why a `status.targetRecords` string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "status.targetRecords cannot be read ({0}); faultline writes it as base64 of gzip-compressed JSON target records: remove it (kubectl patch fex NAME --subresource=status --type=merge -p '{{\"status\":{{\"targetRecords\":null}}}}') and the experiment can be read again"
)]
pub struct UnpackError(String);

/// The records of a `status.targetRecords` string.
pub fn unpack(packed: &str) -> Result<Vec<TargetRecord>, UnpackError> {
    let compressed = base64::engine::general_purpose::STANDARD
        .decode(packed.trim())
        .map_err(|e| UnpackError(format!("not base64: {e}")))?;
    let mut json = Vec::new();
    GzDecoder::new(compressed.as_slice())
        .take(UNPACKED_LIMIT + 1)
        .read_to_end(&mut json)
        .map_err(|e| UnpackError(format!("not gzip: {e}")))?;
    if json.len() as u64 > UNPACKED_LIMIT {
        return Err(UnpackError(format!(
            "unpacks to more than {} MiB",
            UNPACKED_LIMIT / 1024 / 1024
        )));
    }
    serde_json::from_slice(&json).map_err(|e| UnpackError(format!("not a list of records: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TargetState;

    fn record(i: usize) -> TargetRecord {
        TargetRecord {
            namespace: "shop".into(),
            name: format!("api-7d9f8c6b5-{i:05}"),
            uid: format!("3f1c2b4a-9d8e-4f7a-b6c5-{i:012}"),
            node_name: Some(format!("node-{}", i % 5)),
            fault: "networkLatency".into(),
            state: TargetState::Injected,
            message: Some("nfqueue".into()),
            ..Default::default()
        }
    }

    #[test]
    fn up_to_the_limit_records_stay_a_plain_list() {
        let records: Vec<_> = (0..PLAIN_RECORDS_LIMIT).map(record).collect();
        assert_eq!(pack(&records), None);
        assert_eq!(pack(&[]), None);
    }

    #[test]
    fn more_records_are_packed_smaller_and_unpack_to_the_same_list() {
        let records: Vec<_> = (0..500).map(record).collect();
        let packed = pack(&records).expect("500 records are packed");
        let plain = serde_json::to_vec(&records).unwrap().len();
        assert!(packed.len() * 4 < plain, "{} of {plain}", packed.len());
        assert_eq!(unpack(&packed).unwrap(), records);
    }

    #[test]
    fn what_packing_would_not_shrink_stays_plain() {
        let random: Vec<u8> = (0..64 * 1024).map(|_| rand::random::<u8>()).collect();
        assert_eq!(pack_smaller(&random), None);
        assert!(pack_smaller(&[b'a'; 1024]).is_some());
    }

    #[test]
    fn an_unreadable_string_says_what_is_wrong_and_what_to_do() {
        let not_base64 = unpack("not base64!").unwrap_err().to_string();
        assert!(
            not_base64.starts_with(&format!("{UNREADABLE} (not base64:")),
            "{not_base64}"
        );
        assert!(
            not_base64.contains(
                "kubectl patch fex NAME --subresource=status --type=merge -p '{\"status\":{\"targetRecords\":null}}'"
            ),
            "{not_base64}"
        );
        let plain = base64::engine::general_purpose::STANDARD.encode(b"[]");
        assert!(unpack(&plain).unwrap_err().to_string().contains("not gzip"));
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(b"{\"a\": 1}").unwrap();
        let object = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
        assert!(
            unpack(&object)
                .unwrap_err()
                .to_string()
                .contains("not a list of records")
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused_not_unpacked() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        for _ in 0..(UNPACKED_LIMIT / zeros.len() as u64 + 1) {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap());
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        assert!(
            unpack(&bomb)
                .unwrap_err()
                .to_string()
                .contains("unpacks to more than 8 MiB")
        );
    }
}
