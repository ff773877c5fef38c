//! The attendance jobs on a seeded timetable, on both schemas, each driven at a chosen instant
//! through the command an administrator runs (`rollcall-ingest jobs run <job> --at ...`, the real
//! binary, against a real PostgreSQL); the exactly-once claim shared by scheduled and manual runs.
//! (`check` is in ingest_check.rs.)

mod ingest_common;

use chrono::{DateTime, Utc};
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_ingest::jobs::{Job, JobContext, RunResult, run_slot, slot_of};
use std::process::Output;
use std::time::Duration;

fn ctx(clock: SessionClock) -> JobContext {
    JobContext {
        node: "test".into(),
        tz: chrono_tz::Asia::Kolkata,
        clock,
        days_ahead: 14,
        default_grace_minutes: 5,
        late_counts_as_attended: true,
        default_threshold_percent: 75.0,
        default_retention_years: 7,
        ledger_retention_days: 3650,
        device_silent_after_s: 300,
    }
}

/// The configuration file that gives the binary `ctx`.
fn config_for(db: &Db, ctx: &JobContext) -> String {
    let clock = match ctx.clock {
        SessionClock::WallclockAsUtc => "wallclock_as_utc",
        SessionClock::Utc => "utc",
    };
    format!(
        "node_name = {:?}\n[database]\nurl = {:?}\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n\
         [campus]\ntimezone = \"{}\"\nsession_clock = \"{clock}\"\n\
         [attendance]\nlate_counts_as_attended = {}\ndefault_grace_minutes = {}\n\
         default_threshold_percent = {:.2}\ndefault_retention_years = {}\n\
         [jobs]\ngenerate_days_ahead = {}\ndevice_silent_after = \"{}s\"\nledger_retention = \"{}days\"\n",
        ctx.node,
        db.url,
        ctx.tz,
        ctx.late_counts_as_attended,
        ctx.default_grace_minutes,
        ctx.default_threshold_percent,
        ctx.default_retention_years,
        ctx.days_ahead,
        ctx.device_silent_after_s,
        ctx.ledger_retention_days,
    )
}

/// The binary, built (or found up to date) once per test process: cargo may wait for the
/// shared target directory, which must not happen inside a timed step.
fn binary() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(rollcall_tests::binaries::ingest)
}

/// `rollcall-ingest jobs <args>` with `ctx` as its configuration.
async fn jobs_cli(db: &Db, ctx: &JobContext, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(&cfg, config_for(db, ctx)).unwrap();
    tokio::process::Command::new(binary())
        .arg("jobs")
        .args(args)
        .arg("--config")
        .arg(&cfg)
        .env("ROLLCALL_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `rollcall-ingest jobs run <job> --at <now> [extra] --json`: the job's detail, or a panic
/// naming the output when it did not run.
async fn run_cli(
    db: &Db,
    job: Job,
    now: DateTime<Utc>,
    ctx: &JobContext,
    extra: &[&str],
) -> serde_json::Value {
    let at = now.to_rfc3339();
    let mut args = vec!["run", job.name(), "--at", &at, "--json"];
    args.extend_from_slice(extra);
    let out = jobs_cli(db, ctx, &args).await;
    assert!(out.status.success(), "{job:?} {extra:?}: {}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(v["job"], job.name(), "{v}");
    assert_eq!(
        v["at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap()),
        Some(now),
        "{v}"
    );
    let expected = if extra.contains(&"--dry-run") {
        "dry run"
    } else {
        "ran"
    };
    assert_eq!(v["result"], expected, "{v}");
    v["detail"].clone()
}

async fn run(db: &Db, job: Job, now: DateTime<Utc>, ctx: &JobContext) -> serde_json::Value {
    run_cli(db, job, now, ctx, &[]).await
}

/// The seeded campus's academic period covers the weeks these tests use (the real schema
/// checks the sessions' period at COMMIT; generation needs one covering each date).
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

async fn exists(db: &Db, table: &str) -> bool {
    db.client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{table}")],
        )
        .await
        .unwrap()
        .get(0)
}

both_schemas!(
    sessions_are_generated_for_every_date_skipping_holidays,
    sessions_open_and_close_and_absentees_are_marked,
    statistics_count_late_as_configured_and_apply_the_threshold,
    retention_deletes_old_sessions_children_first,
    silent_devices_and_rooms_without_punches_are_flagged,
    sessions_are_generated_only_inside_academic_periods,
);

/// A weekly `attendance_timetable_slot` of the campus section in room R101.
async fn timetable_slot(
    db: &Db,
    c: &Campus,
    day_of_week: i32,
    start: &str,
    period: Option<uuid::Uuid>,
) -> i64 {
    let period = period.map_or("NULL".to_string(), |p| format!("'{p}'"));
    ins(
        &db.client,
        "attendance_timetable_slot",
        &[
            ("course_section_id", &c.section.to_string()),
            ("faculty_id", &format!("'{}'", c.faculty)),
            ("day_of_week", &day_of_week.to_string()),
            ("start_time", &format!("'{start}'")),
            ("end_time", "'17:00'"),
            ("room", "'R101'"),
            ("is_active", "true"),
            ("academic_period_id", &period),
        ],
    )
    .await
    .parse()
    .unwrap()
}

async fn academic_period(db: &Db, start: &str, end: &str, current: bool) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    ins(
        &db.client,
        "attendance_academicperiod",
        &[
            ("id", &format!("'{id}'")),
            ("period_start", &format!("'{start}'")),
            ("period_end", &format!("'{end}'")),
            ("is_active", "true"),
            ("is_current", if current { "true" } else { "false" }),
        ],
    )
    .await;
    id
}

/// `(scheduled_date, academic_period_id)` of a slot's sessions, by date.
async fn sessions_of(db: &Db, slot: i64) -> Vec<(String, Option<uuid::Uuid>)> {
    db.client
        .query(
            "SELECT scheduled_date::text, academic_period_id FROM attendance_session
             WHERE timetable_slot_id = $1 ORDER BY scheduled_date",
            &[&slot],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn sessions_are_generated_only_inside_academic_periods(db: Db) {
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    // This term ends on Friday 2025-01-10; the next starts Wednesday 2025-01-15; the last one
    // ran 2024-08-01 .. 2024-12-20.
    db.client
        .execute(
            "UPDATE attendance_academicperiod SET period_start = '2024-12-21', period_end = '2025-01-10',
                    is_active = true, is_current = true WHERE id = $1",
            &[&c.period],
        )
        .await
        .unwrap();
    let (this, next) = (
        c.period,
        academic_period(&db, "2025-01-15", "2025-05-31", false).await,
    );
    let last = academic_period(&db, "2024-08-01", "2024-12-20", false).await;
    let monday_this = timetable_slot(&db, &c, 0, "09:00", Some(this)).await;
    let wednesday_next = timetable_slot(&db, &c, 2, "09:00", Some(next)).await;
    let thursday_any = timetable_slot(&db, &c, 3, "09:00", None).await;
    let friday_last = timetable_slot(&db, &c, 4, "09:00", Some(last)).await;
    let tuesday_any = timetable_slot(&db, &c, 1, "09:00", None).await;

    // Monday 2025-01-06, two weeks ahead: 6 .. 20 January.
    let r = run(
        &db,
        Job::GenerateSessions,
        ist("08:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    let d = |s: &str| s.to_string();
    assert_eq!(
        sessions_of(&db, monday_this).await,
        [(d("2025-01-06"), Some(this))],
        "nothing past the end of its term (13 and 20 January): {r}"
    );
    assert_eq!(
        sessions_of(&db, wednesday_next).await,
        [(d("2025-01-15"), Some(next))],
        "nothing before its term starts (8 January)"
    );
    assert_eq!(
        sessions_of(&db, thursday_any).await,
        [(d("2025-01-09"), Some(this)), (d("2025-01-16"), Some(next))],
        "a slot without a period takes the period of each date"
    );
    assert_eq!(sessions_of(&db, friday_last).await, [], "its term is over");
    assert_eq!(
        sessions_of(&db, tuesday_any).await,
        [(d("2025-01-07"), Some(this))],
        "14 January falls between terms"
    );
    assert_eq!(r["created"], 5, "{r}");
    assert_eq!(r["outside_period_slots_skipped"], 6, "{r}");

    // Dates given on the command line, in the past: the last term's week gets its sessions, in
    // the last term (a slot without a period included); this term's Monday slot gets none.
    let r = run_cli(
        &db,
        Job::GenerateSessions,
        ist("08:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
        &["--from", "2024-12-16", "--to", "2024-12-20"],
    )
    .await;
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some("2024-12-16"), Some("2024-12-20")),
        "{r}"
    );
    assert_eq!(r["created"], 3, "{r}");
    assert_eq!(
        sessions_of(&db, friday_last).await,
        [(d("2024-12-20"), Some(last))]
    );
    assert_eq!(
        sessions_of(&db, tuesday_any).await[0],
        (d("2024-12-17"), Some(last))
    );
    assert_eq!(sessions_of(&db, monday_this).await.len(), 1);
}

async fn sessions_are_generated_for_every_date_skipping_holidays(db: Db) {
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    term(&db, &c).await;
    let faculty = uuid::Uuid::now_v7();
    if exists(&db, "faculty_faculty").await {
        ins(
            &db.client,
            "faculty_faculty",
            &[("id", &format!("'{faculty}'"))],
        )
        .await;
    }
    let slot = |dow: i32, start: &'static str, end: &'static str, active: bool| {
        let (db, section) = (&db, c.section);
        async move {
            ins(
                &db.client,
                "attendance_timetable_slot",
                &[
                    ("course_section_id", &section.to_string()),
                    ("faculty_id", &format!("'{faculty}'")),
                    ("day_of_week", &dow.to_string()),
                    ("start_time", &format!("'{start}'")),
                    ("end_time", &format!("'{end}'")),
                    ("room", "'R101'"),
                    ("is_active", if active { "true" } else { "false" }),
                ],
            )
            .await
        }
    };
    let monday = slot(0, "09:00", "10:00", true).await;
    slot(2, "14:00", "15:00", true).await;
    slot(1, "11:00", "12:00", false).await;
    ins(
        &db.client,
        "attendance_holiday",
        &[
            ("name", "'Founders day'"),
            ("date", "'2025-01-08'"),
            ("affects_attendance", "true"),
        ],
    )
    .await;
    ins(
        &db.client,
        "attendance_holiday",
        &[
            ("name", "'Staff day'"),
            ("date", "'2025-01-13'"),
            ("affects_attendance", "false"),
        ],
    )
    .await;
    // Monday 2025-01-06 08:00 IST; window to 2025-01-20: Mondays 6, 13, 20; Wednesdays 8 (holiday), 15.
    let now = ist("08:00:00");
    let r = run(
        &db,
        Job::GenerateSessions,
        now,
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(r["created"], 4, "{r}");
    assert_eq!(r["holiday_slots_skipped"], 1, "{r}");
    assert_eq!(
        r["snapshots"], 8,
        "two ENROLLED students in each of 4 sessions: {r}"
    );
    let snap = db
        .client
        .query_one("SELECT roll_number::text, semester::text FROM attendance_student_snapshot WHERE student_id = $1 LIMIT 1", &[&c.students[0]])
        .await
        .unwrap();
    assert_eq!(
        (snap.get::<_, String>(0), snap.get::<_, String>(1)),
        ("R000".to_string(), "5".to_string())
    );
    let start: DateTime<Utc> = db.client
        .query_one("SELECT start_datetime FROM attendance_session WHERE timetable_slot_id = $1 AND scheduled_date = '2025-01-13'", &[&monday.parse::<i64>().unwrap()])
        .await.unwrap().get(0);
    assert_eq!(
        start,
        "2025-01-13T09:00:00Z".parse::<DateTime<Utc>>().unwrap(),
        "wall clock stored as UTC"
    );
    db.client
        .execute(
            "UPDATE attendance_session SET notes = 'edited' WHERE scheduled_date = '2025-01-13'",
            &[],
        )
        .await
        .unwrap();
    let r = run(
        &db,
        Job::GenerateSessions,
        now,
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(r["created"], 0, "{r}");
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM attendance_session WHERE notes = 'edited'"
        )
        .await,
        1
    );
    // The true-UTC clock applies the campus zone.
    db.client
        .execute("DELETE FROM attendance_student_snapshot", &[])
        .await
        .unwrap();
    db.client
        .execute(
            "DELETE FROM attendance_session WHERE timetable_slot_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    run(&db, Job::GenerateSessions, now, &ctx(SessionClock::Utc)).await;
    let start: DateTime<Utc> = db.client
        .query_one("SELECT start_datetime FROM attendance_session WHERE timetable_slot_id = $1 AND scheduled_date = '2025-01-13'", &[&monday.parse::<i64>().unwrap()])
        .await.unwrap().get(0);
    assert_eq!(
        start,
        "2025-01-13T03:30:00Z".parse::<DateTime<Utc>>().unwrap()
    );
}

async fn sessions_open_and_close_and_absentees_are_marked(mut db: Db) {
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    // The seeded session (09:00-10:00, open) gets a punch from S0; S1 never punches.
    write(
        &mut db.client,
        &[env(
            DEVICE,
            1,
            vec![punch(1, ist("09:01:00"), student(c.students[0]))],
        )],
        SessionClock::WallclockAsUtc,
    )
    .await;
    let later: i64 = ins(
        &db.client,
        "attendance_session",
        &[
            ("course_section_id", &c.section.to_string()),
            ("scheduled_date", "'2025-01-06'"),
            ("start_datetime", "'2025-01-06T11:00:00Z'"),
            ("end_datetime", "'2025-01-06T12:00:00Z'"),
            ("room", "'R101'"),
            ("status", "'scheduled'"),
        ],
    )
    .await
    .parse()
    .unwrap();
    // Missed entirely while no replica ran: 06:00-07:00 today (caught up), and two days ago (not).
    let mut missed = Vec::new();
    for (date, start, end) in [
        (
            "2025-01-06",
            "'2025-01-06T06:00:00Z'",
            "'2025-01-06T07:00:00Z'",
        ),
        (
            "2025-01-04",
            "'2025-01-04T06:00:00Z'",
            "'2025-01-04T07:00:00Z'",
        ),
    ] {
        let id: i64 = ins(
            &db.client,
            "attendance_session",
            &[
                ("course_section_id", &c.section.to_string()),
                ("scheduled_date", &format!("'{date}'")),
                ("faculty_id", &format!("'{}'", c.faculty)),
                ("start_datetime", start),
                ("end_datetime", end),
                ("room", "'R101'"),
                ("status", "'scheduled'"),
            ],
        )
        .await
        .parse()
        .unwrap();
        missed.push(id);
    }
    // 10:58 IST: session 1 ended 58 min ago (past grace), session 2 starts in 2 min (within grace).
    let r = run(
        &db,
        Job::OpenClose,
        ist("10:58:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(
        (
            r["opened"].as_u64(),
            r["closed"].as_u64(),
            r["marked_absent"].as_u64()
        ),
        (Some(2), Some(2), Some(3)),
        "{r}"
    );
    let st = |id: i64| {
        let db = &db;
        async move {
            db.client.query_one("SELECT status::text, auto_opened, auto_closed FROM attendance_session WHERE id = $1", &[&id]).await.unwrap()
        }
    };
    let s1 = st(c.session).await;
    assert_eq!(
        (s1.get::<_, String>(0), s1.get::<_, bool>(2)),
        ("closed".into(), true)
    );
    let s2 = st(later).await;
    assert_eq!(
        (s2.get::<_, String>(0), s2.get::<_, bool>(1)),
        ("open".into(), true)
    );
    assert_eq!(
        record(&db.client, c.session, c.students[0])
            .await
            .unwrap()
            .0,
        "present"
    );
    let caught_up = st(missed[0]).await;
    assert_eq!(
        (
            caught_up.get::<_, String>(0),
            caught_up.get::<_, bool>(1),
            caught_up.get::<_, bool>(2)
        ),
        ("closed".into(), true, true)
    );
    assert_eq!(
        record(&db.client, missed[0], c.students[0])
            .await
            .unwrap()
            .0,
        "absent"
    );
    assert_eq!(
        st(missed[1]).await.get::<_, String>(0),
        "scheduled",
        "older than the catch-up window"
    );
    let (mark, _, source) = record(&db.client, c.session, c.students[1]).await.unwrap();
    assert_eq!((mark.as_str(), source.as_str()), ("absent", "system"));
    assert!(
        record(&db.client, c.session, c.students[2]).await.is_none(),
        "not enrolled: no absent row"
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM attendance_audit_log WHERE action IN ('auto_open', 'auto_close')"
        )
        .await,
        4
    );
    // Idempotent: nothing more to do.
    let r = run(
        &db,
        Job::OpenClose,
        ist("10:59:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(
        (r["opened"].as_u64(), r["closed"].as_u64()),
        (Some(0), Some(0))
    );
    // Re-running open/close for Saturday (ingest was down; older than the catch-up window): a
    // dry run says what it would do and changes nothing; the run does it.
    let saturday = ["--from", "2025-01-04"];
    let mut dry = saturday.to_vec();
    dry.push("--dry-run");
    let wc = ctx(SessionClock::WallclockAsUtc);
    let r = run_cli(&db, Job::OpenClose, ist("10:59:00"), &wc, &dry).await;
    assert_eq!(
        (
            r["opened"].as_u64(),
            r["closed"].as_u64(),
            r["marked_absent"].as_u64()
        ),
        (Some(1), Some(1), Some(2)),
        "{r}"
    );
    assert_eq!(
        st(missed[1]).await.get::<_, String>(0),
        "scheduled",
        "a dry run changes nothing"
    );
    let r = run_cli(&db, Job::OpenClose, ist("10:59:00"), &wc, &saturday).await;
    assert_eq!(
        (
            r["opened"].as_u64(),
            r["closed"].as_u64(),
            r["marked_absent"].as_u64()
        ),
        (Some(1), Some(1), Some(2)),
        "{r}"
    );
    assert_eq!(st(missed[1]).await.get::<_, String>(0), "closed");
    assert_eq!(
        record(&db.client, missed[1], c.students[1])
            .await
            .unwrap()
            .0,
        "absent"
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.job_run WHERE job = 'open_close' AND detail ? 'manual'"
        )
        .await,
        3,
        "every committed manual run is in the history, no dry run is"
    );
}

async fn statistics_count_late_as_configured_and_apply_the_threshold(db: Db) {
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    db.client
        .execute(
            "UPDATE attendance_session SET status = 'closed' WHERE id = $1",
            &[&c.session],
        )
        .await
        .unwrap();
    let mut sessions = vec![c.session];
    for d in 7..10 {
        let id = ins(
            &db.client,
            "attendance_session",
            &[
                ("course_section_id", &c.section.to_string()),
                ("scheduled_date", &format!("'2025-01-{d:02}'")),
                ("start_datetime", "now()"),
                ("end_datetime", "now()"),
                ("room", "'R101'"),
                ("status", "'closed'"),
            ],
        )
        .await;
        sessions.push(id.parse().unwrap());
    }
    for (i, mark) in ["present", "late", "absent", "excused"].iter().enumerate() {
        for (s, m) in [(c.students[0], *mark), (c.students[1], "present")] {
            ins(
                &db.client,
                "attendance_record",
                &[
                    ("session_id", &sessions[i].to_string()),
                    ("student_id", &format!("'{s}'")),
                    ("mark", &format!("'{m}'")),
                    ("vendor_data", "'{}'"),
                ],
            )
            .await;
        }
    }
    run(
        &db,
        Job::Statistics,
        ist("12:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(
        pct(&db.client, c.students[0]).await,
        (
            "66.67".into(),
            false,
            4,
            1,
            "2024-2025".into(),
            "5".into(),
            "2025-01-06".into()
        )
    );
    assert_eq!(pct(&db.client, c.students[1]).await.0, "100.00");
    // The other late rule for one run, from the command line (the file says late counts).
    let d = run_cli(
        &db,
        Job::Statistics,
        ist("12:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
        &["--late-counts-as-attended", "false"],
    )
    .await;
    assert_eq!(d["late_counts_as_attended"], false, "{d}");
    assert_eq!(pct(&db.client, c.students[0]).await.0, "33.33");
    ins(
        &db.client,
        "attendance_configuration",
        &[
            ("key", "'THRESHOLD_PERCENT'"),
            ("value", "'60'"),
            ("data_type", "'integer'"),
            ("is_active", "true"),
        ],
    )
    .await;
    run(
        &db,
        Job::Statistics,
        ist("12:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert!(pct(&db.client, c.students[0]).await.1, "66.67 % >= 60 %");
    // A new session widens the period: the row is replaced, not duplicated.
    db.client
        .execute(
            "UPDATE attendance_session SET scheduled_date = '2025-01-05' WHERE id = $1",
            &[&sessions[3]],
        )
        .await
        .unwrap();
    run(
        &db,
        Job::Statistics,
        ist("12:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_statistics").await,
        2
    );
}

async fn retention_deletes_old_sessions_children_first(mut db: Db) {
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    write(
        &mut db.client,
        &[env(
            DEVICE,
            1,
            vec![punch(1, ist("09:01:00"), student(c.students[0]))],
        )],
        SessionClock::WallclockAsUtc,
    )
    .await;
    let old = ins(
        &db.client,
        "attendance_session",
        &[
            ("course_section_id", &c.section.to_string()),
            ("scheduled_date", "'2010-01-04'"),
            ("start_datetime", "'2010-01-04T09:00:00Z'"),
            ("end_datetime", "'2010-01-04T10:00:00Z'"),
            ("status", "'locked'"),
        ],
    )
    .await;
    let s0 = format!("'{}'", c.students[0]);
    ins(
        &db.client,
        "attendance_record",
        &[
            ("session_id", &old),
            ("student_id", &s0),
            ("mark", "'present'"),
            ("vendor_data", "'{}'"),
        ],
    )
    .await;
    ins(
        &db.client,
        "attendance_student_snapshot",
        &[
            ("session_id", &old),
            ("student_id", &s0),
            ("course_section_id", &c.section.to_string()),
        ],
    )
    .await;
    ins(
        &db.client,
        "attendance_correction_request",
        &[("session_id", &old), ("student_id", &s0)],
    )
    .await;
    ins(
        &db.client,
        "attendance_audit_log",
        &[("created_at", "'2010-01-04T10:00:00Z'")],
    )
    .await;
    let r = run(
        &db,
        Job::Retention,
        ist("12:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(
        (
            r["sessions"].as_u64(),
            r["records"].as_u64(),
            r["snapshots"].as_u64(),
            r["corrections"].as_u64(),
            r["audit"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_session").await,
        1
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_record").await,
        1
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.ledger").await,
        1
    );
}

async fn silent_devices_and_rooms_without_punches_are_flagged(db: Db) {
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    db.client
        .execute(
            "UPDATE attendance_biometric_device SET last_seen = $1",
            &[&ist("11:59:00")],
        )
        .await
        .unwrap();
    db.client.execute("UPDATE attendance_biometric_device SET last_seen = $1 WHERE device_id = 'dev-nosession'", &[&ist("10:00:00")]).await.unwrap();
    db.client
        .execute(
            "UPDATE attendance_session SET actual_start_datetime = $2 WHERE id = $1",
            &[&c.session, &ist("11:30:00")],
        )
        .await
        .unwrap();
    let r = run(
        &db,
        Job::DeviceHealth,
        ist("12:00:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(
        r["newly_silent"],
        serde_json::json!(["dev-nosession"]),
        "{r}"
    );
    assert_eq!(
        r["rooms_without_punches"],
        serde_json::json!(["R101"]),
        "{r}"
    );
    let st: String = db.client.query_one("SELECT status::text FROM attendance_biometric_device WHERE device_id = 'dev-nosession'", &[]).await.unwrap().get(0);
    assert_eq!(st, "error");
    // The first run records every device's enablement as it was; the next one records only
    // what changed since, at the run's time.
    let devices = count(
        &db.client,
        "SELECT count(*) FROM attendance_biometric_device",
    )
    .await;
    assert_eq!(r["enablement_changes"], serde_json::json!(devices), "{r}");
    db.client
        .execute(
            "UPDATE attendance_biometric_device SET is_enabled = NOT is_enabled WHERE device_id = 'dev-nosession'",
            &[],
        )
        .await
        .unwrap();
    let r = run(
        &db,
        Job::DeviceHealth,
        ist("12:05:00"),
        &ctx(SessionClock::WallclockAsUtc),
    )
    .await;
    assert_eq!(r["enablement_changes"], serde_json::json!(1), "{r}");
    let changed_at: chrono::DateTime<chrono::Utc> = db
        .client
        .query_one(
            "SELECT max(since) FROM rollcall.device_enablement WHERE device_id = 'dev-nosession'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(changed_at, ist("12:05:00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_job_occurrence_runs_on_exactly_one_replica() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    let now = ist("10:58:00");
    let slot = slot_of(now, Duration::from_secs(60));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let url = db.url.clone();
        tasks.push(tokio::spawn(async move {
            let pool = pool(&url, 2);
            let mut c = ctx(SessionClock::WallclockAsUtc);
            c.node = format!("replica-{i}");
            run_slot(&pool, Job::OpenClose, slot, now, &c)
                .await
                .unwrap()
        }));
    }
    let mut ran = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), RunResult::Ran(_)) {
            ran += 1;
        }
    }
    assert_eq!(ran, 1);
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.job_run WHERE job = 'open_close'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM attendance_audit_log WHERE action = 'auto_close'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_lists_every_job_with_its_runs_and_a_dry_run_changes_nothing() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    term(&db, &c).await;
    let monday = timetable_slot(&db, &c, 0, "09:00", None).await;
    let wc = ctx(SessionClock::WallclockAsUtc);
    let r = run_cli(
        &db,
        Job::GenerateSessions,
        ist("08:00:00"),
        &wc,
        &["--dry-run"],
    )
    .await;
    assert_eq!(r["created"], 3, "Mondays 6, 13 and 20 January: {r}");
    assert_eq!(
        sessions_of(&db, monday).await.len(),
        0,
        "a dry run changes nothing"
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.job_run").await,
        0
    );
    let r = run(&db, Job::GenerateSessions, ist("08:00:00"), &wc).await;
    assert_eq!(r["created"], 3, "{r}");
    assert_eq!(sessions_of(&db, monday).await.len(), 3);
    // A scheduled run by a replica, for the history.
    let slot = slot_of(ist("12:00:00"), Duration::from_secs(60));
    let mut replica = wc.clone();
    replica.node = "replica-a".into();
    let ran = run_slot(
        &pool(&db.url, 2),
        Job::DeviceHealth,
        slot,
        ist("12:00:00"),
        &replica,
    )
    .await
    .unwrap();
    assert!(matches!(ran, RunResult::Ran(_)), "{ran:?}");

    let out = jobs_cli(&db, &wc, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = list.lines().collect();
    let after = |header: &str| {
        let i = lines
            .iter()
            .position(|l| l.starts_with(header))
            .unwrap_or_else(|| panic!("no {header:?} in:\n{list}"));
        lines[i + 1].to_string()
    };
    assert!(list.contains("generate_sessions: every 1h"), "{list}");
    let g = after("generate_sessions:");
    assert!(
        g.contains(" ok ") && g.contains("manual on test") && g.contains("\"created\":3"),
        "{list}"
    );
    let h = after("device_health: every 1m");
    assert!(
        h.contains("slot 2025-01-06T06:30:00Z on replica-a"),
        "{list}"
    );
    assert_eq!(after("open_close: every 1m").trim(), "never ran", "{list}");

    let out = jobs_cli(&db, &wc, &["list", "--json", "--last", "1"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let g = v
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "generate_sessions")
        .unwrap();
    assert_eq!(g["runs"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        (&g["runs"][0]["manual"], &g["runs"][0]["detail"]["created"]),
        (&serde_json::json!(true), &serde_json::json!(3)),
        "{v}"
    );

    // Mistakes are refused with what to do.
    let out = jobs_cli(&db, &wc, &["run", "statistics", "--from", "2025-01-06"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not --from/--to"), "{}", text(&out));
    let out = jobs_cli(&db, &wc, &["run", "generate_session"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("one of generate_sessions, open_close"),
        "{}",
        text(&out)
    );
    let out = jobs_cli(&db, &wc, &["run", "open_close", "--at", "tomorrow"]).await;
    assert!(text(&out).contains("2025-01-06 10:58"), "{}", text(&out));
    let help = jobs_cli(&db, &wc, &["--help"]).await;
    assert!(
        text(&help).contains("Examples:") && text(&help).contains("--dry-run"),
        "{}",
        text(&help)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_run_and_a_replica_never_work_on_a_job_at_once() {
    binary();
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    let wc = ctx(SessionClock::WallclockAsUtc);
    let now = ist("10:58:00");
    let at = now.to_rfc3339();
    let closes = || {
        count(
            &db.client,
            "SELECT count(*) FROM attendance_audit_log WHERE action = 'auto_close'",
        )
    };

    // A replica is in the middle of open_close: it holds the job's lock.
    let mut replica = connect(&db.url).await;
    let busy = replica.transaction().await.unwrap();
    busy.execute(
        "SELECT pg_advisory_xact_lock(1919249516, hashtext('open_close'))",
        &[],
    )
    .await
    .unwrap();
    let out = jobs_cli(
        &db,
        &wc,
        &["run", "open_close", "--at", &at, "--wait", "1s"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("open_close is being run by a replica or another manual run")
            && text(&out).contains("give a longer --wait"),
        "{}",
        text(&out)
    );
    assert_eq!(closes().await, 0);
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.job_run").await,
        0
    );
    // A scheduled occurrence meanwhile is put off, not given up.
    let slot = slot_of(now, Duration::from_secs(60));
    let pool = pool(&db.url, 2);
    assert_eq!(
        run_slot(&pool, Job::OpenClose, slot, now, &wc)
            .await
            .unwrap(),
        RunResult::Busy
    );

    // A manual run waits for the replica, then does the work once.
    let manual = {
        let cfg = config_for(&db, &wc);
        let at = at.clone();
        tokio::spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ingest.toml");
            std::fs::write(&path, cfg).unwrap();
            tokio::process::Command::new(binary())
                .args(["jobs", "run", "open_close", "--json", "--at", &at, "-c"])
                .arg(&path)
                .env("ROLLCALL_LOG", "warn")
                .output()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!manual.is_finished(), "the manual run waits for the lock");
    busy.rollback().await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), manual)
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(closes().await, 1);
    // The replica's occurrence then runs and finds nothing left to do.
    match run_slot(&pool, Job::OpenClose, slot, now, &wc)
        .await
        .unwrap()
    {
        RunResult::Ran(d) => assert_eq!(
            (d["opened"].as_u64(), d["closed"].as_u64()),
            (Some(0), Some(0)),
            "{d}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(closes().await, 1);
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.job_run WHERE job = 'open_close'"
        )
        .await,
        2
    );
}

type Stat = (String, bool, i32, i32, String, String, String);

async fn pct(db: &tokio_postgres::Client, s: uuid::Uuid) -> Stat {
    let r = db
        .query_one(
            "SELECT attendance_percentage::text, is_eligible_for_exam, total_sessions, late_count, academic_year::text,
                    semester::text, period_start::text FROM attendance_statistics WHERE student_id = $1",
            &[&s],
        )
        .await
        .unwrap();
    (
        r.get(0),
        r.get(1),
        r.get(2),
        r.get(3),
        r.get(4),
        r.get(5),
        r.get(6),
    )
}
