//! TLS to PostgreSQL with rustls, and the connection pool built with it.
//!
//! [`DatabaseConfig::tls`] decides from the URL's `sslmode` and `database.ca_file` whether TLS is
//! used (see the [`config`](crate::config) module docs); this module turns that decision into a
//! connector. Whenever TLS is used, the server's certificate chain and its host name (or IP
//! address, as written in `database.url`) are checked: libpq calls that `verify-full`.
//!
//! * **Crypto provider: aws-lc-rs**, passed explicitly. rumqttc already links rustls with
//!   aws-lc-rs as its only provider; choosing ring would link a second crypto library, and
//!   turning on rustls' `ring` feature next to `aws_lc_rs` leaves rustls without an automatic
//!   process default, so rumqttc's `ClientConfig::builder()` would panic at the first `mqtts://`
//!   connection.
//! * **Without `ca_file`: the system's trust store** (rustls-native-certs, also already linked by
//!   rumqttc), not webpki-roots. On a server the store is what the operator manages: a campus CA
//!   added with `update-ca-certificates` is honoured and updates come with the OS, where
//!   webpki-roots freezes Mozilla's list into the binary at build time and knows no private CA.
//!   Managed databases (RDS, Cloud SQL) sign with their own CAs anyway: set `ca_file`.
//!
//! Troubleshooting: a wrong CA, a certificate for another name, an expired certificate or a server
//! without `ssl = on` are refused at start with a message saying which (see [`explain`]); they
//! are not retried like a database that is merely down.

use crate::IngestError;
use crate::config::{DatabaseConfig, DbTls};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// A rustls client configuration trusting `ca_file` (PEM, one or more certificates) or, without
/// it, the system's trust store.
pub fn client_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect())
                .map_err(|e| format!("database.ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "database.ca_file {}: no PEM certificate in it: give the CA certificate \
                     (-----BEGIN CERTIFICATE-----) that signed the database server's certificate",
                    path.display()
                ));
            }
            for c in certs {
                roots.add(c).map_err(|e| {
                    format!(
                        "database.ca_file {}: not a usable CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "TLS to the database without database.ca_file needs the system's trust store, \
                     and none was found ({}): set database.ca_file to the CA that signed the \
                     database server's certificate, or install ca-certificates",
                    found
                        .errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Builds the pool for `[database]` (connections are opened lazily), with TLS as configured.
pub fn pool(db: &DatabaseConfig, size: usize) -> Result<Pool, IngestError> {
    let (mut pg, tls) = db.tls()?;
    pg.connect_timeout(Duration::from_secs(5));
    pg.application_name("rollcall-ingest");
    let mc = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mgr = match &tls {
        DbTls::Plain => Manager::from_config(pg, tokio_postgres::NoTls, mc),
        DbTls::Verified { ca_file, .. } => {
            let rustls = client_config(ca_file.as_deref()).map_err(IngestError::Setup)?;
            Manager::from_config(pg, MakeRustlsConnect::new(rustls), mc)
        }
    };
    Pool::builder(mgr)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|e| IngestError::Setup(format!("building the connection pool: {e}")))
}

/// What a person must do about a TLS failure somewhere in `err`'s chain, or `None` when `err`
/// is not one (a database that is down is retried, not explained).
pub fn explain(err: &(dyn std::error::Error + 'static), db: &DatabaseConfig) -> Option<String> {
    let trust = match &db.ca_file {
        Some(p) => format!("database.ca_file {}", p.display()),
        None => "the system's trust store (no database.ca_file)".to_string(),
    };
    let mut cur = Some(err);
    while let Some(e) = cur {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(t) = tls {
            use rustls::CertificateError as C;
            return Some(match t {
                rustls::Error::InvalidCertificate(
                    C::UnknownIssuer | C::BadSignature | C::InvalidPurpose,
                ) => format!(
                    "the database server's certificate is not trusted by {trust} ({t}): set \
                     database.ca_file to the CA certificate that signed the server's certificate"
                ),
                rustls::Error::InvalidCertificate(
                    C::NotValidForName | C::NotValidForNameContext { .. },
                ) => format!(
                    "the database server's certificate does not name the host in database.url \
                     ({t}): connect by a name or address the certificate holds, or reissue the \
                     certificate with this one"
                ),
                rustls::Error::InvalidCertificate(
                    C::Expired | C::ExpiredContext { .. } | C::NotValidYet,
                ) => format!(
                    "the database server's certificate is outside its validity period ({t}): \
                     renew it (or check this machine's clock)"
                ),
                _ => format!(
                    "TLS to the database failed ({t}): check database.ca_file and the server's \
                     ssl settings"
                ),
            });
        }
        if e.to_string() == "server does not support TLS" {
            return Some(
                "the database server does not offer TLS but database.url says sslmode=require: \
                 turn ssl on in the server's postgresql.conf (ssl = on, ssl_cert_file, \
                 ssl_key_file)"
                    .into(),
            );
        }
        cur = e.source();
    }
    None
}

/// A pool error as a [`IngestError`]: a TLS failure explained as a setup problem, anything else
/// as the database error it is.
pub fn pool_error(e: deadpool_postgres::PoolError, db: &DatabaseConfig) -> IngestError {
    match explain(&e, db) {
        Some(msg) => IngestError::Setup(msg),
        None => IngestError::Db(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(ca: Option<&str>) -> DatabaseConfig {
        DatabaseConfig {
            url: "postgres://h/d?sslmode=require".into(),
            pool_size: 2,
            schema_mode: crate::config::SchemaMode::Existing,
            migrate_on_start: false,
            ca_file: ca.map(Into::into),
        }
    }

    #[test]
    fn unknown_issuer_inside_io_error_says_to_set_ca_file() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let m = explain(&io, &db(Some("/etc/rollcall/db-ca.pem"))).unwrap();
        assert!(m.contains("/etc/rollcall/db-ca.pem"), "{m}");
        assert!(m.contains("set database.ca_file to the CA"), "{m}");
    }

    #[test]
    fn a_plain_io_error_is_not_a_tls_problem() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(explain(&io, &db(None)), None);
    }

    #[test]
    fn ca_file_without_certificates_is_refused_with_what_to_give() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = client_config(Some(&p)).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = client_config(Some(&dir.path().join("absent.pem"))).unwrap_err();
        assert!(e.contains("absent.pem"), "{e}");
    }
}
