//! Session generation from the timetable, and auto open / close with AUTO_MARK_ABSENT.
//!
//! Generation fixes CampsHub360's generator: every date in the window (not only the first
//! matching weekday), holidays with `affects_attendance` skipped, the campus time zone used for
//! "today" and (with `session_clock = "utc"`) for the stored instants, existing sessions left
//! untouched (`ON CONFLICT (timetable_slot_id, scheduled_date) DO NOTHING`).
//!
//! Academic periods bound generation: a date gets a session only inside an active
//! `attendance_academicperiod` that covers it. A slot tied to a period generates only within
//! that period's dates (generating a week ahead from the last days of term creates nothing past
//! its end); a slot tied to no period takes the period covering each date (the current one
//! first, as CampsHub360's `get_period_by_date` picks an active period by date), and a date no
//! active period covers gets nothing. The session's `academic_period_id` is that period, so the
//! records written into it carry it too.

use super::JobContext;
use crate::config::SessionClock;
use crate::db::DbError;
use crate::db::settings::{self, Setting};
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

/// An active academic period.
#[derive(Debug, Clone, Copy)]
struct Period {
    id: Uuid,
    start: NaiveDate,
    end: NaiveDate,
}

impl Period {
    fn covers(&self, d: NaiveDate) -> bool {
        self.start <= d && d <= self.end
    }
}

/// The period a slot's session on `d` belongs to: the slot's own period if it covers `d`;
/// for a slot without one, the first of `periods` (current first) that covers `d`.
fn period_for(periods: &[Period], slot_period: Option<Uuid>, d: NaiveDate) -> Option<Uuid> {
    match slot_period {
        Some(id) => periods
            .iter()
            .find(|p| p.id == id && p.covers(d))
            .map(|p| p.id),
        None => periods.iter().find(|p| p.covers(d)).map(|p| p.id),
    }
}

/// Creates the sessions of every active slot for today .. today + days_ahead (campus dates), or
/// for `dates` when given (a manual run), within the academic periods (see the module docs).
pub async fn generate_sessions(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
    dates: Option<(NaiveDate, NaiveDate)>,
) -> Result<serde_json::Value, DbError> {
    let (today, last) = match dates {
        Some(range) => range,
        None => {
            let today = ctx.tz.from_utc_datetime(&now.naive_utc()).date_naive();
            (today, today + Duration::days(ctx.days_ahead.max(0)))
        }
    };
    let periods: Vec<Period> = tx
        .query(
            "SELECT id, period_start, period_end FROM attendance_academicperiod
             WHERE is_active AND period_start <= $2 AND period_end >= $1
             ORDER BY is_current DESC, period_start DESC, id",
            &[&today, &last],
        )
        .await?
        .iter()
        .map(|r| Period {
            id: r.get(0),
            start: r.get(1),
            end: r.get(2),
        })
        .collect();
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
        mut period_ids,
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
    let mut outside_periods = 0u64;
    let mut d = today;
    while d <= last {
        let weekday = d.weekday().num_days_from_monday() as i32;
        for s in slots.iter().filter(|s| s.get::<_, i32>(4) == weekday) {
            if holidays.contains(&d) {
                skipped_holidays += 1;
                continue;
            }
            let Some(period) = period_for(&periods, s.get(1), d) else {
                outside_periods += 1;
                continue;
            };
            let (st, et): (NaiveTime, NaiveTime) = (s.get(5), s.get(6));
            slot_ids.push(s.get::<_, i64>(0));
            period_ids.push(Some(period));
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
            &[&slot_ids, &period_ids, &sections, &faculty, &dates, &starts, &ends, &rooms, &now],
        )
        .await?;
    let (created, snapshots): (i64, i64) = (row.get(0), row.get(1));
    Ok(serde_json::json!({
        "from": today.to_string(), "to": last.to_string(), "candidates": slot_ids.len(),
        "created": created, "snapshots": snapshots, "holiday_slots_skipped": skipped_holidays,
        "outside_period_slots_skipped": outside_periods,
    }))
}

/// Opens due sessions, closes ended ones, and (AUTO_MARK_ABSENT) marks absent every ENROLLED
/// student of a closed session who has no record. Its audit rows name the system user
/// (`rollcall.system_user`) in `performed_by_id`, so Django's `full_clean()` accepts them, and
/// carry `user_agent = 'rollcall-ingest'`.
///
/// With `dates` (a manual run re-doing some days) only sessions scheduled on those dates are
/// considered, however long ago they ended (no catch-up limit), and the absentees of those
/// dates' sessions already auto-closed are marked again (enrolments may have changed).
pub async fn open_close(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
    dates: Option<(NaiveDate, NaiveDate)>,
) -> Result<serde_json::Value, DbError> {
    let (from, to) = (dates.map(|d| d.0), dates.map(|d| d.1));
    let grace = settings::get(tx, Setting::GracePeriodMinutes, ctx.default_grace_minutes).await?;
    let grace = Duration::minutes(grace);
    let ns = now_on_session_clock(ctx, now);
    let mut opened = 0u64;
    let mut closed = 0u64;
    let mut absent = 0u64;
    if settings::get(tx, Setting::AutoOpenSessions, true).await? {
        // Unlike CampsHub360's task (which only opens within grace of the start and so leaves a
        // missed session scheduled forever), any scheduled session in [start - grace, end) opens;
        // so does one that ended in the last CATCH_UP while no replica ran (ingest was down): it
        // is then closed below in the same run, with its absentees, keeping CampsHub360's
        // scheduled -> open -> closed transitions.
        opened = tx
            .execute(
                "WITH o AS (
                   UPDATE attendance_session SET status = 'open', actual_start_datetime = $1, auto_opened = true, updated_at = $1
                   WHERE status = 'scheduled' AND start_datetime <= $2
                     AND CASE WHEN $4::date IS NULL THEN end_datetime > $3
                              ELSE scheduled_date BETWEEN $4 AND $5 END
                   RETURNING id)
                 INSERT INTO attendance_audit_log (created_at, updated_at, entity_type, entity_id, action, performed_by_id,
                     before, after, reason, source, ip_address, user_agent, session_id, student_id)
                 SELECT $1, $1, 'AttendanceSession', id::text, 'auto_open', (SELECT user_id FROM rollcall.system_user), '{\"status\": \"scheduled\"}'::jsonb,
                        '{\"status\": \"open\", \"auto_opened\": true}'::jsonb, '', 'system', NULL, 'rollcall-ingest', id::text, ''
                 FROM o",
                &[&now, &(ns + grace), &(ns - CATCH_UP), &from, &to],
            )
            .await?;
    }
    if settings::get(tx, Setting::AutoCloseSessions, true).await? {
        let rows = tx
            .query(
                "UPDATE attendance_session SET status = 'closed', actual_end_datetime = $1, auto_closed = true, updated_at = $1
                 WHERE status = 'open' AND end_datetime < $2
                   AND ($3::date IS NULL OR scheduled_date BETWEEN $3 AND $4)
                 RETURNING id",
                &[&now, &(ns - grace), &from, &to],
            )
            .await?;
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        closed = ids.len() as u64;
        tx.execute(
            "INSERT INTO attendance_audit_log (created_at, updated_at, entity_type, entity_id, action, performed_by_id,
                 before, after, reason, source, ip_address, user_agent, session_id, student_id)
             SELECT $1, $1, 'AttendanceSession', id::text, 'auto_close', (SELECT user_id FROM rollcall.system_user), '{\"status\": \"open\"}'::jsonb,
                    '{\"status\": \"closed\", \"auto_closed\": true}'::jsonb, '', 'system', NULL, 'rollcall-ingest', id::text, ''
             FROM unnest($2::int8[]) AS id",
            &[&now, &ids],
        )
        .await?;
        let redo_dates = from.is_some();
        if (!ids.is_empty() || redo_dates)
            && settings::get(tx, Setting::AutoMarkAbsent, true).await?
        {
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
                        OR (s.scheduled_date BETWEEN $3 AND $4 AND s.status = 'closed' AND s.auto_closed)
                     ORDER BY s.id, e.student_id
                     ON CONFLICT (session_id, student_id) DO NOTHING",
                    &[&now, &ids, &from, &to],
                )
                .await?;
        }
    }
    Ok(serde_json::json!({"opened": opened, "closed": closed, "marked_absent": absent}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_date_belongs_to_the_period_that_covers_it_or_to_none() {
        let (spring, autumn) = (Uuid::from_u128(1), Uuid::from_u128(2));
        // Current first, as the query orders them.
        let periods = [
            Period {
                id: spring,
                start: date("2025-01-01"),
                end: date("2025-03-31"),
            },
            Period {
                id: autumn,
                start: date("2024-08-01"),
                end: date("2024-12-20"),
            },
        ];
        // A slot of the spring term: its own dates only, never past the end of term.
        assert_eq!(
            period_for(&periods, Some(spring), date("2025-03-31")),
            Some(spring)
        );
        assert_eq!(period_for(&periods, Some(spring), date("2025-04-01")), None);
        assert_eq!(period_for(&periods, Some(spring), date("2024-12-02")), None);
        // A slot without a period: whichever period covers the date; none in the break.
        assert_eq!(period_for(&periods, None, date("2024-12-02")), Some(autumn));
        assert_eq!(period_for(&periods, None, date("2025-02-03")), Some(spring));
        assert_eq!(period_for(&periods, None, date("2024-12-25")), None);
        // A slot whose period is not active (not in the list): nothing.
        assert_eq!(
            period_for(&periods, Some(Uuid::from_u128(3)), date("2025-02-03")),
            None
        );
    }
}
