//! `rollcall device`: a gateway's row at the centre, `attendance_biometric_device`: register
//! (create or update), enable, disable, list. It connects as rollcall-ingest does, with
//! ingest's own configuration file and pool (TLS to PostgreSQL included), so there is one place
//! where the database is configured.
//!
//! CampsHub360's Django model sets no database defaults, so registration writes every NOT NULL
//! column: `device_type` 'fingerprint' (the schema's closest choice for a gateway that reads
//! fingerprints and cards), `status` 'active' (ingest keeps it current from the gateway's
//! heartbeats afterwards), `is_enabled` true, `firmware_version` '' (ingest fills it from the
//! heartbeats), `auto_sync` false with `sync_interval_minutes` 5 (the gateway pushes over MQTT;
//! there is nothing for CampsHub360 to pull), `ip_address` and `port` (a gateway serves no API:
//! 0.0.0.0 and 0 unless given), `api_endpoint` and `api_key` '' (no secret stored in clear),
//! `created_at`/`updated_at` now. Registering again updates `room` and whatever else is
//! given, leaving what people set in CampsHub360 alone. `room` is what ties the device to sessions: it must equal
//! `attendance_session.room` for its classes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

const EXAMPLES: &str = "\
Examples:
  rollcall device register room-101 --room R101 --name 'Room 101 door' --location 'Block A, 1st floor' \\
      --ingest-config /etc/rollcall/ingest.toml
  rollcall device disable room-101 --ingest-config /etc/rollcall/ingest.toml
  rollcall device enable room-101 --ingest-config /etc/rollcall/ingest.toml
  rollcall device list --ingest-config /etc/rollcall/ingest.toml";

/// `rollcall device`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create or update a gateway's attendance_biometric_device row (every NOT NULL column).
    #[command(
        after_help = "Example:\n  rollcall device register room-101 --room R101 --name 'Room 101 door' \
        --ingest-config /etc/rollcall/ingest.toml"
    )]
    Register(RegisterArgs),
    /// Let the centre count a gateway's punches again (is_enabled = true).
    #[command(
        after_help = "Example:\n  rollcall device enable room-101 --ingest-config /etc/rollcall/ingest.toml"
    )]
    Enable(IdArgs),
    /// Stop counting a gateway's punches (is_enabled = false): recorded as refused, its roster emptied.
    #[command(
        after_help = "Example:\n  rollcall device disable room-101 --ingest-config /etc/rollcall/ingest.toml"
    )]
    Disable(IdArgs),
    /// The registered devices: id, room, name, enabled, status, last seen, firmware.
    #[command(
        after_help = "Example:\n  rollcall device list --ingest-config /etc/rollcall/ingest.toml"
    )]
    List(Db),
}

#[derive(Debug, clap::Args)]
struct Db {
    /// rollcall-ingest's configuration: its [database] section says where and how to connect.
    #[arg(long, default_value = "/etc/rollcall/ingest.toml")]
    ingest_config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct IdArgs {
    /// The device id.
    device_id: String,
    #[command(flatten)]
    db: Db,
}

#[derive(Debug, clap::Args)]
struct RegisterArgs {
    /// The device id, as in the gateway's rollcalld.toml and its certificate's CN.
    device_id: String,
    /// The room, exactly as attendance_session.room names it (this is how punches find their
    /// class).
    #[arg(long)]
    room: String,
    /// A name for people (new rows: "Rollcall gateway <device id>"; an update keeps the name
    /// unless given).
    #[arg(long)]
    name: Option<String>,
    /// Where it hangs (new rows: "Room <room>"; kept on update unless given).
    #[arg(long)]
    location: Option<String>,
    /// The gateway's address, for CampsHub360's records; the gateway pushes, nothing connects
    /// to it (new rows: 0.0.0.0; kept on update unless given).
    #[arg(long)]
    ip: Option<IpAddr>,
    /// Its API port for CampsHub360's records (new rows: 0, none: the gateway pushes over MQTT;
    /// kept on update unless given).
    #[arg(long)]
    port: Option<u16>,
    #[command(flatten)]
    db: Db,
}

/// Runs `rollcall device`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Register(a) => register(a).await,
        Command::Enable(a) => set_enabled(a, true).await,
        Command::Disable(a) => set_enabled(a, false).await,
        Command::List(db) => list(db).await,
    }
}

/// A connection made the way rollcall-ingest makes them.
async fn connect(db: &Db) -> anyhow::Result<deadpool_postgres::Object> {
    let cfg = rollcall_ingest::config::Config::load(&db.ingest_config).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n(--ingest-config {}: rollcall-ingest's configuration file, whose [database] \
             section rollcall uses)",
            db.ingest_config.display()
        )
    })?;
    let pool = rollcall_ingest::pg_tls::pool(&cfg.database, 1)?;
    pool.get().await.map_err(|e| {
        let e = rollcall_ingest::pg_tls::pool_error(e, &cfg.database);
        anyhow::anyhow!(
            "connecting to the database of {}: {e}: check that PostgreSQL is running and \
             database.url is right (`rollcall-ingest -c {} check` tells more)",
            db.ingest_config.display(),
            db.ingest_config.display()
        )
    })
}

/// A database error with what to do about the usual ones.
fn explain(e: tokio_postgres::Error, db: &Db) -> anyhow::Error {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE => anyhow::anyhow!(
            "attendance_biometric_device does not exist in the database of {}: point \
             --ingest-config at the CampsHub360 database, or (standalone) create the tables with \
             `rollcall-ingest -c {} migrate`",
            db.ingest_config.display(),
            db.ingest_config.display()
        ),
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => anyhow::anyhow!(
            "the database user of {} may not write attendance_biometric_device ({e}): grant it \
             SELECT, INSERT, UPDATE on the table",
            db.ingest_config.display()
        ),
        _ => anyhow::anyhow!("{e}"),
    }
}

/// Checks a text column's bound (varchar(n)) with the flag to fix.
fn fits(flag: &str, value: &str, max: usize) -> anyhow::Result<()> {
    if value.trim().is_empty() || value.chars().count() > max {
        bail!("{flag} {value:?}: give 1 to {max} characters");
    }
    Ok(())
}

async fn register(a: RegisterArgs) -> anyhow::Result<ExitCode> {
    if !rollcall_protocol::v1::valid_id(&a.device_id) {
        bail!(
            "device id {:?}: use 1 to 64 letters, digits, '-', '_' or '.' (the id in the \
             gateway's rollcalld.toml and its certificate's CN)",
            a.device_id
        );
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("Rollcall gateway {}", a.device_id));
    let location = a
        .location
        .clone()
        .unwrap_or_else(|| format!("Room {}", a.room));
    fits("--room", &a.room, 64)?;
    fits("--name", &name, 200)?;
    fits("--location", &location, 200)?;
    let client = connect(&a.db).await?;
    let ip = a.ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let port = i32::from(a.port.unwrap_or(0));
    let row = client
        .query_one(
            "INSERT INTO attendance_biometric_device
                 (created_at, updated_at, device_id, device_name, device_type, location, room,
                  status, last_seen, firmware_version, is_enabled, auto_sync,
                  sync_interval_minutes, ip_address, port, api_endpoint, api_key)
             VALUES (now(), now(), $1, $2, 'fingerprint', $3, $4,
                     'active', NULL, '', true, false,
                     5, $5, $6, '', '')
             ON CONFLICT (device_id) DO UPDATE SET
                 updated_at = now(), room = EXCLUDED.room,
                 device_name = CASE WHEN $7 THEN EXCLUDED.device_name ELSE attendance_biometric_device.device_name END,
                 location = CASE WHEN $8 THEN EXCLUDED.location ELSE attendance_biometric_device.location END,
                 ip_address = CASE WHEN $9 THEN EXCLUDED.ip_address ELSE attendance_biometric_device.ip_address END,
                 port = CASE WHEN $10 THEN EXCLUDED.port ELSE attendance_biometric_device.port END
             RETURNING id, (xmax = 0) AS inserted, is_enabled, device_name",
            &[
                &a.device_id,
                &name,
                &location,
                &a.room,
                &ip,
                &port,
                &a.name.is_some(),
                &a.location.is_some(),
                &a.ip.is_some(),
                &a.port.is_some(),
            ],
        )
        .await
        .map_err(|e| explain(e, &a.db))?;
    let (id, inserted, enabled, name): (i64, bool, bool, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    println!(
        "{} {} (attendance_biometric_device.id {id}): room {}, \"{name}\", {}",
        if inserted { "registered" } else { "updated" },
        a.device_id,
        a.room,
        if enabled {
            "enabled".to_owned()
        } else {
            format!(
                "disabled (enable it with `rollcall device enable {}`)",
                a.device_id
            )
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn set_enabled(a: IdArgs, enabled: bool) -> anyhow::Result<ExitCode> {
    let client = connect(&a.db).await?;
    let n = client
        .execute(
            "UPDATE attendance_biometric_device SET is_enabled = $2, updated_at = now()
             WHERE device_id = $1",
            &[&a.device_id, &enabled],
        )
        .await
        .map_err(|e| explain(e, &a.db))?;
    if n == 0 {
        bail!(
            "{} is not registered: register it with `rollcall device register {} --room <room> \
             --ingest-config {}` (`rollcall device list` shows those that are)",
            a.device_id,
            a.device_id,
            a.db.ingest_config.display()
        );
    }
    println!(
        "{} {}: {}",
        if enabled { "enabled" } else { "disabled" },
        a.device_id,
        if enabled {
            "its punches are counted from now on"
        } else {
            "its punches are kept in the ledger as refused, not counted, and its roster is emptied"
        }
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(db: Db) -> anyhow::Result<ExitCode> {
    let client = connect(&db).await?;
    let rows = client
        .query(
            "SELECT device_id, room, device_name, is_enabled, status,
                    coalesce(to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), 'never'),
                    firmware_version
             FROM attendance_biometric_device ORDER BY device_id",
            &[],
        )
        .await
        .map_err(|e| explain(e, &db))?;
    if rows.is_empty() {
        println!(
            "no devices registered: rollcall device register <device-id> --room <room> \
             --ingest-config {}",
            db.ingest_config.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let cols: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                if r.get::<_, bool>(3) { "yes" } else { "no" }.to_owned(),
                r.get::<_, String>(4),
                r.get::<_, String>(5),
                r.get::<_, String>(6),
            ]
        })
        .collect();
    let head = [
        "DEVICE",
        "ROOM",
        "NAME",
        "ENABLED",
        "STATUS",
        "LAST SEEN (UTC)",
        "FIRMWARE",
    ];
    let widths: Vec<usize> = (0..7)
        .map(|i| {
            cols.iter()
                .map(|c| c[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(head.to_vec()));
    for c in &cols {
        println!("{}", line(c.iter().map(String::as_str).collect()));
    }
    Ok(ExitCode::SUCCESS)
}
