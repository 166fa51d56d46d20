//! Test support: the netlink requests `tc` sent, captured by `tests/fixtures/tc/capture.sh`,
//! and the comparison of ours against them.

use super::netlink::Message;
use super::psched::Psched;

/// A captured request: its bytes and the scheduler clock of the machine it was captured on.
pub(crate) struct Fixture {
    pub name: String,
    pub command: String,
    pub bytes: Vec<u8>,
    pub psched: Psched,
}

pub(crate) fn load(name: &str) -> Fixture {
    let path = format!(
        "{}/tests/fixtures/tc/{name}.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut command = String::new();
    let mut psched = None;
    let mut bytes = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim();
            if let Some(c) = comment.strip_prefix("Netlink request sent by:") {
                command = c.trim().to_string();
            } else if let Some(p) = comment.strip_prefix("/proc/net/psched:") {
                psched = Some(Psched::parse(p).unwrap());
            }
            continue;
        }
        for byte in line.split_whitespace() {
            bytes.push(u8::from_str_radix(byte, 16).unwrap_or_else(|e| panic!("{path}: {e}")));
        }
    }
    assert!(!bytes.is_empty(), "{path} holds no request");
    Fixture {
        name: name.to_string(),
        command,
        bytes,
        psched: psched.unwrap_or_else(|| panic!("{path} does not record /proc/net/psched")),
    }
}

/// Asserts that `ours` encodes to the captured bytes, ignoring `nlmsg_seq`, `nlmsg_pid` and
/// `tcm_ifindex` (tc captured on `lo`). On a difference, shows both with the first offset.
pub(crate) fn assert_same_request(fixture: &Fixture, ours: &Message) {
    let mut ours = ours.encode(0);
    let mut theirs = fixture.bytes.clone();
    for bytes in [&mut ours, &mut theirs] {
        for at in (8..16).chain(20..24) {
            if let Some(b) = bytes.get_mut(at) {
                *b = 0;
            }
        }
    }
    if ours != theirs {
        let first = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "our request differs from tc's in fixture {} at byte {first} (ours {} bytes, tc's {})\n\
             tc command: {}\nours: {}\ntc's: {}",
            fixture.name,
            ours.len(),
            theirs.len(),
            fixture.command,
            hex(&ours),
            hex(&theirs)
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|row| {
            row.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n      ")
}
