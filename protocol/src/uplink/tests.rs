use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn cfg() -> UplinkConfig {
    UplinkConfig {
        batch_max: 3,
        window: 2,
        ack_timeout: Duration::from_secs(1),
        ack_timeout_max: Duration::from_secs(4),
    }
}

fn drain(up: &mut Uplink, now: Instant) -> Vec<Action> {
    std::iter::from_fn(|| up.poll(now)).collect()
}

#[test]
fn publishes_in_order_within_the_window() {
    let now = Instant::now();
    let mut up = Uplink::new(cfg(), 7, 0, 0);
    up.stored(10);
    assert_eq!(
        drain(&mut up, now),
        vec![],
        "nothing is published while offline"
    );
    up.link_up();
    assert_eq!(
        drain(&mut up, now),
        vec![
            Action::Publish { first: 1, last: 3 },
            Action::Publish { first: 4, last: 6 }
        ]
    );
    assert_eq!(up.on_ack(7, 3), AckOutcome::Advanced);
    assert_eq!(
        drain(&mut up, now),
        vec![
            Action::Delete { up_to: 3 },
            Action::Publish { first: 7, last: 9 }
        ]
    );
}

#[test]
fn ack_for_unknown_seq_is_ignored() {
    let mut up = Uplink::new(cfg(), 7, 0, 5);
    assert_eq!(up.on_ack(7, 6), AckOutcome::Beyond);
    assert_eq!(up.on_ack(8, 2), AckOutcome::WrongEpoch);
    assert_eq!(
        drain(&mut up, Instant::now()),
        vec![],
        "no deletion from a bad ack"
    );
    assert_eq!(up.acked(), 0);
}

#[test]
fn stale_and_duplicate_acks_change_nothing() {
    let now = Instant::now();
    let mut up = Uplink::new(cfg(), 1, 0, 6);
    up.link_up();
    drain(&mut up, now);
    assert_eq!(up.on_ack(1, 4), AckOutcome::Advanced);
    assert_eq!(up.on_ack(1, 4), AckOutcome::Stale);
    assert_eq!(up.on_ack(1, 2), AckOutcome::Stale);
    assert_eq!(drain(&mut up, now), vec![Action::Delete { up_to: 4 }]);
    assert_eq!(up.acked(), 4);
}

#[test]
fn ack_timeout_resends_from_the_first_unacked_with_backoff() {
    let t0 = Instant::now();
    let mut up = Uplink::new(cfg(), 1, 0, 4);
    up.link_up();
    assert_eq!(drain(&mut up, t0).len(), 2);
    up.tick(t0 + Duration::from_millis(999));
    assert_eq!(drain(&mut up, t0), vec![], "not yet timed out");
    let t1 = t0 + Duration::from_secs(1);
    up.tick(t1);
    assert_eq!(
        drain(&mut up, t1),
        vec![
            Action::Publish { first: 1, last: 3 },
            Action::Publish { first: 4, last: 4 }
        ]
    );
    assert_eq!(
        up.next_deadline(),
        Some(t1 + Duration::from_secs(2)),
        "timeout doubled"
    );
    assert_eq!(up.retransmits(), 1);
}

#[test]
fn link_loss_resends_everything_unacked_after_reconnect() {
    let now = Instant::now();
    let mut up = Uplink::new(cfg(), 1, 2, 5);
    up.link_up();
    assert_eq!(
        drain(&mut up, now),
        vec![Action::Publish { first: 3, last: 5 }]
    );
    up.link_down();
    up.stored(6);
    assert_eq!(drain(&mut up, now), vec![]);
    up.link_up();
    assert_eq!(
        drain(&mut up, now),
        vec![
            Action::Publish { first: 3, last: 5 },
            Action::Publish { first: 6, last: 6 }
        ]
    );
}

#[derive(Debug, Clone)]
enum Op {
    Store(u64),
    LinkUp,
    LinkDown,
    DeliverPublish(usize),
    DropPublish(usize),
    DeliverAck(usize),
    DropAck(usize),
    Tick(u64),
    Crash,
    ForeignAck(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u64..8).prop_map(Op::Store),
        1 => Just(Op::LinkUp),
        1 => Just(Op::LinkDown),
        4 => any::<usize>().prop_map(Op::DeliverPublish),
        1 => any::<usize>().prop_map(Op::DropPublish),
        4 => any::<usize>().prop_map(Op::DeliverAck),
        1 => any::<usize>().prop_map(Op::DropAck),
        2 => (0u64..3000).prop_map(Op::Tick),
        1 => Just(Op::Crash),
        1 => (0u64..50).prop_map(Op::ForeignAck),
    ]
}

/// The device's journal, the network and the centre, around one uplink machine.
struct World {
    up: Uplink,
    now: Instant,
    journal_last: u64,
    journal_deleted: u64,
    publishes: Vec<(u64, u64)>,
    acks: Vec<u64>,
    committed: BTreeSet<u64>,
    last_published: Option<u64>,
}

impl World {
    fn new() -> Self {
        Self {
            up: Uplink::new(cfg(), 42, 0, 0),
            now: Instant::now(),
            journal_last: 0,
            journal_deleted: 0,
            publishes: vec![],
            acks: vec![],
            committed: BTreeSet::new(),
            last_published: None,
        }
    }

    fn contiguous_committed(&self) -> u64 {
        let mut c = 0;
        while self.committed.contains(&(c + 1)) {
            c += 1;
        }
        c
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Store(k) => {
                self.journal_last += k;
                self.up.stored(self.journal_last);
            }
            Op::LinkUp => self.up.link_up(),
            Op::LinkDown => self.up.link_down(),
            Op::DeliverPublish(i) if !self.publishes.is_empty() => {
                let (first, last) = self.publishes.remove(i % self.publishes.len());
                self.committed.extend(first..=last);
                self.acks.push(self.contiguous_committed());
            }
            Op::DropPublish(i) if !self.publishes.is_empty() => {
                self.publishes.remove(i % self.publishes.len());
            }
            Op::DeliverAck(i) if !self.acks.is_empty() => {
                let a = self.acks.remove(i % self.acks.len());
                self.up.on_ack(42, a);
            }
            Op::DropAck(i) if !self.acks.is_empty() => {
                self.acks.remove(i % self.acks.len());
            }
            Op::Tick(ms) => {
                self.now += Duration::from_millis(ms);
                self.up.tick(self.now);
            }
            Op::Crash => {
                self.up = Uplink::new(cfg(), 42, self.journal_deleted, self.journal_last);
                self.last_published = None;
            }
            Op::ForeignAck(a) => {
                assert_eq!(self.up.on_ack(41, a), AckOutcome::WrongEpoch);
            }
            _ => {}
        }
        self.run_actions();
    }

    fn run_actions(&mut self) {
        while let Some(action) = self.up.poll(self.now) {
            match action {
                Action::Publish { first, last } => {
                    assert!(self.up.is_online(), "published while offline");
                    assert!(
                        first > self.journal_deleted && last <= self.journal_last && first <= last
                    );
                    let in_order = self.last_published.is_some_and(|p| first == p + 1);
                    assert!(
                        in_order || first == self.up.acked() + 1,
                        "batch {first}..={last} skips ahead (last {:?}, acked {})",
                        self.last_published,
                        self.up.acked()
                    );
                    self.last_published = Some(last);
                    self.publishes.push((first, last));
                }
                Action::Delete { up_to } => {
                    assert!(
                        up_to <= self.contiguous_committed(),
                        "deleted up to {up_to} but the centre has committed only {}",
                        self.contiguous_committed()
                    );
                    assert!(up_to > self.journal_deleted);
                    self.journal_deleted = up_to;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every stored punch reaches the centre and is deleted only after its ack, whatever the
    /// network, the acks and crashes do in between.
    #[test]
    fn every_stored_punch_is_delivered_and_deleted_only_after_ack(ops in proptest::collection::vec(op(), 0..120)) {
        let mut w = World::new();
        for op in ops {
            w.apply(op);
        }
        // Then the network heals: everything in flight is delivered, acks come back.
        w.apply(Op::LinkUp);
        for _ in 0..10_000 {
            if w.journal_deleted == w.journal_last {
                break;
            }
            while !w.publishes.is_empty() {
                w.apply(Op::DeliverPublish(0));
            }
            while !w.acks.is_empty() {
                w.apply(Op::DeliverAck(0));
            }
            w.apply(Op::Tick(5000));
        }
        prop_assert_eq!(w.journal_deleted, w.journal_last, "journal drained");
        prop_assert_eq!(w.contiguous_committed(), w.journal_last, "centre has every punch");
        prop_assert_eq!(w.up.depth(), 0);
    }
}

// The uplink as the daemon uses it: acks from an earlier life of the process, and the figures
// it reports in the status heartbeat and the metrics.

#[test]
fn an_ack_beyond_what_this_connection_sent_moves_publishing_past_it() {
    let now = Instant::now();
    // The previous process published up to 8 and died before the centre's ack came back.
    let mut up = Uplink::new(cfg(), 5, 0, 10);
    up.link_up();
    assert_eq!(
        drain(&mut up, now),
        vec![
            Action::Publish { first: 1, last: 3 },
            Action::Publish { first: 4, last: 6 }
        ]
    );
    assert_eq!(up.on_ack(5, 8), AckOutcome::Advanced);
    assert_eq!(
        drain(&mut up, now),
        vec![
            Action::Delete { up_to: 8 },
            Action::Publish { first: 9, last: 10 }
        ],
        "7 and 8 are committed: not sent again"
    );
    assert_eq!(up.on_ack(5, 10), AckOutcome::Advanced);
    assert_eq!(drain(&mut up, now), vec![Action::Delete { up_to: 10 }]);
}

#[test]
fn an_ack_up_to_the_last_stored_seq_is_accepted_and_one_past_it_is_not() {
    let mut up = Uplink::new(cfg(), 5, 0, 10);
    assert_eq!(up.on_ack(5, 11), AckOutcome::Beyond);
    assert_eq!(up.on_ack(5, 10), AckOutcome::Advanced);
    assert_eq!(up.acked(), 10);
}

#[test]
fn it_reports_epoch_stored_depth_link_and_retransmits() {
    let t0 = Instant::now();
    let mut up = Uplink::new(cfg(), 42, 3, 10);
    assert_eq!(
        (up.epoch(), up.acked(), up.stored_seq(), up.depth()),
        (42, 3, 10, 7)
    );
    assert!(!up.is_online(), "a new machine is offline until link_up");
    up.stored(12);
    assert_eq!((up.stored_seq(), up.depth()), (12, 9));

    up.link_up();
    assert!(up.is_online());
    assert_eq!(drain(&mut up, t0).len(), 2);
    assert_eq!(up.retransmits(), 0);
    up.tick(t0 + Duration::from_secs(1));
    drain(&mut up, t0 + Duration::from_secs(1));
    up.tick(t0 + Duration::from_secs(3));
    assert_eq!(up.retransmits(), 2, "two timeouts, two re-sends");

    assert_eq!(up.on_ack(42, 12), AckOutcome::Advanced);
    assert_eq!((up.acked(), up.depth()), (12, 0));
    up.link_down();
    assert!(!up.is_online());
}
