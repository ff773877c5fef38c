//! `check` names what a database lacks; `migrate` fixes a standalone one; the CLI says so.

mod ingest_common;

use ingest_common::*;
use rollcall_tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_what_is_missing() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("empty").unwrap();
    let mut c = connect(&url).await;
    let missing = rollcall_ingest::db::schema::check(&c).await.unwrap();
    assert!(
        missing
            .iter()
            .any(|m| m == "table public.attendance_record"),
        "{missing:?}"
    );
    assert!(
        missing.iter().any(|m| m.starts_with("schema rollcall")),
        "{missing:?}"
    );
    // Existing mode creates only the rollcall schema: CampsHub360 tables stay missing.
    rollcall_ingest::db::schema::migrate(&mut c, rollcall_ingest::config::SchemaMode::Existing)
        .await
        .unwrap();
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        )
        .await,
        0
    );
    rollcall_ingest::db::schema::migrate(&mut c, rollcall_ingest::config::SchemaMode::Standalone)
        .await
        .unwrap();
    assert_eq!(
        rollcall_ingest::db::schema::check(&c).await.unwrap(),
        Vec::<String>::new()
    );
    c.batch_execute("ALTER TABLE attendance_record DROP COLUMN vendor_data")
        .await
        .unwrap();
    let missing = rollcall_ingest::db::schema::check(&c).await.unwrap();
    assert_eq!(
        missing,
        vec!["column public.attendance_record.vendor_data (jsonb)".to_string()]
    );
    if let Some(f) = real_schema_file() {
        let url = pg.create_database("real").unwrap();
        pg.psql_file("real", &f).unwrap();
        let mut c = connect(&url).await;
        let missing = rollcall_ingest::db::schema::check(&c).await.unwrap();
        assert_eq!(missing.len(), 1, "{missing:?}");
        rollcall_ingest::db::schema::migrate(&mut c, rollcall_ingest::config::SchemaMode::Existing)
            .await
            .unwrap();
        assert_eq!(
            rollcall_ingest::db::schema::check(&c).await.unwrap(),
            Vec::<String>::new()
        );
    } else {
        ingest_common::skip_real_schema("the real-schema part of this test");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_migrate_subcommands_report_and_fix_a_standalone_database() {
    let bin = rollcall_tests::binaries::ingest();
    let pg = Postgres::start().unwrap();
    let url = pg.create_database("cli").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingest.toml");
    std::fs::write(
        &cfg,
        format!("node_name = \"cli\"\n[database]\nurl = \"{url}\"\nschema_mode = \"standalone\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n"),
    )
    .unwrap();
    let run = |cmd: &str| {
        std::process::Command::new(&bin)
            .args(["-c", cfg.to_str().unwrap(), cmd])
            .output()
            .unwrap()
    };
    let out = run("check");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("missing: table public.attendance_record"),
        "{text}"
    );
    assert!(run("migrate").status.success());
    let out = run("check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(run("validate").status.success());
}
