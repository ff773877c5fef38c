//! `rollcall-ingest`: see the library docs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use rollcall_ingest::config::Config;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Rollcall's central ingestion service")]
struct Cli {
    /// Configuration file.
    #[arg(short, long, default_value = "/etc/rollcall/ingest.toml")]
    config: PathBuf,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Consume and run jobs (the default).
    Run,
    /// Validate the configuration file and exit.
    Validate,
    /// Apply migrations (and, in standalone mode, create missing CampsHub360 tables).
    Migrate,
    /// Report whether the database has everything ingest needs; exit 1 naming what is missing.
    Check,
}

fn main() -> anyhow::Result<()> {
    rollcall_ingest::exit_on_panic();
    tokio::runtime::Runtime::new()?.block_on(run(Cli::parse()))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    if cli.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let cfg = Config::load(&cli.config)?;
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Validate => println!("{}: ok", cli.config.display()),
        Cmd::Migrate => {
            let pool = rollcall_ingest::pg_tls::pool(&cfg.database, 2)?;
            let mut c = pool
                .get()
                .await
                .map_err(|e| rollcall_ingest::pg_tls::pool_error(e, &cfg.database))
                .context("connecting to the database")?;
            let r = rollcall_ingest::db::schema::migrate(&mut c, cfg.database.schema_mode).await?;
            println!(
                "created tables: {:?}; applied migrations: {:?}",
                r.created_tables, r.applied
            );
        }
        Cmd::Check => {
            let pool = rollcall_ingest::pg_tls::pool(&cfg.database, 2)?;
            let c = pool
                .get()
                .await
                .map_err(|e| rollcall_ingest::pg_tls::pool_error(e, &cfg.database))
                .context("connecting to the database")?;
            let missing = rollcall_ingest::db::schema::check(&c).await?;
            if missing.is_empty() {
                println!("ok: the database has everything rollcall-ingest needs");
            } else {
                for m in &missing {
                    println!("missing: {m}");
                }
                std::process::exit(1);
            }
        }
        Cmd::Run => {
            let stop = CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
                }
                tracing::info!("shutdown requested");
                s.cancel();
            });
            rollcall_ingest::run(cfg, stop).await?;
        }
    }
    Ok(())
}
