//! The v1 wire format: exact bytes, round trips, and hostile input.

use proptest::prelude::*;
use rollcall_protocol::v1::*;
use uuid::Uuid;

fn sample_batch() -> PunchBatch {
    let clock = ClockState {
        ntp_synced: true,
        offset_ms: Some(-3),
        boot_id: Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
        monotonic_ms: 123_456,
    };
    PunchBatch {
        device_id: "room-101".into(),
        epoch: 0x0123_4567_89ab_cdef,
        punches: vec![
            Punch {
                seq: 1,
                event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
                captured_at_ms: 1_764_000_000_000,
                clock: clock.clone(),
                reader_id: "door-card".into(),
                reader_kind: "rdm6300".into(),
                credential: CredentialKind::Card,
                subject: Subject::Student("2024CS001".into()),
                score: None,
                flags: 0,
            },
            Punch {
                seq: 2,
                event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
                captured_at_ms: 1_764_000_000_500,
                clock: ClockState {
                    ntp_synced: false,
                    offset_ms: None,
                    ..clock
                },
                reader_id: "door-finger".into(),
                reader_kind: "r503".into(),
                credential: CredentialKind::Fingerprint,
                subject: Subject::UnknownFinger,
                score: Some(87),
                flags: flags::CLOCK_UNSYNCED,
            },
            Punch {
                seq: 3,
                event_id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003),
                captured_at_ms: 1_764_000_001_000,
                clock: ClockState {
                    ntp_synced: true,
                    offset_ms: None,
                    boot_id: Uuid::nil(),
                    monotonic_ms: 0,
                },
                reader_id: "door-card".into(),
                reader_kind: "rdm6300".into(),
                credential: CredentialKind::Card,
                subject: Subject::UnknownCard([0xAB; 32]),
                score: None,
                flags: flags::SIMULATED,
            },
        ],
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    hex::decode(text.split_whitespace().collect::<String>()).expect("fixture is hex")
}

#[test]
fn ack_bytes_match_the_hand_written_cbor() {
    // {0: "dev-1", 1: 7, 2: 42}: map(3), key 0, text(5) "dev-1", key 1, 7, key 2, uint8 42.
    let expected = [
        0xA3, 0x00, 0x65, b'd', b'e', b'v', b'-', b'1', 0x01, 0x07, 0x02, 0x18, 0x2A,
    ];
    let ack = Ack {
        device_id: "dev-1".into(),
        epoch: 7,
        up_to_seq: 42,
        refusals: None,
    };
    assert_eq!(ack.encode(), expected);
    assert_eq!(Ack::decode(&expected).expect("decodes"), ack);
}

#[test]
fn ack_with_refusals_matches_the_hand_written_cbor() {
    // {0: "dev-1", 1: 7, 2: 42, 3: [{0: "disabled_device", 1: 40, 2: 42, 3: 3, 4: "x"}]}
    let expected: Vec<u8> = [
        &[0xA4, 0x00, 0x65][..],
        b"dev-1",
        &[0x01, 0x07, 0x02, 0x18, 0x2A, 0x03, 0x81, 0xA5, 0x00, 0x6F], // key 3: array(1), map(5), text(15)
        b"disabled_device",
        &[
            0x01, 0x18, 0x28, 0x02, 0x18, 0x2A, 0x03, 0x03, 0x04, 0x61, b'x',
        ],
    ]
    .concat();
    let ack = Ack {
        device_id: "dev-1".into(),
        epoch: 7,
        up_to_seq: 42,
        refusals: Some(vec![Refusal {
            reason: "disabled_device".into(),
            first_seq: 40,
            last_seq: 42,
            count: 3,
            detail: "x".into(),
        }]),
    };
    assert_eq!(hex::encode(ack.encode()), hex::encode(&expected));
    assert_eq!(Ack::decode(&expected).expect("decodes"), ack);
    // A gateway that predates refusals reads the same bytes as a plain ack (key 3 skipped),
    // which is what the skip-unknown-keys rule is for.
    #[derive(minicbor::Decode, Debug, PartialEq)]
    #[cbor(map)]
    struct OldAck {
        #[n(0)]
        device_id: String,
        #[n(1)]
        epoch: u64,
        #[n(2)]
        up_to_seq: u64,
    }
    let old: OldAck = minicbor::decode(&expected).expect("old reader decodes");
    assert_eq!(old.up_to_seq, 42);
}

#[test]
fn status_carries_the_last_refusal_under_key_12_and_old_readers_skip_it() {
    let refusal = Refusal {
        reason: "disabled_device".into(),
        first_seq: 3,
        last_seq: 9,
        count: 7,
        detail: "enable the device".into(),
    };
    let mut status = Status {
        device_id: "dev-1".into(),
        version: "0.1.0".into(),
        online: true,
        sent_at_ms: 1,
        uptime_s: 2,
        epoch: 3,
        journal_depth: 0,
        oldest_unacked_age_s: None,
        last_acked_seq: Some(9),
        readers: vec![],
        clock: ClockState {
            ntp_synced: true,
            offset_ms: None,
            boot_id: Uuid::nil(),
            monotonic_ms: 4,
        },
        free_disk_bytes: None,
        last_refusal: None,
    };
    let without = status.encode();
    status.last_refusal = Some(refusal.clone());
    let with = status.encode();
    assert_eq!(Status::decode(&with).expect("decodes"), status);
    // Key 12 follows everything else: the same map with one more entry, whose key is 12 and
    // whose value is exactly the encoded refusal.
    assert_eq!(
        without[0], 0xAA,
        "map(10): keys 0..=6, 8, 9, 10 (absent options are omitted)"
    );
    assert_eq!(with[0], 0xAB, "map(11)");
    assert_eq!(with[1..without.len()], without[1..]);
    let mut key_12 = vec![0x0C];
    key_12.extend(minicbor::to_vec(&refusal).expect("encodes"));
    assert_eq!(with[without.len()..], key_12[..]);
    // A centre that predates key 12 reads the status as before.
    #[derive(minicbor::Decode)]
    #[cbor(map)]
    struct OldStatus {
        #[n(0)]
        device_id: String,
        #[n(6)]
        journal_depth: u64,
    }
    let old: OldStatus = minicbor::decode(&with).expect("old reader decodes");
    assert_eq!((old.device_id.as_str(), old.journal_depth), ("dev-1", 0));
}

#[test]
fn refusals_that_do_not_fit_their_ack_are_invalid() {
    let base = Refusal {
        reason: "unknown_device".into(),
        first_seq: 1,
        last_seq: 5,
        count: 5,
        detail: String::new(),
    };
    let ack = |r: Refusal| Ack {
        device_id: "d".into(),
        epoch: 1,
        up_to_seq: 5,
        refusals: Some(vec![r]),
    };
    assert!(Ack::decode(&ack(base.clone()).encode()).is_ok());
    for bad in [
        Refusal {
            last_seq: 6,
            ..base.clone()
        },
        Refusal {
            first_seq: 0,
            ..base.clone()
        },
        Refusal {
            first_seq: 4,
            last_seq: 3,
            ..base.clone()
        },
        Refusal {
            count: 0,
            ..base.clone()
        },
        Refusal {
            count: 6,
            ..base.clone()
        },
        Refusal {
            reason: "a b".into(),
            ..base.clone()
        },
        Refusal {
            detail: "x".repeat(MAX_REFUSAL_TEXT + 1),
            ..base.clone()
        },
    ] {
        assert!(
            matches!(
                Ack::decode(&ack(bad.clone()).encode()),
                Err(DecodeError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    let mut many = ack(base.clone());
    many.refusals = Some(vec![base; MAX_REFUSALS + 1]);
    assert!(matches!(
        Ack::decode(&many.encode()),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn one_punch_breaking_a_value_rule_fails_its_check_not_the_batch() {
    let good = sample_batch();
    for p in &good.punches {
        p.check().expect("sample punches are valid");
    }
    let bad = |f: &dyn Fn(&mut Punch)| {
        let mut b = sample_batch();
        f(&mut b.punches[1]);
        let decoded = PunchBatch::decode(&b.encode()).expect("the batch itself is fine");
        decoded.punches[1].check().expect_err("the punch is not")
    };
    assert!(bad(&|p| p.subject = Subject::Student("A\0B".into())).contains("student id"));
    assert!(bad(&|p| p.subject = Subject::Student("2024\u{1b}[31m".into())).contains("student id"));
    assert!(bad(&|p| p.subject = Subject::Student(" S1".into())).contains("student id"));
    // The ledger's spellings of the other subjects are not student ids (else a student id
    // would read back as an unknown card or finger); the words inside an id are fine.
    let hash = format!("card:{}", "ab".repeat(32));
    assert!(bad(&|p| p.subject = Subject::Student(hash.clone())).contains("card: or finger:"));
    assert!(bad(&|p| p.subject = Subject::Student("finger:unknown".into())).contains("student id"));
    assert!(bad(&|p| p.subject = Subject::Student("finger:".into())).contains("student id"));
    for fine in ["card", "fingerprint-7", "S1:card:", "2024CS001"] {
        let mut p = sample_batch().punches[1].clone();
        p.subject = Subject::Student(fine.into());
        assert_eq!(p.check(), Ok(()), "{fine}");
    }
    assert!(
        bad(&|p| p.subject = Subject::Student("x".repeat(MAX_ID_LEN + 1))).contains("student id")
    );
    assert!(bad(&|p| p.reader_id = "door 1".into()).contains("reader_id"));
    assert!(bad(&|p| p.reader_kind = "k".repeat(MAX_ID_LEN + 1)).contains("reader_kind"));
    assert!(bad(&|p| p.captured_at_ms = i64::MAX).contains("captured_at_ms"));
    assert!(bad(&|p| p.captured_at_ms = -1).contains("captured_at_ms"));
    assert!(bad(&|p| p.clock.offset_ms = Some(i64::MIN)).contains("offset_ms"));
    assert!(bad(&|p| p.clock.offset_ms = Some(MAX_CLOCK_OFFSET_MS + 1)).contains("offset_ms"));
    // The boundaries themselves are allowed.
    let mut edge = sample_batch().punches.remove(0);
    edge.captured_at_ms = MAX_CAPTURED_AT_MS;
    edge.clock.offset_ms = Some(-MAX_CLOCK_OFFSET_MS);
    edge.subject = Subject::Student("x".repeat(MAX_ID_LEN));
    edge.check().expect("boundaries are valid");
    edge.captured_at_ms = 0;
    edge.clock.offset_ms = Some(MAX_CLOCK_OFFSET_MS);
    edge.check().expect("boundaries are valid");
}

#[test]
fn punch_batch_bytes_match_the_golden_fixture() {
    let golden = fixture("punch-batch-v1.hex");
    assert_eq!(
        hex::encode(sample_batch().encode()),
        hex::encode(&golden),
        "v1 wire format changed"
    );
    assert_eq!(
        PunchBatch::decode(&golden).expect("golden decodes"),
        sample_batch()
    );
}

#[test]
fn raw_batch_encoding_equals_the_derived_one() {
    let batch = sample_batch();
    let raw: Vec<Vec<u8>> = batch
        .punches
        .iter()
        .map(|p| minicbor::to_vec(p).expect("encodes"))
        .collect();
    assert_eq!(
        encode_batch_raw(&batch.device_id, batch.epoch, &raw),
        batch.encode()
    );
}

#[test]
fn decoder_skips_fields_it_does_not_know() {
    // An Ack from a newer peer with an extra key 9: "x".
    let bytes = [
        0xA4, 0x00, 0x61, b'd', 0x01, 0x01, 0x02, 0x05, 0x09, 0x61, b'x',
    ];
    assert_eq!(
        Ack::decode(&bytes).expect("decodes"),
        Ack {
            device_id: "d".into(),
            epoch: 1,
            up_to_seq: 5,
            refusals: None,
        }
    );
}

#[test]
fn rejects_oversized_messages_before_parsing() {
    let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        PunchBatch::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn rejects_trailing_bytes() {
    let mut bytes = Ack {
        device_id: "d".into(),
        epoch: 1,
        up_to_seq: 1,
        refusals: None,
    }
    .encode();
    bytes.push(0);
    assert!(matches!(Ack::decode(&bytes), Err(DecodeError::Trailing(1))));
}

#[test]
fn rejects_batches_that_break_the_contract() {
    let mut b = sample_batch();
    b.punches.swap(0, 1);
    let err = PunchBatch::decode(&b.encode()).expect_err("out of order");
    assert!(err.to_string().contains("seq 1 follows 2"), "{err}");

    let mut b = sample_batch();
    b.device_id = "room/101".into();
    assert!(matches!(
        PunchBatch::decode(&b.encode()),
        Err(DecodeError::Invalid(_))
    ));

    let mut b = sample_batch();
    b.punches.clear();
    assert!(matches!(
        PunchBatch::decode(&b.encode()),
        Err(DecodeError::Invalid(_))
    ));

    let mut b = sample_batch();
    b.punches[0].seq = 0;
    assert!(matches!(
        PunchBatch::decode(&b.encode()),
        Err(DecodeError::Invalid(_))
    ));
}

#[test]
fn rejects_a_uuid_of_the_wrong_length() {
    let mut bytes = sample_batch().encode();
    // The first event id is encoded as 0x50 (bytes, 16) followed by its 16 bytes.
    let pos = bytes
        .windows(2)
        .position(|w| w == [0x01, 0x50])
        .expect("event id")
        + 1;
    bytes[pos] = 0x4F;
    assert!(PunchBatch::decode(&bytes).is_err());
}

fn arb_punch() -> impl Strategy<Value = Punch> {
    (
        any::<u128>(),
        any::<i64>(),
        any::<bool>(),
        proptest::option::of(any::<i64>()),
        any::<u64>(),
        "[a-z0-9-]{1,20}",
        prop_oneof![
            "[A-Z0-9]{1,20}".prop_map(Subject::Student),
            any::<[u8; 32]>().prop_map(Subject::UnknownCard),
            Just(Subject::UnknownFinger),
        ],
        proptest::option::of(any::<u16>()),
        any::<u32>(),
    )
        .prop_map(
            |(id, at, synced, offset, mono, reader, subject, score, flags)| Punch {
                seq: 0,
                event_id: Uuid::from_u128(id),
                captured_at_ms: at,
                clock: ClockState {
                    ntp_synced: synced,
                    offset_ms: offset,
                    boot_id: Uuid::from_u128(!id),
                    monotonic_ms: mono,
                },
                reader_id: reader.clone(),
                reader_kind: reader,
                credential: if score.is_some() {
                    CredentialKind::Fingerprint
                } else {
                    CredentialKind::Card
                },
                subject,
                score,
                flags,
            },
        )
}

proptest! {
    #[test]
    fn any_valid_batch_round_trips(epoch in any::<u64>(), start in 1u64..u64::MAX / 2, mut punches in proptest::collection::vec(arb_punch(), 1..20)) {
        for (i, p) in punches.iter_mut().enumerate() {
            p.seq = start + i as u64;
        }
        let batch = PunchBatch { device_id: "dev-9".into(), epoch, punches };
        prop_assert_eq!(PunchBatch::decode(&batch.encode()).expect("round trip"), batch);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = PunchBatch::decode(&bytes);
        let _ = Ack::decode(&bytes);
        let _ = Status::decode(&bytes);
    }

    #[test]
    fn mutated_valid_batches_never_panic(pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = sample_batch().encode();
        let len = bytes.len();
        bytes[pos % len] = byte;
        bytes.truncate(cut % (len + 1));
        let _ = PunchBatch::decode(&bytes);
    }
}

#[test]
#[ignore = "writes the golden fixture; run once after an intentional, versioned format change"]
fn write_golden_fixture() {
    let path = format!(
        "{}/tests/fixtures/punch-batch-v1.hex",
        env!("CARGO_MANIFEST_DIR")
    );
    let hex = hex::encode(sample_batch().encode());
    let lines: Vec<&str> = hex
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("write fixture");
}
