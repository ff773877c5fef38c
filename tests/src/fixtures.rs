//! Values tests build again and again: one valid punch to start from, a sample fingerprint.

use rollcall_protocol::v1;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// An ISO fingerprint record of FVC2002 DB1_B, e.g. `fvc("101_1")` (finger 101, impression 1),
/// from `FVC_ISO_DIR`, default `../shared/reference/fingerprint/fvc-iso` beside the workspace.
/// Panics naming the file and the fix when it is missing.
pub fn fvc(name: &str) -> PathBuf {
    let dir = std::env::var("FVC_ISO_DIR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/reference/fingerprint/fvc-iso"
        )
        .into()
    });
    let path = Path::new(&dir).join(format!("fvc2002/DB1_B/{name}.iso"));
    assert!(
        path.is_file(),
        "{}: missing: set FVC_ISO_DIR to the fvc-iso directory",
        path.display()
    );
    path
}

/// When [`punch`]'s punches are captured, before their own offset: 2023-11-14T22:13:20Z.
pub const CAPTURED_FROM_MS: i64 = 1_700_000_000_000;

/// Punch number `n`, valid by the contract (`v1::Punch::check`): seq `n`, student `S{n}` by
/// fingerprint (score 120) on reader `door` (an R503), captured `n` seconds after
/// [`CAPTURED_FROM_MS`] by an NTP-synced clock, with a fresh UUIDv7 event id.
///
/// Change what a test is about with struct update syntax, e.g. a punch for the journal to
/// number: `v1::Punch { seq: 0, ..punch(n) }`.
pub fn punch(n: u64) -> v1::Punch {
    v1::Punch {
        seq: n,
        event_id: Uuid::now_v7(),
        captured_at_ms: CAPTURED_FROM_MS + n as i64 * 1000,
        clock: v1::ClockState {
            ntp_synced: true,
            offset_ms: None,
            boot_id: Uuid::nil(),
            monotonic_ms: n * 1000,
        },
        reader_id: "door".into(),
        reader_kind: "r503".into(),
        credential: v1::CredentialKind::Fingerprint,
        subject: v1::Subject::Student(format!("S{n}")),
        score: Some(120),
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fixture_punch_is_valid() {
        for n in [0, 1, 99_999] {
            super::punch(n).check().expect("valid punch");
        }
    }
}
