//! Living next to CampsHub360's Django app and Celery beat: the system user named in Rollcall's
//! audit rows, and what `rollcall-ingest check` finds when another writer does a job Rollcall
//! owns, or when sessions are stored in two time conventions.
//!
//! How another writer is recognised: every committed run of a job that writes CampsHub360 rows
//! stamps them with its "now" and records that instant in `rollcall.job_stamp` (see
//! [`crate::jobs`]). A recent row of the job's kind whose time is none of those stamps was
//! written by someone else:
//!
//! | job | rows looked at | another writer is |
//! |---|---|---|
//! | `generate_sessions` | `attendance_session` with a timetable slot, by `created_at` | `generate-daily-attendance-sessions` |
//! | `open_close` | `attendance_audit_log` `auto_open` / `auto_close`, by `created_at` | `auto-open-attendance-sessions`, `auto-close-attendance-sessions` |
//! | `statistics` | `attendance_statistics`, by `updated_at` | `calculate-attendance-statistics` |
//!
//! `cleanup-old-attendance-data` deletes and leaves nothing to see, so retention cannot be
//! checked this way. The reverse is checked too: a job CampsHub360 owns that a Rollcall replica
//! ran anyway (a replica whose `[jobs.owner]` says otherwise).
//!
//! The time convention of a session generated from a timetable slot shows in its start: the
//! slot's wall-clock time read in UTC (`wallclock_as_utc`, CampsHub360's generator) or in the
//! campus zone (`utc`). Sessions without a slot, and campuses whose zone is UTC, cannot be told
//! apart and are not counted.

use crate::config::{JobOwners, Owner, SessionClock};
use crate::db::DbError;
use crate::jobs::Job;
use chrono::{DateTime, NaiveDate, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

/// The user Rollcall's audit rows name, once set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemUser {
    /// `accounts_user.id`.
    pub id: Uuid,
    /// As configured (`campus.system_user`).
    pub name: String,
    /// Whether setup created the account just now.
    pub created: bool,
}

async fn has_table(c: &impl GenericClient, name: &str) -> Result<bool, DbError> {
    Ok(c.query_one(
        "SELECT to_regclass($1) IS NOT NULL",
        &[&format!("public.{name}")],
    )
    .await?
    .get(0))
}

/// Records the system user `name` (an `accounts_user` id, or an email) in
/// `rollcall.system_user`, creating an account for an email not found: it cannot log in (an
/// unusable password, as Django's `set_unusable_password()` writes, and `is_active = false`).
/// `None` clears it: audit rows then carry `performed_by_id` NULL.
pub async fn set_system_user(
    c: &impl GenericClient,
    name: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<SystemUser>, DbError> {
    let Some(name) = name else {
        c.execute("DELETE FROM rollcall.system_user", &[]).await?;
        return Ok(None);
    };
    let users = has_table(c, "accounts_user").await?;
    let (id, created) = match Uuid::parse_str(name) {
        Ok(id) => {
            if users
                && c.query_opt("SELECT 1 FROM accounts_user WHERE id = $1", &[&id])
                    .await?
                    .is_none()
            {
                return Err(DbError::Schema(format!(
                    "campus.system_user {name}: no accounts_user has this id: create the user in \
                     CampsHub360's admin, or give an email to have one created"
                )));
            }
            (id, false)
        }
        Err(_) if !users => {
            return Err(DbError::Schema(format!(
                "campus.system_user {name:?}: this database has no accounts_user table to find \
                 or create it in: give an id (a uuid), or leave it unset"
            )));
        }
        Err(_) => {
            let found = c
                .query_opt(
                    "SELECT id FROM accounts_user WHERE lower(email) = lower($1)",
                    &[&name],
                )
                .await?;
            match found {
                Some(r) => (r.get(0), false),
                None => {
                    let id = Uuid::now_v7();
                    // Any password starting with "!" is unusable to Django (`make_password(None)`).
                    let unusable = format!("!{}", Uuid::now_v7().simple());
                    c.execute(
                        "INSERT INTO accounts_user (password, is_superuser, id, created_at, updated_at, username, email,
                             is_active, is_staff, is_verified, must_change_password, password_updated_at, last_login,
                             date_joined)
                         VALUES ($1, false, $2, $3, $3, NULL, $4, false, false, false, false, NULL, NULL, $3)",
                        &[&unusable, &id, &now, &name],
                    )
                    .await
                    .map_err(|e| {
                        DbError::Schema(format!(
                            "campus.system_user {name:?}: could not create the account ({}): create \
                             the user in CampsHub360's admin and name it here",
                            DbError::from(e)
                        ))
                    })?;
                    (id, true)
                }
            }
        }
    };
    c.execute(
        "INSERT INTO rollcall.system_user (one, user_id, name, set_at) VALUES (true, $1, $2, $3)
         ON CONFLICT (one) DO UPDATE SET user_id = $1, name = $2, set_at = $3",
        &[&id, &name, &now],
    )
    .await?;
    Ok(Some(SystemUser {
        id,
        name: name.to_string(),
        created,
    }))
}

/// What the check is told about this installation.
#[derive(Debug, Clone)]
pub struct Expected {
    /// `[jobs.owner]`.
    pub owners: JobOwners,
    /// `campus.session_clock`.
    pub clock: SessionClock,
    /// `campus.timezone`.
    pub tz: chrono_tz::Tz,
    /// `campus.system_user`.
    pub system_user: Option<String>,
    /// Rows written since this instant count as "at work now".
    pub since: DateTime<Utc>,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Two writers, or two conventions, fight over the same rows: `check` fails.
    Conflict,
    /// Works, but something a person should set.
    Warning,
}

/// One thing `check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Whether `check` fails on it.
    pub severity: Severity,
    /// What it is about: a job name, `session_clock` or `system_user`.
    pub topic: String,
    /// What was seen and what to do, in one line.
    pub text: String,
}

/// Rows of one kind written since `since` that carry no stamp of the job.
struct Foreign {
    rows: i64,
    latest: Option<DateTime<Utc>>,
}

async fn foreign(
    c: &impl GenericClient,
    sql: &str,
    job: Job,
    since: DateTime<Utc>,
) -> Result<Foreign, DbError> {
    let r = c.query_one(sql, &[&job.name(), &since]).await?;
    Ok(Foreign {
        rows: r.get(0),
        latest: r.get(1),
    })
}

fn t(d: DateTime<Utc>) -> String {
    d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn beat(entries: &[&str]) -> String {
    entries
        .iter()
        .map(|e| format!("{e:?}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Everything that stands between Rollcall and CampsHub360 running side by side.
pub async fn check(c: &impl GenericClient, x: &Expected) -> Result<Vec<Finding>, DbError> {
    let mut out = Vec::new();
    let owned = |job: Job| match job {
        Job::GenerateSessions => x.owners.generate_sessions,
        Job::OpenClose => x.owners.open_close,
        Job::Statistics => x.owners.statistics,
        Job::Retention => x.owners.retention,
        Job::DeviceHealth => Owner::Rollcall,
    };
    let stamped = "NOT EXISTS (SELECT 1 FROM rollcall.job_stamp j WHERE j.job = $1 AND j.stamp = ";
    let probes: [(Job, String, &str); 4] = [
        (
            Job::GenerateSessions,
            format!(
                "SELECT count(*), max(s.created_at) FROM attendance_session s
                 WHERE s.timetable_slot_id IS NOT NULL AND s.created_at >= $2 AND {stamped}s.created_at)"
            ),
            "attendance_session rows generated from the timetable",
        ),
        (
            Job::OpenClose,
            format!(
                "SELECT count(*), max(a.created_at) FROM attendance_audit_log a
                 WHERE a.action = 'auto_open' AND a.created_at >= $2 AND {stamped}a.created_at)"
            ),
            "auto_open audit rows (sessions opened)",
        ),
        (
            Job::OpenClose,
            format!(
                "SELECT count(*), max(a.created_at) FROM attendance_audit_log a
                 WHERE a.action = 'auto_close' AND a.created_at >= $2 AND {stamped}a.created_at)"
            ),
            "auto_close audit rows (sessions closed)",
        ),
        (
            Job::Statistics,
            format!(
                "SELECT count(*), max(a.updated_at) FROM attendance_statistics a
                 WHERE a.updated_at >= $2 AND {stamped}a.updated_at)"
            ),
            "attendance_statistics rows",
        ),
    ];
    for (i, (job, sql, what)) in probes.iter().enumerate() {
        if owned(*job) != Owner::Rollcall {
            continue;
        }
        let f = foreign(c, sql, *job, x.since).await?;
        let Some(latest) = f.latest.filter(|_| f.rows > 0) else {
            continue;
        };
        // open_close has two beat entries: name the one whose rows were seen.
        let entries: &[&str] = match (job, i) {
            (Job::OpenClose, 1) => &["auto-open-attendance-sessions"],
            (Job::OpenClose, _) => &["auto-close-attendance-sessions"],
            _ => job.beat_entries(),
        };
        out.push(Finding {
            severity: Severity::Conflict,
            topic: job.name().into(),
            text: format!(
                "{rows} {what} written since {since} (the latest at {latest}) were not written by \
                 Rollcall, which owns {job} (jobs.owner.{job}): another writer is at work, as \
                 CampsHub360's Celery beat entry {entries} would be: remove it from \
                 CELERY_BEAT_SCHEDULE and restart celery beat, or set jobs.owner.{job} = \
                 \"campshub360\" to leave the job to CampsHub360",
                rows = f.rows,
                since = t(x.since),
                latest = t(latest),
                job = job.name(),
                entries = beat(entries),
            ),
        });
    }
    // Jobs CampsHub360 owns that a Rollcall replica ran anyway.
    for job in [
        Job::GenerateSessions,
        Job::OpenClose,
        Job::Statistics,
        Job::Retention,
    ] {
        if owned(job) != Owner::Campshub360 {
            continue;
        }
        let rows = c
            .query(
                "SELECT node, max(started_at) FROM rollcall.job_run
                 WHERE job = $1 AND status = 'ok' AND started_at >= $2 GROUP BY node ORDER BY node",
                &[&job.name(), &x.since],
            )
            .await?;
        for r in rows {
            let (node, at): (String, DateTime<Utc>) = (r.get(0), r.get(1));
            out.push(Finding {
                severity: Severity::Conflict,
                topic: job.name().into(),
                text: format!(
                    "{0} is left to CampsHub360 here (jobs.owner.{0} = \"campshub360\", beat entry \
                     {1}), but Rollcall replica {node:?} ran it at {2}: give every replica the same \
                     [jobs.owner]",
                    job.name(),
                    beat(job.beat_entries()),
                    t(at),
                ),
            });
        }
    }
    out.extend(clock(c, x).await?);
    out.extend(system_user(c, x).await?);
    Ok(out)
}

/// Sessions generated from a slot, by the convention their start is stored in.
async fn clock(c: &impl GenericClient, x: &Expected) -> Result<Vec<Finding>, DbError> {
    let rows = c
        .query(
            "SELECT CASE WHEN wall AND tru THEN 'either' WHEN wall THEN 'wallclock_as_utc'
                         WHEN tru THEN 'utc' ELSE 'neither' END,
                    count(*), min(scheduled_date), max(scheduled_date),
                    (array_agg(id ORDER BY scheduled_date DESC, id DESC))[1:5]
             FROM (SELECT s.id, s.scheduled_date,
                          (s.start_datetime AT TIME ZONE 'UTC') = (s.scheduled_date + sl.start_time) AS wall,
                          (s.start_datetime AT TIME ZONE $1) = (s.scheduled_date + sl.start_time) AS tru
                   FROM attendance_session s JOIN attendance_timetable_slot sl ON sl.id = s.timetable_slot_id) s
             GROUP BY 1",
            &[&x.tz.name()],
        )
        .await?;
    let mut wall = None;
    let mut utc = None;
    for r in &rows {
        let kind: String = r.get(0);
        let seen: (i64, NaiveDate, NaiveDate, Vec<i64>) = (r.get(1), r.get(2), r.get(3), r.get(4));
        match kind.as_str() {
            "wallclock_as_utc" => wall = Some(seen),
            "utc" => utc = Some(seen),
            _ => {}
        }
    }
    let (mine, other, other_name) = match x.clock {
        SessionClock::WallclockAsUtc => (wall, utc, "utc"),
        SessionClock::Utc => (utc, wall, "wallclock_as_utc"),
    };
    let mine_name = match x.clock {
        SessionClock::WallclockAsUtc => "wallclock_as_utc",
        SessionClock::Utc => "utc",
    };
    let Some((n, from, to, ids)) = other else {
        return Ok(Vec::new());
    };
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let fix = match x.clock {
        SessionClock::Utc => format!(
            "they were written by CampsHub360's generator (beat entry \
             \"generate-daily-attendance-sessions\") or before the switch to \"utc\": turn that \
             entry off, and move them to true instants (UPDATE attendance_session SET \
             start_datetime = (start_datetime AT TIME ZONE 'UTC') AT TIME ZONE '{0}', end_datetime \
             = (end_datetime AT TIME ZONE 'UTC') AT TIME ZONE '{0}' for those rows; see the README)",
            x.tz.name()
        ),
        SessionClock::WallclockAsUtc => "they hold true instants (a generator or API client \
             applying the campus zone, e.g. CampsHub360 with TIME_ZONE set to the campus zone): \
             pick one convention for the whole table (see the README) and set \
             campus.session_clock to it"
            .to_string(),
    };
    let text = match mine {
        Some((m, _, _, _)) => format!(
            "attendance_session mixes two time conventions: {m} sessions are stored as \
             campus.session_clock = \"{mine_name}\" says, {n} (scheduled {from} to {to}, e.g. ids \
             {}) as \"{other_name}\", which Rollcall reads {} hours off: punches miss those \
             sessions and they open and close at the wrong time; {fix}",
            ids.join(", "),
            offset_text(x.tz, to),
        ),
        None => format!(
            "every session generated from the timetable ({n}, scheduled {from} to {to}, e.g. ids \
             {}) is stored as \"{other_name}\", but campus.session_clock = \"{mine_name}\": Rollcall \
             reads them {} hours off; set campus.session_clock = \"{other_name}\", or {fix}",
            ids.join(", "),
            offset_text(x.tz, to),
        ),
    };
    Ok(vec![Finding {
        severity: Severity::Conflict,
        topic: "session_clock".into(),
        text,
    }])
}

/// The campus zone's UTC offset on `d`, in hours (`5.5`).
fn offset_text(tz: chrono_tz::Tz, d: NaiveDate) -> String {
    use chrono::{Offset, TimeZone};
    let noon = d.and_hms_opt(12, 0, 0).unwrap_or_default();
    let secs = tz.offset_from_utc_datetime(&noon).fix().local_minus_utc();
    let h = f64::from(secs.abs()) / 3600.0;
    format!("{h}")
}

async fn system_user(c: &impl GenericClient, x: &Expected) -> Result<Vec<Finding>, DbError> {
    let set = c
        .query_opt("SELECT user_id, name FROM rollcall.system_user", &[])
        .await?
        .map(|r| (r.get::<_, Uuid>(0), r.get::<_, String>(1)));
    let warn = |text: String| {
        vec![Finding {
            severity: Severity::Warning,
            topic: "system_user".into(),
            text,
        }]
    };
    Ok(match (&x.system_user, set) {
        (None, _) => warn(
            "campus.system_user is not set: Rollcall's audit rows carry performed_by_id NULL, \
             which Django's full_clean() refuses (AttendanceAuditLog.performed_by is not \
             blank=True): set it to an email (created at `rollcall-ingest migrate`) or an \
             accounts_user id"
                .into(),
        ),
        (Some(want), None) => warn(format!(
            "campus.system_user = {want:?} is not set up yet: run `rollcall-ingest migrate` (or \
             restart with database.migrate_on_start) to find or create it"
        )),
        (Some(want), Some((_, name))) if *want != name => warn(format!(
            "campus.system_user = {want:?} but audit rows name {name:?}: run `rollcall-ingest \
             migrate` to switch"
        )),
        (Some(_), Some((id, name))) => {
            let users = has_table(c, "accounts_user").await?;
            if users
                && c.query_opt("SELECT 1 FROM accounts_user WHERE id = $1", &[&id])
                    .await?
                    .is_none()
            {
                warn(format!(
                    "the system user {name:?} ({id}) no longer exists in accounts_user: audit rows \
                     naming it fail at COMMIT: run `rollcall-ingest migrate` to create it again"
                ))
            } else {
                Vec::new()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_in_hours() {
        let d = NaiveDate::from_ymd_opt(2025, 1, 6).unwrap();
        assert_eq!(offset_text(chrono_tz::Asia::Kolkata, d), "5.5");
        assert_eq!(offset_text(chrono_tz::America::New_York, d), "5");
        assert_eq!(offset_text(chrono_tz::UTC, d), "0");
    }

    #[test]
    fn beat_entries_are_quoted_and_joined() {
        assert_eq!(
            beat(Job::OpenClose.beat_entries()),
            "\"auto-open-attendance-sessions\" and \"auto-close-attendance-sessions\""
        );
    }
}
