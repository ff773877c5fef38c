//! The link to the centre: the broker answers on TCP, accepts this device's certificate over
//! TLS (as rollcalld connects: rustls, the configured CA, the client certificate) and an MQTT
//! session; the certificate's dates.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollcall_daemon::config::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Finding;

const TIMEOUT: Duration = Duration::from_secs(5);
/// A certificate closer than this to its end is renewed now.
pub(crate) const EXPIRY_WARN: Duration = Duration::from_secs(30 * 86400);

/// A TCP connection to the broker, or why not.
pub(crate) async fn broker(host: &str, port: u16) -> (Finding, Option<TcpStream>) {
    let what = format!("broker {host}:{port}");
    match tokio::time::timeout(TIMEOUT, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => (Finding::ok(format!("{what}: reachable (TCP)")), Some(s)),
        Ok(Err(e)) => {
            let fix = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => format!(
                    "nothing listens there: check the broker runs and listens on port {port} \
                     (`ss -ltn` on it), and mqtt.port"
                ),
                _ => format!(
                    "check the network (`ip route`, `ping {host}`), DNS (`getent hosts {host}`) \
                     and mqtt.host"
                ),
            };
            (
                Finding::fail(format!("{what}: unreachable: {e}"), fix),
                None,
            )
        }
        Err(_) => (
            Finding::fail(
                format!("{what}: no answer within {}s", TIMEOUT.as_secs()),
                format!("a firewall drops port {port} on the way, or the host is down"),
            ),
            None,
        ),
    }
}

/// The TLS handshake with the device's certificate over `tcp`, then an MQTT CONNECT under a
/// client id of its own (never rollcalld's, which would cut its session): the broker's CONNACK
/// says the certificate and the identity are accepted.
pub(crate) async fn tls(host: &str, tcp: TcpStream, tls: &TlsConfig, device: &str) -> Finding {
    let what = format!("TLS to {host} with {}", tls.cert_file.display());
    let config = match client_config(tls) {
        Ok(c) => c,
        Err(e) => {
            return Finding::fail(
                format!("{what}: {e}"),
                "provision the files again (`rollcall provision`), or fix the paths in [mqtt.tls]"
                    .into(),
            );
        }
    };
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return Finding::fail(
            format!("{what}: {host:?} is not a host name"),
            "fix mqtt.host".into(),
        );
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let session = async {
        let mut s = connector.connect(name, tcp).await?;
        s.write_all(&mqtt_connect(&format!(
            "rollcall-doctor-{device}-{}",
            std::process::id()
        )))
        .await?;
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).await?;
        let _ = s.write_all(&[0xE0, 0x00]).await; // DISCONNECT
        Ok::<_, std::io::Error>(connack)
    };
    match tokio::time::timeout(TIMEOUT, session).await {
        Ok(Ok([0x20, 0x02, _, 0])) => Finding::ok(format!(
            "{what}: handshake done, certificate and MQTT session accepted"
        )),
        Ok(Ok([0x20, 0x02, _, code])) => Finding::fail(
            format!("{what}: TLS accepted, MQTT refused (CONNACK code {code})"),
            "the broker refuses this identity: check its ACL and that it takes the certificate's \
             CN as the user name (use_identity_as_username)"
                .into(),
        ),
        Ok(Ok(other)) => Finding::fail(
            format!("{what}: not an MQTT broker's answer: {other:02x?}"),
            "mqtt.port may point at another service".into(),
        ),
        Ok(Err(e)) => Finding::fail(format!("{what}: {e}"), tls_fix(&e.to_string(), tls)),
        Err(_) => Finding::fail(
            format!("{what}: no answer within {}s", TIMEOUT.as_secs()),
            "the port may not be the broker's TLS listener (8883 by convention)".into(),
        ),
    }
}

fn tls_fix(error: &str, tls: &TlsConfig) -> String {
    let e = error.to_ascii_lowercase();
    if e.contains("unknownissuer") || e.contains("unknown issuer") || e.contains("badsignature") {
        format!(
            "the broker's certificate is not signed by {}: put the CA that signed the broker's \
             certificate there",
            tls.ca_file.display()
        )
    } else if e.contains("notvalidforname") || e.contains("not valid for") {
        "the broker's certificate does not name mqtt.host: use the name it was issued for, or \
         reissue it with this name"
            .into()
    } else if e.contains("expired") {
        "a certificate has expired: renew it (`rollcall ca renew`) and install it".into()
    } else if e.contains("alert") || e.contains("eof") || e.contains("reset") {
        format!(
            "the broker refused the device certificate: it must be signed by the CA in the \
             broker's cafile, not revoked (crlfile), and valid now; renew or reissue {} \
             (`rollcall ca issue`)",
            tls.cert_file.display()
        )
    } else {
        "check the broker's TLS listener and the files in [mqtt.tls]".into()
    }
}

fn client_config(tls: &TlsConfig) -> anyhow::Result<rustls::ClientConfig> {
    let read = |path: &Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "{}: no PEM certificate in it",
            path.display()
        );
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in read(&tls.ca_file)? {
        roots
            .add(ca)
            .map_err(|e| anyhow::anyhow!("{}: {e}", tls.ca_file.display()))?;
    }
    let chain = read(&tls.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| anyhow::anyhow!("{}: no PEM private key: {e}", tls.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} and {} do not go together: {e}",
                tls.cert_file.display(),
                tls.key_file.display()
            )
        })
}

/// MQTT 3.1.1 CONNECT: clean session, 10 s keep-alive, no will, no credentials.
fn mqtt_connect(client_id: &str) -> Vec<u8> {
    // One byte of remaining length holds up to 127: device ids are at most 64 bytes.
    let id = &client_id.as_bytes()[..client_id.len().min(100)];
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0A];
    body.extend((id.len() as u16).to_be_bytes());
    body.extend(id);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

/// The certificate's dates against `now`: not yet valid or expired fail, near its end warns.
pub(crate) fn certificate(label: &str, path: &Path, now: SystemTime) -> Finding {
    use x509_cert::der::Decode;
    let what = format!("{label} {}", path.display());
    let parsed = CertificateDer::from_pem_file(path)
        .map_err(|e| format!("no PEM certificate: {e}"))
        .and_then(|der| {
            x509_cert::Certificate::from_der(der.as_ref())
                .map_err(|e| format!("not an X.509 certificate: {e}"))
        });
    let cert = match parsed {
        Ok(c) => c,
        Err(e) => {
            return Finding::fail(
                format!("{what}: {e}"),
                "install the PEM certificate issued for this device (`rollcall provision`)".into(),
            );
        }
    };
    let validity = &cert.tbs_certificate.validity;
    let from = validity.not_before.to_unix_duration();
    let until = validity.not_after.to_unix_duration();
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (from_s, until_s) = (validity.not_before, validity.not_after);
    if now < from {
        Finding::fail(
            format!("{what}: not valid before {from_s}"),
            "check this machine's clock (see clock below); if it is right, the certificate was \
             issued with a future date: reissue it"
                .into(),
        )
    } else if now > until {
        Finding::fail(
            format!("{what}: expired on {until_s}"),
            "renew it (`rollcall ca renew <device>` or your campus PKI) and install it, then \
             `systemctl restart rollcalld`"
                .into(),
        )
    } else if until - now < EXPIRY_WARN {
        Finding::warn(
            format!(
                "{what}: expires on {until_s}, in {}",
                crate::status::age((until - now).as_secs())
            ),
            "renew it now (`rollcall ca renew <device>`, or the campus PKI for its CA): once \
             expired, the broker refuses this gateway"
                .into(),
        )
    } else {
        Finding::ok(format!("{what}: valid until {until_s}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_is_the_mqtt_311_packet() {
        assert_eq!(
            mqtt_connect("ab"),
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 2, b'a', b'b'
            ]
        );
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_unreachable_with_the_fix() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let (f, stream) = broker("127.0.0.1", port).await;
        assert!(stream.is_none());
        assert_eq!(f.level, super::super::Level::Fail);
        assert!(
            f.fix
                .as_deref()
                .unwrap_or_default()
                .contains("nothing listens"),
            "{f:?}"
        );
    }
}
