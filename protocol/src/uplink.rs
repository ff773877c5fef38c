//! The sans-IO uplink: which journal range to publish next, what an ack allows to be deleted,
//! and when unacked punches must be sent again.
//!
//! # Model
//!
//! The journal holds a contiguous run of seqs `acked+1 ..= stored` (it deletes only a prefix,
//! and only up to an acked seq). The uplink publishes that run in order, in batches of at most
//! `batch_max` punches, with at most `window` batches awaiting the centre's ack. The centre acks
//! the highest *contiguous* seq it has committed; everything at or below it may be deleted.
//!
//! The MQTT client's own retransmission queue lives only in memory and is dropped on some
//! reconnects (rumqttc #349, #805), so this machine never trusts it: on link loss, or when the
//! oldest batch has waited `ack_timeout` for its application ack, it goes back to `acked + 1` and
//! sends everything again (go-back-N). The centre's dedupe on `(device, epoch, seq)` makes the
//! re-sends harmless. The timeout doubles on each consecutive expiry up to `ack_timeout_max`
//! and resets when an ack makes progress.
//!
//! # Use
//!
//! Feed inputs ([`Uplink::stored`], [`Uplink::link_up`], [`Uplink::link_down`],
//! [`Uplink::on_ack`], [`Uplink::tick`]) and after each call drain [`Uplink::poll`] until it
//! returns `None`, carrying out each [`Action`]. Time comes in as `now`, never from a clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tuning of the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Most punches in one published batch.
    pub batch_max: u64,
    /// Most batches published and not yet acked.
    pub window: usize,
    /// How long the oldest unacked batch may wait before everything unacked is sent again.
    pub ack_timeout: Duration,
    /// Cap of the doubling ack timeout.
    pub ack_timeout_max: Duration,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        Self {
            batch_max: 500,
            window: 8,
            ack_timeout: Duration::from_secs(10),
            ack_timeout_max: Duration::from_secs(120),
        }
    }
}

/// Something the shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read punches `first..=last` from the journal and publish them as one batch.
    Publish {
        /// First seq of the batch.
        first: u64,
        /// Last seq of the batch.
        last: u64,
    },
    /// Delete every punch with `seq <= up_to` from the journal: the centre has committed them.
    Delete {
        /// Highest seq to delete.
        up_to: u64,
    },
}

/// What became of an incoming ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckOutcome {
    /// It moved the acked point forward; a [`Action::Delete`] is pending.
    Advanced,
    /// It acked nothing new (a duplicate or a late, reordered ack).
    Stale,
    /// It names another journal epoch (an ack for a previous SD card, say).
    WrongEpoch,
    /// It acks seqs this device never stored: a bug or a forgery; ignored.
    Beyond,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    last: u64,
    sent_at: Instant,
}

/// The uplink state machine of one journal epoch.
#[derive(Debug, Clone)]
pub struct Uplink {
    config: UplinkConfig,
    epoch: u64,
    online: bool,
    acked: u64,
    deleted: u64,
    stored: u64,
    next: u64,
    in_flight: VecDeque<InFlight>,
    timeout: Duration,
    retransmits: u64,
}

impl Uplink {
    /// A machine for a journal of `epoch` whose punches `acked+1 ..= stored` are unacked.
    pub fn new(config: UplinkConfig, epoch: u64, acked: u64, stored: u64) -> Self {
        let stored = stored.max(acked);
        Self {
            timeout: config.ack_timeout,
            config,
            epoch,
            online: false,
            acked,
            deleted: acked,
            stored,
            next: acked + 1,
            in_flight: VecDeque::new(),
            retransmits: 0,
        }
    }

    /// The journal committed punches up to `seq`.
    pub fn stored(&mut self, seq: u64) {
        self.stored = self.stored.max(seq);
    }

    /// The MQTT session is up.
    pub fn link_up(&mut self) {
        self.online = true;
        self.rewind();
    }

    /// The MQTT session is down. Whatever was in flight will be sent again after reconnect.
    pub fn link_down(&mut self) {
        self.online = false;
        self.rewind();
    }

    /// An application ack arrived.
    pub fn on_ack(&mut self, epoch: u64, up_to: u64) -> AckOutcome {
        if epoch != self.epoch {
            return AckOutcome::WrongEpoch;
        }
        if up_to > self.stored {
            return AckOutcome::Beyond;
        }
        if up_to <= self.acked {
            return AckOutcome::Stale;
        }
        self.acked = up_to;
        self.timeout = self.config.ack_timeout;
        while self.in_flight.front().is_some_and(|b| b.last <= up_to) {
            self.in_flight.pop_front();
        }
        // Acked beyond what this connection sent (acks for an earlier life of the process).
        self.next = self.next.max(up_to + 1);
        AckOutcome::Advanced
    }

    /// Time passed. If the oldest batch has waited too long for its ack, send everything again.
    pub fn tick(&mut self, now: Instant) {
        if let Some(oldest) = self.in_flight.front()
            && now.saturating_duration_since(oldest.sent_at) >= self.timeout
        {
            self.retransmits += 1;
            self.timeout = (self.timeout * 2).min(self.config.ack_timeout_max);
            self.rewind();
        }
    }

    /// The next action to carry out, if any. Publishing is recorded as sent at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        if self.deleted < self.acked {
            self.deleted = self.acked;
            return Some(Action::Delete { up_to: self.acked });
        }
        if self.online && self.in_flight.len() < self.config.window && self.next <= self.stored {
            let first = self.next;
            let last = self.stored.min(first + self.config.batch_max.max(1) - 1);
            self.next = last + 1;
            self.in_flight.push_back(InFlight { last, sent_at: now });
            return Some(Action::Publish { first, last });
        }
        None
    }

    /// When [`Uplink::tick`] should next be called to notice an ack timeout, if anything waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.in_flight.front().map(|b| b.sent_at + self.timeout)
    }

    fn rewind(&mut self) {
        self.in_flight.clear();
        self.next = self.acked + 1;
    }

    /// The journal epoch this machine serves.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// Highest seq acked by the centre (0 if none).
    pub fn acked(&self) -> u64 {
        self.acked
    }
    /// Highest seq stored in the journal.
    pub fn stored_seq(&self) -> u64 {
        self.stored
    }
    /// Punches stored and not yet acked.
    pub fn depth(&self) -> u64 {
        self.stored - self.acked
    }
    /// Whether the link is up.
    pub fn is_online(&self) -> bool {
        self.online
    }
    /// How many times an ack timeout caused a re-send.
    pub fn retransmits(&self) -> u64 {
        self.retransmits
    }
}

#[cfg(test)]
mod tests;
