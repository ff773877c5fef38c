//! The enrolment outbox: enrolments captured here and not yet answered by the centre.
//!
//! One sealed file per enrolment, `<state_dir>/outbox/<enrolment_id>.sealed` (the format of
//! `store.rs`, magic "RCE1": it holds a template or a card UID), written atomically before the
//! person is told the enrolment was taken. Every file is re-sent on every (re)connect and
//! periodically until the centre's `EnrolmentResult` for its id arrives; then it is deleted.
//! The centre applies an enrolment once by its id, so re-sending is harmless.

use std::path::{Path, PathBuf};

use rollcall_protocol::v1::Enrolment;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::store::{self, ENROLMENT_MAGIC, StoreError};
use crate::keys::Keys;

/// The outbox directory in the state directory.
pub const OUTBOX_DIR: &str = "outbox";
const SUFFIX: &str = ".sealed";

/// The outbox of one device.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    device_id: String,
}

impl Outbox {
    /// The outbox in `state_dir` (created, mode 0700, if missing).
    pub fn open(state_dir: &Path, device_id: &str) -> Result<Self, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state_dir.join(OUTBOX_DIR);
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|error| StoreError::Io {
                    path: dir.clone(),
                    error,
                })?;
            store::sync_dir(state_dir)?;
        }
        Ok(Self {
            dir,
            device_id: device_id.to_owned(),
        })
    }

    /// Stores `enrolment` durably (returns once it is on disk).
    pub fn put(&self, keys: &Keys, enrolment: &Enrolment) -> Result<(), StoreError> {
        let plain = Zeroizing::new(enrolment.encode());
        let sealed = store::seal(keys.sealing(), ENROLMENT_MAGIC, &self.device_id, &plain);
        store::write_atomic(&self.dir, &file_name(&enrolment.enrolment_id), &sealed)
    }

    /// Deletes the enrolment `id`; whether it was there.
    pub fn remove(&self, id: &Uuid) -> Result<bool, StoreError> {
        let path = self.dir.join(file_name(id));
        match std::fs::remove_file(&path) {
            Ok(()) => {
                store::sync_dir(&self.dir)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(StoreError::Io { path, error }),
        }
    }

    /// Every enrolment waiting, oldest capture first. A file that does not open is logged and
    /// left where it is (for a person to look at), not sent.
    pub fn all(&self, keys: &Keys) -> Vec<Enrolment> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue;
            };
            if Uuid::parse_str(stem).is_err() {
                continue;
            }
            match self.read(keys, &path) {
                Ok(e) => out.push(e),
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "enrolment in the outbox cannot be read; not sent")
                }
            }
        }
        out.sort_by_key(|e| e.captured_at_ms);
        out
    }

    fn read(&self, keys: &Keys, path: &Path) -> Result<Enrolment, StoreError> {
        let sealed = store::read_sealed(path)?.unwrap_or_default();
        let plain = keys
            .open(|k| store::open(k, ENROLMENT_MAGIC, &self.device_id, &sealed))
            .ok_or_else(|| StoreError::Refused(path.to_owned()))?;
        Enrolment::decode(&plain).map_err(|e| StoreError::Corrupt(path.to_owned(), e.to_string()))
    }

    /// How many enrolments wait.
    pub fn depth(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(SUFFIX)))
                    .count()
            })
            .unwrap_or(0)
    }
}

fn file_name(id: &Uuid) -> String {
    format!("{}{SUFFIX}", id.hyphenated())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::templates::DataKey;
    use rollcall_protocol::v1::credentials::FORMAT_CARD;
    use rollcall_protocol::v1::{CredentialKind, Secret};

    #[test]
    fn an_enrolment_stays_sealed_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = Keys::single(DataKey::from_bytes([4; 32]));
        let outbox = Outbox::open(dir.path(), "room-1").expect("outbox");
        let e = Enrolment {
            device_id: "room-1".into(),
            enrolment_id: Uuid::from_bytes([9; 16]),
            student: "S1".into(),
            kind: CredentialKind::Card,
            format: FORMAT_CARD.into(),
            sensor: String::new(),
            data: Secret::new(vec![0xDE, 0xAD, 0xBE, 0xEF]),
            quality: None,
            captured_at_ms: 1,
            reader_id: "door".into(),
            operator: "it".into(),
        };
        outbox.put(&key, &e).expect("put");
        assert_eq!(outbox.all(&key), std::slice::from_ref(&e));
        assert_eq!(outbox.depth(), 1);
        for f in std::fs::read_dir(dir.path().join(OUTBOX_DIR)).expect("dir") {
            let bytes = std::fs::read(f.expect("entry").path()).expect("read");
            assert!(!bytes.windows(4).any(|w| w == [0xDE, 0xAD, 0xBE, 0xEF]));
        }
        assert!(
            outbox
                .all(&Keys::single(DataKey::from_bytes([5; 32])))
                .is_empty(),
            "another key"
        );
        assert!(outbox.remove(&e.enrolment_id).expect("remove"));
        assert!(!outbox.remove(&e.enrolment_id).expect("again"));
        assert!(outbox.all(&key).is_empty());
    }
}
