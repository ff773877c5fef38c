//! The uplink as the daemon uses it: acks from an earlier life of the process, and the figures
//! it reports in the status heartbeat and the metrics.

use std::time::{Duration, Instant};

use rollcall_protocol::uplink::{AckOutcome, Action, Uplink, UplinkConfig};

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
