//! What each terminal request does in PostgreSQL, one transaction each, answered only after
//! COMMIT. Every request first locks its terminal's `rollcall.adms_terminal` row (created on
//! first contact), so one terminal's uploads are serialised and its seqs handed out densely.

use super::parse::{self, AttRecord, BadLine, Info, OperLine};
use super::rules::{self, ADMS_EPOCH, ClockState, Command, LogBaseline};
use crate::admit::Reason;
use crate::db::DbError;
use crate::db::batch::WriterSettings;
use crate::db::devices;
use crate::db::writer::write_in_tx;
use crate::decide::DeviceInfo;
use crate::punch::{BatchIn, Envelope, Message};
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use deadpool_postgres::Pool;
use std::collections::{HashMap, HashSet};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// Who called, as the request said.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// `SN=`.
    pub serial: String,
    /// Peer address.
    pub ip: Option<String>,
    /// `User-Agent`.
    pub user_agent: String,
    /// `pushver=` of the handshake.
    pub push_version: String,
}

/// The terminal's row as it was before this request.
#[derive(Debug, Clone)]
struct Terminal {
    last_seen: DateTime<Utc>,
    next_seq: i64,
    attlog_stamp: Option<String>,
    operlog_stamp: Option<String>,
    refused: Option<String>,
    clock: Option<ClockState>,
    log: Option<LogBaseline>,
}

/// The answer a request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with this body.
    Ok(String),
    /// The terminal may not upload: refused (answered 403 so it keeps its records).
    Refused(Reason),
}

async fn lock(tx: &Transaction<'_>, c: &Caller, now: DateTime<Utc>) -> Result<Terminal, DbError> {
    tx.execute(
        "INSERT INTO rollcall.adms_terminal (serial, first_seen, last_seen, last_ip, user_agent, push_version, firmware, next_seq)
         VALUES ($1, $2, $2, $3, $4, $5, '', 1) ON CONFLICT (serial) DO NOTHING",
        &[&c.serial, &now, &c.ip, &c.user_agent, &c.push_version],
    )
    .await?;
    let r = tx
        .query_one(
            "SELECT last_seen, next_seq, attlog_stamp, operlog_stamp, refused, clock_offset_s, clock_measured_at,
                    log_records, log_stored
             FROM rollcall.adms_terminal WHERE serial = $1 FOR UPDATE",
            &[&c.serial],
        )
        .await?;
    tx.execute(
        "UPDATE rollcall.adms_terminal SET last_seen = greatest(last_seen, $2), last_ip = coalesce($3, last_ip),
             user_agent = CASE WHEN $4 = '' THEN user_agent ELSE $4 END,
             push_version = CASE WHEN $5 = '' THEN push_version ELSE $5 END
         WHERE serial = $1",
        &[&c.serial, &now, &c.ip, &c.user_agent, &c.push_version],
    )
    .await?;
    let clock = match (
        r.get::<_, Option<i64>>(5),
        r.get::<_, Option<DateTime<Utc>>>(6),
    ) {
        (Some(offset_s), Some(at)) => Some(ClockState { offset_s, at }),
        _ => None,
    };
    let log = match (r.get::<_, Option<i64>>(7), r.get::<_, Option<i64>>(8)) {
        (Some(on), Some(st)) => Some(LogBaseline {
            on_terminal: on.max(0) as u64,
            stored: st.max(0) as u64,
        }),
        _ => None,
    };
    Ok(Terminal {
        last_seen: r.get(0),
        next_seq: r.get(1),
        attlog_stamp: r.get(2),
        operlog_stamp: r.get(3),
        refused: r.get(4),
        clock,
        log,
    })
}

/// The terminal's device row, or why it is refused (then recorded: a dead letter the first
/// time, a count in `rollcall.refused_device` every time).
async fn admit(
    tx: &Transaction<'_>,
    c: &Caller,
    t: &Terminal,
    what: &str,
    body: &[u8],
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<Result<DeviceInfo, Reason>, DbError> {
    let mut rows = devices::rows(tx, &[c.serial.as_str()], &s.demo_devices).await?;
    let device = rows.remove(&c.serial);
    match rules::refusal(device.as_ref()) {
        None => {
            if t.refused.is_some() {
                tx.execute(
                    "UPDATE rollcall.adms_terminal SET refused = NULL, refused_since = NULL WHERE serial = $1",
                    &[&c.serial],
                )
                .await?;
            }
            devices::observe_enablement(tx, Some(&[c.serial.as_str()]), now).await?;
            Ok(device.ok_or(Reason::UnknownDevice))
        }
        Some(reason) => {
            let newly = tx
                .execute(
                    "UPDATE rollcall.adms_terminal SET refused = $2, refused_since = $3
                     WHERE serial = $1 AND refused IS DISTINCT FROM $2",
                    &[&c.serial, &reason.as_str(), &now],
                )
                .await?;
            if newly > 0 {
                dead_letter(
                    tx,
                    &c.serial,
                    what,
                    reason.as_str(),
                    &format!(
                        "ZKTeco terminal {} refused: {} (answered 403: it keeps its records and sends them again once admitted)",
                        c.serial,
                        reason.remedy()
                    ),
                    body,
                    &s.node,
                    now,
                )
                .await?;
            }
            tx.execute(
                "INSERT INTO rollcall.refused_device (device_id, kind, reason, first_seen, last_seen, messages)
                 VALUES ($1, 'adms', $2, $3, $3, 1)
                 ON CONFLICT (device_id, kind) DO UPDATE SET last_seen = $3, reason = $2,
                     messages = rollcall.refused_device.messages + 1",
                &[&c.serial, &reason.as_str(), &now],
            )
            .await?;
            Ok(Err(reason))
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    tx: &Transaction<'_>,
    serial: &str,
    what: &str,
    reason: &str,
    detail: &str,
    body: &[u8],
    node: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let keep = &body[..body.len().min(64 * 1024)];
    let size = i32::try_from(body.len()).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO rollcall.dead_letter (received_at, topic, device_id, reason, detail, payload, payload_size, node)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[&now, &format!("adms/{serial}/{what}"), &serial, &reason, &detail, &keep, &size, &node],
    )
    .await?;
    Ok(())
}

/// `GET /iclock/cdata?options=all`: the options with the cursors kept here.
pub async fn handshake(
    pool: &Pool,
    c: &Caller,
    s: &WriterSettings,
    o: &super::Timing,
    now: DateTime<Utc>,
) -> Result<Answer, DbError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let t = lock(&tx, c, now).await?;
    let answer = match admit(&tx, c, &t, "handshake", b"", s, now).await? {
        Err(r) => Answer::Refused(r),
        Ok(_) => Answer::Ok(parse::handshake_answer(
            &c.serial,
            &parse::Options {
                attlog_stamp: t.attlog_stamp.unwrap_or_else(|| "0".into()),
                operlog_stamp: t.operlog_stamp.unwrap_or_else(|| "0".into()),
                error_delay_s: o.error_delay_s,
                delay_s: o.delay_s,
            },
        )),
    };
    tx.commit().await?;
    Ok(answer)
}

/// What an ATTLOG upload stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// Records read from the body.
    pub records: usize,
    /// Of those, natural keys not seen before.
    pub new: usize,
    /// Lines that were not records (one dead letter for all of them).
    pub bad: usize,
}

/// `POST /iclock/cdata?table=ATTLOG`: every record through the writer's rules, in one
/// transaction with its natural key and seq, the cursor and the clock measurement. A body
/// PostgreSQL refuses is stored again as `database_rejected` punches, so one bad upload never
/// holds a terminal back; a transient failure is an error (the terminal retries).
pub async fn attlog(
    pool: &Pool,
    c: &Caller,
    stamp: Option<&str>,
    body: &[u8],
    s: &WriterSettings,
    o: &super::Timing,
    now: DateTime<Utc>,
) -> Result<Result<Stored, Reason>, DbError> {
    let (records, bad) = parse::attlog(body);
    let mut refused_once: Option<String> = None;
    loop {
        let mut db = pool.get().await?;
        let tx = db.transaction().await?;
        let r = attlog_tx(
            &tx,
            c,
            stamp,
            body,
            &records,
            &bad,
            refused_once.clone(),
            s,
            o,
            now,
        )
        .await;
        match r {
            Ok(out) => {
                tx.commit().await?;
                return Ok(out);
            }
            Err(e) if !e.is_transient() && refused_once.is_none() => {
                drop(tx);
                tracing::warn!(serial = %c.serial, error = %e, "PostgreSQL refused a terminal's upload; storing it as database_rejected");
                refused_once = Some(crate::punch::escaped(&e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn attlog_tx(
    tx: &Transaction<'_>,
    c: &Caller,
    stamp: Option<&str>,
    body: &[u8],
    records: &[AttRecord],
    bad: &[BadLine],
    database_refused: Option<String>,
    s: &WriterSettings,
    o: &super::Timing,
    now: DateTime<Utc>,
) -> Result<Result<Stored, Reason>, DbError> {
    let t = lock(tx, c, now).await?;
    if let Err(r) = admit(tx, c, &t, "ATTLOG", body, s, now).await? {
        return Ok(Err(r));
    }
    if !bad.is_empty() {
        let detail: Vec<String> = bad
            .iter()
            .take(50)
            .map(|b| format!("line {}: {} ({})", b.line, b.why, b.text))
            .collect();
        dead_letter(
            tx,
            &c.serial,
            "ATTLOG",
            "undecodable",
            &detail.join("; "),
            body,
            &s.node,
            now,
        )
        .await?;
    }
    // One per natural key, first occurrence wins.
    let mut seen = HashSet::new();
    let unique: Vec<&AttRecord> = records
        .iter()
        .filter(|r| seen.insert((r.pin.as_str(), r.time)))
        .collect();
    let seqs = assign_seqs(tx, &c.serial, &t, &unique, now).await?;
    let new = seqs.iter().filter(|(_, fresh)| *fresh).count();
    let subjects = subjects(tx, &unique).await?;
    let mut punches: Vec<_> = unique
        .iter()
        .zip(&seqs)
        .map(|(r, (seq, _))| {
            let subject = subjects
                .get(&r.pin)
                .cloned()
                .unwrap_or_else(|| r.pin.clone());
            rules::punch(&c.serial, *seq as u64, r, subject, s.tz)
        })
        .collect();
    punches.sort_by_key(|p| p.seq);
    if !punches.is_empty() {
        let batch = BatchIn {
            site: "adms".into(),
            device_id: c.serial.clone(),
            epoch: ADMS_EPOCH,
            punches,
            database_refused,
        };
        let env = Envelope {
            topic: format!("adms/{}/ATTLOG", c.serial),
            payload: bytes::Bytes::new(),
            msg: Message::Punches(batch),
        };
        let report = write_in_tx(tx, std::slice::from_ref(&env), s, now).await?;
        tracing::debug!(serial = %c.serial, ?report.outcomes, replayed = report.replayed, "terminal records written");
    }
    // The clock, from the newest record of this upload.
    if let Some(newest) = unique
        .iter()
        .filter_map(|r| rules::local_instant(s.tz, r.time))
        .max()
    {
        let live = unique.len() <= 3
            && now - t.last_seen <= Duration::seconds(i64::from(o.delay_s) * 2 + 10);
        let (state, alert) = rules::clock_sample(t.clock, newest, now, live);
        if let Some(st) = state.filter(|st| Some(*st) != t.clock) {
            tx.execute(
                "UPDATE rollcall.adms_terminal SET clock_offset_s = $2, clock_measured_at = $3 WHERE serial = $1",
                &[&c.serial, &st.offset_s, &st.at],
            )
            .await?;
        }
        if let Some(a) = alert {
            tracing::warn!(serial = %c.serial, alert = %a, "terminal clock jump");
            alert_row(tx, &c.serial, "clock_jump", &a, now).await?;
        }
    }
    if let Some(stamp) = stamp {
        tx.execute(
            "UPDATE rollcall.adms_terminal SET attlog_stamp = $2 WHERE serial = $1",
            &[&c.serial, &stamp],
        )
        .await?;
    }
    Ok(Ok(Stored {
        records: records.len(),
        new,
        bad: bad.len(),
    }))
}

/// Each record's seq: the one its natural key already has, or the terminal's next. Returns
/// `(seq, new)` in the order of `records`.
async fn assign_seqs(
    tx: &Transaction<'_>,
    serial: &str,
    t: &Terminal,
    records: &[&AttRecord],
    now: DateTime<Utc>,
) -> Result<Vec<(i64, bool)>, DbError> {
    let pins: Vec<&str> = records.iter().map(|r| r.pin.as_str()).collect();
    let times: Vec<NaiveDateTime> = records.iter().map(|r| r.time).collect();
    let existing: HashMap<(String, NaiveDateTime), i64> = tx
        .query(
            "SELECT a.pin::text, a.local_time, a.seq FROM unnest($2::text[], $3::timestamp[]) AS u(p, t)
             JOIN rollcall.adms_record a ON a.serial = $1 AND a.pin = u.p AND a.local_time = u.t",
            &[&serial, &pins, &times],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let mut next = t.next_seq;
    let mut out = Vec::with_capacity(records.len());
    let mut fresh: Vec<(&AttRecord, i64)> = Vec::new();
    for r in records {
        match existing.get(&(r.pin.clone(), r.time)) {
            Some(&seq) => out.push((seq, false)),
            None => {
                out.push((next, true));
                fresh.push((r, next));
                next += 1;
            }
        }
    }
    if !fresh.is_empty() {
        let pins: Vec<&str> = fresh.iter().map(|(r, _)| r.pin.as_str()).collect();
        let times: Vec<NaiveDateTime> = fresh.iter().map(|(r, _)| r.time).collect();
        let seqs: Vec<i64> = fresh.iter().map(|(_, s)| *s).collect();
        let status: Vec<Option<i32>> = fresh.iter().map(|(r, _)| r.status).collect();
        let verify: Vec<Option<i32>> = fresh.iter().map(|(r, _)| r.verify).collect();
        let work: Vec<&str> = fresh.iter().map(|(r, _)| r.workcode.as_str()).collect();
        tx.execute(
            "INSERT INTO rollcall.adms_record (serial, pin, local_time, seq, status, verify, workcode, received_at, clock_offset_s)
             SELECT $1::varchar, p, t, s, st, v, w, $8, (SELECT clock_offset_s FROM rollcall.adms_terminal WHERE serial = $1::varchar)
             FROM unnest($2::text[], $3::timestamp[], $4::int8[], $5::int4[], $6::int4[], $7::text[]) AS u(p, t, s, st, v, w)",
            &[&serial, &pins, &times, &seqs, &status, &verify, &work, &now],
        )
        .await?;
        tx.execute(
            "UPDATE rollcall.adms_terminal SET next_seq = $2 WHERE serial = $1",
            &[&serial, &next],
        )
        .await?;
    }
    Ok(out)
}

/// PINs mapped in `rollcall.adms_pin` to their student's id; the others stay roll numbers.
async fn subjects(
    tx: &Transaction<'_>,
    records: &[&AttRecord],
) -> Result<HashMap<String, String>, DbError> {
    let pins: Vec<&str> = records.iter().map(|r| r.pin.as_str()).collect();
    Ok(tx
        .query(
            "SELECT pin::text, student_id FROM rollcall.adms_pin WHERE pin = ANY($1)",
            &[&pins],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get::<_, Uuid>(1).to_string()))
        .collect())
}

async fn alert_row(
    tx: &Transaction<'_>,
    serial: &str,
    kind: &str,
    detail: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO rollcall.adms_alert (serial, kind, detail, detected_at) VALUES ($1, $2, $3, $4)",
        &[&serial, &kind, &detail, &now],
    )
    .await?;
    Ok(())
}

/// `POST /iclock/cdata?table=OPERLOG` and other tables: users and enrolments kept (templates
/// dropped), other tables acknowledged and discarded. Returns the number of lines.
pub async fn other_upload(
    pool: &Pool,
    c: &Caller,
    table: &parse::Table,
    stamp: Option<&str>,
    body: &[u8],
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<Result<usize, Reason>, DbError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let t = lock(&tx, c, now).await?;
    let what = match table {
        parse::Table::OperLog => "OPERLOG",
        _ => "upload",
    };
    if let Err(r) = admit(&tx, c, &t, what, body, s, now).await? {
        tx.commit().await?;
        return Ok(Err(r));
    }
    let n = match table {
        parse::Table::OperLog => {
            let lines = parse::operlog(body);
            for l in lines.iter().take(10_000) {
                let (kind, pin, detail) = match l {
                    OperLine::User { pin, name, card } => (
                        "user",
                        pin.as_str(),
                        serde_json::json!({"name": name, "card": card}),
                    ),
                    OperLine::Finger { pin, fid } => {
                        ("finger", pin.as_str(), serde_json::json!({"fid": fid}))
                    }
                    OperLine::Other(text) => ("other", "", serde_json::json!({"line": text})),
                };
                tx.execute(
                    "INSERT INTO rollcall.adms_operlog (serial, received_at, kind, pin, detail) VALUES ($1, $2, $3, $4, $5)",
                    &[&c.serial, &now, &kind, &pin, &detail],
                )
                .await?;
            }
            if let Some(stamp) = stamp {
                tx.execute(
                    "UPDATE rollcall.adms_terminal SET operlog_stamp = $2 WHERE serial = $1",
                    &[&c.serial, &stamp],
                )
                .await?;
            }
            lines.len()
        }
        _ => String::from_utf8_lossy(body).lines().count(),
    };
    tx.commit().await?;
    Ok(Ok(n))
}

/// `GET /iclock/getrequest`: the heartbeat (firmware, log counters, silent-loss check) and the
/// next command, sent again if unanswered after a minute (five times at most).
pub async fn poll(
    pool: &Pool,
    c: &Caller,
    info: Option<&Info>,
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<Answer, DbError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let t = lock(&tx, c, now).await?;
    if let Err(r) = admit(&tx, c, &t, "getrequest", b"", s, now).await? {
        tx.commit().await?;
        return Ok(Answer::Refused(r));
    }
    if let Some(info) = info {
        let stored = t.next_seq - 1;
        if let (Some(prev), Some(on)) = (t.log, info.records)
            && let Some(a) = rules::silent_loss(prev, on, stored.max(0) as u64)
        {
            tracing::warn!(serial = %c.serial, alert = %a, "terminal log overflow");
            alert_row(&tx, &c.serial, "silent_loss", &a, now).await?;
        }
        let records = info.records.map(|r| r.min(i64::MAX as u64) as i64);
        tx.execute(
            "UPDATE rollcall.adms_terminal SET firmware = CASE WHEN $2 = '' THEN firmware ELSE $2 END,
                 log_records = coalesce($3, log_records), log_stored = CASE WHEN $3 IS NULL THEN log_stored ELSE $4 END,
                 log_counted_at = CASE WHEN $3 IS NULL THEN log_counted_at ELSE $5 END
             WHERE serial = $1",
            &[&c.serial, &info.firmware, &records, &stored, &now],
        )
        .await?;
        tx.execute(
            "UPDATE attendance_biometric_device SET last_seen = $2, firmware_version = left($3, 50), updated_at = $2,
                 status = CASE WHEN status = 'maintenance' THEN status ELSE 'active' END
             WHERE device_id = $1",
            &[&c.serial, &now, &info.firmware],
        )
        .await?;
    } else {
        tx.execute(
            "UPDATE attendance_biometric_device SET last_seen = $2, updated_at = $2,
                 status = CASE WHEN status = 'maintenance' THEN status ELSE 'active' END
             WHERE device_id = $1",
            &[&c.serial, &now],
        )
        .await?;
    }
    tx.execute(
        "UPDATE rollcall.adms_command SET done_at = $2, result = 'no answer after 5 sends', return_code = NULL
         WHERE serial = $1 AND done_at IS NULL AND sent_count >= 5 AND sent_at < $2::timestamptz - interval '1 minute'",
        &[&c.serial, &now],
    )
    .await?;
    let next = tx
        .query_opt(
            "UPDATE rollcall.adms_command SET sent_at = $2, sent_count = sent_count + 1
             WHERE id = (SELECT id FROM rollcall.adms_command
                         WHERE serial = $1 AND done_at IS NULL AND (sent_at IS NULL OR sent_at < $2::timestamptz - interval '1 minute')
                         ORDER BY id LIMIT 1)
             RETURNING id, command",
            &[&c.serial, &now],
        )
        .await?;
    tx.commit().await?;
    Ok(Answer::Ok(match next {
        Some(r) => format!("C:{}:{}", r.get::<_, i64>(0), r.get::<_, String>(1)),
        None => "OK".into(),
    }))
}

/// `POST /iclock/devicecmd`: each result recorded against its command (of this terminal).
pub async fn command_results(
    pool: &Pool,
    c: &Caller,
    body: &[u8],
    s: &WriterSettings,
    now: DateTime<Utc>,
) -> Result<Answer, DbError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    let t = lock(&tx, c, now).await?;
    if let Err(r) = admit(&tx, c, &t, "devicecmd", body, s, now).await? {
        tx.commit().await?;
        return Ok(Answer::Refused(r));
    }
    let text = String::from_utf8_lossy(body);
    for r in parse::command_results(body) {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("ID={}", r.id)))
            .map_or(String::new(), |l| parse::clean(l, 2000));
        tx.execute(
            "UPDATE rollcall.adms_command SET return_code = $3, result = $4, done_at = $5
             WHERE serial = $1 AND id = $2 AND done_at IS NULL",
            &[&c.serial, &r.id, &r.code, &line, &now],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Answer::Ok("OK".into()))
}

/// `GET /iclock/ping`: contact only.
pub async fn ping(pool: &Pool, c: &Caller, now: DateTime<Utc>) -> Result<(), DbError> {
    let mut db = pool.get().await?;
    let tx = db.transaction().await?;
    lock(&tx, c, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Queues a command for `serial`'s next poll; returns its id (the `C:<id>:` the terminal
/// answers with). Its result lands in `rollcall.adms_command`.
pub async fn queue_command(
    db: &impl tokio_postgres::GenericClient,
    serial: &str,
    cmd: &Command,
    by: &str,
    now: DateTime<Utc>,
) -> Result<i64, DbError> {
    let text = cmd.text().map_err(DbError::Schema)?;
    Ok(db
        .query_one(
            "INSERT INTO rollcall.adms_command (serial, command, queued_at, queued_by) VALUES ($1, $2, $3, $4) RETURNING id",
            &[&serial, &text, &now, &by],
        )
        .await?
        .get(0))
}
