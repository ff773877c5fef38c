//! The uplink: the thin async shell around [`rollcall_protocol::uplink::Uplink`].
//!
//! The journal, not the MQTT client, is the source of truth: rumqttc's queue of unacknowledged
//! publishes lives in memory and can be dropped on reconnect, so this shell publishes what the
//! state machine asks for, straight from the journal, and deletes punches only on the centre's
//! application ack (sent after its database COMMIT). Everything unacked is re-sent after a
//! reconnect or an ack timeout; the centre dedupes on (device, epoch, seq).

mod mqtt;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_drivers::Signal;
use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::uplink::{AckOutcome, Action, Uplink, UplinkConfig};
use rollcall_protocol::v1::{Ack, DecodeError, Refusal, encode_batch_raw};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use self::mqtt::LinkEvent;
pub use self::mqtt::MQTT_MAX_PACKET_BYTES;
use crate::capture::{ReaderHealthMap, Signals};
use crate::config::Config;
use crate::journal::actor::JournalHandle;
use crate::metrics::Metrics;

/// Everything the uplink needs. It holds no part of the capture path: it signals the indicators
/// through their own handle and learns reader health from a watch.
#[derive(Debug)]
pub struct UplinkShell {
    /// The validated configuration: topics from the device id and site, the MQTT settings, the
    /// readers listed in the status.
    pub config: Config,
    /// The source of truth: batches are read from it, and acked punches deleted from it.
    pub journal: JournalHandle,
    /// Link state, batches, acks and journal gauges are counted here.
    pub metrics: Arc<Metrics>,
    /// The indicators, told when the link goes up or down and when the centre refuses punches.
    pub signals: Signals,
    /// The readers' last reported health, for the status.
    pub reader_health: watch::Receiver<ReaderHealthMap>,
    /// When rollcalld started (the status's uptime).
    pub started: Instant,
    /// The credentials actor's link: roster and command messages go to it, its roster acks
    /// and enrolments are published here.
    pub credentials: Option<crate::credentials::CredentialsLink>,
}

/// The next publish the credentials actor asks for (never, without one).
async fn next_outbound(
    outbound: Option<&mut mpsc::Receiver<(Kind, Vec<u8>)>>,
) -> Option<(Kind, Vec<u8>)> {
    match outbound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// rollcalld's version, reported in the status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This device's topics.
struct Topics {
    punches: String,
    ack: String,
    status: String,
    roster: String,
    command: String,
}

impl Topics {
    fn new(cfg: &Config) -> Self {
        let (site, device) = (&cfg.device.site, &cfg.device.id);
        Self {
            punches: topic::build(site, device, Kind::Punches),
            ack: topic::build(site, device, Kind::Ack),
            status: topic::build(site, device, Kind::Status),
            roster: topic::build(site, device, Kind::Roster),
            command: topic::build(site, device, Kind::Command),
        }
    }
}

/// The uplink while it runs: the state machine, the client that carries out its actions, and
/// what the next status reports.
struct Session {
    sm: Uplink,
    client: AsyncClient,
    topics: Topics,
    connected_once: bool,
    /// The latest refusal from the centre, reported in every status until rollcalld restarts.
    last_refusal: Option<Refusal>,
}

impl UplinkShell {
    /// Runs until `shutdown`; then publishes an "offline" status and disconnects. Punches not yet
    /// acked stay in the journal.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut stats = self.journal.stats();
        let sm = self.state_machine(&stats.borrow());
        let topics = Topics::new(&self.config);
        let will = self.status(false, &sm, None).await.encode();
        let opts = mqtt::options(&self.config, &topics.status, will)?;
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        // Acks are small and latency-bound; Nagle's algorithm would hold them back.
        eventloop.network_options.set_tcp_nodelay(true);
        let (link_tx, mut link) = mpsc::channel(1024);
        let poller = tokio::spawn(mqtt::poll_events(
            eventloop,
            link_tx,
            shutdown.child_token(),
        ));
        let mut session = Session {
            sm,
            client,
            topics,
            connected_once: false,
            last_refusal: None,
        };

        let mut status_every = tokio::time::interval(self.config.mqtt.status_interval);
        let mut gauges_every = tokio::time::interval(Duration::from_secs(1));
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let mut outbound = self
            .credentials
            .as_mut()
            .map(|c| std::mem::replace(&mut c.outbound, mpsc::channel(1).1));
        loop {
            let deadline = session
                .sm
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(far);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = link.recv() => match event {
                    Some(event) => self.on_link_event(&mut session, event).await?,
                    None => break,
                },
                changed = stats.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let last = stats.borrow_and_update().last_seq;
                    session.sm.stored(last);
                }
                _ = tokio::time::sleep_until(deadline) => session.sm.tick(Instant::now()),
                _ = status_every.tick() => {
                    if session.sm.is_online() {
                        self.publish_status(&session).await?;
                    }
                }
                _ = gauges_every.tick() => self.update_gauges(&session.sm).await,
                Some((kind, payload)) = next_outbound(outbound.as_mut()) => {
                    let topic = topic::build(&self.config.device.site, &self.config.device.id, kind);
                    session.client.publish(topic, QoS::AtLeastOnce, false, payload).await?;
                }
            }
            self.carry_out(&mut session).await?;
            self.metrics
                .retransmits
                .set(session.sm.retransmits() as i64);
        }

        self.say_goodbye(&session).await;
        poller.abort();
        tracing::info!(
            depth = session.sm.depth(),
            "uplink stopped; unacked punches stay in the journal"
        );
        Ok(())
    }

    /// The state machine, resumed from the journal's epoch, acked and stored positions.
    fn state_machine(&self, stats: &crate::journal::actor::JournalStats) -> Uplink {
        let mqtt = &self.config.mqtt;
        Uplink::new(
            UplinkConfig {
                batch_max: mqtt.batch_max,
                window: mqtt.window,
                ack_timeout: mqtt.ack_timeout,
                ack_timeout_max: mqtt.ack_timeout * crate::config::ACK_TIMEOUT_BACKOFF,
            },
            stats.epoch,
            stats.acked,
            stats.last_seq,
        )
    }

    async fn on_link_event(&self, s: &mut Session, event: LinkEvent) -> anyhow::Result<()> {
        match event {
            LinkEvent::Up => {
                if s.connected_once {
                    self.metrics.reconnects.inc();
                }
                s.connected_once = true;
                self.metrics.link_up.set(1);
                let mqtt = &self.config.mqtt;
                tracing::info!(broker = %mqtt.host, port = mqtt.port, "MQTT link up");
                s.client.subscribe(&s.topics.ack, QoS::AtLeastOnce).await?;
                if let Some(c) = &self.credentials {
                    if c.roster_from_centre {
                        s.client
                            .subscribe(&s.topics.roster, QoS::AtLeastOnce)
                            .await?;
                    }
                    s.client
                        .subscribe(&s.topics.command, QoS::AtLeastOnce)
                        .await?;
                }
                self.publish_status(s).await?;
                self.to_credentials(crate::credentials::Inbound::LinkUp);
                s.sm.link_up();
                self.signals.send(Signal::Online);
            }
            LinkEvent::Down(why) => {
                if s.sm.is_online() {
                    tracing::warn!(error = %why, depth = s.sm.depth(), "MQTT link down; punches stay in the journal");
                    self.signals.send(Signal::Offline);
                }
                self.metrics.link_up.set(0);
                s.sm.link_down();
                self.to_credentials(crate::credentials::Inbound::LinkDown);
            }
            LinkEvent::Message(t, payload) if t == s.topics.roster => {
                self.to_credentials(crate::credentials::Inbound::Roster(payload));
            }
            LinkEvent::Message(t, payload) if t == s.topics.command => {
                self.to_credentials(crate::credentials::Inbound::Command(payload));
            }
            LinkEvent::Message(t, payload) if t == s.topics.ack => {
                if let Some(refusal) = self.on_ack(&mut s.sm, &payload) {
                    s.last_refusal = Some(refusal);
                    self.signals.send(Signal::Refused);
                    // At once, not at the next heartbeat: whoever watches the device should
                    // see the refusal while the person is still at the door.
                    self.publish_status(s).await?;
                }
            }
            LinkEvent::Message(t, _) => tracing::warn!(topic = %t, "unexpected message ignored"),
        }
        Ok(())
    }

    /// Hands a link event or message to the credentials actor, when there is one.
    fn to_credentials(&self, inbound: crate::credentials::Inbound) {
        if let Some(c) = &self.credentials {
            let _ = c.inbound.send(crate::credentials::Msg::Link(inbound));
        }
    }

    /// Publishes the retained "online" status.
    async fn publish_status(&self, s: &Session) -> anyhow::Result<()> {
        let status = self.status(true, &s.sm, s.last_refusal.as_ref()).await;
        s.client
            .publish(&s.topics.status, QoS::AtLeastOnce, true, status.encode())
            .await?;
        Ok(())
    }

    /// Does what the state machine asks: publish batches from the journal, delete acked punches.
    /// A journal error is not the end of the uplink: what was not published is re-sent after
    /// the ack timeout, what was not deleted with the next ack.
    async fn carry_out(&self, s: &mut Session) -> anyhow::Result<()> {
        while let Some(action) = s.sm.poll(Instant::now()) {
            match action {
                Action::Publish { first, last } => {
                    let punches = match self.journal.read(first, last).await {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(first, last, error = %e, "journal read failed; the batch will be re-sent");
                            continue;
                        }
                    };
                    let n = punches.len() as u64;
                    let payload = encode_batch_raw(&self.config.device.id, s.sm.epoch(), &punches);
                    s.client
                        .publish(&s.topics.punches, QoS::AtLeastOnce, false, payload)
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
                        depth = s.sm.depth(),
                        "acked punches deleted from the journal"
                    );
                }
            }
        }
        Ok(())
    }

    /// Publishes the retained "offline" status and disconnects, when there is a link to do it on.
    async fn say_goodbye(&self, s: &Session) {
        if !s.sm.is_online() {
            return;
        }
        let bye = self.status(false, &s.sm, s.last_refusal.as_ref()).await;
        let _ = s
            .client
            .publish(&s.topics.status, QoS::AtLeastOnce, true, bye.encode())
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            // Give the poller a moment to flush the goodbye before disconnecting.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = s.client.disconnect().await;
        })
        .await;
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
}
