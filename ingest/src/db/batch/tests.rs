use super::*;
use crate::decide::Outcome;
use crate::punch::{Credential, DeadReason, SubjectIn};
use uuid::Uuid;

fn punch(seq: u64) -> PunchIn {
    PunchIn {
        seq,
        event_id: Uuid::nil(),
        captured_at_ms: 1_736_150_000_000,
        ntp_synced: true,
        offset_ms: None,
        boot_id: Uuid::nil(),
        monotonic_ms: seq,
        reader_id: "r".into(),
        reader_kind: "k".into(),
        credential: Credential::Card,
        subject: SubjectIn::UnknownFinger,
        score: None,
        flags: 0,
        problem: None,
    }
}

fn batch(device: &str, epoch: u64, seqs: &[u64]) -> BatchIn {
    BatchIn {
        site: "s".into(),
        device_id: device.into(),
        epoch,
        punches: seqs.iter().map(|&s| punch(s)).collect(),
        database_refused: None,
    }
}

fn env(msg: Message) -> Envelope {
    Envelope {
        topic: "t".into(),
        payload: bytes::Bytes::new(),
        msg,
    }
}

fn status(device: &str) -> StatusIn {
    StatusIn {
        device_id: device.into(),
        version: "1".into(),
        online: true,
        json: serde_json::json!({}),
        readers_unhealthy: false,
        boot_id: Uuid::nil(),
        monotonic_ms: 1,
    }
}

fn decision(reason: Option<Reason>) -> Decision {
    Decision {
        outcome: if reason.is_some() {
            Outcome::Rejected
        } else {
            Outcome::Recorded
        },
        reason,
        at: None,
        detail: String::new(),
        student: None,
        session: None,
        mark: None,
    }
}

#[test]
fn partition_keeps_punches_of_unregistered_devices_and_counts_their_messages() {
    let dead = DeadLetter {
        topic: "x".into(),
        device_id: None,
        reason: DeadReason::Undecodable,
        detail: String::new(),
        payload: Vec::new(),
        size: 0,
    };
    let msgs = vec![
        env(Message::Punches(batch("known", 1, &[1]))),
        env(Message::Punches(batch("stranger", 1, &[1]))),
        env(Message::Status(status("known"))),
        env(Message::Status(status("stranger"))),
        env(Message::Dead(dead)),
    ];
    let p = partition(&msgs, |d| d == "known");
    assert_eq!(p.dead.len(), 1);
    assert_eq!(
        p.batches
            .iter()
            .map(|b| b.device_id.as_str())
            .collect::<Vec<_>>(),
        ["known", "stranger"]
    );
    assert_eq!(
        p.statuses
            .iter()
            .map(|s| s.device_id.as_str())
            .collect::<Vec<_>>(),
        ["known"]
    );
    assert_eq!(
        p.unregistered,
        [("stranger", "punches"), ("stranger", "status")]
    );
}

#[test]
fn items_are_unique_and_in_key_order() {
    let a = batch("d", 1, &[3, 4]);
    let b = batch("d", 1, &[1, 2, 3]);
    let c = batch("c", 9, &[1]);
    let devices = HashMap::new();
    let (items, repeated) = items(&[&a, &b, &c], &devices);
    let keys: Vec<(&str, u64, u64)> = items.iter().map(|i| i.key()).collect();
    assert_eq!(
        keys,
        [
            ("c", 9, 1),
            ("d", 1, 1),
            ("d", 1, 2),
            ("d", 1, 3),
            ("d", 1, 4)
        ]
    );
    assert_eq!(repeated, 1);
    assert!(items.iter().all(|i| i.device.is_none()));
}

fn ack(device: &str, up_to_seq: u64) -> AckOut {
    AckOut {
        site: "s".into(),
        device_id: device.into(),
        epoch: 1,
        up_to_seq,
        refusals: Vec::new(),
    }
}

#[test]
fn refusals_are_grouped_by_reason_within_the_ack_and_only_for_new_rows() {
    let b = batch("d", 1, &[1, 2, 3, 4, 5, 6]);
    let other = batch("e", 1, &[1]);
    let devices = HashMap::new();
    let (items, _) = items(&[&b, &other], &devices);
    // d/1..6, then e/1.
    let ds = vec![
        decision(Some(Reason::InvalidPunch)),
        decision(None),
        decision(Some(Reason::InvalidPunch)),
        decision(Some(Reason::Simulated)),
        decision(Some(Reason::InvalidPunch)),
        decision(Some(Reason::InvalidPunch)),
        decision(Some(Reason::UnknownDevice)),
    ];
    // d/5 was already stored by another replica: not this commit's refusal.
    let inserted = vec![true, true, true, true, false, true, true];
    // The cursor of d stops at 5 (say 6 is above a gap): seq 6 is not covered by this ack.
    let mut acks = vec![ack("d", 5), ack("e", 1)];
    attach_refusals(&mut acks, &items, &ds, &inserted);
    assert_eq!(
        acks[0].refusals,
        [
            RefusalOut {
                reason: Reason::InvalidPunch,
                first_seq: 1,
                last_seq: 3,
                count: 2
            },
            RefusalOut {
                reason: Reason::Simulated,
                first_seq: 4,
                last_seq: 4,
                count: 1
            },
        ]
    );
    assert_eq!(
        acks[1].refusals,
        [RefusalOut {
            reason: Reason::UnknownDevice,
            first_seq: 1,
            last_seq: 1,
            count: 1
        }]
    );
}

#[test]
fn an_ack_below_every_refusal_carries_none() {
    let b = batch("d", 1, &[4]);
    let devices = HashMap::new();
    let (items, _) = items(&[&b], &devices);
    let mut acks = vec![ack("d", 3)];
    attach_refusals(
        &mut acks,
        &items,
        &[decision(Some(Reason::ClockAhead))],
        &[true],
    );
    assert!(acks[0].refusals.is_empty());
}

#[test]
fn writer_settings_take_the_configured_minutes_and_seconds() {
    let cfg = crate::config::Config::from_toml(
        "node_name = \"replica-2\"\n[database]\nurl = \"postgres://x/y\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n\
         [ingest]\nearly_arrival = \"20m\"\nmax_future_skew = \"90s\"\n\
         [attendance]\ndemo_devices = [\"demo-gw\"]\n",
    )
    .expect("valid config");
    let s = WriterSettings::from_config(&cfg);
    assert_eq!(s.node, "replica-2");
    assert_eq!(s.early_arrival_minutes, 20);
    assert_eq!(s.max_future_skew_s, 90);
    assert_eq!(s.demo_devices, HashSet::from(["demo-gw".to_string()]));
}

#[test]
fn an_ack_covering_every_refusal_counts_each_refused_punch() {
    let b = batch("d", 1, &[1, 2, 3, 4]);
    let devices = HashMap::new();
    let (items, _) = items(&[&b], &devices);
    let mut acks = vec![ack("d", 4)];
    attach_refusals(
        &mut acks,
        &items,
        &[
            decision(Some(Reason::DisabledDevice)),
            decision(Some(Reason::DisabledDevice)),
            decision(None),
            decision(Some(Reason::DisabledDevice)),
        ],
        &[true, true, true, true],
    );
    assert_eq!(
        acks[0].refusals,
        [RefusalOut {
            reason: Reason::DisabledDevice,
            first_seq: 1,
            last_seq: 4,
            count: 3
        }]
    );
}

#[test]
fn a_stored_instant_is_read_back_and_one_out_of_range_is_none() {
    assert_eq!(
        ms(1_736_150_000_123),
        DateTime::from_timestamp(1_736_150_000, 123_000_000)
    );
    assert_eq!(ms(i64::MAX), None);
}
