//! A throwaway certificate authority for TLS tests, made with the `openssl` command line tool:
//! a CA, a server certificate for 127.0.0.1 (or any name), and client certificates whose CN is a
//! device id.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A CA and a broker certificate in a directory.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A new P-256 private key in `dir/name`.
fn new_key(dir: &Path, name: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ],
    )
}

impl Pki {
    /// Creates `ca.pem` and `server.pem`/`server.key` (for 127.0.0.1) in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        new_key(dir, "ca.key")?;
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=rollcall-test-ca",
                "-out",
                "ca.pem",
            ],
        )?;
        let pki = Self {
            dir: dir.to_owned(),
        };
        pki.issue(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )?;
        Ok(pki)
    }

    /// Issues a client certificate with CN `device_id`; returns (cert, key) paths.
    pub fn client(&self, device_id: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issue(device_id, device_id, "extendedKeyUsage=clientAuth\n")?;
        Ok((
            self.dir.join(format!("{device_id}.pem")),
            self.dir.join(format!("{device_id}.key")),
        ))
    }

    fn issue(&self, name: &str, cn: &str, ext: &str) -> anyhow::Result<()> {
        let ext_file = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext_file),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{ext}"),
        )?;
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        new_key(&self.dir, &key)?;
        openssl(
            &self.dir,
            &[
                "req",
                "-new",
                "-key",
                &key,
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &csr,
            ],
        )?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                &ext_file,
                "-out",
                &pem,
            ],
        )
    }

    /// Issues a server certificate named `name` whose subjectAltName is `san` (e.g.
    /// `"DNS:db.campus"`); returns (cert, key) paths.
    pub fn server_cert(&self, name: &str, san: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.issue(
            name,
            name,
            &format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
        )?;
        Ok((
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        ))
    }

    /// The server certificate and key for 127.0.0.1 and localhost made by [`create`](Self::create).
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("server.pem"), self.dir.join("server.key"))
    }

    /// The CA certificate (PEM) that signed every certificate made here: what brokers and
    /// clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The temporary directory holding the CA, certificates and keys.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
