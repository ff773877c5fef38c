//! Hostile traffic at the broker: an extra client that records the gateways' real punch batches
//! and publishes them again (duplicated, replayed long after, in reversed order) and publishes
//! malformed ones (truncated, garbage, empty) on the gateways' own topics. None of it may add a
//! ledger row or count a punch twice.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rollcall_protocol::topic;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const KEEP: usize = 256;

/// Recent (topic, payload) pairs of the gateways' punch batches.
type Recent = Arc<Mutex<VecDeque<(String, Vec<u8>)>>>;

/// What one [`Injector::inject`] sent, by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Injected {
    /// Recent batches sent twice more.
    pub duplicated: u64,
    /// Old batches sent again.
    pub replayed: u64,
    /// Batches sent newest first.
    pub reordered: u64,
    /// Undecodable payloads.
    pub malformed: u64,
}

/// The injecting client; its task stops when dropped.
#[derive(Debug)]
pub struct Injector {
    client: AsyncClient,
    seen: Recent,
    task: tokio::task::JoinHandle<()>,
}

impl Injector {
    /// Connects to the broker on `port` (reconnecting by itself after broker restarts).
    pub fn start(port: u16) -> Injector {
        let mut opts = MqttOptions::new("chaos-injector", "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut events) = AsyncClient::new(opts, 4096);
        let seen: Recent = Arc::default();
        let (c, s) = (client.clone(), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(topic::ALL_PUNCHES, QoS::AtMostOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
                        if s.len() == KEEP {
                            s.pop_front();
                        }
                        s.push_back((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Injector { client, seen, task }
    }

    /// Sends one round of hostile traffic, choosing with `pick` (a random number source).
    pub fn inject(&self, mut pick: impl FnMut(u64) -> u64) -> Injected {
        let seen: Vec<(String, Vec<u8>)> = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut n = Injected::default();
        if seen.is_empty() {
            return n;
        }
        let send = |topic: &str, payload: Vec<u8>| {
            self.client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_ok()
        };
        // Duplicated: the newest few, twice each.
        for (t, p) in seen.iter().rev().take(4) {
            for _ in 0..2 {
                n.duplicated += u64::from(send(t, p.clone()));
            }
        }
        // Replayed: old ones, long since acked.
        for _ in 0..4 {
            let (t, p) = &seen[pick(seen.len() as u64) as usize];
            n.replayed += u64::from(send(t, p.clone()));
        }
        // Reordered: a run of consecutive batches, newest first.
        let start = pick(seen.len() as u64) as usize;
        for (t, p) in seen[start..(start + 8).min(seen.len())].iter().rev() {
            n.reordered += u64::from(send(t, p.clone()));
        }
        // Malformed, on a real gateway's topic: truncated, garbage, empty. (No bit flips: a flip
        // can decode into a valid punch with another seq, which only a device could send.)
        let (t, p) = &seen[pick(seen.len() as u64) as usize];
        let garbage: Vec<u8> = (0..64).map(|_| pick(256) as u8).collect();
        for bad in [
            p[..p.len() / 2].to_vec(),
            garbage,
            Vec::new(),
            b"\xff\xff\xff\xff".to_vec(),
        ] {
            n.malformed += u64::from(send(t, bad));
        }
        n
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
