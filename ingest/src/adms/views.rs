//! What operators see of the terminals: the `rollcall-ingest terminals` listing, the commands
//! queued from the command line, and the gauges on `/metrics` (terminals by state, open alerts
//! by kind). Reads only; commands go through [`super::store::queue_command`].

use super::rules::Command;
use crate::db::DbError;
use crate::metrics::{Label, Metrics, StateLabel};
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::GenericClient;
use tokio_util::sync::CancellationToken;

/// Whether a terminal may upload, as its next request would be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalState {
    /// Registered and enabled: its records are stored.
    Admitted,
    /// No `attendance_biometric_device` row has its serial number: answered 403, it keeps its
    /// records.
    Unregistered,
    /// Registered with `is_enabled = false`: answered 403, it keeps its records.
    Disabled,
}

impl TerminalState {
    /// Every state, in the order the gauges list them.
    pub const ALL: [TerminalState; 3] = [
        TerminalState::Admitted,
        TerminalState::Unregistered,
        TerminalState::Disabled,
    ];

    /// The `state` label and the listing's word.
    pub fn as_str(self) -> &'static str {
        match self {
            TerminalState::Admitted => "admitted",
            TerminalState::Unregistered => "unregistered",
            TerminalState::Disabled => "disabled",
        }
    }

    fn of(registered: bool, enabled: bool) -> TerminalState {
        match (registered, enabled) {
            (false, _) => TerminalState::Unregistered,
            (true, false) => TerminalState::Disabled,
            (true, true) => TerminalState::Admitted,
        }
    }
}

/// The alert kinds the endpoint raises (`rollcall.adms_alert.kind`); any other is counted as
/// `other`, so the gauge's labels stay these three whatever the table holds.
pub const ALERT_KINDS: [&str; 3] = ["clock_jump", "silent_loss", "other"];

/// A command not yet answered.
#[derive(Debug, Clone, Serialize)]
pub struct Pending {
    /// `C:<id>:`.
    pub id: i64,
    /// The command's text.
    pub command: String,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// Who queued it.
    pub queued_by: String,
    /// How many times it was sent (it is sent again after a minute, five times at most).
    pub sent_count: i32,
}

/// An alert not cleared.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// clock_jump | silent_loss.
    pub kind: String,
    /// What happened and what to do.
    pub detail: String,
    /// When the centre saw it.
    pub detected_at: DateTime<Utc>,
}

/// One terminal that has called the endpoint, as the operators' listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TerminalView {
    /// Serial number (`SN=`).
    pub serial: String,
    /// Admitted, unregistered or disabled.
    pub state: TerminalState,
    /// Whether an `attendance_biometric_device` row has this serial number.
    pub registered: bool,
    /// Its `is_enabled` (false when unregistered).
    pub enabled: bool,
    /// Its room, when registered.
    pub room: Option<String>,
    /// First request.
    pub first_seen: DateTime<Utc>,
    /// Latest request.
    pub last_seen: DateTime<Utc>,
    /// Peer address of the latest request.
    pub last_ip: Option<String>,
    /// Firmware from its latest `INFO`.
    pub firmware: String,
    /// ATTLOG cursor kept here (what the handshake answers).
    pub attlog_stamp: Option<String>,
    /// OPERLOG cursor kept here.
    pub operlog_stamp: Option<String>,
    /// Distinct records stored from it.
    pub records: i64,
    /// Records in its log at its latest `INFO`.
    pub log_records: Option<i64>,
    /// Its clock minus true time, seconds, as last measured.
    pub clock_offset_s: Option<i64>,
    /// When the offset was measured.
    pub clock_measured_at: Option<DateTime<Utc>>,
    /// Commands not yet answered, oldest first.
    pub pending: Vec<Pending>,
    /// Alerts not cleared, oldest first.
    pub alerts: Vec<Alert>,
}

/// Every terminal that has called, by serial number, with its commands pending and alerts open.
pub async fn terminals(db: &impl GenericClient) -> Result<Vec<TerminalView>, DbError> {
    let rows = db
        .query(
            "SELECT t.serial::text, d.device_id IS NOT NULL, coalesce(d.is_enabled, false), d.room::text,
                    t.first_seen, t.last_seen, t.last_ip, t.firmware, t.attlog_stamp, t.operlog_stamp,
                    t.next_seq - 1, t.log_records, t.clock_offset_s, t.clock_measured_at
             FROM rollcall.adms_terminal t
             LEFT JOIN attendance_biometric_device d ON d.device_id = t.serial
             ORDER BY t.serial",
            &[],
        )
        .await?;
    let mut out: Vec<TerminalView> = rows
        .iter()
        .map(|r| {
            let (registered, enabled): (bool, bool) = (r.get(1), r.get(2));
            TerminalView {
                serial: r.get(0),
                state: TerminalState::of(registered, enabled),
                registered,
                enabled,
                room: r.get(3),
                first_seen: r.get(4),
                last_seen: r.get(5),
                last_ip: r.get(6),
                firmware: r.get(7),
                attlog_stamp: r.get(8),
                operlog_stamp: r.get(9),
                records: r.get(10),
                log_records: r.get(11),
                clock_offset_s: r.get(12),
                clock_measured_at: r.get(13),
                pending: Vec::new(),
                alerts: Vec::new(),
            }
        })
        .collect();
    let index: std::collections::HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, t)| (t.serial.clone(), i))
        .collect();
    for r in db
        .query(
            "SELECT serial::text, id, command, queued_at, queued_by, sent_count FROM rollcall.adms_command
             WHERE done_at IS NULL ORDER BY id",
            &[],
        )
        .await?
    {
        if let Some(&i) = index.get(&r.get::<_, String>(0)) {
            out[i].pending.push(Pending {
                id: r.get(1),
                command: r.get(2),
                queued_at: r.get(3),
                queued_by: r.get(4),
                sent_count: r.get(5),
            });
        }
    }
    for r in db
        .query(
            "SELECT serial::text, kind, detail, detected_at FROM rollcall.adms_alert
             WHERE cleared_at IS NULL ORDER BY id",
            &[],
        )
        .await?
    {
        if let Some(&i) = index.get(&r.get::<_, String>(0)) {
            out[i].alerts.push(Alert {
                kind: r.get(1),
                detail: r.get(2),
                detected_at: r.get(3),
            });
        }
    }
    Ok(out)
}

/// Whether anything knows `serial`: a terminal that has called, or a registered device. A
/// command for neither would wait forever for a typo.
pub async fn known(db: &impl GenericClient, serial: &str) -> Result<bool, DbError> {
    Ok(db
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM rollcall.adms_terminal WHERE serial = $1)
                 OR EXISTS (SELECT 1 FROM attendance_biometric_device WHERE device_id = $1)",
            &[&serial],
        )
        .await?
        .get(0))
}

/// Queues `cmd` for `serial` after checking the serial is known; returns the command's id and
/// text.
pub async fn queue(
    db: &impl GenericClient,
    serial: &str,
    cmd: &Command,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(i64, String), DbError> {
    let text = cmd.text().map_err(DbError::Schema)?;
    if !rollcall_protocol::v1::valid_id(serial) {
        return Err(DbError::Schema(format!(
            "serial number {serial:?} is not 1-64 of [A-Za-z0-9._-]"
        )));
    }
    if !known(db, serial).await? {
        return Err(DbError::Schema(format!(
            "no terminal {serial} has called and no device is registered with that id: check the \
             serial number (`rollcall-ingest terminals` lists the terminals that called)"
        )));
    }
    let id = super::store::queue_command(db, serial, cmd, by, now).await?;
    Ok((id, text))
}

/// A time on the terminal's wall clock from the command line: `2025-01-06 08:00[:00]`, with a
/// `T` instead of the space, or a date alone (its first second when `end` is false, its last
/// when true).
pub fn wall_time(s: &str, end: bool) -> Result<NaiveDateTime, String> {
    let s = s.trim();
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        Ok(d) if end => Ok(d.and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default())),
        Ok(d) => Ok(d.and_time(NaiveTime::MIN)),
        Err(_) => Err(format!(
            "{s:?}: give the terminal's wall-clock time as 2025-01-06 08:00[:00], or a date"
        )),
    }
}

/// Terminals by state and open alerts by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// `(state, terminals)`, every state present.
    pub terminals: Vec<(TerminalState, i64)>,
    /// `(kind, open alerts)`, every kind of [`ALERT_KINDS`] present.
    pub alerts: Vec<(&'static str, i64)>,
}

impl Counts {
    /// From the database's groups: states and kinds absent are zero, unknown kinds are `other`.
    pub fn from_groups(states: &[(bool, bool, i64)], kinds: &[(String, i64)]) -> Counts {
        let terminals = TerminalState::ALL
            .iter()
            .map(|s| {
                let n = states
                    .iter()
                    .filter(|(reg, en, _)| TerminalState::of(*reg, *en) == *s)
                    .map(|g| g.2)
                    .sum();
                (*s, n)
            })
            .collect();
        let alerts = ALERT_KINDS
            .iter()
            .map(|k| {
                let n = kinds
                    .iter()
                    .filter(|(kind, _)| {
                        let known = ALERT_KINDS[..2].contains(&kind.as_str());
                        if *k == "other" { !known } else { kind == k }
                    })
                    .map(|g| g.1)
                    .sum();
                (*k, n)
            })
            .collect();
        Counts { terminals, alerts }
    }

    /// Sets the gauges `rollcall_ingest_adms_terminals{state}` and
    /// `rollcall_ingest_adms_alerts_open{kind}`.
    pub fn set(&self, m: &Metrics) {
        for (s, n) in &self.terminals {
            m.adms_terminals
                .get_or_create(&StateLabel { state: s.as_str() })
                .set(*n);
        }
        for (k, n) in &self.alerts {
            m.adms_alerts_open
                .get_or_create(&Label {
                    kind: (*k).to_string(),
                })
                .set(*n);
        }
    }
}

/// Reads [`Counts`] from the database.
pub async fn counts(db: &impl GenericClient) -> Result<Counts, DbError> {
    let states: Vec<(bool, bool, i64)> = db
        .query(
            "SELECT d.device_id IS NOT NULL, coalesce(d.is_enabled, false), count(*)
             FROM rollcall.adms_terminal t LEFT JOIN attendance_biometric_device d ON d.device_id = t.serial
             GROUP BY 1, 2",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let kinds: Vec<(String, i64)> = db
        .query(
            "SELECT kind, count(*) FROM rollcall.adms_alert WHERE cleared_at IS NULL GROUP BY kind",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Counts::from_groups(&states, &kinds))
}

/// How often the gauges are read from the database (two small grouped counts).
pub const GAUGE_REFRESH: Duration = Duration::from_secs(5);

/// Refreshes the terminal gauges every [`GAUGE_REFRESH`] until `stop`; a failure is logged (at
/// most every five minutes) and the gauges keep their last values.
pub async fn refresh_gauges(pool: Pool, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut failures = crate::metrics::LogLimiter::new(Duration::from_secs(300));
    loop {
        let r = match pool.get().await {
            Ok(c) => counts(&**c).await,
            Err(e) => Err(e.into()),
        };
        match r {
            Ok(c) => c.set(&metrics),
            Err(e) => {
                if let Some(unlogged) = failures.occurred(std::time::Instant::now()) {
                    tracing::warn!(error = %e, unlogged, "terminal gauges not refreshed");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(GAUGE_REFRESH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_name_every_state_and_kind_and_fold_unknown_kinds_into_other() {
        let c = Counts::from_groups(
            &[(true, true, 3), (false, false, 2), (true, false, 1)],
            &[
                ("silent_loss".into(), 4),
                ("something_new".into(), 1),
                ("else".into(), 2),
            ],
        );
        assert_eq!(
            c.terminals,
            vec![
                (TerminalState::Admitted, 3),
                (TerminalState::Unregistered, 2),
                (TerminalState::Disabled, 1)
            ]
        );
        assert_eq!(
            c.alerts,
            vec![("clock_jump", 0), ("silent_loss", 4), ("other", 3)]
        );
        let empty = Counts::from_groups(&[], &[]);
        assert!(empty.terminals.iter().all(|(_, n)| *n == 0));
        assert_eq!(empty.terminals.len(), 3);
        assert_eq!(empty.alerts.len(), 3);
    }

    #[test]
    fn gauges_carry_only_the_bounded_labels() {
        let m = Metrics::new();
        Counts::from_groups(&[(false, true, 2)], &[("clock_jump".into(), 1)]).set(&m);
        let text = m.encode();
        assert!(
            text.contains("rollcall_ingest_adms_terminals{state=\"unregistered\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("rollcall_ingest_adms_terminals{state=\"admitted\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("rollcall_ingest_adms_alerts_open{kind=\"clock_jump\"} 1"),
            "{text}"
        );
        assert_eq!(text.matches("rollcall_ingest_adms_terminals{").count(), 3);
        assert_eq!(text.matches("rollcall_ingest_adms_alerts_open{").count(), 3);
    }

    #[test]
    fn wall_times_from_the_command_line() {
        let t = |s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            wall_time("2025-01-06 08:00", false),
            Ok(t("2025-01-06 08:00:00"))
        );
        assert_eq!(
            wall_time("2025-01-06T08:00:05", false),
            Ok(t("2025-01-06 08:00:05"))
        );
        assert_eq!(wall_time("2025-01-06", false), Ok(t("2025-01-06 00:00:00")));
        assert_eq!(wall_time("2025-01-06", true), Ok(t("2025-01-06 23:59:59")));
        assert!(wall_time("06/01/2025", false).is_err());
        assert!(wall_time("2025-02-30", false).is_err());
        assert!(wall_time("", true).is_err());
    }
}
