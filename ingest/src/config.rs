//! The TOML configuration, validated into typed values.
//!
//! ```toml
//! node_name = "ingest-a"              # stable per replica: MQTT client id, job-run attribution
//!
//! [database]
//! url = "postgres://rollcall@db.campus/campshub"
//! pool_size = 8
//! schema_mode = "existing"             # or "standalone": also create the CampsHub360 tables
//! migrate_on_start = true
//!
//! [mqtt]
//! url = "mqtts://broker.campus:8883"   # mqtt:// or mqtts://
//! ca_file = "/etc/rollcall/ca.pem"     # TLS trust; client_cert/client_key for mutual TLS
//! client_cert = "/etc/rollcall/ingest.pem"
//! client_key = "/etc/rollcall/ingest.key"
//! username = "ingest"
//! password_file = "/etc/rollcall/mqtt-password"
//!
//! [campus]
//! timezone = "Asia/Kolkata"
//! session_clock = "wallclock_as_utc"   # CampsHub360's quirk; "utc" when sessions hold true instants
//!
//! [ingest]
//! max_batch_messages = 256
//! max_batch_punches = 20000
//! linger_ms = 5
//!
//! [attendance]
//! late_counts_as_attended = true
//!
//! [jobs]
//! generate_days_ahead = 7
//!
//! [metrics]
//! listen = "0.0.0.0:9464"
//! ```

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown / mistyped key.
    #[error("{path}: {source}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The parser's message (names the key).
        source: toml::de::Error,
    },
    /// A value that parses but makes no sense.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Whether the CampsHub360 tables must already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaMode {
    /// A live CampsHub360 database: create only the `rollcall` schema; its tables must exist.
    Existing,
    /// Create the CampsHub360 tables ingest needs when they are absent (same names and types).
    Standalone,
}

/// How `attendance_session.start_datetime` / `end_datetime` are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionClock {
    /// CampsHub360's generator stores the local wall-clock time as if it were UTC (09:00 IST is
    /// stored as 09:00Z). Punches are converted to campus wall-clock before comparing, and the
    /// session generator writes sessions the same way so the Django UI shows the right times.
    WallclockAsUtc,
    /// Sessions hold true instants (created with an offset); the generator applies the campus
    /// time zone.
    Utc,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style URL or key=value string.
    pub url: String,
    /// Connections in the pool (writer, jobs, heartbeats).
    #[serde(default = "d_pool")]
    pub pool_size: usize,
    /// See [`SchemaMode`].
    #[serde(default = "d_mode")]
    pub schema_mode: SchemaMode,
    /// Run migrations at start (otherwise `rollcall-ingest migrate`).
    #[serde(default = "d_true")]
    pub migrate_on_start: bool,
}

/// `[mqtt]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// Shared-subscription group.
    #[serde(default = "d_group")]
    pub share_group: String,
    /// CA bundle for mqtts.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// User name.
    pub username: Option<String>,
    /// File holding the password (kept out of the config file).
    pub password_file: Option<PathBuf>,
    /// Keep-alive in seconds.
    #[serde(default = "d_keepalive")]
    pub keep_alive_s: u64,
}

/// `[campus]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampusConfig {
    /// IANA time zone of the campus.
    #[serde(default = "d_tz")]
    pub timezone: String,
    /// See [`SessionClock`].
    #[serde(default = "d_clock")]
    pub session_clock: SessionClock,
}

/// `[ingest]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Most MQTT messages in one transaction.
    #[serde(default = "d_batch_msgs")]
    pub max_batch_messages: usize,
    /// Most punches in one transaction.
    #[serde(default = "d_batch_punches")]
    pub max_batch_punches: usize,
    /// Concurrent writer transactions (devices are split among them by hash).
    #[serde(default = "d_writers")]
    pub writers: usize,
    /// How long to wait for more messages once one has arrived.
    #[serde(default = "d_linger")]
    pub linger_ms: u64,
    /// Minutes before a session's start from which a punch counts for it.
    #[serde(default = "d_early")]
    pub early_arrival_minutes: i64,
    /// A punch stamped further than this in the future (after clock correction) is rejected.
    #[serde(default = "d_skew")]
    pub max_future_skew_s: i64,
}

/// `[attendance]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttendanceConfig {
    /// Whether `late` counts as attended in statistics and exam eligibility. CampsHub360's model
    /// helpers say yes, its statistics task says no; we default to yes (a late student attended).
    #[serde(default = "d_true")]
    pub late_counts_as_attended: bool,
    /// Fallback grace minutes when `GRACE_PERIOD_MINUTES` is not configured in the database.
    #[serde(default = "d_grace")]
    pub default_grace_minutes: i64,
    /// Fallback eligibility threshold when `THRESHOLD_PERCENT` is not configured.
    #[serde(default = "d_threshold")]
    pub default_threshold_percent: f64,
    /// Fallback retention when `DATA_RETENTION_YEARS` is not configured.
    #[serde(default = "d_retention")]
    pub default_retention_years: i64,
}

/// `[jobs]`: intervals in seconds; 0 disables a job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Run jobs at all on this replica.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// Session generation interval.
    #[serde(default = "d_hour")]
    pub generate_sessions_every_s: u64,
    /// Days ahead (from today, campus time) to generate.
    #[serde(default = "d_days")]
    pub generate_days_ahead: i64,
    /// Auto open/close interval.
    #[serde(default = "d_minute")]
    pub open_close_every_s: u64,
    /// Statistics interval.
    #[serde(default = "d_hour")]
    pub statistics_every_s: u64,
    /// Retention interval.
    #[serde(default = "d_day")]
    pub retention_every_s: u64,
    /// Device health interval.
    #[serde(default = "d_minute")]
    pub device_health_every_s: u64,
    /// A device silent for this long is marked `error`.
    #[serde(default = "d_silent")]
    pub device_silent_after_s: i64,
    /// Ledger and dead letters older than this many days are removed.
    #[serde(default = "d_ledger_days")]
    pub ledger_retention_days: i64,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`; absent: not served.
    pub listen: Option<SocketAddr>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Stable name of this replica (MQTT client id `rollcall-ingest-<node_name>`).
    pub node_name: String,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `[campus]`.
    #[serde(default = "d_campus")]
    pub campus: CampusConfig,
    /// `[ingest]`.
    #[serde(default = "d_ingest")]
    pub ingest: IngestConfig,
    /// `[attendance]`.
    #[serde(default = "d_att")]
    pub attendance: AttendanceConfig,
    /// `[jobs]`.
    #[serde(default = "d_jobs")]
    pub jobs: JobsConfig,
    /// `[metrics]`.
    #[serde(default = "d_metrics")]
    pub metrics: MetricsConfig,
}

fn d_pool() -> usize {
    8
}
fn d_mode() -> SchemaMode {
    SchemaMode::Existing
}
fn d_true() -> bool {
    true
}
fn d_group() -> String {
    "rollcall-ingest".into()
}
fn d_keepalive() -> u64 {
    30
}
fn d_tz() -> String {
    "Asia/Kolkata".into()
}
fn d_clock() -> SessionClock {
    SessionClock::WallclockAsUtc
}
fn d_batch_msgs() -> usize {
    256
}
fn d_batch_punches() -> usize {
    20_000
}
fn d_writers() -> usize {
    2
}
fn d_linger() -> u64 {
    5
}
fn d_early() -> i64 {
    15
}
fn d_skew() -> i64 {
    300
}
fn d_grace() -> i64 {
    5
}
fn d_threshold() -> f64 {
    75.0
}
fn d_retention() -> i64 {
    7
}
fn d_hour() -> u64 {
    3600
}
fn d_minute() -> u64 {
    60
}
fn d_day() -> u64 {
    86_400
}
fn d_days() -> i64 {
    7
}
fn d_silent() -> i64 {
    300
}
fn d_ledger_days() -> i64 {
    7 * 366
}
fn d_campus() -> CampusConfig {
    toml::from_str("").expect("defaults")
}
fn d_ingest() -> IngestConfig {
    toml::from_str("").expect("defaults")
}
fn d_att() -> AttendanceConfig {
    toml::from_str("").expect("defaults")
}
fn d_jobs() -> JobsConfig {
    toml::from_str("").expect("defaults")
}
fn d_metrics() -> MetricsConfig {
    MetricsConfig { listen: None }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let cfg: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates a TOML string.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !rollcall_protocol::v1::valid_id(&self.node_name) {
            return bad(format!(
                "node_name {:?}: use 1-64 of [A-Za-z0-9._-]",
                self.node_name
            ));
        }
        if self.campus_tz().is_none() {
            return bad(format!(
                "campus.timezone {:?} is not an IANA time zone (e.g. Asia/Kolkata)",
                self.campus.timezone
            ));
        }
        if !(self.mqtt.url.starts_with("mqtt://") || self.mqtt.url.starts_with("mqtts://")) {
            return bad(format!(
                "mqtt.url {:?} must start with mqtt:// or mqtts://",
                self.mqtt.url
            ));
        }
        if self.mqtt.client_cert.is_some() != self.mqtt.client_key.is_some() {
            return bad("mqtt.client_cert and mqtt.client_key go together".into());
        }
        if self.ingest.max_batch_messages == 0 || self.ingest.max_batch_punches == 0 {
            return bad(
                "ingest.max_batch_messages and max_batch_punches must be at least 1".into(),
            );
        }
        if self.database.pool_size < 2 {
            return bad("database.pool_size must be at least 2 (writer + jobs)".into());
        }
        Ok(())
    }

    /// The campus time zone.
    pub fn campus_tz(&self) -> Option<chrono_tz::Tz> {
        self.campus.timezone.parse().ok()
    }

    /// Linger as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.ingest.linger_ms)
    }

    /// `(host, port, tls)` from the broker URL.
    pub fn broker(&self) -> Result<(String, u16, bool), ConfigError> {
        let (rest, tls) = match self.mqtt.url.strip_prefix("mqtts://") {
            Some(r) => (r, true),
            None => (
                self.mqtt
                    .url
                    .strip_prefix("mqtt://")
                    .unwrap_or(&self.mqtt.url),
                false,
            ),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| ConfigError::Invalid(format!("mqtt.url port {p:?}")))?,
            ),
            None => (rest.to_string(), if tls { 8883 } else { 1883 }),
        };
        Ok((host, port, tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "node_name = \"a\"\n[database]\nurl = \"postgres://x/y\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.campus.session_clock, SessionClock::WallclockAsUtc);
        assert_eq!(c.attendance.default_grace_minutes, 5);
        assert!(c.attendance.late_counts_as_attended);
        assert_eq!(c.broker().unwrap(), ("127.0.0.1".into(), 1883, false));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml(&format!("{MIN}[ingest]\nbogus = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_timezone_is_refused() {
        let e = Config::from_toml(&format!("{MIN}[campus]\ntimezone = \"Mars/Base\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Base"), "{e}");
    }
}
