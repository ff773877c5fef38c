//! The TOML configuration, validated into typed values.
//!
//! ```toml
//! node_name = "ingest-a"              # stable per replica: MQTT client id, job-run attribution
//!
//! [database]
//! url = "postgres://rollcall@db.campus/campshub?sslmode=require"
//! ca_file = "/etc/rollcall/db-ca.pem"  # the CA that signed the server's certificate
//! pool_size = 8
//! schema_mode = "existing"             # or "standalone": also create the CampsHub360 tables
//! migrate_on_start = true
//!
//! [mqtt]
//! url = "mqtts://broker.campus:8883"   # mqtts://, or mqtt:// (credentials only to loopback)
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
//! demo_devices = ["demo-1"]            # their SIMULATED punches count as attendance
//!
//! [jobs]
//! generate_days_ahead = 7
//!
//! [metrics]
//! listen = "0.0.0.0:9464"
//! ```
//!
//! Rules `validate` enforces beyond types:
//!
//! * **TLS to PostgreSQL** follows the URL's `sslmode`: `disable` never uses TLS; `require` always
//!   does; `prefer` (the default when the URL says nothing) uses TLS when `ca_file` is set and
//!   the server offers it, and plain TCP otherwise, as before TLS support. Whenever TLS is used
//!   the server's certificate and host name are checked (libpq's `verify-full`), against
//!   `database.ca_file` or, without it, the system's trust store. libpq's `verify-ca` and
//!   `verify-full` are refused with a hint: write `require` and set `ca_file`.
//! * **No password in clear across the network**: `mqtt.username` (with its password) over
//!   plain `mqtt://` is allowed only to a loopback broker (`localhost`, 127.0.0.0/8, `::1`);
//!   anything else must use `mqtts://`.
//! * **Demo devices**: punches flagged SIMULATED are kept out of attendance unless their device
//!   is listed in `attendance.demo_devices` (each a valid device id).

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
    /// PEM file with the CA that signed the server's certificate; without it, TLS (when the
    /// URL's `sslmode` asks for it) trusts the system's store. See the module docs.
    pub ca_file: Option<PathBuf>,
}

/// TLS to PostgreSQL, decided by [`DatabaseConfig::tls`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTls {
    /// Plain TCP: `sslmode=disable`, or `prefer` without `ca_file`.
    Plain,
    /// TLS with the server's certificate and host name verified.
    Verified {
        /// The CA to trust; `None`: the system's trust store.
        ca_file: Option<PathBuf>,
        /// `sslmode=require`: refuse a server without TLS (`prefer` falls back to plain TCP
        /// when the server offers no TLS, never when its certificate fails).
        required: bool,
    },
}

impl DatabaseConfig {
    /// The URL parsed, and how TLS is to be used (see the module docs).
    pub fn tls(&self) -> Result<(tokio_postgres::Config, DbTls), ConfigError> {
        use tokio_postgres::config::SslMode;
        if let Some(i) = self.url.find("sslmode=verify-") {
            let mode: String = self.url[i + "sslmode=".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            return Err(ConfigError::Invalid(format!(
                "database.url: sslmode={mode} is libpq's; write sslmode=require and set \
                 database.ca_file: ingest always checks the certificate and the host name"
            )));
        }
        let pg: tokio_postgres::Config = self.url.parse().map_err(|e| {
            ConfigError::Invalid(format!("database.url is not a PostgreSQL URL: {e}"))
        })?;
        let tls = match (pg.get_ssl_mode(), &self.ca_file) {
            (SslMode::Disable, Some(ca)) => {
                return Err(ConfigError::Invalid(format!(
                    "database.ca_file {} is set but database.url says sslmode=disable: \
                     remove one of them",
                    ca.display()
                )));
            }
            (SslMode::Disable, None) | (SslMode::Prefer, None) => DbTls::Plain,
            (SslMode::Prefer, Some(ca)) => DbTls::Verified {
                ca_file: Some(ca.clone()),
                required: false,
            },
            // `require`, and any stricter mode a later tokio-postgres may parse.
            (_, ca) => DbTls::Verified {
                ca_file: ca.clone(),
                required: true,
            },
        };
        Ok((pg, tls))
    }
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
    /// Devices whose punches flagged SIMULATED count as attendance (demonstration rooms);
    /// every other device's simulated punches are kept out of attendance.
    #[serde(default)]
    pub demo_devices: Vec<String>,
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
        if self.mqtt.password_file.is_some() && self.mqtt.username.is_none() {
            return bad("mqtt.password_file is set without mqtt.username: set both".into());
        }
        let (host, _, tls) = self.broker()?;
        if self.mqtt.username.is_some() && !tls && !is_loopback(&host) {
            return bad(format!(
                "mqtt.url {:?} is plain MQTT to {host}, which would send mqtt.username's password \
                 across the network in clear: use mqtts:// (with mqtt.ca_file)",
                self.mqtt.url
            ));
        }
        if let Some(bad_id) = self
            .attendance
            .demo_devices
            .iter()
            .find(|d| !rollcall_protocol::v1::valid_id(d))
        {
            return bad(format!(
                "attendance.demo_devices: {bad_id:?} is not a device id (1-64 of [A-Za-z0-9._-])"
            ));
        }
        if self.ingest.max_batch_messages == 0 || self.ingest.max_batch_punches == 0 {
            return bad(
                "ingest.max_batch_messages and max_batch_punches must be at least 1".into(),
            );
        }
        self.database.tls()?;
        if self.database.pool_size < 2 {
            return bad("database.pool_size must be at least 2 (writer + jobs)".into());
        }
        Ok(())
    }

    /// Whether `device`'s SIMULATED punches count as attendance.
    pub fn is_demo_device(&self, device: &str) -> bool {
        self.attendance.demo_devices.iter().any(|d| d == device)
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

/// `localhost`, 127.0.0.0/8 or `::1` (a URL's `[::1]` included): traffic that never leaves the
/// machine.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
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

    fn refused(extra: &str) -> String {
        Config::from_toml(&format!("{MIN}{extra}"))
            .unwrap_err()
            .to_string()
    }

    fn with_mqtt(url: &str, extra: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!(
            "node_name = \"a\"\n[database]\nurl = \"postgres://x/y\"\n[mqtt]\nurl = \"{url}\"\n{extra}"
        ))
    }

    #[test]
    fn password_over_plain_mqtt_to_a_remote_broker_is_refused() {
        let user = "username = \"ingest\"\npassword_file = \"/etc/rollcall/mqtt-password\"\n";
        for url in [
            "mqtt://broker.campus:1883",
            "mqtt://10.0.0.5:1883",
            "mqtt://[2001:db8::1]:1883",
        ] {
            let e = with_mqtt(url, user).unwrap_err().to_string();
            assert!(e.contains("use mqtts://"), "{url}: {e}");
            assert!(e.contains("in clear"), "{url}: {e}");
        }
        // A user name alone is still an identity the broker trusts: same rule.
        let e = with_mqtt("mqtt://broker.campus", "username = \"ingest\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("use mqtts://"), "{e}");
    }

    #[test]
    fn password_over_plain_mqtt_to_loopback_or_over_mqtts_is_allowed() {
        let user = "username = \"ingest\"\npassword_file = \"/etc/rollcall/mqtt-password\"\n";
        for url in [
            "mqtt://127.0.0.1:1883",
            "mqtt://127.1.2.3:1883",
            "mqtt://localhost:1883",
            "mqtt://LOCALHOST",
            "mqtt://[::1]:1883",
            "mqtt://[::ffff:127.0.0.1]:1883",
            "mqtts://broker.campus:8883",
        ] {
            with_mqtt(url, user).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        // Without credentials plain MQTT anywhere stays allowed (the broker decides).
        with_mqtt("mqtt://broker.campus:1883", "").unwrap();
    }

    #[test]
    fn password_file_without_username_is_refused() {
        let e = with_mqtt("mqtts://b:8883", "password_file = \"/p\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mqtt.username"), "{e}");
    }

    #[test]
    fn demo_devices_default_to_none_and_must_be_device_ids() {
        let c = Config::from_toml(MIN).unwrap();
        assert!(c.attendance.demo_devices.is_empty());
        assert!(!c.is_demo_device("demo-1"));
        let c = Config::from_toml(&format!(
            "{MIN}[attendance]\ndemo_devices = [\"demo-1\", \"lab.2\"]\n"
        ))
        .unwrap();
        assert_eq!(c.attendance.demo_devices, ["demo-1", "lab.2"]);
        assert!(c.is_demo_device("lab.2"));
        assert!(!c.is_demo_device("dev-101"));
        for bad in ["", "has space", "a/b", "+", "#"] {
            let e = refused(&format!("[attendance]\ndemo_devices = [\"ok\", {bad:?}]\n"));
            assert!(e.contains("attendance.demo_devices"), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        let e = refused(&format!(
            "[attendance]\ndemo_devices = [\"{}\"]\n",
            "x".repeat(65)
        ));
        assert!(e.contains("attendance.demo_devices"), "{e}");
    }

    fn db(url: &str, ca: Option<&str>) -> Result<DbTls, ConfigError> {
        DatabaseConfig {
            url: url.into(),
            pool_size: 2,
            schema_mode: SchemaMode::Existing,
            migrate_on_start: false,
            ca_file: ca.map(PathBuf::from),
        }
        .tls()
        .map(|(_, t)| t)
    }

    #[test]
    fn sslmode_and_ca_file_decide_database_tls() {
        let ca = Some(PathBuf::from("/ca.pem"));
        // Nothing said: plain, as before TLS support.
        assert_eq!(db("postgres://h/d", None).unwrap(), DbTls::Plain);
        assert_eq!(
            db("postgres://h/d?sslmode=disable", None).unwrap(),
            DbTls::Plain
        );
        assert_eq!(
            db("postgres://h/d?sslmode=prefer", None).unwrap(),
            DbTls::Plain
        );
        assert_eq!(
            db("postgres://h/d", Some("/ca.pem")).unwrap(),
            DbTls::Verified {
                ca_file: ca.clone(),
                required: false
            }
        );
        assert_eq!(
            db("postgres://h/d?sslmode=require", Some("/ca.pem")).unwrap(),
            DbTls::Verified {
                ca_file: ca,
                required: true
            }
        );
        assert_eq!(
            db("host=h dbname=d sslmode=require", None).unwrap(),
            DbTls::Verified {
                ca_file: None,
                required: true
            }
        );
    }

    #[test]
    fn contradictory_or_libpq_only_sslmodes_are_refused_with_what_to_write() {
        let e = db("postgres://h/d?sslmode=disable", Some("/ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sslmode=disable") && e.contains("database.ca_file"),
            "{e}"
        );
        for mode in ["verify-full", "verify-ca"] {
            let e = db(&format!("postgres://h/d?sslmode={mode}&x=1"), None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("sslmode={mode} is libpq's")), "{e}");
            assert!(
                e.contains("sslmode=require and set database.ca_file"),
                "{e}"
            );
        }
        let e = db("postgres://h/d?sslmode=sometimes", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");
        // validate runs the same decision, so `rollcall-ingest validate` catches it.
        let e = Config::from_toml(
            "node_name = \"a\"\n[database]\nurl = \"postgres://h/d?sslmode=verify-full\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sslmode=verify-full is libpq's"), "{e}");
    }
}
