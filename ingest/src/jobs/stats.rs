//! Attendance statistics and exam eligibility per student and course section, stored so that
//! CampsHub360's own readers agree with them.
//!
//! Counted: records of sessions that are `closed` or `locked` (finished classes). Attended is
//! `present`, plus `late` when `[attendance] late_counts_as_attended` (default true).
//!
//! **How the row is written, and why.** CampsHub360 reads a statistics row three ways: its API
//! and admin show the stored columns; `AttendanceStatistics.calculate_percentage()` recomputes
//! `present_count / (total_sessions - excused_count) * 100` (100 when nothing is countable) and
//! `is_eligible_for_exam = percentage >= THRESHOLD_PERCENT`; `get_student_attendance_summary()`
//! recomputes from the records, counting present + late. So that all three say what Rollcall
//! says, `present_count` holds the *attended* count: present + late when late counts (then
//! `late_count` is the late among them, and total = present_count + absent_count +
//! excused_count, as in the summary helper's `present`), present alone when it does not (then
//! the counts partition total, as CampsHub360's statistics task writes them). The percentage is
//! computed as Django computes and stores it (see [`django_percentage`]), and eligibility is
//! compared on the unrounded value, as `calculate_percentage()` does.
//!
//! CampsHub360's unique key includes the period dates, so its task adds a row every time the
//! range grows. Here each (student, section, academic year, semester) keeps one row: older rows
//! of the same key with other dates are replaced.

use super::JobContext;
use crate::db::DbError;
use crate::db::settings::{self, Setting};
use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::Transaction;
use uuid::Uuid;

/// The percentage CampsHub360 stores for `attended` of `countable` sessions, as text for a
/// `numeric(5,2)` column, and the float it compares with the threshold.
///
/// `calculate_percentage()` computes `(present_count / effective) * 100` in Python floats;
/// Django's `DecimalField(max_digits=5, decimal_places=2)` turns the float into a `Decimal` of
/// 5 significant digits (`Context(prec=5).create_decimal_from_float`, half-even on the float's
/// exact binary value), which PostgreSQL rounds into `numeric(5,2)`. That double rounding
/// differs from rounding the exact ratio in about 4 % of (attended, countable) pairs below 120
/// sessions (5 of 11 is 45.4545...: Django stores 45.46), so it is reproduced here, digit for
/// digit; the second rounding is left to PostgreSQL's cast, the same one Django's value meets.
pub fn django_percentage(attended: i64, countable: i64) -> (String, f64) {
    if countable <= 0 {
        return ("100".into(), 100.0);
    }
    let f = (attended as f64 / countable as f64) * 100.0;
    (significant_digits(f, 5), f)
}

/// `f`'s exact decimal value rounded half-even to `prec` significant digits (Python's
/// `decimal.Context(prec).create_decimal_from_float(f)`), for finite non-negative `f`.
fn significant_digits(f: f64, prec: usize) -> String {
    if !f.is_finite() || f <= 0.0 {
        return "0".into();
    }
    // Every f64 has a finite decimal expansion; 1100 places hold it exactly.
    let exact = format!("{f:.1100}");
    let (int_part, frac_part) = exact.split_once('.').unwrap_or((&exact, ""));
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    // An exact value shorter than `prec` digits keeps its own digits (0.25, 75), as Python's.
    while digits.len() > int_part.len() && digits.last() == Some(&0) {
        digits.pop();
    }
    let point = int_part.len() as i64; // digits before the decimal point
    let Some(first) = digits.iter().position(|&d| d != 0) else {
        return "0".into();
    };
    let end = (first + prec).min(digits.len());
    let mut kept: Vec<u8> = digits[first..end].to_vec();
    let rest = &digits[end..];
    let round_up = match rest.first() {
        Some(&d) if d > 5 => true,
        Some(&5) => rest[1..].iter().any(|&d| d != 0) || kept.last().is_some_and(|d| d % 2 == 1),
        _ => false,
    };
    // The exponent of the last kept digit, as a power of ten.
    let mut last_exp = point - 1 - (end as i64 - 1);
    if round_up {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                kept.pop();
                last_exp += 1;
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    let mut text: String = kept.iter().map(|d| char::from(b'0' + d)).collect();
    if last_exp >= 0 {
        text.extend(std::iter::repeat_n('0', last_exp as usize));
        text
    } else {
        let places = (-last_exp) as usize;
        if text.len() <= places {
            text = "0".repeat(places - text.len() + 1) + &text;
        }
        let split = text.len() - places;
        format!("{}.{}", &text[..split], &text[split..])
    }
}

/// One (student, section, academic year, semester) of finished sessions.
struct Counts {
    student: Uuid,
    section: i64,
    year: String,
    semester: String,
    total: i32,
    present: i32,
    absent: i32,
    late: i32,
    excused: i32,
    start: NaiveDate,
    end: NaiveDate,
}

/// Recomputes every row.
pub async fn statistics(
    tx: &Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, DbError> {
    let threshold =
        settings::get(tx, Setting::ThresholdPercent, ctx.default_threshold_percent).await?;
    let counts: Vec<Counts> = tx
        .query(
            "SELECT r.student_id, s.course_section_id,
                    COALESCE(ay.year, '')::text, COALESCE(b.semester, '')::text,
                    count(*)::int,
                    count(*) FILTER (WHERE r.mark = 'present')::int,
                    count(*) FILTER (WHERE r.mark = 'absent')::int,
                    count(*) FILTER (WHERE r.mark = 'late')::int,
                    count(*) FILTER (WHERE r.mark = 'excused')::int,
                    min(s.scheduled_date), max(s.scheduled_date)
             FROM attendance_record r
             JOIN attendance_session s ON s.id = r.session_id AND s.status IN ('closed', 'locked')
             LEFT JOIN academics_coursesection cs ON cs.id = s.course_section_id
             LEFT JOIN students_studentbatch b ON b.id = cs.student_batch_id
             LEFT JOIN students_academicyear ay ON ay.id = b.academic_year_id
             GROUP BY 1, 2, 3, 4
             ORDER BY 1, 2, 3, 4",
            &[],
        )
        .await?
        .iter()
        .map(|r| Counts {
            student: r.get(0),
            section: r.get(1),
            year: r.get(2),
            semester: r.get(3),
            total: r.get(4),
            present: r.get(5),
            absent: r.get(6),
            late: r.get(7),
            excused: r.get(8),
            start: r.get(9),
            end: r.get(10),
        })
        .collect();
    let late_counts = ctx.late_counts_as_attended;
    let attended = |c: &Counts| c.present + if late_counts { c.late } else { 0 };
    let (mut pcts, mut eligible) = (Vec::new(), Vec::new());
    for c in &counts {
        let (pct, exact) = django_percentage(attended(c).into(), (c.total - c.excused).into());
        pcts.push(pct);
        eligible.push(exact >= threshold);
    }
    let col = |f: fn(&Counts) -> i32| counts.iter().map(f).collect::<Vec<i32>>();
    let students: Vec<Uuid> = counts.iter().map(|c| c.student).collect();
    let sections: Vec<i64> = counts.iter().map(|c| c.section).collect();
    let years: Vec<&str> = counts.iter().map(|c| c.year.as_str()).collect();
    let semesters: Vec<&str> = counts.iter().map(|c| c.semester.as_str()).collect();
    let starts: Vec<NaiveDate> = counts.iter().map(|c| c.start).collect();
    let ends: Vec<NaiveDate> = counts.iter().map(|c| c.end).collect();
    let present_count: Vec<i32> = counts.iter().map(attended).collect();
    let replaced = tx
        .execute(
            "DELETE FROM attendance_statistics a
             USING unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::date[], $6::date[])
                   AS t(student_id, course_section_id, academic_year, semester, period_start, period_end)
             WHERE a.student_id = t.student_id AND a.course_section_id = t.course_section_id
               AND a.academic_year = t.academic_year AND a.semester = t.semester
               AND (a.period_start, a.period_end) <> (t.period_start, t.period_end)",
            &[&students, &sections, &years, &semesters, &starts, &ends],
        )
        .await?;
    let written = tx
        .execute(
            "INSERT INTO attendance_statistics AS a (created_at, updated_at, student_id, course_section_id, academic_year,
                 semester, total_sessions, present_count, absent_count, late_count, excused_count, attendance_percentage,
                 is_eligible_for_exam, period_start, period_end, last_calculated)
             SELECT $1, $1, st, cs, ay, sm, tot, pr, ab, la, ex, pct::numeric(5,2), el, ps, pe, $1
             FROM unnest($2::uuid[], $3::int8[], $4::text[], $5::text[], $6::int4[], $7::int4[], $8::int4[],
                         $9::int4[], $10::int4[], $11::text[], $12::bool[], $13::date[], $14::date[])
                  AS u(st, cs, ay, sm, tot, pr, ab, la, ex, pct, el, ps, pe)
             ON CONFLICT (student_id, course_section_id, academic_year, semester, period_start, period_end) DO UPDATE SET
                 updated_at = $1, total_sessions = EXCLUDED.total_sessions, present_count = EXCLUDED.present_count,
                 absent_count = EXCLUDED.absent_count, late_count = EXCLUDED.late_count,
                 excused_count = EXCLUDED.excused_count, attendance_percentage = EXCLUDED.attendance_percentage,
                 is_eligible_for_exam = EXCLUDED.is_eligible_for_exam, last_calculated = $1",
            &[
                &now,
                &students,
                &sections,
                &years,
                &semesters,
                &col(|c| c.total),
                &present_count,
                &col(|c| c.absent),
                &col(|c| c.late),
                &col(|c| c.excused),
                &pcts,
                &eligible,
                &starts,
                &ends,
            ],
        )
        .await?;
    let ineligible = eligible.iter().filter(|e| !**e).count();
    Ok(serde_json::json!({
        "rows": written, "ineligible": ineligible, "replaced_stale_rows": replaced,
        "threshold_percent": threshold, "late_counts_as_attended": late_counts,
        "present_count_is": if late_counts { "present + late" } else { "present" },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_the_decimals_django_makes_of_the_float() {
        // Python: decimal.Context(prec=5).create_decimal_from_float((p / e) * 100)
        for (p, e, want) in [
            (2, 3, "66.667"),   // 66.66666666666666
            (1, 3, "33.333"),   // 33.33333333333333
            (5, 11, "45.455"),  // 45.45454545454545: numeric(5,2) makes 45.46, not 45.45
            (25, 32, "78.125"), // exact: numeric(5,2) rounds it away from zero, 78.13
            (61, 64, "95.312"), // 95.3125 exactly: half-even keeps the 2
            (7, 9, "77.778"),   // 77.77777777777779
            (3, 4, "75"),
            (1, 1, "100"),
            (0, 5, "0"),
            (1, 400, "0.25"),
            (1, 300, "0.33333"), // below 1: five significant digits are five decimals
            (1, 7, "14.286"),    // 14.285714285714285
        ] {
            assert_eq!(django_percentage(p, e).0, want, "{p}/{e}");
        }
        // Nothing countable (all excused): calculate_percentage() says 100.
        assert_eq!(django_percentage(0, 0), ("100".into(), 100.0));
        // Carries through every kept digit.
        assert_eq!(significant_digits(99.999_96, 5), "100.00");
        assert_eq!(significant_digits(9.999_96, 5), "10.000");
    }

    #[test]
    fn eligibility_compares_the_unrounded_percentage() {
        // 299 of 400 is 74.75 %; the float, not a rounded text, meets the threshold.
        assert!(django_percentage(299, 400).1 < 75.0);
        assert!(django_percentage(3, 4).1 >= 75.0);
    }
}
