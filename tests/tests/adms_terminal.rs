//! ZKTeco PUSH terminals (simulated at the protocol level, `rollcall_tests::zkteco`) against the
//! real rollcall-ingest service and a real PostgreSQL (issue 14).

mod ingest_common;

use chrono::{NaiveDateTime, Utc};
use ingest_common::service::{Ingest, config, start};
use ingest_common::*;
use rollcall_ingest::adms::{Command, store::queue_command};
use rollcall_ingest::config::SessionClock;
use rollcall_protocol::v1;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::pki::Pki;
use rollcall_tests::zkteco::{Dialect, Terminal};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Campus wall-clock 2025-01-06 `hms` as the terminal writes it.
fn wall(hms: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(&format!("2025-01-06 {hms}"), "%Y-%m-%d %H:%M:%S").unwrap()
}

/// The service with its ADMS endpoint on a free port; returns it and `host:port`.
async fn service(db: &Db, broker: &Mosquitto) -> (Ingest, String) {
    service_with(db, broker, "").await
}

/// [`service`] with more `[adms]` lines (`tls_cert = ...`).
async fn service_with(db: &Db, broker: &Mosquitto, adms: &str) -> (Ingest, String) {
    let port = rollcall_tests::free_port().unwrap();
    let toml = format!(
        "{}[adms]\nlisten = \"127.0.0.1:{port}\"\nmax_body = 65536\n{adms}",
        config(&db.url, &broker.url(), "adms", false)
    );
    let ingest = start(&toml);
    let addr = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ADMS endpoint never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (ingest, addr)
}

async fn register(db: &Db, serial: &str, room: &str) {
    ins(
        &db.client,
        "attendance_biometric_device",
        &[
            ("device_id", &format!("'{serial}'")),
            ("room", &format!("'{room}'")),
            ("is_enabled", "true"),
            ("status", "'active'"),
            ("device_type", "'fingerprint'"),
        ],
    )
    .await;
}

async fn n(db: &Db, sql: &str) -> i64 {
    count(&db.client, sql).await
}

/// `(outcome, session, mark, record mark, record marked_at)` of a ledger row.
type Resolved = (
    String,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<Utc>>,
);

async fn resolved(db: &Db, device: &str, student: uuid::Uuid) -> Vec<Resolved> {
    db.client
        .query(
            "SELECT l.outcome, l.session_id, l.mark, r.mark::text, r.marked_at FROM rollcall.ledger l
             LEFT JOIN attendance_record r ON r.session_id = l.session_id AND r.student_id = l.student_id
             WHERE l.device_id = $1 AND l.student_id = $2 ORDER BY l.effective_at",
            &[&device, &student],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_and_gateway_punches_in_one_room_and_session_resolve_identically() {
    let mut db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    register(&db, "ZK-R101", "R101").await;
    let (ingest, addr) = service(&db, &broker).await;

    // The gateway in R101: S0 late at 09:20, S2 (not enrolled) at 09:03, an unknown student.
    write(
        &mut db.client,
        &[env(
            DEVICE,
            1,
            vec![
                punch(1, ist("09:20:00"), student(c.students[0])),
                punch(2, ist("09:03:00"), student(c.students[2])),
                punch(3, ist("09:04:00"), v1::Subject::Student("R999".into())),
                punch(4, ist("09:40:00"), student(c.students[0])),
            ],
        )],
        SessionClock::WallclockAsUtc,
    )
    .await;
    // The terminal in R101, same times: S1 (PIN = roll number R001), S2 (R002), PIN 9999.
    let mut t = Terminal::new("ZK-R101", &addr, Dialect::Classic);
    t.punch("R001", wall("09:20:00"), 1);
    t.punch("R002", wall("09:03:00"), 4);
    t.punch("9999", wall("09:04:00"), 15);
    t.punch("R001", wall("09:40:00"), 1);
    assert!(t.sync(WAIT).await, "terminal never synced");

    let gw0 = resolved(&db, DEVICE, c.students[0]).await;
    let zk1 = resolved(&db, "ZK-R101", c.students[1]).await;
    assert_eq!(gw0.len(), 2);
    assert_eq!(gw0, zk1, "gateway S0 vs terminal S1");
    assert_eq!(gw0[0].0, "recorded");
    assert_eq!(gw0[0].1, Some(c.session));
    assert_eq!(gw0[0].3.as_deref(), Some("late"));
    assert_eq!(gw0[1].0, "duplicate");
    let gw2 = resolved(&db, DEVICE, c.students[2]).await;
    let zk2 = resolved(&db, "ZK-R101", c.students[2]).await;
    assert_eq!(
        gw2.iter().map(|r| &r.0).collect::<Vec<_>>(),
        vec!["not_enrolled"]
    );
    assert_eq!(
        zk2.iter().map(|r| &r.0).collect::<Vec<_>>(),
        vec!["not_enrolled"]
    );
    let unknown = |d: &str| {
        format!(
            "SELECT count(*) FROM rollcall.ledger WHERE device_id = '{d}' AND outcome = 'unknown_credential'"
        )
    };
    assert_eq!(n(&db, &unknown(DEVICE)).await, 1);
    assert_eq!(n(&db, &unknown("ZK-R101")).await, 1);
    // The record names the terminal; an audit row like the gateway's.
    let (src, dev): (String, String) = db
        .client
        .query_one(
            "SELECT source::text, device_id::text FROM attendance_record WHERE session_id = $1 AND student_id = $2",
            &[&c.session, &c.students[1]],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((src.as_str(), dev.as_str()), ("biometric", "ZK-R101"));
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM attendance_audit_log WHERE action = 'create'"
        )
        .await,
        2
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_serial_records_wait_and_arrive_once_registered() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    let c = campus(&db.client, SessionClock::WallclockAsUtc).await;
    let (ingest, addr) = service(&db, &broker).await;
    let mut t = Terminal::new("ZK-NEW", &addr, Dialect::Android);
    t.punch("R000", wall("09:01:00"), 1);
    t.punch("R001", wall("09:02:00"), 1);
    for _ in 0..4 {
        t.cycle().await.unwrap();
        // A POST too, as a terminal that kept its session would.
        t.online = true;
        t.upload().await.unwrap();
        t.online = false;
    }
    assert_eq!(t.pending(), 2, "refused records are kept on the terminal");
    assert!(t.refusals >= 8, "{}", t.refusals);
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM rollcall.ledger WHERE device_id = 'ZK-NEW'"
        )
        .await,
        0
    );
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM rollcall.dead_letter WHERE device_id = 'ZK-NEW'"
        )
        .await,
        1,
        "one dead letter, not one per retry"
    );
    assert!(
        n(&db, "SELECT messages FROM rollcall.refused_device WHERE device_id = 'ZK-NEW' AND kind = 'adms'").await >= 8
    );
    register(&db, "ZK-NEW", "R101").await;
    assert!(t.sync(WAIT).await, "registered terminal never synced");
    assert_eq!(
        n(&db, "SELECT count(*) FROM rollcall.ledger WHERE device_id = 'ZK-NEW' AND outcome = 'recorded'").await,
        2
    );
    assert_eq!(
        record(&db.client, c.session, c.students[0])
            .await
            .unwrap()
            .0,
        "present"
    );
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM rollcall.dead_letter WHERE device_id = 'ZK-NEW'"
        )
        .await,
        1
    );
    assert_eq!(
        n(&db, "SELECT count(*) FROM rollcall.adms_terminal WHERE serial = 'ZK-NEW' AND refused IS NULL").await,
        1
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_after_stamp_reset_reboot_and_range_query_count_once_and_commands_report() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    register(&db, "ZK-A", "R101").await;
    let (ingest, addr) = service(&db, &broker).await;
    let mut t = Terminal::new("ZK-A", &addr, Dialect::Android);
    t.chunk = 2;
    for (i, pin) in ["R000", "R001", "R002", "R000", "R001"].iter().enumerate() {
        t.punch(pin, wall(&format!("09:0{i}:00")), 1);
    }
    assert!(t.sync(WAIT).await);
    let ledger = "SELECT count(*) FROM rollcall.ledger WHERE device_id = 'ZK-A'";
    assert_eq!(n(&db, ledger).await, 5);
    // Stamp reset: everything again.
    t.reset_stamp();
    assert_eq!(t.pending(), 5);
    assert!(t.sync(WAIT).await);
    // Reboot: the server's stamp says where it was, nothing is re-sent.
    t.reboot();
    t.reset_stamp();
    t.handshake().await.unwrap();
    assert_eq!(t.pending(), 0, "cursor {} from the server", t.cursor);
    // Commands: a range query re-sends 09:00-09:02, a user is pushed, the terminal reboots.
    let now = Utc::now();
    let q = Command::QueryAttLog {
        from: wall("09:00:00"),
        to: wall("09:02:00"),
    };
    let u = Command::PushUser {
        pin: "R003".into(),
        name: "Asha Rao".into(),
        card: "0012345".into(),
    };
    for cmd in [&q, &u, &Command::Reboot] {
        queue_command(&db.client, "ZK-A", cmd, "test", now)
            .await
            .unwrap();
    }
    for _ in 0..3 {
        t.cycle().await.unwrap();
    }
    assert!(t.sync(WAIT).await);
    assert_eq!(t.ran.len(), 3, "{:?}", t.ran);
    assert_eq!(
        t.users,
        vec![("R003".into(), "Asha Rao".into(), "0012345".into())]
    );
    assert_eq!(t.reboots, 2);
    assert_eq!(
        n(&db, "SELECT count(*) FROM rollcall.adms_command WHERE serial = 'ZK-A' AND done_at IS NOT NULL AND return_code = 0").await,
        3
    );
    assert_eq!(n(&db, ledger).await, 5, "nothing counted twice");
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM rollcall.adms_record WHERE serial = 'ZK-A'"
        )
        .await,
        5
    );
    assert_eq!(
        n(
            &db,
            "SELECT contiguous_seq FROM rollcall.device_cursor WHERE device_id = 'ZK-A'"
        )
        .await,
        5
    );
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_overflow_while_the_centre_is_away_raises_a_silent_loss_alert() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    register(&db, "ZK-FULL", "R101").await;
    let (ingest, addr) = service(&db, &broker).await;
    let mut t = Terminal::new("ZK-FULL", &addr, Dialect::Classic);
    t.capacity = 10;
    for i in 0..5 {
        t.punch("R000", wall(&format!("08:0{i}:00")), 1);
    }
    assert!(t.sync(WAIT).await);
    let alerts = "SELECT count(*) FROM rollcall.adms_alert WHERE serial = 'ZK-FULL' AND kind = 'silent_loss'";
    // In contact, a full log deleting its oldest (already stored) records is no loss.
    for i in 0..8 {
        t.punch("R001", wall(&format!("08:1{i}:00")), 1);
        assert!(t.sync(WAIT).await);
    }
    assert_eq!((t.lost, n(&db, alerts).await), (0, 0));
    // The centre unreachable: 12 punches into a log of 10.
    for i in 0..12 {
        t.punch("R002", wall(&format!("08:{:02}:00", 30 + i)), 1);
    }
    assert_eq!(t.lost, 2);
    assert!(t.sync(WAIT).await);
    assert_eq!(n(&db, alerts).await, 1);
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jump_is_flagged_and_the_punch_held_not_rewritten() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    register(&db, "ZK-CLK", "R101").await;
    let (ingest, addr) = service(&db, &broker).await;
    let mut t = Terminal::new("ZK-CLK", &addr, Dialect::Classic);
    let local = || {
        Utc::now()
            .with_timezone(&chrono_tz::Asia::Kolkata)
            .naive_local()
    };
    assert!(t.sync(WAIT).await);
    t.punch("R000", local(), 1);
    assert!(t.sync(WAIT).await);
    t.punch("R001", local() + chrono::Duration::hours(1), 1);
    assert!(t.sync(WAIT).await);
    assert_eq!(
        n(&db, "SELECT count(*) FROM rollcall.adms_alert WHERE serial = 'ZK-CLK' AND kind = 'clock_jump'").await,
        1
    );
    let (outcome, reason): (String, Option<String>) = db
        .client
        .query_one(
            "SELECT outcome, reason FROM rollcall.ledger WHERE device_id = 'ZK-CLK' ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        (outcome.as_str(), reason.as_deref()),
        ("held", Some("clock_ahead"))
    );
    let offset: i64 = n(
        &db,
        "SELECT clock_offset_s FROM rollcall.adms_terminal WHERE serial = 'ZK-CLK'",
    )
    .await;
    assert!((3500..3700).contains(&offset), "{offset}");
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_answered_and_good_records_still_flow() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    register(&db, "ZK-H", "R101").await;
    let (ingest, addr) = service(&db, &broker).await;
    let t = Terminal::new("ZK-H", &addr, Dialect::Classic);
    let status = |r: std::io::Result<(u16, String)>| r.unwrap().0;
    assert_eq!(
        status(t.request("GET", "/iclock/cdata?options=all", b"").await),
        400
    );
    assert_eq!(
        status(t.request("GET", "/iclock/getrequest?SN=a%0Ab", b"").await),
        400
    );
    assert_eq!(status(t.request("GET", "/etc/passwd", b"").await), 404);
    let big = vec![b'1'; 70_000];
    assert_eq!(
        status(
            t.request("POST", "/iclock/cdata?SN=ZK-H&table=ATTLOG", &big)
                .await
        ),
        413
    );
    // Garbage lines are dead-lettered once; the good line in the same body is stored.
    let body =
        b"\xff\xfe\x00\x1b[2J\n1\t2025-13-01 99:00:00\nR000\t2025-01-06 09:01:00\t0\t1\t0\t0\t0\n";
    let r = t
        .request("POST", "/iclock/cdata?SN=ZK-H&table=ATTLOG", body)
        .await
        .unwrap();
    assert_eq!(r, (200, "OK: 3".into()));
    assert_eq!(
        n(&db, "SELECT count(*) FROM rollcall.dead_letter WHERE device_id = 'ZK-H' AND reason = 'undecodable'").await,
        1
    );
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM rollcall.ledger WHERE device_id = 'ZK-H' AND outcome = 'recorded'"
        )
        .await,
        1
    );
    // A half-sent request and a silent connection do not stop the service.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"POST /iclock/cdata?SN=ZK-H&table=ATTLOG HTTP/1.1\r\nContent-Length: 100\r\n\r\nR0",
    )
    .await
    .unwrap();
    drop(s);
    let _idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut good = Terminal::new("ZK-H", &addr, Dialect::Classic);
    good.punch("R001", wall("09:02:00"), 1);
    assert!(good.sync(WAIT).await);
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM rollcall.ledger WHERE device_id = 'ZK-H'"
        )
        .await,
        2
    );
    assert!(!ingest.task.is_finished());
    ingest.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_uploads_over_https_once_and_plain_http_to_the_https_port_fails_cleanly() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    register(&db, "ZK-TLS", "R101").await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki")).unwrap();
    let (cert, key) = pki.server();
    let (ingest, addr) = service_with(
        &db,
        &broker,
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .await;
    let ledger = "SELECT count(*) FROM rollcall.ledger WHERE device_id = 'ZK-TLS'";

    // Over HTTPS: handshake, batched uploads, poll; then everything again after a stamp reset.
    let mut t = Terminal::new("ZK-TLS", &addr, Dialect::Classic)
        .with_tls(&pki.ca())
        .unwrap();
    t.chunk = 2;
    for (i, pin) in ["R000", "R001", "R002", "R000", "R001"].iter().enumerate() {
        t.punch(pin, wall(&format!("09:0{i}:00")), 1);
    }
    assert!(t.sync(WAIT).await, "HTTPS terminal never synced");
    assert_eq!(t.upload_times.len(), 3, "three batches answered OK");
    assert_eq!(n(&db, ledger).await, 5);
    t.reset_stamp();
    assert!(t.sync(WAIT).await);
    assert_eq!(n(&db, ledger).await, 5, "re-sent over HTTPS, counted once");
    assert_eq!(
        n(
            &db,
            "SELECT count(*) FROM rollcall.adms_record WHERE serial = 'ZK-TLS'"
        )
        .await,
        5
    );

    // Plain HTTP to the HTTPS port, while the HTTPS terminal uploads: the plain request gets
    // no HTTP answer and stores nothing; the other upload is not disturbed.
    let mut plain = Terminal::new("ZK-TLS", &addr, Dialect::Classic);
    plain.punch("R002", wall("09:30:00"), 1);
    t.punch("R002", wall("09:20:00"), 1);
    let started = std::time::Instant::now();
    let (plain_reply, synced) = tokio::join!(plain.handshake(), t.sync(WAIT));
    assert!(synced, "the HTTPS terminal is not disturbed");
    match &plain_reply {
        Err(_) => {}
        Ok((status, _)) => assert_ne!(*status, 200, "{plain_reply:?}"),
    }
    assert!(!plain.online);
    let body = b"R002 2025-01-06 09:30:00 0 1 0 0 0\n";
    let r = plain
        .request("POST", "/iclock/cdata?SN=ZK-TLS&table=ATTLOG&Stamp=9", body)
        .await;
    assert!(
        r.as_ref().map_or(true, |(status, _)| *status != 200),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "plain requests refused at once, not timed out: {:?}",
        started.elapsed()
    );
    // A terminal that does not trust the server's certificate does not get through either.
    let other = Pki::create(&dir.path().join("other")).unwrap();
    let mut stranger = Terminal::new("ZK-TLS", &addr, Dialect::Classic)
        .with_tls(&other.ca())
        .unwrap();
    assert!(stranger.handshake().await.is_err());

    assert_eq!(n(&db, ledger).await, 6);
    assert_eq!(
        n(&db, "SELECT count(*) FROM rollcall.adms_record WHERE serial = 'ZK-TLS' AND local_time = '2025-01-06 09:30:00'").await,
        0
    );
    // And HTTPS still works afterwards.
    t.punch("R001", wall("09:21:00"), 1);
    assert!(t.sync(WAIT).await);
    assert_eq!(n(&db, ledger).await, 7);
    assert!(!ingest.task.is_finished());
    ingest.shutdown().await;
}
