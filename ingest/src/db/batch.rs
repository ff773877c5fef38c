//! The pure half of writing a batch: the values that pass between its phases, the partition of
//! a batch's messages (dead letters, punch batches, heartbeats, messages of devices that are not
//! registered), the unique punches to decide, and the refusals each device's ack carries. No
//! database, no clock: tested with plain values.

use crate::admit::Reason;
use crate::config::SessionClock;
use crate::decide::{Decision, DeviceInfo};
use crate::punch::{BatchIn, DeadLetter, Envelope, Message, PunchIn, StatusIn};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Settings that do not change per batch.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Replica name, stored in the ledger.
    pub node: String,
    /// Campus time zone.
    pub tz: chrono_tz::Tz,
    /// How the campus stores session times: CampsHub360's wall clock as UTC, or true instants.
    pub clock: SessionClock,
    /// Grace when not configured in `attendance_configuration`.
    pub default_grace_minutes: i64,
    /// Early arrival window.
    pub early_arrival_minutes: i64,
    /// Seconds a capture time may be ahead of the centre's clock; further ahead, the punch is
    /// held unless a heartbeat of its boot corrects it.
    pub max_future_skew_s: i64,
    /// Devices whose simulated punches count (`[attendance] demo_devices`).
    pub demo_devices: HashSet<String>,
}

impl WriterSettings {
    /// The settings the configuration gives (one place for the MQTT writers and the ZKTeco
    /// endpoint).
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        WriterSettings {
            node: cfg.node_name.clone(),
            tz: cfg.campus.timezone,
            clock: cfg.campus.session_clock,
            default_grace_minutes: cfg.attendance.default_grace_minutes,
            early_arrival_minutes: (cfg.ingest.early_arrival.as_secs() / 60) as i64,
            max_future_skew_s: cfg.ingest.max_future_skew.as_secs() as i64,
            demo_devices: cfg.attendance.demo_devices.iter().cloned().collect(),
        }
    }
}

/// Punches of one commit refused for one reason, as the device's ack reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalOut {
    /// Why the centre did not count them.
    pub reason: Reason,
    /// Lowest refused seq.
    pub first_seq: u64,
    /// Highest refused seq.
    pub last_seq: u64,
    /// How many punches between `first_seq` and `last_seq` were refused for this reason.
    pub count: u64,
}

/// An application ack to publish after COMMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOut {
    /// Site (topic level).
    pub site: String,
    /// The device acked: the topic's device level and the ack's `device_id`.
    pub device_id: String,
    /// The journal epoch the seqs belong to; the device ignores an ack for another epoch.
    pub epoch: u64,
    /// Highest contiguous seq committed.
    pub up_to_seq: u64,
    /// Punches of this commit, at or below `up_to_seq`, stored but refused or held.
    pub refusals: Vec<RefusalOut>,
}

/// What a committed batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    /// Acks to send, one per (device, epoch).
    pub acks: Vec<AckOut>,
    /// New ledger rows by outcome.
    pub outcomes: HashMap<&'static str, u64>,
    /// New refused or held ledger rows by reason.
    pub reasons: HashMap<&'static str, u64>,
    /// Punches already in the ledger (replays).
    pub replayed: u64,
    /// Dead letters written.
    pub dead: Vec<crate::punch::DeadReason>,
    /// Heartbeats applied.
    pub heartbeats: u64,
    /// Messages from devices that are not registered.
    pub unregistered: u64,
    /// Held punches decided again after a heartbeat anchored their boot.
    pub released: u64,
    /// Per registered (device, epoch): max seq seen minus contiguous seq (not yet ackable).
    pub pending: Vec<(String, u64)>,
}

/// One punch with its message and device (`None`: not registered).
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// The batch it came in (device, epoch, site).
    pub batch: &'a BatchIn,
    /// The punch as decoded.
    pub punch: &'a PunchIn,
    /// Its device's row.
    pub device: Option<&'a DeviceInfo>,
}

impl Item<'_> {
    /// The ledger key, `(device_id, epoch, seq)`: what makes a re-sent punch a duplicate.
    pub fn key(&self) -> (&str, u64, u64) {
        (
            self.batch.device_id.as_str(),
            self.batch.epoch,
            self.punch.seq,
        )
    }
}

/// A batch's messages sorted by what happens to them.
#[derive(Debug, Default)]
pub struct Partition<'a> {
    /// Refused whole: written to `rollcall.dead_letter`.
    pub dead: Vec<&'a DeadLetter>,
    /// Punch batches, of registered devices or not (refusals are ledger rows).
    pub batches: Vec<&'a BatchIn>,
    /// Heartbeats of registered devices.
    pub statuses: Vec<&'a StatusIn>,
    /// `(device, kind)` of each message from a device that is not registered.
    pub unregistered: Vec<(&'a str, &'static str)>,
}

/// Sorts messages by what happens to them; `registered` says which device ids have a row.
pub fn partition<'a>(msgs: &'a [Envelope], registered: impl Fn(&str) -> bool) -> Partition<'a> {
    let mut p = Partition::default();
    for env in msgs {
        match &env.msg {
            Message::Dead(d) => p.dead.push(d),
            Message::Punches(b) => {
                if !registered(&b.device_id) {
                    p.unregistered.push((&b.device_id, "punches"));
                }
                p.batches.push(b);
            }
            Message::Status(st) if registered(&st.device_id) => p.statuses.push(st),
            Message::Status(st) => p.unregistered.push((&st.device_id, "status")),
        }
    }
    p
}

/// The distinct punches of `batches` in ledger-key order, and how many repeated a key already
/// in the batch (replays within one commit).
pub fn items<'a>(
    batches: &[&'a BatchIn],
    devices: &'a HashMap<String, DeviceInfo>,
) -> (Vec<Item<'a>>, u64) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut repeated = 0;
    for b in batches {
        let device = devices.get(&b.device_id);
        for p in &b.punches {
            if seen.insert((b.device_id.as_str(), b.epoch, p.seq)) {
                out.push(Item {
                    batch: b,
                    punch: p,
                    device,
                });
            } else {
                repeated += 1;
            }
        }
    }
    out.sort_by(|a, b| a.key().cmp(&b.key()));
    (out, repeated)
}

/// Attaches to each ack the refusals among the newly stored punches it covers, one entry per
/// reason.
pub fn attach_refusals(
    acks: &mut [AckOut],
    items: &[Item<'_>],
    decisions: &[Decision],
    inserted: &[bool],
) {
    let mut by_key: BTreeMap<(&str, u64), BTreeMap<Reason, RefusalOut>> = BTreeMap::new();
    for ((item, d), new) in items.iter().zip(decisions).zip(inserted) {
        let (Some(reason), true) = (d.reason, *new) else {
            continue;
        };
        let (device, epoch, seq) = item.key();
        by_key
            .entry((device, epoch))
            .or_default()
            .entry(reason)
            .and_modify(|r| {
                r.first_seq = r.first_seq.min(seq);
                r.last_seq = r.last_seq.max(seq);
                r.count += 1;
            })
            .or_insert(RefusalOut {
                reason,
                first_seq: seq,
                last_seq: seq,
                count: 1,
            });
    }
    for ack in acks {
        let Some(refusals) = by_key.get(&(ack.device_id.as_str(), ack.epoch)) else {
            continue;
        };
        // Items are in seq order, so recount within the ack's reach.
        for r in refusals.values() {
            if r.last_seq <= ack.up_to_seq {
                ack.refusals.push(r.clone());
                continue;
            }
            let within: Vec<u64> = items
                .iter()
                .zip(decisions)
                .zip(inserted)
                .filter(|((i, d), new)| {
                    **new
                        && d.reason == Some(r.reason)
                        && i.batch.device_id == ack.device_id
                        && i.batch.epoch == ack.epoch
                        && i.punch.seq <= ack.up_to_seq
                })
                .map(|((i, _), _)| i.punch.seq)
                .collect();
            if let (Some(&first), Some(&last)) = (within.first(), within.last()) {
                ack.refusals.push(RefusalOut {
                    reason: r.reason,
                    first_seq: first,
                    last_seq: last,
                    count: within.len() as u64,
                });
            }
        }
    }
}

/// A stored instant, `None` out of chrono's range.
pub fn ms(t: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t)
}

#[cfg(test)]
mod tests;
