//! The scheduled jobs on a seeded timetable, on both schemas, the exactly-once claim, (`check` is in ingest_check.rs).

mod ingest_common;

use chrono::{DateTime, Utc};
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_ingest::jobs::{Job, JobContext, RunResult, run_slot, slot_of};

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

async fn run(db: &Db, job: Job, now: DateTime<Utc>, ctx: &JobContext) -> serde_json::Value {
    let pool = pool(&db.url, 2);
    // A fresh slot per call (tests run the same job several times).
    let slot = DateTime::from_timestamp(now.timestamp() + rand_slot(), 0).unwrap();
    match run_slot(&pool, job, slot, now, ctx).await.unwrap() {
        RunResult::Ran(v) => v,
        other => panic!("{job:?}: {other:?}"),
    }
}

fn rand_slot() -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static N: AtomicI64 = AtomicI64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
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
);

async fn sessions_are_generated_for_every_date_skipping_holidays(db: Db) {
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
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
    let mut strict = ctx(SessionClock::WallclockAsUtc);
    strict.late_counts_as_attended = false;
    run(&db, Job::Statistics, ist("12:00:00"), &strict).await;
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
    let slot = slot_of(now, 60);
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
