//! One transaction per batch of MQTT messages: dead letters, heartbeats, the ledger, the
//! attendance upserts with their audit rows, and the per-device cursors whose contiguous seq
//! becomes each device's ack. The caller acks nothing until this returns `Ok` (after COMMIT).
//!
//! Order inside the transaction: look devices up; drop punches the ledger already has
//! (replays cost one indexed query); resolve students, sessions and enrolments in three set
//! queries; [`decide`](crate::decide::decide) each punch; insert the ledger rows (ON CONFLICT DO
//! NOTHING: a replica that inserted the same key first wins, we skip); upsert the earliest punch
//! per (session, student) into `attendance_record` with its audit row; mark the rest
//! `duplicate`; advance the cursors.

use super::DbError;
use crate::config::SessionClock;
use crate::decide::{self, Decision, DeviceInfo, Lookup, Outcome, Rules, SessionInfo};
use crate::punch::{BatchIn, DeadLetter, DeadReason, Envelope, Message, PunchIn, StatusIn};
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio_postgres::Client;
use uuid::Uuid;

/// Settings that do not change per batch.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Replica name, stored in the ledger.
    pub node: String,
    /// Campus time zone.
    pub tz: chrono_tz::Tz,
    /// Session clock.
    pub clock: SessionClock,
    /// Grace when not configured in `attendance_configuration`.
    pub default_grace_minutes: i64,
    /// Early arrival window.
    pub early_arrival_minutes: i64,
    /// Future-skew limit.
    pub max_future_skew_s: i64,
}

/// An application ack to publish after COMMIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckOut {
    /// Site (topic level).
    pub site: String,
    /// Device.
    pub device_id: String,
    /// Epoch.
    pub epoch: u64,
    /// Highest contiguous seq committed.
    pub up_to_seq: u64,
}

/// What a committed batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchReport {
    /// Acks to send, one per (device, epoch).
    pub acks: Vec<AckOut>,
    /// New ledger rows by outcome.
    pub outcomes: HashMap<&'static str, u64>,
    /// Punches already in the ledger (replays).
    pub replayed: u64,
    /// Dead letters written.
    pub dead: Vec<DeadReason>,
    /// Heartbeats applied.
    pub heartbeats: u64,
    /// Per (device, epoch): max seq seen minus contiguous seq (seqs not yet ackable).
    pub pending: Vec<(String, u64)>,
}

struct Item<'a> {
    batch: &'a BatchIn,
    punch: &'a PunchIn,
    device: &'a DeviceInfo,
}

/// Phase timings for the debug log.
struct Lap {
    last: std::time::Instant,
    phases: Vec<(&'static str, std::time::Duration)>,
}

impl Lap {
    fn new() -> Self {
        Lap {
            last: std::time::Instant::now(),
            phases: Vec::new(),
        }
    }
    fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.phases.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Lap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, d) in &self.phases {
            write!(f, "{n}={:.1}ms ", d.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

fn ms(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Writes one batch in one transaction and returns what to ack.
pub async fn write_batch(
    client: &mut Client,
    msgs: &[Envelope],
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<BatchReport, DbError> {
    let tx = client.transaction().await?;
    let mut report = BatchReport::default();
    let mut lap = Lap::new();

    let mut ids: Vec<&str> = msgs
        .iter()
        .filter_map(|m| match &m.msg {
            Message::Punches(b) => Some(b.device_id.as_str()),
            Message::Status(st) => Some(st.device_id.as_str()),
            Message::Dead(_) => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let devices: HashMap<String, DeviceInfo> = tx
        .query(
            "SELECT id, device_id, room, device_type, is_enabled FROM attendance_biometric_device WHERE device_id = ANY($1)",
            &[&ids],
        )
        .await?
        .iter()
        .map(|r| {
            let d = DeviceInfo { id: r.get(0), device_id: r.get(1), room: r.get(2), device_type: r.get(3), enabled: r.get(4) };
            (d.device_id.clone(), d)
        })
        .collect();

    let mut dead: Vec<DeadLetter> = Vec::new();
    let mut batches: Vec<(&BatchIn, &DeviceInfo)> = Vec::new();
    let mut statuses: Vec<&StatusIn> = Vec::new();
    for env in msgs {
        let m = &env.msg;
        let device_id = match m {
            Message::Dead(d) => {
                dead.push(d.clone());
                continue;
            }
            Message::Punches(b) => &b.device_id,
            Message::Status(st) => &st.device_id,
        };
        let refuse = match devices.get(device_id) {
            None => Some((
                DeadReason::UnknownDevice,
                "not registered in attendance_biometric_device",
            )),
            Some(d) if !d.enabled => Some((
                DeadReason::DisabledDevice,
                "attendance_biometric_device.is_enabled is false",
            )),
            Some(d) => {
                match m {
                    Message::Punches(b) => batches.push((b, d)),
                    Message::Status(st) => statuses.push(st),
                    Message::Dead(_) => {}
                }
                None
            }
        };
        if let Some((reason, detail)) = refuse {
            dead.push(DeadLetter {
                topic: env.topic.clone(),
                device_id: Some(device_id.clone()),
                reason,
                detail: detail.into(),
                payload: env.payload.iter().take(64 * 1024).copied().collect(),
                size: env.payload.len(),
            });
        }
    }

    write_dead_letters(&tx, &dead, &s.node, now).await?;
    report.dead = dead.iter().map(|d| d.reason).collect();
    write_heartbeats(&tx, &statuses, now).await?;
    report.heartbeats = statuses.len() as u64;

    // Unique (device, epoch, seq) across the batch, then drop what the ledger already has.
    let mut seen = HashSet::new();
    let mut items: Vec<Item> = Vec::new();
    for (b, d) in &batches {
        for p in &b.punches {
            if seen.insert((b.device_id.as_str(), b.epoch, p.seq)) {
                items.push(Item {
                    batch: b,
                    punch: p,
                    device: d,
                });
            } else {
                report.replayed += 1;
            }
        }
    }
    items.sort_by(|a, b| {
        (&a.batch.device_id, a.batch.epoch, a.punch.seq).cmp(&(
            &b.batch.device_id,
            b.batch.epoch,
            b.punch.seq,
        ))
    });
    if !items.is_empty() {
        lap.mark("prelude");
        let existing = existing_keys(&tx, &items).await?;
        lap.mark("existing");
        let before = items.len();
        items.retain(|i| {
            !existing.contains(&(
                i.batch.device_id.clone(),
                i.batch.epoch as i64,
                i.punch.seq as i64,
            ))
        });
        report.replayed += (before - items.len()) as u64;
    }

    if !items.is_empty() {
        let grace = config_minutes(&tx, "GRACE_PERIOD_MINUTES", s.default_grace_minutes).await?;
        let rules = Rules {
            grace: Duration::minutes(grace),
            early: Duration::minutes(s.early_arrival_minutes),
            clock: s.clock,
            tz: s.tz,
            max_future: Duration::seconds(s.max_future_skew_s),
            now,
        };
        let lookup = lookup(&tx, &items, &rules).await?;
        lap.mark("lookup");
        let decisions: Vec<Decision> = items
            .iter()
            .map(|i| decide::decide(i.punch, i.device, &lookup, &rules))
            .collect();
        lap.mark("decide");
        let inserted = insert_ledger(&tx, &items, &decisions, &s.node, now).await?;
        lap.mark("ledger");
        report.replayed += (items.len() - inserted.iter().filter(|x| **x).count()) as u64;
        let duplicates = upsert_attendance(&tx, &items, &decisions, &inserted).await?;
        lap.mark("upsert");
        mark_duplicates(&tx, &items, &duplicates).await?;
        for (i, d) in decisions.iter().enumerate() {
            if inserted[i] {
                let o = if duplicates.contains(&i) {
                    Outcome::Duplicate
                } else {
                    d.outcome
                };
                *report.outcomes.entry(o.as_str()).or_default() += 1;
            }
        }
    }

    let (acks, pending) = advance_cursors(&tx, &batches, now).await?;
    report.acks = acks;
    report.pending = pending;
    lap.mark("cursors");
    tx.commit().await?;
    lap.mark("commit");
    tracing::debug!(punches = items.len(), phases = %lap, "batch timings");
    Ok(report)
}

async fn write_dead_letters(
    tx: &tokio_postgres::Transaction<'_>,
    dead: &[DeadLetter],
    node: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    if dead.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = dead.iter().map(|d| d.topic.as_str()).collect();
    let devs: Vec<Option<&str>> = dead.iter().map(|d| d.device_id.as_deref()).collect();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    let details: Vec<&str> = dead.iter().map(|d| d.detail.as_str()).collect();
    let payloads: Vec<&[u8]> = dead.iter().map(|d| d.payload.as_slice()).collect();
    let sizes: Vec<i32> = dead
        .iter()
        .map(|d| i32::try_from(d.size).unwrap_or(i32::MAX))
        .collect();
    tx.execute(
        "INSERT INTO rollcall.dead_letter (received_at, topic, device_id, reason, detail, payload, payload_size, node)
         SELECT $1, t, d, r, x, p, n, $8 FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[], $7::int4[]) AS u(t, d, r, x, p, n)",
        &[&now, &topics, &devs, &reasons, &details, &payloads, &sizes, &node],
    )
    .await?;
    Ok(())
}

async fn write_heartbeats(
    tx: &tokio_postgres::Transaction<'_>,
    statuses: &[&StatusIn],
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    for st in statuses {
        let health = if !st.online {
            "offline"
        } else if st.readers_unhealthy {
            "readers_unhealthy"
        } else {
            "ok"
        };
        // 'maintenance' is set by people and left alone; otherwise the heartbeat decides.
        tx.execute(
            "UPDATE attendance_biometric_device SET last_seen = $2, firmware_version = left($3, 50), updated_at = $2,
                 status = CASE WHEN status = 'maintenance' THEN status WHEN $4 = 'ok' THEN 'active'
                               WHEN $4 = 'offline' THEN 'inactive' ELSE 'error' END
             WHERE device_id = $1",
            &[&st.device_id, &now, &st.version, &health],
        )
        .await?;
        tx.execute(
            "INSERT INTO rollcall.device_status (device_id, last_status_at, version, online, status, health, health_since)
             VALUES ($1, $2, $3, $4, $5, $6, $2)
             ON CONFLICT (device_id) DO UPDATE SET last_status_at = $2, version = $3, online = $4, status = $5,
                 health_since = CASE WHEN rollcall.device_status.health = $6 THEN rollcall.device_status.health_since ELSE $2 END,
                 health = $6",
            &[&st.device_id, &now, &st.version, &st.online, &st.json, &health],
        )
        .await?;
    }
    Ok(())
}

async fn existing_keys(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[Item<'_>],
) -> Result<HashSet<(String, i64, i64)>, DbError> {
    let devs: Vec<&str> = items.iter().map(|i| i.batch.device_id.as_str()).collect();
    let epochs: Vec<i64> = items.iter().map(|i| i.batch.epoch as i64).collect();
    let seqs: Vec<i64> = items.iter().map(|i| i.punch.seq as i64).collect();
    let rows = tx
        .query(
            "SELECT l.device_id::text, l.epoch, l.seq FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(d, e, s)
             JOIN rollcall.ledger l ON l.device_id = u.d AND l.epoch = u.e AND l.seq = u.s",
            &[&devs, &epochs, &seqs],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Reads an integer setting from `attendance_configuration`, falling back to `default`.
pub async fn config_minutes(
    tx: &impl tokio_postgres::GenericClient,
    key: &str,
    default: i64,
) -> Result<i64, DbError> {
    let row = tx
        .query_opt(
            "SELECT value FROM attendance_configuration WHERE key = $1 AND is_active",
            &[&key],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, String>(0).trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or(default))
}

async fn lookup(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[Item<'_>],
    rules: &Rules,
) -> Result<Lookup, DbError> {
    let mut l = Lookup::default();
    let mut keys: Vec<&str> = items
        .iter()
        .filter_map(|i| match &i.punch.subject {
            crate::punch::SubjectIn::Student(s) => Some(s.as_str()),
            _ => None,
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(l);
    }
    let uuids: Vec<Uuid> = keys
        .iter()
        .filter_map(|k| Uuid::parse_str(k).ok())
        .collect();
    for r in tx
        .query("SELECT id, roll_number::text FROM students_student WHERE id = ANY($1) OR roll_number = ANY($2)", &[&uuids, &keys])
        .await?
    {
        let id: Uuid = r.get(0);
        l.students.insert(id.to_string(), id);
        l.students.insert(id.hyphenated().to_string().to_uppercase(), id);
        l.students.insert(r.get(1), id);
    }
    let mut rooms: Vec<&str> = items
        .iter()
        .map(|i| i.device.room.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    let times: Vec<DateTime<Utc>> = items.iter().map(|i| ms(i.punch.effective_ms())).collect();
    let (Some(lo), Some(hi)) = (times.iter().min(), times.iter().max()) else {
        return Ok(l);
    };
    let (lo, _) = rules.search_window(*lo);
    let (_, hi) = rules.search_window(*hi);
    let sessions: Vec<SessionInfo> = tx
        .query(
            "SELECT id, room::text, start_datetime, end_datetime, course_section_id, academic_period_id
             FROM attendance_session
             WHERE room = ANY($1) AND status IN ('scheduled','open','closed')
               AND start_datetime <= $3 AND end_datetime >= $2 AND start_datetime >= $2 - interval '1 day'",
            &[&rooms, &lo, &hi],
        )
        .await?
        .iter()
        .map(|r| SessionInfo { id: r.get(0), room: r.get(1), start: r.get(2), end: r.get(3), course_section_id: r.get(4), academic_period_id: r.get(5) })
        .collect();
    let students: Vec<Uuid> = {
        let mut v: Vec<Uuid> = l.students.values().copied().collect();
        v.sort();
        v.dedup();
        v
    };
    let mut sections: Vec<i64> = sessions.iter().map(|s| s.course_section_id).collect();
    sections.sort_unstable();
    sections.dedup();
    for s in sessions {
        l.sessions.entry(s.room.clone()).or_default().push(s);
    }
    if !sections.is_empty() {
        for r in tx
            .query(
                "SELECT student_id, course_section_id FROM academics_courseenrollment
                 WHERE status = 'ENROLLED' AND course_section_id = ANY($1) AND student_id = ANY($2)",
                &[&sections, &students],
            )
            .await?
        {
            l.enrolled.insert((r.get(0), r.get(1)));
        }
    }
    Ok(l)
}

async fn insert_ledger(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[Item<'_>],
    ds: &[Decision],
    node: &str,
    now: DateTime<Utc>,
) -> Result<Vec<bool>, DbError> {
    let devs: Vec<&str> = items.iter().map(|i| i.batch.device_id.as_str()).collect();
    let epochs: Vec<i64> = items.iter().map(|i| i.batch.epoch as i64).collect();
    let seqs: Vec<i64> = items.iter().map(|i| i.punch.seq as i64).collect();
    let events: Vec<Uuid> = items.iter().map(|i| i.punch.event_id).collect();
    let captured: Vec<DateTime<Utc>> = items.iter().map(|i| ms(i.punch.captured_at_ms)).collect();
    let effective: Vec<DateTime<Utc>> = items.iter().map(|i| ms(i.punch.effective_ms())).collect();
    let creds: Vec<&str> = items.iter().map(|i| i.punch.credential.as_str()).collect();
    let subjects: Vec<String> = items.iter().map(|i| i.punch.subject_text()).collect();
    let readers: Vec<&str> = items.iter().map(|i| i.punch.reader_id.as_str()).collect();
    let kinds: Vec<&str> = items.iter().map(|i| i.punch.reader_kind.as_str()).collect();
    let scores: Vec<Option<i32>> = items.iter().map(|i| i.punch.score.map(i32::from)).collect();
    let flags: Vec<i64> = items.iter().map(|i| i64::from(i.punch.flags)).collect();
    let synced: Vec<bool> = items.iter().map(|i| i.punch.ntp_synced).collect();
    let offsets: Vec<Option<i64>> = items.iter().map(|i| i.punch.offset_ms).collect();
    let boots: Vec<Uuid> = items.iter().map(|i| i.punch.boot_id).collect();
    let monos: Vec<i64> = items
        .iter()
        .map(|i| i.punch.monotonic_ms.min(i64::MAX as u64) as i64)
        .collect();
    let outcomes: Vec<&str> = ds.iter().map(|d| d.outcome.as_str()).collect();
    let details: Vec<&str> = ds.iter().map(|d| d.detail.as_str()).collect();
    let sessions: Vec<Option<i64>> = ds
        .iter()
        .map(|d| d.session.as_ref().map(|s| s.id))
        .collect();
    let students: Vec<Option<Uuid>> = ds.iter().map(|d| d.student).collect();
    let marks: Vec<Option<&str>> = ds.iter().map(|d| d.mark.map(|m| m.as_str())).collect();
    let idx: Vec<i32> = (0..items.len() as i32).collect();
    let rows = tx
        .query(
            "WITH ins AS (
               INSERT INTO rollcall.ledger (device_id, epoch, seq, event_id, captured_at, effective_at, received_at,
                   credential, subject, reader_id, reader_kind, score, flags, ntp_synced, clock_offset_ms, boot_id,
                   monotonic_ms, outcome, detail, session_id, student_id, mark, node)
               SELECT d, e, s, ev, ca, ea, $22, cr, su, rd, rk, sc, fl, ns, co, bo, mo, oc, dt, se, st, mk, $23
               FROM unnest($1::text[], $2::int8[], $3::int8[], $4::uuid[], $5::timestamptz[], $6::timestamptz[],
                           $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], $12::int8[], $13::bool[],
                           $14::int8[], $15::uuid[], $16::int8[], $17::text[], $18::text[], $19::int8[], $20::uuid[],
                           $21::text[])
                    AS u(d, e, s, ev, ca, ea, cr, su, rd, rk, sc, fl, ns, co, bo, mo, oc, dt, se, st, mk)
               ON CONFLICT (device_id, epoch, seq) DO NOTHING
               RETURNING device_id, epoch, seq)
             SELECT u.i FROM unnest($1::text[], $2::int8[], $3::int8[], $24::int4[]) AS u(d, e, s, i)
             JOIN ins ON ins.device_id = u.d AND ins.epoch = u.e AND ins.seq = u.s",
            &[
                &devs, &epochs, &seqs, &events, &captured, &effective, &creds, &subjects, &readers, &kinds, &scores,
                &flags, &synced, &offsets, &boots, &monos, &outcomes, &details, &sessions, &students, &marks, &now,
                &node, &idx,
            ],
        )
        .await?;
    let mut inserted = vec![false; items.len()];
    for r in rows {
        let i: i32 = r.get(0);
        if let Some(x) = inserted.get_mut(i as usize) {
            *x = true;
        }
    }
    Ok(inserted)
}

/// Upserts the earliest new recordable punch per (session, student); returns the indexes of
/// recordable punches that changed nothing (they become `duplicate`).
async fn upsert_attendance(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[Item<'_>],
    ds: &[Decision],
    inserted: &[bool],
) -> Result<HashSet<usize>, DbError> {
    let mut best: BTreeMap<(i64, Uuid), usize> = BTreeMap::new();
    let mut dups = HashSet::new();
    for (i, d) in ds.iter().enumerate() {
        if !inserted[i] || d.outcome != Outcome::Recorded {
            continue;
        }
        let (Some(sess), Some(stu)) = (&d.session, d.student) else {
            continue;
        };
        let key = (sess.id, stu);
        match best.get(&key) {
            Some(&j) if items[j].punch.effective_ms() <= items[i].punch.effective_ms() => {
                dups.insert(i);
            }
            Some(&j) => {
                dups.insert(j);
                best.insert(key, i);
            }
            None => {
                best.insert(key, i);
            }
        }
    }
    if best.is_empty() {
        return Ok(dups);
    }
    let chosen: Vec<usize> = best.values().copied().collect();
    let sess: Vec<i64> = best.keys().map(|k| k.0).collect();
    let stus: Vec<Uuid> = best.keys().map(|k| k.1).collect();
    let periods: Vec<Option<Uuid>> = chosen
        .iter()
        .map(|&i| ds[i].session.as_ref().and_then(|s| s.academic_period_id))
        .collect();
    let marks: Vec<&str> = chosen
        .iter()
        .map(|&i| ds[i].mark.map(|m| m.as_str()).unwrap_or("present"))
        .collect();
    let at: Vec<DateTime<Utc>> = chosen
        .iter()
        .map(|&i| ms(items[i].punch.effective_ms()))
        .collect();
    let sources: Vec<&str> = chosen
        .iter()
        .map(|&i| items[i].punch.credential.record_source())
        .collect();
    let devs: Vec<&str> = chosen
        .iter()
        .map(|&i| items[i].batch.device_id.as_str())
        .collect();
    let dtypes: Vec<&str> = chosen
        .iter()
        .map(|&i| items[i].device.device_type.as_str())
        .collect();
    let events: Vec<String> = chosen
        .iter()
        .map(|&i| items[i].punch.event_id.to_string())
        .collect();
    let vendor: Vec<serde_json::Value> = chosen.iter().map(|&i| vendor_data(&items[i])).collect();
    let rows = tx
        .query(
            "WITH u AS (
               SELECT * FROM unnest($1::int8[], $2::uuid[], $3::uuid[], $4::text[], $5::timestamptz[], $6::text[],
                                    $7::text[], $8::text[], $9::text[], $10::jsonb[])
                 AS u(session_id, student_id, period_id, mark, marked_at, source, device_id, device_type, event_id, vendor_data)
             ), old AS (
               SELECT r.id, r.session_id, r.student_id, r.mark, r.marked_at, r.source
               FROM attendance_record r JOIN u ON r.session_id = u.session_id AND r.student_id = u.student_id
             ), up AS (
               INSERT INTO attendance_record AS r (created_at, updated_at, academic_period_id, session_id, student_id,
                   mark, marked_at, source, reason, notes, device_id, device_type, ip_address, user_agent,
                   location_lat, location_lng, client_uuid, sync_status, vendor_event_id, vendor_data,
                   marked_by_id, last_modified_by_id)
               SELECT now(), now(), period_id, session_id, student_id, mark, marked_at, source, '', '', device_id,
                      device_type, NULL, '', NULL, NULL, '', 'synced', event_id, vendor_data, NULL, NULL
               FROM u ORDER BY session_id, student_id
               ON CONFLICT (session_id, student_id) DO UPDATE SET
                   updated_at = now(),
                   mark = CASE WHEN r.mark = 'present' THEN 'present' ELSE EXCLUDED.mark END,
                   marked_at = EXCLUDED.marked_at, source = EXCLUDED.source, device_id = EXCLUDED.device_id,
                   device_type = EXCLUDED.device_type, vendor_event_id = EXCLUDED.vendor_event_id,
                   vendor_data = EXCLUDED.vendor_data, sync_status = 'synced'
               WHERE r.mark NOT IN ('present', 'late', 'excused')
                  OR (r.mark IN ('present', 'late') AND EXCLUDED.marked_at < r.marked_at)
               RETURNING r.id, r.session_id, r.student_id, r.mark, r.marked_at, r.source, r.vendor_event_id
             ), aud AS (
               INSERT INTO attendance_audit_log (created_at, updated_at, entity_type, entity_id, action,
                   performed_by_id, before, after, reason, source, ip_address, user_agent, session_id, student_id)
               SELECT now(), now(), 'AttendanceRecord', up.id::text,
                      CASE WHEN old.id IS NULL THEN 'create' ELSE 'update' END, NULL,
                      CASE WHEN old.id IS NULL THEN NULL
                           ELSE jsonb_build_object('mark', old.mark, 'marked_at', old.marked_at, 'source', old.source) END,
                      jsonb_build_object('mark', up.mark, 'marked_at', up.marked_at, 'source', up.source,
                                         'vendor_event_id', up.vendor_event_id),
                      'rollcall punch', up.source, NULL, 'rollcall-ingest', up.session_id::text, up.student_id::text
               FROM up LEFT JOIN old ON old.session_id = up.session_id AND old.student_id = up.student_id
             )
             SELECT session_id, student_id FROM up",
            &[&sess, &stus, &periods, &marks, &at, &sources, &devs, &dtypes, &events, &vendor],
        )
        .await?;
    let changed: HashSet<(i64, Uuid)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (k, &i) in &best {
        if !changed.contains(k) {
            dups.insert(i);
        }
    }
    Ok(dups)
}

fn vendor_data(i: &Item<'_>) -> serde_json::Value {
    let p = i.punch;
    serde_json::json!({"rollcall": {
        "device_id": i.batch.device_id, "epoch": i.batch.epoch.to_string(), "seq": p.seq,
        "event_id": p.event_id.to_string(), "reader_id": p.reader_id, "reader_kind": p.reader_kind,
        "credential": p.credential.as_str(), "score": p.score, "flags": p.flags,
        "captured_at_ms": p.captured_at_ms, "ntp_synced": p.ntp_synced, "clock_offset_ms": p.offset_ms,
    }})
}

async fn mark_duplicates(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[Item<'_>],
    dups: &HashSet<usize>,
) -> Result<(), DbError> {
    if dups.is_empty() {
        return Ok(());
    }
    let devs: Vec<&str> = dups
        .iter()
        .map(|&i| items[i].batch.device_id.as_str())
        .collect();
    let epochs: Vec<i64> = dups.iter().map(|&i| items[i].batch.epoch as i64).collect();
    let seqs: Vec<i64> = dups.iter().map(|&i| items[i].punch.seq as i64).collect();
    tx.execute(
        "UPDATE rollcall.ledger l SET outcome = 'duplicate', detail = 'record already held this or an earlier punch, or present/excused'
         FROM unnest($1::text[], $2::int8[], $3::int8[]) AS u(d, e, s)
         WHERE l.device_id = u.d AND l.epoch = u.e AND l.seq = u.s",
        &[&devs, &epochs, &seqs],
    )
    .await?;
    Ok(())
}

type Cursors = (Vec<AckOut>, Vec<(String, u64)>);

async fn advance_cursors(
    tx: &tokio_postgres::Transaction<'_>,
    batches: &[(&BatchIn, &DeviceInfo)],
    now: DateTime<Utc>,
) -> Result<Cursors, DbError> {
    let mut keys: BTreeMap<(String, i64), (String, i64, i64)> = BTreeMap::new();
    for (b, _) in batches {
        let e = keys
            .entry((b.device_id.clone(), b.epoch as i64))
            .or_insert((b.site.clone(), 0, 0));
        e.1 = e.1.max(b.last_seq() as i64);
        e.2 += b.punches.len() as i64;
    }
    if keys.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let devs: Vec<&str> = keys.keys().map(|k| k.0.as_str()).collect();
    let epochs: Vec<i64> = keys.keys().map(|k| k.1).collect();
    let maxs: Vec<i64> = keys.values().map(|v| v.1).collect();
    let counts: Vec<i64> = keys.values().map(|v| v.2).collect();
    tx.execute(
        "INSERT INTO rollcall.device_cursor (device_id, epoch, contiguous_seq, max_seq, punches, first_seen, last_commit_at)
         SELECT d, e, 0, 0, 0, $3, $3 FROM unnest($1::text[], $2::int8[]) AS u(d, e) ORDER BY d, e
         ON CONFLICT (device_id, epoch) DO NOTHING",
        &[&devs, &epochs, &now],
    )
    .await?;
    // Gaps and islands: among the first 50,000 ledger seqs above the cursor, those with
    // seq - row_number = cursor are exactly cursor+1, cursor+2, ... with no hole.
    let rows = tx
        .query(
            "UPDATE rollcall.device_cursor c SET
                 contiguous_seq = COALESCE((
                     SELECT max(x.seq) FROM (
                         SELECT l.seq, l.seq - row_number() OVER (ORDER BY l.seq) AS g
                         FROM (SELECT seq FROM rollcall.ledger l
                               WHERE l.device_id = c.device_id AND l.epoch = c.epoch AND l.seq > c.contiguous_seq
                               ORDER BY seq LIMIT 50000) l) x
                     WHERE x.g = c.contiguous_seq), c.contiguous_seq),
                 max_seq = GREATEST(c.max_seq, u.m), punches = c.punches + u.n, last_commit_at = $5
             FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) AS u(d, e, m, n)
             WHERE c.device_id = u.d AND c.epoch = u.e
             RETURNING c.device_id::text, c.epoch, c.contiguous_seq, c.max_seq",
            &[&devs, &epochs, &maxs, &counts, &now],
        )
        .await?;
    let mut acks = Vec::new();
    let mut pending = Vec::new();
    for r in rows {
        let (d, e, c, m): (String, i64, i64, i64) = (r.get(0), r.get(1), r.get(2), r.get(3));
        let site = keys
            .get(&(d.clone(), e))
            .map(|v| v.0.clone())
            .unwrap_or_default();
        pending.push((d.clone(), (m - c).max(0) as u64));
        if c > 0 {
            acks.push(AckOut {
                site,
                device_id: d,
                epoch: e as u64,
                up_to_seq: c as u64,
            });
        }
    }
    Ok((acks, pending))
}
