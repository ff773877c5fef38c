//! Prometheus metrics and a minimal `/metrics` HTTP endpoint.
//!
//! The endpoint must never cost the service its recording: at most [`MAX_SCRAPES`] connections
//! are served at once (more wait in the kernel's backlog and take no descriptor), each has
//! [`SCRAPE_TIMEOUT`] to finish, and an `accept` failure (EMFILE "too many open files" when the
//! process is out of descriptors, ECONNABORTED, ...) is logged at most once per
//! [`ACCEPT_ERROR_LOG_EVERY`] and retried after [`ACCEPT_BACKOFF`], never the end of the endpoint.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The `kind` label of the message counter (punches, status, dead).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    /// A message kind.
    pub kind: String,
}

/// The `outcome` label of the punch counter, named as rollcalld names its own punch outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// A ledger outcome (recorded, duplicate, ...).
    pub outcome: String,
}

/// The `reason` label of the dead-letter counter, named as rollcalld names refusal reasons.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A dead-letter reason (undecodable, oversized, ...).
    pub reason: String,
}

/// A label set made of one value, so [`Metrics::inc`] serves every one-label counter.
pub trait OneLabel {
    /// The label set with `value`.
    fn of(value: &str) -> Self;
}

impl OneLabel for Label {
    fn of(value: &str) -> Self {
        Label { kind: value.into() }
    }
}

impl OneLabel for OutcomeLabel {
    fn of(value: &str) -> Self {
        OutcomeLabel {
            outcome: value.into(),
        }
    }
}

impl OneLabel for ReasonLabel {
    fn of(value: &str) -> Self {
        ReasonLabel {
            reason: value.into(),
        }
    }
}

/// Every dead-letter reason, as `DeadReason::as_str` spells them.
pub const DEAD_LETTER_REASONS: [&str; 5] = [
    "bad_topic",
    "oversized",
    "undecodable",
    "device_mismatch",
    "database_rejected",
];

/// Device label. Only ever created for a device registered in the database: a label per id
/// seen on the wire would let anyone who can publish grow `/metrics` (and ingest's memory)
/// without bound.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// The device's id (only registered devices get a label).
    pub device: String,
}

/// The `job` label of the job counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    /// The job, as `Job::name` spells it (e.g. `generate_sessions`).
    pub job: String,
    /// ok | failed | skipped.
    pub result: String,
}

/// All of ingest's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// MQTT messages by kind (punches, status, dead).
    pub messages: Family<Label, Counter>,
    /// New punches by outcome.
    pub punches: Family<OutcomeLabel, Counter>,
    /// Replayed punches (already in the ledger).
    pub replayed: Counter,
    /// Dead letters by reason.
    pub dead_letters: Family<ReasonLabel, Counter>,
    /// Punches per transaction.
    pub batch_punches: Histogram,
    /// Seconds from BEGIN to COMMIT.
    pub commit_seconds: Histogram,
    /// Seconds from COMMIT to the broker and device acks being queued.
    pub ack_after_commit_seconds: Histogram,
    /// Seconds from receiving a message to publishing its device ack. Set only for registered
    /// devices (see [`DeviceLabel`]).
    pub ack_lag_seconds: Family<DeviceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Seqs seen but not yet ackable (a gap) per device. Set only for registered devices (see
    /// [`DeviceLabel`]).
    pub unacked_seqs: Family<DeviceLabel, Gauge>,
    /// Failed transactions retried.
    pub db_retries: Counter,
    /// Job runs by job and result.
    pub job_runs: Family<JobLabel, Counter>,
    /// Devices currently silent.
    pub silent_devices: Gauge,
    /// MQTT connections established (CONNACKs received).
    pub broker_connects: Counter,
    /// Rooms flagged with an open session and no punches (`rollcall.room_alert` rows not
    /// cleared), refreshed from the database by [`crate::fleet::refresh_gauges`].
    pub open_room_alerts: Gauge,
    /// Registered gateways by what their last status says (`online`, `offline` after a last
    /// will, `silent` past the threshold), refreshed like [`Metrics::open_room_alerts`].
    pub gateways: Family<StateLabel, Gauge>,
    /// ZKTeco terminals that have called, by whether their next request would be admitted
    /// (`admitted`, `unregistered`, `disabled`), refreshed by [`crate::adms::views`].
    pub adms_terminals: Family<StateLabel, Gauge>,
    /// Uncleared `rollcall.adms_alert` rows by kind (`clock_jump`, `silent_loss`, `other`).
    pub adms_alerts_open: Family<Label, Gauge>,
}

/// The `state` label of the gateway gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// online | offline | silent (gateways); admitted | unregistered | disabled (terminals).
    pub state: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `rollcall_ingest` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rollcall_ingest");
        let m = Metrics {
            messages: Family::default(),
            punches: Family::default(),
            replayed: Counter::default(),
            dead_letters: Family::default(),
            batch_punches: Histogram::new(exponential_buckets(1.0, 4.0, 9)),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            ack_after_commit_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            ack_lag_seconds: Family::default(),
            unacked_seqs: Family::default(),
            db_retries: Counter::default(),
            job_runs: Family::default(),
            silent_devices: Gauge::default(),
            broker_connects: Counter::default(),
            open_room_alerts: Gauge::default(),
            gateways: Family::default(),
            adms_terminals: Family::default(),
            adms_alerts_open: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "messages",
            "MQTT messages consumed by kind",
            m.messages.clone(),
        );
        registry.register(
            "punches",
            "New punches by ledger outcome",
            m.punches.clone(),
        );
        registry.register(
            "replayed_punches",
            "Punches already in the ledger",
            m.replayed.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages dead-lettered by reason",
            m.dead_letters.clone(),
        );
        registry.register(
            "batch_punches",
            "Punches per transaction",
            m.batch_punches.clone(),
        );
        registry.register(
            "commit_seconds",
            "Batch transaction time",
            m.commit_seconds.clone(),
        );
        registry.register(
            "ack_after_commit_seconds",
            "COMMIT to acks queued",
            m.ack_after_commit_seconds.clone(),
        );
        registry.register(
            "ack_lag_seconds",
            "Receive-to-ack time of the last batch",
            m.ack_lag_seconds.clone(),
        );
        registry.register(
            "unacked_seqs",
            "Seqs above the contiguous cursor",
            m.unacked_seqs.clone(),
        );
        registry.register(
            "db_retries",
            "Batch transactions retried",
            m.db_retries.clone(),
        );
        registry.register("job_runs", "Job runs by result", m.job_runs.clone());
        registry.register(
            "silent_devices",
            "Devices silent past the threshold",
            m.silent_devices.clone(),
        );
        registry.register(
            "broker_connects",
            "MQTT connections established (CONNACKs); a climbing value means a reconnect loop",
            m.broker_connects.clone(),
        );
        registry.register(
            "open_room_alerts",
            "Rooms with an open session and no punches (uncleared rollcall.room_alert rows)",
            m.open_room_alerts.clone(),
        );
        registry.register(
            "gateways",
            "Registered gateways by state: online, offline (last will) or silent",
            m.gateways.clone(),
        );
        registry.register(
            "adms_terminals",
            "ZKTeco terminals that have called, by state: admitted, unregistered or disabled (refused, keeping their records)",
            m.adms_terminals.clone(),
        );
        registry.register(
            "adms_alerts_open",
            "Uncleared ZKTeco terminal alerts by kind: clock_jump, silent_loss, other",
            m.adms_alerts_open.clone(),
        );
        // Every known reason starts at 0, so `increase()` sees the first dead letter after a
        // start (a series that appears at 1 has no increase).
        for reason in DEAD_LETTER_REASONS {
            Metrics::inc(&m.dead_letters, reason, 0);
        }
        Metrics { registry, ..m }
    }

    /// Every metric in Prometheus's text exposition format, for `/metrics`.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Counts `n` under `label` of a one-label family.
    pub fn inc<L>(family: &Family<L, Counter>, label: &str, n: u64)
    where
        L: OneLabel + Clone + std::hash::Hash + Eq,
    {
        family.get_or_create(&L::of(label)).inc_by(n);
    }
}

/// Most scrapes served at once.
pub const MAX_SCRAPES: usize = 16;
/// Time a scrape has to send its request and take the answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (the error usually lasts: no descriptor is free).
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this long about failing `accept`s.
pub const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate limit for a log line about a repeating error: the first occurrence is logged, then at
/// most one per `every`, saying how many were not logged in between. Time comes in as an
/// argument.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Logs at most once per `every`.
    pub fn new(every: Duration) -> Self {
        LogLimiter {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// An occurrence at `now`: `Some(n)` to log it, with `n` occurrences left unlogged since
    /// the last line; `None` to stay quiet.
    pub fn occurred(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The Content-Security-Policy of every answer (it only matters for the fleet page).
const FLEET_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Serves `GET /metrics` until cancelled, and with `fleet` the read-only fleet page
/// (`GET /fleet`, `GET /fleet.json`, see [`crate::fleet`]). Fails only when `addr` cannot be
/// bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    fleet: Option<Arc<crate::fleet::Fleet>>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut accept_errors = LogLimiter::new(ACCEPT_ERROR_LOG_EVERY);
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
        };
        let mut sock = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    if let Some(unlogged) = accept_errors.occurred(Instant::now()) {
                        warn!(%addr, error = %e, unlogged, "metrics endpoint cannot accept; retrying");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                    continue;
                }
            },
        };
        let (m, fleet) = (metrics.clone(), fleet.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, async {
                let mut buf = [0u8; 2048];
                let n = sock.read(&mut buf).await?;
                // Only the fleet paths are routed; every other path answers the metrics.
                let page = match (&fleet, crate::fleet::Page::of_request(&buf[..n])) {
                    (Some(f), Some(page)) => Some(f.answer(page).await),
                    _ => None,
                };
                let (content_type, body) = match page {
                    Some(answer) => answer,
                    None => (
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        m.encode(),
                    ),
                };
                // The fleet page needs its own inline script and style and its own JSON; the
                // policy denies everything else (no external load, no exfiltration, no framing)
                // should anything from the data ever reach the page as markup.
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\n\
                     x-content-type-options: nosniff\r\ncontent-security-policy: {FLEET_CSP}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                sock.write_all(head.as_bytes()).await?;
                sock.write_all(body.as_bytes()).await
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_logs_the_first_then_once_per_period_with_the_count_skipped() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = LogLimiter::new(10 * s);
        assert_eq!(l.occurred(t0), Some(0));
        assert_eq!(l.occurred(t0 + s), None);
        assert_eq!(l.occurred(t0 + 9 * s), None);
        assert_eq!(l.occurred(t0 + 10 * s), Some(2));
        assert_eq!(l.occurred(t0 + 11 * s), None);
        assert_eq!(l.occurred(t0 + 30 * s), Some(1));
    }

    #[test]
    fn broker_connects_is_exposed_with_its_help() {
        let m = Metrics::new();
        m.broker_connects.inc();
        m.broker_connects.inc();
        let text = m.encode();
        assert!(
            text.contains("# HELP rollcall_ingest_broker_connects MQTT connections established (CONNACKs); a climbing value means a reconnect loop"),
            "{text}"
        );
        assert!(
            text.contains("rollcall_ingest_broker_connects_total 2"),
            "{text}"
        );
    }

    #[test]
    fn every_dead_letter_reason_is_exposed_at_zero_from_the_start() {
        use crate::punch::DeadReason;
        // Exhaustive: a new reason fails to compile here until it is listed.
        let spelled = |r: DeadReason| match r {
            DeadReason::BadTopic
            | DeadReason::Oversized
            | DeadReason::Undecodable
            | DeadReason::DeviceMismatch
            | DeadReason::DatabaseRejected => r.as_str(),
        };
        let all = [
            DeadReason::BadTopic,
            DeadReason::Oversized,
            DeadReason::Undecodable,
            DeadReason::DeviceMismatch,
            DeadReason::DatabaseRejected,
        ];
        assert_eq!(all.map(spelled), DEAD_LETTER_REASONS);
        let text = Metrics::new().encode();
        for r in DEAD_LETTER_REASONS {
            assert!(
                text.contains(&format!(
                    "rollcall_ingest_dead_letters_total{{reason=\"{r}\"}} 0"
                )),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn busy_scrapes_wait_their_turn_instead_of_taking_descriptors() {
        let m = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let server = tokio::spawn(serve(addr, m, None, stop.clone()));
        // Idle connections fill every slot; one more scrape must still be answered once they go.
        let mut idle = Vec::new();
        for _ in 0..MAX_SCRAPES {
            idle.push(connect_retrying(addr).await);
        }
        let mut late = connect_retrying(addr).await;
        late.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 1];
        let early =
            tokio::time::timeout(Duration::from_millis(300), late.read_exact(&mut first)).await;
        assert!(early.is_err(), "answered while every slot was busy");
        drop(idle);
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), late.read_to_string(&mut answer))
            .await
            .expect("answered once the slots freed")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    async fn connect_retrying(addr: SocketAddr) -> tokio::net::TcpStream {
        for _ in 0..100 {
            if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("metrics endpoint never listened on {addr}");
    }
}
