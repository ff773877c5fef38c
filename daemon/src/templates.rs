//! Enrolled fingerprint templates: encrypted at rest, prepared in memory for the roster search.
//!
//! For `iso-template` readers the gateway matches in software (see `rollcall-matcher`): the
//! sensor sends the placed finger's ISO/IEC 19794-2 record and rollcalld compares it with the
//! enrolled impressions of the room's students.
//!
//! # At rest
//!
//! Each enrolled impression is one file, listed in the roster (`[[template]]` tables, see
//! `roster.rs`), sealed with AES-256-GCM under the device's data key:
//!
//! ```text
//! offset  size  field
//! 0       4     "RCT1"
//! 4       12    nonce (random per file)
//! 16      N+16  ciphertext of the record, then the GCM tag
//! ```
//!
//! The associated data is the student id, so a file moved to another student's entry (or a
//! student id edited in the roster) fails authentication instead of punching for the wrong
//! person. The key is the **device data key**: 32 random bytes in `<state_dir>/template.key`
//! (the name is historical), created mode 0600 on first use (by rollcalld or by `rollcalld
//! roster add-template`). It also seals the centre's roster (`roster.sealed`) and the
//! enrolment outbox (see `credentials::store`); `keys.rs` owns it in rollcalld and rotates it
//! (`rollcall keys rotate`). Templates sealed under another device's key do
//! not open here: enrol them again on this device, or copy the key with them as IT policy
//! allows.
//!
//! # In memory
//!
//! A record is decrypted into a [`Zeroizing`] buffer, parsed, prepared, and the buffer and the
//! parsed minutiae are overwritten at once. The prepared templates (normalised minutiae,
//! descriptors and pairwise tables: enough to match the finger, not an image of it) stay in
//! memory while the roster is loaded, because preparing 450 impressions per search would cost
//! about 0.3 s; they are overwritten when dropped (the matcher's `zeroize` feature). The probe a
//! sensor sends is held and dropped the same way. What zeroizing cannot cover: copies the
//! allocator made while a vector grew, swap, and core dumps (on a gateway that matches in
//! software, set `MemorySwapMax=0` and `LimitCORE=0` in the unit).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rollcall_matcher::{Comparer, Roster as Gallery, Template};
use rollcall_protocol::v1::Subject;
use zeroize::Zeroizing;

/// Start of every sealed template file.
pub const MAGIC: &[u8; 4] = b"RCT1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Largest record accepted from a file or a sensor: far above any real template (a few hundred
/// bytes), small enough that a hostile input cannot make the gateway allocate much.
pub const MAX_RECORD: usize = 64 * 1024;
/// Name of the device data key file in the state directory (roster, outbox, templates).
pub const KEY_FILE: &str = "template.key";

/// Scores travel in punches as `u16`: the matcher's score in `[0, 1]` times this (so the
/// default threshold, 0.135, is 1350).
pub const SCORE_SCALE: f32 = 10_000.0;

/// The device's data key (AES-256), overwritten when dropped.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// A key from its bytes (tests).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Reads the key at `path`, creating it (32 random bytes, mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: must hold exactly 32 bytes. It is the device data key the \
                         roster, its fingerprint templates and the enrolment outbox are sealed \
                         with: restore it from backup, or delete it, let the centre send a new \
                         snapshot and enrol hand-added templates again",
                        path.display()
                    )
                })?;
                Ok(Self(Zeroizing::new(key)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::OpenOptionsExt;
                let key = Zeroizing::new(rand::random::<[u8; 32]>());
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
                f.write_all(key.as_slice())?;
                f.sync_all()?;
                tracing::info!(key = %path.display(), "device data key created");
                Ok(Self(key))
            }
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_slice().into())
    }
}

/// Why a sealed template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Not a sealed template file.
    #[error(
        "not a sealed template (no RCT1 header, or shorter than one): enrol it with `rollcalld roster add-template`"
    )]
    NotSealed,
    /// Authentication failed.
    #[error(
        "cannot be opened with this device's data key for this student: it was sealed on another \
         device (or under a replaced template.key), or for another student (a file moved between \
         roster entries); enrol it again with `rollcalld roster add-template`"
    )]
    Refused,
    /// The record is empty or larger than [`MAX_RECORD`].
    #[error("a template record has 1 to 65536 bytes")]
    Size,
}

/// Seals `record` for `student` under `key`.
pub fn seal(key: &DataKey, student: &str, record: &[u8]) -> Result<Vec<u8>, SealError> {
    if record.is_empty() || record.len() > MAX_RECORD {
        return Err(SealError::Size);
    }
    let nonce: [u8; NONCE_LEN] = rand::random();
    let sealed = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: record,
                aad: student.as_bytes(),
            },
        )
        .map_err(|_| SealError::Size)?;
    let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens a sealed template of `student` into a buffer that is overwritten when dropped.
pub fn open(key: &DataKey, student: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let header = MAGIC.len() + NONCE_LEN;
    if sealed.len() < header + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
        return Err(SealError::NotSealed);
    }
    if sealed.len() > header + MAX_RECORD + TAG_LEN {
        return Err(SealError::Size);
    }
    key.cipher()
        .decrypt(
            Nonce::from_slice(&sealed[MAGIC.len()..header]),
            Payload {
                msg: &sealed[header..],
                aad: student.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Refused)
}

/// Parses and prepares a record, overwriting the parsed minutiae once prepared.
pub fn prepare(record: &[u8]) -> Result<Template, String> {
    let mut parsed = rollcall_matcher::parse(record).map_err(|e| e.to_string())?;
    let prepared = Template::from_record(&parsed).map_err(|e| e.to_string());
    for view in &mut parsed.views {
        use zeroize::Zeroize;
        for m in &mut view.minutiae {
            m.x.zeroize();
            m.y.zeroize();
            m.angle_degrees.zeroize();
        }
        view.extended_data.zeroize();
    }
    prepared
}

/// What a search over the enrolled templates answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Identified {
    /// The student if the best score reached the threshold, else [`Subject::UnknownFinger`].
    pub subject: Subject,
    /// The best score in `[0, 1]` (0 when no template is enrolled).
    pub score: f32,
}

impl Identified {
    /// The score as punches carry it ([`SCORE_SCALE`]).
    pub fn score_u16(&self) -> u16 {
        (self.score.clamp(0.0, 1.0) * SCORE_SCALE).round() as u16
    }
}

/// The roster's enrolled impressions, prepared, with the threshold a search must reach.
pub struct Templates {
    gallery: Gallery<String>,
    impressions: usize,
    threshold: f32,
    comparer: Mutex<Comparer>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("students", &self.gallery.len())
            .field("impressions", &self.impressions)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl Templates {
    /// Prepared impressions per student, searched with `threshold`.
    pub fn new(students: Vec<(String, Vec<Template>)>, threshold: f32) -> Self {
        let mut gallery = Gallery::new();
        let mut impressions = 0;
        for (student, prints) in students {
            impressions += prints.len();
            gallery.enroll(student, prints);
        }
        Self {
            gallery,
            impressions,
            threshold,
            comparer: Mutex::new(Comparer::new()),
        }
    }

    /// Decrypts and prepares every `(student, sealed file)` entry. Errors name the file and what
    /// to do; one bad entry refuses the whole roster, as any other bad roster entry does.
    pub fn load(
        entries: &[(String, PathBuf)],
        key: &DataKey,
        threshold: f32,
    ) -> Result<Self, String> {
        let mut by_student: Vec<(String, Vec<Template>)> = Vec::new();
        for (student, path) in entries {
            let label = format!("template {} of student {student:?}", path.display());
            let sealed = read_bounded(path, MAGIC.len() + NONCE_LEN + MAX_RECORD + TAG_LEN)
                .map_err(|e| format!("{label}: {e}"))?;
            let record = open(key, student, &sealed).map_err(|e| format!("{label}: {e}"))?;
            let template = prepare(&record).map_err(|e| {
                format!("{label}: not a usable ISO/IEC 19794-2 or ANSI 378 record: {e}")
            })?;
            match by_student.iter_mut().find(|(s, _)| s == student) {
                Some((_, prints)) => prints.push(template),
                None => by_student.push((student.clone(), vec![template])),
            }
        }
        Ok(Self::new(by_student, threshold))
    }

    /// Number of students and of impressions.
    pub fn len(&self) -> (usize, usize) {
        (self.gallery.len(), self.impressions)
    }

    /// Whether no impression is enrolled.
    pub fn is_empty(&self) -> bool {
        self.impressions == 0
    }

    /// Identifies a sensor's record among the enrolled students. Blocking (a search of 450
    /// impressions takes about 8 ms): call it off the async runtime. An unreadable record is an
    /// error (the sensor's fault, or not an ISO/ANSI sensor), not an unknown finger.
    pub fn identify(&self, record: &[u8]) -> Result<Identified, String> {
        let probe = prepare(record)?;
        let mut comparer = self.comparer.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match self.gallery.search(&probe, &mut comparer) {
            Some(best) if best.score >= self.threshold => Identified {
                subject: Subject::Student(best.student.clone()),
                score: best.score,
            },
            Some(best) => Identified {
                subject: Subject::UnknownFinger,
                score: best.score,
            },
            None => Identified {
                subject: Subject::UnknownFinger,
                score: 0.0,
            },
        })
    }
}

/// Reads at most `max` bytes of `path`, refusing larger files instead of reading them whole.
pub fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > max {
        return Err(format!("larger than {max} bytes: not a template"));
    }
    Ok(bytes)
}

/// `rollcalld roster add-template`: seals `record_file` for `student` under the data key of
/// `config`'s state directory (created if missing), writes it next to the roster file `roster`
/// in `templates/`, and appends a `[[template]]` entry to it (created if missing). Returns the
/// sealed file. Holds the key's lock throughout, so a rotation in rollcalld waits for it (and it
/// for a rotation) and the new file is never left under a replaced key.
pub fn add_template(
    config: &crate::Config,
    roster: &Path,
    student: &str,
    record_file: &Path,
) -> anyhow::Result<PathBuf> {
    let state_dir = config.device.state_dir.as_path();
    use anyhow::Context;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if !rollcall_protocol::v1::valid_subject(student) {
        anyhow::bail!(
            "student id {student:?} must be 1..={} bytes of printable text without leading or \
             trailing space",
            rollcall_protocol::v1::MAX_ID_LEN
        );
    }
    let record = Zeroizing::new(
        read_bounded(record_file, MAX_RECORD)
            .map_err(|e| anyhow::anyhow!("{}: {e}", record_file.display()))?,
    );
    prepare(&record).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a usable ISO/IEC 19794-2 or ANSI 378 record: {e}",
            record_file.display()
        )
    })?;
    crate::run::prepare_state_dir(state_dir)?;
    let lock = crate::keys::StateLock::acquire(state_dir)?;
    let keyring =
        crate::keys::Keyring::open_under(&lock, &crate::keys::Protected::from_config(config))?;
    let sealed = seal(keyring.keys().sealing(), student, &record)?;
    let base = roster.parent().unwrap_or(Path::new("."));
    let dir = base.join("templates");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{}.rct", uuid::Uuid::now_v7().simple());
    let path = dir.join(&name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&sealed)?;
    f.sync_all()?;
    let before = std::fs::read_to_string(roster).unwrap_or_default();
    let entry = format!(
        "\n[[template]]\nstudent = {}\nfile = \"templates/{name}\"\n",
        toml_string(student)
    );
    let after = format!("{before}{entry}");
    if let Err(e) = crate::roster::Roster::parse(&after) {
        let _ = std::fs::remove_file(&path);
        anyhow::bail!(
            "{}: the roster would not parse with the new entry ({e}): correct it first",
            roster.display()
        );
    }
    let mut r = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(roster)
        .with_context(|| format!("opening {}", roster.display()))?;
    r.write_all(entry.as_bytes())?;
    r.sync_all()?;
    Ok(path)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An impression of FVC2002 DB1_B (`FVC_ISO_DIR`, default `../shared/reference/...`).
    pub(crate) fn fvc(name: &str) -> Vec<u8> {
        let dir = std::env::var("FVC_ISO_DIR").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/reference/fingerprint/fvc-iso"
            )
            .into()
        });
        let path = format!("{dir}/fvc2002/DB1_B/{name}.iso");
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}: set FVC_ISO_DIR to the fvc-iso directory"))
    }

    #[test]
    fn a_sealed_template_opens_for_its_student_and_key_only() {
        let key = DataKey::from_bytes([7; 32]);
        let record = fvc("101_1");
        let sealed = seal(&key, "S1", &record).expect("seal");
        assert_eq!(&sealed[..4], b"RCT1");
        assert_ne!(&sealed[16..16 + 32], &record[..32], "not in clear");
        assert_eq!(open(&key, "S1", &sealed).expect("open").as_slice(), record);

        assert_eq!(
            open(&DataKey::from_bytes([8; 32]), "S1", &sealed),
            Err(SealError::Refused),
            "another device's key"
        );
        assert_eq!(
            open(&key, "S2", &sealed),
            Err(SealError::Refused),
            "moved to another student's entry"
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().expect("tag") ^= 1;
        assert_eq!(open(&key, "S1", &flipped), Err(SealError::Refused));
        assert_eq!(open(&key, "S1", &sealed[..20]), Err(SealError::NotSealed));
        assert_eq!(open(&key, "S1", b"FMR\0 20\0"), Err(SealError::NotSealed));
        assert_ne!(
            seal(&key, "S1", &record).expect("seal"),
            sealed,
            "a fresh nonce per file"
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        let a = DataKey::load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = DataKey::load_or_create(&path).expect("reused");
        assert_eq!(a.0.as_slice(), b.0.as_slice());
        std::fs::write(&path, [1u8; 31]).expect("write");
        let e = DataKey::load_or_create(&path)
            .expect_err("short key")
            .to_string();
        assert!(e.contains("exactly 32 bytes"), "{e}");
    }

    #[test]
    fn identification_names_the_enrolled_finger_and_not_a_stranger() {
        let key = DataKey::from_bytes([3; 32]);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut entries = Vec::new();
        for (student, finger) in [("S1", 101), ("S2", 102)] {
            for impression in 1..=3 {
                let path = dir.path().join(format!("{finger}_{impression}.rct"));
                let record = fvc(&format!("{finger}_{impression}"));
                std::fs::write(&path, seal(&key, student, &record).expect("seal")).expect("write");
                entries.push((student.to_owned(), path));
            }
        }
        let templates = Templates::load(&entries, &key, rollcall_matcher::THRESHOLD).expect("load");
        assert_eq!(templates.len(), (2, 6));
        let got = templates.identify(&fvc("102_5")).expect("identify");
        assert_eq!(got.subject, Subject::Student("S2".into()));
        assert!(got.score_u16() >= 1350, "{got:?}");
        let stranger = templates.identify(&fvc("105_4")).expect("identify");
        assert_eq!(stranger.subject, Subject::UnknownFinger, "{stranger:?}");
        assert!(templates.identify(b"FMR\0 20\0garbage").is_err());
        assert!(templates.identify(&[]).is_err());

        // The same file under another student's entry is refused, naming the file.
        let moved = vec![("S2".to_owned(), entries[0].1.clone())];
        let e = Templates::load(&moved, &key, rollcall_matcher::THRESHOLD).expect_err("moved");
        assert!(
            e.contains("101_1.rct") && e.contains("another student"),
            "{e}"
        );
        let e =
            Templates::load(&entries, &DataKey::from_bytes([4; 32]), 0.135).expect_err("wrong key");
        assert!(e.contains("another device"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_refused_without_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            header in proptest::bool::ANY,
        ) {
            let key = DataKey::from_bytes([5; 32]);
            let mut sealed = if header { MAGIC.to_vec() } else { Vec::new() };
            sealed.extend_from_slice(&bytes);
            proptest::prop_assert!(open(&key, "S1", &sealed).is_err());
            let _ = prepare(&bytes);
        }
    }

    #[test]
    fn scores_travel_as_ten_thousandths() {
        let s = |score| {
            Identified {
                subject: Subject::UnknownFinger,
                score,
            }
            .score_u16()
        };
        assert_eq!(s(0.135), 1350);
        assert_eq!(s(1.0), 10_000);
        assert_eq!(s(0.0), 0);
        assert_eq!(s(f32::NAN), 0);
        assert_eq!(s(7.0), 10_000);
    }
}
