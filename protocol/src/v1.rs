//! Version 1 of the gateway <-> centre messages.
//!
//! # Encoding
//!
//! CBOR (RFC 8949) through minicbor. Every struct is a CBOR *map* keyed by small unsigned
//! integers (the `#[n(..)]` indices below), so a field can be added later under a new index and
//! old readers skip it; an index is never reused or renumbered. Enums are encoded as
//! `[variant index, fields...]`. UUIDs and hashes are CBOR byte strings.
//!
//! ```text
//! PunchBatch  {0: device_id (text), 1: epoch (uint), 2: [Punch, ...]}
//! Punch       {0: seq, 1: event_id (bytes 16), 2: captured_at_ms (int, UTC unix ms),
//!              3: ClockState, 4: reader_id, 5: reader_kind, 6: CredentialKind,
//!              7: Subject, 8?: score (uint), 9: flags (uint)}
//! ClockState  {0: ntp_synced (bool), 1?: offset_ms (int), 2: boot_id (bytes 16),
//!              3: monotonic_ms (uint)}
//! Ack         {0: device_id, 1: epoch, 2: up_to_seq, 3?: [Refusal, ...]}
//! Refusal     {0: reason (text), 1: first_seq, 2: last_seq, 3: count, 4: detail (text)}
//! Status      {0: device_id, 1: version, 2: online, 3: sent_at_ms, 4: uptime_s, 5: epoch,
//!              6: journal_depth, 7?: oldest_unacked_age_s, 8?: last_acked_seq,
//!              9: [ReaderStatus], 10: ClockState, 11?: free_disk_bytes, 12?: last_refusal (Refusal)}
//! ```
//!
//! Rosters, roster acks, enrolments and commands are in [`credentials`] (re-exported here).
//!
//! Fixtures of exact bytes live in `protocol/tests/fixtures/` and are checked by the tests, so an
//! accidental change of the wire format fails the build.

use minicbor::{Decode, Encode};
use uuid::Uuid;

pub mod credentials;
pub use credentials::{
    Action, CardCredential, Command, Enrolment, FingerCredential, RosterAck, RosterFailure,
    RosterStudent, RosterUpdate, Secret,
};

/// Largest message either side accepts, in bytes. A full batch of [`MAX_BATCH_PUNCHES`] punches
/// with long ids stays well below it.
pub const MAX_MESSAGE_BYTES: usize = 512 * 1024;
/// Most punches in one batch.
pub const MAX_BATCH_PUNCHES: usize = 2000;
/// Longest device, site or reader id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Latest capture time the contract allows: 9999-12-31T23:59:59.999Z, in Unix ms. Anything
/// later (or before 1970) is a broken clock, refused per punch rather than stored.
pub const MAX_CAPTURED_AT_MS: i64 = 253_402_300_799_999;
/// Largest clock offset a device may report, in ms (about 100 years either way): a clock reset
/// to 1970 is still correctable, while an absurd value cannot overflow the correction.
pub const MAX_CLOCK_OFFSET_MS: i64 = 100 * 366 * 24 * 3600 * 1000;
/// Most refusal entries in one [`Ack`].
pub const MAX_REFUSALS: usize = 16;
/// Longest refusal reason code or detail, in bytes.
pub const MAX_REFUSAL_TEXT: usize = 512;

/// Punch flags (bit set in [`Punch::flags`]).
pub mod flags {
    /// The punch came from a simulated reader (demo or test), not from hardware.
    pub const SIMULATED: u32 = 1 << 0;
    /// The device's clock was not NTP-synchronised when the punch was captured.
    pub const CLOCK_UNSYNCED: u32 = 1 << 1;
}

/// A batch of punches from one device, all of one journal epoch, in strictly increasing seq.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct PunchBatch {
    /// The publishing device (`attendance_biometric_device.device_id`).
    #[n(0)]
    pub device_id: String,
    /// The journal's epoch: random, fixed for the life of one journal file.
    #[n(1)]
    pub epoch: u64,
    /// The punches, strictly increasing in seq.
    #[n(2)]
    pub punches: Vec<Punch>,
}

/// One accepted punch.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Punch {
    /// Sequence number assigned by the journal: strictly increasing per (device, epoch), from 1.
    #[n(0)]
    pub seq: u64,
    /// UUIDv7 for humans and other systems (stored as `vendor_event_id`).
    #[n(1)]
    #[cbor(with = "uuid_bytes")]
    pub event_id: Uuid,
    /// Capture time, UTC, milliseconds since the Unix epoch, by the device's clock.
    #[n(2)]
    pub captured_at_ms: i64,
    /// The state of the device's clock at capture, so a wrong clock can be corrected centrally.
    #[n(3)]
    pub clock: ClockState,
    /// The reader's id in the device's config.
    #[n(4)]
    pub reader_id: String,
    /// The reader's family, e.g. `r503`, `rdm6300`, `simulated-card`.
    #[n(5)]
    pub reader_kind: String,
    /// Card or fingerprint.
    #[n(6)]
    pub credential: CredentialKind,
    /// Who punched, as far as the device could tell.
    #[n(7)]
    pub subject: Subject,
    /// Fingerprint match score, if any.
    #[n(8)]
    pub score: Option<u16>,
    /// Bit set of [`flags`].
    #[n(9)]
    pub flags: u32,
}

/// The device clock's state when something was stamped.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ClockState {
    /// Whether the kernel reported the clock synchronised (NTP) at that moment.
    #[n(0)]
    pub ntp_synced: bool,
    /// Estimated offset from true time in ms, when known.
    #[n(1)]
    pub offset_ms: Option<i64>,
    /// Linux boot id: monotonic times are comparable only within one boot.
    #[n(2)]
    #[cbor(with = "uuid_bytes")]
    pub boot_id: Uuid,
    /// CLOCK_BOOTTIME in ms at that moment.
    #[n(3)]
    pub monotonic_ms: u64,
}

/// The kind of credential presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
#[cbor(index_only)]
pub enum CredentialKind {
    /// RFID / NFC card or fob.
    #[n(0)]
    Card,
    /// A fingerprint, matched on the module or by the gateway.
    #[n(1)]
    Fingerprint,
}

/// Who the device decided punched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Subject {
    /// A student on the room's roster, named the way the roster names them. The one rule, for
    /// roster files, this message and the centre alike: the text is either the student's
    /// CampsHub360 `students_student.id` (a UUID, hyphenated, lower or upper case:
    /// `0191f7a2-5c4e-7d3a-9b1c-2f3e4d5a6b7c`) or their `students_student.roll_number`
    /// (unique, at most 20 characters, so never mistaken for an id: `2024CS001`). The centre
    /// resolves both to the same student; text that names no student is stored as an unknown
    /// credential. It must pass [`valid_subject`].
    #[n(0)]
    Student(#[n(0)] String),
    /// A card not on the roster: a keyed hash (BLAKE3, device-held key) of its UID, so the UID
    /// itself never leaves the device while repeated taps of one card still correlate.
    #[n(1)]
    UnknownCard(
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        [u8; 32],
    ),
    /// A finger that matched nothing enrolled.
    #[n(2)]
    UnknownFinger,
}

/// The centre's application ack: every punch of `device_id` in `epoch` with
/// `seq <= up_to_seq` is committed to the database and may be deleted from the device.
///
/// Committed does not mean counted: punches the centre refused (an unregistered or disabled
/// device, a value out of range) are kept in its ledger as `rejected` with the reason, acked
/// like any other, and listed in `refusals` so the device can tell a person. A refused punch is
/// final: re-sending it would change nothing, so the device deletes it like any acked punch.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Ack {
    /// The device being acked.
    #[n(0)]
    pub device_id: String,
    /// The journal epoch the seqs belong to.
    #[n(1)]
    pub epoch: u64,
    /// Highest contiguous seq committed.
    #[n(2)]
    pub up_to_seq: u64,
    /// Punches of this commit that were stored but refused, grouped by reason (absent when
    /// none; older gateways skip the key).
    #[n(3)]
    pub refusals: Option<Vec<Refusal>>,
}

/// Punches the centre stored as `rejected`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Refusal {
    /// Stable reason code, e.g. `unknown_device`, `disabled_device`, `invalid_punch`,
    /// `database_rejected`, `simulated`. Text, so a newer centre's codes still decode.
    #[n(0)]
    pub reason: String,
    /// Lowest refused seq in this commit.
    #[n(1)]
    pub first_seq: u64,
    /// Highest refused seq in this commit.
    #[n(2)]
    pub last_seq: u64,
    /// How many punches in `first_seq..=last_seq` were refused for this reason.
    #[n(3)]
    pub count: u64,
    /// What a person should do, e.g. "register the device with `rollcall device add`".
    #[n(4)]
    pub detail: String,
}

/// The device's heartbeat, published retained on its status topic (and, with `online: false`,
/// as its MQTT last will).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Status {
    /// The reporting device; the centre checks it against the topic's device level.
    #[n(0)]
    pub device_id: String,
    /// rollcalld's version.
    #[n(1)]
    pub version: String,
    /// False only in the last will: the device vanished without saying goodbye.
    #[n(2)]
    pub online: bool,
    /// When this status was produced (UTC unix ms, device clock).
    #[n(3)]
    pub sent_at_ms: i64,
    /// Seconds since rollcalld started.
    #[n(4)]
    pub uptime_s: u64,
    /// Current journal epoch.
    #[n(5)]
    pub epoch: u64,
    /// Punches held in the journal, not yet acked.
    #[n(6)]
    pub journal_depth: u64,
    /// Age of the oldest unacked punch, in seconds.
    #[n(7)]
    pub oldest_unacked_age_s: Option<u64>,
    /// Highest seq the centre has acked in this epoch.
    #[n(8)]
    pub last_acked_seq: Option<u64>,
    /// One entry per configured reader.
    #[n(9)]
    pub readers: Vec<ReaderStatus>,
    /// The clock's state now.
    #[n(10)]
    pub clock: ClockState,
    /// Free bytes on the journal's file system.
    #[n(11)]
    pub free_disk_bytes: Option<u64>,
    /// The latest refusal the centre sent this device (absent when none since it started), so
    /// whoever looks at the device sees that its punches are being refused and why.
    #[n(12)]
    pub last_refusal: Option<Refusal>,
}

/// Health of one reader in a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct ReaderStatus {
    /// The reader's id in the device's config.
    #[n(0)]
    pub id: String,
    /// The reader's family.
    #[n(1)]
    pub kind: String,
    /// Whether it currently answers.
    #[n(2)]
    pub healthy: bool,
    /// What is wrong, for a person, when not healthy.
    #[n(3)]
    pub detail: String,
}

/// Why bytes could not be turned into a valid message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// The most this message type may take.
        max: usize,
    },
    /// Not valid CBOR for this message type.
    #[error("malformed CBOR: {0}")]
    Cbor(#[from] minicbor::decode::Error),
    /// Bytes left over after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// Well-formed, but breaks a rule of the contract.
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Checks a device, site or reader id: 1..=64 bytes of `[A-Za-z0-9._-]`, so it is safe in an
/// MQTT topic level, a file name and a log line.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn decode_bounded<'b, T: Decode<'b, ()>>(bytes: &'b [u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let mut d = minicbor::Decoder::new(bytes);
    let value = d.decode()?;
    let rest = bytes.len() - d.position();
    if rest != 0 {
        return Err(DecodeError::Trailing(rest));
    }
    Ok(value)
}

fn encode_vec<T: Encode<()>>(value: &T) -> Vec<u8> {
    // Writing into a Vec cannot fail, and no v1 type emits a custom encode error.
    minicbor::to_vec(value).expect("v1 messages always encode")
}

fn invalid(msg: impl Into<String>) -> DecodeError {
    DecodeError::Invalid(msg.into())
}

impl PunchBatch {
    /// CBOR bytes of this batch.
    pub fn encode(&self) -> Vec<u8> {
        encode_vec(self)
    }

    /// Decodes and validates a batch.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let batch: Self = decode_bounded(bytes)?;
        batch.validate()?;
        Ok(batch)
    }

    /// The contract's rules for the batch as a whole: a valid device id,
    /// 1..=[`MAX_BATCH_PUNCHES`] punches, seqs from 1 and strictly increasing. Each punch's own
    /// values are checked by [`Punch::check`], so one bad punch is refused alone while the
    /// others of its batch are recorded.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if !valid_id(&self.device_id) {
            return Err(invalid(format!(
                "device_id {:?} is not a valid id",
                self.device_id
            )));
        }
        if self.punches.is_empty() || self.punches.len() > MAX_BATCH_PUNCHES {
            return Err(invalid(format!(
                "batch has {} punches; 1..={MAX_BATCH_PUNCHES} allowed",
                self.punches.len()
            )));
        }
        let mut prev = 0u64;
        for p in &self.punches {
            if p.seq <= prev {
                return Err(invalid(format!(
                    "seq {} follows {prev}: seqs must start at 1 and increase",
                    p.seq
                )));
            }
            prev = p.seq;
        }
        Ok(())
    }

    /// The highest seq in the batch (batches are never empty once validated).
    pub fn last_seq(&self) -> Option<u64> {
        self.punches.last().map(|p| p.seq)
    }
}

impl Punch {
    /// The contract's rules for one punch's values: a valid reader id, a short reader kind, a
    /// student id that is safe to store and show ([`valid_subject`]), a capture time between 1970
    /// and 9999, and a clock offset within [`MAX_CLOCK_OFFSET_MS`]. The error says which rule.
    pub fn check(&self) -> Result<(), String> {
        if !valid_id(&self.reader_id) {
            return Err(format!("reader_id {:?} is not a valid id", self.reader_id));
        }
        if self.reader_kind.is_empty() || !valid_id(&self.reader_kind) {
            return Err(format!(
                "reader_kind {:?} is not a valid id",
                self.reader_kind
            ));
        }
        if let Subject::Student(s) = &self.subject
            && !valid_subject(s)
        {
            return Err(format!(
                "student id {:?} must be 1..={MAX_ID_LEN} bytes of printable text, not starting \
                 with card: or finger:",
                s
            ));
        }
        if !(0..=MAX_CAPTURED_AT_MS).contains(&self.captured_at_ms) {
            return Err(format!(
                "captured_at_ms {} is outside 1970..9999",
                self.captured_at_ms
            ));
        }
        if let Some(off) = self.clock.offset_ms
            && !(-MAX_CLOCK_OFFSET_MS..=MAX_CLOCK_OFFSET_MS).contains(&off)
        {
            return Err(format!(
                "clock offset_ms {off} is beyond {MAX_CLOCK_OFFSET_MS}"
            ));
        }
        Ok(())
    }
}

/// Checks a student id as a roster may hold it and a punch may carry it: 1..=64 bytes, no
/// control characters (NUL, newlines, escape sequences) and no leading or trailing space, so it
/// is safe in a database column, a log line and a terminal; and not starting with `card:` or
/// `finger:`, the spellings the centre's ledger gives unknown cards and fingers, so a student id
/// never reads back as another kind of subject.
pub fn valid_subject(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.trim() == id
        && !id.chars().any(char::is_control)
        && !RESERVED_SUBJECT_PREFIXES.iter().any(|p| id.starts_with(p))
}

/// Prefixes no student id may start with: the centre's ledger spells an unknown card
/// `card:<hash>` and an unknown finger `finger:unknown`.
pub const RESERVED_SUBJECT_PREFIXES: [&str; 2] = ["card:", "finger:"];

/// Encodes a batch from punches that are already CBOR-encoded (as the journal stores them),
/// without decoding them: the bytes are exactly those of [`PunchBatch::encode`] for the same
/// punches. This keeps draining a large backlog cheap.
pub fn encode_batch_raw<B: AsRef<[u8]>>(device_id: &str, epoch: u64, punches: &[B]) -> Vec<u8> {
    let body: usize = punches.iter().map(|p| p.as_ref().len()).sum();
    let mut e = minicbor::Encoder::new(Vec::with_capacity(body + device_id.len() + 32));
    // Writing into a Vec cannot fail.
    let header = (|| {
        e.map(3)?
            .u8(0)?
            .str(device_id)?
            .u8(1)?
            .u64(epoch)?
            .u8(2)?
            .array(punches.len() as u64)?;
        Ok::<_, minicbor::encode::Error<core::convert::Infallible>>(())
    })();
    header.expect("writing into a Vec cannot fail");
    let mut out = e.into_writer();
    for p in punches {
        out.extend_from_slice(p.as_ref());
    }
    out
}

impl Ack {
    /// CBOR bytes of this ack.
    pub fn encode(&self) -> Vec<u8> {
        encode_vec(self)
    }

    /// Decodes and validates an ack.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let ack: Self = decode_bounded(bytes)?;
        if !valid_id(&ack.device_id) {
            return Err(invalid(format!(
                "device_id {:?} is not a valid id",
                ack.device_id
            )));
        }
        let refusals = ack.refusals.as_deref().unwrap_or_default();
        if refusals.len() > MAX_REFUSALS {
            return Err(invalid(format!(
                "{} refusals; at most {MAX_REFUSALS} allowed",
                refusals.len()
            )));
        }
        for r in refusals {
            if !valid_id(&r.reason) || r.detail.len() > MAX_REFUSAL_TEXT {
                return Err(invalid(format!(
                    "refusal reason {:?} or its detail is not valid",
                    r.reason
                )));
            }
            if r.first_seq == 0
                || r.first_seq > r.last_seq
                || r.last_seq > ack.up_to_seq
                || r.count == 0
                || r.count > r.last_seq - r.first_seq + 1
            {
                return Err(invalid(format!(
                    "refusal of seqs {}..={} (count {}) does not fit an ack up to {}",
                    r.first_seq, r.last_seq, r.count, ack.up_to_seq
                )));
            }
        }
        Ok(ack)
    }
}

impl Status {
    /// CBOR bytes of this status.
    pub fn encode(&self) -> Vec<u8> {
        encode_vec(self)
    }

    /// Decodes and validates a status.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let status: Self = decode_bounded(bytes)?;
        if !valid_id(&status.device_id) {
            return Err(invalid(format!(
                "device_id {:?} is not a valid id",
                status.device_id
            )));
        }
        if status.version.len() > MAX_ID_LEN {
            return Err(invalid("version too long"));
        }
        Ok(status)
    }
}

/// UUIDs as 16-byte CBOR byte strings.
mod uuid_bytes {
    use minicbor::{Decoder, Encoder, decode as dec, encode as enc};
    use uuid::Uuid;

    pub fn encode<C, W: enc::Write>(
        v: &Uuid,
        e: &mut Encoder<W>,
        _ctx: &mut C,
    ) -> Result<(), enc::Error<W::Error>> {
        e.bytes(v.as_bytes())?;
        Ok(())
    }

    pub fn decode<C>(d: &mut Decoder<'_>, _ctx: &mut C) -> Result<Uuid, dec::Error> {
        let b = d.bytes()?;
        Uuid::from_slice(b).map_err(|_| dec::Error::message("uuid must be 16 bytes"))
    }
}
