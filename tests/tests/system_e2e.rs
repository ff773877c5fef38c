//! The whole system, every part real and started by the test: simulated readers -> the rollcalld
//! binary (journal, uplink) -> Mosquitto -> the rollcall-ingest binary -> PostgreSQL, and the
//! ack back to the gateway, whose journal then drains. Each test runs on the CampsHub360 tables
//! ingest creates (standalone) and on ../shared/reference/campshub360-schema.sql when present.

mod ingest_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ingest_common::{Db, count, ins};
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Reply, Rollcalld, parse_reply};
use tokio_postgres::Client;

const DEVICE: &str = "room-101"; // GatewayOptions' default device id
const DRAIN: Duration = Duration::from_secs(60);

/// The seeded campus: room R101 with device `room-101`, a session open now in it (started a
/// minute ago, so a tap now is `present`), S001 and S002 enrolled in its course section (the
/// roster's student keys are roll numbers, which ingest resolves to `students_student.id`),
/// and S003 on the books but not tapped by anyone.
struct Campus {
    session: i64,
    students: BTreeMap<&'static str, uuid::Uuid>,
}

async fn seed(c: &Client) -> Campus {
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
    for roll in ["S001", "S002", "S003"] {
        let id = uuid::Uuid::now_v7();
        ins(
            c,
            "students_student",
            &[
                ("id", &format!("'{id}'")),
                ("roll_number", &format!("'{roll}'")),
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
        students.insert(roll, id);
    }
    ins(
        c,
        "attendance_biometric_device",
        &[
            ("device_id", &format!("'{DEVICE}'")),
            ("room", "'R101'"),
            ("is_enabled", "true"),
            ("status", "'active'"),
            ("device_type", "'fingerprint'"),
        ],
    )
    .await;
    let mut extra: Vec<(&str, String)> = Vec::new();
    // The real schema checks the academic period and faculty foreign keys at COMMIT.
    for (table, column) in [
        ("attendance_academicperiod", "academic_period_id"),
        ("faculty_faculty", "faculty_id"),
    ] {
        let id = uuid::Uuid::now_v7();
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
    // Ingest runs with campus time zone UTC, so wall clock as UTC (CampsHub360's way of storing
    // session times) and true UTC coincide.
    let mut given: Vec<(&str, &str)> = vec![
        ("course_section_id", &section),
        ("scheduled_date", "current_date"),
        (
            "start_datetime",
            "date_trunc('second', now()) - interval '1 minute'",
        ),
        (
            "end_datetime",
            "date_trunc('second', now()) + interval '1 hour'",
        ),
        ("room", "'R101'"),
        ("status", "'open'"),
    ];
    given.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
    let session = ins(c, "attendance_session", &given).await.parse().unwrap();
    Campus { session, students }
}

fn ingest_config(db_url: &str, broker_url: &str) -> String {
    format!(
        "node_name = \"e2e\"\n[database]\nurl = \"{db_url}\"\npool_size = 4\nschema_mode = \"existing\"\n\
         [mqtt]\nurl = \"{broker_url}\"\n[campus]\ntimezone = \"UTC\"\n[ingest]\nlinger_ms = 2\n\
         [attendance]\ndemo_devices = [\"{DEVICE}\"]\n[jobs]\nenabled = false\n"
    )
}

/// rollcall-ingest as a child process, restartable after kill -9.
struct Ingest {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Ingest {
    fn start(dir: &Path, db_url: &str, broker_url: &str) -> Ingest {
        let config = dir.join("ingest.toml");
        std::fs::write(&config, ingest_config(db_url, broker_url)).unwrap();
        let mut me = Ingest {
            bin: rollcall_tests::binaries::ingest(),
            config,
            log: dir.join("ingest.log"),
            child: None,
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(&self.bin)
                .args(["-c", self.config.to_str().unwrap(), "run"])
                .env("RUST_LOG", "warn")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting rollcall-ingest"),
        );
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until the gateway's journal says every punch it stored was acked and deleted.
async fn wait_drained(gw: &Rollcalld, ingest: &Ingest) -> (u64, u64, u64) {
    let deadline = Instant::now() + DRAIN;
    loop {
        let j = gw.journal().await.unwrap();
        if j.1 == j.0 && j.2 == 0 {
            return j;
        }
        assert!(
            Instant::now() < deadline,
            "journal not drained in {DRAIN:?}: (last_seq, acked, depth) = {j:?}\n\
             rollcalld log:\n{}\ningest log:\n{}",
            gw.log(),
            ingest.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(seq, subject, outcome)` of every ledger row of the device.
async fn ledger(c: &Client) -> Vec<(i64, String, String)> {
    c.query(
        "SELECT seq, subject, outcome FROM rollcall.ledger WHERE device_id = $1 ORDER BY seq",
        &[&DEVICE],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// Whether a ledger subject is the punch a tap's reply described (`student=S001` is `S001`;
/// `unknown-card=<first 6 bytes>` is `card:<all bytes>`).
fn same_subject(reply: &str, ledger: &str) -> bool {
    match (
        reply.strip_prefix("student="),
        reply.strip_prefix("unknown-card="),
    ) {
        (Some(s), _) => ledger == s,
        (_, Some(h)) => ledger.starts_with(&format!("card:{h}")),
        _ => reply == "unknown-finger" && ledger == "finger:unknown",
    }
}

async fn tap(gw: &Rollcalld, line: &str) -> Reply {
    let reply = gw.command(line).await.unwrap();
    parse_reply(&reply).unwrap_or_else(|| panic!("{line}: {reply}"))
}

async fn a_tap_becomes_one_attendance_record_and_is_acked_back(db: Db) {
    let campus = seed(&db.client).await;
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ingest = Ingest::start(dir.path(), &db.url, &broker.url());
    let config = GatewayOptions::new(broker.port())
        .write(dir.path())
        .unwrap();
    let gw = Rollcalld::start(&rollcall_tests::binaries::rollcalld(), &config)
        .await
        .unwrap();

    // S001 by finger (slot 1), S002 by card, S001 again by card (a duplicate for the session),
    // and a card that is not on the roster (journaled and forwarded all the same).
    let taps = [
        ("finger door-finger 1", "accepted", "student=S001"),
        ("card door-card 0000000002", "accepted", "student=S002"),
        ("card door-card 0000000001", "accepted", "student=S001"),
        ("card door-card 00DEADBEEF", "unknown", "unknown-card="),
    ];
    for (i, (line, outcome, subject)) in taps.into_iter().enumerate() {
        let r = tap(&gw, line).await;
        assert_eq!(r.outcome, outcome, "{line}: {r:?}");
        assert!(r.subject.starts_with(subject), "{line}: {r:?}");
        assert_eq!(r.seq, Some(i as u64 + 1), "{line}: {r:?}");
    }

    assert_eq!(
        wait_drained(&gw, &ingest).await,
        (4, 4, 0),
        "every punch acked back after COMMIT and deleted from the journal"
    );
    let rows = ledger(&db.client).await;
    let outcomes: Vec<(i64, &str, &str)> = rows
        .iter()
        .map(|(seq, subject, outcome)| {
            let subject = if subject.starts_with("card:") {
                "card:"
            } else {
                subject
            };
            (*seq, subject, outcome.as_str())
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (1, "S001", "recorded"),
            (2, "S002", "recorded"),
            (3, "S001", "duplicate"),
            (4, "card:", "unknown_credential"),
        ],
        "ingest log:\n{}",
        ingest.log()
    );
    let records = db
        .client
        .query(
            "SELECT student_id, mark::text, source::text FROM attendance_record
             WHERE session_id = $1 ORDER BY student_id",
            &[&campus.session],
        )
        .await
        .unwrap();
    let got: Vec<(uuid::Uuid, String, String)> = records
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut want = vec![
        (
            campus.students["S001"],
            "present".to_owned(),
            "biometric".to_owned(),
        ),
        (
            campus.students["S002"],
            "present".to_owned(),
            "rfid".to_owned(),
        ),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "one present record per tapped student, from its first punch"
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_record").await,
        2,
        "nothing for S003, who did not tap"
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_audit_log").await,
        2,
        "one audit row per record"
    );
}

/// A small xorshift generator: random kill moments, seed printed for a re-run.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("ROLLCALL_E2E_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos() as u64
                    | 1
            });
        eprintln!("ROLLCALL_E2E_SEED={seed}");
        Rng(seed)
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(lo + self.0 % (hi - lo))
    }
}

/// Card readers tapped at once in the kill test (group commits, several punches per batch).
const LANES: usize = 4;

/// The k-th tap of the stream, on lane `lane` (card reader `c<lane>`; lane 0 also owns the
/// finger reader): mostly cards never seen before (ledger outcome unknown_credential), with
/// S001 by card and by finger and S002 by card among them.
fn tap_line(lane: usize, k: u64) -> String {
    match k % 10 {
        0 => format!("card c{lane} 0000000001"),
        5 if lane == 0 => "finger door-finger 1".into(),
        7 => format!("card c{lane} 0000000002"),
        _ => format!("card c{lane} {:010X}", 0x10_0000 + k),
    }
}

async fn kill_9_of_both_sides_counts_every_punch_exactly_once(db: Db) {
    const CYCLES: usize = 8;
    let campus = seed(&db.client).await;
    let broker = Mosquitto::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut ingest = Ingest::start(dir.path(), &db.url, &broker.url());
    let mut opts = GatewayOptions::new(broker.port());
    opts.readers = Some(
        (0..LANES)
            .map(|r| format!("[[reader]]\nid = \"c{r}\"\nkind = \"simulated-card\"\n"))
            .chain(["[[reader]]\nid = \"door-finger\"\nkind = \"simulated-fingerprint\"\n".into()])
            .collect(),
    );
    let config = opts.write(dir.path()).unwrap();
    let bin = rollcall_tests::binaries::rollcalld();
    let mut rng = Rng::from_env_or_clock();
    let next = std::sync::atomic::AtomicU64::new(0);
    let mut accepted: BTreeMap<u64, String> = BTreeMap::new();
    let mut gw: Option<Rollcalld> = None;
    let (mut gw_kills, mut ingest_kills) = (0, 0);
    let mut ledger_at_ingest_kills = Vec::new();
    for cycle in 0..CYCLES {
        if gw.is_none() {
            gw = Some(Rollcalld::start(&bin, &config).await.unwrap());
        }
        let g = gw.as_ref().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Reply>();
        let lane = |lane: usize| {
            let (tx, next) = (tx.clone(), &next);
            async move {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let line = tap_line(lane, k);
                    match g.command(&line).await.ok().as_deref().and_then(parse_reply) {
                        Some(r) => {
                            let _ = tx.send(r);
                        }
                        None => return, // the gateway is gone
                    }
                }
            }
        };
        let tapping = async {
            tokio::join!(lane(0), lane(1), lane(2), lane(3));
        };
        let kill_after = rng.ms(150, 700);
        if cycle % 2 == 0 {
            // rollcall-ingest dies mid-stream (mid-transaction, or between COMMIT and the acks)
            // while the taps go on, and comes back after a moment.
            let down_for = rng.ms(0, 500);
            let killer = async {
                tokio::time::sleep(kill_after).await;
                ingest.kill9();
                ledger_at_ingest_kills
                    .push(count(&db.client, "SELECT count(*) FROM rollcall.ledger").await);
                tokio::time::sleep(down_for).await;
                ingest.spawn();
            };
            let (_, ()) = tokio::join!(
                tokio::time::timeout(kill_after + down_for + rng.ms(100, 400), tapping),
                killer
            );
            ingest_kills += 1;
        } else {
            // rollcalld dies mid-tap: fsync done or not, reply sent or not.
            let _ = tokio::time::timeout(kill_after, tapping).await;
            gw.take().unwrap().kill9();
            gw_kills += 1;
        }
        drop(tx);
        while let Some(r) = rx.recv().await {
            assert!(
                ["accepted", "unknown"].contains(&r.outcome.as_str()),
                "cycle {cycle}: {r:?}"
            );
            let seq = r.seq.expect("stored");
            assert!(
                accepted.insert(seq, r.subject.clone()).is_none(),
                "cycle {cycle}: seq {seq} handed out twice"
            );
        }
    }
    let gw = match gw {
        Some(g) => g,
        None => Rollcalld::start(&bin, &config).await.unwrap(),
    };
    let (last, _, _) = wait_drained(&gw, &ingest).await;
    eprintln!(
        "{gw_kills} rollcalld and {ingest_kills} rollcall-ingest kills: {} taps answered, \
         {last} journaled, ledger at the ingest kills {ledger_at_ingest_kills:?}",
        accepted.len()
    );
    assert!(accepted.len() >= 30, "too few taps: {}", accepted.len());
    assert!(
        ledger_at_ingest_kills
            .iter()
            .any(|&n| n > 0 && (n as u64) < last),
        "an ingest kill landed mid-stream: {ledger_at_ingest_kills:?} of {last}"
    );
    let max_answered = *accepted.keys().last().unwrap();
    assert!(max_answered <= last);

    // Every journaled seq is in the ledger exactly once, with the subject the tap was told.
    let rows = ledger(&db.client).await;
    assert_eq!(
        rows.iter().map(|r| r.0 as u64).collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "ledger seqs are 1..={last}, each once; ingest log:\n{}",
        ingest.log()
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM (SELECT 1 FROM rollcall.ledger GROUP BY device_id, epoch, seq HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(DISTINCT epoch) FROM rollcall.ledger"
        )
        .await,
        1,
        "one journal epoch through every rollcalld restart"
    );
    let by_seq: BTreeMap<u64, (&str, &str)> = rows
        .iter()
        .map(|(seq, subject, outcome)| (*seq as u64, (subject.as_str(), outcome.as_str())))
        .collect();
    for (seq, reply) in &accepted {
        let (subject, _) = by_seq[seq];
        assert!(
            same_subject(reply, subject),
            "seq {seq}: tap said {reply}, ledger has {subject}"
        );
    }
    for (seq, (subject, outcome)) in &by_seq {
        let want: &[&str] = if subject.starts_with("card:") {
            &["unknown_credential"]
        } else {
            &["recorded", "duplicate"]
        };
        assert!(want.contains(outcome), "seq {seq}: {subject} {outcome}");
    }

    // Exactly one record (and one recorded punch, one audit row) per tapped student.
    let tapped: std::collections::BTreeSet<&str> = by_seq
        .values()
        .map(|v| v.0)
        .filter(|s| !s.starts_with("card:"))
        .collect();
    assert_eq!(tapped, ["S001", "S002"].into(), "both students tapped");
    let recorded: Vec<String> = db
        .client
        .query(
            "SELECT subject FROM rollcall.ledger WHERE outcome = 'recorded' ORDER BY subject",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(recorded, ["S001", "S002"], "one recorded punch per student");
    let records: Vec<(uuid::Uuid, String)> = db
        .client
        .query(
            "SELECT student_id, mark::text FROM attendance_record WHERE session_id = $1 ORDER BY student_id",
            &[&campus.session],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut want = vec![
        (campus.students["S001"], "present".to_owned()),
        (campus.students["S002"], "present".to_owned()),
    ];
    want.sort();
    assert_eq!(records, want);
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_record").await,
        2
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_audit_log").await,
        2
    );
}

both_schemas!(
    a_tap_becomes_one_attendance_record_and_is_acked_back,
    kill_9_of_both_sides_counts_every_punch_exactly_once,
);
