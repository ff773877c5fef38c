//! The MQTT side: a shared, persistent subscription to every device's punches and status, a
//! batching writer loop, and the acks, which go out only after COMMIT.
//!
//! Two tasks: the event loop (rumqttc must be polled continuously, for keep-alives and to send
//! our acks) hands every publish to the writer over an unbounded channel. The channel is
//! bounded in practice by the broker: it sends at most its in-flight window of unacked QoS 1
//! messages (Mosquitto `max_inflight_messages`, 20 by default; raise it for ingest), and we
//! ack only after COMMIT. The writer takes what has arrived (up to the batch limits, waiting
//! at most `linger_ms` for more), writes it in one transaction, then acks each message to the
//! broker and publishes each device's application ack (QoS 1). A batch that fails on a lost
//! connection is retried with backoff; one that PostgreSQL refuses outright is split into
//! single messages so only the culprit goes to the dead letters.

use crate::IngestError;
use crate::config::Config;
use crate::db::DbError;
use crate::db::writer::{self, AckOut, BatchReport, WriterSettings};
use crate::metrics::{DeviceLabel, Metrics};
use crate::punch::{DeadLetter, DeadReason, Envelope, Message};
use deadpool_postgres::Pool;
use rollcall_protocol::{topic, v1};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, Transport};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// The largest packet MQTT can express (a 4-byte remaining length: 256 MiB - 1).
const MQTT_MAX_PACKET: usize = 268_435_455;

struct Incoming {
    publish: Publish,
    received: Instant,
}

/// Builds the client options from the config.
pub fn mqtt_options(cfg: &Config) -> Result<MqttOptions, IngestError> {
    let b = &cfg.mqtt.broker;
    let mut o = MqttOptions::new(
        format!("rollcall-ingest-{}", cfg.node_name),
        b.host.clone(),
        b.port,
    );
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(cfg.mqtt.keep_alive)
        // Read any packet MQTT allows: one larger than our limit is then consumed and
        // dead-lettered as `oversized`. A smaller client limit would drop the connection on
        // it, and the broker would redeliver it on every reconnect, stopping all recording.
        // The broker's `message_size_limit` is the first line of defence for memory.
        .set_max_packet_size(MQTT_MAX_PACKET, 64 * 1024)
        .set_inflight(1000);
    if let Some(user) = &cfg.mqtt.username {
        let pass = match &cfg.mqtt.password_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| {
                    IngestError::Setup(format!("mqtt.password_file {}: {e}", p.display()))
                })?
                .trim()
                .to_string(),
            None => String::new(),
        };
        o.set_credentials(user, pass);
    }
    if b.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| IngestError::Setup(format!("{}: {e}", p.display())))
        };
        let ca = match &cfg.mqtt.ca_file {
            Some(p) => read(p)?,
            None => return Err(IngestError::Setup("mqtts:// needs mqtt.ca_file".into())),
        };
        let client_auth = match (&cfg.mqtt.client_cert, &cfg.mqtt.client_key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        o.set_transport(Transport::tls(ca, client_auth, None));
    }
    Ok(o)
}

fn shared(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

async fn event_loop(
    mut el: EventLoop,
    client: AsyncClient,
    group: String,
    txs: Vec<mpsc::UnboundedSender<Incoming>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => break,
            ev = el.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let w = route(&p.topic, txs.len());
                if txs[w]
                    .send(Incoming {
                        publish: p,
                        received: Instant::now(),
                    })
                    .is_err()
                {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                backoff = Duration::from_millis(200);
                metrics.broker_connects.inc();
                info!(session_present = c.session_present, "connected to broker");
                // Re-subscribing on a resumed session is harmless; on a new one it is needed.
                for f in [topic::ALL_PUNCHES, topic::ALL_STATUS] {
                    if let Err(e) = client.try_subscribe(shared(&group, f), QoS::AtLeastOnce) {
                        warn!(error = %e, "subscribe request not queued");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker connection lost; reconnecting");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    // Flush our queued acks and the DISCONNECT (bounded).
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(ev) = el.poll().await {
            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
}

/// Consumes until `stop`; returns after the batch in flight is committed (and acked) or
/// abandoned (not acked: the broker redelivers it).
pub async fn run(
    cfg: &Config,
    pool: Pool,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<(), IngestError> {
    let opts = mqtt_options(cfg)?;
    let (client, mut el) = AsyncClient::new(opts, 4096);
    // Acks are small packets: without NODELAY, Nagle holds them back ~40 ms.
    el.network_options.set_tcp_nodelay(true);
    let writers = cfg.ingest.writers;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..writers).map(|_| mpsc::unbounded_channel()).unzip();
    let loop_stop = CancellationToken::new();
    let el_task = tokio::spawn(event_loop(
        el,
        client.clone(),
        cfg.mqtt.share_group.clone(),
        txs,
        metrics.clone(),
        loop_stop.clone(),
    ));
    let settings = Arc::new(WriterSettings::from_config(cfg));
    let mut tasks = tokio::task::JoinSet::new();
    for rx in rxs {
        let w = Writer {
            client: client.clone(),
            pool: pool.clone(),
            settings: settings.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
            max_messages: cfg.ingest.max_batch_messages,
            max_punches: cfg.ingest.max_batch_punches,
            linger: cfg.ingest.linger,
        };
        tasks.spawn(w.run(rx));
    }
    while tasks.join_next().await.is_some() {}
    loop_stop.cancel();
    let _ = el_task.await;
    Ok(())
}

/// One writer: its own share of the devices (by hash of the device id), so batches of one
/// device are written in order and writers never contend on a device's cursor row.
struct Writer {
    client: AsyncClient,
    pool: Pool,
    settings: Arc<WriterSettings>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    max_messages: usize,
    max_punches: usize,
    linger: Duration,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Incoming>) {
        loop {
            let first = tokio::select! {
                _ = self.stop.cancelled() => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            let mut batch = vec![first];
            let mut punches = 0usize;
            let deadline = tokio::time::Instant::now() + self.linger;
            while batch.len() < self.max_messages && punches < self.max_punches {
                let next = match rx.try_recv() {
                    Ok(m) => m,
                    Err(_) => tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => break,
                        m = rx.recv() => match m { Some(m) => m, None => break },
                    },
                };
                punches += next.publish.payload.len() / 64; // rough: a punch is ~100 bytes of CBOR
                batch.push(next);
            }
            let envs: Vec<Envelope> = batch
                .iter()
                .map(|i| Envelope::new(&i.publish.topic, i.publish.payload.clone()))
                .collect();
            let Some(report) =
                commit_with_retry(&self.pool, &envs, &self.settings, &self.metrics, &self.stop)
                    .await
            else {
                info!(
                    messages = batch.len(),
                    "shutdown with a batch not committed: abandoned, the broker redelivers it"
                );
                break;
            };
            let committed = Instant::now();
            for i in &batch {
                if let Err(e) = self.client.ack(&i.publish).await {
                    warn!(error = %e, "broker ack not queued");
                }
            }
            for a in &report.acks {
                let ack = ack_message(a);
                for r in &a.refusals {
                    warn!(device = %a.device_id, reason = r.reason.as_str(), first_seq = r.first_seq,
                          last_seq = r.last_seq, count = r.count, "punches stored as refused; the device is told why");
                }
                let t = topic::build(&a.site, &a.device_id, topic::Kind::Ack);
                if let Err(e) = self
                    .client
                    .publish(t, QoS::AtLeastOnce, false, ack.encode())
                    .await
                {
                    warn!(device = %a.device_id, error = %e, "device ack not queued");
                }
            }
            self.metrics
                .ack_after_commit_seconds
                .observe(committed.elapsed().as_secs_f64());
            record(&self.metrics, &batch, &envs, &report);
        }
    }
}

/// The device's ack, with the refusals it covers.
fn ack_message(a: &AckOut) -> v1::Ack {
    let refusals: Vec<v1::Refusal> = a
        .refusals
        .iter()
        .take(v1::MAX_REFUSALS)
        .map(|r| v1::Refusal {
            reason: r.reason.as_str().into(),
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            count: r.count,
            detail: r.reason.remedy().into(),
        })
        .collect();
    v1::Ack {
        device_id: a.device_id.clone(),
        epoch: a.epoch,
        up_to_seq: a.up_to_seq,
        refusals: (!refusals.is_empty()).then_some(refusals),
    }
}

/// Which writer handles a topic: by its device level, so one device stays on one writer.
fn route(topic_name: &str, writers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let device = topic_name.split('/').nth(3).unwrap_or("");
    let mut h = std::collections::hash_map::DefaultHasher::new();
    device.hash(&mut h);
    (h.finish() % writers.max(1) as u64) as usize
}

fn record(m: &Metrics, batch: &[Incoming], envs: &[Envelope], r: &BatchReport) {
    let mut n = 0u64;
    for e in envs {
        let kind = match &e.msg {
            Message::Punches(b) => {
                n += b.punches.len() as u64;
                "punches"
            }
            Message::Status(_) => "status",
            Message::Dead(_) => "dead",
        };
        Metrics::inc(&m.messages, kind, 1);
    }
    m.batch_punches.observe(n as f64);
    for (o, c) in &r.outcomes {
        Metrics::inc(&m.punches, o, *c);
    }
    m.replayed.inc_by(r.replayed);
    for d in &r.dead {
        Metrics::inc(&m.dead_letters, d.as_str(), 1);
    }
    for (dev, p) in &r.pending {
        m.unacked_seqs
            .get_or_create(&DeviceLabel {
                device: dev.clone(),
            })
            .set(*p as i64);
    }
    // Per-device families only for registered devices (the ones with a pending count), so no
    // one can grow /metrics by publishing under new ids.
    let registered: std::collections::HashSet<&str> =
        r.pending.iter().map(|(d, _)| d.as_str()).collect();
    for (i, e) in batch.iter().zip(envs) {
        if let Message::Punches(b) = &e.msg
            && registered.contains(b.device_id.as_str())
        {
            m.ack_lag_seconds
                .get_or_create(&DeviceLabel {
                    device: b.device_id.clone(),
                })
                .set(i.received.elapsed().as_secs_f64());
        }
    }
    debug!(
        messages = batch.len(),
        punches = n,
        replayed = r.replayed,
        acks = r.acks.len(),
        "batch committed"
    );
}

async fn write_once(
    pool: &Pool,
    envs: &[Envelope],
    s: &WriterSettings,
) -> Result<BatchReport, DbError> {
    let mut c = pool.get().await?;
    writer::write_batch(&mut c, envs, s, chrono::Utc::now()).await
}

/// Commits `envs`, retrying transient failures with backoff; `None` if shutdown came first.
async fn commit_with_retry(
    pool: &Pool,
    envs: &[Envelope],
    s: &WriterSettings,
    m: &Metrics,
    stop: &CancellationToken,
) -> Option<BatchReport> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        let t0 = Instant::now();
        match write_once(pool, envs, s).await {
            Ok(r) => {
                m.commit_seconds.observe(t0.elapsed().as_secs_f64());
                return Some(r);
            }
            Err(e) if e.is_transient() => {
                attempt += 1;
                m.db_retries.inc();
                warn!(error = %e, attempt, retry_in_ms = backoff.as_millis() as u64, "batch not committed; retrying");
            }
            Err(e) if envs.len() > 1 => {
                warn!(error = %e, messages = envs.len(), "batch refused by PostgreSQL; writing its messages one by one");
                let mut total = BatchReport::default();
                for env in envs {
                    let r = Box::pin(commit_with_retry(
                        pool,
                        std::slice::from_ref(env),
                        s,
                        m,
                        stop,
                    ))
                    .await?;
                    merge(&mut total, r);
                }
                return Some(total);
            }
            Err(e) if matches!(envs[0].msg, Message::Dead(_)) => {
                // Even the dead letter is refused (schema missing?): a person must act; nothing
                // is acked meanwhile, so retry slowly.
                attempt += 1;
                m.db_retries.inc();
                error!(error = %e, attempt, "PostgreSQL refuses to store a dead letter; run `rollcall-ingest check`");
                backoff = Duration::from_secs(5);
            }
            Err(e) => {
                if let Message::Punches(b) = &envs[0].msg
                    && b.database_refused.is_none()
                {
                    // Store its punches as refused, text escaped, so the device's ack moves on;
                    // a dead letter would leave the cursor stuck and be written on every re-send.
                    error!(error = %e, topic = %envs[0].topic, "punches refused by PostgreSQL; stored as database_rejected");
                    let refused = Envelope {
                        topic: envs[0].topic.clone(),
                        payload: envs[0].payload.clone(),
                        msg: Message::Punches(b.database_refused(e.to_string())),
                    };
                    return Box::pin(commit_with_retry(
                        pool,
                        std::slice::from_ref(&refused),
                        s,
                        m,
                        stop,
                    ))
                    .await;
                }
                error!(error = %e, topic = %envs[0].topic, "message refused by PostgreSQL; dead-lettered");
                let dead = Envelope {
                    topic: envs[0].topic.clone(),
                    payload: envs[0].payload.clone(),
                    msg: Message::Dead(DeadLetter {
                        topic: envs[0].topic.clone(),
                        device_id: None,
                        reason: DeadReason::DatabaseRejected,
                        detail: e.to_string(),
                        payload: envs[0].payload.iter().take(64 * 1024).copied().collect(),
                        size: envs[0].payload.len(),
                    }),
                };
                return Box::pin(commit_with_retry(
                    pool,
                    std::slice::from_ref(&dead),
                    s,
                    m,
                    stop,
                ))
                .await;
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn merge(total: &mut BatchReport, r: BatchReport) {
    total.acks.extend(r.acks);
    for (k, v) in r.outcomes {
        *total.outcomes.entry(k).or_default() += v;
    }
    total.replayed += r.replayed;
    total.dead.extend(r.dead);
    total.heartbeats += r.heartbeats;
    total.unregistered += r.unregistered;
    total.released += r.released;
    for (k, v) in r.reasons {
        *total.reasons.entry(k).or_default() += v;
    }
    total.pending.extend(r.pending);
}
