//! The central side of the soak: rollcall-ingest replicas as child processes, the campus rows
//! the gateways' punches resolve against, and the ledger read back for the verdict.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// One rollcall-ingest replica, restartable after kill -9.
#[derive(Debug)]
pub struct Ingest {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// The replica's configuration: standalone schema, jobs off, the soak's gateways counted as
/// attendance although their readers are simulated.
pub fn ingest_config(node: &str, db_url: &str, broker_url: &str, devices: &[String]) -> String {
    let devices = devices
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "node_name = \"{node}\"\n[database]\nurl = \"{db_url}\"\npool_size = 4\nschema_mode = \"standalone\"\n\
         [mqtt]\nurl = \"{broker_url}\"\n[campus]\ntimezone = \"UTC\"\n[ingest]\nlinger_ms = 2\n\
         [attendance]\ndemo_devices = [{devices}]\n[jobs]\nenabled = false\n"
    )
}

impl Ingest {
    /// Writes `<dir>/<node>.toml` and starts the replica.
    pub fn start(dir: &Path, node: &str, config: &str) -> anyhow::Result<Ingest> {
        let path = dir.join(format!("{node}.toml"));
        std::fs::write(&path, config)?;
        let mut me = Ingest {
            bin: crate::binaries::ingest(),
            config: path,
            log: dir.join(format!("{node}.log")),
            child: None,
        };
        me.spawn()?;
        Ok(me)
    }

    /// Starts the process (again).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        self.child = Some(
            Command::new(&self.bin)
                .args(["-c", &self.config.to_string_lossy(), "run"])
                .env("RUST_LOG", "warn")
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting rollcall-ingest")?,
        );
        Ok(())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it is running (it may have exited on its own: a failure the verdict reports).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The log's last `n` lines.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Connects a client whose connection task runs in the background.
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

/// Inserts a row, filling the NOT NULL columns it is not given with placeholders (foreign keys
/// unchecked while seeding); returns `id::text`. As the ingest tests' seed does.
pub async fn ins(c: &Client, table: &str, given: &[(&str, &str)]) -> anyhow::Result<String> {
    let cols = c
        .query(
            "SELECT column_name::text, data_type::text, character_maximum_length FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND is_nullable = 'NO' AND column_default IS NULL
               AND is_identity = 'NO'",
            &[&table],
        )
        .await?;
    let mut names: Vec<String> = given.iter().map(|g| g.0.to_string()).collect();
    let mut values: Vec<String> = given.iter().map(|g| g.1.to_string()).collect();
    for r in cols {
        let (name, ty, len): (String, String, Option<i32>) = (r.get(0), r.get(1), r.get(2));
        if names.contains(&name) {
            continue;
        }
        let v = match ty.as_str() {
            "character varying" | "character" => {
                format!("left(md5(random()::text), {})", len.unwrap_or(32).min(32))
            }
            "text" => "''".into(),
            "uuid" => "gen_random_uuid()".into(),
            "boolean" => "false".into(),
            "date" => "current_date".into(),
            "timestamp with time zone" => "now()".into(),
            "time without time zone" => "'00:00'".into(),
            "jsonb" | "json" => "'{}'".into(),
            "inet" => "'127.0.0.1'".into(),
            "ARRAY" => "'{}'".into(),
            "integer" | "bigint" => "floor(random() * 1e9)::int".into(),
            _ => "0".into(),
        };
        names.push(name);
        values.push(v);
    }
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({}) RETURNING id::text",
        names.join(", "),
        values.join(", ")
    );
    c.batch_execute("SET session_replication_role = replica")
        .await?;
    let id: String = c
        .query_one(&sql, &[])
        .await
        .with_context(|| sql.clone())?
        .get(0);
    c.batch_execute("SET session_replication_role = DEFAULT")
        .await?;
    Ok(id)
}

/// The roster every soak gateway carries (see [`crate::rollcalld::GatewayOptions::write`]):
/// S001 and S002 by card, S001 by finger.
pub const STUDENTS: [&str; 2] = ["S001", "S002"];

/// Seeds one course section with S001 and S002 enrolled and, per gateway, a device in its own
/// room with a session open from a minute ago for `hours` hours. Returns each device's session.
pub async fn seed(c: &Client, devices: &[String], hours: u32) -> anyhow::Result<Vec<i64>> {
    let ay = ins(c, "students_academicyear", &[("year", "'2024-2025'")]).await?;
    let batch = ins(
        c,
        "students_studentbatch",
        &[("academic_year_id", &ay), ("semester", "'5'")],
    )
    .await?;
    let section = ins(
        c,
        "academics_coursesection",
        &[("student_batch_id", &batch)],
    )
    .await?;
    for roll in STUDENTS {
        let id = uuid::Uuid::now_v7();
        ins(
            c,
            "students_student",
            &[
                ("id", &format!("'{id}'")),
                ("roll_number", &format!("'{roll}'")),
                ("student_batch_id", &batch),
                ("status", "'ACTIVE'"),
            ],
        )
        .await?;
        ins(
            c,
            "academics_courseenrollment",
            &[
                ("student_id", &format!("'{id}'")),
                ("course_section_id", &section),
                ("status", "'ENROLLED'"),
            ],
        )
        .await?;
    }
    let mut sessions = Vec::new();
    for (i, device) in devices.iter().enumerate() {
        let room = format!("'R{i}'");
        ins(
            c,
            "attendance_biometric_device",
            &[
                ("device_id", &format!("'{device}'")),
                ("room", &room),
                ("is_enabled", "true"),
                ("status", "'active'"),
                ("device_type", "'fingerprint'"),
            ],
        )
        .await?;
        let end = format!("date_trunc('second', now()) + interval '{hours} hours'");
        let given: Vec<(&str, &str)> = vec![
            ("course_section_id", &section),
            ("scheduled_date", "current_date"),
            (
                "start_datetime",
                "date_trunc('second', now()) - interval '1 minute'",
            ),
            ("end_datetime", &end),
            ("room", &room),
            ("status", "'open'"),
            ("academic_period_id", "gen_random_uuid()"),
            ("faculty_id", "gen_random_uuid()"),
        ];
        sessions.push(ins(c, "attendance_session", &given).await?.parse()?);
    }
    Ok(sessions)
}

/// One ledger row as the verdict reads it.
#[derive(Debug, Clone)]
pub struct Row {
    /// Device.
    pub device: String,
    /// Journal epoch (bit-cast u64).
    pub epoch: i64,
    /// Seq.
    pub seq: i64,
    /// Subject as ingest stored it (`S001`, `card:<hex>`, `finger:unknown`).
    pub subject: String,
    /// Ledger outcome.
    pub outcome: String,
    /// Session, if one was resolved.
    pub session: Option<i64>,
    /// Whether the device's clock was more than an hour off when it took the punch
    /// (`captured_at` against `received_at`): the trace of a clock step.
    pub skewed: bool,
}

/// Every ledger row.
pub async fn ledger(c: &Client) -> anyhow::Result<Vec<Row>> {
    Ok(c.query(
        "SELECT device_id::text, epoch, seq, subject, outcome, session_id, \
             abs(extract(epoch FROM captured_at - received_at)) > 3600 FROM rollcall.ledger \
             ORDER BY device_id, epoch, seq",
        &[],
    )
    .await?
    .iter()
    .map(|r| Row {
        device: r.get(0),
        epoch: r.get(1),
        seq: r.get(2),
        subject: r.get(3),
        outcome: r.get(4),
        session: r.get(5),
        skewed: r.get(6),
    })
    .collect())
}
