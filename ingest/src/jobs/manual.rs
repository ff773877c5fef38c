//! Jobs an administrator drives (`rollcall-ingest jobs`): the history of each job, and one job
//! run now, at a chosen instant or over chosen campus dates, for real or as a dry run.
//!
//! A manual run is claimed like a scheduled one: in one transaction it takes the job's advisory
//! lock (waiting up to `wait` for a replica or another manual run that holds it), writes its own
//! `rollcall.job_run` row (slot = when it started, `detail.manual` = what was asked), does the
//! work and commits, all or nothing. So a manual run and a replica never work on a job at the
//! same time, and the history shows both. A dry run does the same and rolls back: its detail is
//! exactly what the run would change now, and nothing is left behind, not even the claim.

use super::{Job, JobContext, LOCK_SQL, work};
use crate::db::DbError;
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use deadpool_postgres::Pool;
use std::time::Duration;
use tokio_postgres::error::SqlState;

/// Campus dates a run is limited to, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateRange {
    /// First date, included.
    pub from: NaiveDate,
    /// Last date, included.
    pub to: NaiveDate,
}

/// Longest range one manual run covers (a year and a day).
pub const MAX_RANGE_DAYS: i64 = 367;

impl DateRange {
    /// `from..=to`, refused when reversed or longer than [`MAX_RANGE_DAYS`].
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self, String> {
        if to < from {
            return Err(format!("--to {to} is before --from {from}"));
        }
        if (to - from).num_days() >= MAX_RANGE_DAYS {
            return Err(format!(
                "--from {from} --to {to} spans more than {MAX_RANGE_DAYS} days: run it in parts"
            ));
        }
        Ok(DateRange { from, to })
    }
}

/// An instant from the command line: RFC 3339 with an offset (`2025-01-06T10:58:00+05:30`,
/// `...Z`), or a campus wall-clock time without one (`2025-01-06T10:58`, `2025-01-06 10:58:30`).
pub fn parse_instant(text: &str, tz: chrono_tz::Tz) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
    .ok_or_else(|| {
        format!(
            "--at {text:?}: write an instant as 2025-01-06T10:58:00+05:30, or campus time as \
                 \"2025-01-06 10:58\""
        )
    })?;
    tz.from_local_datetime(&local)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("--at {text:?} does not exist in {tz} (a daylight-saving gap)"))
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Manual {
    /// Which job to run now.
    pub job: Job,
    /// The job's "now".
    pub at: DateTime<Utc>,
    /// Campus dates to limit it to (jobs that [take dates](Job::takes_dates) only).
    pub dates: Option<DateRange>,
    /// Roll back instead of committing.
    pub dry_run: bool,
    /// How long to wait for a replica (or another manual run) that holds the job.
    pub wait: Duration,
}

/// How a manual run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ManualResult {
    /// Committed; the job's detail.
    Ran(serde_json::Value),
    /// Rolled back; what it would have changed.
    DryRun(serde_json::Value),
    /// The job failed (recorded as `failed` unless a dry run).
    Failed(String),
}

/// Why a manual run did not run.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// The lock stayed taken for the whole wait.
    #[error(
        "{job} is being run by a replica or another manual run and did not finish within {wait}: \
         try again, or give a longer --wait"
    )]
    Busy {
        /// The job another replica is running.
        job: &'static str,
        /// The wait, written out.
        wait: String,
    },
    /// Dates given to a job that has none to limit.
    #[error(
        "{0} works on everything it finds, not on dates: run it with --at (or without: now), \
         not --from/--to"
    )]
    NoDates(&'static str),
    /// PostgreSQL failed while running the job.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<tokio_postgres::Error> for ManualError {
    fn from(e: tokio_postgres::Error) -> Self {
        ManualError::Db(e.into())
    }
}

/// Runs `m` now under the job's claim (see the module docs).
pub async fn run_manual(
    pool: &Pool,
    m: &Manual,
    ctx: &JobContext,
) -> Result<ManualResult, ManualError> {
    let job = m.job;
    if m.dates.is_some() && !job.takes_dates() {
        return Err(ManualError::NoDates(job.name()));
    }
    let mut c = pool.get().await.map_err(DbError::from)?;
    let tx = c.transaction().await?;
    let busy = || ManualError::Busy {
        job: job.name(),
        wait: humantime::format_duration(m.wait).to_string(),
    };
    if m.wait.is_zero() {
        let locked: bool = tx
            .query_one(
                &format!("SELECT pg_try_advisory_xact_lock{LOCK_SQL}"),
                &[&job.name()],
            )
            .await?
            .get(0);
        if !locked {
            return Err(busy());
        }
    } else {
        let ms = format!("{}ms", m.wait.as_millis().max(1));
        tx.execute("SELECT set_config('lock_timeout', $1, true)", &[&ms])
            .await?;
        match tx
            .execute(
                &format!("SELECT pg_advisory_xact_lock{LOCK_SQL}"),
                &[&job.name()],
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => return Err(busy()),
            Err(e) => return Err(e.into()),
        }
        tx.execute("SELECT set_config('lock_timeout', '0', true)", &[])
            .await?;
    }
    let asked = serde_json::json!({
        "at": m.at,
        "from": m.dates.map(|d| d.from.to_string()),
        "to": m.dates.map(|d| d.to.to_string()),
    });
    let slot: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO rollcall.job_run (job, slot, node, started_at, status, detail)
             VALUES ($1, clock_timestamp(), $2, clock_timestamp(), 'ok', jsonb_build_object('manual', $3::jsonb))
             RETURNING slot",
            &[&job.name(), &ctx.node, &asked],
        )
        .await?
        .get(0);
    tx.execute("SAVEPOINT job", &[]).await?;
    let dates = m.dates.map(|d| (d.from, d.to));
    match work(job, &tx, ctx, m.at, dates).await {
        Ok(detail) if m.dry_run => {
            tx.rollback().await?;
            Ok(ManualResult::DryRun(detail))
        }
        Ok(detail) => {
            let mut stored = detail.clone();
            if let Some(o) = stored.as_object_mut() {
                o.insert("manual".into(), asked);
            }
            tx.execute(
                "UPDATE rollcall.job_run SET finished_at = clock_timestamp(), detail = $3 WHERE job = $1 AND slot = $2",
                &[&job.name(), &slot, &stored],
            )
            .await?;
            tx.commit().await?;
            Ok(ManualResult::Ran(detail))
        }
        Err(e) if e.is_transient() => Err(e.into()),
        Err(e) => {
            let msg = e.to_string();
            if m.dry_run {
                tx.rollback().await?;
                return Ok(ManualResult::Failed(msg));
            }
            tx.execute("ROLLBACK TO SAVEPOINT job", &[]).await?;
            tx.execute(
                "UPDATE rollcall.job_run SET finished_at = clock_timestamp(), status = 'failed', detail = $3 WHERE job = $1 AND slot = $2",
                &[&job.name(), &slot, &serde_json::json!({ "error": msg, "manual": asked })],
            )
            .await?;
            tx.commit().await?;
            Ok(ManualResult::Failed(msg))
        }
    }
}

/// One row of `rollcall.job_run`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PastRun {
    /// The scheduled occurrence, or when a manual run started.
    pub slot: DateTime<Utc>,
    /// The replica (`node_name`) that ran it.
    pub node: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it finished (none: running now, or killed mid-run and rolled back soon).
    pub finished_at: Option<DateTime<Utc>>,
    /// `ok` or `failed`.
    pub status: String,
    /// Run by `rollcall-ingest jobs run`.
    pub manual: bool,
    /// The job's detail (or its error).
    pub detail: serde_json::Value,
}

/// A job's latest runs, newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobHistory {
    /// The job's name.
    pub job: &'static str,
    /// Its latest runs.
    pub runs: Vec<PastRun>,
}

/// The last `per_job` runs of every job.
pub async fn history(pool: &Pool, per_job: i64) -> Result<Vec<JobHistory>, DbError> {
    let c = pool.get().await?;
    let rows = c
        .query(
            "SELECT job, slot, node, started_at, finished_at, status, detail FROM (
               SELECT *, row_number() OVER (PARTITION BY job ORDER BY started_at DESC, slot DESC) AS n
               FROM rollcall.job_run) r
             WHERE n <= $1 ORDER BY job, started_at DESC, slot DESC",
            &[&per_job],
        )
        .await?;
    Ok(Job::ALL
        .iter()
        .map(|job| JobHistory {
            job: job.name(),
            runs: rows
                .iter()
                .filter(|r| r.get::<_, &str>(0) == job.name())
                .map(|r| {
                    let detail: serde_json::Value = r.get(6);
                    PastRun {
                        slot: r.get(1),
                        node: r.get(2),
                        started_at: r.get(3),
                        finished_at: r.get(4),
                        status: r.get(5),
                        manual: detail.get("manual").is_some(),
                        detail,
                    }
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_take_an_offset_or_campus_time() {
        let tz = chrono_tz::Asia::Kolkata;
        let want: DateTime<Utc> = "2025-01-06T05:28:00Z".parse().unwrap();
        for text in [
            "2025-01-06T10:58:00+05:30",
            "2025-01-06T05:28:00Z",
            "2025-01-06T10:58",
            "2025-01-06 10:58",
            "2025-01-06 10:58:00",
        ] {
            assert_eq!(parse_instant(text, tz), Ok(want), "{text}");
        }
        let e = parse_instant("yesterday", tz).unwrap_err();
        assert!(e.contains("2025-01-06T10:58:00+05:30"), "{e}");
        let gap = parse_instant("2025-03-30 01:30", chrono_tz::Europe::London).unwrap_err();
        assert!(gap.contains("daylight-saving gap"), "{gap}");
    }

    #[test]
    fn date_ranges_are_ordered_and_bounded() {
        let d = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert!(DateRange::new(d("2025-01-06"), d("2025-01-06")).is_ok());
        assert!(
            DateRange::new(d("2025-01-07"), d("2025-01-06"))
                .unwrap_err()
                .contains("before")
        );
        assert!(
            DateRange::new(d("2025-01-01"), d("2026-01-03"))
                .unwrap_err()
                .contains("in parts")
        );
    }
}
