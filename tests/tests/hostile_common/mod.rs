//! A running centre for the hostile-input suite: a seeded campus in a private PostgreSQL, a
//! Mosquitto, the real rollcall-ingest binary, a client that publishes anything and records
//! every device ack, and a good stream of punches that must keep flowing whatever else arrives.
#![allow(dead_code)]

pub mod ingest;
pub mod mqtt;

use crate::ingest_common::{self, Db, count, ins};
use chrono::{DateTime, Utc};
use ingest::{CONNECTS, IngestProcess, sample};
use mqtt::Mqtt;
use rollcall_protocol::topic::{self, Kind};
use rollcall_protocol::v1;
use rollcall_tests::free_port;
use rollcall_tests::mosquitto::Mosquitto;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const SITE: &str = "north";
pub const EPOCH: u64 = 7;
/// Peak resident memory ingest may reach in any of these tests (8 MiB messages included).
pub const MAX_HWM_KIB: u64 = 300 * 1024;
/// Longest a good punch may take from its publish to its ledger row.
pub const GOOD_DELAY: Duration = Duration::from_secs(30);
/// How long a test waits for one case's outcome.
pub const CASE_WAIT: Duration = Duration::from_secs(30);

/// The seeded campus: students S000..S039 (roll numbers) enrolled in one section, whose
/// session in room R101 runs from 10 minutes ago to 2 hours from now (campus time zone UTC),
/// and the devices of the test in R101.
pub struct Campus {
    pub session: i64,
    pub students: BTreeMap<String, Uuid>,
    pub session_start: DateTime<Utc>,
}

pub fn roll(i: usize) -> String {
    format!("S{i:03}")
}

/// Seeds the campus with `enabled` and `disabled` devices registered in room R101.
pub async fn seed(c: &Client, enabled: &[&str], disabled: &[&str]) -> Campus {
    let ay = ins(c, "students_academicyear", &[("year", "'2024-2025'")]).await;
    let batch = ins(
        c,
        "students_studentbatch",
        &[("academic_year_id", &ay), ("semester", "'5'")],
    )
    .await;
    let section = ins(
        c,
        "academics_coursesection",
        &[("student_batch_id", &batch)],
    )
    .await;
    let mut students = BTreeMap::new();
    for i in 0..40 {
        let id = Uuid::now_v7();
        ins(
            c,
            "students_student",
            &[
                ("id", &format!("'{id}'")),
                ("roll_number", &format!("'{}'", roll(i))),
                ("student_batch_id", &batch),
                ("status", "'ACTIVE'"),
            ],
        )
        .await;
        ins(
            c,
            "academics_courseenrollment",
            &[
                ("student_id", &format!("'{id}'")),
                ("course_section_id", &section),
                ("status", "'ENROLLED'"),
            ],
        )
        .await;
        students.insert(roll(i), id);
    }
    for (devices, enabled) in [(enabled, "true"), (disabled, "false")] {
        for d in devices {
            ins(
                c,
                "attendance_biometric_device",
                &[
                    ("device_id", &format!("'{d}'")),
                    ("room", "'R101'"),
                    ("is_enabled", enabled),
                    ("status", "'active'"),
                    ("device_type", "'fingerprint'"),
                ],
            )
            .await;
        }
    }
    let mut extra: Vec<(&str, String)> = Vec::new();
    for (table, column) in [
        ("attendance_academicperiod", "academic_period_id"),
        ("faculty_faculty", "faculty_id"),
    ] {
        let id = Uuid::now_v7();
        let exists: bool = c
            .query_one(
                &format!("SELECT to_regclass('public.{table}') IS NOT NULL"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if exists {
            ins(c, table, &[("id", &format!("'{id}'"))]).await;
        }
        extra.push((column, format!("'{id}'")));
    }
    let session_start = Utc::now() - chrono::Duration::minutes(10);
    let start = format!("'{}'", session_start.to_rfc3339());
    let mut given: Vec<(&str, &str)> = vec![
        ("course_section_id", &section),
        ("scheduled_date", "current_date"),
        ("start_datetime", &start),
        ("end_datetime", "now() + interval '2 hours'"),
        ("room", "'R101'"),
        ("status", "'open'"),
    ];
    given.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let session = ins(c, "attendance_session", &given).await.parse().unwrap();
    Campus {
        session,
        students,
        session_start,
    }
}

pub fn topic(device: &str, kind: Kind) -> String {
    topic::build(SITE, device, kind)
}

/// A good punch of student `roll` at `at` (the shared fixture, NTP-synced clock).
pub fn punch(seq: u64, at: DateTime<Utc>, roll: &str) -> v1::Punch {
    let mut p = rollcall_tests::fixtures::punch(seq);
    p.captured_at_ms = at.timestamp_millis();
    p.clock.monotonic_ms = 1_000_000 + seq * 1000;
    p.subject = v1::Subject::Student(roll.into());
    p
}

pub fn batch(device: &str, punches: Vec<v1::Punch>) -> v1::PunchBatch {
    v1::PunchBatch {
        device_id: device.into(),
        epoch: EPOCH,
        punches,
    }
}

/// A heartbeat of `device` with its clock in state `clock`, stamped `sent_at` by that clock.
pub fn status(device: &str, clock: v1::ClockState, sent_at: DateTime<Utc>) -> v1::Status {
    v1::Status {
        device_id: device.into(),
        version: "rollcalld 0.1.0".into(),
        online: true,
        sent_at_ms: sent_at.timestamp_millis(),
        uptime_s: clock.monotonic_ms / 1000,
        epoch: EPOCH,
        journal_depth: 0,
        oldest_unacked_age_s: None,
        last_acked_seq: None,
        readers: vec![],
        clock,
        free_disk_bytes: None,
        last_refusal: None,
    }
}

pub fn synced_clock() -> v1::ClockState {
    v1::ClockState {
        ntp_synced: true,
        offset_ms: None,
        boot_id: Uuid::nil(),
        monotonic_ms: 1_000_000,
    }
}

/// Polls `check` every 50 ms until it answers `Ok`, failing after `timeout` with what was
/// expected, what was seen last and the state of ingest; fails at once if ingest exits.
pub async fn wait_for<T>(
    ingest: &IngestProcess,
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if let Some(status) = ingest.exited() {
            panic!(
                "{what}: rollcall-ingest exited ({status}) while waiting; seen: {seen}\n{}",
                ingest.diagnose()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: not within {timeout:?}; seen: {seen}\n{}",
                ingest.diagnose()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One ledger row, as the suite reads it.
#[derive(Debug, Clone)]
pub struct Row {
    pub seq: u64,
    pub outcome: String,
    pub reason: Option<String>,
    pub detail: String,
    /// None when the capture time is out of range.
    pub effective_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    pub subject: String,
    pub student: Option<Uuid>,
}

/// The device's ledger rows of epoch [`EPOCH`], by seq.
pub async fn ledger(c: &Client, device: &str) -> Vec<Row> {
    c.query(
        "SELECT seq, outcome, reason, detail, effective_at, received_at, subject, student_id
         FROM rollcall.ledger WHERE device_id = $1 AND epoch = $2 ORDER BY seq",
        &[&device, &(EPOCH as i64)],
    )
    .await
    .unwrap_or_else(|e| panic!("reading rollcall.ledger (with its `reason` column): {e:?}"))
    .iter()
    .map(|r| Row {
        seq: r.get::<_, i64>(0) as u64,
        outcome: r.get(1),
        reason: r.get(2),
        detail: r.get(3),
        effective_at: r.get(4),
        received_at: r.get(5),
        subject: r.get(6),
        student: r.get(7),
    })
    .collect()
}

/// `(seq, outcome, reason)` of rows, for comparing with what a case expects.
pub fn outcomes(rows: &[Row]) -> Vec<(u64, String, Option<String>)> {
    rows.iter()
        .map(|r| (r.seq, r.outcome.clone(), r.reason.clone()))
        .collect()
}

/// `(seq, "recorded", None)` and `(seq, "rejected", Some(reason))` rows, to write expectations.
pub fn ok(seq: u64) -> (u64, String, Option<String>) {
    (seq, "recorded".into(), None)
}

pub fn refused(seq: u64, outcome: &str, reason: &str) -> (u64, String, Option<String>) {
    (seq, outcome.into(), Some(reason.into()))
}

/// A dead letter: `(topic, device_id, reason, payload_size)`.
pub type Dead = (String, Option<String>, String, i32);

pub async fn dead_letters(c: &Client) -> Vec<Dead> {
    c.query(
        "SELECT topic, device_id, reason, payload_size FROM rollcall.dead_letter ORDER BY id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// Attendance records of a student in the campus session, as `(mark, marked_at)`.
pub async fn records(c: &Client, campus: &Campus, roll: &str) -> Vec<(String, DateTime<Utc>)> {
    c.query(
        "SELECT mark::text, marked_at FROM attendance_record WHERE session_id = $1 AND student_id = $2",
        &[&campus.session, &campus.students[roll]],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The running centre of one test.
pub struct System {
    pub ingest: IngestProcess,
    pub mqtt: Mqtt,
    pub broker: Mosquitto,
    pub db: Db,
    pub campus: Campus,
    pub dir: tempfile::TempDir,
}

impl System {
    /// Seeds the campus, starts Mosquitto and rollcall-ingest (`extra_toml` appended to its
    /// config) and waits until ingest consumes: a heartbeat of `enabled[0]` reaches the database.
    pub async fn start(enabled: &[&str], disabled: &[&str], extra_toml: &str) -> System {
        let db = ingest_common::db(ingest_common::Schema::Standalone)
            .await
            .expect("standalone database");
        let campus = seed(&db.client, enabled, disabled).await;
        let broker = Mosquitto::start().unwrap();
        let mqtt = Mqtt::connect(broker.port(), "hostile").await;
        let dir = tempfile::tempdir().unwrap();
        let metrics_port = free_port().unwrap();
        let toml = format!(
            "node_name = \"hostile\"\n[database]\nurl = \"{db}\"\npool_size = 4\nschema_mode = \"existing\"\n\
             [mqtt]\nurl = \"{broker}\"\n[campus]\ntimezone = \"UTC\"\n\
             [ingest]\nlinger_ms = 2\nmax_future_skew_s = 60\n[jobs]\nenabled = false\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n{extra_toml}",
            db = db.url,
            broker = broker.url(),
        );
        let binary = rollcall_tests::binaries::ingest();
        let ingest = IngestProcess::start(&binary, dir.path(), &toml, metrics_port);
        let sys = System {
            ingest,
            mqtt,
            broker,
            db,
            campus,
            dir,
        };
        let probe = enabled[0];
        let mut next = Instant::now();
        wait_for(
            &sys.ingest,
            "rollcall-ingest consuming (a heartbeat in rollcall.device_status)",
            Duration::from_secs(30),
            async || {
                if Instant::now() >= next {
                    let st = status(probe, synced_clock(), Utc::now());
                    sys.mqtt
                        .publish(&topic(probe, Kind::Status), st.encode())
                        .await;
                    next = Instant::now() + Duration::from_millis(500);
                }
                let n = count(
                    &sys.db.client,
                    &format!(
                        "SELECT count(*) FROM rollcall.device_status WHERE device_id = '{probe}'"
                    ),
                )
                .await;
                if n == 1 {
                    Ok(())
                } else {
                    Err("no heartbeat row yet".into())
                }
            },
        )
        .await;
        sys
    }

    pub async fn send(&self, b: &v1::PunchBatch) {
        self.mqtt
            .publish(&topic(&b.device_id, Kind::Punches), b.encode())
            .await;
    }

    pub async fn send_status(&self, s: &v1::Status) {
        self.mqtt
            .publish(&topic(&s.device_id, Kind::Status), s.encode())
            .await;
    }

    /// Waits until the device's acks reach `seq`.
    pub async fn wait_ack(&self, device: &str, seq: u64) {
        wait_for(
            &self.ingest,
            &format!("ack of {device} up to seq {seq}"),
            CASE_WAIT,
            async || {
                let a = self.mqtt.acks();
                let up = a.up_to(device, EPOCH);
                if up >= seq {
                    Ok(())
                } else {
                    Err(format!("acked up to {up}; acks: {:?}", a.of(device)))
                }
            },
        )
        .await
    }

    /// Waits until the device has received `n` acks in all (each message, re-sends included,
    /// is acked once it is committed: a barrier for "ingest has processed it").
    pub async fn wait_acks(&self, device: &str, n: usize) {
        wait_for(
            &self.ingest,
            &format!("{n} acks to {device}"),
            CASE_WAIT,
            async || {
                let a = self.mqtt.acks();
                let got = a.of(device).len();
                if got >= n {
                    Ok(())
                } else {
                    Err(format!("{got} acks: {:?}", a.of(device)))
                }
            },
        )
        .await
    }

    /// Waits until the device has `n` ledger rows and returns them.
    pub async fn wait_ledger(&self, device: &str, n: usize) -> Vec<Row> {
        wait_for(
            &self.ingest,
            &format!("{n} ledger rows of {device}"),
            CASE_WAIT,
            async || {
                let rows = ledger(&self.db.client, device).await;
                if rows.len() >= n {
                    Ok(rows)
                } else {
                    Err(format!("{:?}", outcomes(&rows)))
                }
            },
        )
        .await
    }

    /// Asserts that each of `seqs` was refused for `reason` in some ack of the device.
    pub fn assert_refusals(&self, device: &str, reason: &str, seqs: &[u64]) {
        let a = self.mqtt.acks();
        let missing: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| !a.refused(device, EPOCH, reason, *s))
            .collect();
        assert!(
            missing.is_empty(),
            "{device}: seqs {missing:?} not listed as refused {reason:?} in any ack; acks: {:?}",
            a.of(device)
        );
    }

    /// Ingest is alive, never panicked, connected to the broker once (no reconnect loop: its
    /// log and its `rollcall_ingest_broker_connects_total` agree) and stayed under
    /// [`MAX_HWM_KIB`] of peak memory.
    pub async fn assert_healthy(&self) {
        if let Some(status) = self.ingest.exited() {
            panic!(
                "rollcall-ingest exited ({status}); it must survive every input\n{}",
                self.ingest.diagnose()
            );
        }
        let log = self.ingest.log();
        assert!(
            !log.contains("panicked"),
            "rollcall-ingest panicked\n{}",
            self.ingest.diagnose()
        );
        let in_log = self.ingest.connects_in_log();
        assert_eq!(
            in_log,
            1,
            "rollcall-ingest logged {in_log:?} `connected to broker` lines; expected 1 (a reconnect \
             loop re-reads the same message)\n{}",
            self.ingest.diagnose()
        );
        let text = self
            .ingest
            .metrics()
            .await
            .unwrap_or_else(|e| panic!("ingest /metrics: {e}\n{}", self.ingest.diagnose()));
        assert_eq!(
            sample(&text, CONNECTS),
            Some(1.0),
            "{CONNECTS} should be 1 after the flood; the metrics say:\n{}",
            text.lines()
                .filter(|l| l.contains("connect"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let hwm = self
            .ingest
            .vm_hwm_kib()
            .expect("VmHWM of the running ingest");
        assert!(
            hwm < MAX_HWM_KIB,
            "rollcall-ingest peak memory {} MiB, expected under {} MiB",
            hwm / 1024,
            MAX_HWM_KIB / 1024
        );
        eprintln!(
            "rollcall-ingest healthy: 1 broker connection, VmHWM {} MiB",
            hwm / 1024
        );
    }
}

/// Punches of a well-behaved device published every 200 ms (3 a batch, students cycling through
/// `rolls`) from their own client, with the time each was published.
pub struct GoodStream {
    device: String,
    rolls: Vec<String>,
    mqtt: Arc<Mqtt>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<(u64, DateTime<Utc>)>>,
}

impl GoodStream {
    pub async fn start(sys: &System, device: &str, rolls: &[&str]) -> GoodStream {
        let mqtt = Arc::new(Mqtt::connect(sys.broker.port(), &format!("good-{device}")).await);
        let stop = CancellationToken::new();
        let rolls: Vec<String> = rolls.iter().map(|r| r.to_string()).collect();
        let (m, s, d, r) = (mqtt.clone(), stop.clone(), device.to_owned(), rolls.clone());
        let task = tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut seq = 0u64;
            while !s.is_cancelled() {
                let now = Utc::now();
                let punches = (0..3)
                    .map(|_| {
                        seq += 1;
                        punch(seq, now, &r[seq as usize % r.len()])
                    })
                    .collect();
                m.publish(&topic(&d, Kind::Punches), batch(&d, punches).encode())
                    .await;
                sent.extend((seq - 2..=seq).map(|q| (q, now)));
                tokio::select! {
                    _ = s.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            sent
        });
        GoodStream {
            device: device.into(),
            rolls,
            mqtt,
            stop,
            task,
        }
    }

    /// Stops publishing and asserts the stream was recorded exactly once with bounded delay:
    /// every seq in the ledger once, each within [`GOOD_DELAY`] of its publish, one `recorded`
    /// punch and one attendance record per student (the rest `duplicate`), acks up to the last.
    pub async fn finish(self, sys: &System) {
        self.stop.cancel();
        let sent = self.task.await.unwrap();
        let n = sent.len() as u64;
        let dev = self.device.as_str();
        let rows = wait_for(
            &sys.ingest,
            &format!("good stream: all {n} punches of {dev} in the ledger"),
            GOOD_DELAY,
            async || {
                let rows = ledger(&sys.db.client, dev).await;
                if rows.len() as u64 >= n {
                    Ok(rows)
                } else {
                    let have: std::collections::BTreeSet<u64> =
                        rows.iter().map(|r| r.seq).collect();
                    let missing: Vec<u64> = (1..=n).filter(|s| !have.contains(s)).collect();
                    Err(format!(
                        "{} rows; missing seqs {:?}{}",
                        rows.len(),
                        &missing[..missing.len().min(20)],
                        if missing.len() > 20 { " ..." } else { "" }
                    ))
                }
            },
        )
        .await;
        assert_eq!(
            rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "good stream of {dev}: every seq in the ledger exactly once"
        );
        let late: Vec<(u64, f64)> = rows
            .iter()
            .zip(&sent)
            .map(|(r, (_, at))| (r.seq, (r.received_at - *at).as_seconds_f64()))
            .filter(|(_, d)| *d > GOOD_DELAY.as_secs_f64())
            .collect();
        assert!(
            late.is_empty(),
            "good stream of {dev}: punches in the ledger more than {GOOD_DELAY:?} after their \
             publish (seq, seconds): {late:?}"
        );
        let worst = rows
            .iter()
            .zip(&sent)
            .map(|(r, (_, at))| (r.received_at - *at).as_seconds_f64())
            .fold(0.0, f64::max);
        let bad: Vec<(u64, String, Option<String>)> = outcomes(&rows)
            .into_iter()
            .filter(|(_, o, r)| !(["recorded", "duplicate"].contains(&o.as_str()) && r.is_none()))
            .collect();
        assert!(
            bad.is_empty(),
            "good stream of {dev}: punches not recorded: {bad:?}"
        );
        for roll in &self.rolls {
            let recorded = rows
                .iter()
                .filter(|r| r.outcome == "recorded" && &r.subject == roll)
                .count();
            assert_eq!(recorded, 1, "good stream of {dev}: {roll} recorded once");
            assert_eq!(
                records(&sys.db.client, &sys.campus, roll).await.len(),
                1,
                "good stream of {dev}: one attendance record for {roll}"
            );
        }
        wait_for(
            &sys.ingest,
            &format!("good stream: {dev} acked up to {n}"),
            GOOD_DELAY,
            async || {
                let up = self.mqtt.acks().up_to(dev, EPOCH);
                if up == n {
                    Ok(())
                } else {
                    Err(format!("acked up to {up}"))
                }
            },
        )
        .await;
        eprintln!("good stream of {dev}: {n} punches recorded once, slowest {worst:.2} s");
    }
}

/// The rollcalld binary under test (`ROLLCALL_ROLLCALLD_BIN`, like `ROLLCALL_INGEST_BIN` for
/// ingest, runs the suite against another build, e.g. the code before a fix).
pub use rollcall_tests::binaries::rollcalld as rollcalld_binary;
