//! A simulated gateway for the ingest tests: publishes punch batches (QoS 1) and re-sends
//! whatever is not yet acked, as rollcalld's uplink does, until the centre's ack covers them.

use rollcall_protocol::{topic, v1};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub struct Device {
    pub id: String,
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<v1::Ack>,
    pub acked: u64,
    /// (publish time of a batch, time its ack arrived)
    pub latencies: Vec<Duration>,
}

impl Device {
    pub async fn connect(port: u16, id: &str) -> Device {
        let mut o = MqttOptions::new(format!("sim-{id}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_inflight(1000);
        let (client, mut el) = AsyncClient::new(o, 10_000);
        let (tx, acks) = mpsc::unbounded_channel();
        let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
        let ack_topic = topic::build(super::SITE, id, topic::Kind::Ack);
        let c2 = client.clone();
        let t2 = ack_topic.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c2.try_subscribe(t2.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = sub_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(a) = v1::Ack::decode(&p.payload)
                            && tx.send(a).is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), sub_rx.recv())
            .await
            .expect("device subscribed");
        Device {
            id: id.into(),
            client,
            acks,
            acked: 0,
            latencies: Vec::new(),
        }
    }

    pub async fn publish(&self, b: &v1::PunchBatch) {
        self.client
            .publish(
                topic::build(super::SITE, &self.id, topic::Kind::Punches),
                QoS::AtLeastOnce,
                false,
                b.encode(),
            )
            .await
            .unwrap();
    }

    /// A handle that publishes as this device from another task.
    pub fn sender(&self) -> (AsyncClient, String) {
        (
            self.client.clone(),
            topic::build(super::SITE, &self.id, topic::Kind::Punches),
        )
    }

    pub async fn publish_raw(&self, kind: topic::Kind, payload: Vec<u8>) {
        self.client
            .publish(
                topic::build(super::SITE, &self.id, kind),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
    }

    fn drain(&mut self, epoch: u64) {
        while let Ok(a) = self.acks.try_recv() {
            if a.epoch == epoch {
                self.acked = self.acked.max(a.up_to_seq);
            }
        }
    }

    /// Publishes every batch, then re-sends the unacked ones every `resend` until the ack
    /// reaches the last seq or `timeout` passes. Returns the highest ack.
    pub async fn deliver(
        &mut self,
        batches: &[v1::PunchBatch],
        resend: Duration,
        timeout: Duration,
    ) -> u64 {
        let Some(last) = batches.iter().filter_map(|b| b.last_seq()).max() else {
            return self.acked;
        };
        let epoch = batches[0].epoch;
        let deadline = Instant::now() + timeout;
        let mut sent_at = Vec::new();
        for b in batches {
            self.publish(b).await;
            sent_at.push((b.last_seq().unwrap_or(0), Instant::now()));
        }
        let mut next_resend = Instant::now() + resend;
        while self.acked < last && Instant::now() < deadline {
            if let Ok(Some(a)) =
                tokio::time::timeout(Duration::from_millis(50), self.acks.recv()).await
                && a.epoch == epoch
                && a.up_to_seq > self.acked
            {
                self.acked = a.up_to_seq;
                let now = Instant::now();
                sent_at.retain(|(seq, t)| {
                    if *seq <= a.up_to_seq {
                        self.latencies.push(now - *t);
                        false
                    } else {
                        true
                    }
                });
            }
            self.drain(epoch);
            if Instant::now() >= next_resend {
                for b in batches
                    .iter()
                    .filter(|b| b.last_seq().unwrap_or(0) > self.acked)
                {
                    self.publish(b).await;
                }
                next_resend = Instant::now() + resend;
            }
        }
        self.acked
    }
}

/// `n` batches of `size` punches for `students` (cycled), seqs from 1, all at 09:01 IST.
pub fn stream(
    device: &str,
    epoch: u64,
    n: u64,
    size: u64,
    students: &[uuid::Uuid],
) -> Vec<v1::PunchBatch> {
    (0..n)
        .map(|b| v1::PunchBatch {
            device_id: device.into(),
            epoch,
            punches: (1..=size)
                .map(|i| {
                    let seq = b * size + i;
                    super::punch(
                        seq,
                        super::ist("09:01:00") + chrono::Duration::milliseconds(seq as i64),
                        super::student(students[seq as usize % students.len()]),
                    )
                })
                .collect(),
        })
        .collect()
}
