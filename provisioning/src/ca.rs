//! `rollcall ca`: a certificate authority for campuses without a PKI: the CA, device, ingest and
//! broker certificates, renewal, revocation and the CRL Mosquitto reads. Made with rcgen (ECDSA
//! P-256, SHA-256), never with openssl by hand. A campus that has a PKI skips all of this and
//! gives its own files to `rollcall provision --ca-file --cert --key`.
//!
//! The broker trusts `ca.pem`, requires a client certificate, takes its CN as the user name
//! (`use_identity_as_username true`) and grants topics by it: a device certificate's CN is the
//! device id, ingest's is the name its ACL line names (`rollcall-ingest`). A broker certificate
//! carries the names clients connect to as subject alternative names.
//!
//! The CA key is the campus's most valuable secret here: keep the CA directory on the central
//! server or an IT laptop, never on a gateway, and back it up (a lost key means re-issuing every
//! certificate; a stolen one lets anyone make devices).

mod crl;
pub(crate) mod store;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};

use store::{
    CA_CERT, CA_KEY, CRL, CaDir, CaInfo, CrlInfo, Entry, ISSUED, Index, Kind, Revoked, make_dir,
    new_serial, read, serial_hex, to_time, write_file,
};

const EXAMPLES: &str = "\
Examples:
  rollcall ca init --dir /etc/rollcall/ca --campus 'North Campus'
  rollcall ca issue room-101 --dir /etc/rollcall/ca
  rollcall ca issue rollcall-ingest --kind ingest --dir /etc/rollcall/ca
  rollcall ca issue broker.campus --kind broker --san broker.campus --san 10.0.0.5 --dir /etc/rollcall/ca
  rollcall ca list --dir /etc/rollcall/ca
  rollcall ca renew room-101 --dir /etc/rollcall/ca
  rollcall ca revoke room-101 --reason key-compromise --dir /etc/rollcall/ca
  rollcall ca crl --dir /etc/rollcall/ca      # re-sign the CRL before its next update";

/// Validity in days: at least one, at most a century (dates past that help nobody and would
/// overflow the date arithmetic).
fn days() -> clap::builder::RangedI64ValueParser<u32> {
    clap::builder::RangedI64ValueParser::new().range(1..=36_500)
}

/// Default CA directory.
const DEFAULT_DIR: &str = "/etc/rollcall/ca";

/// `rollcall ca`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create the campus CA: its key (0600), its certificate and an empty CRL, in a directory.
    #[command(
        after_help = "Example:\n  rollcall ca init --dir /etc/rollcall/ca --campus 'North Campus'"
    )]
    Init(InitArgs),
    /// Issue a certificate: a gateway's (CN = device id), ingest's, or the broker's.
    #[command(
        after_help = "Examples:\n  rollcall ca issue room-101 --dir /etc/rollcall/ca\n  \
        rollcall ca issue rollcall-ingest --kind ingest --dir /etc/rollcall/ca\n  \
        rollcall ca issue broker.campus --kind broker --san broker.campus --san 10.0.0.5 --dir /etc/rollcall/ca"
    )]
    Issue(IssueArgs),
    /// List the certificates issued: name, kind, serial, expiry, status; and the CRL's next update.
    #[command(after_help = "Example:\n  rollcall ca list --dir /etc/rollcall/ca")]
    List(DirArg),
    /// Issue a new certificate for the same name with a new expiry (same key unless --new-key).
    #[command(
        after_help = "Example:\n  rollcall ca renew room-101 --dir /etc/rollcall/ca\n  \
        # then copy issued/room-101.pem to the gateway's /etc/rollcall/device.pem (or run rollcall provision again)"
    )]
    Renew(RenewArgs),
    /// Revoke a certificate (by name: every certificate of it; or by serial) and re-sign the CRL.
    #[command(
        after_help = "Example:\n  rollcall ca revoke room-101 --reason key-compromise --dir /etc/rollcall/ca\n  \
        # the broker must read the new CRL: crlfile /etc/rollcall/ca/crl.pem in the listener, then restart mosquitto"
    )]
    Revoke(RevokeArgs),
    /// Re-sign the CRL with a new next update (before the date `rollcall ca list` shows).
    #[command(
        after_help = "Example:\n  rollcall ca crl --dir /etc/rollcall/ca   # e.g. monthly from cron"
    )]
    Crl(CrlArgs),
}

#[derive(Debug, clap::Args)]
struct DirArg {
    /// The CA directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Directory to create the CA in (must not hold one yet).
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// The campus's name: the CA certificate's organisation (and its CN, "Rollcall CA <campus>").
    #[arg(long)]
    campus: String,
    /// Validity of the CA certificate in days.
    #[arg(long, default_value_t = 3650, value_parser = days())]
    days: u32,
    /// Validity of the (empty) CRL in days.
    #[arg(long, default_value_t = 365, value_parser = days())]
    crl_days: u32,
}

#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// The subject CN: a device id (kind device), ingest's MQTT user name (kind ingest, e.g.
    /// rollcall-ingest), or the broker's host name (kind broker).
    name: String,
    /// The CA directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// What the certificate is for.
    #[arg(long, value_enum, default_value_t = Kind::Device)]
    kind: Kind,
    /// Kind broker: a DNS name or IP address clients connect to (repeat for several; default:
    /// the name).
    #[arg(long = "san", value_name = "NAME|IP")]
    sans: Vec<String>,
    /// Validity in days.
    #[arg(long, default_value_t = 730, value_parser = days())]
    days: u32,
    /// Issue another certificate even though the name has a valid one.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct RenewArgs {
    /// The name whose certificate to renew.
    name: String,
    /// The CA directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Validity of the new certificate in days.
    #[arg(long, default_value_t = 730, value_parser = days())]
    days: u32,
    /// Make a new key too (the gateway then needs the new key file as well as the certificate).
    #[arg(long)]
    new_key: bool,
}

#[derive(Debug, clap::Args)]
struct RevokeArgs {
    /// A name (every certificate issued to it is revoked) or a serial (hex, as `ca list` shows).
    name_or_serial: String,
    /// The CA directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Why: unspecified, key-compromise, superseded, cessation-of-operation, affiliation-changed.
    #[arg(long, default_value = "unspecified")]
    reason: String,
    /// Validity of the new CRL in days.
    #[arg(long, default_value_t = 365, value_parser = days())]
    crl_days: u32,
}

#[derive(Debug, clap::Args)]
struct CrlArgs {
    /// The CA directory.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Validity of the new CRL in days.
    #[arg(long, default_value_t = 365, value_parser = days())]
    crl_days: u32,
}

/// Runs `rollcall ca`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init(a) => init(a),
        Command::Issue(a) => {
            let mut ca = CaDir::open(&a.dir)?;
            if !a.force
                && let Some(e) = ca.current(&a.name)
                && e.not_after > Utc::now()
            {
                bail!(
                    "{} already has a valid certificate (serial {}, until {}): use it \
                     ({}), renew it with `rollcall ca renew {} --dir {}`, or add --force for \
                     a second one",
                    a.name,
                    e.serial,
                    e.not_after.format("%Y-%m-%d"),
                    ca.issued(&a.name).0.display(),
                    a.name,
                    a.dir.display()
                );
            }
            let (cert, key) = issue(&mut ca, &a.name, a.kind, &a.sans, a.days, None)?;
            println!("issued {} certificate for {}", a.kind.as_str(), a.name);
            println!("  certificate: {}", cert.display());
            println!(
                "  key:         {} (0600: copy it only to where it is used)",
                key.display()
            );
            println!("  CA:          {}", a.dir.join(CA_CERT).display());
            Ok(ExitCode::SUCCESS)
        }
        Command::List(a) => list(&a.dir),
        Command::Renew(a) => renew(a),
        Command::Revoke(a) => revoke(a),
        Command::Crl(a) => {
            let mut ca = CaDir::open(&a.dir)?;
            let issuer = issuer(&ca)?;
            crl::sign(&mut ca, &issuer, a.crl_days)?;
            ca.save()?;
            println!(
                "{}: CRL {} signed, valid until {}: the broker must read it again (restart \
                 mosquitto)",
                a.dir.join(CRL).display(),
                ca.index.crl.number,
                ca.index.crl.next_update.format("%Y-%m-%d %H:%M UTC")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    if a.dir.join(store::INDEX).exists() || a.dir.join(CA_KEY).exists() {
        bail!(
            "{} already holds a CA: use it, or choose another --dir (a second CA would make every \
             certificate issued by the first untrusted where its ca.pem is replaced)",
            a.dir.display()
        );
    }
    let campus = a.campus.trim();
    if campus.is_empty() || campus.len() > 64 {
        bail!("--campus: give the campus's name, 1 to 64 characters, e.g. --campus 'North Campus'");
    }
    if a.days == 0 {
        bail!("--days: must be at least 1 (default 3650)");
    }
    let now = Utc::now();
    let info = CaInfo {
        common_name: format!("Rollcall CA {campus}"),
        organization: campus.to_owned(),
        serial: serial_hex(&new_serial()),
        not_after: now + Duration::days(i64::from(a.days)),
    };
    let mut params = ca_params(&info)?;
    params.not_before = to_time(now - Duration::minutes(5))?;
    params.not_after = to_time(info.not_after)?;
    let key = KeyPair::generate().map_err(|e| anyhow::anyhow!("generating the CA key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| anyhow::anyhow!("signing the CA certificate: {e}"))?;
    make_dir(&a.dir, 0o700)?;
    make_dir(&a.dir.join(ISSUED), 0o700)?;
    write_file(&a.dir.join(CA_KEY), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&a.dir.join(CA_CERT), cert.pem().as_bytes(), 0o644)?;
    let mut ca = CaDir {
        dir: a.dir.clone(),
        index: Index {
            ca: info,
            crl: CrlInfo {
                number: 0,
                next_update: now,
            },
            certs: Vec::new(),
        },
    };
    let issuer = Issuer::new(params, key);
    crl::sign(&mut ca, &issuer, a.crl_days)?;
    ca.save()?;
    println!(
        "CA \"{}\" created in {}",
        ca.index.ca.common_name,
        a.dir.display()
    );
    println!(
        "  key:         {} (0600; back it up, keep it off the gateways)",
        a.dir.join(CA_KEY).display()
    );
    println!(
        "  certificate: {} (trusted by the broker, ingest and every gateway)",
        a.dir.join(CA_CERT).display()
    );
    println!(
        "  CRL:         {} (the broker's crlfile)",
        a.dir.join(CRL).display()
    );
    println!(
        "next: rollcall ca issue <device-id> --dir {}",
        a.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The CA's own parameters, rebuilt from the index: the same subject, so certificates issued
/// later name exactly the issuer the CA certificate states.
fn ca_params(info: &CaInfo) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, info.common_name.as_str());
    dn.push(DnType::OrganizationName, info.organization.as_str());
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(
        &store::serial_bytes(&info.serial)
            .with_context(|| format!("the CA serial {:?} in the index is not hex", info.serial))?,
    ));
    Ok(params)
}

/// The issuer: the CA key, checked against the CA certificate so a key from another CA is
/// caught here rather than by every TLS handshake.
fn issuer(ca: &CaDir) -> anyhow::Result<Issuer<'static, KeyPair>> {
    let key_path = ca.dir.join(CA_KEY);
    let key = KeyPair::from_pem(&read(&key_path, "CA key")?).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a private key rollcall can use ({e}): restore ca.key from the CA's backup",
            key_path.display()
        )
    })?;
    let cert_path = ca.dir.join(CA_CERT);
    let cert = read(&cert_path, "CA certificate")?;
    let spki = spki_of(&cert).with_context(|| format!("{}", cert_path.display()))?;
    if spki != key.subject_public_key_info() {
        bail!(
            "{} does not belong to {}: restore the pair from the CA's backup",
            key_path.display(),
            cert_path.display()
        );
    }
    Ok(Issuer::new(ca_params(&ca.index.ca)?, key))
}

/// The SubjectPublicKeyInfo (DER) of the first certificate in a PEM text.
pub(crate) fn spki_of(pem: &str) -> anyhow::Result<Vec<u8>> {
    use x509_cert::der::{Decode, Encode};
    let cert = first_cert(pem)?;
    let parsed = x509_cert::Certificate::from_der(cert.as_ref())
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    parsed
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| anyhow::anyhow!("re-encoding the public key: {e}"))
}

/// The first certificate of a PEM text.
pub(crate) fn first_cert(pem: &str) -> anyhow::Result<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow::anyhow!("no certificate (-----BEGIN CERTIFICATE-----) in it"))?
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e:?}"))
}

/// Issues a certificate of `kind` to `name` from `ca`, with `key` or a new one; writes
/// `issued/<name>.pem` and `.key` (0600) and records it in the index. Returns the two paths.
pub(crate) fn issue(
    ca: &mut CaDir,
    name: &str,
    kind: Kind,
    sans: &[String],
    days: u32,
    key: Option<KeyPair>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    check_name(name, kind)?;
    if days == 0 {
        bail!("--days: must be at least 1 (default 730)");
    }
    let issuer = issuer(ca)?;
    let now = Utc::now();
    let mut not_after = now + Duration::days(i64::from(days));
    if not_after > ca.index.ca.not_after {
        eprintln!(
            "note: the CA expires on {}: the certificate ends then too (a certificate outlives \
             its CA uselessly)",
            ca.index.ca.not_after.format("%Y-%m-%d")
        );
        not_after = ca.index.ca.not_after;
    }
    let sans = match kind {
        Kind::Broker if sans.is_empty() => vec![name.to_owned()],
        Kind::Broker => sans.to_vec(),
        _ if !sans.is_empty() => bail!(
            "--san: only broker certificates carry names to connect to; a {} certificate is \
             identified by its CN ({name}): remove --san",
            kind.as_str()
        ),
        _ => Vec::new(),
    };
    let serial = new_serial();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, ca.index.ca.organization.as_str());
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = to_time(now - Duration::minutes(5))?;
    params.not_after = to_time(not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match kind {
        Kind::Broker => ExtendedKeyUsagePurpose::ServerAuth,
        Kind::Device | Kind::Ingest => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<anyhow::Result<_>>()?;
    let key = match key {
        Some(k) => k,
        None => KeyPair::generate().map_err(|e| anyhow::anyhow!("generating a key: {e}"))?,
    };
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| anyhow::anyhow!("signing the certificate: {e}"))?;
    let (cert_path, key_path) = ca.issued(name);
    make_dir(&ca.dir.join(ISSUED), 0o700)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    let serial = serial_hex(&serial);
    for e in ca.index.certs.iter_mut() {
        if e.name == name && e.revoked.is_none() && e.renewed_by.is_none() {
            e.renewed_by = Some(serial.clone());
        }
    }
    ca.index.certs.push(Entry {
        serial,
        name: name.to_owned(),
        kind,
        sans,
        not_before: now - Duration::minutes(5),
        not_after,
        renewed_by: None,
        revoked: None,
    });
    ca.save()?;
    Ok((cert_path, key_path))
}

fn check_name(name: &str, kind: Kind) -> anyhow::Result<()> {
    let ok = match kind {
        // The CN is the broker's user name and the topic level of the device's ACL pattern.
        Kind::Device | Kind::Ingest => rollcall_protocol::v1::valid_id(name),
        Kind::Broker => {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
        }
    };
    if !ok {
        bail!(
            "{name:?} is not a valid {} name: use 1 to 64 letters, digits, '-', '_' or '.'{}",
            kind.as_str(),
            if kind == Kind::Device {
                " (the device id, as in attendance_biometric_device.device_id)"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn san(s: &str) -> anyhow::Result<SanType> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !ok {
        bail!("--san {s:?}: give a DNS name (broker.campus) or an IP address (10.0.0.5)");
    }
    Ok(SanType::DnsName(
        s.try_into()
            .map_err(|e| anyhow::anyhow!("--san {s:?}: {e}"))?,
    ))
}

fn list(dir: &Path) -> anyhow::Result<ExitCode> {
    let ca = CaDir::open(dir)?;
    let now = Utc::now();
    println!(
        "CA \"{}\" (serial {}), valid until {}",
        ca.index.ca.common_name,
        ca.index.ca.serial,
        ca.index.ca.not_after.format("%Y-%m-%d")
    );
    let crl = &ca.index.crl;
    let left = crl.next_update - now;
    println!(
        "CRL {} ({}): next update {}{}",
        crl.number,
        dir.join(CRL).display(),
        crl.next_update.format("%Y-%m-%d %H:%M UTC"),
        if left <= Duration::zero() {
            "  EXPIRED: the broker refuses every client; run `rollcall ca crl` now".to_owned()
        } else if left < Duration::days(30) {
            format!(
                "  in {} days: run `rollcall ca crl` before then",
                left.num_days()
            )
        } else {
            String::new()
        }
    );
    if ca.index.certs.is_empty() {
        println!(
            "no certificates issued yet: rollcall ca issue <device-id> --dir {}",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let width = ca
        .index
        .certs
        .iter()
        .map(|e| e.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:<6}  {:<32}  {:<10}  STATUS",
        "NAME", "KIND", "SERIAL", "NOT AFTER"
    );
    for e in &ca.index.certs {
        let mut status = e.status(now).to_owned();
        if let Some(r) = &e.revoked {
            status = format!("revoked {} ({})", r.at.format("%Y-%m-%d"), r.reason);
        } else if status == "valid" && e.not_after - now < Duration::days(30) {
            status = format!(
                "valid, expires in {} days: rollcall ca renew {}",
                (e.not_after - now).num_days(),
                e.name
            );
        } else if let Some(by) = &e.renewed_by {
            status = format!("{status} by {by}");
        }
        println!(
            "{:<width$}  {:<6}  {:<32}  {:<10}  {status}",
            e.name,
            e.kind.as_str(),
            e.serial,
            e.not_after.format("%Y-%m-%d"),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn renew(a: RenewArgs) -> anyhow::Result<ExitCode> {
    let mut ca = CaDir::open(&a.dir)?;
    let Some(old) = ca
        .index
        .certs
        .iter()
        .rev()
        .find(|e| e.name == a.name)
        .cloned()
    else {
        bail!(
            "no certificate was issued to {:?} by this CA: issue one with `rollcall ca issue {} \
             --dir {}` (`rollcall ca list` shows the names)",
            a.name,
            a.name,
            a.dir.display()
        );
    };
    let (_, key_path) = ca.issued(&a.name);
    let key = if a.new_key {
        None
    } else {
        match std::fs::read_to_string(&key_path) {
            Ok(pem) => Some(KeyPair::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a key rollcall can use ({e}): add --new-key to make a new one",
                    key_path.display()
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{}: the key of {} is not here: add --new-key to make a new one (the gateway \
                 then needs the new key too)",
                key_path.display(),
                a.name
            ),
            Err(e) => bail!("{}: {e}", key_path.display()),
        }
    };
    if old.revoked.is_some() && !a.new_key {
        bail!(
            "{}'s last certificate (serial {}) was revoked: its key may be compromised; renew \
             with --new-key",
            a.name,
            old.serial
        );
    }
    let (cert, key) = issue(&mut ca, &a.name, old.kind, &old.sans, a.days, key)?;
    let new = ca.current(&a.name).map(|e| (e.serial.clone(), e.not_after));
    if let Some((serial, not_after)) = new {
        println!(
            "renewed {}: serial {serial}, valid until {} (the old certificate {} stays valid until \
             it expires; revoke it with `rollcall ca revoke {}` if it must stop now)",
            a.name,
            not_after.format("%Y-%m-%d"),
            old.serial,
            old.serial
        );
    }
    println!("  certificate: {}", cert.display());
    println!(
        "  key:         {}{}",
        key.display(),
        if a.new_key { " (new)" } else { " (unchanged)" }
    );
    if old.kind == Kind::Device {
        println!(
            "next: copy the certificate to the gateway's /etc/rollcall/device.pem{} and restart \
             rollcalld (or run `rollcall provision` again)",
            if a.new_key {
                " and the key to device.key"
            } else {
                ""
            },
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(a: RevokeArgs) -> anyhow::Result<ExitCode> {
    if !crl::REASONS.iter().any(|(n, _)| *n == a.reason) {
        bail!(
            "--reason {:?}: use one of {}",
            a.reason,
            crl::REASONS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut ca = CaDir::open(&a.dir)?;
    let wanted = store::serial_bytes(&a.name_or_serial).map(|b| serial_hex(&b));
    let now: DateTime<Utc> = Utc::now();
    let mut revoked = Vec::new();
    let mut already = 0;
    for e in ca.index.certs.iter_mut() {
        let hit = e.name == a.name_or_serial || wanted.as_deref() == Some(e.serial.as_str());
        if !hit {
            continue;
        }
        if e.revoked.is_some() {
            already += 1;
            continue;
        }
        e.revoked = Some(Revoked {
            at: now,
            reason: a.reason.clone(),
        });
        revoked.push(format!("{} (serial {})", e.name, e.serial));
    }
    if revoked.is_empty() {
        if already > 0 {
            println!("{}: already revoked; re-signing the CRL", a.name_or_serial);
        } else {
            bail!(
                "no certificate named or numbered {:?} in this CA: `rollcall ca list --dir {}` \
                 shows names and serials",
                a.name_or_serial,
                a.dir.display()
            );
        }
    }
    let issuer = issuer(&ca)?;
    crl::sign(&mut ca, &issuer, a.crl_days)?;
    ca.save()?;
    for r in &revoked {
        println!("revoked {r}");
    }
    println!(
        "CRL {} written to {} (valid until {}).\nThe broker refuses revoked certificates only \
         once it reads this file: in mosquitto.conf's TLS listener set\n  crlfile {}\nand \
         restart mosquitto (copy the file to the broker first if it runs elsewhere).",
        ca.index.crl.number,
        a.dir.join(CRL).display(),
        ca.index.crl.next_update.format("%Y-%m-%d"),
        a.dir.join(CRL).display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_by_kind() {
        check_name("room-101", Kind::Device).unwrap();
        check_name("rollcall-ingest", Kind::Ingest).unwrap();
        check_name("broker.campus", Kind::Broker).unwrap();
        let e = check_name("room 101", Kind::Device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("device id"), "{e}");
        assert!(check_name("", Kind::Broker).is_err());
    }

    #[test]
    fn sans_are_ip_addresses_or_dns_names() {
        assert_eq!(
            san("10.0.0.5").unwrap(),
            SanType::IpAddress("10.0.0.5".parse().unwrap())
        );
        assert!(matches!(san("broker.campus").unwrap(), SanType::DnsName(_)));
        let e = san("not a name").unwrap_err().to_string();
        assert!(e.contains("DNS name"), "{e}");
    }
}
