//! The MQTT side of the uplink: the client's options, and the task that drives rumqttc's event
//! loop and reports only what the uplink acts on.

use std::time::Duration;

use rumqttc::{
    ConnectionError, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// MQTT's largest packet (the remaining-length field's maximum, 256 MiB - 1).
pub const MQTT_MAX_PACKET_BYTES: usize = 268_435_455;

/// The client's options: the broker, the session, the packet limits, TLS, and `will` (the
/// retained "offline" status the broker publishes on `status_topic` if the link dies).
pub(super) fn options(
    cfg: &Config,
    status_topic: &str,
    will: Vec<u8>,
) -> anyhow::Result<MqttOptions> {
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
    opts.set_last_will(LastWill::new(status_topic, will, QoS::AtLeastOnce, true));
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
    Ok(opts)
}

/// What the uplink hears from the link.
pub(super) enum LinkEvent {
    /// Connected (first time or again): subscribe, announce, re-send.
    Up,
    /// The connection failed or dropped, with a reason a person can act on.
    Down(String),
    /// A message on a subscribed topic: (topic, payload).
    Message(String, bytes::Bytes),
}

/// Drives rumqttc's event loop (which also reconnects) and reports what matters.
pub(super) async fn poll_events(
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
