//! Rollcall next to CampsHub360's own Django app and Celery beat (issue 15), on the real schema
//! (`../shared/reference/campshub360-schema.sql`) unless a test says otherwise, through the real
//! binary where an administrator would use it:
//!
//! * one owner per job: a job left to CampsHub360 is never scheduled or run here, and `check`
//!   names the rows another writer wrote into a job Rollcall owns, with the beat entry to remove;
//! * one clock convention: `check` reports sessions stored in the other convention, and the
//!   README's fix clears it;
//! * statistics both agree on: CampsHub360's formulas (campshub360.md, models.py) computed here
//!   over the rows Rollcall stored;
//! * audit rows Django's `full_clean()` accepts: every one names the configured system user.
//!
//! What CampsHub360's tasks write is written here as they write it (campshub360.md section 2.1),
//! in SQL, since no Python runs in these tests.

mod ingest_common;

use chrono::{DateTime, Utc};
use ingest_common::*;
use rollcall_ingest::config::{Config, SessionClock};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn binary() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(rollcall_tests::binaries::ingest)
}

/// A configuration file's text for `db`, with `extra` tables appended.
fn config(db: &Db, extra: &str) -> String {
    format!(
        "node_name = \"coexist\"\n[database]\nurl = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n{extra}",
        db.url
    )
}

/// `rollcall-ingest <args> -c <file with config(db, extra)>`.
async fn cli(db: &Db, extra: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(&cfg, config(db, extra)).unwrap();
    tokio::process::Command::new(binary())
        .args(args)
        .arg("-c")
        .arg(&cfg)
        .env("ROLLCALL_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `jobs run <job> --at <at> [extra args]`, which must succeed.
async fn run_job(db: &Db, extra: &str, job: &str, at: DateTime<Utc>, more: &[&str]) {
    let at = at.to_rfc3339();
    let mut args = vec!["jobs", "run", job, "--at", &at, "--json"];
    args.extend_from_slice(more);
    let out = cli(db, extra, &args).await;
    assert!(out.status.success(), "{job}: {}", text(&out));
}

/// `check` over every row ever written (the seeded campus lives in January 2025).
async fn check(db: &Db, extra: &str) -> Output {
    cli(db, extra, &["check", "--since", "36500days"]).await
}

/// The campus's academic period covers January 2025 (generation needs one).
async fn term(db: &Db, c: &Campus) {
    db.client
        .execute(
            "UPDATE attendance_academicperiod SET period_start = '2024-12-01', period_end = '2025-04-30',
                    is_active = true, is_current = true WHERE id = $1",
            &[&c.period],
        )
        .await
        .unwrap();
}

/// A Monday 09:00-10:00 slot of the campus section in room R101.
async fn monday_slot(db: &Db, c: &Campus) -> i64 {
    ins(
        &db.client,
        "attendance_timetable_slot",
        &[
            ("course_section_id", &c.section.to_string()),
            ("faculty_id", &format!("'{}'", c.faculty)),
            ("day_of_week", "0"),
            ("start_time", "'09:00'"),
            ("end_time", "'10:00'"),
            ("room", "'R101'"),
            ("is_active", "true"),
            ("academic_period_id", &format!("'{}'", c.period)),
        ],
    )
    .await
    .parse()
    .unwrap()
}

const WALL: &str = "[campus]\ntimezone = \"Asia/Kolkata\"\nsession_clock = \"wallclock_as_utc\"\n";
const UTC: &str = "[campus]\ntimezone = \"Asia/Kolkata\"\nsession_clock = \"utc\"\n";

// ---------------------------------------------------------------------------------------------
// 1. One owner per job.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_left_to_campshub360_is_never_run_by_rollcall() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    let owned = "[jobs.owner]\nstatistics = \"campshub360\"\nopen_close = \"campshub360\"\n";
    // By hand: refused, naming the beat entry that owns it; a dry run still shows what we would do.
    let out = cli(&db, owned, &["jobs", "run", "statistics"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("calculate-attendance-statistics")
            && err.contains("jobs.owner.statistics = \"campshub360\""),
        "{err}"
    );
    let out = cli(&db, owned, &["jobs", "run", "statistics", "--dry-run"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&db, owned, &["jobs"]).await;
    let listing = stdout(&out);
    assert!(
        listing.contains(
            "open_close: left to CampsHub360's beat (auto-open-attendance-sessions, \
             auto-close-attendance-sessions; jobs.owner.open_close = \"campshub360\")"
        ),
        "{listing}"
    );
    assert!(listing.contains("device_health: every 1m"), "{listing}");
    // Scheduled: open_close every second is owned by the beat, device health is ours.
    let cfg = Config::from_toml(&config(
        &db,
        "[jobs]\nopen_close_every = \"1s\"\ndevice_health_every = \"1s\"\ngenerate_sessions_every = \"0s\"\n\
         statistics_every = \"1s\"\nretention_every = \"0s\"\n[jobs.owner]\nopen_close = \"campshub360\"\n\
         statistics = \"campshub360\"\n",
    ))
    .unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(rollcall_ingest::metrics::Metrics::new());
    let task = tokio::spawn({
        let (pool, stop) = (pool(&db.url, 4), stop.clone());
        async move { rollcall_ingest::jobs::run(&cfg, pool, metrics, stop).await }
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    stop.cancel();
    task.await.unwrap();
    let runs = |job: &'static str| {
        let c = &db.client;
        async move {
            c.query_one(
                "SELECT count(*) FROM rollcall.job_run WHERE job = $1",
                &[&job],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
        }
    };
    assert!(runs("device_health").await >= 2, "device health is ours");
    assert_eq!(runs("open_close").await, 0, "the beat owns open_close");
    assert_eq!(runs("statistics").await, 0, "the beat owns statistics");
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.job_stamp").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_another_writer_at_work_and_the_beat_entry_to_remove() {
    let Some(mut db) = ingest_common::db(Schema::Real).await else {
        return;
    };
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    term(&db, &c).await;
    let slot = monday_slot(&db, &c).await;
    let ours = WALL.to_string();
    // Rollcall does every job: sessions for the week, a punch, open/close, statistics.
    run_job(&db, &ours, "generate_sessions", ist("07:00:00"), &[]).await;
    write(
        &mut db.client,
        &[env(
            DEVICE,
            1,
            vec![punch(1, ist("09:02:00"), student(c.students[0]))],
        )],
        SessionClock::WallclockAsUtc,
    )
    .await;
    run_job(&db, &ours, "open_close", ist("08:58:00"), &[]).await;
    run_job(&db, &ours, "open_close", ist("10:30:00"), &[]).await;
    run_job(&db, &ours, "statistics", ist("11:00:00"), &[]).await;
    for (what, sql) in [
        (
            "sessions",
            "SELECT count(*) FROM attendance_session WHERE timetable_slot_id IS NOT NULL",
        ),
        (
            "auto_open",
            "SELECT count(*) FROM attendance_audit_log WHERE action = 'auto_open'",
        ),
        (
            "auto_close",
            "SELECT count(*) FROM attendance_audit_log WHERE action = 'auto_close'",
        ),
        ("statistics", "SELECT count(*) FROM attendance_statistics"),
    ] {
        assert!(count(&db.client, sql).await > 0, "Rollcall wrote {what}");
    }
    // Rollcall's own rows are not another writer.
    let out = check(&db, &ours).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stdout(&out).contains("conflict"), "{}", text(&out));

    // CampsHub360's beat starts next to it, each task writing as campshub360.md 2.1 says.
    // calculate_attendance_statistics: update_or_create, counting only `present`; Django's
    // auto_now stamps updated_at and last_calculated itself.
    db.client
        .batch_execute(&format!(
            "UPDATE attendance_statistics SET present_count = present_count - late_count,
                 attendance_percentage = 50.00, is_eligible_for_exam = false,
                 updated_at = clock_timestamp(), last_calculated = clock_timestamp()
             WHERE student_id = '{}'",
            c.students[0]
        ))
        .await
        .unwrap();
    // auto_open_sessions: a scheduled session opened, its audit row without performed_by.
    db.client
        .batch_execute(
            "WITH s AS (UPDATE attendance_session SET status = 'open', auto_opened = true,
                            actual_start_datetime = now(), updated_at = now()
                        WHERE id = (SELECT min(id) FROM attendance_session WHERE status = 'scheduled')
                        RETURNING id)
             INSERT INTO attendance_audit_log (created_at, updated_at, entity_type, entity_id, action, performed_by_id,
                 before, after, reason, source, ip_address, user_agent, session_id, student_id)
             SELECT clock_timestamp(), clock_timestamp(), 'AttendanceSession', id::text, 'auto_open', NULL, NULL,
                    '{\"status\": \"open\", \"auto_opened\": true}', '', 'system', NULL, '', '', '' FROM s",
        )
        .await
        .unwrap();
    // generate_sessions_for_range: the naive datetime.combine(date, slot.start_time), stored as UTC.
    ins(
        &db.client,
        "attendance_session",
        &[
            ("course_section_id", &c.section.to_string()),
            ("faculty_id", &format!("'{}'", c.faculty)),
            ("academic_period_id", &format!("'{}'", c.period)),
            ("timetable_slot_id", &slot.to_string()),
            ("scheduled_date", "'2025-02-03'"),
            ("start_datetime", "'2025-02-03T09:00:00Z'"),
            ("end_datetime", "'2025-02-03T10:00:00Z'"),
            ("room", "'R101'"),
            ("status", "'scheduled'"),
            ("created_at", "clock_timestamp()"),
        ],
    )
    .await;
    let out = check(&db, &ours).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    for want in [
        "conflict: statistics: 1 attendance_statistics rows written since",
        "were not written by Rollcall, which owns statistics (jobs.owner.statistics)",
        "entry \"calculate-attendance-statistics\" would be: remove it from CELERY_BEAT_SCHEDULE",
        "conflict: open_close: 1 auto_open audit rows (sessions opened)",
        "entry \"auto-open-attendance-sessions\" would be",
        "conflict: generate_sessions: 1 attendance_session rows generated from the timetable",
        "entry \"generate-daily-attendance-sessions\" would be",
    ] {
        assert!(s.contains(want), "{want:?} in\n{s}");
    }
    assert!(
        !s.contains("auto-close-attendance-sessions"),
        "no foreign auto_close row: {s}"
    );
    // Rows older than --since are history, not a writer at work now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = cli(&db, &ours, &["check", "--since", "1s"]).await;
    assert!(out.status.success(), "{}", text(&out));

    // The reverse: statistics left to CampsHub360 here, but this replica's run is in the history.
    let theirs = format!("{ours}[jobs.owner]\nstatistics = \"campshub360\"\n");
    let out = check(&db, &theirs).await;
    let s = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        s.contains(
            "conflict: statistics: statistics is left to CampsHub360 here (jobs.owner.statistics = \
             \"campshub360\", beat entry \"calculate-attendance-statistics\"), but Rollcall replica \
             \"coexist\" ran it at"
        ),
        "{s}"
    );
    assert!(
        !s.contains("attendance_statistics rows written since"),
        "CampsHub360 owns statistics: its rows are no conflict: {s}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. One clock convention.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_sessions_stored_in_the_other_convention() {
    let Some(db) = ingest_common::db(Schema::Real).await else {
        return;
    };
    let c = campus(&db.client, SessionClock::Utc).await;
    term(&db, &c).await;
    let slot = monday_slot(&db, &c).await;
    let days = "[jobs]\ngenerate_days_ahead = 14\n";
    run_job(
        &db,
        &format!("{UTC}{days}"),
        "generate_sessions",
        ist("07:00:00"),
        &[],
    )
    .await;
    // Mondays 6, 13 and 20 January, as true instants: 09:00 IST is 03:30Z.
    let starts: Vec<DateTime<Utc>> = db
        .client
        .query(
            "SELECT start_datetime FROM attendance_session WHERE timetable_slot_id = $1 ORDER BY 1",
            &[&slot],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(
        starts[0],
        "2025-01-06T03:30:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    let out = check(&db, UTC).await;
    assert!(
        !stdout(&out).contains("session_clock"),
        "one convention: {}",
        text(&out)
    );
    // CampsHub360's generator adds 27 January as wall clock stored as UTC.
    let theirs: i64 = ins(
        &db.client,
        "attendance_session",
        &[
            ("course_section_id", &c.section.to_string()),
            ("faculty_id", &format!("'{}'", c.faculty)),
            ("academic_period_id", &format!("'{}'", c.period)),
            ("timetable_slot_id", &slot.to_string()),
            ("scheduled_date", "'2025-01-27'"),
            ("start_datetime", "'2025-01-27T09:00:00Z'"),
            ("end_datetime", "'2025-01-27T10:00:00Z'"),
            ("room", "'R101'"),
            ("status", "'scheduled'"),
        ],
    )
    .await
    .parse()
    .unwrap();
    let out = check(&db, UTC).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let s = stdout(&out);
    let want = format!(
        "conflict: session_clock: attendance_session mixes two time conventions: 3 sessions are \
         stored as campus.session_clock = \"utc\" says, 1 (scheduled 2025-01-27 to 2025-01-27, e.g. \
         ids {theirs}) as \"wallclock_as_utc\", which Rollcall reads 5.5 hours off"
    );
    assert!(s.contains(&want), "{want}\nin\n{s}");
    assert!(
        s.contains("generate-daily-attendance-sessions"),
        "and names the generator to turn off: {s}"
    );
    // Read with the other setting, the same table is as mixed.
    let s = stdout(&check(&db, WALL).await);
    assert!(
        s.contains(
            "mixes two time conventions: 1 sessions are stored as campus.session_clock = \
             \"wallclock_as_utc\" says, 3 (scheduled 2025-01-06 to 2025-01-20"
        ),
        "{s}"
    );
    // The README's fix moves CampsHub360's rows to true instants: one convention again.
    db.client
        .execute(
            "UPDATE attendance_session SET
                 start_datetime = (start_datetime AT TIME ZONE 'UTC') AT TIME ZONE 'Asia/Kolkata',
                 end_datetime = (end_datetime AT TIME ZONE 'UTC') AT TIME ZONE 'Asia/Kolkata'
             WHERE id = $1",
            &[&theirs],
        )
        .await
        .unwrap();
    let fixed: DateTime<Utc> = db
        .client
        .query_one(
            "SELECT start_datetime FROM attendance_session WHERE id = $1",
            &[&theirs],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        fixed,
        "2025-01-27T03:30:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    let out = check(&db, UTC).await;
    assert!(!stdout(&out).contains("session_clock"), "{}", text(&out));
    // A whole table in the other convention than the file says.
    let s = stdout(&check(&db, WALL).await);
    assert!(
        s.contains(
            "conflict: session_clock: every session generated from the timetable (4, scheduled \
             2025-01-06 to 2025-01-27"
        ) && s.contains("set campus.session_clock = \"utc\""),
        "{s}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Statistics both agree on.

/// A statistics row as stored.
#[derive(Debug)]
struct Row {
    total: i32,
    present: i32,
    absent: i32,
    late: i32,
    excused: i32,
    pct: String,
    eligible: bool,
}

async fn row(db: &Db, student: Uuid) -> Row {
    let r = db
        .client
        .query_one(
            "SELECT total_sessions, present_count, absent_count, late_count, excused_count,
                    attendance_percentage::text, is_eligible_for_exam
             FROM attendance_statistics WHERE student_id = $1",
            &[&student],
        )
        .await
        .unwrap();
    Row {
        total: r.get(0),
        present: r.get(1),
        absent: r.get(2),
        late: r.get(3),
        excused: r.get(4),
        pct: r.get(5),
        eligible: r.get(6),
    }
}

/// `AttendanceStatistics.calculate_percentage()` (models.py) over a stored row: the float it
/// computes and the eligibility it sets (THRESHOLD_PERCENT 75).
fn calculate_percentage(r: &Row) -> (f64, bool) {
    let pct = if r.total == 0 {
        0.0
    } else if r.total - r.excused > 0 {
        (f64::from(r.present) / f64::from(r.total - r.excused)) * 100.0
    } else {
        100.0
    };
    (pct, pct >= 75.0)
}

/// `get_student_attendance_summary(student, section)` (models.py), from the records: total,
/// present (present + late), late, excused, and the unrounded percentage.
async fn summary(db: &Db, student: Uuid, section: i64) -> (i64, i64, i64, i64, f64) {
    let r = db
        .client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE r.mark IN ('present', 'late')),
                    count(*) FILTER (WHERE r.mark = 'late'), count(*) FILTER (WHERE r.mark = 'excused')
             FROM attendance_record r JOIN attendance_session s ON s.id = r.session_id
             WHERE r.student_id = $1 AND s.course_section_id = $2",
            &[&student, &section],
        )
        .await
        .unwrap();
    let (total, present, late, excused): (i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3));
    let pct = if total <= 0 {
        0.0
    } else {
        100.0 * (present as f64 / (total - excused).max(1) as f64)
    };
    (total, present, late, excused, pct)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campshub360s_formulas_over_rollcalls_statistics_give_rollcalls_numbers() {
    let Some(db) = ingest_common::db(Schema::Real).await else {
        return;
    };
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    // 32 finished classes of the section, 1 to 32 February.
    let mut sessions = Vec::new();
    for d in 1..=32 {
        let date = c.day + chrono::Duration::days(25 + d);
        let id: i64 = ins(
            &db.client,
            "attendance_session",
            &[
                ("course_section_id", &c.section.to_string()),
                ("scheduled_date", &format!("'{date}'")),
                ("start_datetime", &format!("'{date}T09:00:00Z'")),
                ("end_datetime", &format!("'{date}T10:00:00Z'")),
                ("room", "'R101'"),
                ("status", if d % 2 == 0 { "'closed'" } else { "'locked'" }),
            ],
        )
        .await
        .parse()
        .unwrap();
        sessions.push(id);
    }
    // S0: 4 present, 1 late, 6 absent (11 classes). S1: 20 present, 5 late, 7 absent (32).
    // S2: excused from the 3 classes it has a record in.
    let marks: [(usize, &[(&str, usize)]); 3] = [
        (0, &[("present", 4), ("late", 1), ("absent", 6)]),
        (1, &[("present", 20), ("late", 5), ("absent", 7)]),
        (2, &[("excused", 3)]),
    ];
    for (s, plan) in marks {
        let mut i = 0;
        for (mark, n) in plan {
            for _ in 0..*n {
                ins(
                    &db.client,
                    "attendance_record",
                    &[
                        ("session_id", &sessions[i].to_string()),
                        ("student_id", &format!("'{}'", c.students[s])),
                        ("mark", &format!("'{mark}'")),
                        ("vendor_data", "'{}'"),
                    ],
                )
                .await;
                i += 1;
            }
        }
    }
    run_job(&db, WALL, "statistics", ist("12:00:00"), &[]).await;
    let (s0, s1, s2) = (
        row(&db, c.students[0]).await,
        row(&db, c.students[1]).await,
        row(&db, c.students[2]).await,
    );
    // Late counts as attended: present_count is present + late, late_count the late among them.
    assert_eq!(
        (s0.total, s0.present, s0.absent, s0.late, s0.excused),
        (11, 5, 6, 1, 0)
    );
    assert_eq!(
        (s1.total, s1.present, s1.absent, s1.late, s1.excused),
        (32, 25, 7, 5, 0)
    );
    assert_eq!((s2.total, s2.present, s2.excused), (3, 0, 3));
    // What Django stores for calculate_percentage()'s float, worked out with Python 3.12:
    // Context(prec=5).create_decimal_from_float((5 / 11) * 100) = 45.455 -> numeric(5,2) 45.46
    // (rounding 45.4545... once would give 45.45); (25 / 32) * 100 = 78.125 exactly -> 78.13;
    // all excused -> 100.0.
    assert_eq!((s0.pct.as_str(), s0.eligible), ("45.46", false));
    assert_eq!((s1.pct.as_str(), s1.eligible), ("78.13", true));
    assert_eq!((s2.pct.as_str(), s2.eligible), ("100.00", true));
    for (name, r) in [("S0", &s0), ("S1", &s1), ("S2", &s2)] {
        // calculate_percentage() on the stored row sets the same eligibility, and a float whose
        // stored decimal is the row's (checked digit for digit above; within a hundredth here,
        // since Django rounds twice: 45.4545... is stored 45.46).
        let (pct, eligible) = calculate_percentage(r);
        assert_eq!(eligible, r.eligible, "{name}: {r:?}");
        let stored: f64 = r.pct.parse().unwrap();
        assert!(
            (stored - pct).abs() <= 0.01 + 1e-9,
            "{name}: {pct} vs {r:?}"
        );
        // The summary helper's counts are the row's: present = present + late, same total.
        assert_eq!(r.present + r.absent + r.excused, r.total, "{name}: {r:?}");
    }
    for (name, s, r) in [("S0", 0, &s0), ("S1", 1, &s1)] {
        let (total, present, late, excused, pct) = summary(&db, c.students[s], c.section).await;
        assert_eq!(
            (total, present, late, excused),
            (
                r.total.into(),
                r.present.into(),
                r.late.into(),
                r.excused.into()
            ),
            "{name}"
        );
        // It rounds with Python's round() (45.45, 78.12): within a hundredth of the row, and
        // the same eligibility.
        let stored: f64 = r.pct.parse().unwrap();
        assert!(
            (stored - pct).abs() <= 0.01 + 1e-9,
            "{name}: {pct} vs {r:?}"
        );
        assert_eq!(pct >= 75.0, r.eligible, "{name}");
    }
    // Where the helpers cannot agree (documented): excused from everything, the summary's
    // max(denominator, 1) gives 0 % and not eligible; the row and calculate_percentage() 100 %.
    let (.., pct) = summary(&db, c.students[2], c.section).await;
    assert_eq!(pct, 0.0);
    assert!(s2.eligible);

    // Late not counted: the counts partition total, as CampsHub360's statistics task writes
    // them, and its formula (present / (total - excused)) is calculate_percentage()'s.
    run_job(
        &db,
        WALL,
        "statistics",
        ist("12:00:00"),
        &["--late-counts-as-attended", "false"],
    )
    .await;
    let (s0, s1) = (row(&db, c.students[0]).await, row(&db, c.students[1]).await);
    assert_eq!((s0.present, s0.late, s0.absent), (4, 1, 6));
    assert_eq!((s1.present, s1.late, s1.absent), (20, 5, 7));
    // (4 / 11) * 100 = 36.36363636... -> 36.364 -> 36.36; 20 / 32 = 62.5 exactly.
    assert_eq!((s0.pct.as_str(), s0.eligible), ("36.36", false));
    assert_eq!((s1.pct.as_str(), s1.eligible), ("62.50", false));
    for r in [&s0, &s1] {
        assert_eq!(r.present + r.late + r.absent + r.excused, r.total);
        assert_eq!(calculate_percentage(r).1, r.eligible, "{r:?}");
    }
    // The summary helper always counts late as present: for S1 it says 78.125 % and eligible
    // where the row says 62.50 % and not (documented: no stored count can change a helper
    // that reads the records).
    let (.., pct) = summary(&db, c.students[1], c.section).await;
    assert_eq!(pct, 78.125);
}

// ---------------------------------------------------------------------------------------------
// 4. Audit rows valid for Django.

/// Audit rows `full_clean()` would refuse: AttendanceAuditLog's fields (models.py) with
/// blank=False must be non-empty and within max_length; performed_by (null=True, not
/// blank=True) must name an existing user.
const INVALID_AUDIT: &str = "SELECT count(*) FROM attendance_audit_log a
    WHERE a.entity_type = '' OR length(a.entity_type) > 64 OR a.entity_id = '' OR length(a.entity_id) > 64
       OR a.action = '' OR length(a.action) > 32 OR a.source = '' OR length(a.source) > 32
       OR length(a.session_id) > 64 OR length(a.student_id) > 64
       OR a.performed_by_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM accounts_user u WHERE u.id = a.performed_by_id)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_name_the_system_user_and_pass_djangos_validation() {
    let Some(mut db) = ingest_common::db(Schema::Real).await else {
        return;
    };
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let named = format!("{WALL}system_user = \"rollcall-system@campus.test\"\n");
    // Created at setup, as an account that cannot log in.
    let out = cli(&db, &named, &["migrate"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("system user for audit rows: rollcall-system@campus.test (")
            && stdout(&out).contains(", created)"),
        "{}",
        text(&out)
    );
    let r = db
        .client
        .query_one(
            "SELECT id, password, is_active, is_staff, is_superuser FROM accounts_user
             WHERE email = 'rollcall-system@campus.test'",
            &[],
        )
        .await
        .unwrap();
    let (system, password): (Uuid, String) = (r.get(0), r.get(1));
    assert!(password.starts_with('!'), "unusable: {password}");
    assert_eq!(
        (
            r.get::<_, bool>(2),
            r.get::<_, bool>(3),
            r.get::<_, bool>(4)
        ),
        (false, false, false)
    );
    // Found, not created again, the next time (by email, any case).
    let out = cli(
        &db,
        &named.replace("rollcall-system@", "Rollcall-System@"),
        &["migrate"],
    )
    .await;
    assert!(
        out.status.success() && !stdout(&out).contains("created)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM accounts_user WHERE lower(email) = 'rollcall-system@campus.test'"
        )
        .await,
        1
    );
    let out = cli(&db, &named, &["migrate"]).await;
    assert!(out.status.success(), "{}", text(&out));

    // Every kind of audit row Rollcall writes: a punch's record (create, then update), the
    // scheduler's auto_open and auto_close.
    ins(
        &db.client,
        "attendance_session",
        &[
            ("course_section_id", &c.section.to_string()),
            ("faculty_id", &format!("'{}'", c.faculty)),
            ("academic_period_id", &format!("'{}'", c.period)),
            ("scheduled_date", "'2025-01-06'"),
            ("start_datetime", "'2025-01-06T11:00:00Z'"),
            ("end_datetime", "'2025-01-06T12:00:00Z'"),
            ("room", "'R101'"),
            ("status", "'scheduled'"),
        ],
    )
    .await;
    for (seq, at) in [(1, "09:07:00"), (2, "09:01:00")] {
        write(
            &mut db.client,
            &[env(
                DEVICE,
                1,
                vec![punch(seq, ist(at), student(c.students[0]))],
            )],
            SessionClock::WallclockAsUtc,
        )
        .await;
    }
    run_job(&db, &named, "open_close", ist("10:58:00"), &[]).await;
    run_job(&db, &named, "open_close", ist("12:30:00"), &[]).await;
    let kinds: Vec<String> = db
        .client
        .query(
            "SELECT DISTINCT action::text FROM attendance_audit_log ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["auto_close", "auto_open", "create", "update"]);
    assert_eq!(count(&db.client, INVALID_AUDIT).await, 0);
    assert_eq!(
        count(
            &db.client,
            &format!(
                "SELECT count(*) FROM attendance_audit_log WHERE performed_by_id <> '{system}'"
            )
        )
        .await,
        0
    );
    let out = check(&db, &named).await;
    assert!(
        out.status.success() && !stdout(&out).contains("system_user"),
        "{}",
        text(&out)
    );

    // An id that names nobody is refused at setup, with what to do.
    let nobody = format!("{WALL}system_user = \"{}\"\n", Uuid::now_v7());
    let out = cli(&db, &nobody, &["migrate"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no accounts_user has this id"),
        "{}",
        text(&out)
    );
    // An existing user named by id is used as it is.
    let by_id = format!("{WALL}system_user = \"{system}\"\n");
    let out = cli(&db, &by_id, &["migrate"]).await;
    assert!(
        out.status.success() && !stdout(&out).contains("created)"),
        "{}",
        text(&out)
    );
    // Not set: check says what Django will make of the rows (a warning, not a failure).
    let out = cli(&db, WALL, &["migrate"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = check(&db, WALL).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains(
            "warning: system_user: campus.system_user is not set: Rollcall's audit rows carry \
             performed_by_id NULL, which Django's full_clean() refuses"
        ),
        "{}",
        text(&out)
    );
}
