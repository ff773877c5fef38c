//! Writes the seed inputs of every target into `fuzz/corpus/<target>/seed-*`: the protocol's
//! golden fixture and hand-made messages, datasheet frames of each reader, FVC-derived ISO
//! records, a roster, control lines and ADMS requests. Run by `scripts/fuzz.sh seed`; the fuzzer
//! grows the corpus from these, and what it adds is merged in beside them.

use std::path::{Path, PathBuf};

use rollcall_drivers::ef01::codec::{Packet, PacketKind};
use rollcall_drivers::ef01::{Instruction, SystemParameters};
use rollcall_drivers::pn532::codec::{self as pn532, Frame};
use rollcall_drivers::rdm6300::Tag;
use rollcall_drivers::wiegand::Card;
use rollcall_protocol::v1::{
    Ack, ClockState, CredentialKind, PunchBatch, ReaderStatus, Refusal, Status, Subject,
};
use uuid::Uuid;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    assert!(
        rollcall_fuzz::target(target).is_some(),
        "{target} is not a target"
    );
    let dir = root().join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

fn fixture_batch() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/fixtures/punch-batch-v1.hex");
    let text = std::fs::read_to_string(path).expect("golden fixture");
    hex::decode(text.split_whitespace().collect::<String>()).expect("fixture is hex")
}

fn clock() -> ClockState {
    ClockState {
        ntp_synced: false,
        offset_ms: Some(-3),
        boot_id: Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff),
        monotonic_ms: 123_456,
    }
}

fn protocol() {
    let golden = fixture_batch();
    write("protocol_punch_batch", "golden", &golden);
    let batch = PunchBatch::decode(&golden).expect("golden batch decodes");
    let mut one = batch.clone();
    one.punches.truncate(1);
    one.punches[0].subject = Subject::UnknownCard([0xAB; 32]);
    write("protocol_punch_batch", "one-unknown-card", &one.encode());
    for (i, p) in batch.punches.iter().enumerate() {
        let bytes = minicbor::to_vec(p).expect("punch encodes");
        write("journal_punch", &format!("golden-{i}"), &bytes);
    }

    let refusal = Refusal {
        reason: "disabled_device".into(),
        first_seq: 40,
        last_seq: 42,
        count: 3,
        detail: "enable the device".into(),
    };
    let ack = Ack {
        device_id: "room-101".into(),
        epoch: 7,
        up_to_seq: 42,
        refusals: None,
    };
    write("protocol_ack", "plain", &ack.encode());
    let ack = Ack {
        refusals: Some(vec![refusal.clone()]),
        ..ack
    };
    write("protocol_ack", "refusals", &ack.encode());

    let status = Status {
        device_id: "room-101".into(),
        version: "0.1.0".into(),
        online: true,
        sent_at_ms: 1_764_000_000_000,
        uptime_s: 3600,
        epoch: 7,
        journal_depth: 12,
        oldest_unacked_age_s: Some(30),
        last_acked_seq: Some(9),
        readers: vec![ReaderStatus {
            id: "door-card".into(),
            kind: "rdm6300".into(),
            healthy: false,
            detail: "no frame for 60 s".into(),
        }],
        clock: clock(),
        free_disk_bytes: Some(1 << 30),
        last_refusal: Some(refusal),
    };
    write("protocol_status", "full", &status.encode());

    for (name, t) in [
        ("punches", "rollcall/v1/north-campus/room-101/punches"),
        ("ack", "rollcall/v1/north-campus/room-101/ack"),
        ("status", "rollcall/v1/s/d/status"),
        ("wildcard", "rollcall/v1/+/+/punches"),
    ] {
        write("protocol_topic", name, t.as_bytes());
    }

    let message = |topic: &str, payload: &[u8]| [topic.as_bytes(), b"\n", payload].concat();
    write(
        "ingest_classify",
        "punches",
        &message("rollcall/v1/s/room-101/punches", &golden),
    );
    write(
        "ingest_classify",
        "status",
        &message("rollcall/v1/s/room-101/status", &status.encode()),
    );
    write(
        "ingest_classify",
        "mismatch",
        &message("rollcall/v1/s/room-102/punches", &golden),
    );
    write(
        "ingest_classify",
        "ack-topic",
        &message("rollcall/v1/s/room-101/ack", &ack.encode()),
    );
    let _ = CredentialKind::Card;
}

fn ingest_adms() {
    for (name, bytes) in [
        ("handshake", &b"GET /iclock/cdata?SN=CQZ7224460246&options=all&pushver=2.4.1&language=69\n"[..]),
        (
            "attlog",
            b"POST /iclock/cdata?SN=CQZ7224460246&table=ATTLOG&Stamp=9999\n\
              1001\t2026-03-02 08:59:07\t0\t1\t0\t0\t0\n2024CS001 2026/03/02 09:01 1 15\r\nbad line\n",
        ),
        (
            "operlog",
            b"POST /iclock/cdata.aspx?SN=X&table=OPERLOG&OpStamp=1\n\
              USER PIN=1001\tName=Ana Lima\tPri=0\tPasswd=\tCard=[0A1B2C3D]\tGrp=1\n\
              FP PIN=1001\tFID=6\tSize=1184\tValid=1\tTMP=SlVTVA==\nOPLOG 4\t0\t2026-03-02 09:00:00\n",
        ),
        (
            "getrequest",
            b"GET /iclock/getrequest?SN=CQZ&INFO=Ver%208.0.4.2-20200316,12,11,1040,192.168.1.201,10,7,12,11,111\n",
        ),
        ("devicecmd", b"POST /iclock/devicecmd?SN=CQZ\nID=17&Return=0&CMD=DATA\nID=18\tReturn=-1002\tCMD=INFO\n"),
        ("ping", b"GET /iclock/ping?SN=CQZ\n"),
    ] {
        write("ingest_adms", name, bytes);
    }
}

fn readers() {
    // EF01: GenImg, its ack, a Search answer (slot 5, score 87), ReadSysPara's answer.
    let mut stream = Packet::new(PacketKind::Command, Instruction::GenImg.encode()).encode();
    stream.extend(Packet::new(PacketKind::Ack, vec![0x00]).encode());
    stream.extend(Packet::new(PacketKind::Ack, vec![0x00, 0x00, 0x05, 0x00, 0x57]).encode());
    let params = SystemParameters {
        status: 0,
        system_id: 9,
        library_size: 200,
        security_level: 3,
        address: 0xFFFF_FFFF,
        packet_size_code: 1,
        baud_multiplier: 6,
    };
    let mut reply = vec![0x00];
    reply.extend(params.encode());
    stream.extend(Packet::new(PacketKind::Ack, reply).encode());
    write("ef01", "session", &stream);
    let mut noisy = vec![0x55, 0xEF, 0x00, 0x13];
    noisy.extend(
        Packet::new(
            PacketKind::Command,
            Instruction::Search {
                buffer: 1,
                start: 0,
                count: 200,
            }
            .encode(),
        )
        .encode(),
    );
    noisy.extend(Packet::new(PacketKind::EndData, vec![0xAA; 32]).encode());
    write("ef01", "noise-search-data", &noisy);

    // PN532: GetFirmwareVersion, ACK, its answer, InListPassiveTarget with a 4- and 7-byte UID,
    // an extended frame, NACK.
    let mut stream = Frame::command(&[0x02]).encode();
    stream.extend(pn532::ACK);
    stream.extend(
        Frame::Info {
            tfi: pn532::TFI_CHIP,
            data: vec![0x03, 0x32, 0x01, 0x06, 0x07],
        }
        .encode(),
    );
    stream.extend(
        Frame::Info {
            tfi: pn532::TFI_CHIP,
            data: vec![
                0x4B, 0x01, 0x01, 0x00, 0x04, 0x08, 0x04, 0xDE, 0xAD, 0xBE, 0xEF,
            ],
        }
        .encode(),
    );
    stream.extend(
        Frame::Info {
            tfi: pn532::TFI_CHIP,
            data: vec![
                0x4B, 0x01, 0x01, 0x00, 0x44, 0x00, 0x07, 0x04, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
            ],
        }
        .encode(),
    );
    write("pn532", "session", &stream);
    let mut ext = vec![0x13, 0x37];
    ext.extend(
        Frame::Info {
            tfi: pn532::TFI_CHIP,
            data: vec![0x41; 300],
        }
        .encode(),
    );
    ext.extend(pn532::NACK);
    ext.extend(pn532::ERROR_FRAME);
    write("pn532", "extended-nack-error", &ext);

    // RDM6300: two tags, noise, a bad checksum, lower-case hex.
    let mut stream = Tag {
        version: 0x12,
        id: 0x0034_5678,
    }
    .encode()
    .to_vec();
    stream.extend(b"\x00\xff\x02ZZ");
    stream.extend(
        Tag {
            version: 0x01,
            id: 0xDEAD_BEEF,
        }
        .encode(),
    );
    let mut bad = Tag {
        version: 0x01,
        id: 0x0000_0001,
    }
    .encode();
    bad[12] = b'0';
    stream.extend(bad);
    stream.extend(
        Tag {
            version: 0xAB,
            id: 0xCDEF_0123,
        }
        .encode()
        .to_ascii_lowercase(),
    );
    write("rdm6300", "session", &stream);

    // ISO template sensor: one framed FVC record behind two bytes of noise.
    let record = include_bytes!("../../matcher/tests/data/fvc2002-db1/101_2.iso");
    let mut stream = vec![0xF5, 0x00];
    stream.extend(rollcall_drivers::iso_template::encode(record).expect("record frames"));
    write("iso_template", "fvc-record", &stream);

    // Wiegand: W26 and W34 cards as edges (3 bytes each: flags, then a 16-bit delay; flags
    // bit 0 = D1, bit 1 = falling, bit 2 = poll, bits 7-6 = unit 1 ns / 1 us / 1 ms / 64 ms).
    let edges = |card: Card| {
        let mut out = vec![25u8];
        for bit in card.bits() {
            let line = u8::from(bit);
            out.extend([0b0100_0010 | line, 0x03, 0xE8]); // falls 1000 us after the last edge
            out.extend([0b0100_0000 | line, 0x00, 0x32]); // rises 50 us later
        }
        out.extend([0b1000_0100, 0x00, 0xC8]); // 200 ms of silence, then a poll
        out
    };
    write(
        "wiegand",
        "w26",
        &edges(Card::W26 {
            facility: 212,
            card: 7041,
        }),
    );
    write("wiegand", "w34", &edges(Card::W34 { data: 0xDEAD_BEEF }));
}

fn records() {
    for name in [
        "fvc2002-db1/101_1.iso",
        "fvc2002-db1/102_5.iso",
        "fvc2004-db2/101_3.iso",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../matcher/tests/data")
            .join(name);
        let bytes = std::fs::read(&path).expect("FVC record");
        let seed = name.replace(['/', '.'], "-");
        write("matcher_record", &seed, &bytes);
        write("daemon_templates", &seed, &bytes);
    }
    // The same minutiae as an ANSI INCITS 378 record, and a record with an extension block.
    let mut record = rollcall_matcher::parse(include_bytes!(
        "../../matcher/tests/data/fvc2002-db1/101_1.iso"
    ))
    .expect("FVC record parses");
    record.format = rollcall_matcher::Format::Ansi2004;
    record.product_id = Some(0x0033_0001);
    write("matcher_record", "ansi", &record.to_bytes());
    record.format = rollcall_matcher::Format::Iso2005;
    record.product_id = None;
    record.views[0].extended_data = vec![0x00, 0x01, 0x00, 0x08, 1, 2, 3, 4];
    write("matcher_record", "extension-block", &record.to_bytes());
    let key = rollcall_daemon::templates::DataKey::from_bytes([7; 32]);
    let sealed =
        rollcall_daemon::templates::seal(&key, "2024CS001", &record.to_bytes()).expect("seals");
    write("daemon_templates", "sealed", &sealed);
}

fn daemon() {
    write(
        "daemon_roster",
        "example",
        b"version = 7\n[cards]\n\"04A1B2C3\" = \"2024CS001\"\n\"04:a1:b2:c4\" = \"0191f7a2-5c4e-7d3a-9b1c-2f3e4d5a6b7c\"\n\
          [fingerprints]\n\"12\" = \"2024CS001\"\n\n[[template]]\nstudent = \"2024CS001\"\nfile = \"templates/0190c2a1.rct\"\n",
    );
    for (name, line) in [
        ("card", "card door-card 04:A1:B2:C3"),
        ("finger", "finger door-finger 12"),
        ("finger-none", "finger door-finger none"),
        ("status", "status"),
    ] {
        write("daemon_control", name, line.as_bytes());
    }
}

/// The credential messages' golden fixtures (protocol/tests/fixtures), one seed each.
fn credentials() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/tests/fixtures");
    for (target, fixtures) in [
        (
            "protocol_roster",
            &["roster-delta-v1", "roster-snapshot-part-v1"][..],
        ),
        ("protocol_roster_ack", &["roster-ack-v1"][..]),
        ("protocol_enrolment", &["enrolment-v1"][..]),
        (
            "protocol_command",
            &[
                "command-enrol-v1",
                "command-resync-v1",
                "command-enrolment-result-v1",
            ][..],
        ),
    ] {
        for name in fixtures {
            let text = std::fs::read_to_string(dir.join(format!("{name}.hex"))).expect("fixture");
            let bytes = hex::decode(text.split_whitespace().collect::<String>()).expect("hex");
            write(target, name, &bytes);
        }
    }
}

fn main() {
    credentials();
    protocol();
    ingest_adms();
    readers();
    records();
    daemon();
    for (name, target) in rollcall_fuzz::TARGETS {
        let dir = root().join(name);
        let files = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert!(files > 0, "no seed for {name}");
        for entry in std::fs::read_dir(&dir).expect("corpus dir") {
            target(&std::fs::read(entry.expect("entry").path()).expect("seed"));
        }
        println!("{name}: {files} files");
    }
}
