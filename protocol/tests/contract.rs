//! The contract's limits, checked at exactly the limit and one past it, and every topic kind.
//! The limits are written out here as the contract states them, not taken from the code, so a
//! changed limit fails a test.

use rollcall_protocol::topic::{self, Kind, Topic};
use rollcall_protocol::v1::*;
use uuid::Uuid;

fn clock() -> ClockState {
    ClockState {
        ntp_synced: true,
        offset_ms: None,
        boot_id: Uuid::from_u128(7),
        monotonic_ms: 1_000,
    }
}

fn punch(seq: u64) -> Punch {
    Punch {
        seq,
        event_id: Uuid::from_u128(u128::from(seq)),
        captured_at_ms: 1_764_000_000_000,
        clock: clock(),
        reader_id: "door-card".into(),
        reader_kind: "rdm6300".into(),
        credential: CredentialKind::Card,
        subject: Subject::Student("2024CS001".into()),
        score: None,
        flags: 0,
    }
}

fn batch(n: u64) -> PunchBatch {
    PunchBatch {
        device_id: "room-101".into(),
        epoch: 9,
        punches: (1..=n).map(punch).collect(),
    }
}

fn status(device_id: &str, version: &str, detail: String) -> Status {
    Status {
        device_id: device_id.into(),
        version: version.into(),
        online: true,
        sent_at_ms: 1_764_000_000_000,
        uptime_s: 60,
        epoch: 9,
        journal_depth: 3,
        oldest_unacked_age_s: Some(5),
        last_acked_seq: Some(40),
        readers: vec![ReaderStatus {
            id: "door-card".into(),
            kind: "rdm6300".into(),
            healthy: false,
            detail,
        }],
        clock: clock(),
        free_disk_bytes: Some(1 << 30),
        last_refusal: None,
    }
}

#[test]
fn every_topic_kind_is_spelled_as_the_contract_says_and_parses_back() {
    for (kind, last_level) in [
        (Kind::Punches, "punches"),
        (Kind::Ack, "ack"),
        (Kind::Status, "status"),
    ] {
        let t = topic::build("north", "room-101", kind);
        assert_eq!(t, format!("rollcall/v1/north/room-101/{last_level}"));
        assert_eq!(
            topic::parse(&t),
            Ok(Topic {
                site: "north",
                device_id: "room-101",
                kind
            })
        );
    }
}

#[test]
fn a_topic_with_an_invalid_site_or_device_level_is_refused() {
    let long = "d".repeat(65);
    for t in [
        "rollcall/v1/no site/room-101/ack".to_string(),
        "rollcall/v1/north/room 101/status".to_string(),
        format!("rollcall/v1/north/{long}/punches"),
        format!("rollcall/v1/{long}/room-101/punches"),
    ] {
        assert!(topic::parse(&t).is_err(), "{t} should be refused");
    }
}

#[test]
fn an_id_of_64_bytes_is_valid_and_one_of_65_is_not() {
    assert!(valid_id(&"a".repeat(64)));
    assert!(!valid_id(&"a".repeat(65)));
    assert!(!valid_id(""));
    assert!(valid_id("Room-1_0.b"));
    for bad in ["room 1", "room/1", "room+1", "r\u{e9}", "a\0"] {
        assert!(!valid_id(bad), "{bad:?}");
    }

    let mut b = batch(1);
    b.device_id = "d".repeat(64);
    PunchBatch::decode(&b.encode()).expect("a 64-byte device id is valid");
    b.device_id = "d".repeat(65);
    assert!(matches!(
        PunchBatch::decode(&b.encode()),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn a_batch_of_2000_punches_is_valid_and_one_of_2001_is_refused() {
    let full = batch(2000);
    let decoded = PunchBatch::decode(&full.encode()).expect("2000 punches are allowed");
    assert_eq!(decoded.punches.len(), 2000);
    let err = PunchBatch::decode(&batch(2001).encode()).expect_err("2001 punches are not");
    assert!(
        matches!(&err, DecodeError::Invalid(m) if m.contains("2001 punches")),
        "{err}"
    );
}

#[test]
fn a_batch_names_its_highest_seq() {
    let mut b = batch(3);
    b.punches[2].seq = 17;
    assert_eq!(b.last_seq(), Some(17));
    assert_eq!(batch(0).last_seq(), None);
}

#[test]
fn a_message_of_exactly_512_kib_is_read_and_one_byte_more_is_refused_unparsed() {
    const LIMIT: usize = 512 * 1024;
    // A status whose reader detail fills the message to the byte. Texts this long carry a
    // 5-byte CBOR header whatever their exact length, so the size grows one byte per character.
    let probe = status("room-101", "1.0.0", "x".repeat(100_000))
        .encode()
        .len();
    let fill = 100_000 + LIMIT - probe;
    let at_limit = status("room-101", "1.0.0", "x".repeat(fill));
    let bytes = at_limit.encode();
    assert_eq!(bytes.len(), LIMIT);
    assert_eq!(Status::decode(&bytes).expect("at the limit"), at_limit);

    let over = status("room-101", "1.0.0", "x".repeat(fill + 1)).encode();
    assert_eq!(over.len(), LIMIT + 1);
    assert!(matches!(
        Status::decode(&over),
        Err(DecodeError::TooLarge {
            size,
            max: LIMIT
        }) if size == LIMIT + 1
    ));
}

#[test]
fn a_status_round_trips_and_its_device_id_and_version_are_checked() {
    let s = status("room-101", "1.0.0", "no answer for 30 s".into());
    let bytes = s.encode();
    assert!(!bytes.is_empty());
    assert_eq!(Status::decode(&bytes).expect("valid status"), s);

    for bad_id in ["", "room 101", "room/101"] {
        assert!(
            matches!(
                Status::decode(&status(bad_id, "1.0.0", String::new()).encode()),
                Err(DecodeError::Invalid(_))
            ),
            "{bad_id:?}"
        );
    }
    let version_64 = status("room-101", &"v".repeat(64), String::new());
    assert_eq!(
        Status::decode(&version_64.encode()).expect("a 64-byte version"),
        version_64
    );
    assert!(matches!(
        Status::decode(&status("room-101", &"v".repeat(65), String::new()).encode()),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn an_ack_round_trips_and_its_device_id_and_refusal_count_are_checked() {
    let refusal = Refusal {
        reason: "disabled_device".into(),
        first_seq: 1,
        last_seq: 1,
        count: 1,
        detail: "d".repeat(512),
    };
    let ack = |device_id: &str, n: usize| Ack {
        device_id: device_id.into(),
        epoch: 3,
        up_to_seq: 1,
        refusals: Some(vec![refusal.clone(); n]),
    };
    let sixteen = ack("room-101", 16);
    assert_eq!(
        Ack::decode(&sixteen.encode()).expect("16 refusals with 512-byte details"),
        sixteen
    );
    assert!(matches!(
        Ack::decode(&ack("room-101", 17).encode()),
        Err(DecodeError::Invalid(_))
    ));
    assert!(matches!(
        Ack::decode(&ack("room 101", 0).encode()),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn a_clock_reset_to_1970_is_still_correctable_but_an_offset_past_a_century_is_refused() {
    const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;
    let mut p = punch(1);
    // A gateway whose clock fell back to 1970 in 2025 is about 55 years behind.
    for offset in [55 * YEAR_MS, -55 * YEAR_MS, 99 * YEAR_MS] {
        p.clock.offset_ms = Some(offset);
        p.check().unwrap_or_else(|e| panic!("offset {offset}: {e}"));
    }
    p.clock.offset_ms = Some(101 * YEAR_MS);
    assert!(p.check().expect_err("past a century").contains("offset_ms"));
    p.clock.offset_ms = Some(-101 * YEAR_MS);
    assert!(p.check().expect_err("past a century").contains("offset_ms"));
}

#[test]
fn flags_are_the_contract_s_bits() {
    // Bit 0: simulated reader; bit 1: clock not synchronised.
    assert_eq!(flags::SIMULATED, 0b01);
    assert_eq!(flags::CLOCK_UNSYNCED, 0b10);
}
