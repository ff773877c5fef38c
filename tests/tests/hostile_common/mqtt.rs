//! The hostile side of the broker: a client that publishes anything (up to 16 MiB) and records
//! every device ack ingest sends, and a raw MQTT 3.1.1 writer for duplicate QoS 1 deliveries
//! (the same packet id again with the DUP flag), which no client library lets a test send.

use rollcall_protocol::v1;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every ack seen on `rollcall/v1/+/+/ack`, by the device of its topic.
#[derive(Debug, Default)]
pub struct Acks {
    pub by_device: BTreeMap<String, Vec<v1::Ack>>,
    /// Messages on an ack topic that are not a valid v1 ack, by topic.
    pub undecodable: BTreeMap<String, u64>,
}

impl Acks {
    /// Highest `up_to_seq` acked for the device in `epoch` (0 when none).
    pub fn up_to(&self, device: &str, epoch: u64) -> u64 {
        self.of(device)
            .iter()
            .filter(|a| a.epoch == epoch)
            .map(|a| a.up_to_seq)
            .max()
            .unwrap_or(0)
    }

    pub fn of(&self, device: &str) -> &[v1::Ack] {
        self.by_device.get(device).map_or(&[], Vec::as_slice)
    }

    /// Every refusal the device was sent in `epoch`.
    pub fn refusals(&self, device: &str, epoch: u64) -> Vec<v1::Refusal> {
        self.of(device)
            .iter()
            .filter(|a| a.epoch == epoch)
            .flat_map(|a| a.refusals.clone().unwrap_or_default())
            .collect()
    }

    /// Whether some ack told the device that `seq` was refused for `reason`.
    pub fn refused(&self, device: &str, epoch: u64, reason: &str, seq: u64) -> bool {
        self.refusals(device, epoch)
            .iter()
            .any(|r| r.reason == reason && r.first_seq <= seq && seq <= r.last_seq)
    }
}

#[derive(Debug)]
pub struct Mqtt {
    client: AsyncClient,
    acks: Arc<Mutex<Acks>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mqtt {
    /// Connects as `id` and subscribes to every device's ack topic before returning.
    pub async fn connect(port: u16, id: &str) -> Mqtt {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(16 << 20, 16 << 20)
            .set_inflight(200);
        let (client, mut el) = AsyncClient::new(o, 1000);
        let acks = Arc::new(Mutex::new(Acks::default()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let (c, a) = (client.clone(), acks.clone());
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe("rollcall/v1/+/+/ack", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let device = p.topic.split('/').nth(3).unwrap_or("").to_owned();
                        let mut acks = a.lock().unwrap();
                        match v1::Ack::decode(&p.payload) {
                            Ok(ack) => acks.by_device.entry(device).or_default().push(ack),
                            Err(_) => *acks.undecodable.entry(p.topic.clone()).or_default() += 1,
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("test MQTT client subscribed to the ack topics within 10 s")
            .unwrap();
        Mqtt { client, acks, task }
    }

    /// Publishes QoS 1 (queued; the client retries until the broker's PUBACK).
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    pub fn acks(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap()
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

/// Sends one QoS 1 PUBLISH with packet id 7, then `copies - 1` more with the same packet id and
/// the DUP flag (a client re-sending after a lost PUBACK), and waits for the broker's PUBACKs.
/// The broker forwards every copy: QoS 1 promises at least once, not once.
pub async fn publish_duplicates(port: u16, topic: &str, payload: &[u8], copies: usize) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let id = b"hostile-dup";
    let mut connect = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    connect.extend_from_slice(&(id.len() as u16).to_be_bytes());
    connect.extend_from_slice(id);
    s.write_all(&packet(0x10, &connect)).await.unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&7u16.to_be_bytes());
    body.extend_from_slice(payload);
    for i in 0..copies {
        let first = if i == 0 { 0x32 } else { 0x3a }; // PUBLISH, QoS 1, DUP from the 2nd copy
        s.write_all(&packet(first, &body)).await.unwrap();
    }
    for _ in 0..copies {
        let mut puback = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut puback))
            .await
            .expect("PUBACK within 10 s")
            .unwrap();
        assert_eq!(puback, [0x40, 2, 0, 7], "PUBACK of packet 7");
    }
    s.write_all(&[0xe0, 0]).await.unwrap();
}
