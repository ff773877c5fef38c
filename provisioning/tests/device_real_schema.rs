//! `rollcall device register` on CampsHub360's real schema (../shared/reference/
//! campshub360-schema.sql, loaded as is): every NOT NULL column of attendance_biometric_device
//! is written (Django sets no database defaults), and registering again updates the same row.

mod ca_common;

use ca_common::{ok, rollcall};
use rollcall_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_fills_every_not_null_column_of_the_real_campshub360_schema() {
    let schema = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/campshub360-schema.sql");
    if !schema.exists() {
        rollcall_tests::skip(
            "device registration on the real CampsHub360 schema",
            &format!("{} is missing", schema.display()),
            "Put CampsHub360's schema there (pg_dump --schema-only of a CampsHub360 database)",
        );
        return;
    }
    let pg = Postgres::start().expect("start postgres");
    let url = pg.create_database("campus").unwrap();
    pg.psql_file("campus", &schema)
        .expect("load the real schema");
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            "node_name = \"register\"\n[database]\nurl = \"{url}\"\nschema_mode = \"existing\"\n\
             migrate_on_start = false\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[jobs]\nenabled = false\n"
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap();
    let out = ok(&[
        "device",
        "register",
        "room-101",
        "--room",
        "R101",
        "--ip",
        "10.0.5.21",
        "--port",
        "8883",
        "--ingest-config",
        cfg,
    ]);
    assert!(out.contains("registered room-101"), "{out}");
    let out = ok(&[
        "device",
        "register",
        "room-101",
        "--room",
        "R102",
        "--name",
        "Moved",
        "--ingest-config",
        cfg,
    ]);
    assert!(out.contains("updated room-101"), "{out}");
    let row = pg
        .psql(
            "campus",
            "SELECT count(*), min(room), min(device_name), min(host(ip_address)), min(port), \
             bool_and(is_enabled) FROM attendance_biometric_device",
        )
        .unwrap();
    assert!(row.contains("1|R102|Moved|10.0.5.21|8883|t"), "{row}");
    ok(&["device", "disable", "room-101", "--ingest-config", cfg]);
    let list = ok(&["device", "list", "--ingest-config", cfg]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("room-101") && l.contains("R102") && l.contains(" no ")),
        "{list}"
    );
    // A database without the table: the error says what to run.
    let empty = pg.create_database("empty").unwrap();
    let bad = tmp.path().join("empty.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&url, &empty),
    )
    .unwrap();
    let out = rollcall(&["device", "list", "--ingest-config", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("rollcall-ingest -c") && err.contains("migrate"),
        "{err}"
    );
}
