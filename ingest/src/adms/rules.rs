//! The terminal rules as pure functions over plain values (time comes in as an argument): the
//! ledger key of a terminal record, the record as the writer's punch, whether a terminal may
//! upload, its clock offset and jumps, possible silent loss, and the commands' wire text.

use super::parse::{AttRecord, MAX_PIN_LEN};
use crate::admit::Reason;
use crate::decide::DeviceInfo;
use crate::punch::{Credential, PunchIn, SubjectIn};
use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use uuid::Uuid;

/// The ledger epoch of every terminal record: `"ZKADMS"` then 1. A gateway's journal epoch is
/// a random u64, so the odds that one equals this constant are 2^-64; a terminal and a gateway
/// never share a device id anyway (one `attendance_biometric_device` row each).
pub const ADMS_EPOCH: u64 = 0x5A4B_4144_4D53_0001;

/// FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
fn fnv64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `event_id` of a terminal's record: a UUIDv8 from its ledger key, so a record stored
/// again after a crash carries the same one.
pub fn event_id(serial: &str, seq: u64) -> Uuid {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&fnv64(serial.as_bytes()).to_be_bytes());
    b[8..].copy_from_slice(&seq.to_be_bytes());
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

/// The `boot_id` of a terminal's punches. Terminals send no monotonic clock, so no heartbeat
/// ever anchors this boot: a punch `held` for its clock stays held for a person to review
/// instead of being moved in time by the centre.
pub fn boot_id(serial: &str) -> Uuid {
    let h = fnv64(serial.as_bytes());
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&h.to_be_bytes());
    b[8..].copy_from_slice(&(!h).to_be_bytes());
    uuid::Builder::from_custom_bytes(b).into_uuid()
}

/// A terminal's wall-clock time as an instant in the campus zone. In the autumn overlap the
/// earlier instant; in the spring gap, the time as if the clock had not moved forward.
pub fn local_instant(tz: chrono_tz::Tz, t: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&t).earliest() {
        Some(x) => Some(x.with_timezone(&Utc)),
        None => tz
            .from_local_datetime(&t.checked_sub_signed(Duration::hours(1))?)
            .earliest()
            .and_then(|x| x.with_timezone(&Utc).checked_add_signed(Duration::hours(1))),
    }
}

/// Card or fingerprint, from the record's verify code: 4 (2 on some models) is a card; a
/// finger (1), a face (15), a password (0, 3) or an unknown code count as `biometric`, the
/// terminal's own kind. The code itself is kept in `reader_kind`.
pub fn credential(verify: Option<i32>) -> Credential {
    match verify {
        Some(2 | 4) => Credential::Card,
        _ => Credential::Fingerprint,
    }
}

/// A terminal record as the writer's punch, under the ledger key `(serial, ADMS_EPOCH, seq)`.
/// `subject` is the student key (`students_student.id` from `rollcall.adms_pin`, else the PIN
/// as a roll number). The clock is marked unsynced with no known offset: the terminal's time
/// is stored as it said (converted from the campus zone) and judged by the writer's rules; a
/// clock far ahead is `held`, never corrected by the centre.
pub fn punch(serial: &str, seq: u64, r: &AttRecord, subject: String, tz: chrono_tz::Tz) -> PunchIn {
    let at = local_instant(tz, r.time);
    let fmt = |v: Option<i32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    PunchIn {
        seq,
        event_id: event_id(serial, seq),
        captured_at_ms: at.map_or(0, |t| t.timestamp_millis()),
        ntp_synced: false,
        offset_ms: None,
        boot_id: boot_id(serial),
        monotonic_ms: 0,
        reader_id: "adms".into(),
        reader_kind: format!("zkteco/verify={}/status={}", fmt(r.verify), fmt(r.status)),
        credential: credential(r.verify),
        subject: SubjectIn::Student(subject),
        score: None,
        flags: 0,
        problem: at
            .is_none()
            .then(|| format!("local time {} does not exist in the campus zone", r.time)),
    }
}

/// Why a terminal may not upload now, if it may not: not registered, or disabled. Its request
/// is then answered so that it keeps its records and sends them again later.
pub fn refusal(device: Option<&DeviceInfo>) -> Option<Reason> {
    match device {
        None => Some(Reason::UnknownDevice),
        Some(d) if !d.enabled => Some(Reason::DisabledDevice),
        Some(_) => None,
    }
}

/// What the centre last measured of a terminal's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// Terminal clock minus true time, in seconds.
    pub offset_s: i64,
    /// When it was measured.
    pub at: DateTime<Utc>,
}

/// Seconds a measured offset may move before it is flagged as a jump.
pub const CLOCK_JUMP_S: i64 = 120;

/// A realtime upload is a clock sample: its newest record was stamped by the terminal a moment
/// before the centre received it, so `newest - received` is the offset (minus the network's
/// delay, seconds at most). `live` says the upload is a realtime push (a few records, the
/// terminal in contact a moment ago); a backlog measures nothing, except that a record stamped
/// after its own receipt proves the clock ahead by at least that much. Returns the new state
/// and, when the offset moved by more than [`CLOCK_JUMP_S`], what to flag.
pub fn clock_sample(
    prev: Option<ClockState>,
    newest: DateTime<Utc>,
    received: DateTime<Utc>,
    live: bool,
) -> (Option<ClockState>, Option<String>) {
    let sample = (newest - received).num_seconds();
    if !live && sample <= CLOCK_JUMP_S {
        return (prev, None);
    }
    let now = ClockState {
        offset_s: sample,
        at: received,
    };
    let alert = prev.and_then(|p| {
        ((sample - p.offset_s).abs() > CLOCK_JUMP_S).then(|| {
            format!(
                "terminal clock jumped: offset {} s at {} became {} s at {} (its records are stored with the \
                 terminal's own time, not corrected: check the terminal's clock and review its punches since)",
                p.offset_s, p.at, sample, received
            )
        })
    });
    (Some(now), alert)
}

/// What a terminal held and the centre had stored from it at its previous heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBaseline {
    /// Records in the terminal's log (its `INFO` count).
    pub on_terminal: u64,
    /// Records of this terminal the centre holds.
    pub stored: u64,
}

/// Possible silent loss, from two heartbeats' counts. A full terminal deletes its oldest
/// records first; a terminal polls after uploading what it has, so at each heartbeat the
/// centre holds its whole log. Between two heartbeats `arrived` records reached the centre;
/// if the terminal now holds no more than those (`on_terminal <= arrived`) while it deleted
/// some (`before + arrived > on_terminal`), it dropped every record it had before, and records
/// it never sent may have gone with them: the only case in which delete-oldest can lose an
/// unsent record. Returns the alert's text.
pub fn silent_loss(prev: LogBaseline, on_terminal: u64, stored: u64) -> Option<String> {
    let arrived = stored.saturating_sub(prev.stored);
    let deleted = (prev.on_terminal + arrived).saturating_sub(on_terminal);
    (deleted > 0 && on_terminal <= arrived && prev.on_terminal > 0).then(|| {
        format!(
            "terminal log overflowed: it held {} records, {arrived} arrived since, it now holds {on_terminal} \
             ({deleted} deleted, all it had before): records captured while the centre was unreachable may \
             have been deleted before they were sent",
            prev.on_terminal
        )
    })
}

/// A command for a terminal's next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Upload again the records of a time range (terminal wall clock), to fill a gap.
    QueryAttLog {
        /// From (inclusive).
        from: NaiveDateTime,
        /// To (inclusive).
        to: NaiveDateTime,
    },
    /// Create or update a user on the terminal.
    PushUser {
        /// PIN (1-64 of `[A-Za-z0-9._-]`).
        pin: String,
        /// Name (tabs and line breaks removed, at most 24 characters).
        name: String,
        /// Card number (digits), or empty.
        card: String,
    },
    /// Restart the terminal.
    Reboot,
    /// Report its counters and firmware.
    Info,
}

impl Command {
    /// The text after `C:<id>:`, or why the command cannot be sent.
    pub fn text(&self) -> Result<String, String> {
        const F: &str = "%Y-%m-%d %H:%M:%S";
        match self {
            Command::QueryAttLog { from, to } if from <= to => Ok(format!(
                "DATA QUERY ATTLOG StartTime={}\tEndTime={}",
                from.format(F),
                to.format(F)
            )),
            Command::QueryAttLog { .. } => Err("the range ends before it starts".into()),
            Command::PushUser { pin, name, card } => {
                if pin.is_empty()
                    || pin.len() > MAX_PIN_LEN
                    || !pin
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(format!("PIN {pin:?} is not 1-64 of [A-Za-z0-9._-]"));
                }
                if !card.chars().all(|c| c.is_ascii_digit()) {
                    return Err(format!("card {card:?} is not digits"));
                }
                let name: String = name.chars().filter(|c| !c.is_control()).take(24).collect();
                Ok(format!(
                    "DATA UPDATE USERINFO PIN={pin}\tName={name}\tPri=0\tCard={card}"
                ))
            }
            Command::Reboot => Ok("REBOOT".into()),
            Command::Info => Ok("INFO".into()),
        }
    }
}

#[cfg(test)]
mod tests;
