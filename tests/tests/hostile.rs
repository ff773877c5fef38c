//! The hostile-input suite (issue 7): every class of bad message published at the broker into a
//! running rollcall-ingest (the real binary, real Mosquitto and PostgreSQL) and, for the ack
//! topic, a running rollcalld, while good punches flow. Each test asserts:
//! - the good stream is recorded exactly once, every punch within 30 s of its publish;
//! - every bad message ends in its final state exactly once (a dead letter, or a ledger row with
//!   the refusal's reason and an ack telling the device why);
//! - ingest never panics or exits, connects to the broker once (its log and
//!   `rollcall_ingest_broker_connects_total`: no reconnect loop), and its peak memory (VmHWM)
//!   stays under 300 MiB.
//!
//! Tests share nothing; cases within a test share one running system and run in order, each
//! waiting on a sentinel: messages of one device are handled in order, so once a later seq of
//! that device is acked, everything published before it was handled.

mod hostile_common;
mod ingest_common;

use chrono::{Duration as Span, Utc};
use hostile_common::ingest::{sample, scrape};
use hostile_common::mqtt::publish_duplicates;
use hostile_common::{
    EPOCH, GoodStream, System, batch, dead_letters, ledger, ok, outcomes, punch, records, refused,
    roll, rollcalld_binary, status, synced_clock, topic, wait_for,
};
use ingest_common::{count, ins};
use rollcall_protocol::topic::Kind;
use rollcall_protocol::v1;
use rollcall_tests::free_port;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld, parse_reply};
use std::collections::BTreeMap;
use std::time::Duration;

/// Cases 1, 2 and the flood of 9: oversized (just above the old 528 KiB packet limit, 1 MiB and
/// 8 MiB, on punches and status topics of a device whose good punches are flowing), garbage,
/// valid CBOR of the wrong shape, invalid batches, a payload device other than the topic's, topics
/// that are no device's, and 3000 small garbage messages: one dead letter each with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_flooding_messages_are_dead_lettered_once_while_good_punches_flow()
{
    let sys = System::start(&["gw-good-a", "gw-good-b", "gw-flood"], &[], "").await;
    let good = GoodStream::start(&sys, "gw-good-a", &[&roll(0), &roll(1)]).await;
    let (a, b) = ("gw-good-a", "gw-good-b");
    let b_batch = batch(b, vec![punch(1, Utc::now(), &roll(2))]);
    let b_status = status(b, synced_clock(), Utc::now()).encode();
    let mut falling = batch(b, vec![punch(2, Utc::now(), &roll(2))]);
    falling.punches.push(punch(1, Utc::now(), &roll(3)));
    let ack = v1::Ack {
        device_id: a.into(),
        epoch: EPOCH,
        up_to_seq: 1,
        refusals: None,
    };
    let mut bad: Vec<(String, String, Vec<u8>, &str)> = vec![
        (
            "1 MiB on punches".into(),
            topic(a, Kind::Punches),
            vec![0; 1 << 20],
            "oversized",
        ),
        (
            "8 MiB on status".into(),
            topic(a, Kind::Status),
            vec![0; 8 << 20],
            "oversized",
        ),
        (
            "530 KiB on punches".into(),
            topic(b, Kind::Punches),
            vec![0; 530 << 10],
            "oversized",
        ),
        (
            "garbage bytes".into(),
            topic(a, Kind::Punches),
            b"\xffgarbage!".to_vec(),
            "undecodable",
        ),
        (
            "a status on a punches topic".into(),
            topic(b, Kind::Punches),
            b_status.clone(),
            "undecodable",
        ),
        (
            "a batch on a status topic".into(),
            topic(b, Kind::Status),
            b_batch.encode(),
            "undecodable",
        ),
        (
            "an ack on a punches topic".into(),
            topic(a, Kind::Punches),
            ack.encode(),
            "undecodable",
        ),
        (
            "a bare CBOR integer".into(),
            topic(b, Kind::Punches),
            vec![0x18, 0x2a],
            "undecodable",
        ),
        (
            "a batch without punches".into(),
            topic(b, Kind::Punches),
            batch(b, vec![]).encode(),
            "undecodable",
        ),
        (
            "a batch whose seqs go down".into(),
            topic(b, Kind::Punches),
            falling.encode(),
            "undecodable",
        ),
        (
            "gw-good-b's batch on gw-good-a's topic".into(),
            topic(a, Kind::Punches),
            b_batch.encode(),
            "device_mismatch",
        ),
        (
            "gw-good-b's status on gw-good-a's topic".into(),
            topic(a, Kind::Status),
            b_status.clone(),
            "device_mismatch",
        ),
        (
            "a device level that is not an id".into(),
            "rollcall/v1/north/not a device!/punches".into(),
            b_batch.encode(),
            "bad_topic",
        ),
        (
            "a 65-byte device level".into(),
            format!("rollcall/v1/north/{}/status", "d".repeat(65)),
            b_status,
            "bad_topic",
        ),
    ];
    // The flood: distinct sizes, so each message is told apart by (topic, size) below.
    for i in 0..1500usize {
        for kind in [Kind::Punches, Kind::Status] {
            let mut payload = vec![0xff];
            payload.resize(16 + i, b'f');
            bad.push((
                format!("flood #{i} on {}", kind.as_str()),
                topic("gw-flood", kind),
                payload,
                "undecodable",
            ));
        }
    }
    let mut expected: BTreeMap<(String, i32), (String, &str)> = BTreeMap::new();
    for (label, t, payload, reason) in &bad {
        let key = (t.clone(), payload.len() as i32);
        assert!(
            expected.insert(key, (label.clone(), reason)).is_none(),
            "test bug: two bad messages share a topic and size ({label})"
        );
    }
    for (_, t, payload, _) in bad {
        sys.mqtt.publish(&t, payload).await;
    }

    let total = expected.len() as i64;
    wait_for(
        &sys.ingest,
        &format!("{total} dead letters"),
        Duration::from_secs(60),
        async || {
            let n = count(&sys.db.client, "SELECT count(*) FROM rollcall.dead_letter").await;
            if n >= total {
                Ok(())
            } else {
                Err(format!("{n} dead letters"))
            }
        },
    )
    .await;
    // The good stream goes on after the flood before it is checked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    good.finish(&sys).await;

    let mut got: BTreeMap<(String, i32), Vec<String>> = BTreeMap::new();
    for (t, _, reason, size) in dead_letters(&sys.db.client).await {
        got.entry((t, size)).or_default().push(reason);
    }
    let mut wrong = Vec::new();
    for (key, (label, reason)) in &expected {
        match got.remove(key) {
            Some(r) if r == [*reason] => {}
            other => wrong.push(format!(
                "{label}: expected one dead letter {reason:?}, got {:?}",
                other.unwrap_or_default()
            )),
        }
    }
    wrong
        .extend(got.iter().map(|((t, size), r)| {
            format!("unexpected dead letters {r:?} for {size} bytes on {t}")
        }));
    assert!(
        wrong.is_empty(),
        "{} of {} bad messages not dead-lettered exactly once with their reason:\n{}",
        wrong.len(),
        expected.len(),
        wrong[..wrong.len().min(30)].join("\n")
    );
    sys.assert_healthy().await;
}

/// Cases 3 and 4: a capture time at i64::MAX or -1, an unsynced clock's offset at i64::MIN or
/// i64::MAX, a student id with a NUL, an escape sequence or a newline, each between good punches
/// of its batch: refused alone as `invalid_punch`, the rest recorded, the ack past all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_values_and_unsafe_student_ids_are_refused_alone_and_acked() {
    let sys = System::start(&["gw-good-a", "gw-range", "gw-subject"], &[], "").await;
    let good = GoodStream::start(&sys, "gw-good-a", &[&roll(0), &roll(1)]).await;
    let now = Utc::now();
    let p = |seq, i| punch(seq, now, &roll(i));
    let at = |seq, i, ms| v1::Punch {
        captured_at_ms: ms,
        ..p(seq, i)
    };
    let offset = |seq, i, off| {
        let mut x = p(seq, i);
        x.clock.ntp_synced = false;
        x.clock.offset_ms = Some(off);
        x.flags = v1::flags::CLOCK_UNSYNCED;
        x
    };
    let range = batch(
        "gw-range",
        vec![
            p(1, 10),
            at(2, 11, i64::MAX),
            p(3, 12),
            at(4, 13, -1),
            offset(5, 14, i64::MIN),
            p(6, 15),
            offset(7, 16, i64::MAX),
            p(8, 17),
        ],
    );
    let named = |seq, id: &str| {
        let mut x = p(seq, 0);
        x.subject = v1::Subject::Student(id.into());
        x
    };
    let subjects = batch(
        "gw-subject",
        vec![
            p(1, 18),
            named(2, "S019\0"),
            named(3, "\x1b[31mS020"),
            named(4, "S021\nS022"),
            p(5, 23),
        ],
    );
    sys.send(&range).await;
    sys.send(&subjects).await;
    sys.wait_ack("gw-range", 8).await;
    sys.wait_ack("gw-subject", 5).await;
    // A gateway that missed the ack sends the same batches again: nothing changes.
    sys.send(&range).await;
    sys.send(&subjects).await;
    sys.send(&batch("gw-range", vec![p(9, 24)])).await;
    sys.send(&batch("gw-subject", vec![p(6, 25)])).await;
    sys.wait_ack("gw-range", 9).await;
    sys.wait_ack("gw-subject", 6).await;

    let invalid = |seq| refused(seq, "rejected", "invalid_punch");
    assert_eq!(
        outcomes(&ledger(&sys.db.client, "gw-range").await),
        [
            ok(1),
            invalid(2),
            ok(3),
            invalid(4),
            invalid(5),
            ok(6),
            invalid(7),
            ok(8),
            ok(9)
        ],
        "gw-range: each out-of-range punch refused alone\n{}",
        sys.ingest.diagnose()
    );
    assert_eq!(
        outcomes(&ledger(&sys.db.client, "gw-subject").await),
        [ok(1), invalid(2), invalid(3), invalid(4), ok(5), ok(6)],
        "gw-subject: each unsafe student id refused alone\n{}",
        sys.ingest.diagnose()
    );
    sys.assert_refusals("gw-range", "invalid_punch", &[2, 4, 5, 7]);
    sys.assert_refusals("gw-subject", "invalid_punch", &[2, 3, 4]);
    for i in [11, 13, 14, 16] {
        assert!(
            records(&sys.db.client, &sys.campus, &roll(i))
                .await
                .is_empty(),
            "a refused punch made an attendance record for {}",
            roll(i)
        );
    }
    for i in [10, 12, 15, 17, 18, 23] {
        assert_eq!(
            records(&sys.db.client, &sys.campus, &roll(i)).await.len(),
            1,
            "{}'s good punch beside the refused ones is recorded",
            roll(i)
        );
    }
    good.finish(&sys).await;
    assert_eq!(
        dead_letters(&sys.db.client).await,
        [],
        "refused punches are ledger rows, not dead letters"
    );
    sys.assert_healthy().await;
}

/// The refused_device row of `device` as JSON, and whether it counts at least `n` messages.
async fn refused_device(sys: &System, device: &str, n: i64) -> Result<String, String> {
    let rows = sys
        .db
        .client
        .query(
            "SELECT to_jsonb(r)::text FROM rollcall.refused_device r WHERE device_id = $1",
            &[&device],
        )
        .await
        .map_err(|e| format!("rollcall.refused_device: {e}"))?;
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::from_str(r.get(0)).unwrap())
        .collect();
    // One row per device (and per kind of message, where the table keeps a kind).
    let status_rows: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r.get("kind").is_none_or(|k| k == "status"))
        .collect();
    let [row] = status_rows.as_slice() else {
        return Err(format!(
            "expected one row for {device}'s heartbeats, got {rows:?}"
        ));
    };
    let counted = row.as_object().unwrap().iter().any(|(k, v)| {
        (k.contains("count") || k.contains("messages")) && v.as_i64().is_some_and(|c| c >= n)
    });
    if counted {
        Ok(row.to_string())
    } else {
        Err(format!("no message count of at least {n} in {row}"))
    }
}

/// Cases 5, 6, 8 (no demo devices configured) and 10: punches of an unregistered device, of a
/// disabled device (before and after it is enabled again) and SIMULATED punches are ledger rows
/// `rejected` with the reason, acked with a refusal, never repeated on re-send; the unknown
/// device's heartbeats are counted in rollcall.refused_device, not dead-lettered; and /metrics
/// names no unknown device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_disabled_and_simulating_devices_are_refused_once_and_told_why() {
    let sys = System::start(&["gw-good-a", "gw-sim"], &["gw-off"], "").await;
    let c = &sys.db.client;
    let good = GoodStream::start(&sys, "gw-good-a", &[&roll(0), &roll(1)]).await;
    let p = |seq, i| punch(seq, Utc::now(), &roll(i));

    // 5: an unknown device.
    let ghost = batch("gw-ghost", vec![p(1, 2), p(2, 3), p(3, 2)]);
    sys.send(&ghost).await;
    sys.wait_ack("gw-ghost", 3).await;
    let first = ledger(c, "gw-ghost").await;
    let unknown = |seq| refused(seq, "rejected", "unknown_device");
    assert_eq!(
        outcomes(&first),
        [unknown(1), unknown(2), unknown(3)],
        "punches of an unregistered device"
    );
    sys.assert_refusals("gw-ghost", "unknown_device", &[1, 2, 3]);
    for _ in 0..5 {
        sys.send_status(&status("gw-ghost", synced_clock(), Utc::now()))
            .await;
    }
    sys.send(&ghost).await;
    sys.send(&ghost).await;
    sys.send(&batch("gw-ghost", vec![p(4, 2)])).await;
    sys.wait_ack("gw-ghost", 4).await;
    let rows = ledger(c, "gw-ghost").await;
    assert_eq!(
        outcomes(&rows),
        [unknown(1), unknown(2), unknown(3), unknown(4)],
        "re-sends of an unregistered device's batch add no rows"
    );
    assert_eq!(
        rows[..3].iter().map(|r| r.received_at).collect::<Vec<_>>(),
        first.iter().map(|r| r.received_at).collect::<Vec<_>>(),
        "re-sends leave the first rows as they were"
    );
    let row = wait_for(
        &sys.ingest,
        "gw-ghost's 5 heartbeats counted in rollcall.refused_device",
        Duration::from_secs(5),
        async || refused_device(&sys, "gw-ghost", 5).await,
    )
    .await;
    eprintln!("refused_device: {row}");
    for i in [2, 3] {
        assert!(records(c, &sys.campus, &roll(i)).await.is_empty());
    }
    // 10: many unknown ids, and none of them in /metrics.
    for n in 0..20 {
        let d = format!("ghost-{n:02}");
        sys.send_status(&status(&d, synced_clock(), Utc::now()))
            .await;
        sys.send(&batch(&d, vec![p(1, 4)])).await;
    }
    for n in 0..20 {
        sys.wait_ack(&format!("ghost-{n:02}"), 1).await;
    }

    // 6: a disabled device, judged by its state when the punch was captured.
    let absent = sys.campus.students[&roll(5)];
    ins(
        c,
        "attendance_record",
        &[
            ("session_id", &sys.campus.session.to_string()),
            ("student_id", &format!("'{absent}'")),
            ("mark", "'absent'"),
            ("source", "'system'"),
            (
                "marked_at",
                &format!("'{}'", sys.campus.session_start.to_rfc3339()),
            ),
        ],
    )
    .await;
    let snapshot = async || -> Vec<String> {
        c.query(
            "SELECT to_jsonb(r)::text FROM attendance_record r WHERE session_id = $1 AND student_id = $2",
            &[&sys.campus.session, &absent],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let before = snapshot().await;
    let disabled = |seq| refused(seq, "rejected", "disabled_device");
    let old = batch("gw-off", vec![p(1, 5)]);
    sys.send(&old).await;
    sys.wait_ack("gw-off", 1).await;
    assert_eq!(outcomes(&ledger(c, "gw-off").await), [disabled(1)]);
    sys.assert_refusals("gw-off", "disabled_device", &[1]);
    let while_disabled = Utc::now();
    sys.send(&old).await; // re-sends, seen while the device is still disabled
    sys.send(&old).await;
    sys.send(&batch("gw-off", vec![p(2, 6)])).await;
    sys.wait_ack("gw-off", 2).await;
    let first = ledger(c, "gw-off").await;
    assert_eq!(
        outcomes(&first),
        [disabled(1), disabled(2)],
        "re-sends of a disabled device add no rows"
    );
    c.execute(
        "UPDATE attendance_biometric_device SET is_enabled = true WHERE device_id = 'gw-off'",
        &[],
    )
    .await
    .unwrap();
    sys.send(&batch("gw-off", vec![punch(3, while_disabled, &roll(5))]))
        .await;
    sys.send(&old).await; // an old punch re-sent after the device is enabled again
    sys.wait_ack("gw-off", 3).await;
    let enabled_at = Utc::now();
    sys.send(&batch("gw-off", vec![punch(4, enabled_at, &roll(7))]))
        .await;
    sys.wait_ack("gw-off", 4).await;
    let rows = ledger(c, "gw-off").await;
    assert_eq!(
        outcomes(&rows),
        [disabled(1), disabled(2), disabled(3), ok(4)],
        "captured while disabled: refused, also after re-enabling; captured after: recorded\n{}",
        sys.ingest.diagnose()
    );
    assert_eq!(
        rows[0].received_at, first[0].received_at,
        "the old punch re-sent after re-enabling changed nothing"
    );
    sys.assert_refusals("gw-off", "disabled_device", &[1, 2, 3]);
    assert_eq!(
        snapshot().await,
        before,
        "punches captured while the device was disabled never change the absent record"
    );
    assert!(records(c, &sys.campus, &roll(6)).await.is_empty());
    assert_eq!(records(c, &sys.campus, &roll(7)).await.len(), 1);

    // 8: SIMULATED punches from a device that is not a configured demo device.
    let mut sim = p(1, 8);
    sim.flags = v1::flags::SIMULATED;
    sys.send(&batch("gw-sim", vec![sim, p(2, 9)])).await;
    sys.wait_ack("gw-sim", 2).await;
    assert_eq!(
        outcomes(&ledger(c, "gw-sim").await),
        [refused(1, "rejected", "simulated"), ok(2)]
    );
    sys.assert_refusals("gw-sim", "simulated", &[1]);
    assert!(records(c, &sys.campus, &roll(8)).await.is_empty());

    good.finish(&sys).await;
    assert_eq!(
        dead_letters(c).await,
        [],
        "refused devices' messages are ledger rows or refused_device counts, never dead letters"
    );
    let text = sys.ingest.metrics().await.unwrap();
    let leaked: Vec<&str> = text.lines().filter(|l| l.contains("ghost")).collect();
    assert!(
        leaked.is_empty(),
        "/metrics names unknown devices (unbounded labels): {leaked:?}"
    );
    sys.assert_healthy().await;
}

/// The rest of case 9: batches out of order (6..10 before 1..5), replays of both, and QoS 1
/// duplicate deliveries (the same packet id again with DUP): each seq once in the ledger, one
/// record per student, the ack at the last seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_replayed_and_duplicated_batches_count_each_seq_once() {
    let sys = System::start(&["gw-good-a", "gw-replay"], &[], "").await;
    let good = GoodStream::start(&sys, "gw-good-a", &[&roll(0), &roll(1)]).await;
    let now = Utc::now();
    let low = batch(
        "gw-replay",
        (1..=5)
            .map(|s| punch(s, now, &roll(28 + s as usize)))
            .collect(),
    );
    let high = batch(
        "gw-replay",
        (6..=10)
            .map(|s| punch(s, now, &roll(28 + s as usize)))
            .collect(),
    );
    sys.send(&high).await;
    sys.send(&low).await;
    sys.wait_ack("gw-replay", 10).await;
    sys.send(&low).await;
    sys.send(&high).await;
    let t = topic("gw-replay", Kind::Punches);
    publish_duplicates(sys.broker.port(), &t, &low.encode(), 3).await;
    publish_duplicates(sys.broker.port(), &t, &high.encode(), 2).await;
    sys.send(&batch("gw-replay", vec![punch(11, now, &roll(39))]))
        .await;
    sys.wait_ack("gw-replay", 11).await;
    assert_eq!(
        outcomes(&ledger(&sys.db.client, "gw-replay").await),
        (1..=11).map(ok).collect::<Vec<_>>(),
        "each seq recorded once"
    );
    for s in 1..=11 {
        assert_eq!(
            records(&sys.db.client, &sys.campus, &roll(28 + s))
                .await
                .len(),
            1,
            "one record for {}",
            roll(28 + s)
        );
    }
    assert_eq!(
        count(&sys.db.client, "SELECT count(*) FROM attendance_audit_log").await,
        count(
            &sys.db.client,
            "SELECT count(*) FROM rollcall.ledger WHERE outcome = 'recorded'"
        )
        .await,
        "one audit row per recorded punch"
    );
    good.finish(&sys).await;
    assert_eq!(dead_letters(&sys.db.client).await, []);
    sys.assert_healthy().await;
}

/// Case 7, and case 8 with a demo device configured: a punch stamped an hour ahead is corrected
/// from a heartbeat of the same boot (ledger effective_at = heartbeat received - monotonic
/// difference) or, with no such heartbeat, held as `clock_ahead`, kept out of attendance and
/// acked with a refusal; SIMULATED punches count only from the configured demo device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_ahead_is_corrected_from_heartbeats_or_held_and_only_demo_devices_simulate() {
    let sys = System::start(
        &[
            "gw-good-a",
            "gw-clock-fix",
            "gw-clock-held",
            "gw-demo",
            "gw-real",
        ],
        &[],
        "[attendance]\ndemo_devices = [\"gw-demo\"]\n",
    )
    .await;
    let c = &sys.db.client;
    let good = GoodStream::start(&sys, "gw-good-a", &[&roll(0), &roll(1)]).await;
    let ahead = Utc::now() + Span::hours(1);
    let clock = |boot, monotonic_ms| v1::ClockState {
        ntp_synced: false,
        offset_ms: None,
        boot_id: boot,
        monotonic_ms,
    };
    let jumped = |seq, roll_i, boot, monotonic_ms| v1::Punch {
        clock: clock(boot, monotonic_ms),
        flags: v1::flags::CLOCK_UNSYNCED,
        ..punch(seq, ahead, &roll(roll_i))
    };
    let heartbeat = async |device: &str, boot, monotonic_ms| {
        let before = Utc::now();
        sys.send_status(&status(device, clock(boot, monotonic_ms), ahead))
            .await;
        wait_for(
            &sys.ingest,
            &format!("heartbeat of {device} stored"),
            Duration::from_secs(10),
            async || {
                let n = count(
                    c,
                    &format!(
                        "SELECT count(*) FROM rollcall.device_status WHERE device_id = '{device}'"
                    ),
                )
                .await;
                if n == 1 { Ok(()) } else { Err("no row".into()) }
            },
        )
        .await;
        (before, Utc::now())
    };

    // Corrected: the punch was captured 30 s (monotonic) before the heartbeat arrived.
    let boot = uuid::Uuid::now_v7();
    let (sent, stored) = heartbeat("gw-clock-fix", boot, 5_000_000).await;
    sys.send(&batch("gw-clock-fix", vec![jumped(1, 20, boot, 4_970_000)]))
        .await;
    sys.wait_ack("gw-clock-fix", 1).await;
    let rows = ledger(c, "gw-clock-fix").await;
    assert_eq!(outcomes(&rows), [ok(1)], "corrected and recorded: {rows:?}");
    let slack = Span::seconds(2);
    let (lo, hi) = (
        sent - Span::seconds(30) - slack,
        stored - Span::seconds(30) + slack,
    );
    assert!(
        rows[0].effective_at.is_some_and(|t| lo <= t && t <= hi),
        "effective_at {:?} should be the heartbeat's arrival less 30 s, within {lo}..{hi}",
        rows[0].effective_at
    );
    assert!(
        rows[0].detail.contains("corrected"),
        "ledger detail says the time was corrected: {:?}",
        rows[0].detail
    );
    assert_eq!(records(c, &sys.campus, &roll(20)).await.len(), 1);
    assert_eq!(
        sys.mqtt.acks().refusals("gw-clock-fix", EPOCH),
        [],
        "a corrected punch is not refused"
    );

    // Held: no heartbeat at all, then a heartbeat of another boot.
    let held = |seq| refused(seq, "held", "clock_ahead");
    let boot_x = uuid::Uuid::now_v7();
    sys.send(&batch(
        "gw-clock-held",
        vec![jumped(1, 21, boot_x, 7_000_000)],
    ))
    .await;
    sys.wait_ack("gw-clock-held", 1).await;
    heartbeat("gw-clock-held", uuid::Uuid::now_v7(), 9_000_000).await;
    sys.send(&batch(
        "gw-clock-held",
        vec![jumped(2, 22, boot_x, 7_001_000)],
    ))
    .await;
    sys.wait_ack("gw-clock-held", 2).await;
    assert_eq!(
        outcomes(&ledger(c, "gw-clock-held").await),
        [held(1), held(2)],
        "a clock ahead with no heartbeat of the same boot is held"
    );
    sys.assert_refusals("gw-clock-held", "clock_ahead", &[1, 2]);
    for i in [21, 22] {
        assert!(
            records(c, &sys.campus, &roll(i)).await.is_empty(),
            "a held punch is not applied to attendance"
        );
    }

    // SIMULATED: counted from the demo device only.
    let sim = |seq, i| v1::Punch {
        flags: v1::flags::SIMULATED,
        ..punch(seq, Utc::now(), &roll(i))
    };
    sys.send(&batch("gw-demo", vec![sim(1, 23)])).await;
    sys.send(&batch("gw-real", vec![sim(1, 24)])).await;
    sys.wait_ack("gw-demo", 1).await;
    sys.wait_ack("gw-real", 1).await;
    assert_eq!(outcomes(&ledger(c, "gw-demo").await), [ok(1)]);
    assert_eq!(records(c, &sys.campus, &roll(23)).await.len(), 1);
    assert_eq!(
        outcomes(&ledger(c, "gw-real").await),
        [refused(1, "rejected", "simulated")]
    );
    sys.assert_refusals("gw-real", "simulated", &[1]);
    assert!(records(c, &sys.campus, &roll(24)).await.is_empty());

    good.finish(&sys).await;
    assert_eq!(dead_letters(c).await, []);
    sys.assert_healthy().await;
}

/// Case 11: an oversized (2 MiB) and a garbage message on a running rollcalld's ack topic do not
/// cost it its broker connection (`rollcall_mqtt_reconnects_total` stays 0), and its journal
/// still drains through ingest's acks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_keeps_its_link_and_drains_through_oversized_and_garbage_acks() {
    const GW: &str = "room-101"; // GatewayOptions' default id, site "test-site"
    let sys = System::start(&[GW], &[], "").await;
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port().unwrap();
    let mut opts = GatewayOptions::new(sys.broker.port());
    opts.metrics_port = Some(metrics_port);
    let config = opts.write(dir.path()).unwrap();
    let gw = Rollcalld::start(&rollcalld_binary(), &config)
        .await
        .unwrap();
    let tap = async |line: &str| {
        let reply = gw.command(line).await.unwrap();
        let r = parse_reply(&reply).unwrap_or_else(|| panic!("{line}: {reply}"));
        assert!(
            ["accepted", "unknown"].contains(&r.outcome.as_str()),
            "{line}: {r:?}"
        );
    };
    let reconnects = async || {
        let text = scrape(metrics_port)
            .await
            .unwrap_or_else(|e| panic!("rollcalld /metrics: {e}\nlog:\n{}", gw.log()));
        sample(&text, "rollcall_mqtt_reconnects_total")
            .unwrap_or_else(|| panic!("no rollcall_mqtt_reconnects_total in:\n{text}"))
    };
    tap("card door-card 0000000001").await;
    tap("card door-card 0000000002").await;
    gw.wait_journal((2, 2, 0)).await.unwrap();
    assert_eq!(reconnects().await, 0.0, "rollcalld connected once at start");

    let ack_topic = rollcall_protocol::topic::build("test-site", GW, Kind::Ack);
    sys.mqtt.publish(&ack_topic, vec![0xff; 2 << 20]).await;
    sys.mqtt
        .publish(&ack_topic, b"\xffnot an ack".to_vec())
        .await;
    tap("finger door-finger 1").await;
    tap("card door-card 00DEADBEEF").await;
    tap("card door-card 0000000002").await;
    // Ingest acks these after the bad messages reached the gateway's session, so the drain
    // proves they were read and dropped without a reconnect.
    let drained = gw.wait_journal((5, 5, 0)).await;
    let after = reconnects().await;
    drained.unwrap_or_else(|e| {
        panic!("rollcalld's journal did not drain after the bad acks ({after} reconnects): {e}")
    });
    assert_eq!(
        after,
        0.0,
        "rollcalld reconnected after an oversized or garbage ack\nlog:\n{}",
        gw.log()
    );
    let seqs: Vec<i64> = sys
        .db
        .client
        .query(
            "SELECT seq FROM rollcall.ledger WHERE device_id = $1 ORDER BY seq",
            &[&GW],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5], "every tap in the ledger once");
    sys.assert_healthy().await;
}
