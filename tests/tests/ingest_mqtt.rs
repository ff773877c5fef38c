//! rollcall-ingest end to end: a simulated gateway -> real Mosquitto -> ingest -> real
//! PostgreSQL, with acks coming back. Faults: replays, two replicas, kill -9 of the ingest
//! binary mid-stream, PostgreSQL killed and restarted mid-stream.

mod ingest_common;

use ingest_common::device::{Device, stream};
use ingest_common::*;
use rollcall_ingest::config::{Config, SessionClock};
use rollcall_ingest::metrics::Metrics;
use rollcall_protocol::{topic, v1};
use rollcall_tests::mosquitto::Mosquitto;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn config(db_url: &str, broker: &str, node: &str, jobs: bool) -> String {
    format!(
        "node_name = \"{node}\"\n[database]\nurl = \"{db_url}\"\npool_size = 4\nschema_mode = \"existing\"\n\
         [mqtt]\nurl = \"{broker}\"\n[ingest]\nlinger_ms = 2\n\
         [jobs]\nenabled = {jobs}\nopen_close_every_s = 1\ngenerate_sessions_every_s = 0\nstatistics_every_s = 0\n\
         retention_every_s = 0\ndevice_health_every_s = 0\n"
    )
}

struct Ingest {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), rollcall_ingest::IngestError>>,
    metrics: Arc<Metrics>,
}

fn start(toml: &str) -> Ingest {
    let cfg = Config::from_toml(toml).unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let task = tokio::spawn(rollcall_ingest::run_with_metrics(
        cfg,
        metrics.clone(),
        stop.clone(),
    ));
    Ingest {
        stop,
        task,
        metrics,
    }
}

impl Ingest {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("graceful shutdown in time")
            .unwrap()
            .unwrap();
    }
}

both_schemas!(punch_travels_from_device_to_record_and_the_ack_comes_back);

async fn punch_travels_from_device_to_record_and_the_ack_comes_back(db: Db) {
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let metrics_port = rollcall_tests::mosquitto::free_port().unwrap();
    let toml = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        config(&db.url, &broker.url(), "a", false)
    );
    let ingest = start(&toml);
    let mut dev = Device::connect(broker.port(), DEVICE).await;
    let batch = v1::PunchBatch {
        device_id: DEVICE.into(),
        epoch: 5,
        punches: vec![
            punch(1, ist("09:01:00"), student(c.students[0])),
            punch(2, ist("09:09:00"), student(c.students[1])),
            punch(3, ist("09:02:00"), v1::Subject::UnknownCard([1; 32])),
        ],
    };
    assert_eq!(
        dev.deliver(
            std::slice::from_ref(&batch),
            Duration::from_secs(2),
            Duration::from_secs(30)
        )
        .await,
        3
    );
    assert_eq!(
        record(&db.client, c.session, c.students[0])
            .await
            .unwrap()
            .0,
        "present"
    );
    assert_eq!(
        record(&db.client, c.session, c.students[1])
            .await
            .unwrap()
            .0,
        "late"
    );
    // Garbage and a heartbeat on the device's own topics; a replay of the batch.
    dev.publish_raw(topic::Kind::Punches, b"\xffnot cbor".to_vec())
        .await;
    let status = v1::Status {
        device_id: DEVICE.into(),
        version: "rollcalld 0.1.0".into(),
        online: true,
        sent_at_ms: 0,
        uptime_s: 1,
        epoch: 5,
        journal_depth: 0,
        oldest_unacked_age_s: None,
        last_acked_seq: Some(3),
        readers: vec![],
        clock: v1::ClockState {
            ntp_synced: true,
            offset_ms: None,
            boot_id: uuid::Uuid::nil(),
            monotonic_ms: 0,
        },
        free_disk_bytes: None,
    };
    dev.publish_raw(topic::Kind::Status, status.encode()).await;
    dev.acked = 0;
    assert_eq!(
        dev.deliver(
            std::slice::from_ref(&batch),
            Duration::from_secs(2),
            Duration::from_secs(30)
        )
        .await,
        3,
        "replay acked again"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&db.client, "SELECT count(*) FROM rollcall.dead_letter").await < 1
        || count(&db.client, "SELECT count(*) FROM attendance_biometric_device WHERE firmware_version = 'rollcalld 0.1.0'").await < 1
    {
        assert!(std::time::Instant::now() < deadline, "dead letter and heartbeat not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.ledger").await,
        3
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_audit_log").await,
        2
    );
    let text = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", metrics_port))
            .await
            .unwrap();
        sock.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        sock.read_to_string(&mut body).await.unwrap();
        body
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("rollcall_ingest_punches_total{kind=\"recorded\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("rollcall_ingest_dead_letters_total{kind=\"undecodable\"} 1"),
        "{text}"
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_load_write_once_and_run_each_job_once() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let devices = ["gw-1", "gw-2", "gw-3"];
    for d in devices {
        ins(
            &db.client,
            "attendance_biometric_device",
            &[
                ("device_id", &format!("'{d}'")),
                ("room", "'R101'"),
                ("is_enabled", "true"),
                ("status", "'active'"),
                ("device_type", "'fingerprint'"),
            ],
        )
        .await;
    }
    let a = start(&config(&db.url, &broker.url(), "a", true));
    let b = start(&config(&db.url, &broker.url(), "b", true));
    tokio::time::sleep(Duration::from_millis(500)).await; // both subscribed
    let mut tasks = Vec::new();
    for d in devices {
        let (port, students) = (broker.port(), c.students.clone());
        tasks.push(tokio::spawn(async move {
            let mut dev = Device::connect(port, d).await;
            dev.deliver(
                &stream(d, 1, 20, 50, &students),
                Duration::from_secs(3),
                Duration::from_secs(60),
            )
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 1000);
    }
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.ledger").await,
        3000
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_record").await,
        2
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM attendance_audit_log WHERE entity_type = 'AttendanceRecord'"
        )
        .await,
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.ledger WHERE outcome = 'recorded'"
        )
        .await
    );
    let msgs = |m: &Metrics| {
        m.encode()
            .lines()
            .filter(|l| l.starts_with("rollcall_ingest_messages_total{kind=\"punches\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let (ma, mb) = (msgs(&a.metrics), msgs(&b.metrics));
    assert!(ma > 0 && mb > 0, "both replicas consumed: a={ma} b={mb}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let runs = |m: &Metrics| {
        m.encode()
            .lines()
            .filter(|l| l.contains("job=\"open_close\"") && l.contains("result=\"ok\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let (am, bm) = (a.metrics.clone(), b.metrics.clone());
    a.shutdown().await;
    b.shutdown().await;
    let (ra, rb) = (runs(&am), runs(&bm));
    let rows = count(
        &db.client,
        "SELECT count(*) FROM rollcall.job_run WHERE job = 'open_close'",
    )
    .await as u64;
    assert!(rows >= 3, "open_close ran every second: {rows}");
    assert_eq!(
        ra + rb,
        rows,
        "each occurrence ran on exactly one replica (a={ra}, b={rb})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_mid_stream_loses_and_duplicates_nothing() {
    let bin = ingest_binary();
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(&cfg, config(&db.url, &broker.url(), "k", false)).unwrap();
    let spawn = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("ingest.log"))
            .unwrap();
        std::process::Command::new(&bin)
            .args(["-c", cfg.to_str().unwrap(), "run"])
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let batches = stream(DEVICE, 77, 60, 100, &c.students);
    let mut dev = Device::connect(broker.port(), DEVICE).await;
    // The first batch, re-sent until acked, proves ingest is up and subscribed.
    assert_eq!(
        dev.deliver(
            &batches[..1],
            Duration::from_millis(500),
            Duration::from_secs(30)
        )
        .await,
        100
    );
    // The rest is published over ~1.5 s while ingest is killed -9 three times mid-stream.
    let (client, t) = dev.sender();
    let rest: Vec<Vec<u8>> = batches[1..].iter().map(|b| b.encode()).collect();
    let publisher = tokio::spawn(async move {
        for p in rest {
            client
                .publish(t.clone(), rumqttc::QoS::AtLeastOnce, false, p)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let mut progress = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        progress.push(count(&db.client, "SELECT count(*) FROM rollcall.ledger").await);
        child = spawn();
    }
    publisher.await.unwrap();
    assert!(
        progress[2] < 6000,
        "the kills happened mid-stream: {progress:?}"
    );
    let acked = dev
        .deliver(&batches, Duration::from_secs(2), Duration::from_secs(90))
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        acked,
        6000,
        "log:\n{}",
        std::fs::read_to_string(dir.path().join("ingest.log")).unwrap_or_default()
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.ledger").await,
        6000
    );
    assert_eq!(
        count(
            &db.client,
            "SELECT count(DISTINCT (device_id, epoch, seq)) FROM rollcall.ledger"
        )
        .await,
        6000
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_audit_log").await,
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.ledger WHERE outcome = 'recorded'"
        )
        .await
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_record").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_stream_loses_and_duplicates_nothing() {
    let mut db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let ingest = start(&config(&db.url, &broker.url(), "p", false));
    let batches = stream(DEVICE, 3, 40, 100, &c.students);
    let mut dev = Device::connect(broker.port(), DEVICE).await;
    let first = dev
        .deliver(
            &batches[..5],
            Duration::from_secs(2),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(first, 500);
    // PostgreSQL dies; the rest of the stream arrives while it is down; it comes back.
    db.pg.kill().unwrap();
    for b in &batches[5..] {
        dev.publish(b).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    db.pg.restart().unwrap();
    let acked = dev
        .deliver(&batches, Duration::from_secs(2), Duration::from_secs(90))
        .await;
    assert_eq!(acked, 4000);
    let check = connect(&db.url).await;
    assert_eq!(
        count(&check, "SELECT count(*) FROM rollcall.ledger").await,
        4000
    );
    assert_eq!(
        count(&check, "SELECT count(*) FROM attendance_audit_log").await,
        count(
            &check,
            "SELECT count(*) FROM rollcall.ledger WHERE outcome = 'recorded'"
        )
        .await
    );
    let retries: u64 = ingest
        .metrics
        .encode()
        .lines()
        .find(|l| l.starts_with("rollcall_ingest_db_retries_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(retries > 0, "the outage was met and retried");
    ingest.shutdown().await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_whole_messages_and_a_restart_finishes_the_stream() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let toml = config(&db.url, &broker.url(), "g", false);
    let ingest = start(&toml);
    let batches = stream(DEVICE, 8, 30, 100, &c.students);
    let mut dev = Device::connect(broker.port(), DEVICE).await;
    assert_eq!(
        dev.deliver(
            &batches[..1],
            Duration::from_millis(500),
            Duration::from_secs(30)
        )
        .await,
        100
    );
    for b in &batches[1..] {
        dev.publish(b).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    ingest.shutdown().await; // returns Ok only after the batch in flight is committed or abandoned
    let n = count(&db.client, "SELECT count(*) FROM rollcall.ledger").await;
    assert_eq!(n % 100, 0, "only whole messages are written: {n}");
    let ingest = start(&toml);
    assert_eq!(
        dev.deliver(&batches, Duration::from_secs(2), Duration::from_secs(60))
            .await,
        3000
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.ledger").await,
        3000
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_and_restarted_mid_stream_loses_and_duplicates_nothing() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let mut broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let ingest = start(&config(&db.url, &broker.url(), "b", false));
    let batches = stream(DEVICE, 4, 30, 100, &c.students);
    let mut dev = Device::connect(broker.port(), DEVICE).await;
    assert_eq!(
        dev.deliver(
            &batches[..3],
            Duration::from_millis(500),
            Duration::from_secs(30)
        )
        .await,
        300
    );
    for b in &batches[3..15] {
        dev.publish(b).await;
    }
    broker.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart().unwrap();
    // Both sides reconnect; the device re-sends whatever is not acked.
    assert_eq!(
        dev.deliver(&batches, Duration::from_secs(2), Duration::from_secs(90))
            .await,
        3000
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.ledger").await,
        3000
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM attendance_audit_log").await,
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.ledger WHERE outcome = 'recorded'"
        )
        .await
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_postgres_refuses_is_isolated_and_dead_lettered() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    // A poison row: the database refuses seq 666 (stands for any non-transient refusal).
    db.client
        .batch_execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN IF NEW.seq = 666 THEN RAISE EXCEPTION 'poison'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER poison BEFORE INSERT ON rollcall.ledger FOR EACH ROW EXECUTE FUNCTION poison();",
        )
        .await
        .unwrap();
    let ingest = start(&config(&db.url, &broker.url(), "x", false));
    let mut dev = Device::connect(broker.port(), DEVICE).await;
    let good = stream(DEVICE, 6, 1, 3, &c.students);
    let poison = v1::PunchBatch {
        device_id: DEVICE.into(),
        epoch: 6,
        punches: vec![punch(666, ist("09:01:00"), student(c.students[0]))],
    };
    assert_eq!(
        dev.deliver(&good, Duration::from_secs(2), Duration::from_secs(30))
            .await,
        3
    );
    dev.publish(&poison).await; // ingest is subscribed now
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(
        &db.client,
        "SELECT count(*) FROM rollcall.dead_letter WHERE reason = 'database_rejected'",
    )
    .await
        < 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "poison not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.ledger").await,
        3
    );
    ingest.shutdown().await;
}
