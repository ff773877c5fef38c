//! Roster benchmark (issue 9 point 8): compute and publish the rosters of a campus of 20,000
//! students and 500 devices, on a real PostgreSQL (standalone schema, fsync on) and a real
//! Mosquitto on loopback, both started here by the `rollcall-tests` harness.
//!
//! The campus: every student ENROLLED in `--per-student` sections of the current academic period
//! (sections of `--section-size`, students spread over them by a different permutation per
//! group so rooms do not share their students), sections meeting in `--devices` rooms by three
//! timetable slots a week (each room hosting several sections), `--weeks` of past sessions of
//! those slots, and a previous period (its own sections, enrolments COMPLETED, slots and sessions)
//! that must not count. Every student has 1 card and 2 EF01 templates (512 bytes), sealed under a
//! generated key ring; every device has said hello accepting card and ef01.
//!
//! Measured: the bare membership SELECT (reference), the first full refresh, the first fill of
//! `attendance_biometric_template`, building and splitting every snapshot, publishing them with
//! `refresh_once` until a subscriber has every message (reference: the same bytes from a bare
//! rumqttc client), a typical change and its deltas, and the idle refresh. PostgreSQL's own
//! times come from `pg_stat_statements`; `--plans` also logs EXPLAIN ANALYZE of every statement
//! over 200 ms (auto_explain, which slows everything a little) and prints them at the end.
//!
//! `cargo run --release -p rollcall-ingest --example rosters [-- --students 20000 --devices 500
//! --per-student 6 --section-size 40 --weeks 8 --idle 5 --plans]`

use chrono::Utc;
use rollcall_ingest::config::Config;
use rollcall_ingest::credentials::keys::KeyRing;
use rollcall_ingest::credentials::{Tick, refresh_once, roster};
use rollcall_protocol::topic;
use rollcall_protocol::v1::RosterAck;
use rollcall_protocol::v1::credentials::{FORMAT_CARD, FORMAT_EF01};
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::postgres::{PgOptions, Postgres};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

const SITE: &str = "campus";

/// Set once the figures are printed: the broker then goes away under the clients.
static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
const TEMPLATE_BYTES: usize = 512;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Shape {
    students: usize,
    devices: usize,
    per_student: usize,
    section_size: usize,
    weeks: usize,
}

impl Shape {
    /// Sections per group; a student is in one section of each of `per_student` groups.
    fn group(&self) -> usize {
        self.students.div_ceil(self.section_size)
    }
    fn sections(&self) -> usize {
        self.group() * self.per_student
    }
}

fn student_id(s: usize) -> Uuid {
    Uuid::parse_str(&format!("00000000-0000-4000-8000-{s:012}")).expect("uuid")
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Credential rows, column by column, for one `unnest` insert.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    student: Vec<Uuid>,
    kind: Vec<&'static str>,
    format: Vec<&'static str>,
    digest: Vec<Vec<u8>>,
    nonce: Vec<Vec<u8>>,
    ciphertext: Vec<Vec<u8>>,
    enrolled: Vec<chrono::DateTime<Utc>>,
}

/// Seeds the campus with set-based SQL; credentials sealed here and inserted by `unnest` in
/// chunks.
async fn seed(c: &Client, keys: &KeyRing, sh: &Shape) -> anyhow::Result<()> {
    let (n, d, g, sections) = (sh.students, sh.devices, sh.group(), sh.sections());
    // Two periods: the current one (sections 1..=S) and the previous one (S+1..=2S).
    c.batch_execute(&format!(
        "INSERT INTO attendance_academicperiod (id, is_current, is_active, period_start, period_end, description,
             created_at, updated_at, academic_year_id, semester_id)
         VALUES ('00000000-0000-4000-8000-0000000000a1', true, true, current_date - 60, current_date + 60, 'now', now(), now(), 1, 2),
                ('00000000-0000-4000-8000-0000000000a0', false, true, current_date - 240, current_date - 61, 'before', now(), now(), 1, 1);
         INSERT INTO academics_coursesection (id, section_type, current_enrollment, is_active, notes, created_at, updated_at, course_id, faculty_id)
           OVERRIDING SYSTEM VALUE SELECT j, 'LECTURE', 0, true, '', now(), now(), j, gen_random_uuid()
           FROM generate_series(1, 2 * {sections}) j;
         INSERT INTO students_student (id, created_at, updated_at, roll_number, first_name, last_name, date_of_birth, gender, country, enrollment_date, status)
           SELECT ('00000000-0000-4000-8000-' || lpad(s::text, 12, '0'))::uuid, now(), now(), 'R' || s, 'F', 'L', '2005-01-01', 'M', 'IN', '2024-07-01', 'ACTIVE'
           FROM generate_series(0, {n} - 1) s;
         INSERT INTO rollcall.consent (student_id, granted_at, granted_by, method)
           SELECT id, now(), 'registrar', 'paper form' FROM students_student;
         INSERT INTO rollcall.consent_event (student_id, at, action, by_whom, method)
           SELECT student_id, granted_at, 'granted', granted_by, method FROM rollcall.consent;
         INSERT INTO attendance_biometric_device (created_at, updated_at, device_id, device_name, device_type, location, room, status, firmware_version,
             is_enabled, auto_sync, sync_interval_minutes, ip_address, port, api_endpoint, api_key)
           SELECT now(), now(), 'gw-' || r, 'gw', 'fingerprint', '', 'R' || r, 'active', '', true, true, 5, '10.0.0.1', 80, '', ''
           FROM generate_series(1, {d}) r;"
    ))
    .await?;
    // Enrolments: in group k, student s is in section k*g + perm_k(s)/size + 1, perm_k a
    // multiplication modulo n by a unit; the previous period's sections are S higher.
    let mult: Vec<usize> = (7919..)
        .step_by(7920)
        .filter(|&a| gcd(a, n) == 1)
        .take(sh.per_student)
        .collect();
    for (k, a) in mult.iter().enumerate() {
        for (offset, status) in [(0, "ENROLLED"), (sections, "COMPLETED")] {
            c.batch_execute(&format!(
                "INSERT INTO academics_courseenrollment (enrollment_date, status, grade, enrollment_type, notes, created_at, updated_at, student_id, course_section_id)
                 SELECT '2024-07-01', '{status}', '', 'REGULAR', '', now(), now(),
                        ('00000000-0000-4000-8000-' || lpad(s::text, 12, '0'))::uuid,
                        {offset} + {k} * {g} + ((s::bigint * {a} + {k}) % {n}) / {size} + 1
                 FROM generate_series(0, {n} - 1) s",
                size = sh.section_size
            ))
            .await?;
        }
    }
    // Section j meets in room (j-1) % d + 1, three slots a week on different days; sessions of
    // those slots over the past weeks (current period) or over 16 weeks (previous period).
    c.batch_execute(&format!(
        "INSERT INTO attendance_timetable_slot (created_at, updated_at, day_of_week, start_time, end_time, room, is_active,
             academic_year, semester, course_section_id, faculty_id, academic_period_id, slot_type)
         SELECT now(), now(), (j + 2 * t) % 5 + 1, make_time(8 + (j / {d}) % 9, 0, 0), make_time(9 + (j / {d}) % 9, 0, 0),
                'R' || ((j - 1) % {d} + 1), true, '2024-2025', CASE WHEN j > {sections} THEN '1' ELSE '2' END, j, gen_random_uuid(),
                CASE WHEN j > {sections} THEN '00000000-0000-4000-8000-0000000000a0' ELSE '00000000-0000-4000-8000-0000000000a1' END::uuid,
                'LECTURE'
         FROM generate_series(1, 2 * {sections}) j, generate_series(0, 2) t;
         INSERT INTO attendance_session (created_at, updated_at, scheduled_date, start_datetime, end_datetime, room, status, auto_opened, auto_closed,
             makeup, notes, qr_token, course_section_id, faculty_id, timetable_slot_id, academic_period_id, biometric_device_id, biometric_enabled,
             offline_sync_token)
         SELECT now(), now(), day, (day + ts.start_time)::timestamptz, (day + ts.end_time)::timestamptz, ts.room, 'closed', false, false, false, '', '',
                ts.course_section_id, ts.faculty_id, ts.id, ts.academic_period_id, '', true, ''
         FROM attendance_timetable_slot ts,
              LATERAL (SELECT (current_date - (CASE WHEN ts.course_section_id > {sections} THEN 61 ELSE 0 END)
                               - 7 * w - ts.day_of_week) AS day
                       FROM generate_series(1, CASE WHEN ts.course_section_id > {sections} THEN 16 ELSE {weeks} END) w) x;",
        weeks = sh.weeks
    ))
    .await?;
    // Credentials: 1 card and 2 EF01 templates per student, sealed.
    let kid = keys.current_id().to_string();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let mut cols = Columns::default();
        for &s in chunk {
            let student = student_id(s);
            let card = (s as u64 | 0x04_0000_0000_0000).to_be_bytes()[1..].to_vec();
            let mut secrets = vec![("card", FORMAT_CARD, card)];
            for _ in 0..2 {
                let t: Vec<u8> = (0..TEMPLATE_BYTES).map(|_| rand::random::<u8>()).collect();
                secrets.push(("fingerprint", FORMAT_EF01, t));
            }
            // Enrolled a few seconds apart, as at a reader (the newest template is shown in
            // attendance_biometric_template).
            let enrolled = Utc::now() - chrono::Duration::seconds((3 * (n - s)) as i64);
            for (i, (kind, format, secret)) in secrets.into_iter().enumerate() {
                let id = Uuid::now_v7();
                let sealed = keys.seal(id, student, kind, &secret);
                debug_assert_eq!(sealed.key_id, kid);
                cols.id.push(id);
                cols.student.push(student);
                cols.kind.push(kind);
                cols.format.push(format);
                cols.digest.push(keys.digest(kind, &secret).to_vec());
                cols.nonce.push(sealed.nonce);
                cols.ciphertext.push(sealed.ciphertext);
                cols.enrolled
                    .push(enrolled + chrono::Duration::seconds(i as i64));
            }
        }
        c.execute(
            "INSERT INTO rollcall.credential (id, student_id, kind, format, sensor, quality, enrolled_at,
                 enrolled_device, enrolled_reader, enrolled_by, digest, key_id, nonce, ciphertext)
             SELECT id, st, kind, format, CASE WHEN kind = 'card' THEN '' ELSE 'r307' END, 80, at,
                    'gw-1', 'reader', 'bench', digest, $8, nonce, ct
             FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bytea[], $6::bytea[], $7::bytea[],
                         $9::timestamptz[]) AS x(id, st, kind, format, digest, nonce, ct, at)",
            &[
                &cols.id, &cols.student, &cols.kind, &cols.format, &cols.digest, &cols.nonce, &cols.ciphertext, &kid, &cols.enrolled,
            ],
        )
        .await?;
    }
    c.batch_execute("VACUUM ANALYZE").await?;
    Ok(())
}

/// Every device says hello: `version` (0 for new ones), accepting cards and EF01 templates.
async fn hello_all(
    c: &impl deadpool_postgres::GenericClient,
    versions: &[(String, i64)],
    want_snapshot: bool,
) -> anyhow::Result<()> {
    let now = Utc::now();
    for (device, version) in versions {
        let ack = RosterAck {
            device_id: device.clone(),
            version: *version as u64,
            want_snapshot,
            templates_loaded: 0,
            capacity: Some(1000),
            failures: vec![],
            accepts: vec![FORMAT_CARD.into(), FORMAT_EF01.into()],
        };
        roster::hello(c, SITE, &ack, now).await?;
    }
    Ok(())
}

async fn published_versions(c: &Client) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(c
        .query(
            "SELECT device_id::text, coalesce(published_version, 0) FROM rollcall.roster_device ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The reference: the membership join of `roster::refresh` alone (no diff, no writes), every
/// row sent to the client.
fn bare_select() -> String {
    format!(
        "WITH {} SELECT device_id::text, student_id, digest FROM desired",
        roster::MEMBERSHIP_CTES
    )
}

/// PostgreSQL's time per statement since the last reset, largest first.
async fn pg_top(c: &Client, what: &str) -> anyhow::Result<()> {
    let rows = c
        .query(
            "SELECT calls, total_exec_time, rows, regexp_replace(left(query, 90), '\\s+', ' ', 'g')
             FROM pg_stat_statements WHERE query NOT ILIKE '%pg_stat_statements%'
             ORDER BY total_exec_time DESC LIMIT 6",
            &[],
        )
        .await?;
    println!("  PostgreSQL, {what} (pg_stat_statements: calls, total ms, rows, statement):");
    for r in rows {
        let (calls, ms, n, q): (i64, f64, i64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        if ms >= 1.0 {
            println!("    {calls:>6} {ms:>10.1} {n:>8}  {q}");
        }
    }
    c.batch_execute("SELECT pg_stat_statements_reset()").await?;
    Ok(())
}

/// A subscriber to every roster topic, counting messages and bytes.
struct Subscriber {
    messages: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Subscriber {
    async fn start(port: u16) -> anyhow::Result<Self> {
        let mut o = MqttOptions::new("bench-subscriber", "127.0.0.1", port);
        o.set_max_packet_size(4 << 20, 64 * 1024)
            .set_keep_alive(Duration::from_secs(60));
        let (client, mut el) = AsyncClient::new(o, 100);
        let (messages, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (m, b) = (messages.clone(), bytes.clone());
        let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
        let mut sub_tx = Some(sub_tx);
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let f = format!("rollcall/v1/{SITE}/+/roster");
                        let _ = client.try_subscribe(f, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(t) = sub_tx.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        b.fetch_add(p.payload.len() as u64, Ordering::Relaxed);
                        m.fetch_add(1, Ordering::Release);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !DONE.load(Ordering::Relaxed) {
                            eprintln!("subscriber: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), sub_rx).await??;
        Ok(Subscriber { messages, bytes })
    }

    fn reset(&self) {
        self.messages.store(0, Ordering::Release);
        self.bytes.store(0, Ordering::Release);
    }

    /// Waits until `n` messages have arrived; their bytes.
    async fn wait(&self, n: u64) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.messages.load(Ordering::Acquire) < n {
            anyhow::ensure!(
                Instant::now() < deadline,
                "subscriber got {} of {n} messages",
                self.messages.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        Ok(self.bytes.load(Ordering::Acquire))
    }
}

/// A client with its event loop polled in a task.
fn client(opts: MqttOptions, cap: usize) -> AsyncClient {
    let (client, mut el) = AsyncClient::new(opts, cap);
    tokio::spawn(async move {
        loop {
            if let Err(e) = el.poll().await {
                if !DONE.load(Ordering::Relaxed) {
                    eprintln!("publisher: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let sh = Shape {
        students: arg("--students", 20_000),
        devices: arg("--devices", 500),
        per_student: arg("--per-student", 6),
        section_size: arg("--section-size", 40),
        weeks: arg("--weeks", 8),
    };
    let idle_runs = arg("--idle", 5).max(1);
    let plans = std::env::args().any(|a| a == "--plans");
    let mut settings = vec![(
        "shared_preload_libraries".to_string(),
        if plans {
            "pg_stat_statements,auto_explain"
        } else {
            "pg_stat_statements"
        }
        .to_string(),
    )];
    if plans {
        for (k, v) in [
            ("auto_explain.log_min_duration", "200ms"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_buffers", "on"),
        ] {
            settings.push((k.into(), v.into()));
        }
    }
    let pg = Postgres::start_with(PgOptions {
        fsync: true,
        settings,
    })?;
    let broker = Mosquitto::start()?;
    let url = pg.create_database("campus")?;
    let (mut c, conn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(conn);
    rollcall_ingest::db::schema::migrate(&mut c, rollcall_ingest::config::SchemaMode::Standalone)
        .await?;
    c.batch_execute("CREATE EXTENSION pg_stat_statements")
        .await?;
    let keys = KeyRing::parse(&KeyRing::generate("k1").map_err(anyhow::Error::msg)?)
        .map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("credential-keys");
    let cfg = Config::from_toml(&format!(
        "node_name = \"bench\"\n[database]\nurl = \"{url}\"\npool_size = 4\nschema_mode = \"standalone\"\n\
         [mqtt]\nurl = \"{}\"\n[credentials]\nkey_file = \"{}\"\n",
        broker.url(),
        key_file.display()
    ))?;
    let cc = cfg.credentials.clone().expect("[credentials]");
    let pool = rollcall_ingest::pg_tls::pool(&cfg.database, 4)?;

    println!(
        "campus: {} students, {} devices/rooms, {} current sections ({} per student, {} students each), {} weeks of sessions; previous period alongside",
        sh.students,
        sh.devices,
        sh.sections(),
        sh.per_student,
        sh.section_size,
        sh.weeks
    );
    let t = Instant::now();
    seed(&c, &keys, &sh).await?;
    let devices: Vec<(String, i64)> = (1..=sh.devices).map(|r| (format!("gw-{r}"), 0)).collect();
    let mut pc = pool.get().await?;
    hello_all(&pc, &devices, true).await?;
    c.batch_execute("ANALYZE rollcall.roster_device").await?;
    for (what, sql) in [
        (
            "enrolments",
            "SELECT count(*) FROM academics_courseenrollment",
        ),
        (
            "timetable slots",
            "SELECT count(*) FROM attendance_timetable_slot",
        ),
        ("sessions", "SELECT count(*) FROM attendance_session"),
        ("credentials", "SELECT count(*) FROM rollcall.credential"),
    ] {
        let n: i64 = c.query_one(sql, &[]).await?.get(0);
        println!("  {what}: {n}");
    }
    println!("seeded in {:.1} s", t.elapsed().as_secs_f64());
    c.batch_execute("SELECT pg_stat_statements_reset()").await?;

    let now = Utc::now();
    let today = now.with_timezone(&cfg.campus.timezone).date_naive();

    // Reference: the bare membership SELECT, cold and warm with the server's settings, then
    // with JIT off as `roster::refresh` runs.
    let mut bare = Vec::new();
    let mut pairs = 0;
    let bare_select = bare_select();
    for set in ["", "", "SET jit = off", "RESET jit"] {
        if !set.is_empty() {
            c.batch_execute(set).await?;
        }
        if set != "RESET jit" {
            let t = Instant::now();
            pairs = c.query(&bare_select, &[&today]).await?.len();
            bare.push(t.elapsed());
        }
    }
    println!(
        "\n[ref] bare membership SELECT: {} (cold), {} (warm), {} (warm, jit = off); {pairs} device-student rows",
        ms(bare[0]),
        ms(bare[1]),
        ms(bare[2])
    );
    pg_top(&c, "bare SELECT").await?;

    // (1) The first full refresh.
    let tx = pc.transaction().await?;
    let t = Instant::now();
    let changed = roster::refresh(&tx, today, now).await?;
    let t_refresh = t.elapsed();
    tx.commit().await?;
    let t_commit = t.elapsed() - t_refresh;
    let members: i64 = c
        .query_one("SELECT count(*) FROM rollcall.roster_member", &[])
        .await?
        .get(0);
    println!(
        "\n[1] first full refresh: {} + COMMIT {}; {} devices changed, {members} roster members written ({:.2}x the bare SELECT, warm, jit = off)",
        ms(t_refresh),
        ms(t_commit),
        changed.len(),
        t_refresh.as_secs_f64() / bare[2].as_secs_f64()
    );
    pg_top(&c, "first refresh").await?;
    let tx = pc.transaction().await?;
    let t = Instant::now();
    roster::sync_template_table(&tx, now - chrono::Duration::minutes(10), now).await?;
    tx.commit().await?;
    let rows: i64 = c
        .query_one("SELECT count(*) FROM attendance_biometric_template", &[])
        .await?
        .get(0);
    println!(
        "[1b] attendance_biometric_template first fill: {} (with COMMIT), {rows} rows",
        ms(t.elapsed())
    );
    pg_top(&c, "template table fill").await?;

    // (2) Build and split every device's snapshot, in a transaction rolled back.
    let tx = pc.transaction().await?;
    let t = Instant::now();
    let due = roster::due(&tx, now).await?;
    let t_due = t.elapsed();
    let (mut t_build, mut t_split) = (Duration::ZERO, Duration::ZERO);
    let (mut entries, mut creds) = (0usize, 0usize);
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for d in &due {
        let t = Instant::now();
        let (students, removed, problems) = roster::build(&tx, &keys, d).await?;
        t_build += t.elapsed();
        anyhow::ensure!(problems.is_empty(), "{problems:?}");
        entries += students.len();
        creds += students
            .iter()
            .map(|s| s.cards.len() + s.fingers.len())
            .sum::<usize>();
        let t = Instant::now();
        let base = (!d.snapshot).then_some(d.acked as u64);
        let parts = roster::split(
            &d.device_id,
            base,
            d.version as u64,
            students,
            removed,
            cc.max_part_bytes,
        );
        let tp = topic::build(&d.site, &d.device_id, topic::Kind::Roster);
        for p in parts {
            messages.push((tp.clone(), p.encode()));
        }
        t_split += t.elapsed();
    }
    tx.rollback().await?;
    let bytes: u64 = messages.iter().map(|m| m.1.len() as u64).sum();
    let largest = messages.iter().map(|m| m.1.len()).max().unwrap_or(0);
    println!(
        "\n[2] build + split: {} devices due ({}), build {} (queries + {creds} credentials decrypted), split + encode {}; \
         {entries} student entries, {} messages, {} (largest {largest} B, limit {})",
        due.len(),
        ms(t_due),
        ms(t_build),
        ms(t_split),
        messages.len(),
        mb(bytes),
        cc.max_part_bytes
    );
    // Decryption alone: every credential opened once.
    let all = c
        .query(
            "SELECT id, student_id, kind, key_id, nonce, ciphertext FROM rollcall.credential",
            &[],
        )
        .await?;
    let t = Instant::now();
    for r in &all {
        let sealed = rollcall_ingest::credentials::keys::Sealed {
            key_id: r.get(3),
            nonce: r.get(4),
            ciphertext: r.get(5),
        };
        let kind: String = r.get(2);
        keys.open(r.get(0), r.get(1), &kind, &sealed)?;
    }
    let per_open = t.elapsed() / all.len() as u32;
    println!(
        "    AES-256-GCM open alone: {:.2} us per credential ({} rows), so about {} of the build is decryption",
        per_open.as_secs_f64() * 1e6,
        all.len(),
        ms(per_open * creds as u32)
    );
    pg_top(&c, "build (rolled back)").await?;

    // (3) Publish through refresh_once, as the service does, until the subscriber has all.
    let sub = Subscriber::start(broker.port()).await?;
    // As `credentials::run` sets up its client, except the outgoing packet limit:
    // `consumer::mqtt_options` allows 64 KiB out (plenty for punch acks), below
    // `max_part_bytes` (256 KiB), so rumqttc refuses every larger roster part.
    let mut opts = rollcall_ingest::consumer::mqtt_options(&cfg)?;
    opts.set_client_id("rollcall-ingest-bench-credentials".to_string());
    opts.set_manual_acks(false);
    opts.set_max_packet_size(268_435_455, rollcall_protocol::v1::MAX_MESSAGE_BYTES + 1024);
    let service = client(opts, 4096);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub.reset();
    let t = Instant::now();
    let r = refresh_once(
        &pool,
        &keys,
        &cfg,
        &cc,
        &service,
        Tick {
            last: now,
            now: Utc::now(),
            template_table: true,
        },
    )
    .await?;
    let t_returned = t.elapsed();
    let got = sub.wait(r.messages as u64).await?;
    let t_all = t.elapsed();
    println!(
        "\n[3] refresh_once -> Mosquitto -> subscriber: returned after {} ({} devices changed, {} messages queued), \
         all {} messages ({}) received after {} ({:.1} MB/s)",
        ms(t_returned),
        r.changed,
        r.messages,
        r.messages,
        mb(got),
        ms(t_all),
        got as f64 / 1e6 / t_all.as_secs_f64()
    );
    pg_top(&c, "refresh_once with every snapshot").await?;
    // Reference: the same bytes from a bare rumqttc client.
    let mut o = MqttOptions::new("bench-bare", "127.0.0.1", broker.port());
    o.set_max_packet_size(4 << 20, rollcall_protocol::v1::MAX_MESSAGE_BYTES + 1024)
        .set_inflight(1000);
    let bare_client = client(o, 4096);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub.reset();
    let t = Instant::now();
    for (tp, b) in &messages {
        bare_client
            .publish(tp.clone(), QoS::AtLeastOnce, false, b.clone())
            .await?;
    }
    let got_bare = sub.wait(messages.len() as u64).await?;
    let t_bare = t.elapsed();
    println!(
        "[ref] bare rumqttc client, the same {} messages ({}): received after {} ({:.1} MB/s); refresh_once end to end / bare publish = {:.2}x",
        messages.len(),
        mb(got_bare),
        ms(t_bare),
        got_bare as f64 / 1e6 / t_bare.as_secs_f64(),
        t_all.as_secs_f64() / t_bare.as_secs_f64()
    );

    // Every device acknowledges what it was sent.
    let t = Instant::now();
    hello_all(&pc, &published_versions(&c).await?, false).await?;
    println!(
        "    {} roster acks recorded (roster::hello) in {}",
        sh.devices,
        ms(t.elapsed())
    );
    c.batch_execute("SELECT pg_stat_statements_reset()").await?;

    // (4) A typical change: 100 new enrolments, 20 enrolments moved to another section of
    // their group (a different room).
    let (g, sections) = (sh.group() as i64, sh.sections() as i64);
    let n = sh.students as i64;
    let t = Instant::now();
    let added = c
        .execute(
            &format!(
                "INSERT INTO academics_courseenrollment (enrollment_date, status, grade, enrollment_type, notes, created_at, updated_at,
                     student_id, course_section_id)
                 SELECT current_date, 'ENROLLED', '', 'REGULAR', '', now(), now(),
                        ('00000000-0000-4000-8000-' || lpad(((i * 7331) % {n})::text, 12, '0'))::uuid, (i * 104729) % {sections} + 1
                 FROM generate_series(1, 100) i
                 ON CONFLICT (student_id, course_section_id) DO NOTHING"
            ),
            &[],
        )
        .await?;
    let moved = c
        .execute(
            &format!(
                "UPDATE academics_courseenrollment e
                 SET course_section_id = ((e.course_section_id - 1) / {g}) * {g} + ((e.course_section_id - 1) % {g} + 37) % {g} + 1,
                     updated_at = now()
                 WHERE e.id IN (SELECT id FROM academics_courseenrollment WHERE status = 'ENROLLED'
                                  AND course_section_id <= {sections} ORDER BY id LIMIT 20 OFFSET 5000)"
            ),
            &[],
        )
        .await?;
    let t_change = t.elapsed();
    sub.reset();
    let t = Instant::now();
    let r = refresh_once(
        &pool,
        &keys,
        &cfg,
        &cc,
        &service,
        Tick {
            last: now,
            now: Utc::now(),
            template_table: true,
        },
    )
    .await?;
    let t_returned = t.elapsed();
    let got = sub.wait(r.messages as u64).await?;
    let t_all = t.elapsed();
    println!(
        "\n[4] change: {added} enrolments added, {moved} moved (written in {}); refresh_once returned after {}: \
         {} devices changed, {} delta messages ({}) all received after {}",
        ms(t_change),
        ms(t_returned),
        r.changed,
        r.messages,
        mb(got),
        ms(t_all)
    );
    pg_top(&c, "incremental refresh_once").await?;
    hello_all(&pc, &published_versions(&c).await?, false).await?;

    // (5) Idle: nothing changed.
    c.batch_execute("SELECT pg_stat_statements_reset()").await?;
    let mut idle = Vec::new();
    for _ in 0..idle_runs {
        let at = Utc::now();
        let last = at - chrono::Duration::from_std(cc.roster_every)?;
        let t = Instant::now();
        let r = refresh_once(
            &pool,
            &keys,
            &cfg,
            &cc,
            &service,
            Tick {
                last,
                now: at,
                template_table: false,
            },
        )
        .await?;
        idle.push(t.elapsed());
        anyhow::ensure!(r.changed == 0 && r.messages == 0, "idle refresh did {r:?}");
    }
    idle.sort();
    let every = cc.roster_every.as_secs_f64();
    println!(
        "\n[5] idle refresh_once x{idle_runs}: min {}, median {}, max {}; at roster_every = {every} s that is {:.1} % of a core's time",
        ms(idle[0]),
        ms(idle[idle.len() / 2]),
        ms(idle[idle.len() - 1]),
        idle[idle.len() / 2].as_secs_f64() / every * 100.0
    );
    pg_top(&c, &format!("{idle_runs} idle refresh_once")).await?;
    // Its parts, each alone in a rolled-back transaction.
    for part in ["roster::refresh", "sync_template_table", "roster::due"] {
        let tx = pc.transaction().await?;
        let t = Instant::now();
        match part {
            "roster::refresh" => {
                roster::refresh(&tx, today, Utc::now()).await?;
            }
            "sync_template_table" => {
                roster::sync_template_table(&tx, Utc::now(), Utc::now()).await?;
            }
            _ => {
                roster::due(&tx, Utc::now() - chrono::Duration::minutes(1)).await?;
            }
        }
        println!("    idle {part} alone: {}", ms(t.elapsed()));
        tx.rollback().await?;
    }
    DONE.store(true, Ordering::Relaxed);
    if plans {
        println!(
            "\n--- auto_explain (statements over 200 ms) ---\n{}",
            pg.log()
        );
    }
    Ok(())
}
