//! Ingest's own view of a message: decoded, checked against its topic, and flattened into the
//! values the database layer needs. Wire types stay in `rollcall-protocol`; this module is the
//! only place that reads them, so a protocol change is adapted here.

use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1;
use uuid::Uuid;

/// How the device identified the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectIn {
    /// `students_student.id` as text (a roll number is also accepted).
    Student(String),
    /// Unknown card, keyed hash of its UID.
    UnknownCard([u8; 32]),
    /// Finger not on the roster.
    UnknownFinger,
}

impl SubjectIn {
    /// The subject back from its ledger spelling ([`PunchIn::subject_text`]).
    pub fn from_ledger(text: &str) -> SubjectIn {
        if text == "finger:unknown" {
            return SubjectIn::UnknownFinger;
        }
        if let Some(hash) = text.strip_prefix("card:") {
            let mut h = [0u8; 32];
            if hex::decode_to_slice(hash, &mut h).is_ok() {
                return SubjectIn::UnknownCard(h);
            }
        }
        SubjectIn::Student(text.to_string())
    }
}

/// Card or fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// RFID card: `attendance_record.source = 'rfid'`.
    Card,
    /// Fingerprint: `attendance_record.source = 'biometric'`.
    Fingerprint,
}

impl Credential {
    /// As written in `rollcall.ledger.credential`.
    pub fn as_str(self) -> &'static str {
        match self {
            Credential::Card => "card",
            Credential::Fingerprint => "fingerprint",
        }
    }
    /// `attendance_record.source`.
    pub fn record_source(self) -> &'static str {
        match self {
            Credential::Card => "rfid",
            Credential::Fingerprint => "biometric",
        }
    }
}

/// One punch as ingest handles it.
#[derive(Debug, Clone, PartialEq)]
pub struct PunchIn {
    /// Journal seq (from 1 per epoch).
    pub seq: u64,
    /// UUIDv7 from the device.
    pub event_id: Uuid,
    /// Capture time by the device's clock, UTC ms.
    pub captured_at_ms: i64,
    /// Whether the device clock was NTP-synced.
    pub ntp_synced: bool,
    /// Device clock offset from true time, when known (device - true).
    pub offset_ms: Option<i64>,
    /// Boot id: monotonic times compare only within one boot (clock correction).
    pub boot_id: Uuid,
    /// Milliseconds since boot (CLOCK_BOOTTIME) at capture: with `boot_id`, corrects a wrong
    /// wall clock from a later heartbeat.
    pub monotonic_ms: u64,
    /// The reader's id in the device's config (e.g. `door-card`).
    pub reader_id: String,
    /// The reader's family (e.g. `rdm6300`, `r503`), as stored in the ledger.
    pub reader_kind: String,
    /// Card or fingerprint.
    pub credential: Credential,
    /// The student matched on the device, or an unknown card (hashed) or finger.
    pub subject: SubjectIn,
    /// Match score.
    pub score: Option<u16>,
    /// `v1::flags` bits (simulated, clock unsynced).
    pub flags: u32,
    /// Which rule of the contract a value breaks (`v1::Punch::check`); its text fields are then
    /// stored escaped.
    pub problem: Option<String>,
}

impl PunchIn {
    /// Capture time corrected by the known clock offset (an unsynced clock with a known offset
    /// is corrected; a synced clock is trusted).
    pub fn effective_ms(&self) -> i64 {
        match (self.ntp_synced, self.offset_ms) {
            (false, Some(off)) => self.captured_at_ms.saturating_sub(off),
            _ => self.captured_at_ms,
        }
    }

    /// Subject as stored in the ledger: the student key, `card:<hex>` or `finger:unknown`.
    pub fn subject_text(&self) -> String {
        match &self.subject {
            SubjectIn::Student(s) => s.clone(),
            SubjectIn::UnknownCard(h) => format!("card:{}", hex::encode(h)),
            SubjectIn::UnknownFinger => "finger:unknown".into(),
        }
    }
}

/// A punch batch from one device and epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchIn {
    /// Site from the topic (the ack goes back under it).
    pub site: String,
    /// Device id (topic and payload agree).
    pub device_id: String,
    /// The device journal's epoch: seqs restart only with a new one.
    pub epoch: u64,
    /// Punches, strictly increasing seq.
    pub punches: Vec<PunchIn>,
    /// Set when PostgreSQL refused this message's rows once: its punches are then stored as
    /// `database_rejected`, text escaped, so the message still reaches a final state.
    pub database_refused: Option<String>,
}

impl BatchIn {
    /// Highest seq in the batch (0 when empty).
    pub fn last_seq(&self) -> u64 {
        self.punches.iter().map(|p| p.seq).max().unwrap_or(0)
    }
}

/// A device's status message (`v1::Status`) as ingest keeps it: health of the device row.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusIn {
    /// The reporting device; must agree with the topic's device level.
    pub device_id: String,
    /// Firmware / daemon version.
    pub version: String,
    /// Online flag (false in the last will).
    pub online: bool,
    /// Whole status as JSON for `rollcall.device_status`.
    pub json: serde_json::Value,
    /// Whether any reader reports unhealthy.
    pub readers_unhealthy: bool,
    /// The device's boot id when it sent this (clock anchor).
    pub boot_id: Uuid,
    /// Its CLOCK_BOOTTIME in ms when it sent this (clock anchor).
    pub monotonic_ms: u64,
}

/// What a message turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Punches to write.
    Punches(BatchIn),
    /// A status message: updates the device row, and may release held punches of its boot.
    Status(StatusIn),
    /// Refused: goes to the dead-letter table.
    Dead(DeadLetter),
}

/// A message as received, with what it decoded to.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The topic it arrived on; its device level must agree with the payload's.
    pub topic: String,
    /// Raw payload (kept for dead letters).
    pub payload: bytes::Bytes,
    /// What it is.
    pub msg: Message,
}

impl Envelope {
    /// Decodes a raw message.
    pub fn new(topic: &str, payload: bytes::Bytes) -> Self {
        Envelope {
            topic: topic.to_string(),
            msg: classify(topic, &payload),
            payload,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// Topic is not a Rollcall v1 device topic ingest consumes.
    BadTopic,
    /// Larger than the protocol limit.
    Oversized,
    /// CBOR did not decode or the message is invalid.
    Undecodable,
    /// Topic device and payload device differ.
    DeviceMismatch,
    /// PostgreSQL refused the message's rows (not a transient failure).
    DatabaseRejected,
}

impl DeadReason {
    /// Stable spelling (table column and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::BadTopic => "bad_topic",
            DeadReason::Oversized => "oversized",
            DeadReason::Undecodable => "undecodable",
            DeadReason::DeviceMismatch => "device_mismatch",
            DeadReason::DatabaseRejected => "database_rejected",
        }
    }
}

/// A message that cannot be processed (undecodable, invalid, from a foreign device): kept
/// once in `rollcall.dead_letter` with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Topic it came on.
    pub topic: String,
    /// Device, when known.
    pub device_id: Option<String>,
    /// The rule it broke (`rollcall.dead_letter.reason`).
    pub reason: DeadReason,
    /// What exactly was wrong, for whoever reads the dead letter.
    pub detail: String,
    /// The payload (truncated to 64 KiB).
    pub payload: Vec<u8>,
    /// Its size as received, before the payload was truncated.
    pub size: usize,
}

const KEEP_PAYLOAD: usize = 64 * 1024;

fn dead(
    topic: &str,
    device: Option<&str>,
    reason: DeadReason,
    detail: String,
    payload: &[u8],
) -> Message {
    Message::Dead(DeadLetter {
        topic: topic.chars().take(512).collect(),
        device_id: device.map(str::to_owned),
        reason,
        detail,
        payload: payload[..payload.len().min(KEEP_PAYLOAD)].to_vec(),
        size: payload.len(),
    })
}

/// Decodes and checks one MQTT message. Pure: never fails, refusals are values.
pub fn classify(topic_name: &str, payload: &[u8]) -> Message {
    let t = match topic::parse(topic_name) {
        Ok(t) if t.kind != Kind::Ack => t,
        _ => {
            return dead(
                topic_name,
                None,
                DeadReason::BadTopic,
                "not a device punches/status topic".into(),
                payload,
            );
        }
    };
    let refuse =
        |reason, detail: String| dead(topic_name, Some(t.device_id), reason, detail, payload);
    let mismatch = |payload_device: &str| {
        let detail = format!(
            "topic device {:?} but payload device {:?}",
            t.device_id, payload_device
        );
        refuse(DeadReason::DeviceMismatch, detail)
    };
    if payload.len() > v1::MAX_MESSAGE_BYTES {
        let detail = format!("{} bytes > {}", payload.len(), v1::MAX_MESSAGE_BYTES);
        return refuse(DeadReason::Oversized, detail);
    }
    match t.kind {
        Kind::Punches => match v1::PunchBatch::decode(payload) {
            Err(e) => refuse(DeadReason::Undecodable, e.to_string()),
            Ok(b) if b.device_id != t.device_id => mismatch(&b.device_id),
            Ok(b) if b.punches.iter().any(|p| p.seq > i64::MAX as u64) => refuse(
                DeadReason::Undecodable,
                "seq above 2^63-1 cannot be stored".to_string(),
            ),
            Ok(b) => Message::Punches(BatchIn {
                site: t.site.to_owned(),
                device_id: b.device_id,
                epoch: b.epoch,
                punches: b.punches.into_iter().map(punch_in).collect(),
                database_refused: None,
            }),
        },
        Kind::Status => match v1::Status::decode(payload) {
            Err(e) => refuse(DeadReason::Undecodable, e.to_string()),
            Ok(s) if s.device_id != t.device_id => mismatch(&s.device_id),
            Ok(s) => Message::Status(status_in(s)),
        },
        Kind::Ack | Kind::Roster | Kind::RosterAck | Kind::Enrol | Kind::Command => {
            not_consumed(topic_name, payload)
        }
    }
}

/// The punch consumer subscribes to punches and status only; anything else reaching it (a
/// misconfigured subscription) is a dead letter, not a crash.
fn not_consumed(topic_name: &str, payload: &[u8]) -> Message {
    dead(
        topic_name,
        None,
        DeadReason::BadTopic,
        "only punches and status topics are consumed here".into(),
        payload,
    )
}

fn punch_in(p: v1::Punch) -> PunchIn {
    let problem = p.check().err();
    let mut p = p;
    if problem.is_some() {
        p.reader_id = escaped(&p.reader_id);
        p.reader_kind = escaped(&p.reader_kind);
        if let v1::Subject::Student(s) = &p.subject {
            p.subject = v1::Subject::Student(escaped(s));
        }
    }
    PunchIn {
        problem,
        seq: p.seq,
        event_id: p.event_id,
        captured_at_ms: p.captured_at_ms,
        ntp_synced: p.clock.ntp_synced,
        offset_ms: p.clock.offset_ms,
        boot_id: p.clock.boot_id,
        monotonic_ms: p.clock.monotonic_ms,
        reader_id: p.reader_id,
        reader_kind: p.reader_kind,
        credential: match p.credential {
            v1::CredentialKind::Card => Credential::Card,
            v1::CredentialKind::Fingerprint => Credential::Fingerprint,
        },
        subject: match p.subject {
            v1::Subject::Student(s) => SubjectIn::Student(s),
            v1::Subject::UnknownCard(h) => SubjectIn::UnknownCard(h),
            v1::Subject::UnknownFinger => SubjectIn::UnknownFinger,
        },
        score: p.score,
        flags: p.flags,
    }
}

/// Text that is safe in any column and terminal: control characters escaped (`\0`,
/// `\u{1b}`), at most 200 characters.
pub fn escaped(s: &str) -> String {
    s.chars().flat_map(char::escape_debug).take(200).collect()
}

impl BatchIn {
    /// This batch as stored after PostgreSQL refused it once: every text field escaped, every
    /// punch to be stored as `database_rejected` with `why`.
    pub fn database_refused(&self, why: String) -> BatchIn {
        let mut b = self.clone();
        for p in &mut b.punches {
            p.reader_id = escaped(&p.reader_id);
            p.reader_kind = escaped(&p.reader_kind);
            if let SubjectIn::Student(s) = &p.subject {
                p.subject = SubjectIn::Student(escaped(s));
            }
        }
        b.database_refused = Some(escaped(&why));
        b
    }
}

fn status_in(s: v1::Status) -> StatusIn {
    let readers: Vec<serde_json::Value> = s
        .readers
        .iter()
        .map(|r| serde_json::json!({"id": r.id, "kind": r.kind, "healthy": r.healthy, "detail": r.detail}))
        .collect();
    let json = serde_json::json!({
        "version": s.version, "online": s.online, "sent_at_ms": s.sent_at_ms, "uptime_s": s.uptime_s,
        "epoch": s.epoch.to_string(), "journal_depth": s.journal_depth,
        "oldest_unacked_age_s": s.oldest_unacked_age_s, "last_acked_seq": s.last_acked_seq,
        "readers": readers, "clock": {"ntp_synced": s.clock.ntp_synced, "offset_ms": s.clock.offset_ms},
        "free_disk_bytes": s.free_disk_bytes,
    });
    StatusIn {
        readers_unhealthy: s.readers.iter().any(|r| !r.healthy),
        boot_id: s.clock.boot_id,
        monotonic_ms: s.clock.monotonic_ms,
        device_id: s.device_id,
        version: s.version,
        online: s.online,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(device: &str) -> v1::PunchBatch {
        v1::PunchBatch {
            device_id: device.into(),
            epoch: 7,
            punches: vec![v1::Punch {
                seq: 1,
                event_id: Uuid::now_v7(),
                captured_at_ms: 1_700_000_000_000,
                clock: v1::ClockState {
                    ntp_synced: true,
                    offset_ms: None,
                    boot_id: Uuid::nil(),
                    monotonic_ms: 5,
                },
                reader_id: "r1".into(),
                reader_kind: "sim".into(),
                credential: v1::CredentialKind::Card,
                subject: v1::Subject::Student("S1".into()),
                score: None,
                flags: 0,
            }],
        }
    }

    #[test]
    fn punches_on_their_own_topic_decode() {
        let m = classify("rollcall/v1/north/dev-1/punches", &batch("dev-1").encode());
        let Message::Punches(b) = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            (
                b.site.as_str(),
                b.device_id.as_str(),
                b.epoch,
                b.punches.len()
            ),
            ("north", "dev-1", 7, 1)
        );
    }

    #[test]
    fn device_publishing_as_another_is_dead_lettered() {
        let m = classify("rollcall/v1/north/dev-1/punches", &batch("dev-2").encode());
        assert!(
            matches!(
                m,
                Message::Dead(DeadLetter {
                    reason: DeadReason::DeviceMismatch,
                    ..
                })
            ),
            "{m:?}"
        );
    }

    #[test]
    fn garbage_and_oversized_and_foreign_topics_are_dead_lettered() {
        let reason = |t: &str, p: &[u8]| match classify(t, p) {
            Message::Dead(d) => d.reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            reason("rollcall/v1/n/d/punches", b"\xff\x00garbage"),
            DeadReason::Undecodable
        );
        assert_eq!(
            reason(
                "rollcall/v1/n/d/punches",
                &vec![0u8; v1::MAX_MESSAGE_BYTES + 1]
            ),
            DeadReason::Oversized
        );
        assert_eq!(reason("other/topic", b""), DeadReason::BadTopic);
        assert_eq!(reason("rollcall/v1/n/d/ack", b""), DeadReason::BadTopic);
    }

    #[test]
    fn subjects_survive_their_ledger_spelling() {
        let mut p = punch_in(batch("d").punches.remove(0));
        for s in [
            SubjectIn::Student("2024CS001".into()),
            SubjectIn::UnknownCard([0xA5; 32]),
            SubjectIn::UnknownFinger,
        ] {
            p.subject = s.clone();
            assert_eq!(SubjectIn::from_ledger(&p.subject_text()), s);
        }
    }

    #[test]
    fn unsynced_clock_with_known_offset_is_corrected() {
        let mut p = punch_in(batch("d").punches.remove(0));
        p.ntp_synced = false;
        p.offset_ms = Some(60_000);
        assert_eq!(p.effective_ms(), 1_700_000_000_000 - 60_000);
    }
}
