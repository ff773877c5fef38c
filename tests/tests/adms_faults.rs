//! The rollcall-ingest binary killed -9 while ZKTeco terminals upload (issue 14): `OK` comes
//! only after COMMIT, so an upload cut anywhere is kept by the terminal and sent again, and the
//! natural key makes the second copy a replay.

mod ingest_common;

use chrono::NaiveDateTime;
use ingest_common::service::config;
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::zkteco::{Dialect, Terminal};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_mid_upload_loses_and_duplicates_nothing() {
    let bin = rollcall_tests::binaries::ingest();
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    for serial in ["ZK-K1", "ZK-K2"] {
        ins(
            &db.client,
            "attendance_biometric_device",
            &[
                ("device_id", &format!("'{serial}'")),
                ("room", "'R101'"),
                ("is_enabled", "true"),
                ("status", "'active'"),
                ("device_type", "'fingerprint'"),
            ],
        )
        .await;
    }
    let port = rollcall_tests::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[adms]\nlisten = \"127.0.0.1:{port}\"\n",
            config(&db.url, &broker.url(), "k", false)
        ),
    )
    .unwrap();
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
    let addr = format!("127.0.0.1:{port}");
    // Two terminals, 1,500 records each over the morning (PINs: the two enrolled students'
    // roll numbers and unknown ones), uploaded 50 per request.
    let base = NaiveDateTime::parse_from_str("2025-01-06 06:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
    let mut terminals = Vec::new();
    for (k, (serial, dialect)) in [("ZK-K1", Dialect::Classic), ("ZK-K2", Dialect::Android)]
        .into_iter()
        .enumerate()
    {
        let mut t = Terminal::new(serial, &addr, dialect);
        t.chunk = 50;
        for i in 0..1500i64 {
            let pin = match i % 3 {
                0 => "R000".to_string(),
                1 => "R001".to_string(),
                _ => format!("{}", 5000 + i),
            };
            t.punch(&pin, base + chrono::Duration::seconds(i * 7 + k as i64), 1);
        }
        terminals.push(t);
    }
    let mut child = spawn();
    let uploads: Vec<_> = terminals
        .into_iter()
        .map(|mut t| {
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                while tokio::time::Instant::now() < deadline {
                    // Connection refused while the service is down: wait as ErrorDelay says.
                    match t.cycle().await {
                        Ok(true) if t.pending() == 0 => break,
                        Ok(_) => {}
                        Err(_) => t.online = false,
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                t
            })
        })
        .collect();
    let ledger = "SELECT count(*) FROM rollcall.ledger WHERE device_id LIKE 'ZK-K%'";
    let mut progress = Vec::new();
    for _ in 0..3 {
        // Kill once uploads are under way.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let before = progress.last().copied().unwrap_or(0);
        while count(&db.client, ledger).await <= before + 100 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "uploads never progressed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        progress.push(count(&db.client, ledger).await);
        tokio::time::sleep(Duration::from_millis(300)).await;
        child = spawn();
    }
    let mut done = Vec::new();
    for u in uploads {
        done.push(u.await.unwrap());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        progress[2] < 3000,
        "the kills happened mid-upload: {progress:?}"
    );
    for t in &done {
        assert_eq!(t.pending(), 0, "{} still has records", t.serial);
        assert_eq!(t.lost, 0);
    }
    assert_eq!(count(&db.client, ledger).await, 3000, "every record, once");
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.adms_record WHERE serial LIKE 'ZK-K%'"
        )
        .await,
        3000
    );
    for serial in ["ZK-K1", "ZK-K2"] {
        let (contiguous, max): (i64, i64) = db
            .client
            .query_one(
                "SELECT contiguous_seq, max_seq FROM rollcall.device_cursor WHERE device_id = $1",
                &[&serial],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(
            (contiguous, max),
            (1500, 1500),
            "{serial}: seqs dense, no gap"
        );
    }
    // The first punch of each enrolled student in the session counts, once.
    for s in &c.students[..2] {
        assert_eq!(
            count(
                &db.client,
                &format!(
                    "SELECT count(*) FROM attendance_record WHERE session_id = {} AND student_id = '{s}'",
                    c.session
                )
            )
            .await,
            1
        );
    }
    let log = std::fs::read_to_string(dir.path().join("ingest.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}
