//! The write half of a batch: ledger rows, the attendance upserts with their audit rows, the
//! `duplicate` marks, and the per-(device, epoch) cursors. Called by [`super::writer`] inside
//! its transaction.

use super::DbError;
use super::batch::{AckOut, Item, ms};
use crate::decide::{Decision, Outcome};
use crate::punch::BatchIn;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

pub(crate) async fn insert_ledger(
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
    let captured: Vec<Option<DateTime<Utc>>> = items
        .iter()
        .map(|i| match i.batch.database_refused {
            Some(_) => None,
            None => ms(i.punch.captured_at_ms),
        })
        .collect();
    let effective: Vec<Option<DateTime<Utc>>> = ds.iter().map(|d| d.at).collect();
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
    let reasons: Vec<Option<&str>> = ds.iter().map(|d| d.reason.map(|r| r.as_str())).collect();
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
                   monotonic_ms, outcome, detail, session_id, student_id, mark, node, reason)
               SELECT d, e, s, ev, ca, ea, $22, cr, su, rd, rk, sc, fl, ns, co, bo, mo, oc, dt, se, st, mk, $23, re
               FROM unnest($1::text[], $2::int8[], $3::int8[], $4::uuid[], $5::timestamptz[], $6::timestamptz[],
                           $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], $12::int8[], $13::bool[],
                           $14::int8[], $15::uuid[], $16::int8[], $17::text[], $18::text[], $19::int8[], $20::uuid[],
                           $21::text[], $25::text[])
                    AS u(d, e, s, ev, ca, ea, cr, su, rd, rk, sc, fl, ns, co, bo, mo, oc, dt, se, st, mk, re)
               ON CONFLICT (device_id, epoch, seq) DO NOTHING
               RETURNING device_id, epoch, seq)
             SELECT u.i FROM unnest($1::text[], $2::int8[], $3::int8[], $24::int4[]) AS u(d, e, s, i)
             JOIN ins ON ins.device_id = u.d AND ins.epoch = u.e AND ins.seq = u.s",
            &[
                &devs, &epochs, &seqs, &events, &captured, &effective, &creds, &subjects, &readers, &kinds, &scores,
                &flags, &synced, &offsets, &boots, &monos, &outcomes, &details, &sessions, &students, &marks, &now,
                &node, &idx, &reasons,
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
pub(crate) async fn upsert_attendance(
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
            Some(&j) if ds[j].at <= ds[i].at => {
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
    let at: Vec<Option<DateTime<Utc>>> = chosen.iter().map(|&i| ds[i].at).collect();
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
        .map(|&i| items[i].device.map_or("", |d| d.device_type.as_str()))
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
                      CASE WHEN old.id IS NULL THEN 'create' ELSE 'update' END,
                      (SELECT user_id FROM rollcall.system_user),
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

pub(crate) async fn mark_duplicates(
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

pub(crate) type Cursors = (Vec<AckOut>, Vec<(String, u64)>);

pub(crate) async fn advance_cursors(
    tx: &tokio_postgres::Transaction<'_>,
    batches: &[&BatchIn],
    now: DateTime<Utc>,
) -> Result<Cursors, DbError> {
    let mut keys: BTreeMap<(String, i64), (String, i64, i64)> = BTreeMap::new();
    for b in batches {
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
    // Lock the cursors first, in one order, in a statement of their own. Under READ COMMITTED
    // the UPDATE below then takes its snapshot after every earlier holder of these rows has
    // committed, so it sees their ledger rows. Without this, two transactions with consecutive
    // batches of one device (replicas sharing the subscription) could each miss the other's
    // seqs, the later-committing one leaving the cursor below punches already stored; the
    // device would wait for its ack timeout and re-send (the fleet benchmark's 10 s stalls).
    tx.execute(
        "SELECT 1 FROM rollcall.device_cursor c
           JOIN unnest($1::text[], $2::int8[]) AS u(d, e) ON c.device_id = u.d AND c.epoch = u.e
          ORDER BY c.device_id, c.epoch FOR UPDATE OF c",
        &[&devs, &epochs],
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
                refusals: Vec::new(),
            });
        }
    }
    Ok((acks, pending))
}
