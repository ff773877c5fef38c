//! The credential messages (rosters, roster acks, enrolments, commands): golden bytes, the
//! contract's rules, and hostile input.
//!
//! The golden files in `tests/fixtures/` are the wire format. After an intentional, versioned
//! change, rewrite them with `ROLLCALL_WRITE_FIXTURES=1 cargo test -p rollcall-protocol --test
//! credentials` and review the diff.

use proptest::prelude::*;
use rollcall_protocol::v1::credentials::{
    FORMAT_CARD, FORMAT_EF01, FORMAT_ISO_19794_2, MAX_CARD_UID, MAX_ROSTER_FAILURES,
    MAX_ROSTER_PARTS, MAX_TEMPLATE_BYTES,
};
use rollcall_protocol::v1::{
    Action, CardCredential, Command, CredentialKind, DecodeError, Enrolment, FingerCredential,
    MAX_MESSAGE_BYTES, RosterAck, RosterFailure, RosterStudent, RosterUpdate,
};
use uuid::Uuid;

fn id(n: u8) -> Uuid {
    Uuid::from_bytes([n; 16])
}

fn delta() -> RosterUpdate {
    RosterUpdate {
        device_id: "room-101".into(),
        version: 8,
        base_version: Some(7),
        part: 0,
        parts: 1,
        students: vec![RosterStudent {
            student: "2024CS001".into(),
            cards: vec![CardCredential {
                id: id(1),
                uid: vec![0x04, 0xA1, 0xB2, 0xC3].into(),
            }],
            fingers: vec![FingerCredential {
                id: id(2),
                format: FORMAT_EF01.into(),
                data: vec![0x03, 0x03, 0x5A, 0x00].into(),
            }],
        }],
        removed: vec!["2024CS002".into()],
    }
}

fn roster_ack() -> RosterAck {
    RosterAck {
        device_id: "room-101".into(),
        version: 8,
        want_snapshot: false,
        templates_loaded: 1,
        capacity: Some(200),
        failures: vec![RosterFailure {
            id: id(3),
            reason: "module full: 200 of 200 slots".into(),
        }],
        accepts: vec![FORMAT_CARD.into(), FORMAT_EF01.into()],
    }
}

fn enrolment() -> Enrolment {
    Enrolment {
        device_id: "room-101".into(),
        enrolment_id: id(4),
        student: "2024CS001".into(),
        kind: CredentialKind::Fingerprint,
        format: FORMAT_EF01.into(),
        sensor: "r503".into(),
        data: vec![0x03, 0x03, 0x5A, 0x00].into(),
        quality: Some(87),
        captured_at_ms: 1_767_225_600_000,
        reader_id: "finger".into(),
        operator: "it-alice".into(),
    }
}

fn commands() -> Vec<Command> {
    let of = |n, action| Command {
        device_id: "room-101".into(),
        command_id: id(n),
        action,
    };
    vec![
        of(
            5,
            Action::Enrol {
                student: "2024CS001".into(),
                reader_id: "finger".into(),
                kind: CredentialKind::Fingerprint,
            },
        ),
        of(6, Action::Resync),
        of(
            7,
            Action::EnrolmentResult {
                enrolment_id: id(4),
                accepted: false,
                detail: "no consent recorded".into(),
            },
        ),
    ]
}

/// Every credential message with its golden file.
fn goldens() -> Vec<(&'static str, Vec<u8>)> {
    let mut snapshot = delta();
    snapshot.base_version = None;
    snapshot.removed.clear();
    snapshot.part = 1;
    snapshot.parts = 3;
    let c = commands();
    vec![
        ("roster-delta-v1.hex", delta().encode()),
        ("roster-snapshot-part-v1.hex", snapshot.encode()),
        ("roster-ack-v1.hex", roster_ack().encode()),
        ("enrolment-v1.hex", enrolment().encode()),
        ("command-enrol-v1.hex", c[0].encode()),
        ("command-resync-v1.hex", c[1].encode()),
        ("command-enrolment-result-v1.hex", c[2].encode()),
    ]
}

fn fixture_path(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_message_matches_its_golden_bytes() {
    let write = std::env::var_os("ROLLCALL_WRITE_FIXTURES").is_some();
    for (name, bytes) in goldens() {
        let path = fixture_path(name);
        if write {
            let lines: Vec<String> = bytes.chunks(32).map(hex::encode).collect();
            std::fs::write(&path, lines.join("\n") + "\n").expect("write fixture");
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (write it with ROLLCALL_WRITE_FIXTURES=1)"));
        let golden = hex::decode(text.split_whitespace().collect::<String>()).expect("hex");
        assert_eq!(hex::encode(&bytes), hex::encode(&golden), "{name} changed");
    }
}

#[test]
fn golden_bytes_decode_back_to_the_same_messages() {
    let g = goldens();
    assert_eq!(RosterUpdate::decode(&g[0].1).unwrap(), delta());
    let part = RosterUpdate::decode(&g[1].1).unwrap();
    assert!(part.is_snapshot());
    assert_eq!((part.part, part.parts), (1, 3));
    assert_eq!(RosterAck::decode(&g[2].1).unwrap(), roster_ack());
    assert_eq!(Enrolment::decode(&g[3].1).unwrap(), enrolment());
    for (c, (_, bytes)) in commands().iter().zip(&g[4..]) {
        assert_eq!(&Command::decode(bytes).unwrap(), c);
    }
}

#[test]
fn a_resync_command_is_the_hand_written_cbor() {
    // {0: "room-101", 1: h'06..06', 2: [1, []]}: minicbor writes a variant as its index and the
    // array of its fields.
    let mut expected = vec![0xA3, 0x00, 0x68];
    expected.extend_from_slice(b"room-101");
    expected.extend_from_slice(&[0x01, 0x50]);
    expected.extend_from_slice(&[6; 16]);
    expected.extend_from_slice(&[0x02, 0x82, 0x01, 0x80]);
    assert_eq!(commands()[1].encode(), expected);
}

#[test]
fn the_delta_keeps_its_keys_in_their_places() {
    // Key 2 (base version) and key 6 (removals) are where a reader of another language finds
    // them; spot-check against the hand-written prefix {0: "room-101", 1: 8, 2: 7, 3: 0, 4: 1, ..}.
    let bytes = delta().encode();
    let mut prefix = vec![0xA7, 0x00, 0x68];
    prefix.extend_from_slice(b"room-101");
    prefix.extend_from_slice(&[0x01, 0x08, 0x02, 0x07, 0x03, 0x00, 0x04, 0x01, 0x05]);
    assert_eq!(&bytes[..prefix.len()], &prefix[..]);
}

fn invalid<T: std::fmt::Debug>(r: Result<T, DecodeError>) -> String {
    match r {
        Err(DecodeError::Invalid(why)) => why,
        other => panic!("expected an invalid message, got {other:?}"),
    }
}

#[test]
fn roster_updates_that_break_the_contract_are_refused() {
    let ok = delta();
    assert!(ok.validate().is_ok());
    let cases: Vec<(RosterUpdate, &str)> = vec![
        (
            RosterUpdate {
                device_id: "room/101".into(),
                ..ok.clone()
            },
            "device_id",
        ),
        (
            RosterUpdate {
                parts: 0,
                ..ok.clone()
            },
            "parts",
        ),
        (
            RosterUpdate {
                part: 1,
                parts: 1,
                ..ok.clone()
            },
            "part",
        ),
        (
            RosterUpdate {
                parts: MAX_ROSTER_PARTS + 1,
                ..ok.clone()
            },
            "parts",
        ),
        (
            RosterUpdate {
                version: 0,
                base_version: None,
                removed: vec![],
                ..ok.clone()
            },
            "version 0",
        ),
        (
            RosterUpdate {
                base_version: Some(8),
                ..ok.clone()
            },
            "does not move forward",
        ),
        (
            RosterUpdate {
                base_version: None,
                ..ok.clone()
            },
            "snapshot lists no removals",
        ),
        (
            RosterUpdate {
                removed: vec!["bad\nid".into()],
                ..ok.clone()
            },
            "student",
        ),
    ];
    for (update, why) in cases {
        let bytes = update.encode();
        let msg = invalid(RosterUpdate::decode(&bytes));
        assert!(msg.contains(why), "{msg:?} should mention {why:?}");
    }
    // The last part of the most parts is fine, and a delta by one version.
    let last = RosterUpdate {
        part: MAX_ROSTER_PARTS - 1,
        parts: MAX_ROSTER_PARTS,
        ..ok.clone()
    };
    assert!(RosterUpdate::decode(&last.encode()).is_ok());
}

#[test]
fn credential_sizes_are_bounded_at_exactly_the_limit() {
    let with_template = |n: usize| {
        let mut u = delta();
        u.students[0].fingers[0].data = vec![7; n].into();
        u
    };
    assert!(with_template(MAX_TEMPLATE_BYTES).validate().is_ok());
    assert!(invalid(with_template(MAX_TEMPLATE_BYTES + 1).validate()).contains("template"));
    assert!(invalid(with_template(0).validate()).contains("template"));
    let with_card = |n: usize| {
        let mut u = delta();
        u.students[0].cards[0].uid = vec![1; n].into();
        u
    };
    assert!(with_card(MAX_CARD_UID).validate().is_ok());
    assert!(invalid(with_card(MAX_CARD_UID + 1).validate()).contains("card uid"));
    assert!(invalid(with_card(0).validate()).contains("card uid"));
    let mut bad_format = delta();
    bad_format.students[0].fingers[0].format = "ef 01".into();
    assert!(invalid(bad_format.validate()).contains("format"));
}

#[test]
fn roster_acks_are_bounded() {
    let mut ack = roster_ack();
    ack.failures = vec![ack.failures[0].clone(); MAX_ROSTER_FAILURES];
    assert!(RosterAck::decode(&ack.encode()).is_ok());
    ack.failures.push(ack.failures[0].clone());
    assert!(invalid(RosterAck::decode(&ack.encode())).contains("failures"));
    let mut long = roster_ack();
    long.failures[0].reason = "x".repeat(513);
    assert!(invalid(RosterAck::decode(&long.encode())).contains("reason"));
    let mut bad = roster_ack();
    bad.device_id = String::new();
    assert!(invalid(RosterAck::decode(&bad.encode())).contains("device_id"));
    let mut formats = roster_ack();
    formats.accepts = vec![FORMAT_CARD.into(); 9];
    assert!(invalid(RosterAck::decode(&formats.encode())).contains("formats"));
}

#[test]
fn an_enrolment_pairs_its_kind_with_its_format() {
    assert!(enrolment().validate().is_ok());
    let card = Enrolment {
        kind: CredentialKind::Card,
        format: FORMAT_CARD.into(),
        sensor: String::new(),
        data: vec![0x04, 0x11, 0x22, 0x33].into(),
        quality: None,
        ..enrolment()
    };
    assert!(card.validate().is_ok());
    let iso = Enrolment {
        format: FORMAT_ISO_19794_2.into(),
        ..enrolment()
    };
    assert!(iso.validate().is_ok());
    for (bad, why) in [
        (
            Enrolment {
                format: FORMAT_CARD.into(),
                ..enrolment()
            },
            "cannot have format",
        ),
        (
            Enrolment {
                kind: CredentialKind::Card,
                ..enrolment()
            },
            "cannot have format",
        ),
        (
            Enrolment {
                student: " 2024CS001".into(),
                ..enrolment()
            },
            "student",
        ),
        (
            Enrolment {
                reader_id: String::new(),
                ..enrolment()
            },
            "reader_id",
        ),
        (
            Enrolment {
                quality: Some(101),
                ..enrolment()
            },
            "quality",
        ),
        (
            Enrolment {
                operator: "a\u{1b}[2J".into(),
                ..enrolment()
            },
            "operator",
        ),
        (
            Enrolment {
                sensor: "s".repeat(65),
                ..enrolment()
            },
            "sensor",
        ),
        (
            Enrolment {
                data: vec![].into(),
                ..enrolment()
            },
            "template",
        ),
        (
            Enrolment {
                data: vec![0; MAX_CARD_UID + 1].into(),
                ..card.clone()
            },
            "card uid",
        ),
    ] {
        let msg = invalid(Enrolment::decode(&bad.encode()));
        assert!(msg.contains(why), "{msg:?} should mention {why:?}");
    }
    assert!(
        Enrolment {
            quality: Some(100),
            ..enrolment()
        }
        .validate()
        .is_ok()
    );
}

#[test]
fn commands_are_validated() {
    let mut c = commands();
    c[0].action = Action::Enrol {
        student: String::new(),
        reader_id: "finger".into(),
        kind: CredentialKind::Card,
    };
    assert!(invalid(Command::decode(&c[0].encode())).contains("student"));
    c[0].action = Action::Enrol {
        student: "2024CS001".into(),
        reader_id: "finger reader".into(),
        kind: CredentialKind::Card,
    };
    assert!(invalid(Command::decode(&c[0].encode())).contains("reader_id"));
    c[2].action = Action::EnrolmentResult {
        enrolment_id: id(1),
        accepted: true,
        detail: "d".repeat(513),
    };
    assert!(invalid(Command::decode(&c[2].encode())).contains("detail"));
    c[1].device_id = "+".into();
    assert!(invalid(Command::decode(&c[1].encode())).contains("device_id"));
}

#[test]
fn an_oversized_roster_is_refused_before_parsing() {
    let bytes = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(
        RosterUpdate::decode(&bytes),
        Err(DecodeError::TooLarge { .. })
    ));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = RosterUpdate::decode(&bytes);
        let _ = RosterAck::decode(&bytes);
        let _ = Enrolment::decode(&bytes);
        let _ = Command::decode(&bytes);
    }

    #[test]
    fn mutated_goldens_never_panic(which in 0usize..7, pos in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let (_, mut bytes) = goldens().swap_remove(which);
        let i = pos % bytes.len();
        bytes[i] = byte;
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = RosterUpdate::decode(&bytes);
        let _ = RosterAck::decode(&bytes);
        let _ = Enrolment::decode(&bytes);
        let _ = Command::decode(&bytes);
    }
}
