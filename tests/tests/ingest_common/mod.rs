//! Shared by the ingest test files: a database in either schema mode, a seeded campus, and
//! punch builders. Seeding fills every NOT NULL column it is not given with a placeholder read
//! from information_schema, so the same seed works on the standalone subset and on the real
//! CampsHub360 schema (whose student and faculty tables have dozens of NOT NULL columns);
//! foreign keys are not checked while seeding (`session_replication_role = replica`).
#![allow(dead_code)]

use chrono::{DateTime, NaiveDate, Utc};
use rollcall_ingest::config::{SchemaMode, SessionClock};
use rollcall_ingest::db::writer::{BatchReport, WriterSettings, write_batch};
use rollcall_ingest::punch::Envelope;
use rollcall_protocol::v1;
use rollcall_tests::postgres::Postgres;
use std::path::PathBuf;
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// Which CampsHub360 tables a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Created by ingest (standalone mode).
    Standalone,
    /// Loaded from ../shared/reference/campshub360-schema.sql.
    Real,
}

pub fn real_schema_file() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/campshub360-schema.sql");
    p.exists().then_some(p)
}

/// Skips `what` for want of the real schema file (a failure under CI).
pub fn skip_real_schema(what: &str) {
    let expected = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/campshub360-schema.sql");
    rollcall_tests::skip(
        what,
        &format!("{} is missing", expected.display()),
        "Put CampsHub360's schema there (pg_dump --schema-only of a CampsHub360 database, \
         as shipped in the shared reference folder next to the workspace)",
    );
}

pub struct Db {
    pub pg: Postgres,
    pub url: String,
    pub client: Client,
}

pub async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

/// A server with one database in `schema` mode, migrated. `None` when the real schema file is
/// absent: the test is skipped, which fails it under CI ([`skip_real_schema`]).
pub async fn db(schema: Schema) -> Option<Db> {
    let real = match schema {
        Schema::Standalone => None,
        Schema::Real => {
            let Some(f) = real_schema_file() else {
                skip_real_schema("this test on the real CampsHub360 schema");
                return None;
            };
            Some(f)
        }
    };
    let pg = Postgres::start().expect("start postgres");
    let url = pg.create_database("campus").expect("create db");
    let mode = match real {
        None => SchemaMode::Standalone,
        Some(f) => {
            pg.psql_file("campus", &f).expect("load real schema");
            SchemaMode::Existing
        }
    };
    let mut client = connect(&url).await;
    rollcall_ingest::db::schema::migrate(&mut client, mode)
        .await
        .expect("migrate");
    Some(Db { pg, url, client })
}

/// Inserts a row, filling NOT NULL columns it is not given; returns `id::text`.
pub async fn ins(c: &Client, table: &str, given: &[(&str, &str)]) -> String {
    let cols = c
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND is_nullable = 'NO' AND column_default IS NULL
               AND is_identity = 'NO'",
            &[&table],
        )
        .await
        .unwrap();
    let mut names: Vec<String> = given.iter().map(|g| g.0.to_string()).collect();
    let mut values: Vec<String> = given.iter().map(|g| g.1.to_string()).collect();
    for r in cols {
        let (name, ty, len): (String, String, Option<i32>) = (r.get(0), r.get(1), r.get(2));
        if names.contains(&name) {
            continue;
        }
        let v = match ty.as_str() {
            "character varying" | "character" => {
                format!("left(md5(random()::text), {})", len.unwrap_or(32).min(32))
            }
            "text" => "''".into(),
            "uuid" => "gen_random_uuid()".into(),
            "boolean" => "false".into(),
            "date" => "current_date".into(),
            "timestamp with time zone" => "now()".into(),
            "time without time zone" => "'00:00'".into(),
            "jsonb" | "json" => "'{}'".into(),
            "inet" => "'127.0.0.1'".into(),
            "ARRAY" => "'{}'".into(),
            "integer" | "bigint" => "floor(random() * 1e9)::int".into(), // unique-ish, >= 0
            _ => "0".into(),                                             // smallint, numeric
        };
        names.push(name);
        values.push(v);
    }
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({}) RETURNING id::text",
        names.join(", "),
        values.join(", ")
    );
    c.batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let id: String = c
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0);
    c.batch_execute("SET session_replication_role = DEFAULT")
        .await
        .unwrap();
    id
}

/// What [`campus`] seeded: ids of the students, section, sessions and device to use in
/// assertions.
pub struct Campus {
    pub students: Vec<Uuid>, // S0, S1 enrolled in section A; S2 not enrolled anywhere
    pub section: i64,
    pub other_section: i64,
    pub session: i64, // today 09:00-10:00 campus wall-clock in room R101, open
    pub period: Uuid,
    /// A `faculty_faculty` row (real schema) for sessions that ingest updates twice in one
    /// transaction (PostgreSQL then re-checks their foreign keys).
    pub faculty: Uuid,
    pub day: NaiveDate,
}

pub const DEVICE: &str = "dev-101";
pub const DISABLED: &str = "dev-off";
pub const SITE: &str = "north";

/// 2025-01-06 (a Monday), campus Asia/Kolkata; session 09:00-10:00 stored CampsHub360-style
/// (wall clock as UTC) unless `clock` is Utc.
pub async fn campus(c: &Client, clock: SessionClock) -> Campus {
    let ay = ins(c, "students_academicyear", &[("year", "'2024-2025'")]).await;
    let batch = ins(
        c,
        "students_studentbatch",
        &[("academic_year_id", &ay), ("semester", "'5'")],
    )
    .await;
    let section: i64 = ins(
        c,
        "academics_coursesection",
        &[("student_batch_id", &batch)],
    )
    .await
    .parse()
    .unwrap();
    let other_section: i64 = ins(
        c,
        "academics_coursesection",
        &[("student_batch_id", &batch)],
    )
    .await
    .parse()
    .unwrap();
    let mut students = Vec::new();
    for i in 0..3 {
        let id = Uuid::now_v7();
        ins(
            c,
            "students_student",
            &[
                ("id", &format!("'{id}'")),
                ("roll_number", &format!("'R{i:03}'")),
                ("student_batch_id", &batch),
                ("status", "'ACTIVE'"),
            ],
        )
        .await;
        students.push(id);
    }
    for s in &students[..2] {
        ins(
            c,
            "academics_courseenrollment",
            &[
                ("student_id", &format!("'{s}'")),
                ("course_section_id", &section.to_string()),
                ("status", "'ENROLLED'"),
            ],
        )
        .await;
    }
    for (dev, room, enabled) in [
        (DEVICE, "R101", "true"),
        (DISABLED, "R102", "false"),
        ("dev-nosession", "R999", "true"),
    ] {
        ins(
            c,
            "attendance_biometric_device",
            &[
                ("device_id", &format!("'{dev}'")),
                ("room", &format!("'{room}'")),
                ("is_enabled", enabled),
                ("status", "'active'"),
                ("device_type", "'fingerprint'"),
            ],
        )
        .await;
    }
    let period = Uuid::now_v7();
    // The real schema checks record -> academic period at COMMIT; the subset has no such table.
    let has_periods: bool = c
        .query_one(
            "SELECT to_regclass('public.attendance_academicperiod') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if has_periods {
        ins(
            c,
            "attendance_academicperiod",
            &[("id", &format!("'{period}'"))],
        )
        .await;
    }
    let faculty = Uuid::now_v7();
    let has_faculty: bool = c
        .query_one(
            "SELECT to_regclass('public.faculty_faculty') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    if has_faculty {
        ins(c, "faculty_faculty", &[("id", &format!("'{faculty}'"))]).await;
    }
    let (start, end) = match clock {
        SessionClock::WallclockAsUtc => ("'2025-01-06T09:00:00Z'", "'2025-01-06T10:00:00Z'"),
        SessionClock::Utc => ("'2025-01-06T03:30:00Z'", "'2025-01-06T04:30:00Z'"),
    };
    let session = ins(
        c,
        "attendance_session",
        &[
            ("course_section_id", &section.to_string()),
            ("academic_period_id", &format!("'{period}'")),
            ("faculty_id", &format!("'{faculty}'")),
            ("scheduled_date", "'2025-01-06'"),
            ("start_datetime", start),
            ("end_datetime", end),
            ("room", "'R101'"),
            ("status", "'open'"),
        ],
    )
    .await
    .parse()
    .unwrap();
    Campus {
        students,
        section,
        other_section,
        session,
        period,
        faculty,
        day: NaiveDate::from_ymd_opt(2025, 1, 6).unwrap(),
    }
}

/// The second room of the credentials tests: the academic period covers today, the other
/// section meets in R201 by a timetable slot, S0 and S2 are enrolled in it, and device
/// [`D201`] (enabled) is in R201. With [`campus`], S0 and S1 have class in R101 ([`DEVICE`]).
pub async fn two_rooms(c: &Client, campus: &Campus) {
    c.execute(
        "UPDATE attendance_academicperiod SET is_active = true, period_start = current_date - 30,
             period_end = current_date + 30 WHERE id = $1",
        &[&campus.period],
    )
    .await
    .unwrap();
    ins(
        c,
        "attendance_timetable_slot",
        &[
            ("academic_period_id", &format!("'{}'", campus.period)),
            ("course_section_id", &campus.other_section.to_string()),
            ("faculty_id", &format!("'{}'", campus.faculty)),
            ("day_of_week", "1"),
            ("start_time", "'11:00'"),
            ("end_time", "'12:00'"),
            ("room", "'R201'"),
            ("is_active", "true"),
        ],
    )
    .await;
    for s in [campus.students[0], campus.students[2]] {
        ins(
            c,
            "academics_courseenrollment",
            &[
                ("student_id", &format!("'{s}'")),
                ("course_section_id", &campus.other_section.to_string()),
                ("status", "'ENROLLED'"),
            ],
        )
        .await;
    }
    ins(
        c,
        "attendance_biometric_device",
        &[
            ("device_id", &format!("'{D201}'")),
            ("room", "'R201'"),
            ("is_enabled", "true"),
            ("status", "'active'"),
            ("device_type", "'fingerprint'"),
        ],
    )
    .await;
}

/// The device in room R201 of [`two_rooms`].
pub const D201: &str = "dev-201";

/// Instant of campus (IST) wall-clock `hh:mm:ss` on 2025-01-06.
pub fn ist(hms: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&format!("2025-01-06T{hms}+05:30"))
        .unwrap()
        .with_timezone(&Utc)
}

/// The fixture punch `seq` of `subject`, captured at `at`.
pub fn punch(seq: u64, at: DateTime<Utc>, subject: v1::Subject) -> v1::Punch {
    v1::Punch {
        captured_at_ms: at.timestamp_millis(),
        subject,
        ..rollcall_tests::fixtures::punch(seq)
    }
}

pub fn student(id: Uuid) -> v1::Subject {
    v1::Subject::Student(id.to_string())
}

pub fn topic(device: &str) -> String {
    rollcall_protocol::topic::build(SITE, device, rollcall_protocol::topic::Kind::Punches)
}

pub fn env(device: &str, epoch: u64, punches: Vec<v1::Punch>) -> Envelope {
    let b = v1::PunchBatch {
        device_id: device.into(),
        epoch,
        punches,
    };
    Envelope::new(&topic(device), b.encode().into())
}

/// A pool on the test database, built as the service builds it.
pub fn pool(url: &str, size: usize) -> deadpool_postgres::Pool {
    let db = rollcall_ingest::config::DatabaseConfig {
        url: url.to_string(),
        pool_size: size,
        schema_mode: rollcall_ingest::config::SchemaMode::Existing,
        migrate_on_start: false,
        ca_file: None,
    };
    rollcall_ingest::pg_tls::pool(&db, size).expect("pool")
}

pub fn settings(clock: SessionClock) -> WriterSettings {
    WriterSettings {
        node: "test".into(),
        tz: chrono_tz::Asia::Kolkata,
        clock,
        default_grace_minutes: 5,
        early_arrival_minutes: 15,
        max_future_skew_s: 300,
        demo_devices: Default::default(),
    }
}

/// Writes with "now" = 2025-01-06 12:00 IST.
pub async fn write(c: &mut Client, envs: &[Envelope], clock: SessionClock) -> BatchReport {
    write_batch(c, envs, &settings(clock), ist("12:00:00"))
        .await
        .expect("write batch")
}

pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// `(mark, marked_at, source)` of a student's record in a session.
pub async fn record(
    c: &Client,
    session: i64,
    student: Uuid,
) -> Option<(String, DateTime<Utc>, String)> {
    c.query_opt("SELECT mark::text, marked_at, source::text FROM attendance_record WHERE session_id = $1 AND student_id = $2", &[&session, &student])
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
}

pub async fn outcome(c: &Client, device: &str, epoch: u64, seq: u64) -> String {
    c.query_one(
        "SELECT outcome FROM rollcall.ledger WHERE device_id = $1 AND epoch = $2 AND seq = $3",
        &[&device, &(epoch as i64), &(seq as i64)],
    )
    .await
    .unwrap()
    .get(0)
}

/// Generates `#[tokio::test]`s `<name>_standalone` and `<name>_real_schema` from an async fn
/// taking a [`Db`].
#[macro_export]
macro_rules! both_schemas {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                if let Some(db) = $crate::ingest_common::db($crate::ingest_common::Schema::Standalone).await {
                    super::$name(db).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn real_schema() {
                if let Some(db) = $crate::ingest_common::db($crate::ingest_common::Schema::Real).await {
                    super::$name(db).await;
                }
            }
        }
    )* };
}
pub mod device;
pub mod service;
