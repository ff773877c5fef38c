//! Migrations and the schema check.
//!
//! Ingest's own tables live in schema `rollcall` and are versioned in
//! `rollcall.schema_migrations`. CampsHub360's tables are never altered: in
//! [`SchemaMode::Existing`] they must be there; in [`SchemaMode::Standalone`] the ones ingest
//! needs are created when absent, from `campshub_subset.sql` (CREATE TABLE, identity, primary
//! key, unique constraints and indexes copied verbatim from the real schema; foreign keys left
//! out because their targets may be absent). Migrations run under an advisory lock, so replicas
//! starting together apply them once.

use super::DbError;
use crate::config::SchemaMode;
use tokio_postgres::Client;

const SUBSET: &str = include_str!("campshub_subset.sql");
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "ledger, cursors, dead letters, job runs, device status",
        include_str!("rollcall_v1.sql"),
    ),
    (
        2,
        "refusals as ledger rows, held punches, device enablement, clock anchors, refused devices",
        include_str!("rollcall_v2.sql"),
    ),
    (
        3,
        "ZKTeco PUSH terminals: natural keys and seqs, cursors, commands, alerts",
        include_str!("rollcall_v3.sql"),
    ),
    (
        4,
        "next to CampsHub360's beat: job stamps, the system user of audit rows",
        include_str!("rollcall_v4.sql"),
    ),
    (
        5,
        "credentials: consent, sealed cards and templates, verdicts, room rosters, device commands",
        include_str!("rollcall_v5.sql"),
    ),
];
const MIGRATION_LOCK: i64 = 0x726f_6c6c_6361_6c6c; // "rollcall"

/// The CampsHub360 tables ingest uses, with their DDL chunk.
pub fn subset_tables() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let mut rest = SUBSET;
    while let Some(i) = rest.find("-- table: ") {
        let after = &rest[i + 10..];
        let name_end = after.find('\n').unwrap_or(after.len());
        let name = after[..name_end].trim();
        let body_start = &after[name_end..];
        let end = body_start.find("-- table: ").unwrap_or(body_start.len());
        out.push((name, body_start[..end].trim()));
        rest = &body_start[end..];
    }
    out
}

/// `(column, type)` pairs of a subset table, as the real schema declares them.
pub fn subset_columns(ddl: &str) -> Vec<(String, String)> {
    let Some(open) = ddl.find("(\n") else {
        return Vec::new();
    };
    let Some(close) = ddl.find("\n);") else {
        return Vec::new();
    };
    ddl[open + 2..close]
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            if l.starts_with("CONSTRAINT ") {
                return None;
            }
            let (name, rest) = l.split_once(' ')?;
            let ty = rest
                .trim_end_matches(" NOT NULL")
                .trim_end_matches(" DEFAULT now()");
            let ty = ty
                .split(" CONSTRAINT ")
                .next()
                .unwrap_or(ty)
                .trim_end_matches(" NOT NULL");
            Some((name.to_string(), ty.to_string()))
        })
        .collect()
}

/// The columns ingest reads from tables it only reads (the written ones are checked in full).
const READ_COLUMNS: &[(&str, &[&str])] = &[
    ("students_academicyear", &["id", "year"]),
    (
        "students_studentbatch",
        &[
            "id",
            "academic_year_id",
            "semester",
            "year_of_study",
            "section",
        ],
    ),
    (
        "students_student",
        &[
            "id",
            "roll_number",
            "student_batch_id",
            "first_name",
            "middle_name",
            "last_name",
            "email",
            "student_mobile",
            "status",
            "updated_at",
        ],
    ),
    ("academics_coursesection", &["id", "student_batch_id"]),
    (
        "academics_courseenrollment",
        &["student_id", "course_section_id", "status"],
    ),
    ("attendance_configuration", &["key", "value", "is_active"]),
    ("attendance_holiday", &["date", "affects_attendance"]),
    (
        "attendance_academicperiod",
        &[
            "id",
            "is_current",
            "is_active",
            "period_start",
            "period_end",
        ],
    ),
    (
        "attendance_biometric_device",
        &[
            "id",
            "device_id",
            "room",
            "device_type",
            "is_enabled",
            "status",
            "last_seen",
            "firmware_version",
            "updated_at",
        ],
    ),
    (
        "attendance_timetable_slot",
        &[
            "id",
            "academic_period_id",
            "course_section_id",
            "faculty_id",
            "day_of_week",
            "start_time",
            "end_time",
            "room",
            "is_active",
        ],
    ),
    ("attendance_student_snapshot", &["session_id", "student_id"]),
    ("attendance_correction_request", &["session_id"]),
];
/// Tables ingest inserts into: every column must match and it must write every NOT NULL one.
const WRITTEN: &[&str] = &[
    "attendance_session",
    "attendance_record",
    "attendance_audit_log",
    "attendance_statistics",
    "attendance_student_snapshot",
    "attendance_biometric_template",
];

/// What `migrate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// CampsHub360 tables created (standalone mode).
    pub created_tables: Vec<String>,
    /// Migration versions applied now.
    pub applied: Vec<i32>,
}

async fn table_exists(c: &Client, name: &str) -> Result<bool, DbError> {
    let row = c
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("public.{name}")],
        )
        .await?;
    Ok(row.get(0))
}

/// Brings the database up to date.
pub async fn migrate(c: &mut Client, mode: SchemaMode) -> Result<MigrateReport, DbError> {
    c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(c, mode).await;
    let unlock = c
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

async fn migrate_locked(c: &mut Client, mode: SchemaMode) -> Result<MigrateReport, DbError> {
    let mut report = MigrateReport::default();
    if mode == SchemaMode::Standalone {
        for (name, ddl) in subset_tables() {
            if !table_exists(c, name).await? {
                let tx = c.transaction().await?;
                tx.batch_execute(ddl).await?;
                tx.commit().await?;
                report.created_tables.push(name.to_string());
            }
        }
    }
    c.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS rollcall;
         CREATE TABLE IF NOT EXISTS rollcall.schema_migrations (
             version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    for &(version, name, sql) in MIGRATIONS {
        let tx = c.transaction().await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM rollcall.schema_migrations WHERE version = $1",
                &[&version],
            )
            .await?;
        if done.is_none() {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO rollcall.schema_migrations (version, name) VALUES ($1, $2)",
                &[&version, &name],
            )
            .await?;
            report.applied.push(version);
        }
        tx.commit().await?;
    }
    Ok(report)
}

/// The newest migration version this build knows.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Lists what the database lacks for ingest; empty means ready.
pub async fn check(c: &Client) -> Result<Vec<String>, DbError> {
    let mut missing = Vec::new();
    let rows = c
        .query(
            "SELECT table_name::text, column_name::text,
                    format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef
             FROM information_schema.columns ic
             JOIN pg_attribute a ON a.attrelid = format('public.%I', ic.table_name)::regclass AND a.attname = ic.column_name
             WHERE ic.table_schema = 'public' AND ic.table_name = ANY($1)",
            &[&subset_tables().iter().map(|t| t.0).collect::<Vec<_>>()],
        )
        .await?;
    let have: std::collections::HashMap<(String, String), (String, bool, bool)> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4))))
        .collect();
    for (table, ddl) in subset_tables() {
        let declared = subset_columns(ddl);
        let wanted: Vec<&(String, String)> = if WRITTEN.contains(&table) {
            declared.iter().collect()
        } else {
            let used = READ_COLUMNS
                .iter()
                .find(|r| r.0 == table)
                .map(|r| r.1)
                .unwrap_or(&[]);
            declared
                .iter()
                .filter(|(n, _)| used.contains(&n.as_str()))
                .collect()
        };
        if !have.keys().any(|(t, _)| t == table) {
            missing.push(format!("table public.{table}"));
            continue;
        }
        for (col, ty) in wanted {
            match have.get(&(table.to_string(), col.clone())) {
                None => missing.push(format!("column public.{table}.{col} ({ty})")),
                Some((actual, _, _)) if actual != ty => missing.push(format!(
                    "column public.{table}.{col} is {actual}, ingest needs {ty}"
                )),
                Some(_) => {}
            }
        }
        if WRITTEN.contains(&table) {
            for ((t, col), (_, notnull, hasdef)) in &have {
                if t == table && *notnull && !*hasdef && !declared.iter().any(|(n, _)| n == col) {
                    missing.push(format!("public.{table}.{col} is NOT NULL without default and ingest does not write it"));
                }
            }
        }
    }
    let uniq = c
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass('public.attendance_record')
             AND contype IN ('u','p') AND pg_get_constraintdef(oid) = 'UNIQUE (session_id, student_id)'",
            &[],
        )
        .await;
    if !matches!(uniq.map(|r| r.get::<_, i64>(0)), Ok(n) if n > 0) {
        missing.push("unique constraint attendance_record (session_id, student_id)".into());
    }
    let version: Option<i32> = match c
        .query_opt("SELECT max(version) FROM rollcall.schema_migrations", &[])
        .await
    {
        Ok(Some(r)) => r.get(0),
        _ => None,
    };
    match version {
        Some(v) if v >= latest_version() => {}
        Some(v) => missing.push(format!(
            "rollcall schema at version {v}, needs {} (run `rollcall-ingest migrate`)",
            latest_version()
        )),
        None => missing.push("schema rollcall (run `rollcall-ingest migrate`)".into()),
    }
    missing.sort();
    Ok(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_has_every_table_and_parses_columns() {
        let t = subset_tables();
        assert_eq!(t.len(), 17);
        let rec = t.iter().find(|x| x.0 == "attendance_record").unwrap();
        let cols = subset_columns(rec.1);
        assert!(
            cols.contains(&("mark".into(), "character varying(16)".into())),
            "{cols:?}"
        );
        assert!(cols.contains(&("vendor_data".into(), "jsonb".into())));
        assert_eq!(cols.len(), 23);
    }
}
