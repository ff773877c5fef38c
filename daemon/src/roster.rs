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
//!
//! [[template]]       # an enrolled impression for `iso-template` readers, matched in software:
//! student = "2024CS001"
//! file = "templates/0190c2a1.rct"   # sealed (see templates.rs); relative to this file
//! ```
//!
//! `rollcalld roster add-template` seals a record and appends its `[[template]]` table; a
//! student may have several (one per impression; three is the matcher's measured setting).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rollcall_protocol::v1::{MAX_ID_LEN, Subject, valid_subject};
use serde::Deserialize;

use crate::templates::{DataKey, Templates};

/// Who is expected in this room: card UIDs and fingerprint slots mapped to student ids,
/// loaded from `roster.path`.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// Version of the roster file, when given.
    pub version: Option<u64>,
    cards: HashMap<Vec<u8>, String>,
    fingers: HashMap<u16, String>,
    /// `[[template]]` entries: student and sealed file (relative to the roster file until
    /// [`Roster::load`] resolves them).
    template_files: Vec<(String, PathBuf)>,
    templates: Option<Arc<Templates>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateEntry {
    student: String,
    file: PathBuf,
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
    #[serde(default)]
    template: Vec<TemplateEntry>,
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
        let mut roster = Self::parse(&text).map_err(err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for (_, file) in &mut roster.template_files {
            *file = base.join(&*file);
        }
        Ok(roster)
    }

    /// Loads a roster file and, when it lists templates, opens them with the data key `key`
    /// and prepares them for searches at `threshold`.
    pub fn load_with_templates(
        path: &Path,
        key: &DataKey,
        threshold: f32,
    ) -> Result<Self, RosterError> {
        let mut roster = Self::load(path)?;
        if roster.template_files.is_empty() {
            return Ok(roster);
        }
        let err = |message: String| RosterError {
            path: path.display().to_string(),
            message,
        };
        let templates = Templates::load(&roster.template_files, key, threshold).map_err(err)?;
        roster.templates = Some(Arc::new(templates));
        Ok(roster)
    }

    /// Parses roster TOML.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RosterFile = toml::from_str(text).map_err(|e| e.to_string())?;
        // The same rule the centre applies to a punch's student id: an id it would refuse must
        // not reach a punch (it would be refused at the centre, long after the tap was "accepted").
        let check = |student: &str, key: &str| {
            if valid_subject(student) {
                Ok(())
            } else {
                Err(format!(
                    "{key}: student id {student:?} must be 1..={MAX_ID_LEN} bytes of printable \
                     text (no control characters such as NUL, newlines or escape sequences, no \
                     leading or trailing space): correct the roster file"
                ))
            }
        };
        let mut cards = HashMap::new();
        for (uid, student) in file.cards {
            let key = format!("cards.{uid:?}");
            // Hex digits, optionally in pairs separated by ':' or one space (as readers print them).
            let digits = uid.replace([':', ' '], "");
            let bytes = (digits.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| hex::decode(&digits).ok())
                .flatten()
                .ok_or_else(|| format!("{key}: not a hex card UID (e.g. \"04A1B2C3\")"))?;
            if bytes.is_empty() || bytes.len() > 16 {
                return Err(format!("{key}: a card UID has 1 to 16 bytes"));
            }
            check(&student, &key)?;
            cards.insert(bytes, student);
        }
        let mut fingers = HashMap::new();
        for (slot, student) in file.fingerprints {
            let key = format!("fingerprints.{slot:?}");
            // Digits only: u16's parser would also take a leading '+'.
            let n: u16 = (slot.bytes().all(|b| b.is_ascii_digit()))
                .then(|| slot.parse().ok())
                .flatten()
                .ok_or_else(|| format!("{key}: a slot is a number 0..=65535"))?;
            check(&student, &key)?;
            fingers.insert(n, student);
        }
        let mut template_files = Vec::new();
        for (i, entry) in file.template.into_iter().enumerate() {
            let key = format!("template[{i}]");
            check(&entry.student, &key)?;
            if entry.file.as_os_str().is_empty() {
                return Err(format!(
                    "{key}.file: empty: the sealed template file (`rollcalld roster add-template`                      writes it)"
                ));
            }
            template_files.push((entry.student, entry.file));
        }
        Ok(Self {
            version: file.version,
            cards,
            fingers,
            template_files,
            templates: None,
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
            template_files: Vec::new(),
            templates: None,
        }
    }

    /// The roster the centre sent (see `credentials`): card UIDs and EF01 module slots mapped
    /// to students, and the prepared ISO templates when it holds any.
    pub fn from_centre(
        version: u64,
        cards: HashMap<Vec<u8>, String>,
        fingers: HashMap<u16, String>,
        templates: Option<Templates>,
    ) -> Self {
        Self {
            version: Some(version),
            cards,
            fingers,
            template_files: Vec::new(),
            templates: templates.map(Arc::new),
        }
    }

    /// The student enrolled in module slot `slot`, if any.
    pub fn finger_owner(&self, slot: u16) -> Option<&str> {
        self.fingers.get(&slot).map(String::as_str)
    }

    /// The same roster matching `iso-template` readers against `templates`.
    pub fn with_templates(mut self, templates: Templates) -> Self {
        self.templates = Some(Arc::new(templates));
        self
    }

    /// The prepared templates, when the roster lists any (and was loaded with them).
    pub fn templates(&self) -> Option<&Arc<Templates>> {
        self.templates.as_ref()
    }

    /// The `[[template]]` entries: student and sealed file.
    pub fn template_files(&self) -> &[(String, PathBuf)] {
        &self.template_files
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

    #[test]
    fn student_ids_that_are_unsafe_to_store_or_show_are_refused_naming_the_key() {
        let long = "S".repeat(65);
        for (student, why) in [
            ("S\\u0000X", "NUL"),
            ("S1\\nS2", "newline"),
            ("S\\u001b[31mX", "escape sequence"),
            ("S\\u007f", "DEL"),
            (" S1", "leading space"),
            ("S1 ", "trailing space"),
            ("", "empty"),
            (long.as_str(), "65 bytes"),
        ] {
            let e = Roster::parse(&format!("[cards]\n\"04A1\" = \"{student}\"\n")).expect_err(why);
            assert!(
                e.starts_with("cards.\"04A1\": student id") && e.contains("correct the roster"),
                "{why}: {e}"
            );
            let e =
                Roster::parse(&format!("[fingerprints]\n\"7\" = \"{student}\"\n")).expect_err(why);
            assert!(
                e.starts_with("fingerprints.\"7\": student id"),
                "{why}: {e}"
            );
        }
        let ok = "S".repeat(64);
        Roster::parse(&format!("[cards]\n\"04A1\" = \"{ok}\"\n")).expect("64 bytes is fine");
        Roster::parse("[cards]\n\"04A1\" = \"2024 CS 001\"\n").expect("inner spaces are fine");
    }

    #[test]
    fn template_files_resolve_next_to_the_roster_and_open_only_with_this_devices_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        let record = crate::templates::tests::fvc("101_1");
        let key = DataKey::load_or_create(&state.join(crate::templates::KEY_FILE)).expect("key");
        std::fs::create_dir(dir.path().join("t")).expect("mkdir");
        let sealed = crate::templates::seal(&key, "S1", &record).expect("seal");
        std::fs::write(dir.path().join("t/a.rct"), sealed).expect("write");
        let roster = dir.path().join("roster.toml");
        std::fs::write(
            &roster,
            "[[template]]\nstudent = \"S1\"\nfile = \"t/a.rct\"\n",
        )
        .expect("write");

        let r = Roster::load(&roster).expect("parses");
        assert_eq!(
            r.template_files(),
            [("S1".to_owned(), dir.path().join("t/a.rct"))]
        );
        assert!(r.templates().is_none(), "not opened without the key");
        let r = Roster::load_with_templates(&roster, &key, 0.135).expect("opens");
        assert_eq!(r.templates().map(|t| t.len()), Some((1, 1)));

        // Another device (another key) cannot open them.
        let other = DataKey::from_bytes([9; 32]);
        let e = Roster::load_with_templates(&roster, &other, 0.135)
            .expect_err("another device's key")
            .to_string();
        assert!(
            e.contains("t/a.rct") && e.contains("another device") && e.contains("add-template"),
            "{e}"
        );
        std::fs::write(
            &roster,
            "[[template]]\nstudent = \"S1\"\nfile = \"t/gone.rct\"\n",
        )
        .expect("write");
        let e = Roster::load_with_templates(&roster, &key, 0.135)
            .expect_err("missing file")
            .to_string();
        assert!(e.contains("t/gone.rct"), "{e}");
    }

    #[test]
    fn card_uids_must_be_hex_and_slots_plain_numbers() {
        for uid in ["+04A1", "0x04A1", "04A", "04-A1", "04A1\\u0000"] {
            let e = Roster::parse(&format!("[cards]\n\"{uid}\" = \"S1\"\n")).expect_err(uid);
            assert!(
                e.starts_with("cards.") && e.contains("hex card UID"),
                "{uid}: {e}"
            );
        }
        let e = Roster::parse("[cards]\n\"\" = \"S1\"\n").expect_err("empty uid");
        assert!(e.contains("1 to 16 bytes"), "{e}");
        for slot in ["+1", "-1", "65536", "1.0", " 1", ""] {
            let e =
                Roster::parse(&format!("[fingerprints]\n\"{slot}\" = \"S1\"\n")).expect_err(slot);
            assert!(e.contains("a slot is a number"), "{slot:?}: {e}");
        }
        let e = Roster::parse("[[template]]\nstudent = \"S\\n1\"\nfile = \"t/a.rct\"\n")
            .expect_err("bad student");
        assert!(e.starts_with("template[0]: student id"), "{e}");
        let e =
            Roster::parse("[[template]]\nstudent = \"S1\"\nfile = \"\"\n").expect_err("no file");
        assert!(e.starts_with("template[0].file: empty"), "{e}");
        let e = Roster::parse("[[template]]\nstudent = \"S1\"\n").expect_err("no file key");
        assert!(e.contains("file"), "{e}");
        let r = Roster::parse("[cards]\n\"04 A1\" = \"S1\"\n[fingerprints]\n\"007\" = \"S2\"\n")
            .expect("spaced hex and leading zeros are fine");
        assert_eq!(r.len(), (1, 1));
    }
}
