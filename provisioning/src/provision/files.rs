//! The installation's files: written with their modes, owned as the service needs where this
//! process may say so, and otherwise listed with the `chown` to run on the gateway.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::ca::store::{make_dir, read, write_file};

/// Who owns a file of the installation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// root:rollcall: the service reads it through its group, cannot change it.
    RootGroup,
    /// rollcall:rollcall: the service's own state.
    Service,
}

/// root:rollcall.
pub const ROOT_GROUP: Role = Role::RootGroup;
/// rollcall:rollcall.
pub const SERVICE: Role = Role::Service;

/// The service's user and group: `User=rollcall`, `Group=rollcall` in systemd/rollcalld.service.
const USER: &str = "rollcall";

/// Whether owners can be set now.
#[derive(Debug, Clone)]
pub enum Owner {
    /// Running as root and the `rollcall` user and group exist: (uid, gid).
    Set(u32, u32),
    /// Owners are left to a person, for this reason.
    Later(String),
}

impl Owner {
    /// Owners are set when running as root and the rollcall user and group exist.
    pub fn detect() -> Self {
        let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        if euid != Some(0) {
            return Owner::Later("not running as root".into());
        }
        let uid = lookup("/etc/passwd", USER);
        let gid = lookup("/etc/group", USER);
        match (uid, gid) {
            (Some(u), Some(g)) => Owner::Set(u, g),
            _ => Owner::Later(format!(
                "no {USER} user and group on this system yet (the rollcall-gateway package \
                 creates them)"
            )),
        }
    }
}

/// The numeric id of `name` in a passwd or group file.
fn lookup(file: &str, name: &str) -> Option<u32> {
    std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// The files written so far, for the report and the owners to set later.
#[derive(Debug)]
pub struct Install {
    owner: Owner,
    written: Vec<(PathBuf, u32, Role)>,
}

impl Install {
    /// An installation whose owners are set (or left) as `owner` says.
    pub fn new(owner: Owner) -> Self {
        Self {
            owner,
            written: Vec::new(),
        }
    }

    fn own(&mut self, path: &Path, mode: u32, role: Role) -> anyhow::Result<()> {
        if let Owner::Set(uid, gid) = self.owner {
            let user = match role {
                Role::RootGroup => 0,
                Role::Service => uid,
            };
            std::os::unix::fs::chown(path, Some(user), Some(gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        self.written.push((path.to_owned(), mode, role));
        Ok(())
    }

    /// A directory with `mode`.
    pub fn dir(&mut self, path: &Path, mode: u32, role: Role) -> anyhow::Result<()> {
        make_dir(path, mode)?;
        self.own(path, mode, role)
    }

    /// `bytes` to `path`, with `mode`.
    pub fn write(
        &mut self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
        role: Role,
    ) -> anyhow::Result<()> {
        write_file(path, bytes, mode)?;
        self.own(path, mode, role)
    }

    /// A copy of `from` at `to`, with `mode`.
    pub fn copy(&mut self, from: &Path, to: &Path, mode: u32, role: Role) -> anyhow::Result<()> {
        let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        self.write(to, &bytes, mode, role)
    }

    /// The device data key at `path`: 32 random bytes, 0600, the service's own; an existing key
    /// is kept (it seals the roster, templates and outbox already there). Returns whether a new
    /// key was made.
    pub fn data_key(&mut self, path: &Path) -> anyhow::Result<bool> {
        match std::fs::metadata(path) {
            Ok(m) if m.len() == 32 => {
                self.written.push((path.to_owned(), 0o600, Role::Service));
                Ok(false)
            }
            Ok(m) => bail!(
                "{}: holds {} bytes, not the 32 of a device data key: move it aside if nothing \
                 sealed under it must be kept (the centre sends the roster again), then run \
                 provision again",
                path.display(),
                m.len()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_file(path, &rand::random::<[u8; 32]>(), 0o600)?;
                self.own(path, 0o600, Role::Service)?;
                Ok(true)
            }
            Err(e) => Err(e).with_context(|| format!("{}", path.display())),
        }
    }

    /// One line per file: path, mode, owner (as set, or as it must be).
    pub fn report(&self, root: Option<&Path>) -> Vec<String> {
        let set = matches!(self.owner, Owner::Set(..));
        self.written
            .iter()
            .map(|(p, mode, role)| {
                format!(
                    "{:<40} {:04o} {}{}",
                    p.display(),
                    mode,
                    owner_name(*role),
                    if set { "" } else { " (to set)" }
                )
            })
            .chain(root.map(|r| {
                format!(
                    "(under {}: copy onto the gateway's root file system)",
                    r.display()
                )
            }))
            .collect()
    }

    /// The commands a person runs as root on the gateway when owners could not be set here.
    pub fn later(&self, root: Option<&Path>) -> Option<String> {
        let Owner::Later(why) = &self.owner else {
            return None;
        };
        // Under --root the paths are named as they will be on the gateway.
        let on_gateway = |p: &Path| match root.and_then(|r| p.strip_prefix(r).ok()) {
            Some(rel) => Path::new("/").join(rel),
            None => p.to_owned(),
        };
        let by_role = |role: Role| -> Vec<String> {
            self.written
                .iter()
                .filter(|(_, _, r)| *r == role)
                .map(|(p, _, _)| on_gateway(p).display().to_string())
                .collect()
        };
        let (group, service) = (by_role(Role::RootGroup), by_role(Role::Service));
        Some(format!(
            "owners not set ({why}): once the files are in place on the gateway and the \
             rollcall user exists, run as root\n  chown root:rollcall {}\n  chown rollcall:rollcall {}",
            group.join(" "),
            service.join(" ")
        ))
    }
}

fn owner_name(role: Role) -> &'static str {
    match role {
        Role::RootGroup => "root:rollcall",
        Role::Service => "rollcall:rollcall",
    }
}

/// Files from a campus PKI, accepted as they are: each must be what it claims, and the
/// certificate must name the device (the broker takes its CN as the user name its ACL binds to
/// the device's topics) and be valid now.
pub fn check_campus_pki(ca: &Path, cert: &Path, key: &Path, device_id: &str) -> anyhow::Result<()> {
    use rustls_pki_types::pem::PemObject;
    use x509_cert::der::Decode;
    let ca_pem = read(ca, "CA certificate (--ca-file)")?;
    crate::ca::first_cert(&ca_pem).with_context(|| format!("--ca-file {}", ca.display()))?;
    let cert_pem = read(cert, "device certificate (--cert)")?;
    let der =
        crate::ca::first_cert(&cert_pem).with_context(|| format!("--cert {}", cert.display()))?;
    let parsed = x509_cert::Certificate::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("--cert {}: not an X.509 certificate: {e}", cert.display()))?;
    let subject = parsed.tbs_certificate.subject.to_string();
    let cn = subject
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .unwrap_or("");
    if cn != device_id {
        bail!(
            "--cert {}: its subject is {subject:?}, but the broker takes the CN as the user name \
             and grants topics to it: the CN must be the device id {device_id:?}. Ask the PKI \
             for a certificate with CN={device_id}, or provision with the id the certificate names",
            cert.display()
        );
    }
    let not_after = parsed.tbs_certificate.validity.not_after.to_unix_duration();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    if not_after <= now {
        bail!(
            "--cert {}: expired: ask the campus PKI for a new certificate for {device_id}",
            cert.display()
        );
    }
    let key_pem = read(key, "device key (--key)")?;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
        anyhow::anyhow!(
            "--key {}: not a PEM private key ({e:?}): give the key file of {}",
            key.display(),
            cert.display()
        )
    })?;
    // PKCS#8 keys (what most tools write today) are checked against the certificate.
    if let Ok(pair) = rcgen::KeyPair::from_pem(&key_pem) {
        use rcgen::PublicKeyData;
        if crate::ca::spki_of(&cert_pem)? != pair.subject_public_key_info() {
            bail!(
                "--key {} does not belong to --cert {}: give the key the certificate was issued for",
                key.display(),
                cert.display()
            );
        }
    }
    Ok(())
}
