//! One transaction per batch of MQTT messages. The caller acks nothing until this returns `Ok`
//! (after COMMIT), and every message it was given then has its final state: a dead letter, a
//! heartbeat applied, or a ledger row per punch (refusals included, see [`crate::admit`]).
//!
//! The phases, in order:
//! 1. look the devices up, record any change of their enablement;
//! 2. [`partition`](super::batch::partition) the messages (pure); write dead letters, the
//!    heartbeats (with their clock anchors) and the counts of devices that are not registered;
//!    take back the `held` punches of the boots those heartbeats anchor, to decide them again;
//!    then load the devices' facts (enablement history, anchors);
//! 3. drop punches the ledger already has (replays cost one indexed query);
//! 4. resolve students, sessions and enrolments in three set queries;
//!    [`decide`](crate::decide::decide) each punch (pure);
//! 5. insert the ledger rows (ON CONFLICT DO NOTHING: a replica that inserted the same key
//!    first wins, we skip); upsert the earliest punch per (session, student) into
//!    `attendance_record` with its audit row; mark the rest `duplicate`;
//! 6. advance the cursors, whose contiguous seq becomes each device's ack, and attach the
//!    refusals each ack covers (pure).

use super::DbError;
use super::attendance::{advance_cursors, insert_ledger, mark_duplicates, upsert_attendance};
pub use super::batch::{AckOut, BatchReport, RefusalOut, WriterSettings};
use super::batch::{Item, attach_refusals, items as unique_items, partition};
use super::devices;
use super::settings::{self, Setting};
use crate::admit::{Clock, DeviceFacts, admit};
use crate::decide::{self, Decision, DeviceInfo, Lookup, Outcome, Rules, SessionInfo};
use crate::punch::{BatchIn, Envelope, Message};
use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, HashSet};
use tokio_postgres::Client;
use uuid::Uuid;

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

/// Writes one batch in one transaction and returns what to ack.
pub async fn write_batch(
    client: &mut Client,
    msgs: &[Envelope],
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<BatchReport, DbError> {
    let tx = client.transaction().await?;
    let (report, lap) = write_in(&tx, msgs, s, now).await?;
    let mut lap = lap;
    tx.commit().await?;
    lap.mark("commit");
    tracing::debug!(phases = %lap, "batch timings");
    Ok(report)
}

/// The phases of [`write_batch`] inside the caller's transaction, which commits (or rolls back)
/// them together with its own rows: the ZKTeco endpoint assigns a terminal record's ledger seq
/// and writes its punch in one commit ([`crate::adms`]).
pub(crate) async fn write_in_tx(
    tx: &tokio_postgres::Transaction<'_>,
    msgs: &[Envelope],
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<BatchReport, DbError> {
    Ok(write_in(tx, msgs, s, now).await?.0)
}

async fn write_in(
    tx: &tokio_postgres::Transaction<'_>,
    msgs: &[Envelope],
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<(BatchReport, Lap), DbError> {
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
    let devices: HashMap<String, DeviceInfo> = devices::rows(tx, &ids, &s.demo_devices).await?;
    let known: Vec<&str> = devices.keys().map(String::as_str).collect();
    if !known.is_empty() {
        devices::observe_enablement(tx, Some(&known), now).await?;
    }

    let parts = partition(msgs, |d| devices.contains_key(d));
    devices::write_dead_letters(tx, &parts.dead, &s.node, now).await?;
    report.dead = parts.dead.iter().map(|d| d.reason).collect();
    devices::write_heartbeats(tx, &parts.statuses, now).await?;
    report.heartbeats = parts.statuses.len() as u64;
    devices::note_unregistered(tx, &parts.unregistered, now).await?;
    report.unregistered = parts.unregistered.len() as u64;
    // Held punches of a boot these heartbeats anchor are decided again (and usually counted).
    let released = devices::take_held(tx, &parts.statuses).await?;
    report.released = released.iter().map(|b| b.punches.len() as u64).sum();
    // After the heartbeats, so a punch can be corrected by a heartbeat of the same commit.
    let facts = if known.is_empty() {
        DeviceFacts::default()
    } else {
        devices::facts(tx, &known).await?
    };

    let to_decide: Vec<&BatchIn> = parts.batches.iter().copied().chain(&released).collect();
    let (mut items, repeated) = unique_items(&to_decide, &devices);
    report.replayed += repeated;
    if !items.is_empty() {
        lap.mark("prelude");
        let existing = existing_keys(tx, &items).await?;
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

    let mut decisions: Vec<Decision> = Vec::new();
    let mut inserted: Vec<bool> = Vec::new();
    if !items.is_empty() {
        let grace = settings::get(tx, Setting::GracePeriodMinutes, s.default_grace_minutes).await?;
        let rules = Rules {
            grace: Duration::minutes(grace),
            early: Duration::minutes(s.early_arrival_minutes),
            clock: s.clock,
            tz: s.tz,
            max_future: Duration::seconds(s.max_future_skew_s),
            now,
        };
        let lookup = lookup(tx, &items, &rules, facts).await?;
        lap.mark("lookup");
        decisions = items
            .iter()
            .map(|i| {
                decide::decide(
                    i.punch,
                    i.batch.database_refused.as_deref(),
                    i.device,
                    &lookup,
                    &rules,
                )
            })
            .collect();
        lap.mark("decide");
        inserted = insert_ledger(tx, &items, &decisions, &s.node, now).await?;
        lap.mark("ledger");
        report.replayed += (items.len() - inserted.iter().filter(|x| **x).count()) as u64;
        let duplicates = upsert_attendance(tx, &items, &decisions, &inserted).await?;
        lap.mark("upsert");
        mark_duplicates(tx, &items, &duplicates).await?;
        for (i, d) in decisions.iter().enumerate() {
            if inserted[i] {
                let o = if duplicates.contains(&i) {
                    Outcome::Duplicate
                } else {
                    d.outcome
                };
                *report.outcomes.entry(o.as_str()).or_default() += 1;
                if let Some(r) = d.reason {
                    *report.reasons.entry(r.as_str()).or_default() += 1;
                }
            }
        }
    }

    let (mut acks, pending) = advance_cursors(tx, &parts.batches, now).await?;
    attach_refusals(&mut acks, &items, &decisions, &inserted);
    report.acks = acks;
    // Only registered devices: a metric label per unregistered id would let anyone grow it.
    report.pending = pending
        .into_iter()
        .filter(|(d, _)| devices.contains_key(d))
        .collect();
    lap.mark("cursors");
    tracing::debug!(punches = items.len(), "batch written");
    Ok((report, lap))
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

/// What the database says about the batch's students, sessions and enrolments. Sessions are
/// searched around each punch's admitted instant (corrected when its clock was), so `facts`
/// come first.
async fn lookup(
    tx: &tokio_postgres::Transaction<'_>,
    items: &[Item<'_>],
    rules: &Rules,
    facts: DeviceFacts,
) -> Result<Lookup, DbError> {
    let clock = Clock {
        now: rules.now,
        max_future: rules.max_future,
    };
    let admitted: Vec<(&DeviceInfo, DateTime<Utc>)> = items
        .iter()
        .filter_map(|i| {
            admit(
                i.punch,
                i.batch.database_refused.as_deref(),
                i.device,
                &facts,
                clock,
            )
            .ok()
            .map(|a| (a.device, a.at))
        })
        .collect();
    let mut l = Lookup {
        facts,
        ..Lookup::default()
    };
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
    let mut rooms: Vec<&str> = admitted
        .iter()
        .map(|(d, _)| d.room.as_str())
        .filter(|r| !r.is_empty())
        .collect();
    rooms.sort_unstable();
    rooms.dedup();
    let times: Vec<DateTime<Utc>> = admitted.iter().map(|(_, t)| *t).collect();
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
