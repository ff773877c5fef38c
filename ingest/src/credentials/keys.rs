//! The centre's credential keys: AES-256-GCM keys that seal card UIDs and fingerprint templates
//! at rest, and one digest key.
//!
//! # The key file
//!
//! Text, mode 0600, readable only by the service user:
//!
//! ```text
//! # rollcall-ingest credential keys
//! digest 9f0c…(64 hex)        # keys the BLAKE3 digests (card lookup, template_hash); never rotates
//! key k2026a 1b2e…(64 hex)    # sealing keys, by id; the LAST one seals, every one opens
//! key k2027a 77d0…(64 hex)
//! ```
//!
//! `rollcall-ingest credentials init-key FILE` writes a new file, `add-key FILE` appends a key
//! (which then seals new credentials) and `rewrap` re-seals every stored credential under it;
//! after that the older keys can be removed from the file. The digest key cannot change without
//! re-enrolling every card (the digest is how a card UID is found without decrypting every row).
//!
//! # Sealing
//!
//! Each secret is sealed with a fresh random 96-bit nonce; the associated data is the row's
//! identity (credential id, student id, kind), so a ciphertext copied onto another row, another
//! student or another kind fails to open instead of giving someone else's credential.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::path::Path;
use uuid::Uuid;
use zeroize::Zeroizing;

const AAD_CONTEXT: &[u8] = b"rollcall credential v1";

/// The loaded key file.
pub struct KeyRing {
    digest: Zeroizing<[u8; 32]>,
    keys: Vec<(String, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "KeyRing {{ keys: {ids:?} }}")
    }
}

/// A sealed secret as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The id of the key that sealed it.
    pub key_id: String,
    /// The nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// A key file or a sealed secret that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The key file is unreadable or malformed.
    #[error("credential key file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The secret names a key the file does not hold.
    #[error(
        "credential sealed under key {0:?}, which the key file does not hold: put the key back (from backup) or re-enrol"
    )]
    UnknownKey(String),
    /// Authentication failed: wrong key, tampered bytes, or moved to another row.
    #[error("credential {0} does not open: tampered, or moved from another row")]
    Tampered(Uuid),
}

/// The associated data of a credential row.
fn aad(id: Uuid, student: Uuid, kind: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_CONTEXT.len() + 32 + kind.len());
    a.extend_from_slice(AAD_CONTEXT);
    a.extend_from_slice(id.as_bytes());
    a.extend_from_slice(student.as_bytes());
    a.extend_from_slice(kind.as_bytes());
    a
}

fn parse_key(hex_text: &str) -> Option<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(hex::decode(hex_text).ok()?);
    let key: [u8; 32] = bytes.as_slice().try_into().ok()?;
    Some(Zeroizing::new(key))
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeyRing {
    /// Reads and checks a key file: one `digest` line, at least one `key` line, ids unique, the
    /// file not readable by group or others.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let err = |message: String| KeyError::File {
            path: path.display().to_string(),
            message,
        };
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(err(format!(
                    "mode {:o} lets others read it: chmod 600 it (owned by the service user)",
                    meta.permissions().mode() & 0o777
                )));
            }
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?);
        Self::parse(&text).map_err(err)
    }

    /// Parses the key file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut digest = None;
        let mut keys: Vec<(String, Zeroizing<[u8; 32]>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                [] => {}
                ["digest", hex_text] if digest.is_none() => {
                    digest = Some(parse_key(hex_text).ok_or_else(|| {
                        format!("line {}: the digest key must be 64 hex digits", n + 1)
                    })?);
                }
                ["digest", _] => return Err(format!("line {}: a second digest line", n + 1)),
                ["key", id, hex_text] => {
                    if !valid_key_id(id) {
                        return Err(format!(
                            "line {}: key id {id:?}: 1..=32 of [A-Za-z0-9_-]",
                            n + 1
                        ));
                    }
                    if keys.iter().any(|(k, _)| k == id) {
                        return Err(format!("line {}: key id {id:?} given twice", n + 1));
                    }
                    let key = parse_key(hex_text).ok_or_else(|| {
                        format!("line {}: key {id:?} must be 64 hex digits", n + 1)
                    })?;
                    keys.push((id.to_string(), key));
                }
                _ => {
                    return Err(format!(
                        "line {}: expected `digest <64 hex>` or `key <id> <64 hex>`",
                        n + 1
                    ));
                }
            }
        }
        let digest = digest.ok_or(
            "no `digest` line: create the file with `rollcall-ingest credentials init-key`",
        )?;
        if keys.is_empty() {
            return Err("no `key` line: add one with `rollcall-ingest credentials add-key`".into());
        }
        Ok(Self { digest, keys })
    }

    /// A new key file's text: a digest key and one sealing key, both random.
    pub fn generate(first_key_id: &str) -> Result<Zeroizing<String>, String> {
        if !valid_key_id(first_key_id) {
            return Err(format!("key id {first_key_id:?}: 1..=32 of [A-Za-z0-9_-]"));
        }
        let digest = Zeroizing::new(rand::random::<[u8; 32]>());
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        Ok(Zeroizing::new(format!(
            "# rollcall-ingest credential keys: keep secret, back up; the last key seals\n\
             digest {}\nkey {first_key_id} {}\n",
            hex::encode(digest.as_slice()),
            hex::encode(key.as_slice())
        )))
    }

    /// A `key` line to append.
    pub fn generate_key_line(id: &str) -> Result<Zeroizing<String>, String> {
        if !valid_key_id(id) {
            return Err(format!("key id {id:?}: 1..=32 of [A-Za-z0-9_-]"));
        }
        let key = Zeroizing::new(rand::random::<[u8; 32]>());
        Ok(Zeroizing::new(format!(
            "key {id} {}\n",
            hex::encode(key.as_slice())
        )))
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[self.keys.len() - 1].0
    }

    /// The keyed digest of a secret (32 bytes): how a card is found, and the `template_hash`
    /// CampsHub360 shows. Without the digest key it reveals nothing about the secret.
    pub fn digest(&self, kind: &str, secret: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.digest);
        h.update(kind.as_bytes());
        h.update(&[0]);
        h.update(secret);
        *h.finalize().as_bytes()
    }

    /// Seals `secret` for the row (id, student, kind) under the current key.
    pub fn seal(&self, id: Uuid, student: Uuid, kind: &str, secret: &[u8]) -> Sealed {
        let (key_id, key) = &self.keys[self.keys.len() - 1];
        let nonce: [u8; 12] = rand::random();
        let cipher = Aes256Gcm::new(key.as_slice().into());
        let aad = aad(id, student, kind);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of a bounded message cannot fail");
        Sealed {
            key_id: key_id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a sealed secret of the row (id, student, kind) into zeroizing memory.
    pub fn open(
        &self,
        id: Uuid,
        student: Uuid,
        kind: &str,
        sealed: &Sealed,
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| *k == sealed.key_id)
            .ok_or_else(|| KeyError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 12 {
            return Err(KeyError::Tampered(id));
        }
        let cipher = Aes256Gcm::new(key.as_slice().into());
        let aad = aad(id, student, kind);
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyError::Tampered(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::parse(&KeyRing::generate("k1").unwrap()).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_only_on_its_own_row() {
        let r = ring();
        let (id, student) = (Uuid::now_v7(), Uuid::now_v7());
        let s = r.seal(id, student, "card", b"\x04\xa1\xb2\xc3");
        assert!(!s.ciphertext.windows(4).any(|w| w == b"\x04\xa1\xb2\xc3"));
        assert_eq!(
            &r.open(id, student, "card", &s).unwrap()[..],
            b"\x04\xa1\xb2\xc3"
        );
        assert_eq!(
            r.open(id, Uuid::now_v7(), "card", &s),
            Err(KeyError::Tampered(id))
        );
        let other = Uuid::now_v7();
        assert_eq!(
            r.open(other, student, "card", &s),
            Err(KeyError::Tampered(other))
        );
        assert!(r.open(id, student, "fingerprint", &s).is_err());
        let mut flipped = s.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(r.open(id, student, "card", &flipped).is_err());
    }

    #[test]
    fn nonces_are_fresh_and_rotation_keeps_old_secrets_readable() {
        let old = KeyRing::generate("k1").unwrap();
        let r1 = KeyRing::parse(&old).unwrap();
        let (id, student) = (Uuid::now_v7(), Uuid::now_v7());
        let a = r1.seal(id, student, "card", b"uid");
        let b = r1.seal(id, student, "card", b"uid");
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
        let rotated = format!("{}{}", &*old, &*KeyRing::generate_key_line("k2").unwrap());
        let r2 = KeyRing::parse(&rotated).unwrap();
        assert_eq!(r2.current_id(), "k2");
        assert_eq!(&r2.open(id, student, "card", &a).unwrap()[..], b"uid");
        assert_eq!(r2.seal(id, student, "card", b"uid").key_id, "k2");
        // Digests do not change with rotation.
        assert_eq!(r1.digest("card", b"uid"), r2.digest("card", b"uid"));
        assert_ne!(r1.digest("card", b"uid"), r1.digest("fingerprint", b"uid"));
        // A ring without k1 cannot open what k1 sealed, and says so.
        let only_k2: String = rotated
            .lines()
            .filter(|l| !l.starts_with("key k1"))
            .map(|l| format!("{l}\n"))
            .collect();
        let r3 = KeyRing::parse(&only_k2).unwrap();
        assert_eq!(
            r3.open(id, student, "card", &a),
            Err(KeyError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn malformed_key_files_say_what_is_wrong() {
        for (text, says) in [
            ("", "no `digest` line"),
            (&format!("digest {}\n", "00".repeat(32)), "no `key` line"),
            ("digest abc\n", "64 hex"),
            (
                &format!("digest {0}\ndigest {0}\n", "00".repeat(32)),
                "second digest",
            ),
            (
                &format!("digest {0}\nkey a {0}\nkey a {0}\n", "00".repeat(32)),
                "twice",
            ),
            (
                &format!("digest {0}\nkey a/b {0}\n", "00".repeat(32)),
                "key id",
            ),
            ("secret 1234\n", "expected"),
        ] {
            let e = KeyRing::parse(text).unwrap_err();
            assert!(e.contains(says), "{e:?} should say {says:?}");
        }
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, &*KeyRing::generate("k1").unwrap()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = KeyRing::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(KeyRing::load(&path).unwrap().current_id(), "k1");
    }
}
