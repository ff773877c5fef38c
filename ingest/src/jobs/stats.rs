//! Attendance statistics and exam eligibility per student and course section.
//!
//! Counted: records of sessions that are `closed` or `locked` (finished classes). Percentage =
//! attended / (total - excused) * 100, or 100 when nothing is countable; attended is `present`,
//! plus `late` when `[attendance] late_counts_as_attended` (default true: the model helpers of
//! CampsHub360 count present + late, its statistics task only present). Eligible when the
//! percentage reaches THRESHOLD_PERCENT (default 75).
//!
//! CampsHub360's unique key includes the period dates, so its task adds a row every time the
//! range grows. Here each (student, section, academic year, semester) keeps one row: older rows
//! of the same key with other dates are replaced.

use super::JobContext;
use crate::db::DbError;
use crate::db::settings::{self, Setting};
use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

/// Recomputes every row.
pub async fn statistics(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, DbError> {
    let threshold =
        settings::get(tx, Setting::ThresholdPercent, ctx.default_threshold_percent).await?;
    tx.execute(
        "CREATE TEMP TABLE rollcall_stats ON COMMIT DROP AS
         SELECT r.student_id, s.course_section_id,
                COALESCE(ay.year, '')::varchar(9) AS academic_year, COALESCE(b.semester, '')::varchar(20) AS semester,
                count(*)::int AS total,
                count(*) FILTER (WHERE r.mark = 'present')::int AS present,
                count(*) FILTER (WHERE r.mark = 'absent')::int AS absent,
                count(*) FILTER (WHERE r.mark = 'late')::int AS late,
                count(*) FILTER (WHERE r.mark = 'excused')::int AS excused,
                min(s.scheduled_date) AS period_start, max(s.scheduled_date) AS period_end
         FROM attendance_record r
         JOIN attendance_session s ON s.id = r.session_id AND s.status IN ('closed', 'locked')
         LEFT JOIN academics_coursesection cs ON cs.id = s.course_section_id
         LEFT JOIN students_studentbatch b ON b.id = cs.student_batch_id
         LEFT JOIN students_academicyear ay ON ay.id = b.academic_year_id
         GROUP BY 1, 2, 3, 4",
        &[],
    )
    .await?;
    let replaced = tx
        .execute(
            "DELETE FROM attendance_statistics a USING rollcall_stats t
             WHERE a.student_id = t.student_id AND a.course_section_id = t.course_section_id
               AND a.academic_year = t.academic_year AND a.semester = t.semester
               AND (a.period_start, a.period_end) <> (t.period_start, t.period_end)",
            &[],
        )
        .await?;
    let rows = tx
        .query(
            "WITH c AS (
               SELECT t.*, (t.present + CASE WHEN $2 THEN t.late ELSE 0 END) AS attended, (t.total - t.excused) AS countable
               FROM rollcall_stats t),
             p AS (
               SELECT c.*, CASE WHEN countable <= 0 THEN 100.00
                                ELSE round(attended::numeric * 100 / countable, 2) END AS pct
               FROM c)
             INSERT INTO attendance_statistics AS a (created_at, updated_at, student_id, course_section_id, academic_year,
                 semester, total_sessions, present_count, absent_count, late_count, excused_count, attendance_percentage,
                 is_eligible_for_exam, period_start, period_end, last_calculated)
             SELECT $1, $1, student_id, course_section_id, academic_year, semester, total, present, absent, late, excused,
                    pct, pct >= ($3::float8)::numeric, period_start, period_end, $1
             FROM p ORDER BY student_id, course_section_id
             ON CONFLICT (student_id, course_section_id, academic_year, semester, period_start, period_end) DO UPDATE SET
                 updated_at = $1, total_sessions = EXCLUDED.total_sessions, present_count = EXCLUDED.present_count,
                 absent_count = EXCLUDED.absent_count, late_count = EXCLUDED.late_count,
                 excused_count = EXCLUDED.excused_count, attendance_percentage = EXCLUDED.attendance_percentage,
                 is_eligible_for_exam = EXCLUDED.is_eligible_for_exam, last_calculated = $1
             RETURNING is_eligible_for_exam",
            &[&now, &ctx.late_counts_as_attended, &threshold],
        )
        .await?;
    let ineligible = rows.iter().filter(|r| !r.get::<_, bool>(0)).count();
    Ok(serde_json::json!({
        "rows": rows.len(), "ineligible": ineligible, "replaced_stale_rows": replaced,
        "threshold_percent": threshold, "late_counts_as_attended": ctx.late_counts_as_attended,
    }))
}
