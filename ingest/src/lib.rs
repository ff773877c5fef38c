//! `rollcall-ingest`: Rollcall's central service. It consumes punch batches and heartbeats from
//! MQTT (a shared, persistent subscription, so replicas split the load), writes each batch in
//! one PostgreSQL transaction into the CampsHub360 schema and its own `rollcall` schema, acks
//! the broker and each device only after COMMIT, and runs the attendance jobs that CampsHub360
//! declares but never runs.
//!
//! * [`punch`]: decode and check a message (pure); what cannot be read becomes a dead letter.
//! * [`admit`]: whether a punch may count at all, and at what instant (pure).
//! * [`decide`]: a punch's outcome from what the database knows (pure).
//! * [`db`]: pool, migrations and schema check, the batch writer.
//! * [`pg_tls`]: TLS to PostgreSQL (rustls) and the pool built with it.
//! * [`consumer`]: the MQTT loop, batching, acks.
//! * [`jobs`]: scheduled jobs, exactly once per occurrence across replicas.
//! * [`adms`]: ZKTeco PUSH (ADMS / iclock) terminals over HTTP, through the same writer.
//! * [`credentials`]: consent, sealed cards and templates, room rosters, enrolments, commands.
//! * [`fleet`]: the read-only live fleet page (`/fleet`) and the gauges only the database knows.
//! * [`metrics`], [`config`].
//!
//! Entry point: [`run`].
#![deny(missing_docs)]

pub mod admit;
pub mod adms;
pub mod coexist;
pub mod config;
pub mod consumer;
pub mod credentials;
pub mod db;
pub mod decide;
pub mod fleet;
pub mod jobs;
pub mod metrics;
pub mod pg_tls;
pub mod punch;

use config::Config;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The service's failures.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration file is missing or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// PostgreSQL refused or failed (connecting, migrating, writing).
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Something to fix before starting (files, TLS material).
    #[error("{0}")]
    Setup(String),
}

/// Makes a panic on any thread end the process with status 101, after the usual message
/// (location, payload, backtrace when asked for). Without it tokio catches a task's panic: the
/// task's work stops silently and the process may even exit 0, so systemd's
/// `Restart=on-failure` would not restart it. Call it first in `main`, before the runtime.
pub fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::exit(101);
    }));
}

/// Connects, migrates (when configured), then consumes and runs jobs until `shutdown`.
/// Returns once the batch in flight is committed and acked, or abandoned unacked.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), IngestError> {
    run_with_metrics(cfg, Arc::new(metrics::Metrics::new()), shutdown).await
}

/// [`run`] with a caller-held metrics registry.
pub async fn run_with_metrics(
    cfg: Config,
    metrics: Arc<metrics::Metrics>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let pool = pg_tls::pool(&cfg.database, cfg.database.pool_size)?;
    // One connection before anything else (and migrations when configured): a database that is
    // down is waited for, a TLS or certificate problem ends the start with what to fix.
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        let attempt = async {
            let mut c = pool.get().await?;
            if cfg.database.migrate_on_start {
                let r = db::schema::migrate(&mut c, cfg.database.schema_mode).await?;
                let user = cfg.campus.system_user.as_deref();
                coexist::set_system_user(&**c, user, chrono::Utc::now()).await?;
                Ok::<_, db::DbError>(Some(r))
            } else {
                Ok(None)
            }
        };
        match attempt.await {
            Ok(Some(r)) => {
                info!(created_tables = ?r.created_tables, applied = ?r.applied, "database ready");
                break;
            }
            Ok(None) => {
                info!("database reachable");
                break;
            }
            Err(e) => {
                if let Some(what_to_do) = pg_tls::explain(&e, &cfg.database) {
                    return Err(IngestError::Setup(what_to_do));
                }
                if !e.is_transient() {
                    return Err(e.into());
                }
                warn!(error = %e, "database not reachable; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    }
    let tracker = tokio_util::task::TaskTracker::new();
    let aux_stop = CancellationToken::new();
    if let Some(addr) = cfg.metrics.listen {
        let fleet = Arc::new(fleet::Fleet::new(pool.clone(), &cfg));
        let (m, f, s) = (metrics.clone(), fleet.clone(), aux_stop.clone());
        tracker.spawn(async move {
            if let Err(e) = metrics::serve(addr, m, Some(f), s).await {
                warn!(%addr, error = %e, "metrics endpoint failed");
            }
        });
        tracker.spawn(fleet::refresh_gauges(
            fleet,
            metrics.clone(),
            aux_stop.clone(),
        ));
    }
    if let Some(adms_cfg) = cfg.adms.clone() {
        // Bound before the consumer starts: a wrong address or certificate stops the start.
        let settings = Arc::new(db::batch::WriterSettings::from_config(&cfg));
        let (listener, tls) = adms::http::bind(&adms_cfg)
            .await
            .map_err(IngestError::Setup)?;
        info!(listen = %adms_cfg.listen, tls = tls.is_some(), "ZKTeco ADMS endpoint listening");
        let shared = Arc::new(adms::http::Shared {
            pool: pool.clone(),
            settings,
            timing: adms_cfg.timing,
            max_body: adms_cfg.max_body,
            metrics: metrics.clone(),
        });
        let s = aux_stop.clone();
        tracker.spawn(adms::http::serve(listener, tls, shared, s));
    }
    if let Some(cc) = cfg.credentials.clone() {
        // The key file is read before consuming starts: a missing or unreadable key stops the
        // start with what to fix rather than leaving rosters silently unpublished.
        credentials::keys::KeyRing::load(&cc.key_file)
            .map_err(|e| IngestError::Setup(e.to_string()))?;
        let (c, p, s) = (Arc::new(cfg.clone()), pool.clone(), aux_stop.clone());
        tracker.spawn(async move {
            if let Err(e) = credentials::run(c, cc, p, s).await {
                warn!(error = %e, "credentials service stopped");
            }
        });
    }
    {
        let (c, p, m, s) = (cfg.clone(), pool.clone(), metrics.clone(), shutdown.clone());
        tracker.spawn(async move { jobs::run(&c, p, m, s).await });
    }
    let result = consumer::run(&cfg, pool, metrics, shutdown.clone()).await;
    shutdown.cancel();
    aux_stop.cancel();
    tracker.close();
    tracker.wait().await;
    info!("stopped");
    result
}
