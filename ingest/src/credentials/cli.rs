//! `rollcall-ingest consent | credentials | device | rosters`: what a registrar, IT or a data
//! protection officer does with credentials, from the command line.

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Subcommand, ValueEnum};
use rollcall_protocol::v1::{Action, CredentialKind};
use std::path::{Path, PathBuf};
use uuid::Uuid;

use super::keys::KeyRing;
use super::store::{self, RevokeWhat};
use crate::config::Config;

const CONSENT_EXAMPLES: &str = "\
Examples:
  # record the consent a student signed (fingerprint enrolment is refused without it)
  rollcall-ingest consent grant 2024CS001 --by registrar@campus.edu --method 'paper form 2026/114'
  # the student withdraws it: their templates are destroyed here at once and removed from
  # every gateway and module at the next roster refresh (seconds)
  rollcall-ingest consent withdraw 2024CS001 --by dpo@campus.edu --method 'email of 2026-11-29'
  rollcall-ingest consent show 2024CS001";

/// `consent`.
#[derive(Debug, Args)]
#[command(after_help = CONSENT_EXAMPLES, after_long_help = CONSENT_EXAMPLES)]
pub struct ConsentArgs {
    #[command(subcommand)]
    action: ConsentAction,
}

#[derive(Debug, Subcommand)]
enum ConsentAction {
    /// Record a student's consent to fingerprint enrolment.
    Grant {
        /// Roll number or student id.
        student: String,
        /// Who recorded it.
        #[arg(long)]
        by: String,
        /// How it was given (form number, portal, ...).
        #[arg(long)]
        method: String,
    },
    /// Record a withdrawal: the student's templates are revoked and destroyed.
    Withdraw {
        /// Roll number or student id.
        student: String,
        /// Who recorded it.
        #[arg(long)]
        by: String,
        /// How it was withdrawn.
        #[arg(long, default_value = "recorded by staff")]
        method: String,
    },
    /// Show a student's consent and its history.
    Show {
        /// Roll number or student id.
        student: String,
    },
}

const CREDENTIALS_EXAMPLES: &str = "\
Examples:
  # once, on the central server: the key file [credentials] key_file names (mode 0600)
  rollcall-ingest credentials init-key /etc/rollcall/credential-keys
  # a student's cards and templates (never their bytes)
  rollcall-ingest credentials list 2024CS001
  # a lost card
  rollcall-ingest credentials revoke 0193a0c4-7d1e-7c55-a9e8-1d2f3a4b5c6d --reason 'card lost'
  # key rotation: a new key seals from now on, then every credential is re-sealed under it
  rollcall-ingest credentials add-key /etc/rollcall/credential-keys --key-id k2027
  rollcall-ingest credentials rewrap";

/// `credentials`.
#[derive(Debug, Args)]
#[command(after_help = CREDENTIALS_EXAMPLES, after_long_help = CREDENTIALS_EXAMPLES)]
pub struct CredentialsArgs {
    #[command(subcommand)]
    action: CredentialsAction,
}

#[derive(Debug, Subcommand)]
enum CredentialsAction {
    /// Write a new key file (a digest key and a first sealing key), mode 0600.
    InitKey {
        /// Where.
        file: PathBuf,
        /// The first key's id.
        #[arg(long, default_value = "k1")]
        key_id: String,
    },
    /// Append a sealing key to the key file; it seals from now on.
    AddKey {
        /// The key file.
        file: PathBuf,
        /// The new key's id.
        #[arg(long)]
        key_id: String,
    },
    /// Re-seal every stored credential under the key file's last key.
    Rewrap,
    /// A student's credentials: kind, format, where and when enrolled, state.
    List {
        /// Roll number or student id.
        student: String,
    },
    /// Revoke one credential (its ciphertext is destroyed; gateways drop it at the next refresh).
    Revoke {
        /// The credential id (from `list`).
        id: Uuid,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

const DEVICE_EXAMPLES: &str = "\
Examples:
  # ask gateway room-101 to enrol a student's fingerprint at its reader `finger`
  # (someone at the gateway guides the student; the result comes back as an enrolment)
  rollcall-ingest device enrol room-101 2024CS001 --reader finger --kind fingerprint
  # the gateway's roster looks wrong: have it ask for a full snapshot
  rollcall-ingest device resync room-101";

/// `device`.
#[derive(Debug, Args)]
#[command(after_help = DEVICE_EXAMPLES, after_long_help = DEVICE_EXAMPLES)]
pub struct DeviceArgs {
    #[command(subcommand)]
    action: DeviceAction,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Card,
    Fingerprint,
}

#[derive(Debug, Subcommand)]
enum DeviceAction {
    /// Queue an enrolment at a gateway's reader.
    Enrol {
        /// The device id.
        device: String,
        /// Roll number or student id.
        student: String,
        /// The reader's id in the gateway's config.
        #[arg(long)]
        reader: String,
        /// Card or fingerprint.
        #[arg(long, value_enum)]
        kind: Kind,
    },
    /// Queue a resync: the gateway asks for a full roster snapshot.
    Resync {
        /// The device id.
        device: String,
    },
}

/// The JSON a queued command is stored as.
pub fn action_to_json(a: &Action) -> serde_json::Value {
    match a {
        Action::Enrol {
            student,
            reader_id,
            kind,
        } => serde_json::json!({
            "enrol": {"student": student, "reader": reader_id,
                      "kind": if *kind == CredentialKind::Card { "card" } else { "fingerprint" }}
        }),
        Action::Resync => serde_json::json!("resync"),
        Action::EnrolmentResult { .. } => serde_json::json!(null),
    }
}

/// A queued command back from JSON.
pub fn action_from_json(v: &serde_json::Value) -> Option<Action> {
    if v.as_str() == Some("resync") {
        return Some(Action::Resync);
    }
    let e = v.get("enrol")?;
    Some(Action::Enrol {
        student: e.get("student")?.as_str()?.to_string(),
        reader_id: e.get("reader")?.as_str()?.to_string(),
        kind: match e.get("kind")?.as_str()? {
            "card" => CredentialKind::Card,
            "fingerprint" => CredentialKind::Fingerprint,
            _ => return None,
        },
    })
}

/// `credentials init-key` and `add-key` need no configuration; `None` for the others.
pub fn key_file_command(args: &CredentialsArgs) -> Option<anyhow::Result<()>> {
    match &args.action {
        CredentialsAction::InitKey { file, key_id } => Some(init_key(file, key_id)),
        CredentialsAction::AddKey { file, key_id } => Some(add_key(file, key_id)),
        _ => None,
    }
}

fn init_key(file: &Path, key_id: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = KeyRing::generate(key_id).map_err(anyhow::Error::msg)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| {
            format!(
                "{}: not created (an existing key file is never overwritten: it is the only way to open the stored credentials)",
                file.display()
            )
        })?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    println!(
        "{}: created (mode 0600) with key {key_id}; back it up where the database backups are not",
        file.display()
    );
    Ok(())
}

fn add_key(file: &Path, key_id: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let existing = KeyRing::load(file)?;
    let line = KeyRing::generate_key_line(key_id).map_err(anyhow::Error::msg)?;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(file)?);
    if KeyRing::parse(&format!("{}{}", &*text, &*line)).is_err() {
        bail!("key id {key_id:?} is already in {}", file.display());
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
    f.write_all(line.as_bytes())?;
    f.sync_all()?;
    println!(
        "{}: key {key_id} added after {}; it seals from the next start of rollcall-ingest. Then run `rollcall-ingest credentials rewrap`.",
        file.display(),
        existing.current_id()
    );
    Ok(())
}

async fn connect(cfg: &Config) -> anyhow::Result<deadpool_postgres::Object> {
    let pool = crate::pg_tls::pool(&cfg.database, 2)?;
    pool.get().await.context("connecting to PostgreSQL")
}

async fn student(c: &deadpool_postgres::Object, name: &str) -> anyhow::Result<store::Student> {
    store::find_student(c, name)
        .await?
        .with_context(|| format!("no student {name:?} (give the roll number or the student id)"))
}

/// `consent ...`.
pub async fn consent(cfg: &Config, args: ConsentArgs) -> anyhow::Result<()> {
    let mut c = connect(cfg).await?;
    let now = Utc::now();
    match args.action {
        ConsentAction::Grant {
            student: name,
            by,
            method,
        } => {
            let s = student(&c, &name).await?;
            store::grant_consent(&c, s.id, &by, &method, now).await?;
            println!(
                "consent recorded for {} ({}) by {by}: {method}",
                s.roll_number, s.id
            );
        }
        ConsentAction::Withdraw {
            student: name,
            by,
            method,
        } => {
            let s = student(&c, &name).await?;
            let tx = c.transaction().await?;
            let n = store::withdraw_consent(&tx, s.id, &by, &method, now).await?;
            tx.commit().await?;
            println!(
                "consent withdrawn for {}: {n} fingerprint template(s) destroyed; gateways drop them at the next roster refresh",
                s.roll_number
            );
        }
        ConsentAction::Show { student: name } => {
            let s = student(&c, &name).await?;
            let rows = c
                .query(
                    "SELECT at, action, by_whom, method FROM rollcall.consent_event WHERE student_id = $1 ORDER BY id",
                    &[&s.id],
                )
                .await?;
            let current = store::has_consent(&c, s.id).await?;
            println!(
                "{} ({}): consent {}",
                s.roll_number,
                s.id,
                if current { "recorded" } else { "not recorded" }
            );
            for r in rows {
                let at: chrono::DateTime<Utc> = r.get(0);
                println!(
                    "  {} {} by {}: {}",
                    at.to_rfc3339(),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3)
                );
            }
        }
    }
    Ok(())
}

/// `credentials ...` (except the key file commands, see [`key_file_command`]).
pub async fn credentials(cfg: &Config, args: CredentialsArgs) -> anyhow::Result<()> {
    let mut c = connect(cfg).await?;
    match args.action {
        CredentialsAction::InitKey { .. } | CredentialsAction::AddKey { .. } => {
            unreachable!("answered without a configuration")
        }
        CredentialsAction::Rewrap => {
            let cc = cfg
                .credentials
                .as_ref()
                .context("no [credentials] section: nothing is sealed")?;
            let keys = KeyRing::load(&cc.key_file)?;
            let tx = c.transaction().await?;
            let n = store::rewrap(&tx, &keys).await?;
            tx.commit().await?;
            println!(
                "{n} credential(s) re-sealed under key {}; keys no credential names any more may now be removed",
                keys.current_id()
            );
        }
        CredentialsAction::List { student: name } => {
            let s = student(&c, &name).await?;
            let rows = c
                .query(
                    "SELECT id, kind, format, sensor, enrolled_at, enrolled_device, enrolled_by, key_id,
                            revoked_at, revoked_reason
                     FROM rollcall.credential WHERE student_id = $1 ORDER BY enrolled_at",
                    &[&s.id],
                )
                .await?;
            println!("{} ({}): {} credential(s)", s.roll_number, s.id, rows.len());
            for r in rows {
                let id: Uuid = r.get(0);
                let at: chrono::DateTime<Utc> = r.get(4);
                let revoked: Option<chrono::DateTime<Utc>> = r.get(8);
                let state = match revoked {
                    None => format!("active, sealed under {}", r.get::<_, String>(7)),
                    Some(t) => format!(
                        "revoked {} ({}), destroyed",
                        t.to_rfc3339(),
                        r.get::<_, Option<String>>(9).unwrap_or_default()
                    ),
                };
                println!(
                    "  {id} {} {} {} enrolled {} at {} by {}: {state}",
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    at.to_rfc3339(),
                    r.get::<_, String>(5),
                    r.get::<_, String>(6)
                );
            }
        }
        CredentialsAction::Revoke { id, reason } => {
            let n = store::revoke(&c, RevokeWhat::One(id), &reason, Utc::now()).await?;
            if n == 0 {
                bail!("no active credential {id}");
            }
            println!("{id} revoked and destroyed; gateways drop it at the next roster refresh");
        }
    }
    Ok(())
}

/// `device ...`: queues a command the service publishes.
pub async fn device(cfg: &Config, args: DeviceArgs, by: &str) -> anyhow::Result<()> {
    let c = connect(cfg).await?;
    let (device, action) = match args.action {
        DeviceAction::Enrol {
            device,
            student: name,
            reader,
            kind,
        } => {
            let s = student(&c, &name).await?;
            let kind = match kind {
                Kind::Card => CredentialKind::Card,
                Kind::Fingerprint => CredentialKind::Fingerprint,
            };
            if kind == CredentialKind::Fingerprint && !store::has_consent(&c, s.id).await? {
                bail!(
                    "no biometric consent recorded for {}: `rollcall-ingest consent grant {0} --by <who> --method <how>` first",
                    s.roll_number
                );
            }
            (
                device,
                Action::Enrol {
                    student: s.id.to_string(),
                    reader_id: reader,
                    kind,
                },
            )
        }
        DeviceAction::Resync { device } => (device, Action::Resync),
    };
    if !rollcall_protocol::v1::valid_id(&device) {
        bail!("{device:?} is not a device id");
    }
    let id = Uuid::now_v7();
    c.execute(
        "INSERT INTO rollcall.device_command (command_id, device_id, action, queued_at, queued_by)
         VALUES ($1, $2, $3, $4, $5)",
        &[&id, &device, &action_to_json(&action), &Utc::now(), &by],
    )
    .await?;
    println!(
        "command {id} queued for {device}; it is sent when the service next refreshes (and once the device has connected)"
    );
    Ok(())
}

/// `rosters`: every device's roster state.
pub async fn rosters(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let c = connect(cfg).await?;
    let rows = c
        .query(
            "SELECT r.device_id::text, r.version, r.acked_version, r.templates_loaded, r.capacity,
                    r.failures, r.acked_at, array_to_string(r.accepts, ','),
                    (SELECT count(*) FROM rollcall.roster_member m WHERE m.device_id = r.device_id AND NOT m.removed)
             FROM rollcall.roster_device r ORDER BY r.device_id",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    for r in rows {
        let v = serde_json::json!({
            "device": r.get::<_, String>(0),
            "version": r.get::<_, i64>(1),
            "acked_version": r.get::<_, i64>(2),
            "templates_loaded": r.get::<_, Option<i32>>(3),
            "capacity": r.get::<_, Option<i32>>(4),
            "failures": r.get::<_, serde_json::Value>(5),
            "acked_at": r.get::<_, Option<chrono::DateTime<Utc>>>(6),
            "accepts": r.get::<_, String>(7),
            "students": r.get::<_, i64>(8),
        });
        if !json {
            println!(
                "{} v{} (acked v{}{}), {} students, accepts {}, templates {} of {}, failures {}",
                v["device"].as_str().unwrap_or(""),
                v["version"],
                v["acked_version"],
                if v["version"] == v["acked_version"] {
                    ", current"
                } else {
                    ", behind"
                },
                v["students"],
                v["accepts"].as_str().unwrap_or(""),
                v["templates_loaded"],
                v["capacity"],
                v["failures"].as_array().map_or(0, Vec::len)
            );
        }
        out.push(v);
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    }
    Ok(())
}
