//! rollcall-ingest's readers of outside bytes: every MQTT message it consumes, and the ZKTeco
//! terminals' ADMS (HTTP push) requests and bodies.

use rollcall_ingest::adms::parse::{self as adms, Query, Request};
use rollcall_ingest::punch::{self, Message, SubjectIn};

/// Splits the input at its first newline: the text before is a topic (or a request line),
/// the bytes after the payload (or body).
fn split(data: &[u8]) -> (String, &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::from_utf8_lossy(data).into_owned(), &[][..]),
    }
}

/// `punch::classify` on a topic and a payload, as the consumer calls it for every message:
/// never a panic; a dead letter keeps at most 64 KiB of the payload and its true size; a
/// batch's punches have the values the ledger needs (effective time, subject spelling that
/// reads back).
pub fn classify(data: &[u8]) {
    let (topic, payload) = split(data);
    match punch::classify(&topic, payload) {
        Message::Punches(batch) => {
            assert!(!batch.punches.is_empty());
            assert!(batch.last_seq() <= i64::MAX as u64);
            for p in &batch.punches {
                let _ = p.effective_ms();
                let text = p.subject_text();
                // "finger:unknown" is a valid student id and also the ledger's spelling of an
                // unknown finger; no CampsHub360 id or roll number looks like it.
                if text != "finger:unknown" || p.subject == SubjectIn::UnknownFinger {
                    assert_eq!(SubjectIn::from_ledger(&text), p.subject);
                }
            }
        }
        Message::Status(s) => assert!(!s.device_id.is_empty()),
        Message::Dead(d) => {
            assert_eq!(d.size, payload.len());
            assert!(d.payload.len() <= 64 * 1024 && payload.starts_with(&d.payload));
        }
    }
}

/// The ADMS endpoint's parsers on a request line (`GET|POST path?query`) and a body: the
/// request's kind, the heartbeat's INFO, and the body read as ATTLOG, OPERLOG and command
/// results. Never a panic; what they keep is cut to their documented lengths; every body line
/// is either a record or a bad line, never both, never lost.
pub fn adms(data: &[u8]) {
    let (line, body) = split(data);
    let (method, target) = line.split_once(' ').unwrap_or(("GET", &line));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let q = Query::parse(query);
    match adms::request(method.eq_ignore_ascii_case("GET"), path, &q) {
        Request::Upload { table, stamp } => {
            if let adms::Table::Other(t) = table {
                assert!(t.chars().count() <= 32);
            }
            assert!(stamp.is_none_or(|s| s.chars().count() <= 64 && !s.is_empty()));
        }
        Request::Poll { info: Some(info) } => {
            assert!(info.firmware.chars().count() <= 50);
            assert!(info.ip.is_none_or(|ip| ip.chars().count() <= 64));
        }
        _ => {}
    }
    let _ = adms::percent_decode(query);

    let text = String::from_utf8_lossy(body);
    let lines = text
        .split('\n')
        .filter(|l| {
            !l.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .is_empty()
        })
        .count();
    let (records, bad) = adms::attlog(body);
    assert_eq!(
        records.len() + bad.len(),
        lines,
        "every ATTLOG line is a record or a bad line"
    );
    for r in &records {
        assert!(!r.pin.is_empty() && r.pin.chars().count() <= adms::MAX_PIN_LEN);
        assert!(r.workcode.chars().count() <= 32);
        let written = r.time.format("%Y-%m-%d %H:%M:%S").to_string();
        assert_eq!(adms::wall_clock(&written), Some(r.time));
    }
    for b in &bad {
        assert!(b.line >= 1 && b.text.chars().count() <= 200);
    }
    for l in adms::operlog(body) {
        if let adms::OperLine::User { pin, name, card } = l {
            assert!(
                pin.chars().count() <= 64
                    && name.chars().count() <= 64
                    && card.chars().count() <= 64
            );
        }
    }
    for r in adms::command_results(body) {
        assert!(r.cmd.chars().count() <= 32);
    }
}
