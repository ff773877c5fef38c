//! Prometheus metrics, served at `http://<metrics.listen>/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How a presented credential ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// Stored, student known.
    accepted,
    /// Stored, credential not on the roster.
    unknown,
    /// Not stored: same person within the duplicate window.
    duplicate,
    /// Not stored: journal at capacity or disk full.
    storage_full,
    /// Not stored: the journal failed otherwise.
    failed,
}

/// Label set of `rollcall_punches_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What became of the punch (the `outcome` label).
    pub outcome: Outcome,
}

/// Label set of `rollcall_acks_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AckLabels {
    /// advanced, stale, wrong_epoch, beyond, foreign_device, undecodable, invalid, oversized.
    pub result: String,
}

/// Label set of `rollcall_refused_punches_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// One of [`REFUSAL_REASONS`], or `other`.
    pub reason: &'static str,
}

/// The refusal reason codes counted under their own label; any other code a centre sends is
/// counted as `other`, so a centre (or whoever can publish on the ack topic) cannot grow the
/// metrics without bound.
pub const REFUSAL_REASONS: [&str; 5] = [
    "unknown_device",
    "disabled_device",
    "invalid_punch",
    "database_rejected",
    "simulated",
];

/// The metric label for a refusal reason code.
pub fn refusal_label(code: &str) -> &'static str {
    REFUSAL_REASONS
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("other")
}

/// Label set of `rollcall_reader_up`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderLabels {
    /// The reader's id.
    pub reader: String,
}

/// Label set of `rollcall_client_cert_expiry_timestamp_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// The certificate file (`mqtt.tls.cert_file`).
    pub file: String,
}

/// Every metric of rollcalld.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Punches by outcome.
    pub punches: Family<OutcomeLabels, Counter>,
    /// Unacked punches in the journal.
    pub journal_depth: Gauge,
    /// Most unacked punches the journal holds (`journal.capacity`); past it, punches are refused.
    pub journal_capacity: Gauge,
    /// Age of the oldest unacked punch, seconds.
    pub oldest_unacked_age_seconds: Gauge,
    /// Batches published to the broker (re-sends included).
    pub batches_published: Counter,
    /// Punches published (re-sends included).
    pub punches_published: Counter,
    /// Application acks by result.
    pub acks: Family<AckLabels, Counter>,
    /// Punches deleted after an ack.
    pub punches_acked: Counter,
    /// Punches the centre acked as refused, by reason.
    pub refused: Family<RefusalLabels, Counter>,
    /// MQTT connections established after the first.
    pub reconnects: Counter,
    /// Re-sends caused by an ack timeout.
    pub retransmits: Gauge,
    /// 1 if the MQTT link is up.
    pub link_up: Gauge,
    /// 1 per healthy reader.
    pub reader_up: Family<ReaderLabels, Gauge>,
    /// 1 while the kernel says the clock is NTP-synchronised; read at each scrape.
    pub clock_synced: Gauge,
    /// notAfter of the MQTT client certificate, unix seconds (0 when the file cannot be read
    /// or parsed, so the expiry alert fires); read from the file at each scrape, so a renewed
    /// certificate shows without a restart. Empty without TLS.
    pub client_cert_expiry: Family<CertLabels, Gauge>,
    client_cert_file: std::sync::OnceLock<std::path::PathBuf>,
    /// Version of the roster the centre sent (0: none; a roster file's `version`).
    pub roster_version: Gauge,
    /// Fingerprint templates loaded into the modules and the software matcher.
    pub templates_loaded: Gauge,
    /// Library size of the EF01 modules (the smallest, with several); 0 without modules.
    pub module_capacity: Gauge,
    /// Enrolments in the outbox, waiting for the centre's verdict.
    pub enrolment_outbox: Gauge,
    /// The centre's verdicts on enrolments, by result (accepted, refused).
    pub enrolment_results: Family<ResultLabels, Counter>,
}

/// Label set of `rollcall_enrolment_results_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// accepted or refused.
    pub result: &'static str,
}

impl Metrics {
    /// Counts one punch outcome.
    pub fn punch(&self, outcome: Outcome) {
        self.punches.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts one ack result.
    pub fn ack(&self, result: &str) {
        self.acks
            .get_or_create(&AckLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts `count` punches refused by the centre for `code`.
    pub fn refused(&self, code: &str, count: u64) {
        self.refused
            .get_or_create(&RefusalLabels {
                reason: refusal_label(code),
            })
            .inc_by(count);
    }

    /// Counts the centre's verdict on one enrolment.
    pub fn enrolment_result(&self, accepted: bool) {
        let result = if accepted { "accepted" } else { "refused" };
        self.enrolment_results
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Reports the expiry of the client certificate at `path` (`mqtt.tls.cert_file`).
    pub fn watch_client_certificate(&self, path: std::path::PathBuf) {
        let _ = self.client_cert_file.set(path);
    }

    /// Values read when scraped rather than pushed by the code that owns them.
    fn refresh(&self) {
        // Every known refusal reason is exposed from the start (at 0), so `increase()` sees the
        // first refusal.
        for reason in REFUSAL_REASONS.into_iter().chain(["other"]) {
            let _ = self.refused.get_or_create(&RefusalLabels { reason });
        }
        let (_, clock) = crate::clock::now();
        self.clock_synced.set(i64::from(clock.ntp_synced));
        if let Some(path) = self.client_cert_file.get() {
            let not_after = match certificate_not_after(path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "client certificate unreadable");
                    0
                }
            };
            self.client_cert_expiry
                .get_or_create(&CertLabels {
                    file: path.display().to_string(),
                })
                .set(not_after);
        }
    }

    fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::with_prefix("rollcall");
        r.register(
            "punches",
            "Presented credentials by outcome",
            self.punches.clone(),
        );
        r.register(
            "journal_depth",
            "Unacked punches held in the journal",
            self.journal_depth.clone(),
        );
        r.register(
            "journal_capacity",
            "Most unacked punches the journal holds",
            self.journal_capacity.clone(),
        );
        r.register(
            "oldest_unacked_age_seconds",
            "Age of the oldest unacked punch",
            self.oldest_unacked_age_seconds.clone(),
        );
        r.register(
            "batches_published",
            "Punch batches published",
            self.batches_published.clone(),
        );
        r.register(
            "punches_published",
            "Punches published, re-sends included",
            self.punches_published.clone(),
        );
        r.register(
            "acks",
            "Application acks received, by result",
            self.acks.clone(),
        );
        r.register(
            "punches_acked",
            "Punches deleted after the centre's ack",
            self.punches_acked.clone(),
        );
        r.register(
            "refused_punches",
            "Punches the centre stored as refused (not counted as attendance), by reason",
            self.refused.clone(),
        );
        r.register(
            "mqtt_reconnects",
            "MQTT connections after the first",
            self.reconnects.clone(),
        );
        r.register(
            "retransmits",
            "Re-sends after an ack timeout",
            self.retransmits.clone(),
        );
        r.register(
            "link_up",
            "1 when the MQTT link is up",
            self.link_up.clone(),
        );
        r.register(
            "reader_up",
            "1 when the reader answers",
            self.reader_up.clone(),
        );
        r.register(
            "clock_synced",
            "1 when the kernel says the clock is NTP-synchronised",
            self.clock_synced.clone(),
        );
        r.register(
            "roster_version",
            "Version of the room's roster held (0: none)",
            self.roster_version.clone(),
        );
        r.register(
            "templates_loaded",
            "Fingerprint templates loaded into the modules and the software matcher",
            self.templates_loaded.clone(),
        );
        r.register(
            "module_capacity",
            "Library size of the fingerprint modules (0 without modules)",
            self.module_capacity.clone(),
        );
        r.register(
            "enrolment_outbox",
            "Enrolments waiting for the centre's verdict",
            self.enrolment_outbox.clone(),
        );
        r.register(
            "enrolment_results",
            "The centre's verdicts on enrolments made here, by result",
            self.enrolment_results.clone(),
        );
        r.register(
            "client_cert_expiry_timestamp_seconds",
            "notAfter of the MQTT client certificate (unix seconds; 0 when unreadable)",
            self.client_cert_expiry.clone(),
        );
        r
    }

    /// The text exposition of every metric.
    pub fn render(self: &Arc<Self>) -> String {
        self.refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }
}

/// The notAfter (unix seconds) of the first certificate in the PEM file at `path`.
pub fn certificate_not_after(path: &std::path::Path) -> Result<i64, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use x509_cert::der::Decode;
    let der =
        CertificateDer::from_pem_file(path).map_err(|e| format!("no PEM certificate: {e}"))?;
    let cert = x509_cert::Certificate::from_der(der.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let secs = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    i64::try_from(secs).map_err(|_| "notAfter out of range".to_owned())
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let (mut sock, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let request = String::from_utf8_lossy(&buf[..n]);
            let response = if request.starts_with("GET /metrics") {
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = sock.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_outside_the_known_set_share_one_label() {
        let m = Arc::new(Metrics::default());
        m.refused("disabled_device", 3);
        m.refused("unknown_device", 1);
        for i in 0..100 {
            m.refused(&format!("made_up_{i}"), 1);
        }
        let text = m.render();
        assert!(
            text.contains("rollcall_refused_punches_total{reason=\"disabled_device\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("rollcall_refused_punches_total{reason=\"other\"} 100"),
            "{text}"
        );
        assert_eq!(
            text.matches("rollcall_refused_punches_total{").count(),
            REFUSAL_REASONS.len() + 1,
            "every known reason and `other`, no more: {text}"
        );
        assert!(
            text.contains("rollcall_refused_punches_total{reason=\"invalid_punch\"} 0"),
            "{text}"
        );
    }

    /// `openssl req -x509 -newkey ec -days 3650 -subj /CN=room-101`; `openssl x509 -enddate`
    /// says notAfter=Nov 26 09:08:43 2036 GMT, which `date +%s` makes 2111303323.
    const CERT: &str = "-----BEGIN CERTIFICATE-----\n\
MIIBfDCCASGgAwIBAgIUd6EtKTKN45NeiVndxoEeJhOuyHwwCgYIKoZIzj0EAwIw\n\
EzERMA8GA1UEAwwIcm9vbS0xMDEwHhcNMjYxMTI5MDkwODQzWhcNMzYxMTI2MDkw\n\
ODQzWjATMREwDwYDVQQDDAhyb29tLTEwMTBZMBMGByqGSM49AgEGCCqGSM49AwEH\n\
A0IABOjm474tWaAUKXGOVq9lcM8vx/YeLZgrZhWbj0WoqNpe9BjJNFOkFmUKNy7E\n\
ES37cTkg1DCMMS0Owpe+Wp9b8qSjUzBRMB0GA1UdDgQWBBSoQB9yQOl3B61uE4UD\n\
5mapUGpdEjAfBgNVHSMEGDAWgBSoQB9yQOl3B61uE4UD5mapUGpdEjAPBgNVHRMB\n\
Af8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQDmoyLLVmhiSk7vFCD1fmpfZo1g\n\
Q+ur9CUrgAfLS1E7WAIhAMkFkfuzQOtdkhXbhlPtkPadJlPWgrm75wYwuzGrgLbr\n\
-----END CERTIFICATE-----";

    #[test]
    fn client_certificate_expiry_is_its_not_after_and_zero_when_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("device.crt");
        std::fs::write(&good, CERT).unwrap();
        assert_eq!(certificate_not_after(&good), Ok(2_111_303_323));
        let m = Arc::new(Metrics::default());
        assert!(
            !m.render()
                .contains("rollcall_client_cert_expiry_timestamp_seconds{"),
            "no TLS, no sample"
        );
        m.watch_client_certificate(good.clone());
        let text = m.render();
        assert!(
            text.contains(&format!(
                "rollcall_client_cert_expiry_timestamp_seconds{{file=\"{}\"}} 2111303323",
                good.display()
            )),
            "{text}"
        );
        std::fs::write(
            &good,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(certificate_not_after(&good).is_err());
        assert!(
            m.render().contains("} 0\n"),
            "an unreadable certificate reads as expired"
        );
    }

    #[test]
    fn clock_state_is_read_at_each_scrape() {
        let text = Arc::new(Metrics::default()).render();
        assert!(
            text.contains("rollcall_clock_synced 0") || text.contains("rollcall_clock_synced 1"),
            "{text}"
        );
    }
}
