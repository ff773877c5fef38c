//! Scheduled jobs, run exactly once per occurrence across all replicas.
//!
//! Each job has an interval; its occurrences are the multiples of the interval since the Unix
//! epoch ("slots"), so every replica computes the same slots. To run a slot, a replica opens a
//! transaction, takes `pg_try_advisory_xact_lock` for the job (another replica running it makes
//! us skip), inserts the claim row `rollcall.job_run (job, slot)` (a conflict means the slot
//! already ran), does the work, records the result and commits: the claim and the work commit
//! together or not at all, so a replica killed mid-job leaves the slot free for the others. A
//! failed run is recorded as `failed` and may be claimed again. A replica that finds the lock
//! taken tries the same slot again a few seconds later (the holder may be a manual run, not
//! that slot's run).
//!
//! `rollcall-ingest jobs run` ([`manual`]) takes the same lock and writes its own claim row, so
//! a manual run and a replica never do a job's work at the same time, and the history shows both.
//!
//! Each job CampsHub360's Celery beat also declares has one owner (`[jobs.owner]`, see
//! [`Job::owner`]): a job CampsHub360 owns is never scheduled here. A committed run of a job that
//! stamps the rows it writes with its "now" records that instant in `rollcall.job_stamp`, so
//! `rollcall-ingest check` can tell Rollcall's rows from another writer's.

mod manual;
mod sessions;
mod stats;
mod upkeep;

pub use manual::{
    DateRange, JobHistory, MAX_RANGE_DAYS, Manual, ManualError, ManualResult, PastRun, history,
    parse_instant, run_manual,
};
pub use sessions::{generate_sessions, open_close};
pub use stats::statistics;
pub use upkeep::{device_health, retention};

use crate::config::{Config, Owner, SessionClock};
use crate::db::DbError;
use crate::metrics::{JobLabel, Metrics};
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The scheduled jobs ingest runs (each under its own advisory lock, one replica at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Sessions from the timetable for the rolling window.
    GenerateSessions,
    /// Auto open, auto close, AUTO_MARK_ABSENT.
    OpenClose,
    /// Statistics and exam eligibility.
    Statistics,
    /// Deletes attendance data older than `DATA_RETENTION_YEARS`, and old ledger rows and dead
    /// letters.
    Retention,
    /// Silent devices, rooms without punches, changes of device enablement.
    DeviceHealth,
}

impl Job {
    /// Every job; each is scheduled on its own interval.
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

    /// The job named `name` (as [`Job::name`] spells it).
    pub fn from_name(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.name() == name)
    }

    /// Its interval; zero: not scheduled.
    pub fn interval(self, c: &Config) -> Duration {
        match self {
            Job::GenerateSessions => c.jobs.generate_sessions_every,
            Job::OpenClose => c.jobs.open_close_every,
            Job::Statistics => c.jobs.statistics_every,
            Job::Retention => c.jobs.retention_every,
            Job::DeviceHealth => c.jobs.device_health_every,
        }
    }

    /// Who runs it: `[jobs.owner]` for the jobs CampsHub360's beat also declares; device health
    /// has no counterpart there and is always Rollcall's.
    pub fn owner(self, c: &Config) -> Owner {
        let o = &c.jobs.owner;
        match self {
            Job::GenerateSessions => o.generate_sessions,
            Job::OpenClose => o.open_close,
            Job::Statistics => o.statistics,
            Job::Retention => o.retention,
            Job::DeviceHealth => Owner::Rollcall,
        }
    }

    /// The entries of CampsHub360's `CELERY_BEAT_SCHEDULE` (settings.py) that do this job's work:
    /// the ones to remove where Rollcall owns it, and to keep where CampsHub360 does.
    pub fn beat_entries(self) -> &'static [&'static str] {
        match self {
            Job::GenerateSessions => &["generate-daily-attendance-sessions"],
            Job::OpenClose => &[
                "auto-open-attendance-sessions",
                "auto-close-attendance-sessions",
            ],
            Job::Statistics => &["calculate-attendance-statistics"],
            Job::Retention => &["cleanup-old-attendance-data"],
            Job::DeviceHealth => &[],
        }
    }

    /// Whether its committed runs are stamped in `rollcall.job_stamp` (it writes CampsHub360
    /// rows carrying its "now": sessions' `created_at`, auto open/close audit rows'
    /// `created_at`, statistics' `updated_at`).
    pub fn stamps_rows(self) -> bool {
        matches!(
            self,
            Job::GenerateSessions | Job::OpenClose | Job::Statistics
        )
    }

    /// Whether a run can be limited to a range of campus dates.
    pub fn takes_dates(self) -> bool {
        matches!(self, Job::GenerateSessions | Job::OpenClose)
    }
}

/// What jobs need from the configuration.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// This replica's `node_name`, recorded with each job run.
    pub node: String,
    /// Campus time zone.
    pub tz: chrono_tz::Tz,
    /// How the campus stores session times: CampsHub360's wall clock as UTC, or true instants.
    pub clock: SessionClock,
    /// Days ahead of today to generate.
    pub days_ahead: i64,
    /// Grace minutes when `GRACE_PERIOD_MINUTES` is not configured in the database.
    pub default_grace_minutes: i64,
    /// Late counts as attended.
    pub late_counts_as_attended: bool,
    /// Eligibility threshold (percent) when `THRESHOLD_PERCENT` is not configured.
    pub default_threshold_percent: f64,
    /// Retention in years when `DATA_RETENTION_YEARS` is not configured.
    pub default_retention_years: i64,
    /// Ledger / dead letter retention.
    pub ledger_retention_days: i64,
    /// An enabled device silent this many seconds is marked `error`.
    pub device_silent_after_s: i64,
}

impl JobContext {
    /// From the config.
    pub fn from_config(c: &Config) -> Self {
        JobContext {
            node: c.node_name.clone(),
            tz: c.campus.timezone,
            clock: c.campus.session_clock,
            days_ahead: c.jobs.generate_days_ahead.into(),
            default_grace_minutes: c.attendance.default_grace_minutes,
            late_counts_as_attended: c.attendance.late_counts_as_attended,
            default_threshold_percent: c.attendance.default_threshold_percent,
            default_retention_years: c.attendance.default_retention_years,
            ledger_retention_days: (c.jobs.ledger_retention.as_secs() / 86_400).max(1) as i64,
            device_silent_after_s: c.jobs.device_silent_after.as_secs() as i64,
        }
    }
}

/// The result of trying to run one slot.
#[derive(Debug, Clone, PartialEq)]
pub enum RunResult {
    /// This replica ran it; the job's summary.
    Ran(serde_json::Value),
    /// The slot already ran.
    Skipped,
    /// Another replica or a manual run holds the job right now: try the slot again shortly.
    Busy,
    /// It failed (recorded in `rollcall.job_run`).
    Failed(String),
}

/// The slot an instant falls in (intervals are bounded by the configuration to a month).
pub fn slot_of(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let i = interval.as_secs().clamp(1, i64::MAX as u64) as i64;
    let t = now.timestamp().div_euclid(i) * i;
    DateTime::from_timestamp(t, 0).unwrap_or(now)
}

/// The job's advisory lock (one per job, shared by every replica and manual run).
const LOCK_SQL: &str = "(1919249516, hashtext($1))";

async fn work(
    job: Job,
    tx: &tokio_postgres::Transaction<'_>,
    ctx: &JobContext,
    now: DateTime<Utc>,
    dates: Option<(NaiveDate, NaiveDate)>,
) -> Result<serde_json::Value, DbError> {
    let detail = match job {
        Job::GenerateSessions => generate_sessions(tx, ctx, now, dates).await,
        Job::OpenClose => open_close(tx, ctx, now, dates).await,
        Job::Statistics => statistics(tx, ctx, now).await,
        Job::Retention => retention(tx, ctx, now).await,
        Job::DeviceHealth => device_health(tx, ctx, now).await,
    }?;
    if job.stamps_rows() {
        tx.execute(
            "INSERT INTO rollcall.job_stamp (job, stamp) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&job.name(), &now],
        )
        .await?;
    }
    Ok(detail)
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
            &format!("SELECT pg_try_advisory_xact_lock{LOCK_SQL}"),
            &[&job.name()],
        )
        .await?
        .get(0);
    if !locked {
        return Ok(RunResult::Busy);
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
    match work(job, &tx, ctx, now, None).await {
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
        let interval = job.interval(cfg);
        if interval.is_zero() {
            continue;
        }
        if job.owner(cfg) != Owner::Rollcall {
            info!(
                job = job.name(),
                beat = ?job.beat_entries(),
                "not scheduled: CampsHub360's beat owns this job (jobs.owner)"
            );
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
                        Ok(RunResult::Busy) => "busy",
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
                let next = slot_of(Utc::now(), interval).timestamp() + interval.as_secs() as i64;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_interval_multiples() {
        let t = DateTime::from_timestamp(3_725, 0).unwrap();
        assert_eq!(slot_of(t, Duration::from_secs(3600)).timestamp(), 3600);
        assert_eq!(slot_of(t, Duration::from_secs(60)).timestamp(), 3720);
    }
}
