//! rollcall-ingest under faults, end to end with real Mosquitto and PostgreSQL: kill -9 of the
//! binary mid-stream, PostgreSQL killed (and down while the stream arrives), the broker killed,
//! graceful shutdown, and a message PostgreSQL refuses.

mod ingest_common;

use ingest_common::device::{Device, stream};
use ingest_common::service::{config, start};
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_protocol::v1;
use rollcall_tests::mosquitto::Mosquitto;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_mid_stream_loses_and_duplicates_nothing() {
    let bin = rollcall_tests::binaries::ingest();
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
