//! Issue 10's promise, every part real: a campus CA by `rollcall ca init`, certificates by
//! `rollcall ca issue`, the gateway's installation by `rollcall provision`, its row by `rollcall
//! device register` in a real PostgreSQL (standalone schema), ingest with its certificate, a TLS
//! Mosquitto that requires client certificates and reads the CA's CRL. The provisioned rollcalld
//! connects with its new certificate and a tap reaches the ledger; a revoked certificate is
//! refused once the broker has read the CRL, while a valid one still connects.

mod ca_common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ca_common::{Ca, TlsBroker, ok, rollcall};
use rollcall_tests::postgres::Postgres;
use rollcall_tests::rollcalld::Rollcalld;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Transport};

const DEVICE: &str = "room-101";

/// rollcall-ingest as a child process, killed when dropped.
struct Ingest {
    child: Child,
    log: std::path::PathBuf,
}

impl Ingest {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ingest_config(dir: &Path, db_url: &str, broker: &TlsBroker, ca: &Ca) -> std::path::PathBuf {
    let (cert, key) = ca.issued("rollcall-ingest");
    let path = dir.join("ingest.toml");
    std::fs::write(
        &path,
        format!(
            "node_name = \"provisioning-e2e\"\n[database]\nurl = \"{db_url}\"\npool_size = 2\n\
             schema_mode = \"standalone\"\n[mqtt]\nurl = \"mqtts://127.0.0.1:{port}\"\n\
             ca_file = \"{ca}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n\
             [campus]\ntimezone = \"UTC\"\n[ingest]\nlinger_ms = 2\n\
             [attendance]\ndemo_devices = [\"{DEVICE}\"]\n[jobs]\nenabled = false\n",
            port = broker.port,
            ca = ca.ca_pem().display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    path
}

fn start_ingest(config: &Path, dir: &Path) -> Ingest {
    let bin = rollcall_tests::binaries::ingest();
    // Tables first (standalone mode creates the CampsHub360 subset), so registration finds them.
    let out = Command::new(&bin)
        .args(["-c", config.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rollcall-ingest migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.join("ingest.log");
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(&bin)
        .args(["-c", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "warn")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    Ingest { child, log }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioned_and_registered_gateway_connects_with_its_new_certificate_and_its_tap_reaches_postgresql()
 {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path());
    ok(&["ca", "issue", DEVICE, "--dir", ca.dir()]);
    let broker = TlsBroker::start(&ca);
    let pg = Postgres::start().expect("start postgres");
    let db_url = pg.create_database("campus").unwrap();
    let ingest_toml = ingest_config(tmp.path(), &db_url, &broker, &ca);
    let ingest = start_ingest(&ingest_toml, tmp.path());

    let out = ok(&[
        "device",
        "register",
        DEVICE,
        "--room",
        "R101",
        "--name",
        "Room 101 door",
        "--ingest-config",
        ingest_toml.to_str().unwrap(),
    ]);
    assert!(out.contains("registered room-101"), "{out}");
    // Registering again updates the same row.
    let out = ok(&[
        "device",
        "register",
        DEVICE,
        "--room",
        "R101",
        "--location",
        "Block A",
        "--ingest-config",
        ingest_toml.to_str().unwrap(),
    ]);
    assert!(out.contains("updated room-101"), "{out}");
    let client = connect(&db_url).await;
    let row = client
        .query_one(
            "SELECT room, device_type, status, is_enabled, host(ip_address), port, location,
                    firmware_version, api_key, auto_sync, sync_interval_minutes,
                    created_at <= updated_at, device_name
             FROM attendance_biometric_device WHERE device_id = $1",
            &[&DEVICE],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "R101");
    assert_eq!(row.get::<_, String>(1), "fingerprint");
    assert_eq!(row.get::<_, String>(2), "active");
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, String>(4), "0.0.0.0");
    assert_eq!(row.get::<_, i32>(5), 0);
    assert_eq!(row.get::<_, String>(6), "Block A");
    assert_eq!(row.get::<_, String>(7), "");
    assert_eq!(row.get::<_, String>(8), "");
    assert!(!row.get::<_, bool>(9));
    assert_eq!(row.get::<_, i32>(10), 5);
    assert!(row.get::<_, bool>(11));
    assert_eq!(
        row.get::<_, String>(12),
        "Room 101 door",
        "an update keeps the name unless given"
    );
    let list = ok(&[
        "device",
        "list",
        "--ingest-config",
        ingest_toml.to_str().unwrap(),
    ]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(DEVICE) && l.contains("R101") && l.contains("yes")),
        "{list}"
    );

    let gw = tmp.path().join("gw");
    let rollcalld = rollcall_tests::binaries::rollcalld();
    let out = ok(&[
        "provision",
        DEVICE,
        "--site",
        "north",
        "--room",
        "R101",
        "--broker",
        &format!("mqtts://127.0.0.1:{}", broker.port),
        "--ca-dir",
        ca.dir(),
        "--reader",
        "door-card:simulated-card",
        "--out",
        gw.join("etc").to_str().unwrap(),
        "--state-dir",
        gw.join("state").to_str().unwrap(),
        "--metrics-listen",
        "",
        "--rollcalld",
        rollcalld.to_str().unwrap(),
    ]);
    assert!(out.contains("validate --config: valid"), "{out}");
    assert!(
        out.contains("from the CA in"),
        "provision took the certificate `ca issue` made: {out}"
    );
    let config = gw.join("etc").join("rollcalld.toml");
    let g = Rollcalld::start_at(
        &rollcalld,
        &config,
        &gw.join("state").join("control.sock"),
        &[],
    )
    .await
    .unwrap();
    let reply = g.command("card door-card 00DEADBEEF").await.unwrap();
    assert!(reply.starts_with("unknown 1 "), "{reply}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (last, acked, depth) = g.journal().await.unwrap();
        if (last, acked, depth) == (1, 1, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tap was not acked over TLS: {:?}\nrollcalld:\n{}\ningest:\n{}\nbroker:\n{}",
            (last, acked, depth),
            g.log(),
            ingest.log(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = client
        .query(
            "SELECT seq, outcome FROM rollcall.ledger WHERE device_id = $1",
            &[&DEVICE],
        )
        .await
        .unwrap();
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        [(1, "unknown_credential".to_owned())],
        "the card nobody holds is in the ledger, counted once"
    );

    // Disabled at the centre: the row says so, and enabling restores it.
    let cfg = ingest_toml.to_str().unwrap();
    ok(&["device", "disable", DEVICE, "--ingest-config", cfg]);
    let enabled: bool = client
        .query_one(
            "SELECT is_enabled FROM attendance_biometric_device WHERE device_id = $1",
            &[&DEVICE],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!enabled);
    ok(&["device", "enable", DEVICE, "--ingest-config", cfg]);
    let out = rollcall(&["device", "enable", "room-999", "--ingest-config", cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not registered") && err.contains("rollcall device register room-999"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_by_mosquitto_once_the_crl_is_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::create(tmp.path());
    ok(&["ca", "issue", "room-101", "--dir", ca.dir()]);
    ok(&["ca", "issue", "room-102", "--dir", ca.dir()]);
    let mut broker = TlsBroker::start(&ca);
    assert!(
        connects(&ca, "room-102", broker.port).await,
        "before revocation room-102 connects (the empty CRL from ca init locks nobody out): {}",
        broker.log()
    );

    let out = ok(&[
        "ca",
        "revoke",
        "room-102",
        "--reason",
        "key-compromise",
        "--dir",
        ca.dir(),
    ]);
    assert!(
        out.contains("crlfile"),
        "revoke says how the broker reads the CRL: {out}"
    );
    let list = ok(&["ca", "list", "--dir", ca.dir()]);
    assert!(
        list.lines().any(|l| l.starts_with("room-102")
            && l.contains("revoked")
            && l.contains("key-compromise")),
        "{list}"
    );
    broker.restart();
    assert!(
        !connects(&ca, "room-102", broker.port).await,
        "the revoked certificate is refused: {}",
        broker.log()
    );
    assert!(
        connects(&ca, "room-101", broker.port).await,
        "a valid certificate still connects: {}",
        broker.log()
    );

    // Renewal gives the same name a new serial and a certificate that connects.
    let out = ok(&["ca", "renew", "room-102", "--new-key", "--dir", ca.dir()]);
    assert!(out.contains("renewed room-102"), "{out}");
    assert!(
        connects(&ca, "room-102", broker.port).await,
        "the renewed certificate (new serial, not on the CRL) connects: {}",
        broker.log()
    );
}

/// Whether an MQTT client with `name`'s certificate gets a CONNACK within 10 s.
async fn connects(ca: &Ca, name: &str, port: u16) -> bool {
    let (cert, key) = ca.issued(name);
    let mut o = MqttOptions::new(format!("probe-{name}"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(Transport::tls(
        std::fs::read(ca.ca_pem()).unwrap(),
        Some((std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())),
        None,
    ));
    let (client, mut el) = AsyncClient::new(o, 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut errors = 0;
    while Instant::now() < deadline && errors < 3 {
        match tokio::time::timeout(Duration::from_secs(2), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => {
                let _ = client.disconnect().await;
                return a.code == rumqttc::ConnectReturnCode::Success;
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(_)) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    false
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}
