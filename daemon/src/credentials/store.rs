//! The sealed roster and sealed files in the state directory.
//!
//! The roster the centre sent (every student's cards and templates, the version, and the module
//! slot the gateway gave each EF01 template) is one file, `<state_dir>/roster.sealed`:
//!
//! ```text
//! offset  size  field
//! 0       4     magic ("RCS1" roster, "RCE1" enrolment)
//! 4       12    nonce (96 random bits, fresh for every write)
//! 16      N+16  AES-256-GCM ciphertext of the CBOR body, then the tag
//! ```
//!
//! The key is the device data key (`<state_dir>/template.key`, see `templates.rs`; held and
//! rotated by `keys.rs`, whose rotation re-seals this file and the outbox too); the
//! associated data is the magic and the device id, so a file copied from another gateway, or an
//! enrolment put in the roster's place, does not open. The body is decrypted only into a
//! [`Zeroizing`] buffer and its credential bytes are [`Secret`]s, overwritten when dropped.
//!
//! A write is atomic: the new file is written next to the old one (`.tmp`), fsync'd, renamed
//! over it, and the directory fsync'd, so a crash at any instant leaves the old roster or the
//! new one. A fresh nonce per write: 2^32 writes under one key keep the chance of a repeated
//! 96-bit nonce below 2^-32, and a roster is written a few times a day.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, Payload};
use minicbor::{Decode, Encode};
use rollcall_protocol::v1::RosterStudent;
use rollcall_protocol::v1::credentials::FORMAT_EF01;
use zeroize::Zeroizing;

use crate::keys::{Keyring, Keys, Protected};
use crate::templates::DataKey;

/// The roster file in the state directory.
pub const ROSTER_FILE: &str = "roster.sealed";
/// Magic of the sealed roster.
pub const ROSTER_MAGIC: &[u8; 4] = b"RCS1";
/// Magic of a sealed enrolment in the outbox.
pub const ENROLMENT_MAGIC: &[u8; 4] = b"RCE1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Largest sealed file read back (a roster of 2,000 students with R503 templates is ~10 MB).
pub const MAX_SEALED: usize = 256 * 1024 * 1024;

/// The roster as the gateway keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct StoredRoster {
    /// The centre's version (0: none).
    #[n(0)]
    pub version: u64,
    /// Every student with their credentials, sorted by student.
    #[n(1)]
    pub students: Vec<RosterStudent>,
    /// The module slot of each EF01 template, by credential id.
    #[n(2)]
    pub slots: Vec<SlotEntry>,
    /// Slots freed by an update and not yet known deleted from every module: never given to
    /// another template until then (a slot occupied in a module is trusted to hold its own).
    #[n(3)]
    pub freed: Vec<u16>,
    /// The modules' library size, as last reported.
    #[n(4)]
    pub capacity: Option<u16>,
}

/// An EF01 template's module slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct SlotEntry {
    /// The credential id.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub id: [u8; 16],
    /// Its slot.
    #[n(1)]
    pub slot: u16,
}

impl StoredRoster {
    /// The slot of credential `id`, when it has one.
    pub fn slot_of(&self, id: &uuid::Uuid) -> Option<u16> {
        self.slots
            .iter()
            .find(|s| s.id == *id.as_bytes())
            .map(|s| s.slot)
    }

    /// Slot -> (credential id, student, template) of every EF01 template with a slot.
    pub fn module_slots(&self) -> Vec<(u16, uuid::Uuid, &str, &[u8])> {
        let mut out = Vec::new();
        for s in &self.students {
            for f in s.fingers.iter().filter(|f| f.format == FORMAT_EF01) {
                if let Some(slot) = self.slot_of(&f.id) {
                    out.push((slot, f.id, s.student.as_str(), f.data.as_bytes()));
                }
            }
        }
        out.sort_by_key(|(slot, ..)| *slot);
        out
    }
}

/// A sealed file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// The file is not sealed by this device for this use, or was altered.
    #[error(
        "{0}: cannot be opened with this device's data key (template.key): it was damaged, \
         written by another device, or the key was replaced. It is ignored and replaced by the \
         centre's next snapshot"
    )]
    Refused(PathBuf),
    /// The plaintext does not decode.
    #[error("{0}: opened but does not decode ({1}); it is ignored")]
    Corrupt(PathBuf, String),
}

fn aad(magic: &[u8; 4], device_id: &str) -> Vec<u8> {
    let mut aad = magic.to_vec();
    aad.extend_from_slice(device_id.as_bytes());
    aad
}

/// Seals `plaintext` under `key` with a fresh nonce.
pub fn seal(key: &DataKey, magic: &[u8; 4], device_id: &str, plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let aad = aad(magic, device_id);
    // AES-GCM encryption fails only past 64 GiB of plaintext.
    let sealed = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    let mut out = Vec::with_capacity(4 + NONCE_LEN + sealed.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Opens a sealed file's bytes; `None` when it is not sealed by `key` for this use.
pub fn open(
    key: &DataKey,
    magic: &[u8; 4],
    device_id: &str,
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let header = 4 + NONCE_LEN;
    if sealed.len() < header + TAG_LEN || &sealed[..4] != magic {
        return None;
    }
    let aad = aad(magic, device_id);
    key.cipher()
        .decrypt(
            Nonce::from_slice(&sealed[4..header]),
            Payload {
                msg: &sealed[header..],
                aad: &aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Writes `bytes` to `dir/name` atomically (temp file, fsync, rename, fsync of the directory),
/// mode 0600.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |error| StoreError::Io { path, error }
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(dir)
}

/// fsyncs a directory, so a rename or unlink in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| StoreError::Io {
            path: dir.to_owned(),
            error,
        })
}

/// Reads a sealed file whole (bounded), `None` when it does not exist.
pub fn read_sealed(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match crate::templates::read_bounded(path, MAX_SEALED) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(_) if !path.exists() => Ok(None),
        Err(e) => Err(StoreError::Io {
            path: path.to_owned(),
            error: std::io::Error::other(e),
        }),
    }
}

/// The roster file of a state directory, with the keyring to open it.
#[derive(Debug)]
pub struct RosterStore {
    dir: PathBuf,
    device_id: String,
    keyring: Arc<Keyring>,
}

impl RosterStore {
    /// The store in `state_dir` for `device_id`, under the data key there (created if missing,
    /// an interrupted rotation finished): for tools and tests; rollcalld shares one [`Keyring`]
    /// ([`RosterStore::with_keyring`]).
    pub fn open(state_dir: &Path, device_id: &str) -> anyhow::Result<Self> {
        let keyring = Keyring::open(&Protected {
            state_dir: state_dir.to_owned(),
            device_id: device_id.to_owned(),
            roster_file: None,
        })?;
        Ok(Self::with_keyring(state_dir, device_id, Arc::new(keyring)))
    }

    /// The store in `state_dir` for `device_id`, sealing under `keyring`.
    pub fn with_keyring(state_dir: &Path, device_id: &str, keyring: Arc<Keyring>) -> Self {
        Self {
            dir: state_dir.to_owned(),
            device_id: device_id.to_owned(),
            keyring,
        }
    }

    /// The data keys (the outbox seals under them too); hold the guard until the file is
    /// written. Blocks while a key rotation runs: call it on a blocking thread.
    pub fn keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keyring.keys()
    }

    /// The stored roster; `Ok(None)` when there is none yet.
    pub fn load(&self) -> Result<Option<StoredRoster>, StoreError> {
        let keys = self.keys();
        let path = self.dir.join(ROSTER_FILE);
        let Some(sealed) = read_sealed(&path)? else {
            return Ok(None);
        };
        let plain = keys
            .open(|k| open(k, ROSTER_MAGIC, &self.device_id, &sealed))
            .ok_or_else(|| StoreError::Refused(path.clone()))?;
        minicbor::decode(&plain)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(path, e.to_string()))
    }

    /// Replaces the stored roster, atomically.
    pub fn save(&self, roster: &StoredRoster) -> Result<(), StoreError> {
        let keys = self.keys();
        let plain = Zeroizing::new(minicbor::to_vec(roster).unwrap_or_default());
        let sealed = seal(keys.sealing(), ROSTER_MAGIC, &self.device_id, &plain);
        write_atomic(&self.dir, ROSTER_FILE, &sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollcall_protocol::v1::{CardCredential, FingerCredential, Secret};

    fn roster() -> StoredRoster {
        StoredRoster {
            version: 7,
            students: vec![RosterStudent {
                student: "S1".into(),
                cards: vec![CardCredential {
                    id: uuid::Uuid::from_bytes([1; 16]),
                    uid: Secret::new(vec![0xC0, 0xFF, 0xEE, 0x42]),
                }],
                fingers: vec![FingerCredential {
                    id: uuid::Uuid::from_bytes([2; 16]),
                    format: FORMAT_EF01.into(),
                    data: Secret::new(vec![0xAB; 512]),
                }],
            }],
            slots: vec![SlotEntry {
                id: [2; 16],
                slot: 0,
            }],
            freed: vec![3],
            capacity: Some(200),
        }
    }

    #[test]
    fn a_saved_roster_opens_only_here_and_holds_nothing_in_clear() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RosterStore::open(dir.path(), "room-1").expect("store");
        assert_eq!(store.load().expect("load"), None);
        store.save(&roster()).expect("save");
        assert_eq!(store.load().expect("load"), Some(roster()));
        let bytes = std::fs::read(dir.path().join(ROSTER_FILE)).expect("read");
        assert!(bytes.starts_with(ROSTER_MAGIC));
        assert!(!bytes.windows(4).any(|w| w == [0xC0, 0xFF, 0xEE, 0x42]));
        assert!(!bytes.windows(16).any(|w| w == [0xAB; 16]));
        assert!(!dir.path().join("roster.sealed.tmp").exists());

        let first = bytes.clone();
        store.save(&roster()).expect("save again");
        let second = std::fs::read(dir.path().join(ROSTER_FILE)).expect("read");
        assert_ne!(first[4..16], second[4..16], "a fresh nonce per write");

        let other = RosterStore::open(dir.path(), "room-2").expect("store");
        assert!(matches!(other.load(), Err(StoreError::Refused(_))));
        let mut flipped = second.clone();
        *flipped.last_mut().expect("tag") ^= 1;
        std::fs::write(dir.path().join(ROSTER_FILE), flipped).expect("write");
        assert!(matches!(store.load(), Err(StoreError::Refused(_))));
    }
}
