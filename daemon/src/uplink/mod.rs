//! The uplink: the thin async shell around [`rollcall_protocol::uplink::Uplink`].
//!
//! The journal, not the MQTT client, is the source of truth: rumqttc's queue of unacknowledged
//! publishes lives in memory and can be dropped on reconnect, so this shell publishes what the
//! state machine asks for, straight from the journal, and deletes punches only on the centre's
//! application ack (sent after its database COMMIT). Everything unacked is re-sent after a
//! reconnect or an ack timeout; the centre dedupes on (device, epoch, seq).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_drivers::ReaderHealth;
use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::uplink::{AckOutcome, Action, Uplink, UplinkConfig};
use rollcall_protocol::v1::{Ack, DecodeError, ReaderStatus, Refusal, Status, encode_batch_raw};
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capture::Accept;
use crate::config::Config;
use crate::journal::actor::JournalHandle;
use crate::metrics::Metrics;

/// Everything the uplink needs.
#[derive(Debug)]
pub struct UplinkShell {
    /// The validated configuration.
    pub config: Config,
    /// The journal.
    pub journal: JournalHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The accept path (for reader health in the status).
    pub accept: Arc<Accept>,
    /// When rollcalld started.
    pub started: Instant,
}

/// MQTT's largest packet (the remaining-length field's maximum, 256 MiB - 1).
pub const MQTT_MAX_PACKET_BYTES: usize = 268_435_455;

/// rollcalld's version, reported in the status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl UplinkShell {
    /// Runs until `shutdown`; then publishes an "offline" status and disconnects. Punches not yet
    /// acked stay in the journal.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let cfg = &self.config;
        let device = cfg.device.id.clone();
        let punches_topic = topic::build(&cfg.device.site, &device, Kind::Punches);
        let ack_topic = topic::build(&cfg.device.site, &device, Kind::Ack);
        let status_topic = topic::build(&cfg.device.site, &device, Kind::Status);

        let stats = self.journal.stats();
        let (epoch, acked, stored) = {
            let s = *stats.borrow();
            (s.epoch, s.acked, s.last_seq)
        };
        let mut sm = Uplink::new(
            UplinkConfig {
                batch_max: cfg.mqtt.batch_max,
                window: cfg.mqtt.window,
                ack_timeout: cfg.mqtt.ack_timeout,
                ack_timeout_max: cfg.mqtt.ack_timeout * crate::config::ACK_TIMEOUT_BACKOFF,
            },
            epoch,
            acked,
            stored,
        );

        let mut opts = MqttOptions::new(cfg.client_id(), cfg.mqtt.host.clone(), cfg.mqtt.port);
        opts.set_keep_alive(cfg.mqtt.keep_alive);
        opts.set_clean_session(false);
        // Incoming: MQTT's largest packet. rumqttc treats a larger packet as a protocol error
        // and drops the connection, and the broker then redelivers the same message after every
        // reconnect, so anyone able to publish one oversized message on the ack topic would
        // keep the gateway reconnecting forever. Read whatever comes and let the ack decoder
        // refuse it by size. The broker's message_size_limit is the first line of defence (it
        // bounds the memory one message takes here); see the README's broker section.
        opts.set_max_packet_size(
            MQTT_MAX_PACKET_BYTES,
            rollcall_protocol::v1::MAX_MESSAGE_BYTES + 1024,
        );
        opts.set_last_will(LastWill::new(
            &status_topic,
            self.status(false, &sm, None).await.encode(),
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(tls) = &cfg.mqtt.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            opts.set_transport(Transport::Tls(TlsConfiguration::Simple {
                ca: read(&tls.ca_file)?,
                alpn: None,
                client_auth: Some((read(&tls.cert_file)?, read(&tls.key_file)?)),
            }));
        }
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        // Acks are small and latency-bound; Nagle's algorithm would hold them back.
        eventloop.network_options.set_tcp_nodelay(true);
        let (link_tx, mut link) = mpsc::channel(1024);
        let poller = tokio::spawn(poll_events(eventloop, link_tx, shutdown.child_token()));

        let mut stats_rx = stats.clone();
        let mut status_every = tokio::time::interval(cfg.mqtt.status_interval);
        let mut gauges_every = tokio::time::interval(Duration::from_secs(1));
        let mut connected_once = false;
        // The latest refusal from the centre, reported in every status until rollcalld restarts.
        let mut last_refusal: Option<Refusal> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);

        loop {
            let deadline = sm
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(far);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = link.recv() => match event {
                    Some(LinkEvent::Up) => {
                        if connected_once {
                            self.metrics.reconnects.inc();
                        }
                        connected_once = true;
                        self.metrics.link_up.set(1);
                        tracing::info!(broker = %cfg.mqtt.host, port = cfg.mqtt.port, "MQTT link up");
                        client.subscribe(&ack_topic, QoS::AtLeastOnce).await?;
                        client.publish(&status_topic, QoS::AtLeastOnce, true, self.status(true, &sm, last_refusal.as_ref()).await.encode()).await?;
                        sm.link_up();
                        self.accept.signal(rollcall_drivers::Signal::Online);
                    }
                    Some(LinkEvent::Down(why)) => {
                        if sm.is_online() {
                            tracing::warn!(error = %why, depth = sm.depth(), "MQTT link down; punches stay in the journal");
                            self.accept.signal(rollcall_drivers::Signal::Offline);
                        }
                        self.metrics.link_up.set(0);
                        sm.link_down();
                    }
                    Some(LinkEvent::Message(t, payload)) if t == ack_topic => {
                        if let Some(refusal) = self.on_ack(&mut sm, &payload) {
                            last_refusal = Some(refusal);
                            self.accept.signal(rollcall_drivers::Signal::Refused);
                            // At once, not at the next heartbeat: whoever watches the device
                            // should see the refusal while the person is still at the door.
                            let status = self.status(true, &sm, last_refusal.as_ref()).await;
                            client.publish(&status_topic, QoS::AtLeastOnce, true, status.encode()).await?;
                        }
                    }
                    Some(LinkEvent::Message(t, _)) => tracing::warn!(topic = %t, "unexpected message ignored"),
                    None => break,
                },
                changed = stats_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let last = stats_rx.borrow_and_update().last_seq;
                    sm.stored(last);
                }
                _ = tokio::time::sleep_until(deadline) => sm.tick(Instant::now()),
                _ = status_every.tick() => {
                    if sm.is_online() {
                        let status = self.status(true, &sm, last_refusal.as_ref()).await;
                        client.publish(&status_topic, QoS::AtLeastOnce, true, status.encode()).await?;
                    }
                }
                _ = gauges_every.tick() => self.update_gauges(&sm).await,
            }
            while let Some(action) = sm.poll(Instant::now()) {
                match action {
                    Action::Publish { first, last } => {
                        // A journal error is not the end of the uplink: what was not published
                        // is re-sent after the ack timeout, what was not deleted with the next ack.
                        let punches = match self.journal.read(first, last).await {
                            Ok(p) => p,
                            Err(e) => {
                                tracing::error!(first, last, error = %e, "journal read failed; the batch will be re-sent");
                                continue;
                            }
                        };
                        let n = punches.len() as u64;
                        let payload = encode_batch_raw(&device, epoch, &punches);
                        client
                            .publish(&punches_topic, QoS::AtLeastOnce, false, payload)
                            .await?;
                        self.metrics.batches_published.inc();
                        self.metrics.punches_published.inc_by(n);
                        tracing::info!(first, last, "batch published");
                    }
                    Action::Delete { up_to } => {
                        let deleted = match self.journal.ack(up_to).await {
                            Ok(n) => n,
                            Err(e) => {
                                tracing::error!(up_to, error = %e, "deleting acked punches failed; the next ack deletes them");
                                continue;
                            }
                        };
                        self.metrics.punches_acked.inc_by(deleted);
                        tracing::info!(
                            up_to,
                            deleted,
                            depth = sm.depth(),
                            "acked punches deleted from the journal"
                        );
                    }
                }
            }
            self.metrics.retransmits.set(sm.retransmits() as i64);
        }

        if sm.is_online() {
            let bye = self.status(false, &sm, last_refusal.as_ref()).await;
            let _ = client
                .publish(&status_topic, QoS::AtLeastOnce, true, bye.encode())
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                // Give the poller a moment to flush the goodbye before disconnecting.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = client.disconnect().await;
            })
            .await;
        }
        poller.abort();
        tracing::info!(
            depth = sm.depth(),
            "uplink stopped; unacked punches stay in the journal"
        );
        Ok(())
    }

    /// Applies an ack; returns the last of its refusals when it moved the acked position (a
    /// stale or repeated ack's refusals were reported when it first arrived).
    fn on_ack(&self, sm: &mut Uplink, payload: &[u8]) -> Option<Refusal> {
        let ack = match Ack::decode(payload) {
            Ok(a) => a,
            Err(e) => {
                let result = match e {
                    DecodeError::TooLarge { .. } => "oversized",
                    DecodeError::Invalid(_) => "invalid",
                    DecodeError::Cbor(_) | DecodeError::Trailing(_) => "undecodable",
                };
                self.metrics.ack(result);
                tracing::warn!(result, bytes = payload.len(), error = %e, "bad message on the ack topic ignored");
                return None;
            }
        };
        if ack.device_id != self.config.device.id {
            self.metrics.ack("foreign_device");
            tracing::warn!(device = %ack.device_id, "ack for another device ignored");
            return None;
        }
        let result = match sm.on_ack(ack.epoch, ack.up_to_seq) {
            AckOutcome::Advanced => "advanced",
            AckOutcome::Stale => "stale",
            AckOutcome::WrongEpoch => "wrong_epoch",
            AckOutcome::Beyond => "beyond",
        };
        self.metrics.ack(result);
        if result != "advanced" {
            tracing::debug!(
                result,
                epoch = ack.epoch,
                up_to = ack.up_to_seq,
                "ack ignored"
            );
            return None;
        }
        // Refused punches are acked like any other and deleted with them: re-sending would
        // change nothing. What is left is to make the refusal impossible to miss.
        let refusals = ack.refusals.unwrap_or_default();
        for r in &refusals {
            self.metrics.refused(&r.reason, r.count);
            tracing::error!(
                device = %self.config.device.id,
                reason = %r.reason,
                first_seq = r.first_seq,
                last_seq = r.last_seq,
                count = r.count,
                detail = %r.detail,
                "the centre refused punches: they are NOT counted as attendance"
            );
        }
        refusals.into_iter().last()
    }

    async fn update_gauges(&self, sm: &Uplink) {
        self.metrics.journal_depth.set(sm.depth() as i64);
        self.metrics
            .journal_capacity
            .set(self.journal.stats().borrow().capacity as i64);
        let age = self.oldest_age_s().await.unwrap_or(0);
        self.metrics.oldest_unacked_age_seconds.set(age as i64);
    }

    async fn oldest_age_s(&self) -> Option<u64> {
        let oldest = self.journal.oldest_captured_at_ms().await.ok()??;
        let (now, _) = crate::clock::now();
        Some(((now - oldest).max(0) / 1000) as u64)
    }

    async fn status(&self, online: bool, sm: &Uplink, last_refusal: Option<&Refusal>) -> Status {
        let (now, clock) = crate::clock::now();
        let health = self.accept.reader_health_snapshot();
        let readers = self
            .config
            .readers
            .iter()
            .map(|r| {
                let (healthy, detail) = match health.get(&r.id) {
                    Some(ReaderHealth::Down(why)) => (false, why.clone()),
                    _ => (true, String::new()),
                };
                ReaderStatus {
                    id: r.id.clone(),
                    kind: r.kind.as_str().to_owned(),
                    healthy,
                    detail,
                }
            })
            .collect();
        Status {
            device_id: self.config.device.id.clone(),
            version: VERSION.to_owned(),
            online,
            sent_at_ms: now,
            uptime_s: self.started.elapsed().as_secs(),
            epoch: sm.epoch(),
            journal_depth: sm.depth(),
            oldest_unacked_age_s: self.oldest_age_s().await,
            last_acked_seq: (sm.acked() > 0).then_some(sm.acked()),
            readers,
            clock,
            free_disk_bytes: crate::sys::free_bytes(&self.config.device.state_dir),
            last_refusal: last_refusal.cloned(),
        }
    }
}

enum LinkEvent {
    Up,
    Down(String),
    Message(String, bytes::Bytes),
}

/// Drives rumqttc's event loop (which also reconnects) and reports what matters.
async fn poll_events(
    mut eventloop: rumqttc::EventLoop,
    tx: mpsc::Sender<LinkEvent>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = eventloop.poll() => e,
        };
        let msg = match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                LinkEvent::Up
            }
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Message(p.topic, p.payload),
            Ok(_) => continue,
            Err(e) => {
                let why = describe(&e);
                if tx.send(LinkEvent::Down(why)).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused: is the broker running and is mqtt.host/port right?".into()
        }
        other => other.to_string(),
    }
}
