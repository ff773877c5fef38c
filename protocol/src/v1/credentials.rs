//! Credentials between the centre and the gateways (issue 9): room rosters, their
//! acknowledgements, enrolments and commands. Same encoding rules as the rest of v1 (maps keyed
//! by small integers, new indices only).
//!
//! ```text
//! RosterUpdate  {0: device_id, 1: version, 2?: base_version, 3: part, 4: parts,
//!                5: [RosterStudent], 6: [removed student]}                centre -> device
//! RosterStudent {0: student, 1: [CardCredential], 2: [FingerCredential]}
//! CardCredential   {0: id (bytes 16), 1: uid (bytes)}
//! FingerCredential {0: id (bytes 16), 1: format (text), 2: data (bytes)}
//! RosterAck     {0: device_id, 1: version, 2: want_snapshot, 3: templates_loaded,
//!                4?: capacity, 5: [RosterFailure], 6: [accepts (text)]}      device -> centre
//! RosterFailure {0: credential id (bytes 16), 1: reason (text)}
//! Enrolment     {0: device_id, 1: enrolment_id (bytes 16), 2: student, 3: CredentialKind,
//!                4: format, 5: sensor, 6: data (bytes), 7?: quality, 8: captured_at_ms,
//!                9: reader_id, 10: operator}                                device -> centre
//! Command       {0: device_id, 1: command_id (bytes 16), 2: Action}          centre -> device
//! Action        [0, [student, reader_id, CredentialKind]]  enrol a student at a reader
//!               [1, []]                                   resync: ask for a full snapshot
//!               [2, [enrolment_id, accepted, detail]]     the centre's verdict on an enrolment
//! ```
//!
//! # Versions and parts
//!
//! A device's roster version only grows. A snapshot (`base_version` absent) replaces the whole
//! roster; a delta applies on top of exactly `base_version`: each listed student's credentials
//! replace theirs, and `removed` students go. An update too large for one message is split into
//! `parts` messages with the same `(base_version, version)`; the device applies it only when it
//! holds every part, all at once, and then acknowledges `version`.

use minicbor::{Decode, Encode};
use uuid::Uuid;

use super::{
    CredentialKind, DecodeError, MAX_ID_LEN, decode_bounded, encode_vec, invalid, uuid_bytes,
    valid_id, valid_subject,
};

/// Template format: the EF01 module's character file (R30x 512 bytes, R503 1536 bytes), as
/// UpChar gives it and DownChar takes it.
pub const FORMAT_EF01: &str = "ef01";
/// Template format: an ISO/IEC 19794-2:2005 finger minutiae record, matched in software.
pub const FORMAT_ISO_19794_2: &str = "iso19794-2";
/// Format of a card credential (the UID as the reader reports it).
pub const FORMAT_CARD: &str = "card";

/// Largest fingerprint template carried, in bytes (an ISO record of 255 minutiae is under 2 KiB,
/// an R503 character file 1.5 KiB).
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// Longest card UID, in bytes (ISO 14443 UIDs are 4, 7 or 10; EM4100 5; Wiegand up to 8).
pub const MAX_CARD_UID: usize = 32;
/// Most parts one roster update may be split into.
pub const MAX_ROSTER_PARTS: u32 = 10_000;
/// Most failures one roster ack lists (the rest are counted in the centre's logs of the device).
pub const MAX_ROSTER_FAILURES: usize = 64;

/// Credential bytes (a card UID, a template): a CBOR byte string that is overwritten when
/// dropped and never printed by `Debug`, so a log line cannot leak it.
#[derive(Clone, PartialEq, Eq, Default, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// How many bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl<C> Encode<C> for Secret {
    fn encode<W: minicbor::encode::Write>(
        &self,
        e: &mut minicbor::Encoder<W>,
        _ctx: &mut C,
    ) -> Result<(), minicbor::encode::Error<W::Error>> {
        e.bytes(&self.0)?;
        Ok(())
    }
}

impl<'b, C> Decode<'b, C> for Secret {
    fn decode(
        d: &mut minicbor::Decoder<'b>,
        _ctx: &mut C,
    ) -> Result<Self, minicbor::decode::Error> {
        Ok(Self(d.bytes()?.to_vec()))
    }
}

/// A room's roster, or a change to it, for one device.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RosterUpdate {
    /// The device it is for.
    #[n(0)]
    pub device_id: String,
    /// The roster version this update brings the device to.
    #[n(1)]
    pub version: u64,
    /// Absent for a snapshot; for a delta, the version it applies on top of.
    #[n(2)]
    pub base_version: Option<u64>,
    /// This message's place among the update's parts, from 0.
    #[n(3)]
    pub part: u32,
    /// How many messages the update takes (at least 1).
    #[n(4)]
    pub parts: u32,
    /// Students added or changed: each entry is the student's whole set of credentials.
    #[n(5)]
    pub students: Vec<RosterStudent>,
    /// Students no longer on the roster (deltas only).
    #[n(6)]
    pub removed: Vec<String>,
}

/// One student's credentials on a roster.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RosterStudent {
    /// The student, as punches name them (see [`super::Subject::Student`]).
    #[n(0)]
    pub student: String,
    /// Their cards.
    #[n(1)]
    pub cards: Vec<CardCredential>,
    /// Their fingerprint templates, in the formats the device's readers take.
    #[n(2)]
    pub fingers: Vec<FingerCredential>,
}

/// A card on a roster.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct CardCredential {
    /// The centre's credential id.
    #[n(0)]
    #[cbor(with = "uuid_bytes")]
    pub id: Uuid,
    /// The UID as the reader reports it.
    #[n(1)]
    pub uid: Secret,
}

/// A fingerprint template on a roster.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct FingerCredential {
    /// The centre's credential id (the gateway keys module slots by it).
    #[n(0)]
    #[cbor(with = "uuid_bytes")]
    pub id: Uuid,
    /// [`FORMAT_EF01`] or [`FORMAT_ISO_19794_2`] (text, so a newer centre's formats decode).
    #[n(1)]
    pub format: String,
    /// The template.
    #[n(2)]
    pub data: Secret,
}

/// What a device did with its roster: sent after applying an update, and on every (re)connect
/// so the centre knows where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RosterAck {
    /// The device.
    #[n(0)]
    pub device_id: String,
    /// The roster version it holds (0: none).
    #[n(1)]
    pub version: u64,
    /// It wants a full snapshot (its roster is lost or unreadable, or it was told to resync).
    #[n(2)]
    pub want_snapshot: bool,
    /// Fingerprint templates loaded (into its modules and its software matcher).
    #[n(3)]
    pub templates_loaded: u32,
    /// Library capacity of its fingerprint modules, when it has any.
    #[n(4)]
    pub capacity: Option<u32>,
    /// Credentials it could not load, and why.
    #[n(5)]
    pub failures: Vec<RosterFailure>,
    /// Credential formats its readers take ([`FORMAT_CARD`], [`FORMAT_EF01`],
    /// [`FORMAT_ISO_19794_2`]); the centre sends only those.
    #[n(6)]
    pub accepts: Vec<String>,
}

/// A credential a device could not load.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct RosterFailure {
    /// The credential.
    #[n(0)]
    #[cbor(with = "uuid_bytes")]
    pub id: Uuid,
    /// Why, for a person (e.g. "module full: 200 of 200 slots").
    #[n(1)]
    pub reason: String,
}

/// A credential enrolled at a gateway, on its way to the centre (through the gateway's outbox,
/// re-sent until the centre's verdict arrives; the centre applies it once by `enrolment_id`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Enrolment {
    /// The enrolling device.
    #[n(0)]
    pub device_id: String,
    /// Random id, fixed at capture: the centre's credential id, and the key that makes a
    /// re-sent enrolment count once.
    #[n(1)]
    #[cbor(with = "uuid_bytes")]
    pub enrolment_id: Uuid,
    /// The student, as punches name them.
    #[n(2)]
    pub student: String,
    /// Card or fingerprint.
    #[n(3)]
    pub kind: CredentialKind,
    /// [`FORMAT_CARD`], [`FORMAT_EF01`] or [`FORMAT_ISO_19794_2`].
    #[n(4)]
    pub format: String,
    /// The sensor's model (e.g. `r503`), empty for cards.
    #[n(5)]
    pub sensor: String,
    /// The card UID or the template.
    #[n(6)]
    pub data: Secret,
    /// Capture quality, 0..=100, when the sensor reports one.
    #[n(7)]
    pub quality: Option<u8>,
    /// When it was captured (UTC unix ms, device clock).
    #[n(8)]
    pub captured_at_ms: i64,
    /// The reader it was captured at.
    #[n(9)]
    pub reader_id: String,
    /// Who ran the enrolment (the control socket's user, or the centre's command id).
    #[n(10)]
    pub operator: String,
}

/// An instruction from the centre to one device.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Command {
    /// The device.
    #[n(0)]
    pub device_id: String,
    /// Random id, for logs and for answering.
    #[n(1)]
    #[cbor(with = "uuid_bytes")]
    pub command_id: Uuid,
    /// What to do.
    #[n(2)]
    pub action: Action,
}

/// What a [`Command`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Action {
    /// Enrol this student at this reader (a person guides them at the gateway).
    #[n(0)]
    Enrol {
        /// The student.
        #[n(0)]
        student: String,
        /// The reader.
        #[n(1)]
        reader_id: String,
        /// Card or fingerprint.
        #[n(2)]
        kind: CredentialKind,
    },
    /// Forget nothing, but ask for a full snapshot of the roster.
    #[n(1)]
    Resync,
    /// The centre's verdict on an enrolment: stored (`accepted`), or refused with the reason
    /// (no consent, unknown student, card of another student). Final either way: the device
    /// drops the enrolment from its outbox.
    #[n(2)]
    EnrolmentResult {
        /// The enrolment.
        #[n(0)]
        #[cbor(with = "uuid_bytes")]
        enrolment_id: Uuid,
        /// Stored.
        #[n(1)]
        accepted: bool,
        /// Why not, or what happens next.
        #[n(2)]
        detail: String,
    },
}

fn check_device(device_id: &str) -> Result<(), DecodeError> {
    if valid_id(device_id) {
        Ok(())
    } else {
        Err(invalid(format!(
            "device_id {device_id:?} is not a valid id"
        )))
    }
}

fn check_student(student: &str) -> Result<(), DecodeError> {
    if valid_subject(student) {
        Ok(())
    } else {
        Err(invalid(format!(
            "student {student:?} must be 1..={MAX_ID_LEN} bytes of printable text"
        )))
    }
}

fn check_format(format: &str) -> Result<(), DecodeError> {
    if valid_id(format) {
        Ok(())
    } else {
        Err(invalid(format!("format {format:?} is not a valid id")))
    }
}

fn check_template(data: &[u8]) -> Result<(), DecodeError> {
    if data.is_empty() || data.len() > MAX_TEMPLATE_BYTES {
        return Err(invalid(format!(
            "template of {} bytes; 1..={MAX_TEMPLATE_BYTES} allowed",
            data.len()
        )));
    }
    Ok(())
}

fn check_card(uid: &[u8]) -> Result<(), DecodeError> {
    if uid.is_empty() || uid.len() > MAX_CARD_UID {
        return Err(invalid(format!(
            "card uid of {} bytes; 1..={MAX_CARD_UID} allowed",
            uid.len()
        )));
    }
    Ok(())
}

impl RosterUpdate {
    /// CBOR bytes of this update.
    pub fn encode(&self) -> Vec<u8> {
        encode_vec(self)
    }

    /// Decodes and validates an update.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let update: Self = decode_bounded(bytes)?;
        update.validate()?;
        Ok(update)
    }

    /// The contract's rules: a valid device id; `1..=MAX_ROSTER_PARTS` parts and `part` among
    /// them; a delta's base below its version, a snapshot without removals; valid student ids,
    /// card UIDs, formats and template sizes.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_device(&self.device_id)?;
        if self.parts == 0 || self.parts > MAX_ROSTER_PARTS || self.part >= self.parts {
            return Err(invalid(format!(
                "part {} of {}: parts must be 1..={MAX_ROSTER_PARTS} and part below it",
                self.part, self.parts
            )));
        }
        if self.version == 0 {
            return Err(invalid("roster version 0 is reserved for none"));
        }
        match self.base_version {
            Some(base) if base >= self.version => {
                return Err(invalid(format!(
                    "delta from version {base} to {} does not move forward",
                    self.version
                )));
            }
            None if !self.removed.is_empty() => {
                return Err(invalid("a snapshot lists no removals"));
            }
            _ => {}
        }
        for s in &self.students {
            check_student(&s.student)?;
            for c in &s.cards {
                check_card(c.uid.as_bytes())?;
            }
            for f in &s.fingers {
                check_format(&f.format)?;
                check_template(f.data.as_bytes())?;
            }
        }
        for r in &self.removed {
            check_student(r)?;
        }
        Ok(())
    }

    /// Whether this is a full snapshot.
    pub fn is_snapshot(&self) -> bool {
        self.base_version.is_none()
    }
}

impl RosterAck {
    /// CBOR bytes of this ack.
    pub fn encode(&self) -> Vec<u8> {
        encode_vec(self)
    }

    /// Decodes and validates a roster ack.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let ack: Self = decode_bounded(bytes)?;
        check_device(&ack.device_id)?;
        if ack.failures.len() > MAX_ROSTER_FAILURES {
            return Err(invalid(format!(
                "{} failures; at most {MAX_ROSTER_FAILURES} allowed",
                ack.failures.len()
            )));
        }
        if ack
            .failures
            .iter()
            .any(|f| f.reason.len() > super::MAX_REFUSAL_TEXT)
        {
            return Err(invalid("a failure's reason is too long"));
        }
        if ack.accepts.len() > 8 {
            return Err(invalid("more than 8 accepted formats"));
        }
        for f in &ack.accepts {
            check_format(f)?;
        }
        Ok(ack)
    }
}

impl Enrolment {
    /// CBOR bytes of this enrolment.
    pub fn encode(&self) -> Vec<u8> {
        encode_vec(self)
    }

    /// Decodes and validates an enrolment.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let e: Self = decode_bounded(bytes)?;
        e.validate()?;
        Ok(e)
    }

    /// The contract's rules: valid device, reader and student ids, a known pairing of kind and
    /// format, data of a plausible size, an operator name of printable text.
    pub fn validate(&self) -> Result<(), DecodeError> {
        check_device(&self.device_id)?;
        check_student(&self.student)?;
        if !valid_id(&self.reader_id) {
            return Err(invalid(format!(
                "reader_id {:?} is not a valid id",
                self.reader_id
            )));
        }
        if self.operator.len() > MAX_ID_LEN || self.operator.chars().any(char::is_control) {
            return Err(invalid(
                "operator must be at most 64 bytes of printable text",
            ));
        }
        if self.sensor.len() > MAX_ID_LEN || self.sensor.chars().any(char::is_control) {
            return Err(invalid("sensor must be at most 64 bytes of printable text"));
        }
        if self.quality.is_some_and(|q| q > 100) {
            return Err(invalid("quality is 0..=100"));
        }
        match self.kind {
            CredentialKind::Card if self.format == FORMAT_CARD => check_card(self.data.as_bytes()),
            CredentialKind::Fingerprint if self.format != FORMAT_CARD => {
                check_format(&self.format)?;
                check_template(self.data.as_bytes())
            }
            kind => Err(invalid(format!(
                "a {kind:?} credential cannot have format {:?}",
                self.format
            ))),
        }
    }
}

impl Command {
    /// CBOR bytes of this command.
    pub fn encode(&self) -> Vec<u8> {
        encode_vec(self)
    }

    /// Decodes and validates a command.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let c: Self = decode_bounded(bytes)?;
        check_device(&c.device_id)?;
        match &c.action {
            Action::Enrol {
                student, reader_id, ..
            } => {
                check_student(student)?;
                if !valid_id(reader_id) {
                    return Err(invalid(format!(
                        "reader_id {reader_id:?} is not a valid id"
                    )));
                }
            }
            Action::Resync => {}
            Action::EnrolmentResult { detail, .. } => {
                if detail.len() > super::MAX_REFUSAL_TEXT {
                    return Err(invalid("the verdict's detail is too long"));
                }
            }
        }
        Ok(c)
    }
}
