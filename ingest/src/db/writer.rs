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
use super::attendance::{advance_cursors, insert_ledger, mark_duplicates, upsert_attendance};
use crate::config::SessionClock;
use crate::decide::{self, Decision, DeviceInfo, Lookup, Outcome, Rules, SessionInfo};
use crate::punch::{BatchIn, DeadLetter, DeadReason, Envelope, Message, PunchIn, StatusIn};
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, HashSet};
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

/// One punch with its message and device.
pub(crate) struct Item<'a> {
    pub(crate) batch: &'a BatchIn,
    pub(crate) punch: &'a PunchIn,
    pub(crate) device: &'a DeviceInfo,
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

pub(crate) fn ms(t: i64) -> DateTime<Utc> {
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
