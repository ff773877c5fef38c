//! The certificate revocation list Mosquitto reads (`crlfile` in the TLS listener).
//!
//! Mosquitto hands the file to OpenSSL with CRL checking on, which has two consequences IT must
//! know: with `crlfile` set, a CRL from this CA must be there (so `rollcall ca init` writes an
//! empty one at once), and a CRL past its next update makes OpenSSL refuse **every** client
//! ("CRL has expired"). So the CRL is re-signed on every revoke and by `rollcall ca crl`, which
//! must run before the date `rollcall ca list` shows (a monthly cron job is plenty with the
//! default of 365 days).

use chrono::{Duration, Utc};
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevocationReason,
    RevokedCertParams, SerialNumber,
};

use super::store::{CRL, CaDir, serial_bytes, to_time, write_file};

/// Reasons `rollcall ca revoke --reason` accepts, with RFC 5280's code.
pub const REASONS: &[(&str, RevocationReason)] = &[
    ("unspecified", RevocationReason::Unspecified),
    ("key-compromise", RevocationReason::KeyCompromise),
    ("superseded", RevocationReason::Superseded),
    (
        "cessation-of-operation",
        RevocationReason::CessationOfOperation,
    ),
    ("affiliation-changed", RevocationReason::AffiliationChanged),
];

/// Signs a new CRL listing every revoked certificate in the index, valid for `days`, writes
/// `crl.pem` and records its number and next update in the index (the caller saves it).
pub fn sign(ca: &mut CaDir, issuer: &Issuer<'_, KeyPair>, days: u32) -> anyhow::Result<()> {
    if days == 0 {
        anyhow::bail!("--crl-days: must be at least 1 (default 365)");
    }
    let now = Utc::now();
    let next = now + Duration::days(i64::from(days));
    let mut revoked = Vec::new();
    for e in &ca.index.certs {
        let Some(r) = &e.revoked else { continue };
        let serial = serial_bytes(&e.serial).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: serial {:?} of {} is not hex: restore the index from the CA's backup",
                ca.dir.join(super::store::INDEX).display(),
                e.serial,
                e.name
            )
        })?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: to_time(r.at)?,
            reason_code: REASONS
                .iter()
                .find(|(n, _)| *n == r.reason)
                .map(|(_, code)| *code),
            invalidity_date: None,
        });
    }
    let number = ca.index.crl.number + 1;
    let params = CertificateRevocationListParams {
        this_update: to_time(now)?,
        next_update: to_time(next)?,
        crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(issuer)
        .map_err(|e| anyhow::anyhow!("signing the CRL: {e}"))?;
    let pem = crl
        .pem()
        .map_err(|e| anyhow::anyhow!("encoding the CRL: {e}"))?;
    write_file(&ca.dir.join(CRL), pem.as_bytes(), 0o644)?;
    ca.index.crl.number = number;
    ca.index.crl.next_update = next;
    Ok(())
}
