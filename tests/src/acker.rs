//! A tiny stand-in for the centre: it subscribes to every device's punches, remembers them as
//! "committed", and acks the highest contiguous seq per device and epoch, as ingest does after
//! COMMIT. It lives in the test harness only; the product's centre is rollcall-ingest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1::{Ack, Punch, PunchBatch};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// What the acker has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// Committed punches per (device, epoch), by seq (first copy kept).
    pub punches: BTreeMap<(String, u64), BTreeMap<u64, Punch>>,
    /// Punch deliveries in total, re-sends included.
    pub deliveries: u64,
    /// Deliveries of a seq already committed.
    pub duplicates: u64,
    /// Batches whose seqs were not strictly increasing (never expected).
    pub misordered_batches: u64,
    /// Undecodable messages.
    pub undecodable: u64,
    /// Highest contiguous seq per (device, epoch), advanced as punches arrive.
    cursors: BTreeMap<(String, u64), u64>,
}

impl Seen {
    /// Seqs committed for a device, over all epochs, in order.
    pub fn seqs(&self, device: &str) -> Vec<u64> {
        self.punches
            .iter()
            .filter(|((d, _), _)| d == device)
            .flat_map(|(_, m)| m.keys().copied())
            .collect()
    }

    /// Highest contiguous seq (from 1) for a device and epoch.
    pub fn contiguous(&self, device: &str, epoch: u64) -> u64 {
        self.cursors
            .get(&(device.to_owned(), epoch))
            .copied()
            .unwrap_or(0)
    }
}

/// The acker's subscription task and what it has seen; the task stops when dropped.
#[derive(Debug)]
pub struct Acker {
    seen: Arc<Mutex<Seen>>,
    acking: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Acker {
    /// Connects to the broker on `port` and starts acking.
    pub async fn start(port: u16) -> anyhow::Result<Self> {
        let mut opts = MqttOptions::new("test-acker", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_clean_session(false);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 1000);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let acking = Arc::new(Mutex::new(true));
        let (s, a) = (seen.clone(), acking.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(topic::ALL_PUNCHES, QoS::AtLeastOnce).await;
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let Ok(batch) = PunchBatch::decode(&p.payload) else {
                            lock(&s).undecodable += 1;
                            continue;
                        };
                        let ack = record(&mut lock(&s), batch);
                        if *lock(&a)
                            && let Some((site_dev, ack)) = ack.map(|ack| (p.topic.clone(), ack))
                        {
                            let Ok(t) = topic::parse(&site_dev) else {
                                continue;
                            };
                            let to = topic::build(t.site, t.device_id, Kind::Ack);
                            let _ = client
                                .publish(to, QoS::AtLeastOnce, false, ack.encode())
                                .await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx).await??;
        Ok(Self { seen, acking, task })
    }

    /// Stops or resumes sending acks (punches are still recorded).
    pub fn set_acking(&self, on: bool) {
        *lock(&self.acking) = on;
    }

    /// A view of what was seen.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    /// Waits until `cond` holds, or fails after `timeout` with `what` in the message.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(&self.seen()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let s = self.seen();
                anyhow::bail!(
                    "timed out waiting for {what}; seen: {} deliveries, {} duplicates, epochs {:?}",
                    s.deliveries,
                    s.duplicates,
                    s.punches
                        .iter()
                        .map(|(k, v)| (k.clone(), v.len()))
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(seen: &mut Seen, batch: PunchBatch) -> Option<Ack> {
    let key = (batch.device_id.clone(), batch.epoch);
    let mut prev = 0;
    for p in batch.punches {
        if p.seq <= prev {
            seen.misordered_batches += 1;
        }
        prev = p.seq;
        seen.deliveries += 1;
        let m = seen.punches.entry(key.clone()).or_default();
        match m.entry(p.seq) {
            std::collections::btree_map::Entry::Occupied(_) => seen.duplicates += 1,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(p);
            }
        }
    }
    let m = seen.punches.get(&key);
    let cursor = seen.cursors.entry(key.clone()).or_default();
    while m.is_some_and(|m| m.contains_key(&(*cursor + 1))) {
        *cursor += 1;
    }
    let up_to = *cursor;
    (up_to > 0).then_some(Ack {
        device_id: key.0,
        epoch: key.1,
        up_to_seq: up_to,
        refusals: None,
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
