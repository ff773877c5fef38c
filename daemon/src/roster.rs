//! The room's roster: which card or fingerprint slot belongs to which student.
//!
//! For now it is a local file (the centre will publish it later):
//!
//! ```toml
//! version = 7
//! [cards]            # card UID, hex, as the reader reports it -> student id
//! "04A1B2C3" = "2024CS001"
//! [fingerprints]     # sensor library slot -> student id
//! "12" = "2024CS001"
//! ```

use std::collections::HashMap;
use std::path::Path;

use rollcall_protocol::v1::{MAX_ID_LEN, Subject};
use serde::Deserialize;

/// A loaded roster.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// Version of the roster file, when given.
    pub version: Option<u64>,
    cards: HashMap<Vec<u8>, String>,
    fingers: HashMap<u16, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterFile {
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    cards: HashMap<String, String>,
    #[serde(default)]
    fingerprints: HashMap<String, String>,
}

/// A roster file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("roster {path}: {message}")]
pub struct RosterError {
    path: String,
    message: String,
}

impl Roster {
    /// Loads a roster file.
    pub fn load(path: &Path) -> Result<Self, RosterError> {
        let err = |message: String| RosterError {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        Self::parse(&text).map_err(err)
    }

    /// Parses roster TOML.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RosterFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let check = |student: &str, key: &str| {
            if student.is_empty() || student.len() > MAX_ID_LEN {
                Err(format!(
                    "{key}: student id must be 1..={MAX_ID_LEN} characters"
                ))
            } else {
                Ok(())
            }
        };
        let mut cards = HashMap::new();
        for (uid, student) in file.cards {
            let key = format!("cards.{uid:?}");
            let bytes = hex::decode(uid.replace([':', ' '], ""))
                .map_err(|_| format!("{key}: not a hex card UID (e.g. \"04A1B2C3\")"))?;
            if bytes.is_empty() || bytes.len() > 16 {
                return Err(format!("{key}: a card UID has 1 to 16 bytes"));
            }
            check(&student, &key)?;
            cards.insert(bytes, student);
        }
        let mut fingers = HashMap::new();
        for (slot, student) in file.fingerprints {
            let key = format!("fingerprints.{slot:?}");
            let n: u16 = slot
                .parse()
                .map_err(|_| format!("{key}: a slot is a number 0..=65535"))?;
            check(&student, &key)?;
            fingers.insert(n, student);
        }
        Ok(Self {
            version: file.version,
            cards,
            fingers,
        })
    }

    /// Builds a roster from pairs (tests, demo).
    pub fn from_pairs(
        cards: impl IntoIterator<Item = (Vec<u8>, String)>,
        fingers: impl IntoIterator<Item = (u16, String)>,
    ) -> Self {
        Self {
            version: None,
            cards: cards.into_iter().collect(),
            fingers: fingers.into_iter().collect(),
        }
    }

    /// Who owns this card, or a keyed hash of it.
    pub fn card(&self, uid: &[u8], hash_key: &[u8; 32]) -> Subject {
        match self.cards.get(uid) {
            Some(s) => Subject::Student(s.clone()),
            None => Subject::UnknownCard(*blake3::keyed_hash(hash_key, uid).as_bytes()),
        }
    }

    /// Who is enrolled in this fingerprint slot.
    pub fn finger(&self, slot: u16) -> Subject {
        match self.fingers.get(&slot) {
            Some(s) => Subject::Student(s.clone()),
            None => Subject::UnknownFinger,
        }
    }

    /// Number of cards and fingerprint slots known.
    pub fn len(&self) -> (usize, usize) {
        (self.cards.len(), self.fingers.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_and_fingers_resolve_and_unknown_cards_are_hashed() {
        let r = Roster::parse(
            "version = 2\n[cards]\n\"04:a1:b2:c3\" = \"S1\"\n[fingerprints]\n\"12\" = \"S2\"\n",
        )
        .expect("valid");
        let key = [7u8; 32];
        assert_eq!(
            r.card(&[0x04, 0xA1, 0xB2, 0xC3], &key),
            Subject::Student("S1".into())
        );
        assert_eq!(r.finger(12), Subject::Student("S2".into()));
        assert_eq!(r.finger(13), Subject::UnknownFinger);
        let Subject::UnknownCard(h) = r.card(&[1, 2, 3, 4], &key) else {
            panic!("expected unknown")
        };
        assert_ne!(h, [0; 32]);
        assert_eq!(
            r.card(&[1, 2, 3, 4], &key),
            Subject::UnknownCard(h),
            "stable per key"
        );
        assert_ne!(
            r.card(&[1, 2, 3, 4], &[8u8; 32]),
            Subject::UnknownCard(h),
            "differs per device key"
        );
    }

    #[test]
    fn bad_entries_name_the_key() {
        let e = Roster::parse("[cards]\n\"zz\" = \"S1\"\n").expect_err("bad hex");
        assert!(e.contains("cards.\"zz\"") && e.contains("hex"), "{e}");
        let e = Roster::parse("[fingerprints]\n\"x\" = \"S1\"\n").expect_err("bad slot");
        assert!(e.contains("fingerprints.\"x\""), "{e}");
    }
}
