//! The wire contract: the v1 messages as the centre and the gateway receive them, the topics,
//! and the punches the journal reads back from disk.

use std::time::{Duration, Instant};

use rollcall_protocol::topic;
use rollcall_protocol::uplink::{AckOutcome, Uplink, UplinkConfig};
use rollcall_protocol::v1::{
    self, Ack, Command, Enrolment, Punch, PunchBatch, RosterAck, RosterUpdate, Status,
};

/// CBOR decodes may allocate this many bytes per input byte: a decoded struct is larger than
/// its encoding (a 3-byte empty string becomes a 24-byte `String`; a 10-byte `ReaderStatus` an
/// 80-byte one), and a growing `Vec` briefly holds its old and new buffers.
pub(crate) const CBOR_PER_BYTE: usize = 48;
/// Fixed allowance for small buffers and the error path.
pub(crate) const CBOR_FIXED: usize = 16 * 1024;

/// `PunchBatch::decode`, as rollcall-ingest applies it to every message on a punches topic:
/// no panic, allocation in proportion to the input, and a decoded batch re-encodes to bytes that
/// decode to the same batch, which are also what the journal's raw batch encoder writes for
/// the same punches.
pub fn punch_batch(data: &[u8]) {
    let decoded = crate::alloc::bounded(
        "PunchBatch::decode",
        data.len(),
        CBOR_PER_BYTE,
        CBOR_FIXED,
        || PunchBatch::decode(data),
    );
    let Ok(batch) = decoded else { return };
    for p in &batch.punches {
        let _ = p.check();
    }
    assert!(batch.last_seq().is_some(), "a valid batch is never empty");
    let bytes = batch.encode();
    assert!(
        bytes.len() <= data.len(),
        "canonical encoding is never longer than the input"
    );
    assert_eq!(
        PunchBatch::decode(&bytes).expect("a re-encoded batch decodes"),
        batch
    );
    let raw: Vec<Vec<u8>> = batch
        .punches
        .iter()
        .map(|p| minicbor::to_vec(p).expect("a punch encodes"))
        .collect();
    assert_eq!(
        v1::encode_batch_raw(&batch.device_id, batch.epoch, &raw),
        bytes
    );
}

/// `Ack::decode`, as rollcalld applies it to its ack topic, then the ack given to the uplink
/// state machine of a journal holding seqs 1..=1000: no panic, bounded allocation, the round
/// trip, and the machine never counts as acked more than it stored.
pub fn ack(data: &[u8]) {
    let decoded =
        crate::alloc::bounded("Ack::decode", data.len(), CBOR_PER_BYTE, CBOR_FIXED, || {
            Ack::decode(data)
        });
    let Ok(ack) = decoded else { return };
    let bytes = ack.encode();
    assert!(bytes.len() <= data.len());
    assert_eq!(Ack::decode(&bytes).expect("a re-encoded ack decodes"), ack);

    let start = Instant::now();
    let mut uplink = Uplink::new(UplinkConfig::default(), ack.epoch, 10, 1000);
    uplink.link_up();
    while uplink.poll(start).is_some() {}
    let outcome = uplink.on_ack(ack.epoch, ack.up_to_seq);
    assert!(uplink.acked() <= uplink.stored_seq());
    match outcome {
        AckOutcome::Advanced => assert_eq!(uplink.acked(), ack.up_to_seq),
        _ => assert_eq!(uplink.acked(), 10),
    }
    uplink.tick(start + Duration::from_secs(3600));
    while uplink.poll(start + Duration::from_secs(3600)).is_some() {}
}

/// `Status::decode`, as rollcall-ingest applies it to every retained status: no panic, bounded
/// allocation, the round trip.
pub fn status(data: &[u8]) {
    let decoded = crate::alloc::bounded(
        "Status::decode",
        data.len(),
        CBOR_PER_BYTE,
        CBOR_FIXED,
        || Status::decode(data),
    );
    let Ok(status) = decoded else { return };
    let bytes = status.encode();
    assert!(bytes.len() <= data.len());
    assert_eq!(
        Status::decode(&bytes).expect("a re-encoded status decodes"),
        status
    );
}

/// `topic::parse` on any text: a topic it accepts is exactly the one `topic::build` writes for
/// the parts it found.
pub fn topic(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(t) = topic::parse(&text) {
        assert_eq!(topic::build(t.site, t.device_id, t.kind), text);
    }
}

/// One punch as the journal stores it (CBOR of [`Punch`], decoded again when a batch is read
/// for publishing or a power cut left a damaged record): no panic, bounded allocation, the
/// round trip, and a batch built from the stored bytes without decoding them decodes to the
/// same punch.
pub fn journal_punch(data: &[u8]) {
    let decoded = crate::alloc::bounded(
        "Punch decode",
        data.len(),
        CBOR_PER_BYTE,
        CBOR_FIXED,
        || minicbor::decode::<Punch>(data),
    );
    let Ok(punch) = decoded else { return };
    let bytes = minicbor::to_vec(&punch).expect("a punch encodes");
    assert_eq!(
        minicbor::decode::<Punch>(&bytes).expect("re-encoded punch decodes"),
        punch
    );
    if punch.seq == 0 || data.len() > v1::MAX_MESSAGE_BYTES - 64 {
        return;
    }
    let batch = v1::encode_batch_raw("room-101", 7, &[&bytes]);
    let batch = PunchBatch::decode(&batch).expect("a raw batch of one stored punch decodes");
    assert_eq!(batch.punches, [punch]);
}

/// One credential message: no panic, bounded allocation, and the round trip (a decoded message
/// re-encodes to bytes no longer than its input that decode to the same message).
fn credential_message<T: PartialEq + std::fmt::Debug>(
    what: &str,
    data: &[u8],
    decode: fn(&[u8]) -> Result<T, v1::DecodeError>,
    encode: fn(&T) -> Vec<u8>,
) {
    let decoded =
        crate::alloc::bounded(what, data.len(), CBOR_PER_BYTE, CBOR_FIXED, || decode(data));
    let Ok(message) = decoded else { return };
    let bytes = encode(&message);
    assert!(bytes.len() <= data.len());
    assert_eq!(
        decode(&bytes).expect("a re-encoded message decodes"),
        message
    );
}

/// `RosterUpdate::decode`, as rollcalld applies it to every message on its roster topic.
pub fn roster(data: &[u8]) {
    credential_message(
        "RosterUpdate::decode",
        data,
        RosterUpdate::decode,
        RosterUpdate::encode,
    );
}

/// `RosterAck::decode`, as rollcall-ingest applies it to every roster ack.
pub fn roster_ack(data: &[u8]) {
    credential_message(
        "RosterAck::decode",
        data,
        RosterAck::decode,
        RosterAck::encode,
    );
}

/// `Enrolment::decode`, as rollcall-ingest applies it to every enrolment.
pub fn enrolment(data: &[u8]) {
    credential_message(
        "Enrolment::decode",
        data,
        Enrolment::decode,
        Enrolment::encode,
    );
}

/// `Command::decode`, as rollcalld applies it to every message on its command topic.
pub fn command(data: &[u8]) {
    credential_message("Command::decode", data, Command::decode, Command::encode);
}
