//! What IT sees and does about ZKTeco terminals (issue 14): `rollcall-ingest terminals` and
//! `rollcall-ingest terminals command ...` run as the real binary against PostgreSQL while the
//! service serves simulated terminals, and the terminal gauges on the service's metrics.

mod ingest_common;

use chrono::NaiveDateTime;
use ingest_common::service::{Ingest, config, start};
use ingest_common::*;
use rollcall_ingest::config::SessionClock;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::zkteco::{Dialect, Terminal};
use std::process::Output;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn wall(hms: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(&format!("2025-01-06 {hms}"), "%Y-%m-%d %H:%M:%S").unwrap()
}

/// The service with its ADMS endpoint on a free port, and the same configuration in a file
/// for the command line. Returns the service, `host:port` and the file.
async fn service(db: &Db, broker: &Mosquitto) -> (Ingest, String, tempfile::TempDir) {
    let port = rollcall_tests::free_port().unwrap();
    let toml = format!(
        "{}[adms]\nlisten = \"127.0.0.1:{port}\"\n",
        config(&db.url, &broker.url(), "adms-ops", false)
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ingest.toml"), &toml).unwrap();
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
    (ingest, addr, dir)
}

async fn register(db: &Db, serial: &str, enabled: bool) {
    ins(
        &db.client,
        "attendance_biometric_device",
        &[
            ("device_id", &format!("'{serial}'")),
            ("room", "'R101'"),
            ("is_enabled", if enabled { "true" } else { "false" }),
            ("status", "'active'"),
            ("device_type", "'fingerprint'"),
        ],
    )
    .await;
}

/// The binary, built (or found up to date) once per test process.
fn binary() -> &'static std::path::Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(rollcall_tests::binaries::ingest)
}

/// `rollcall-ingest terminals <args> -c <dir>/ingest.toml`.
async fn cli(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .arg("terminals")
        .args(args)
        .arg("-c")
        .arg(dir.path().join("ingest.toml"))
        .env("ROLLCALL_LOG", "warn")
        .output()
        .await
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn json(dir: &tempfile::TempDir, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = cli(dir, &a).await;
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

/// The listing's entry for `serial`.
fn entry<'a>(list: &'a serde_json::Value, serial: &str) -> &'a serde_json::Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|t| t["serial"] == serial)
        .unwrap_or_else(|| panic!("{serial} not listed: {list}"))
}

/// Waits until every `line` is in the service's metrics.
async fn metrics_show(ingest: &Ingest, lines: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = ingest.metrics.encode();
        if lines.iter().all(|l| text.lines().any(|t| t == *l)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics never showed {lines:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_terminals_and_queue_commands_the_terminal_runs_at_its_next_poll() {
    let db = ingest_common::db(Schema::Standalone).await.unwrap();
    let broker = Mosquitto::start().unwrap();
    campus(&db.client, SessionClock::WallclockAsUtc).await;
    register(&db, "ZK-OP", true).await;
    register(&db, "ZK-OFF", false).await;
    let (ingest, addr, dir) = service(&db, &broker).await;

    let mut t = Terminal::new("ZK-OP", &addr, Dialect::Classic);
    t.punch("R000", wall("09:01:00"), 1);
    t.punch("R001", wall("09:02:00"), 1);
    assert!(t.sync(WAIT).await, "terminal never synced");
    for serial in ["ZK-UNK", "ZK-OFF"] {
        let mut other = Terminal::new(serial, &addr, Dialect::Android);
        other.punch("R002", wall("09:03:00"), 1);
        assert!(!other.cycle().await.unwrap(), "{serial} must be refused");
        assert_eq!(other.pending(), 1);
    }

    // The listing: every terminal that called, admitted or refused.
    let list = json(&dir, &[]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(3), "{list}");
    let op = entry(&list, "ZK-OP");
    assert_eq!(op["state"], "admitted", "{op}");
    assert_eq!(
        (&op["registered"], &op["enabled"]),
        (&true.into(), &true.into())
    );
    assert_eq!(op["room"], "R101");
    assert_eq!(op["records"], 2);
    assert_eq!(
        op["attlog_stamp"], "2",
        "the terminal's cursor as committed"
    );
    assert_eq!(op["log_records"], 2, "from the heartbeat's INFO");
    assert_eq!(op["pending"].as_array().map(Vec::len), Some(0));
    assert_eq!(op["alerts"].as_array().map(Vec::len), Some(0));
    assert!(
        op["last_seen"].is_string() && op["last_ip"] == "127.0.0.1",
        "{op}"
    );
    let unk = entry(&list, "ZK-UNK");
    assert_eq!(
        (&unk["state"], &unk["registered"], &unk["records"]),
        (&"unregistered".into(), &false.into(), &0.into())
    );
    let off = entry(&list, "ZK-OFF");
    assert_eq!(
        (&off["state"], &off["registered"], &off["enabled"]),
        (&"disabled".into(), &true.into(), &false.into())
    );

    // Commands refused before anything is queued: a bad PIN, a range that ends before it
    // starts, a serial number nothing knows.
    let commands = "SELECT count(*) FROM rollcall.adms_command";
    for (args, says) in [
        (
            vec!["command", "ZK-OP", "user", "--pin", "R 1", "--name", "x"],
            "PIN",
        ),
        (
            vec![
                "command",
                "ZK-OP",
                "query",
                "--from",
                "2025-01-06 10:00",
                "--to",
                "2025-01-06 09:00",
            ],
            "ends before it starts",
        ),
        (
            vec!["command", "ZK-OP", "query", "--from", "yesterday"],
            "wall-clock",
        ),
        (vec!["command", "ZK-TYPO", "reboot"], "no terminal ZK-TYPO"),
    ] {
        let out = cli(&dir, &args).await;
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert_eq!(count(&db.client, commands).await, 0);

    // Three commands queued from the command line, in order.
    let q = json(
        &dir,
        &[
            "command",
            "ZK-OP",
            "query",
            "--from",
            "2025-01-06 09:00",
            "--to",
            "2025-01-06 09:01:30",
        ],
    )
    .await;
    assert_eq!(
        q["command"],
        "DATA QUERY ATTLOG StartTime=2025-01-06 09:00:00\tEndTime=2025-01-06 09:01:30"
    );
    let out = cli(
        &dir,
        &[
            "command", "ZK-OP", "user", "--pin", "R003", "--name", "Asha Rao", "--card", "0012345",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("queued #") && said.contains("for ZK-OP: DATA UPDATE USERINFO PIN=R003"),
        "{said}"
    );
    let r = json(&dir, &["command", "ZK-OP", "reboot"]).await;
    assert_eq!(r["command"], "REBOOT");
    assert!(r["queued_by"].as_str().unwrap().starts_with("cli:"), "{r}");
    let list = json(&dir, &["list"]).await;
    let pending: Vec<i64> = entry(&list, "ZK-OP")["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    let ids = vec![
        q["id"].as_i64().unwrap(),
        pending[1],
        r["id"].as_i64().unwrap(),
    ];
    assert_eq!(pending, ids);

    // The terminal picks them up at its next polls, in order, and reports each.
    for _ in 0..3 {
        t.cycle().await.unwrap();
    }
    assert!(t.sync(WAIT).await);
    assert_eq!(t.ran.iter().map(|r| r.id).collect::<Vec<_>>(), ids);
    assert_eq!(
        t.users,
        vec![("R003".into(), "Asha Rao".into(), "0012345".into())]
    );
    assert_eq!(t.reboots, 1);
    assert_eq!(
        count(
            &db.client,
            "SELECT count(*) FROM rollcall.ledger WHERE device_id = 'ZK-OP'"
        )
        .await,
        2,
        "the range query's re-sent record counts once"
    );
    assert_eq!(
        count(&db.client, "SELECT count(*) FROM rollcall.adms_command WHERE done_at IS NOT NULL AND return_code = 0").await,
        3
    );
    let list = json(&dir, &[]).await;
    assert_eq!(
        entry(&list, "ZK-OP")["pending"].as_array().map(Vec::len),
        Some(0)
    );

    // An alert, on the listing and on the gauges; the refused terminals on the gauges.
    db.client
        .execute(
            "INSERT INTO rollcall.adms_alert (serial, kind, detail, detected_at) VALUES ('ZK-OP', 'silent_loss', 'test', now())",
            &[],
        )
        .await
        .unwrap();
    metrics_show(
        &ingest,
        &[
            "rollcall_ingest_adms_terminals{state=\"admitted\"} 1",
            "rollcall_ingest_adms_terminals{state=\"unregistered\"} 1",
            "rollcall_ingest_adms_terminals{state=\"disabled\"} 1",
            "rollcall_ingest_adms_alerts_open{kind=\"silent_loss\"} 1",
            "rollcall_ingest_adms_alerts_open{kind=\"clock_jump\"} 0",
            "rollcall_ingest_adms_alerts_open{kind=\"other\"} 0",
        ],
    )
    .await;
    let out = cli(&dir, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    for want in [
        "ZK-OP: admitted (room R101)",
        "ZK-UNK: unregistered: refused, keeping its records",
        "ZK-OFF: disabled: refused, keeping its records",
        "stamps ATTLOG 2 OPERLOG -; 2 records stored, 2 in its log",
        "0 commands pending",
        "1 alerts open",
        "silent_loss: test",
    ] {
        assert!(listing.contains(want), "{want:?} not in:\n{listing}");
    }

    // The help carries the examples.
    let help = cli(&dir, &["--help"]).await;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Examples:") && help.contains("terminals command CQZ7232460113 reboot"),
        "{help}"
    );
    assert!(!ingest.task.is_finished());
    ingest.shutdown().await;
}
