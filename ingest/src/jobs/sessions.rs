//! Session generation from the timetable, and auto open / close with AUTO_MARK_ABSENT.
//!
//! Generation fixes CampsHub360's generator: every date in the window (not only the first
//! matching weekday), holidays with `affects_attendance` skipped, the campus time zone used for
//! "today" and (with `session_clock = "utc"`) for the stored instants, existing sessions left
//! untouched (`ON CONFLICT (timetable_slot_id, scheduled_date) DO NOTHING`).

use super::{JobContext, setting_bool, setting_f64};
use crate::config::SessionClock;
use crate::db::DbError;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use std::collections::HashSet;
use tokio_postgres::Transaction;
use uuid::Uuid;

/// The stored `start_datetime`/`end_datetime` for a local date and time.
pub fn stored_instant(
    clock: SessionClock,
    tz: chrono_tz::Tz,
    date: NaiveDate,
    time: NaiveTime,
) -> DateTime<Utc> {
    let local = date.and_time(time);
    match clock {
        SessionClock::WallclockAsUtc => local.and_utc(),
        SessionClock::Utc => tz
            .from_local_datetime(&local)
            .earliest()
            // A time inside a DST gap: take the instant one hour later.
            .or_else(|| {
                tz.from_local_datetime(&(local + Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| local.and_utc()),
    }
}

/// How far back a session missed entirely (no replica running) is still opened and closed.
const CATCH_UP: Duration = Duration::hours(12);

/// "Now" on the session clock.
fn now_on_session_clock(ctx: &JobContext, now: DateTime<Utc>) -> DateTime<Utc> {
    match ctx.clock {
        SessionClock::Utc => now,
        SessionClock::WallclockAsUtc => ctx
            .tz
            .from_utc_datetime(&now.naive_utc())
            .naive_local()
            .and_utc(),
    }
}

/// Creates the sessions of every active slot for today .. today + days_ahead (campus dates).
pub async fn generate_sessions(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, DbError> {
    let today = ctx.tz.from_utc_datetime(&now.naive_utc()).date_naive();
    let last = today + Duration::days(ctx.days_ahead.max(0));
    let holidays: HashSet<NaiveDate> = tx
        .query("SELECT date FROM attendance_holiday WHERE affects_attendance AND date BETWEEN $1 AND $2", &[&today, &last])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let slots = tx
        .query(
            "SELECT id, academic_period_id, course_section_id, faculty_id, day_of_week, start_time, end_time, room::text
             FROM attendance_timetable_slot WHERE is_active",
            &[],
        )
        .await?;
    let (
        mut slot_ids,
        mut periods,
        mut sections,
        mut faculty,
        mut dates,
        mut starts,
        mut ends,
        mut rooms,
    ) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut skipped_holidays = 0u64;
    let mut d = today;
    while d <= last {
        let weekday = d.weekday().num_days_from_monday() as i32;
        for s in slots.iter().filter(|s| s.get::<_, i32>(4) == weekday) {
            if holidays.contains(&d) {
                skipped_holidays += 1;
                continue;
            }
            let (st, et): (NaiveTime, NaiveTime) = (s.get(5), s.get(6));
            slot_ids.push(s.get::<_, i64>(0));
            periods.push(s.get::<_, Option<Uuid>>(1));
            sections.push(s.get::<_, i64>(2));
            faculty.push(s.get::<_, Uuid>(3));
            dates.push(d);
            starts.push(stored_instant(ctx.clock, ctx.tz, d, st));
            ends.push(stored_instant(ctx.clock, ctx.tz, d, et));
            rooms.push(s.get::<_, String>(7));
        }
        d += Duration::days(1);
    }
    // New sessions, then (as CampsHub360's generator does) a snapshot of each ENROLLED student.
    let row = tx
        .query_one(
            "WITH ins AS (
               INSERT INTO attendance_session (created_at, updated_at, academic_period_id, course_section_id, faculty_id,
                   timetable_slot_id, scheduled_date, start_datetime, end_datetime, actual_start_datetime,
                   actual_end_datetime, room, status, auto_opened, auto_closed, makeup, notes, qr_token, qr_expires_at,
                   qr_generated_at, biometric_enabled, biometric_device_id, offline_sync_token, last_sync_at)
               SELECT $9, $9, p, cs, f, sl, d, st, et, NULL, NULL, r, 'scheduled', false, false, false, '', '', NULL,
                      NULL, false, '', '', NULL
               FROM unnest($1::int8[], $2::uuid[], $3::int8[], $4::uuid[], $5::date[], $6::timestamptz[],
                           $7::timestamptz[], $8::text[]) AS u(sl, p, cs, f, d, st, et, r)
               ORDER BY sl, d
               ON CONFLICT (timetable_slot_id, scheduled_date) DO NOTHING
               RETURNING id, course_section_id
             ), snap AS (
               INSERT INTO attendance_student_snapshot (session_id, student_id, course_section_id, student_batch_id,
                   roll_number, full_name, email, phone, academic_year, semester, year_of_study, section,
                   created_at, updated_at)
               SELECT ins.id, st.id, ins.course_section_id, st.student_batch_id, st.roll_number,
                      left(concat_ws(' ', st.first_name, NULLIF(st.middle_name, ''), st.last_name), 255),
                      COALESCE(st.email, ''), left(COALESCE(st.student_mobile, ''), 15), COALESCE(ay.year, ''),
                      COALESCE(b.semester, ''), COALESCE(b.year_of_study, ''), COALESCE(b.section, ''), $9, $9
               FROM ins
               JOIN academics_courseenrollment e ON e.course_section_id = ins.course_section_id AND e.status = 'ENROLLED'
               JOIN students_student st ON st.id = e.student_id
               LEFT JOIN students_studentbatch b ON b.id = st.student_batch_id
               LEFT JOIN students_academicyear ay ON ay.id = b.academic_year_id
               ON CONFLICT (session_id, student_id) DO NOTHING
               RETURNING 1
             )
             SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM snap)",
            &[&slot_ids, &periods, &sections, &faculty, &dates, &starts, &ends, &rooms, &now],
        )
        .await?;
    let (created, snapshots): (i64, i64) = (row.get(0), row.get(1));
    Ok(serde_json::json!({
        "from": today.to_string(), "to": last.to_string(), "candidates": slot_ids.len(),
        "created": created, "snapshots": snapshots, "holiday_slots_skipped": skipped_holidays,
    }))
}

/// Opens due sessions, closes ended ones, and (AUTO_MARK_ABSENT) marks absent every ENROLLED
/// student of a closed session who has no record.
pub async fn open_close(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, DbError> {
    let grace =
        setting_f64(tx, "GRACE_PERIOD_MINUTES", ctx.default_grace_minutes as f64).await? as i64;
    let grace = Duration::minutes(grace);
    let ns = now_on_session_clock(ctx, now);
    let mut opened = 0u64;
    let mut closed = 0u64;
    let mut absent = 0u64;
    if setting_bool(tx, "AUTO_OPEN_SESSIONS", true).await? {
        // Unlike CampsHub360's task (which only opens within grace of the start and so leaves a
        // missed session scheduled forever), any scheduled session in [start - grace, end) opens;
        // so does one that ended in the last CATCH_UP while no replica ran (ingest was down): it
        // is then closed below in the same run, with its absentees, keeping CampsHub360's
        // scheduled -> open -> closed transitions.
        opened = tx
            .execute(
                "WITH o AS (
                   UPDATE attendance_session SET status = 'open', actual_start_datetime = $1, auto_opened = true, updated_at = $1
                   WHERE status = 'scheduled' AND start_datetime <= $2 AND end_datetime > $3
                   RETURNING id)
                 INSERT INTO attendance_audit_log (created_at, updated_at, entity_type, entity_id, action, performed_by_id,
                     before, after, reason, source, ip_address, user_agent, session_id, student_id)
                 SELECT $1, $1, 'AttendanceSession', id::text, 'auto_open', NULL, '{\"status\": \"scheduled\"}'::jsonb,
                        '{\"status\": \"open\", \"auto_opened\": true}'::jsonb, '', 'system', NULL, 'rollcall-ingest', id::text, ''
                 FROM o",
                &[&now, &(ns + grace), &(ns - CATCH_UP)],
            )
            .await?;
    }
    if setting_bool(tx, "AUTO_CLOSE_SESSIONS", true).await? {
        let rows = tx
            .query(
                "UPDATE attendance_session SET status = 'closed', actual_end_datetime = $1, auto_closed = true, updated_at = $1
                 WHERE status = 'open' AND end_datetime < $2
                 RETURNING id",
                &[&now, &(ns - grace)],
            )
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        closed = ids.len() as u64;
        tx.execute(
            "INSERT INTO attendance_audit_log (created_at, updated_at, entity_type, entity_id, action, performed_by_id,
                 before, after, reason, source, ip_address, user_agent, session_id, student_id)
             SELECT $1, $1, 'AttendanceSession', id::text, 'auto_close', NULL, '{\"status\": \"open\"}'::jsonb,
                    '{\"status\": \"closed\", \"auto_closed\": true}'::jsonb, '', 'system', NULL, 'rollcall-ingest', id::text, ''
             FROM unnest($2::int8[]) AS id",
            &[&now, &ids],
        )
        .await?;
        if !ids.is_empty() && setting_bool(tx, "AUTO_MARK_ABSENT", true).await? {
            absent = tx
                .execute(
                    "INSERT INTO attendance_record (created_at, updated_at, academic_period_id, session_id, student_id, mark,
                         marked_at, source, reason, notes, device_id, device_type, ip_address, user_agent, location_lat,
                         location_lng, client_uuid, sync_status, vendor_event_id, vendor_data, marked_by_id, last_modified_by_id)
                     SELECT $1, $1, s.academic_period_id, s.id, e.student_id, 'absent', $1, 'system',
                            'Auto-marked absent - no attendance recorded', '', '', '', NULL, '', NULL, NULL, '', 'synced', '',
                            '{}'::jsonb, NULL, NULL
                     FROM attendance_session s
                     JOIN academics_courseenrollment e ON e.course_section_id = s.course_section_id AND e.status = 'ENROLLED'
                     WHERE s.id = ANY($2)
                     ORDER BY s.id, e.student_id
                     ON CONFLICT (session_id, student_id) DO NOTHING",
                    &[&now, &ids],
                )
                .await?;
        }
    }
    Ok(serde_json::json!({"opened": opened, "closed": closed, "marked_absent": absent}))
}
