//! rollcall-ingest end to end: a simulated gateway -> real Mosquitto -> ingest -> real
//! PostgreSQL, with acks coming back. Replays, two replicas; the faults are in ingest_faults.rs.

mod ingest_common;

use ingest_common::device::{Device, stream};
use ingest_common::service::{config, start};
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_ingest::metrics::Metrics;
use rollcall_protocol::{topic, v1};
use rollcall_tests::mosquitto::Mosquitto;
use std::time::Duration;

both_schemas!(punch_travels_from_device_to_record_and_the_ack_comes_back);

async fn punch_travels_from_device_to_record_and_the_ack_comes_back(db: Db) {
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let metrics_port = rollcall_tests::free_port().unwrap();
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
        last_refusal: None,
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
        text.contains("rollcall_ingest_punches_total{outcome=\"recorded\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("rollcall_ingest_dead_letters_total{reason=\"undecodable\"} 1"),
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
