//! One simulated gateway of the fleet benchmark: an in-process MQTT client with its own
//! connection and client id that speaks the real protocol as rollcalld does. Its taps go into
//! an in-memory "journal"; the protocol crate's [`Uplink`] decides what to publish (batches of
//! whatever is unacked, at most `window` batches in flight, go-back-N on link loss or ack
//! timeout), and the centre's acks, which follow COMMIT, give each punch's reader-to-row time.
//!
//! What it leaves out of rollcalld: the reader, the fsync (the edge benchmark measures it), the
//! status heartbeats and rosters. The MQTT session is rollcalld's: client id
//! `rollcalld-<device>`, clean session off, keep-alive 15 s, TCP_NODELAY.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::uplink::{AckOutcome, Action, Uplink, UplinkConfig};
use rollcall_protocol::v1;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What one gateway does: its device id, its room's students in tap order, and when each taps
/// (offsets from the period's start, already compressed by the time scale).
#[derive(Debug, Clone)]
pub struct Plan {
    /// `attendance_biometric_device.device_id`.
    pub device: String,
    /// Student ids (`students_student.id`), one per tap, in tap order.
    pub students: Vec<String>,
    /// When each of them taps, from the start of the period, non-decreasing.
    pub taps: Vec<Duration>,
}

/// Campus-wide counters the sampler reads while the gateways run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Gateways whose MQTT link is up (subscribed to their acks).
    pub online: AtomicU64,
    /// Punches tapped so far (journaled, in rollcalld's terms).
    pub tapped: AtomicU64,
    /// Punches acked by the centre so far (committed).
    pub acked: AtomicU64,
    /// Batches published, re-sends included.
    pub batches: AtomicU64,
}

/// What one gateway saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per punch: scheduled tap -> arrival of the first ack covering it.
    pub latencies: Vec<Duration>,
    /// Highest seq acked.
    pub acked: u64,
    /// Go-back-N re-sends after an ack timeout.
    pub retransmits: u64,
    /// Longest a tap fired after its scheduled moment (the load generator's own lag).
    pub tap_lag: Duration,
    /// When the last ack that advanced arrived.
    pub last_ack: Option<Instant>,
}

enum LinkEvent {
    Up,
    Down,
    Ack(Vec<u8>),
}

/// Runs the gateway from connecting until every punch is acked or `stop`. Taps start at `start`.
pub async fn run(
    port: u16,
    site: &str,
    plan: Plan,
    uplink: UplinkConfig,
    start: Instant,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> Outcome {
    let mut o = MqttOptions::new(format!("rollcalld-{}", plan.device), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(15))
        .set_clean_session(false)
        .set_max_packet_size(1 << 20, v1::MAX_MESSAGE_BYTES + 1024);
    let (client, mut el) = AsyncClient::new(o, 64);
    el.network_options.set_tcp_nodelay(true);
    let ack_topic = topic::build(site, &plan.device, Kind::Ack);
    let punch_topic = topic::build(site, &plan.device, Kind::Punches);
    let (tx, mut rx) = mpsc::channel(1024);
    let poll_stop = stop.child_token();
    let poller = tokio::spawn(poll(el, tx, poll_stop.clone()));

    // A random epoch per run, as a fresh journal would have.
    let epoch = Uuid::now_v7().as_u128() as u64;
    let mut sm = Uplink::new(uplink, epoch, 0, 0);
    let mut punches: Vec<v1::Punch> = Vec::with_capacity(plan.students.len());
    let mut out = Outcome::default();
    let far = || Instant::now() + Duration::from_secs(3600);
    let total = plan.taps.len() as u64;
    let mut was_online = false;

    while out.acked < total {
        let next_tap = plan.taps.get(punches.len()).map(|d| start + *d);
        let deadline = sm
            .next_deadline()
            .map(Instant::from_std)
            .unwrap_or_else(far);
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = rx.recv() => match ev {
                None => break,
                Some(LinkEvent::Up) => {
                    if client.subscribe(&ack_topic, QoS::AtLeastOnce).await.is_err() {
                        break;
                    }
                    if !was_online {
                        progress.online.fetch_add(1, Ordering::Relaxed);
                        was_online = true;
                    }
                    sm.link_up();
                }
                Some(LinkEvent::Down) => sm.link_down(),
                Some(LinkEvent::Ack(payload)) => {
                    let Ok(ack) = v1::Ack::decode(&payload) else { continue };
                    if ack.device_id != plan.device {
                        continue;
                    }
                    let before = sm.acked();
                    if sm.on_ack(ack.epoch, ack.up_to_seq) == AckOutcome::Advanced {
                        let now = Instant::now();
                        for seq in before + 1..=sm.acked() {
                            let at = start + plan.taps[seq as usize - 1];
                            out.latencies.push(now.saturating_duration_since(at));
                        }
                        progress.acked.fetch_add(sm.acked() - before, Ordering::Relaxed);
                        out.acked = sm.acked();
                        out.last_ack = Some(now);
                    }
                }
            },
            _ = tokio::time::sleep_until(next_tap.unwrap_or_else(far)), if next_tap.is_some() => {
                let due = next_tap.unwrap_or_else(Instant::now);
                out.tap_lag = out.tap_lag.max(Instant::now().saturating_duration_since(due));
                let seq = punches.len() as u64 + 1;
                punches.push(punch(seq, &plan.students[seq as usize - 1]));
                sm.stored(seq);
                progress.tapped.fetch_add(1, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(deadline) => sm.tick(Instant::now().into_std()),
        }
        while let Some(action) = sm.poll(Instant::now().into_std()) {
            if let Action::Publish { first, last } = action {
                let batch = v1::PunchBatch {
                    device_id: plan.device.clone(),
                    epoch,
                    punches: punches[first as usize - 1..last as usize].to_vec(),
                };
                if client
                    .publish(&punch_topic, QoS::AtLeastOnce, false, batch.encode())
                    .await
                    .is_err()
                {
                    break;
                }
                progress.batches.fetch_add(1, Ordering::Relaxed);
            }
            // Action::Delete: the in-memory journal keeps everything; nothing to free.
        }
    }
    out.retransmits = sm.retransmits();
    let _ = client.disconnect().await;
    // Let the poller send the DISCONNECT, so the broker does not keep the session as broken.
    let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
    poll_stop.cancel();
    out
}

/// Drives rumqttc's event loop (it reconnects) and reports what the gateway acts on.
async fn poll(mut el: rumqttc::EventLoop, tx: mpsc::Sender<LinkEvent>, stop: CancellationToken) {
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => return,
            ev = el.poll() => ev,
        };
        let msg = match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::Up,
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Ack(p.payload.to_vec()),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(_) => {
                if tx.send(LinkEvent::Down).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// A fingerprint punch of `student` taken now, as rollcalld journals it.
fn punch(seq: u64, student: &str) -> v1::Punch {
    v1::Punch {
        seq,
        event_id: Uuid::now_v7(),
        captured_at_ms: chrono::Utc::now().timestamp_millis(),
        clock: v1::ClockState {
            ntp_synced: true,
            offset_ms: None,
            boot_id: Uuid::nil(),
            monotonic_ms: seq,
        },
        reader_id: "door".into(),
        reader_kind: "r503".into(),
        credential: v1::CredentialKind::Fingerprint,
        subject: v1::Subject::Student(student.to_string()),
        score: Some(100),
        flags: 0,
    }
}
