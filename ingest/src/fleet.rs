//! The live fleet page: what an operator looks at to know which rooms are healthy, served read
//! only on the metrics listener next to `/metrics`.
//!
//! * `GET /fleet`: one self-contained HTML page (inline style and script, no framework, no
//!   external asset) that fetches `/fleet.json` every [`REFRESH_SECONDS`] and redraws.
//! * `GET /fleet.json`: the rooms, each with its gateways (online state, last seen, journal
//!   depth, oldest unacknowledged punch, clock, readers, punches per minute) and today's sessions
//!   (how many students are on the roll and how many have punched).
//!
//! Device ids, names, rooms and reader details come from outside (the database and the devices'
//! own status messages). The page never builds HTML from them: the script puts every value into
//! the document with `textContent` or `setAttribute`, which the browser never parses as markup,
//! and the JSON is served as `application/json`.
//!
//! The data: `attendance_biometric_device` (registered gateways and their room),
//! `rollcall.device_status` (the last status each sent, last will included),
//! `rollcall.ledger` (punches per minute, distinct students per session),
//! `attendance_session` and `attendance_record` (today's sessions in the campus time zone and
//! their roll), `rollcall.room_alert` (rooms flagged with an open session and no punches).
//! The roster version a gateway holds is not in its status message, so the page says
//! "unknown" until the protocol carries it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Config;
use crate::db::DbError;
use crate::metrics::{Metrics, StateLabel};

/// How often the page asks for fresh data.
pub const REFRESH_SECONDS: u64 = 3;
/// How often [`refresh_gauges`] reads the fleet gauges from the database.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(15);
/// Punches per minute are averaged over this many minutes.
pub const RATE_MINUTES: i64 = 5;

/// Which fleet resource a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `GET /fleet`: the HTML page.
    Html,
    /// `GET /fleet.json`: the data.
    Json,
}

impl Page {
    /// The page a raw HTTP request asks for; `None` for any other request.
    pub fn of_request(request: &[u8]) -> Option<Page> {
        let line = request.split(|b| *b == b'\r' || *b == b'\n').next()?;
        let mut parts = line.split(|b| *b == b' ');
        if parts.next()? != b"GET" {
            return None;
        }
        let target = parts.next()?;
        let path = target.split(|b| *b == b'?').next()?;
        match path {
            b"/fleet" | b"/fleet/" => Some(Page::Html),
            b"/fleet.json" => Some(Page::Json),
            _ => None,
        }
    }
}

/// What the page shows of one gateway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gateway {
    /// `attendance_biometric_device.device_id`.
    pub device_id: String,
    /// `device_name`.
    pub name: String,
    /// online | offline (its last will arrived) | silent (no status past the threshold) |
    /// never (no status ever received) | disabled.
    pub state: &'static str,
    /// When its last status arrived.
    pub last_seen: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub last_seen_age_s: Option<i64>,
    /// rollcalld's version.
    pub version: Option<String>,
    /// Unacked punches in its journal (its backlog), as of its last status.
    pub journal_depth: Option<u64>,
    /// Age of its oldest unacknowledged punch now, seconds (as reported, plus the time since).
    pub oldest_unacked_age_s: Option<i64>,
    /// Whether its clock was NTP-synchronised.
    pub ntp_synced: Option<bool>,
    /// Its clock's estimated error, ms.
    pub clock_offset_ms: Option<i64>,
    /// Its readers, as the status lists them.
    pub readers: Vec<Reader>,
    /// The roster version it holds; not reported by the v1 status, so `None`.
    pub roster_version: Option<String>,
    /// Punches received from it per minute, averaged over [`RATE_MINUTES`].
    pub punches_per_minute: f64,
}

/// One reader of a gateway.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reader {
    /// Its id in the gateway's config.
    pub id: String,
    /// Its family.
    pub kind: String,
    /// Whether it answers.
    pub healthy: bool,
    /// What is wrong, when not healthy.
    pub detail: String,
}

/// One of today's sessions in a room.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// `attendance_session.id`.
    pub id: i64,
    /// Scheduled start.
    pub start: DateTime<Utc>,
    /// Scheduled end.
    pub end: DateTime<Utc>,
    /// scheduled | open | closed | ...
    pub status: String,
    /// Students on its roll (`attendance_record` rows).
    pub on_roll: i64,
    /// Distinct students with a punch attributed to it.
    pub punched: i64,
}

/// One room: its gateways and today's sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Room {
    /// The room (`room` of the device and session rows).
    pub room: String,
    /// True while the room has an open session flagged for having no punches.
    pub no_punches_alert: bool,
    /// Its registered gateways.
    pub gateways: Vec<Gateway>,
    /// Today's sessions, by start.
    pub sessions: Vec<Session>,
}

/// Everything `/fleet.json` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    /// When this was read.
    pub generated_at: DateTime<Utc>,
    /// The campus day the sessions are from.
    pub day: chrono::NaiveDate,
    /// Rooms, by name.
    pub rooms: Vec<Room>,
}

/// A gateway's state from its device row and last status: pure, time passed in.
pub fn gateway_state(
    enabled: bool,
    last_status: Option<(bool, DateTime<Utc>)>,
    now: DateTime<Utc>,
    silent_after: Duration,
) -> &'static str {
    if !enabled {
        return "disabled";
    }
    match last_status {
        None => "never",
        Some((false, _)) => "offline",
        Some((true, at)) if (now - at).to_std().unwrap_or_default() > silent_after => "silent",
        Some((true, _)) => "online",
    }
}

/// The gateway fields its status JSON (as `rollcall.device_status.status` keeps it) carries.
fn from_status(g: &mut Gateway, status: &serde_json::Value, age_s: i64) {
    g.version = status["version"].as_str().map(str::to_owned);
    g.journal_depth = status["journal_depth"].as_u64();
    g.oldest_unacked_age_s = status["oldest_unacked_age_s"].as_i64().map(|a| {
        if g.journal_depth == Some(0) {
            a
        } else {
            a + age_s
        }
    });
    g.ntp_synced = status["clock"]["ntp_synced"].as_bool();
    g.clock_offset_ms = status["clock"]["offset_ms"].as_i64();
    g.readers = status["readers"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| Reader {
                    id: r["id"].as_str().unwrap_or_default().to_owned(),
                    kind: r["kind"].as_str().unwrap_or_default().to_owned(),
                    healthy: r["healthy"].as_bool().unwrap_or(false),
                    detail: r["detail"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
}

/// The fleet page's data source: a pool and the few settings it needs.
#[derive(Debug)]
pub struct Fleet {
    pool: deadpool_postgres::Pool,
    timezone: Tz,
    silent_after: Duration,
}

impl Fleet {
    /// The fleet view over `pool`, with the campus time zone and silence threshold of `cfg`.
    pub fn new(pool: deadpool_postgres::Pool, cfg: &Config) -> Fleet {
        Fleet {
            pool,
            timezone: cfg.campus.timezone,
            silent_after: cfg.jobs.device_silent_after,
        }
    }

    /// The content type and body answering `page`.
    pub async fn answer(&self, page: Page) -> (&'static str, String) {
        match page {
            Page::Html => ("text/html; charset=utf-8", PAGE.to_owned()),
            Page::Json => match self.view(Utc::now()).await {
                Ok(v) => (
                    "application/json",
                    serde_json::to_string(&v).unwrap_or_default(),
                ),
                Err(e) => {
                    warn!(error = %e, "fleet page: database not readable");
                    (
                        "application/json",
                        serde_json::json!({"error": format!("database not readable: {e}")})
                            .to_string(),
                    )
                }
            },
        }
    }

    /// Reads the fleet as of `now`.
    pub async fn view(&self, now: DateTime<Utc>) -> Result<View, DbError> {
        let c = self.pool.get().await?;
        let day = now.with_timezone(&self.timezone).date_naive();
        let since = now - chrono::Duration::minutes(RATE_MINUTES);
        let gateways = c
            .query(
                // One pass over the last minutes of the ledger (its received_at index), not one
                // per device.
                "SELECT d.device_id::text, d.device_name::text, d.room::text, d.is_enabled,
                        s.online, s.last_status_at, s.status, coalesce(r.n, 0)
                 FROM attendance_biometric_device d
                 LEFT JOIN rollcall.device_status s ON s.device_id = d.device_id
                 LEFT JOIN (SELECT device_id, count(*) AS n FROM rollcall.ledger
                             WHERE received_at >= $1 GROUP BY device_id) r
                        ON r.device_id = d.device_id
                 ORDER BY d.room, d.device_id",
                &[&since],
            )
            .await?;
        let sessions = c
            .query(
                "SELECT s.id, s.room::text, s.start_datetime, s.end_datetime, s.status::text,
                        (SELECT count(*) FROM attendance_record r WHERE r.session_id = s.id),
                        (SELECT count(DISTINCT l.student_id) FROM rollcall.ledger l
                          WHERE l.session_id = s.id AND l.student_id IS NOT NULL),
                        EXISTS (SELECT 1 FROM rollcall.room_alert a
                                 WHERE a.session_id = s.id AND a.cleared_at IS NULL)
                 FROM attendance_session s
                 WHERE s.scheduled_date = $1
                 ORDER BY s.room, s.start_datetime, s.id",
                &[&day],
            )
            .await?;
        let mut rooms: BTreeMap<String, Room> = BTreeMap::new();
        for r in &gateways {
            let online: Option<bool> = r.get(4);
            let at: Option<DateTime<Utc>> = r.get(5);
            let status: Option<serde_json::Value> = r.get(6);
            let recent: i64 = r.get(7);
            let mut g = Gateway {
                device_id: r.get(0),
                name: r.get(1),
                state: gateway_state(r.get(3), online.zip(at), now, self.silent_after),
                last_seen: at,
                last_seen_age_s: at.map(|t| (now - t).num_seconds().max(0)),
                version: None,
                journal_depth: None,
                oldest_unacked_age_s: None,
                ntp_synced: None,
                clock_offset_ms: None,
                readers: Vec::new(),
                roster_version: None,
                punches_per_minute: recent as f64 / RATE_MINUTES as f64,
            };
            if let Some(s) = &status {
                let age_s = g.last_seen_age_s.unwrap_or(0);
                from_status(&mut g, s, age_s);
            }
            room_entry(&mut rooms, r.get(2)).gateways.push(g);
        }
        for r in &sessions {
            let entry = room_entry(&mut rooms, r.get(1));
            entry.no_punches_alert |= r.get::<_, bool>(7);
            entry.sessions.push(Session {
                id: r.get(0),
                start: r.get(2),
                end: r.get(3),
                status: r.get(4),
                on_roll: r.get(5),
                punched: r.get(6),
            });
        }
        Ok(View {
            generated_at: now,
            day,
            rooms: rooms.into_values().collect(),
        })
    }

    /// Sets the gauges only the database knows: open room alerts and gateways by state.
    pub async fn set_gauges(&self, metrics: &Metrics, now: DateTime<Utc>) -> Result<(), DbError> {
        let c = self.pool.get().await?;
        let alerts: i64 = c
            .query_one(
                "SELECT count(*) FROM rollcall.room_alert WHERE cleared_at IS NULL",
                &[],
            )
            .await?
            .get(0);
        metrics.open_room_alerts.set(alerts);
        let rows = c
            .query(
                "SELECT s.online, s.last_status_at FROM attendance_biometric_device d
                 JOIN rollcall.device_status s ON s.device_id = d.device_id WHERE d.is_enabled",
                &[],
            )
            .await?;
        let mut counts: BTreeMap<&'static str, i64> =
            [("online", 0), ("offline", 0), ("silent", 0)].into();
        for r in rows {
            let state = gateway_state(true, Some((r.get(0), r.get(1))), now, self.silent_after);
            *counts.entry(state).or_default() += 1;
        }
        for (state, n) in counts {
            metrics.gateways.get_or_create(&StateLabel { state }).set(n);
        }
        Ok(())
    }
}

fn room_entry(rooms: &mut BTreeMap<String, Room>, name: String) -> &mut Room {
    rooms.entry(name.clone()).or_insert_with(|| Room {
        room: name,
        no_punches_alert: false,
        gateways: Vec::new(),
        sessions: Vec::new(),
    })
}

/// Refreshes [`Fleet::set_gauges`] every [`GAUGE_REFRESH`] until `stop`.
pub async fn refresh_gauges(fleet: Arc<Fleet>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut failures = crate::metrics::LogLimiter::new(Duration::from_secs(300));
    loop {
        if let Err(e) = fleet.set_gauges(&metrics, Utc::now()).await
            && let Some(unlogged) = failures.occurred(std::time::Instant::now())
        {
            warn!(error = %e, unlogged, "fleet gauges not refreshed");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(GAUGE_REFRESH) => {}
        }
    }
}

/// The page. Every value from the data goes in through `textContent` / `setAttribute` only.
const PAGE: &str = include_str!("fleet.html");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fleet_paths_are_routed_to_the_page() {
        assert_eq!(
            Page::of_request(b"GET /fleet HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Page::Html)
        );
        assert_eq!(
            Page::of_request(b"GET /fleet?x=1 HTTP/1.1\r\n"),
            Some(Page::Html)
        );
        assert_eq!(
            Page::of_request(b"GET /fleet.json HTTP/1.1\r\n"),
            Some(Page::Json)
        );
        assert_eq!(Page::of_request(b"GET /metrics HTTP/1.1\r\n"), None);
        assert_eq!(Page::of_request(b"POST /fleet HTTP/1.1\r\n"), None);
        assert_eq!(Page::of_request(b"GET /fleetx HTTP/1.1\r\n"), None);
        assert_eq!(Page::of_request(b""), None);
    }

    #[test]
    fn a_gateway_is_online_offline_silent_or_never_seen() {
        let now = Utc::now();
        let s = Duration::from_secs(300);
        let ago = |secs| now - chrono::Duration::seconds(secs);
        assert_eq!(gateway_state(true, Some((true, ago(10))), now, s), "online");
        assert_eq!(
            gateway_state(true, Some((false, ago(10))), now, s),
            "offline"
        );
        assert_eq!(
            gateway_state(true, Some((true, ago(301))), now, s),
            "silent"
        );
        assert_eq!(gateway_state(true, None, now, s), "never");
        assert_eq!(
            gateway_state(false, Some((true, ago(1))), now, s),
            "disabled"
        );
    }

    #[test]
    fn status_fields_fill_the_gateway_and_a_backlog_keeps_ageing() {
        let mut g = Gateway {
            device_id: "d".into(),
            name: String::new(),
            state: "online",
            last_seen: None,
            last_seen_age_s: None,
            version: None,
            journal_depth: None,
            oldest_unacked_age_s: None,
            ntp_synced: None,
            clock_offset_ms: None,
            readers: Vec::new(),
            roster_version: None,
            punches_per_minute: 0.0,
        };
        let status = serde_json::json!({
            "version": "0.1.0", "journal_depth": 12, "oldest_unacked_age_s": 40,
            "clock": {"ntp_synced": false, "offset_ms": 250},
            "readers": [{"id": "door", "kind": "ef01", "healthy": false, "detail": "<no answer>"}],
        });
        from_status(&mut g, &status, 20);
        assert_eq!(g.journal_depth, Some(12));
        assert_eq!(g.oldest_unacked_age_s, Some(60));
        assert_eq!(g.ntp_synced, Some(false));
        assert_eq!(g.clock_offset_ms, Some(250));
        assert_eq!(g.readers.len(), 1);
        assert_eq!(g.readers[0].detail, "<no answer>");
        assert!(!g.readers[0].healthy);
    }

    #[test]
    fn the_page_builds_no_markup_from_data() {
        assert!(!PAGE.contains("innerHTML"), "use textContent");
        assert!(!PAGE.contains("outerHTML"));
        assert!(!PAGE.contains("insertAdjacentHTML"));
        assert!(!PAGE.contains("document.write"));
        assert!(!PAGE.contains("src=\"http"), "no external assets");
        assert!(PAGE.contains("/fleet.json"));
    }
}
