//! rollcall-ingest to PostgreSQL over TLS: a server with `ssl = on` and a certificate from a
//! throwaway CA. With `sslmode=require` and `database.ca_file` the real binary's `migrate` and
//! `check`, and a full start, connect over TLS (the server's log shows the session encrypted);
//! a wrong CA, a certificate for another name, or a server without TLS end the command with
//! what to fix, and a full start gives up at once instead of retrying.

mod ingest_common;

use rollcall_ingest::config::Config;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::pki::Pki;
use rollcall_tests::postgres::{PgOptions, Postgres};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A TLS server that logs each connection (the log says whether it was encrypted).
fn tls_server(cert: &Path, key: &Path) -> Postgres {
    let pg = Postgres::start_tls(cert, key).unwrap();
    pg.psql("postgres", "ALTER SYSTEM SET log_connections = 'on'")
        .unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    pg
}

fn config(url: &str, ca: Option<&Path>) -> String {
    let ca = ca.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    format!(
        "node_name = \"tls\"\n[database]\nurl = \"{url}\"\nschema_mode = \"standalone\"\n{ca}\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n"
    )
}

fn ingest(dir: &Path, toml: &str, cmd: &str) -> Output {
    let cfg = dir.join("ingest.toml");
    std::fs::write(&cfg, toml).unwrap();
    Command::new(rollcall_tests::binaries::ingest())
        .args(["-c", cfg.to_str().unwrap(), cmd])
        .env("RUST_LOG", "warn")
        .output()
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

/// The server log's lines about connections authorized for rollcall-ingest.
fn ingest_sessions(pg: &Postgres) -> Vec<String> {
    pg.log()
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains("rollcall-ingest"))
        .map(str::to_string)
        .collect()
}

#[test]
fn migrate_and_check_connect_over_verified_tls_with_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki")).unwrap();
    let (cert, key) = pki.server();
    let pg = tls_server(&cert, &key);
    let url = pg.create_database("campus").unwrap() + "?sslmode=require";
    let toml = config(&url, Some(&pki.ca()));

    let out = ingest(dir.path(), &toml, "migrate");
    assert!(out.status.success(), "{}", text(&out));
    let out = ingest(dir.path(), &toml, "check");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: the database has everything"),
        "{}",
        text(&out)
    );
    let sessions = ingest_sessions(&pg);
    assert_eq!(sessions.len(), 2, "one per command:\n{}", pg.log());
    for s in &sessions {
        assert!(s.contains("SSL enabled"), "not encrypted: {s}");
    }
    // Also by a name the certificate holds (DNS:localhost): the host name check passes.
    let by_name = url.replace("127.0.0.1", "localhost");
    let out = ingest(dir.path(), &config(&by_name, Some(&pki.ca())), "check");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki")).unwrap();
    let stranger = Pki::create(&dir.path().join("stranger")).unwrap();
    let (cert, key) = pki.server();
    let pg = tls_server(&cert, &key);
    let url = pg.create_database("campus").unwrap() + "?sslmode=require";

    let out = ingest(dir.path(), &config(&url, Some(&stranger.ca())), "check");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("certificate is not trusted by database.ca_file"),
        "{t}"
    );
    assert!(t.contains(&stranger.ca().display().to_string()), "{t}");
    assert!(
        t.contains("set database.ca_file to the CA certificate that signed the server's"),
        "{t}"
    );
    // Not the kind of failure that is retried: nothing got through.
    assert!(ingest_sessions(&pg).is_empty(), "{}", pg.log());
}

#[test]
fn a_certificate_for_another_host_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki")).unwrap();
    let (cert, key) = pki.server_cert("db-other", "DNS:db.other.campus").unwrap();
    let pg = tls_server(&cert, &key);
    let url = pg.create_database("campus").unwrap() + "?sslmode=require";

    let out = ingest(dir.path(), &config(&url, Some(&pki.ca())), "check");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("certificate does not name the host in database.url"),
        "{t}"
    );
}

#[test]
fn require_against_a_server_without_tls_says_to_turn_ssl_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki")).unwrap();
    let pg = Postgres::start_with(PgOptions::default()).unwrap();
    let url = pg.create_database("campus").unwrap() + "?sslmode=require";

    let out = ingest(dir.path(), &config(&url, Some(&pki.ca())), "check");
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("does not offer TLS"), "{t}");
    assert!(t.contains("ssl = on"), "{t}");
}

#[test]
fn without_sslmode_or_ca_file_the_connection_stays_plain_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki")).unwrap();
    let (cert, key) = pki.server();
    let pg = tls_server(&cert, &key);
    // sslmode defaults to prefer: without a CA to check the server by, no TLS is attempted (an
    // unverified session would be a promise it cannot keep).
    let url = pg.create_database("campus").unwrap();
    let out = ingest(dir.path(), &config(&url, None), "check");
    assert_eq!(out.status.code(), Some(1), "tables missing: {}", text(&out));
    let sessions = ingest_sessions(&pg);
    assert_eq!(sessions.len(), 1, "{}", pg.log());
    assert!(!sessions[0].contains("SSL enabled"), "{}", sessions[0]);
    // With ca_file, prefer uses (verified) TLS.
    let out = ingest(dir.path(), &config(&url, Some(&pki.ca())), "check");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let sessions = ingest_sessions(&pg);
    assert!(sessions[1].contains("SSL enabled"), "{}", sessions[1]);
}

fn run_config(db_url: &str, ca: &Path, broker: &str) -> Config {
    Config::from_toml(&format!(
        "node_name = \"tls-run\"\n[database]\nurl = \"{db_url}\"\npool_size = 2\n\
         schema_mode = \"standalone\"\nca_file = \"{}\"\n[mqtt]\nurl = \"{broker}\"\n\
         [jobs]\nenabled = false\n",
        ca.display()
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_start_migrates_over_tls_and_gives_up_at_once_on_a_wrong_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::create(&dir.path().join("pki")).unwrap();
    let stranger = Pki::create(&dir.path().join("stranger")).unwrap();
    let (cert, key) = pki.server();
    let pg = tls_server(&cert, &key);
    let broker = Mosquitto::start().unwrap();
    let url = pg.create_database("campus").unwrap() + "?sslmode=require";

    // Right CA: migrates at start (the rollcall schema appears), then consumes until stopped.
    let stop = CancellationToken::new();
    let task = tokio::spawn(rollcall_ingest::run(
        run_config(&url, &pki.ca(), &broker.url()),
        stop.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pg
        .psql(
            "campus",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'rollcall'",
        )
        .unwrap()
        .trim()
        != "1"
    {
        assert!(!task.is_finished(), "run ended early: {:?}", task.await);
        assert!(
            std::time::Instant::now() < deadline,
            "not migrated in 30 s:\n{}",
            pg.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
    let sessions = ingest_sessions(&pg);
    assert!(!sessions.is_empty(), "{}", pg.log());
    assert!(
        sessions.iter().all(|s| s.contains("SSL enabled")),
        "{sessions:?}"
    );

    // Wrong CA: run returns the explanation instead of retrying "database not reachable".
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        rollcall_ingest::run(
            run_config(&url, &stranger.ca(), &broker.url()),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("gives up at once on a certificate problem")
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("set database.ca_file to the CA certificate"),
        "{err}"
    );
}
