//! The vocabulary shared by every reader and indicator.

use serde::{Deserialize, Serialize};

/// What a reader reports. Expected, frequent outcomes ("no match") are plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A card was presented (one event per presentation, repeats already collapsed).
    Card {
        /// Raw card identifier bytes, most significant first (4 or 7 bytes for ISO14443A,
        /// 5 for EM4100, the facility+card bits packed big-endian for Wiegand).
        uid: Vec<u8>,
    },
    /// A finger matched a template stored in the sensor's library.
    Fingerprint {
        /// Library slot (page id) of the matching template.
        slot: u16,
        /// Match score reported by the sensor.
        score: u16,
    },
    /// A finger was read but matched nothing in the library.
    FingerprintNoMatch,
    /// A sensor that does not match by itself sent the minutiae template of a placed finger
    /// (`iso-template` readers); the daemon matches it against the roster. Unvalidated bytes
    /// from outside: parse them with a parser that refuses malformed records.
    FingerprintTemplate {
        /// The finger minutiae record (ISO/IEC 19794-2:2005 or ANSI INCITS 378-2004).
        template: Vec<u8>,
    },
    /// The reader's health changed (unplugged, recovered, garbage on the line...).
    Health(ReaderHealth),
}

/// Health of one reader, reported when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderHealth {
    /// The reader answers normally.
    Ok,
    /// The reader is not answering or its port is gone; the text says what to check.
    Down(String),
}

/// The kind of credential a reader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// RFID / NFC card or fob.
    Card,
    /// Fingerprint.
    Fingerprint,
}

/// What an indicator must tell the person at the reader. Each has a pattern that a student can
/// tell apart from the others without reading anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// The punch is durably stored.
    Accepted,
    /// The credential is not on this room's roster (the punch is still stored).
    Unknown,
    /// Already punched within the duplicate window (nothing new stored).
    Duplicate,
    /// The journal is full: the punch was NOT stored; staff must act.
    StorageFull,
    /// The gateway has no link to the centre (punches are still stored).
    Offline,
    /// The link is back.
    Online,
    /// The centre refused punches of this device (unregistered, disabled, ...): they are not
    /// counted as attendance; staff must act.
    Refused,
}
