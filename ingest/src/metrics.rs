//! Prometheus metrics and a minimal `/metrics` HTTP endpoint.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Label {
    /// Value.
    pub kind: String,
}

/// Device label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    /// Device id.
    pub device: String,
}

/// Job label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    /// Job name.
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
    pub punches: Family<Label, Counter>,
    /// Replayed punches (already in the ledger).
    pub replayed: Counter,
    /// Dead letters by reason.
    pub dead_letters: Family<Label, Counter>,
    /// Punches per transaction.
    pub batch_punches: Histogram,
    /// Seconds from BEGIN to COMMIT.
    pub commit_seconds: Histogram,
    /// Seconds from COMMIT to the broker and device acks being queued.
    pub ack_after_commit_seconds: Histogram,
    /// Seconds from receiving a message to publishing its device ack.
    pub ack_lag_seconds: Family<DeviceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Seqs seen but not yet ackable (a gap) per device.
    pub unacked_seqs: Family<DeviceLabel, Gauge>,
    /// Failed transactions retried.
    pub db_retries: Counter,
    /// Job runs by job and result.
    pub job_runs: Family<JobLabel, Counter>,
    /// Devices currently silent.
    pub silent_devices: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers everything.
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
        Metrics { registry, ..m }
    }

    /// Text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Counts `n` under `label` of a family.
    pub fn inc(family: &Family<Label, Counter>, label: &str, n: u64) {
        family
            .get_or_create(&Label {
                kind: label.to_string(),
            })
            .inc_by(n);
    }
}

/// Serves `GET /metrics` until cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (mut sock, _) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = listener.accept() => r?,
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut buf)).await;
            let body = m.encode();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
        });
    }
}
