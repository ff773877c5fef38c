//! Scheduled jobs, run exactly once per occurrence across all replicas.
//!
//! Each job has an interval; its occurrences are the multiples of the interval since the Unix
//! epoch ("slots"), so every replica computes the same slots. To run a slot, a replica opens a
//! transaction, takes `pg_try_advisory_xact_lock` for the job (another replica running it makes
//! us skip), inserts the claim row `rollcall.job_run (job, slot)` (a conflict means the slot
//! already ran), does the work, records the result and commits: the claim and the work commit
//! together or not at all, so a replica killed mid-job leaves the slot free for the others. A
//! failed run is recorded as `failed` and may be claimed again.

mod sessions;
mod stats;
mod upkeep;

pub use sessions::{generate_sessions, open_close};
pub use stats::statistics;
pub use upkeep::{device_health, retention};

use crate::config::{Config, SessionClock};
use crate::db::DbError;
use crate::metrics::{JobLabel, Metrics};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Sessions from the timetable for the rolling window.
    GenerateSessions,
    /// Auto open, auto close, AUTO_MARK_ABSENT.
    OpenClose,
    /// Statistics and exam eligibility.
    Statistics,
    /// Retention cleanup.
    Retention,
    /// Silent devices, rooms without punches, changes of device enablement.
    DeviceHealth,
}

impl Job {
    /// All jobs.
    pub const ALL: [Job; 5] = [
        Job::GenerateSessions,
        Job::OpenClose,
        Job::Statistics,
        Job::Retention,
        Job::DeviceHealth,
    ];

    /// Stable name (claim rows, metrics, advisory lock key).
    pub fn name(self) -> &'static str {
        match self {
            Job::GenerateSessions => "generate_sessions",
            Job::OpenClose => "open_close",
            Job::Statistics => "statistics",
            Job::Retention => "retention",
            Job::DeviceHealth => "device_health",
        }
    }

    fn interval_s(self, c: &Config) -> u64 {
        match self {
            Job::GenerateSessions => c.jobs.generate_sessions_every_s,
            Job::OpenClose => c.jobs.open_close_every_s,
            Job::Statistics => c.jobs.statistics_every_s,
            Job::Retention => c.jobs.retention_every_s,
            Job::DeviceHealth => c.jobs.device_health_every_s,
        }
    }
}

/// What jobs need from the configuration.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Replica name.
    pub node: String,
    /// Campus time zone.
    pub tz: chrono_tz::Tz,
    /// Session clock.
    pub clock: SessionClock,
    /// Days ahead to generate.
    pub days_ahead: i64,
    /// Fallback grace.
    pub default_grace_minutes: i64,
    /// Late counts as attended.
    pub late_counts_as_attended: bool,
    /// Fallback threshold.
    pub default_threshold_percent: f64,
    /// Fallback retention.
    pub default_retention_years: i64,
    /// Ledger / dead letter retention.
    pub ledger_retention_days: i64,
    /// Silent-device threshold.
    pub device_silent_after_s: i64,
}

impl JobContext {
    /// From the config.
    pub fn from_config(c: &Config) -> Self {
        JobContext {
            node: c.node_name.clone(),
            tz: c.campus_tz().unwrap_or(chrono_tz::Asia::Kolkata),
            clock: c.campus.session_clock,
            days_ahead: c.jobs.generate_days_ahead,
            default_grace_minutes: c.attendance.default_grace_minutes,
            late_counts_as_attended: c.attendance.late_counts_as_attended,
            default_threshold_percent: c.attendance.default_threshold_percent,
            default_retention_years: c.attendance.default_retention_years,
            ledger_retention_days: c.jobs.ledger_retention_days,
            device_silent_after_s: c.jobs.device_silent_after_s,
        }
    }
}

/// The result of trying to run one slot.
#[derive(Debug, Clone, PartialEq)]
pub enum RunResult {
    /// This replica ran it; the job's summary.
    Ran(serde_json::Value),
    /// Another replica holds the job right now, or the slot already ran.
    Skipped,
    /// It failed (recorded in `rollcall.job_run`).
    Failed(String),
}

/// The slot an instant falls in.
pub fn slot_of(now: DateTime<Utc>, interval_s: u64) -> DateTime<Utc> {
    let i = interval_s.max(1) as i64;
    let t = now.timestamp().div_euclid(i) * i;
    DateTime::from_timestamp(t, 0).unwrap_or(now)
}

async fn work(
    job: Job,
    tx: &tokio_postgres::Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
) -> Result<serde_json::Value, DbError> {
    match job {
        Job::GenerateSessions => generate_sessions(tx, ctx, now).await,
        Job::OpenClose => open_close(tx, ctx, now).await,
        Job::Statistics => statistics(tx, ctx, now).await,
        Job::Retention => retention(tx, ctx, now).await,
        Job::DeviceHealth => device_health(tx, ctx, now).await,
    }
}

/// Runs `job`'s `slot` if no replica has, with `now` as the job's idea of the time.
pub async fn run_slot(
    pool: &Pool,
    job: Job,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
    ctx: &JobContext,
) -> Result<RunResult, DbError> {
    let mut c = pool.get().await?;
    let tx = c.transaction().await?;
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock(1919249516, hashtext($1))",
            &[&job.name()],
        )
        .await?
        .get(0);
    if !locked {
        return Ok(RunResult::Skipped);
    }
    let claimed = tx
        .query_opt(
            "INSERT INTO rollcall.job_run (job, slot, node, started_at, status, detail) VALUES ($1, $2, $3, clock_timestamp(), 'ok', '{}')
             ON CONFLICT (job, slot) DO UPDATE SET node = $3, started_at = clock_timestamp(), status = 'ok'
             WHERE rollcall.job_run.status = 'failed'
             RETURNING 1",
            &[&job.name(), &slot, &ctx.node],
        )
        .await?;
    if claimed.is_none() {
        return Ok(RunResult::Skipped);
    }
    tx.execute("SAVEPOINT job", &[]).await?;
    match work(job, &tx, ctx, now).await {
        Ok(detail) => {
            tx.execute(
                "UPDATE rollcall.job_run SET finished_at = clock_timestamp(), detail = $3 WHERE job = $1 AND slot = $2",
                &[&job.name(), &slot, &detail],
            )
            .await?;
            tx.commit().await?;
            Ok(RunResult::Ran(detail))
        }
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            let msg = e.to_string();
            tx.execute("ROLLBACK TO SAVEPOINT job", &[]).await?;
            tx.execute(
                "UPDATE rollcall.job_run SET finished_at = clock_timestamp(), status = 'failed', detail = $3 WHERE job = $1 AND slot = $2",
                &[&job.name(), &slot, &serde_json::json!({ "error": msg })],
            )
            .await?;
            tx.commit().await?;
            Ok(RunResult::Failed(msg))
        }
    }
}

/// Runs every enabled job on its schedule until `stop`.
pub async fn run(cfg: &Config, pool: Pool, metrics: Arc<Metrics>, stop: CancellationToken) {
    if !cfg.jobs.enabled {
        return;
    }
    let ctx = Arc::new(JobContext::from_config(cfg));
    let mut tasks = tokio::task::JoinSet::new();
    for job in Job::ALL {
        let interval = job.interval_s(cfg);
        if interval == 0 {
            continue;
        }
        let (pool, ctx, metrics, stop) = (pool.clone(), ctx.clone(), metrics.clone(), stop.clone());
        tasks.spawn(async move {
            let mut last = None;
            loop {
                let now = Utc::now();
                let slot = slot_of(now, interval);
                if last != Some(slot) {
                    let result = match run_slot(&pool, job, slot, now, &ctx).await {
                        Ok(RunResult::Ran(detail)) => {
                            if job == Job::DeviceHealth
                                && let Some(n) = detail["silent_total"].as_i64()
                            {
                                metrics.silent_devices.set(n);
                            }
                            info!(job = job.name(), %slot, %detail, "job ran");
                            last = Some(slot);
                            "ok"
                        }
                        Ok(RunResult::Skipped) => {
                            last = Some(slot);
                            "skipped"
                        }
                        Ok(RunResult::Failed(e)) => {
                            warn!(job = job.name(), %slot, error = %e, "job failed");
                            last = Some(slot);
                            "failed"
                        }
                        Err(e) => {
                            warn!(job = job.name(), %slot, error = %e, "job could not run; will retry");
                            "retry"
                        }
                    };
                    metrics.job_runs.get_or_create(&JobLabel { job: job.name().into(), result: result.into() }).inc();
                }
                // Wake at the next slot (or in 5 s to retry), whichever is first.
                let next = slot_of(Utc::now(), interval).timestamp() + interval as i64;
                let wait = (next - Utc::now().timestamp()).clamp(1, 5) as u64;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Reads a configuration value (`attendance_configuration`), typed loosely like Django's
/// `get_typed_value`.
pub(crate) async fn setting(
    tx: &tokio_postgres::Transaction<'_>,
    key: &str,
) -> Result<Option<String>, DbError> {
    Ok(tx
        .query_opt(
            "SELECT value FROM attendance_configuration WHERE key = $1 AND is_active",
            &[&key],
        )
        .await?
        .map(|r| r.get::<_, String>(0).trim().to_string()))
}

pub(crate) async fn setting_bool(
    tx: &tokio_postgres::Transaction<'_>,
    key: &str,
    default: bool,
) -> Result<bool, DbError> {
    Ok(setting(tx, key)
        .await?
        .map(|v| matches!(v.to_lowercase().as_str(), "true" | "1" | "yes"))
        .unwrap_or(default))
}

pub(crate) async fn setting_f64(
    tx: &tokio_postgres::Transaction<'_>,
    key: &str,
    default: f64,
) -> Result<f64, DbError> {
    Ok(setting(tx, key)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_interval_multiples() {
        let t = DateTime::from_timestamp(3_725, 0).unwrap();
        assert_eq!(slot_of(t, 3600).timestamp(), 3600);
        assert_eq!(slot_of(t, 60).timestamp(), 3720);
    }
}
