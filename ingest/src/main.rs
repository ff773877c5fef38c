//! `rollcall-ingest`: see the library docs and `rollcall-ingest --help`.
//!
//! The command line follows rollcalld's: `--config/-c` given after the subcommand (before it
//! also works, as older scripts write it), `--log-format text|json`, and the log filter in
//! `ROLLCALL_LOG` (`RUST_LOG` is still read when `ROLLCALL_LOG` is not set). Logs go to stderr, so
//! what a command prints on stdout can be piped.

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rollcall_ingest::adms::Command as AdmsCommand;
use rollcall_ingest::adms::views::{self, TerminalState};
use rollcall_ingest::config::{Config, Owner};
use rollcall_ingest::credentials;
use rollcall_ingest::jobs::{self, DateRange, Job, JobContext, Manual, ManualResult};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Rollcall's central ingestion service")]
struct Cli {
    /// Configuration file (every subcommand reads it).
    #[arg(
        short,
        long,
        global = true,
        default_value = "/etc/rollcall/ingest.toml"
    )]
    config: PathBuf,
    /// Log format: text for people, json for journald and log shippers.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Consume and run the scheduled jobs (the default).
    Run,
    /// Check the configuration file and exit (0 = valid), listing every problem.
    Validate,
    /// Apply migrations (and, in standalone mode, create missing CampsHub360 tables).
    Migrate,
    /// Report whether the database has everything ingest needs, and whether another writer
    /// (CampsHub360's Celery beat) does a job Rollcall owns or sessions mix two time
    /// conventions; exit 1 naming what is missing or in conflict, and what to switch off.
    Check {
        /// Rows written this recently count as another writer at work now.
        #[arg(long, default_value = "25h", value_parser = humantime::parse_duration)]
        since: Duration,
    },
    /// List the attendance jobs and their last runs, or run one now.
    Jobs(JobsArgs),
    /// List the ZKTeco terminals that have called, or queue a command for one.
    Terminals(TerminalsArgs),
    /// Record or withdraw a student's consent to fingerprint enrolment.
    Consent(credentials::cli::ConsentArgs),
    /// The credential store: key file, a student's credentials, revocation, re-sealing.
    Credentials(credentials::cli::CredentialsArgs),
    /// Queue a command for a gateway: enrol a student at a reader, or resync its roster.
    Device(credentials::cli::DeviceArgs),
    /// Every gateway's roster: version, acknowledged version, templates loaded, capacity.
    Rosters {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

const TERMINALS_EXAMPLES: &str = "\
Examples:
  # every terminal that has called: admitted or refused (unregistered, disabled), last seen,
  # stamps, records stored, clock offset, commands pending and alerts open
  rollcall-ingest terminals -c /etc/rollcall/ingest.toml
  rollcall-ingest terminals --json

  # a gap on Monday morning: have the terminal upload that range of its log again
  # (terminal wall-clock times; records already stored count once)
  rollcall-ingest terminals command CQZ7232460113 query --from '2025-01-06 08:00' --to '2025-01-06 12:00'
  rollcall-ingest terminals command CQZ7232460113 query --from 2025-01-06   # the whole day

  # put a student on a terminal (PIN = roll number unless rollcall.adms_pin maps it)
  rollcall-ingest terminals command CQZ7232460113 user --pin R1024 --name 'Asha Rao' --card 0012345

  # restart a terminal
  rollcall-ingest terminals command CQZ7232460113 reboot --json

A command waits in rollcall.adms_command until the terminal's next poll (every Delay s, 10 by
default), is sent again after a minute if unanswered (five times at most), and its result is
shown by `rollcall-ingest terminals` until it is answered.";

#[derive(Args)]
#[command(after_long_help = TERMINALS_EXAMPLES, after_help = TERMINALS_EXAMPLES)]
struct TerminalsArgs {
    #[command(subcommand)]
    action: Option<TerminalsAction>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum TerminalsAction {
    /// List every terminal that has called (the default).
    List,
    /// Queue a command for a terminal's next poll.
    #[command(after_help = TERMINALS_EXAMPLES)]
    Command {
        /// The terminal's serial number (its SN=, as `rollcall-ingest terminals` lists it).
        serial: String,
        #[command(subcommand)]
        command: TerminalCommand,
    },
}

#[derive(Subcommand)]
enum TerminalCommand {
    /// Upload again the records of a time range of its log, to fill a gap.
    Query {
        /// First time, on the terminal's wall clock: 2025-01-06 08:00[:00], or a date.
        #[arg(long)]
        from: String,
        /// Last time (inclusive): same forms; a date means its end. Default: the end of
        /// --from's day.
        #[arg(long)]
        to: Option<String>,
    },
    /// Create or update a user on the terminal.
    User {
        /// PIN (1-64 of A-Z a-z 0-9 . _ -): the roll number unless rollcall.adms_pin maps it.
        #[arg(long)]
        pin: String,
        /// Name shown on the terminal (24 characters kept).
        #[arg(long)]
        name: String,
        /// Card number (digits).
        #[arg(long, default_value = "")]
        card: String,
    },
    /// Restart the terminal.
    Reboot,
}

const JOBS_EXAMPLES: &str = "\
Jobs: generate_sessions, open_close, statistics, retention, device_health.

Examples:
  # every job, its schedule on this replica and its last 3 runs
  rollcall-ingest jobs -c /etc/rollcall/ingest.toml

  # the timetable changed: see what regenerating the next days would create, then do it
  rollcall-ingest jobs run generate_sessions --dry-run
  rollcall-ingest jobs run generate_sessions

  # create the sessions of a whole week (past dates too, e.g. after an outage)
  rollcall-ingest jobs run generate_sessions --from 2025-01-06 --to 2025-01-12

  # ingest was down on Tuesday: open and close that day's sessions, marking absentees
  rollcall-ingest jobs run open_close --from 2025-01-07

  # a correction was approved: recompute statistics and eligibility now
  rollcall-ingest jobs run statistics

  # what eligibility would be if late did not count as attended (changes nothing)
  rollcall-ingest jobs run statistics --late-counts-as-attended false --dry-run

  # run open/close as of a chosen instant (campus time, or RFC 3339 with an offset)
  rollcall-ingest jobs run open_close --at '2025-01-06 10:58'

A job that [jobs.owner] leaves to CampsHub360's Celery beat is refused, except with --dry-run.
A run takes the same lock and writes the same claim (rollcall.job_run) as the scheduled runs, so
it never overlaps a replica's run of the same job; it waits --wait for one to finish.
A dry run does everything in a transaction that is rolled back and prints the job's detail.";

#[derive(Args)]
#[command(after_long_help = JOBS_EXAMPLES, after_help = JOBS_EXAMPLES)]
struct JobsArgs {
    #[command(subcommand)]
    action: Option<JobsAction>,
}

#[derive(Subcommand)]
enum JobsAction {
    /// List every job, its schedule on this replica and its last runs (the default).
    List {
        /// Runs to show per job.
        #[arg(long, default_value_t = 3)]
        last: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run one job now (committed), or with --dry-run see what it would change.
    #[command(after_help = JOBS_EXAMPLES)]
    Run {
        /// The job.
        #[arg(value_parser = job_name)]
        job: Job,
        /// The job's "now": RFC 3339 with an offset (2025-01-06T10:58:00+05:30) or campus
        /// time (2025-01-06 10:58). Default: now.
        #[arg(long)]
        at: Option<String>,
        /// First campus date (generate_sessions, open_close): generate or open/close the
        /// sessions of these dates only. Default: generation's usual window; open/close: all.
        #[arg(long)]
        from: Option<NaiveDate>,
        /// Last campus date (default: --from).
        #[arg(long, requires = "from")]
        to: Option<NaiveDate>,
        /// Do everything in a transaction that is rolled back; print what would change.
        #[arg(long)]
        dry_run: bool,
        /// statistics: count late as attended or not for this run, instead of
        /// attendance.late_counts_as_attended (the next scheduled run uses the file again).
        #[arg(long)]
        late_counts_as_attended: Option<bool>,
        /// How long to wait for a replica (or another manual run) running the same job.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        wait: Duration,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn job_name(s: &str) -> Result<Job, String> {
    Job::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = Job::ALL.iter().map(|j| j.name()).collect();
        format!("unknown job {s:?}: one of {}", names.join(", "))
    })
}

fn main() -> anyhow::Result<()> {
    rollcall_ingest::exit_on_panic();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Credentials(args) = &command
        && let Some(done) = credentials::cli::key_file_command(args)
    {
        return done;
    }
    if let Command::Validate = command {
        return match Config::load(&cli.config) {
            Ok(_) => {
                println!("{}: valid", cli.config.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{}: {e}", cli.config.display());
                std::process::exit(1);
            }
        };
    }
    let cfg = Config::load(&cli.config).with_context(|| {
        format!(
            "{} (check it with `rollcall-ingest validate -c {0}`)",
            cli.config.display()
        )
    })?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match command {
            Command::Validate => unreachable!("answered above"),
            Command::Migrate => migrate(&cfg).await,
            Command::Check { since } => check(&cfg, since).await,
            Command::Jobs(args) => match args.action.unwrap_or(JobsAction::List {
                last: 3,
                json: false,
            }) {
                JobsAction::List { last, json } => list(&cfg, last, json).await,
                JobsAction::Run {
                    job,
                    at,
                    from,
                    to,
                    dry_run,
                    late_counts_as_attended,
                    wait,
                    json,
                } => {
                    let at = match at {
                        Some(text) => jobs::parse_instant(&text, cfg.campus.timezone)
                            .map_err(anyhow::Error::msg)?,
                        None => Utc::now(),
                    };
                    let dates = match from {
                        Some(from) => Some(
                            DateRange::new(from, to.unwrap_or(from)).map_err(anyhow::Error::msg)?,
                        ),
                        None => None,
                    };
                    if job.owner(&cfg) == Owner::Campshub360 && !dry_run {
                        anyhow::bail!(
                            "{} is left to CampsHub360's Celery beat ({}; jobs.owner.{0} = \"campshub360\"): \
                             running it here would make two writers of the same rows; --dry-run shows \
                             what Rollcall would do, or set jobs.owner.{0} = \"rollcall\" and turn the \
                             beat entries off",
                            job.name(),
                            job.beat_entries().join(", ")
                        );
                    }
                    let mut ctx = JobContext::from_config(&cfg);
                    if let Some(late) = late_counts_as_attended {
                        anyhow::ensure!(
                            job == Job::Statistics,
                            "--late-counts-as-attended is for statistics only"
                        );
                        ctx.late_counts_as_attended = late;
                    }
                    let m = Manual {
                        job,
                        at,
                        dates,
                        dry_run,
                        wait,
                    };
                    run_job(&cfg, &m, &ctx, json).await
                }
            },
            Command::Terminals(args) => {
                let json = args.json;
                match args.action.unwrap_or(TerminalsAction::List) {
                    TerminalsAction::List => terminals(&cfg, json).await,
                    TerminalsAction::Command { serial, command } => {
                        terminal_command(&cfg, &serial, command, json).await
                    }
                }
            }
            Command::Consent(args) => credentials::cli::consent(&cfg, args).await,
            Command::Credentials(args) => credentials::cli::credentials(&cfg, args).await,
            Command::Device(args) => {
                let by = std::env::var("SUDO_USER")
                    .or_else(|_| std::env::var("USER"))
                    .unwrap_or_else(|_| "rollcall-ingest".into());
                credentials::cli::device(&cfg, args, &by).await
            }
            Command::Rosters { json } => credentials::cli::rosters(&cfg, json).await,
            Command::Run => {
                let stop = CancellationToken::new();
                let s = stop.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutdown requested");
                    s.cancel();
                });
                Ok(rollcall_ingest::run(cfg, stop).await?)
            }
        }
    })
}

async fn connect(cfg: &Config) -> anyhow::Result<deadpool_postgres::Object> {
    let pool = rollcall_ingest::pg_tls::pool(&cfg.database, 2)?;
    pool.get()
        .await
        .map_err(|e| rollcall_ingest::pg_tls::pool_error(e, &cfg.database))
        .context("connecting to the database")
}

async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let mut c = connect(cfg).await?;
    let r = rollcall_ingest::db::schema::migrate(&mut c, cfg.database.schema_mode).await?;
    println!(
        "created tables: {:?}; applied migrations: {:?}",
        r.created_tables, r.applied
    );
    let user = cfg.campus.system_user.as_deref();
    match rollcall_ingest::coexist::set_system_user(&**c, user, Utc::now()).await? {
        Some(u) => println!(
            "system user for audit rows: {} ({}{})",
            u.name,
            u.id,
            if u.created { ", created" } else { "" }
        ),
        None => println!("system user for audit rows: none (campus.system_user is not set)"),
    }
    Ok(())
}

async fn check(cfg: &Config, since: Duration) -> anyhow::Result<()> {
    use rollcall_ingest::coexist::{self, Expected, Severity};
    let c = connect(cfg).await?;
    let missing = rollcall_ingest::db::schema::check(&c).await?;
    if !missing.is_empty() {
        for m in &missing {
            println!("missing: {m}");
        }
        std::process::exit(1);
    }
    let since = chrono::Duration::from_std(since)
        .ok()
        .and_then(|d| Utc::now().checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let x = Expected {
        owners: cfg.jobs.owner,
        clock: cfg.campus.session_clock,
        tz: cfg.campus.timezone,
        system_user: cfg.campus.system_user.clone(),
        since,
    };
    let findings = coexist::check(&**c, &x).await?;
    println!("ok: the database has everything rollcall-ingest needs");
    let mut failed = false;
    for f in &findings {
        let word = match f.severity {
            Severity::Conflict => {
                failed = true;
                "conflict"
            }
            Severity::Warning => "warning",
        };
        println!("{word}: {}: {}", f.topic, f.text);
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

async fn list(cfg: &Config, last: u32, json: bool) -> anyhow::Result<()> {
    let pool = rollcall_ingest::pg_tls::pool(&cfg.database, 2)?;
    let history = jobs::history(&pool, last.into())
        .await
        .map_err(|e| match e {
            rollcall_ingest::db::DbError::Pool(p) => {
                anyhow::Error::from(rollcall_ingest::pg_tls::pool_error(p, &cfg.database))
            }
            other => other.into(),
        })
        .context("reading rollcall.job_run (run `rollcall-ingest migrate` if it is missing)")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&history)?);
        return Ok(());
    }
    for h in &history {
        let job = Job::from_name(h.job).expect("history lists known jobs");
        let every = job.interval(cfg);
        let schedule = if job.owner(cfg) == Owner::Campshub360 {
            format!(
                "left to CampsHub360's beat ({}; jobs.owner.{} = \"campshub360\")",
                job.beat_entries().join(", "),
                job.name()
            )
        } else if !cfg.jobs.enabled {
            "not scheduled on this replica (jobs.enabled = false)".to_string()
        } else if every.is_zero() {
            "not scheduled on this replica (interval 0s)".to_string()
        } else {
            format!("every {}", humantime::format_duration(every))
        };
        println!("{}: {schedule}", h.job);
        if h.runs.is_empty() {
            println!("  never ran");
        }
        for r in &h.runs {
            let took = r
                .finished_at
                .map(|f| format!("{:.2}s", (f - r.started_at).as_seconds_f64()))
                .unwrap_or_else(|| "unfinished".into());
            let how = if r.manual {
                "manual".to_string()
            } else {
                format!("slot {}", r.slot.format("%Y-%m-%dT%H:%M:%SZ"))
            };
            println!(
                "  {} {:<6} {how} on {} ({took}) {}",
                r.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
                r.status,
                r.node,
                r.detail
            );
        }
    }
    Ok(())
}

async fn run_job(cfg: &Config, m: &Manual, ctx: &JobContext, json: bool) -> anyhow::Result<()> {
    let pool = rollcall_ingest::pg_tls::pool(&cfg.database, 2)?;
    let result = jobs::run_manual(&pool, m, ctx).await.map_err(|e| match e {
        jobs::ManualError::Db(rollcall_ingest::db::DbError::Pool(p)) => {
            anyhow::Error::from(rollcall_ingest::pg_tls::pool_error(p, &cfg.database))
        }
        other => other.into(),
    })?;
    let (what, detail, ok) = match &result {
        ManualResult::Ran(d) => ("ran", d.clone(), true),
        ManualResult::DryRun(d) => ("dry run", d.clone(), true),
        ManualResult::Failed(e) => ("failed", serde_json::json!({ "error": e }), false),
    };
    if json {
        let out = serde_json::json!({
            "job": m.job.name(),
            "at": m.at,
            "from": m.dates.map(|d| d.from.to_string()),
            "to": m.dates.map(|d| d.to.to_string()),
            "result": what,
            "detail": detail,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let dates = m
            .dates
            .map(|d| format!(" for {} to {}", d.from, d.to))
            .unwrap_or_default();
        let note = match result {
            ManualResult::Ran(_) => "committed, recorded in rollcall.job_run",
            ManualResult::DryRun(_) => "rolled back: nothing changed; this is what it would do",
            ManualResult::Failed(_) => {
                "nothing changed; the failure is recorded in rollcall.job_run"
            }
        };
        println!(
            "{} {what} at {}{dates} ({note})\n{}",
            m.job.name(),
            m.at.format("%Y-%m-%dT%H:%M:%SZ"),
            serde_json::to_string_pretty(&detail)?
        );
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn terminals(cfg: &Config, json: bool) -> anyhow::Result<()> {
    let c = connect(cfg).await?;
    let list = views::terminals(&**c).await.context(
        "reading rollcall.adms_terminal (run `rollcall-ingest migrate` if it is missing)",
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "no terminal has called (see the README: pointing a ZKTeco terminal at rollcall-ingest)"
        );
    }
    let t = |d: DateTime<Utc>| d.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let or = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for v in &list {
        let state = match v.state {
            TerminalState::Admitted => format!("admitted (room {})", or(v.room.clone())),
            TerminalState::Unregistered => {
                "unregistered: refused, keeping its records (register its serial number as an \
                 attendance_biometric_device.device_id)"
                    .into()
            }
            TerminalState::Disabled => {
                "disabled: refused, keeping its records (is_enabled = false)".into()
            }
        };
        println!("{}: {state}", v.serial);
        println!(
            "  last seen {} from {} (first {}), firmware {}",
            t(v.last_seen),
            or(v.last_ip.clone()),
            t(v.first_seen),
            if v.firmware.is_empty() {
                "-"
            } else {
                &v.firmware
            }
        );
        println!(
            "  stamps ATTLOG {} OPERLOG {}; {} records stored, {} in its log",
            or(v.attlog_stamp.clone()),
            or(v.operlog_stamp.clone()),
            v.records,
            or(v.log_records.map(|n| n.to_string()))
        );
        match (v.clock_offset_s, v.clock_measured_at) {
            (Some(o), Some(at)) => println!("  clock offset {o:+} s (measured {})", t(at)),
            _ => println!("  clock offset not measured yet"),
        }
        println!("  {} commands pending", v.pending.len());
        for p in &v.pending {
            println!(
                "    #{} {} (queued {} by {}, sent {} times)",
                p.id,
                p.command.replace('\t', " "),
                t(p.queued_at),
                p.queued_by,
                p.sent_count
            );
        }
        println!("  {} alerts open", v.alerts.len());
        for a in &v.alerts {
            println!("    {} {}: {}", t(a.detected_at), a.kind, a.detail);
        }
    }
    Ok(())
}

async fn terminal_command(
    cfg: &Config,
    serial: &str,
    command: TerminalCommand,
    json: bool,
) -> anyhow::Result<()> {
    let cmd = match command {
        TerminalCommand::Query { from, to } => {
            let from_t = views::wall_time(&from, false).map_err(anyhow::Error::msg)?;
            let to_t = match to {
                Some(to) => views::wall_time(&to, true).map_err(anyhow::Error::msg)?,
                None => from_t
                    .date()
                    .and_hms_opt(23, 59, 59)
                    .context("end of --from's day")?,
            };
            AdmsCommand::QueryAttLog {
                from: from_t,
                to: to_t,
            }
        }
        TerminalCommand::User { pin, name, card } => AdmsCommand::PushUser { pin, name, card },
        TerminalCommand::Reboot => AdmsCommand::Reboot,
    };
    // The text is checked before connecting: a wrong PIN or range says so without a database.
    cmd.text().map_err(anyhow::Error::msg)?;
    let c = connect(cfg).await?;
    let by = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let now = Utc::now();
    let (id, text) = views::queue(&**c, serial, &cmd, &by, now)
        .await
        .map_err(|e| match e {
            rollcall_ingest::db::DbError::Schema(m) => anyhow::Error::msg(m),
            other => anyhow::Error::from(other),
        })?;
    if json {
        let out = serde_json::json!({
            "id": id, "serial": serial, "command": text, "queued_at": now, "queued_by": by,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "queued #{id} for {serial}: {} (sent at its next poll; `rollcall-ingest terminals` shows it until answered)",
            text.replace('\t', " ")
        );
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// As rollcalld: the filter from `ROLLCALL_LOG` (else `RUST_LOG`, the older spelling), stderr,
/// colours only on a terminal.
fn init_logs(format: LogFormat) {
    let filter = ["ROLLCALL_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| tracing_subscriber::EnvFilter::try_from_env(var).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info,rumqttc=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
