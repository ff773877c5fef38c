//! The CA directory on disk: its files, the index of every certificate issued, and the few file
//! operations the installation needs (a file written whole or not at all, with its mode set
//! before the first byte lands).
//!
//! ```text
//! <dir>/ca.key        the CA's private key (PKCS#8 PEM, 0600): whoever holds it can make devices
//! <dir>/ca.pem        the CA certificate: what the broker, ingest and every gateway trust
//! <dir>/crl.pem       the revocation list Mosquitto reads (`crlfile`), re-signed on each revoke
//! <dir>/index.toml    every certificate issued: serial, name, kind, dates, revocation
//! <dir>/issued/       <name>.pem and <name>.key (0600) of each certificate issued here
//! ```

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// File names inside a CA directory.
pub const CA_KEY: &str = "ca.key";
/// The CA certificate.
pub const CA_CERT: &str = "ca.pem";
/// The CRL Mosquitto reads.
pub const CRL: &str = "crl.pem";
/// The index of issued certificates.
pub const INDEX: &str = "index.toml";
/// Where issued certificates and keys are kept.
pub const ISSUED: &str = "issued";

/// What a certificate is for: its extended key usage and how its name is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A gateway: client auth, CN = the device id (the broker's user name and ACL).
    Device,
    /// rollcall-ingest: client auth, CN = the user name its ACL grants (e.g. rollcall-ingest).
    Ingest,
    /// The broker: server auth, its DNS names and addresses as subject alternative names.
    Broker,
}

impl Kind {
    /// The name used in the index and the listing.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Device => "device",
            Kind::Ingest => "ingest",
            Kind::Broker => "broker",
        }
    }
}

/// `index.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The CA itself.
    pub ca: CaInfo,
    /// The last CRL signed.
    pub crl: CrlInfo,
    /// Every certificate issued, oldest first.
    #[serde(default, rename = "cert")]
    pub certs: Vec<Entry>,
}

/// `[ca]`: what rebuilds the issuer's name exactly as the CA certificate states it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaInfo {
    /// Subject CN.
    pub common_name: String,
    /// Subject O (the campus).
    pub organization: String,
    /// Serial of the CA certificate (hex).
    pub serial: String,
    /// End of the CA certificate's validity.
    pub not_after: DateTime<Utc>,
}

/// `[crl]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlInfo {
    /// CRL number of the last CRL (increases by one each time).
    pub number: u64,
    /// When the last CRL stops being valid: OpenSSL (Mosquitto) refuses every client after it.
    pub next_update: DateTime<Utc>,
}

/// One `[[cert]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Serial number, upper-case hex as `openssl x509 -serial` prints it.
    pub serial: String,
    /// The subject CN: device id, ingest's user name or the broker's name.
    pub name: String,
    /// What it is for.
    pub kind: Kind,
    /// Subject alternative names (DNS names and IP addresses), broker certificates.
    #[serde(default)]
    pub sans: Vec<String>,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Replaced by `rollcall ca renew` with the certificate of this serial (still valid until
    /// it expires or is revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_by: Option<String>,
    /// Revoked: when and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revoked>,
}

/// A revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoked {
    /// When the CA revoked it.
    pub at: DateTime<Utc>,
    /// RFC 5280 reason, as `rollcall ca revoke --reason` names it.
    pub reason: String,
}

impl Entry {
    /// `valid`, `expired`, `revoked` or `renewed` (valid, superseded), as of `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.not_after <= now {
            "expired"
        } else if self.renewed_by.is_some() {
            "renewed"
        } else {
            "valid"
        }
    }
}

/// An opened CA directory.
#[derive(Debug)]
pub struct CaDir {
    /// The directory.
    pub dir: PathBuf,
    /// Its index.
    pub index: Index,
}

impl CaDir {
    /// Opens `dir`, saying how to make one when it is not a CA directory.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(INDEX);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{}: not a Rollcall CA directory (no {INDEX}): create the CA with `rollcall ca \
                 init --dir {} --campus <name>`, or give the directory `rollcall ca init` made",
                dir.display(),
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
                "{}: permission denied: run as the user that owns the CA (often root: sudo)",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let index: Index = toml::from_str(&text).with_context(|| {
            format!(
                "{}: damaged CA index; restore it from the CA's backup",
                path.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
        })
    }

    /// Writes the index back (whole or not at all).
    pub fn save(&self) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(&self.index).context("serialising the CA index")?;
        let text = format!(
            "# The certificates `rollcall ca` issued from this CA; `rollcall ca list` shows them.\n\
             # Written by rollcall: edit only with care (the CRL is made from it).\n{text}"
        );
        write_file(&self.dir.join(INDEX), text.as_bytes(), 0o644)
    }

    /// Where `name`'s certificate and key are kept.
    pub fn issued(&self, name: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.join(ISSUED);
        (d.join(format!("{name}.pem")), d.join(format!("{name}.key")))
    }

    /// The newest certificate issued to `name` that is not revoked, if any.
    pub fn current(&self, name: &str) -> Option<&Entry> {
        self.index
            .certs
            .iter()
            .rev()
            .find(|e| e.name == name && e.revoked.is_none())
    }
}

/// Reads a file that must exist, naming it and the fix in the error.
pub fn read(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("{}: {what} not found", path.display())
        }
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "{}: permission denied reading the {what}: run as its owner (often root: sudo)",
            path.display()
        ),
        _ => anyhow::anyhow!("{}: reading the {what}: {e}", path.display()),
    })
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it, created with
/// `mode` (so a key is never readable by others, even for a moment), synced, then renamed.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits away; the mode asked for is the mode wanted.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                "{}: permission denied: run as a user who may write {} (often root: sudo), or \
                 choose another directory",
                path.display(),
                dir.display()
            ),
            _ => anyhow::anyhow!("writing {}: {e}", path.display()),
        }
    })
}

/// Creates `dir` (and its parents) if needed and sets its mode.
pub fn make_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "{}: permission denied creating it: run as root (sudo), or choose a directory you \
             may write",
            dir.display()
        ),
        _ => anyhow::anyhow!("creating {}: {e}", dir.display()),
    })?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// A fresh serial: 16 random bytes, positive and without a leading zero byte (RFC 5280 allows
/// up to 20 octets; random serials never collide between CAs or runs).
pub fn new_serial() -> Vec<u8> {
    let mut s: [u8; 16] = rand::random();
    s[0] = (s[0] & 0x7f) | 0x10;
    s.to_vec()
}

/// Upper-case hex, as `openssl x509 -serial` prints it.
pub fn serial_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// The bytes of a hex serial from the index or the command line (colons and case ignored).
pub fn serial_bytes(hex: &str) -> Option<Vec<u8>> {
    let h: String = hex.chars().filter(|c| *c != ':').collect();
    if h.is_empty() || !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A chrono instant as rcgen's date type (whole seconds).
pub fn to_time(t: DateTime<Utc>) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .with_context(|| format!("{t} is outside the dates a certificate can hold"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_round_trip_through_hex_and_stay_positive() {
        for _ in 0..100 {
            let s = new_serial();
            assert!(s[0] & 0x80 == 0 && s[0] != 0, "{s:?}");
            assert_eq!(serial_bytes(&serial_hex(&s)), Some(s));
        }
        assert_eq!(serial_bytes("0a:ff"), Some(vec![10, 255]));
        assert_eq!(serial_bytes("abc"), None);
        assert_eq!(serial_bytes("zz"), None);
        assert_eq!(serial_bytes(""), None);
    }

    #[test]
    fn a_written_file_has_the_mode_asked_for_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_file(&p, b"secret", 0o600).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_file(&p, b"again", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"again");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
    }
}
