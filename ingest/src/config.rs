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
//! system_user = "rollcall@campus.edu"  # the accounts_user named in performed_by of our audit rows
//!
//! [ingest]
//! max_batch_messages = 256
//! max_batch_punches = 20000
//! linger = "5ms"                      # durations carry their unit, as in rollcalld's file
//!
//! [attendance]
//! late_counts_as_attended = true
//! demo_devices = ["demo-1"]            # their SIMULATED punches count as attendance
//!
//! [jobs]
//! generate_sessions_every = "1h"      # "0s" turns a job off
//! generate_days_ahead = 7
//!
//! [jobs.owner]                         # "rollcall" (default) or "campshub360": who runs the job
//! statistics = "campshub360"           # CampsHub360's beat keeps calculate-attendance-statistics
//!
//! [metrics]
//! listen = "0.0.0.0:9464"
//!
//! [adms]                               # optional: ZKTeco PUSH terminals (see crate::adms)
//! listen = "0.0.0.0:8081"
//!
//! [credentials]                        # optional: credentials and rosters (see crate::credentials)
//! key_file = "/etc/rollcall/credential-keys"
//! ```
//!
//! The file is read once into typed values ([`Config`]): the time zone as a `chrono_tz::Tz`, the
//! broker URL as a [`Broker`], every duration as a `Duration`. Every problem is reported at once,
//! one line each, naming the key and what to write (`rollcall-ingest validate`); nothing later
//! falls back to a default. Durations are written with their unit (`"90s"`, `"5m"`, `"1h"`); the
//! older keys with the unit in their name (`linger_ms`, `*_every_s`, `keep_alive_s`,
//! `early_arrival_minutes`, `max_future_skew_s`, `device_silent_after_s`,
//! `ledger_retention_days`) still work; giving both spellings of one value is refused.
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
//! * **Values that can run**: every duration and count is bounded (see [`LIMITS`]), so nothing
//!   the file says can overflow a clock or a date later (`generate_days_ahead = 9223372036854775807`
//!   used to panic in the jobs task).

mod file;

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
        /// The configuration file's path.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown / mistyped key.
    #[error("{path}: {source}")]
    Parse {
        /// The configuration file's path.
        path: PathBuf,
        /// The parser's message (names the key).
        source: toml::de::Error,
    },
    /// Values that parse but cannot run: every problem, one line each.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
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

/// Who runs a job that CampsHub360's Celery beat also declares: exactly one of the two may, or
/// they overwrite each other's rows (see the README, "Living next to CampsHub360's Django and
/// Celery").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// Rollcall's jobs run it; the campus turns the matching beat entries off.
    Rollcall,
    /// CampsHub360's beat runs it; Rollcall never does (its manual runs only as `--dry-run`).
    Campshub360,
}

/// `[jobs.owner]`, each job's owner (default Rollcall).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobOwners {
    /// Session generation (beat: generate-daily-attendance-sessions).
    pub generate_sessions: Owner,
    /// Auto open and close (beat: auto-open-attendance-sessions, auto-close-attendance-sessions).
    pub open_close: Owner,
    /// Statistics and eligibility (beat: calculate-attendance-statistics).
    pub statistics: Owner,
    /// Retention (beat: cleanup-old-attendance-data).
    pub retention: Owner,
}

impl Default for JobOwners {
    fn default() -> Self {
        JobOwners {
            generate_sessions: Owner::Rollcall,
            open_close: Owner::Rollcall,
            statistics: Owner::Rollcall,
            retention: Owner::Rollcall,
        }
    }
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
            return Err(ConfigError::invalid(format!(
                "database.url: sslmode={mode} is libpq's; write sslmode=require and set \
                 database.ca_file: ingest always checks the certificate and the host name"
            )));
        }
        let pg: tokio_postgres::Config = self.url.parse().map_err(|e| {
            ConfigError::invalid(format!("database.url is not a PostgreSQL URL: {e}"))
        })?;
        let tls = match (pg.get_ssl_mode(), &self.ca_file) {
            (SslMode::Disable, Some(ca)) => {
                return Err(ConfigError::invalid(format!(
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

impl ConfigError {
    fn invalid(line: String) -> Self {
        ConfigError::Invalid(vec![line])
    }
}

/// Where the broker is, from `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Host name or address (an IPv6 address keeps its brackets).
    pub host: String,
    /// Port (1883, or 8883 for `mqtts://`, when the URL names none).
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

/// `[mqtt]`.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// From `url`.
    pub broker: Broker,
    /// Shared-subscription group (`$share/<group>/...`).
    pub share_group: String,
    /// CA bundle for mqtts.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key: Option<PathBuf>,
    /// User name the broker knows ingest by.
    pub username: Option<String>,
    /// File holding the password (kept out of the config file).
    pub password_file: Option<PathBuf>,
    /// How often the client pings an idle broker; the broker drops a client silent for 1.5
    /// times this.
    pub keep_alive: Duration,
}

/// `[campus]`.
#[derive(Debug, Clone)]
pub struct CampusConfig {
    /// The campus time zone (IANA name in the file).
    pub timezone: chrono_tz::Tz,
    /// See [`SessionClock`].
    pub session_clock: SessionClock,
    /// The `accounts_user` (its email, or its id) that audit rows of Rollcall's own actions name
    /// in `performed_by_id`; an email not found is created at setup (`migrate`, or the start
    /// with `migrate_on_start`) as an account that cannot log in. None: `performed_by_id` NULL,
    /// which Django's `full_clean()` refuses.
    pub system_user: Option<String>,
}

/// `[ingest]`.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Most MQTT messages in one transaction.
    pub max_batch_messages: usize,
    /// Most punches in one transaction.
    pub max_batch_punches: usize,
    /// Concurrent writer transactions (devices are split among them by hash).
    pub writers: usize,
    /// How long to wait for more messages once one has arrived.
    pub linger: Duration,
    /// How long before a session's start a punch counts for it.
    pub early_arrival: Duration,
    /// A punch stamped further than this in the future (after clock correction) is rejected.
    pub max_future_skew: Duration,
}

/// `[attendance]`.
#[derive(Debug, Clone)]
pub struct AttendanceConfig {
    /// Whether `late` counts as attended in statistics and exam eligibility. CampsHub360's model
    /// helpers say yes, its statistics task says no; we default to yes (a late student attended).
    pub late_counts_as_attended: bool,
    /// Grace minutes when `GRACE_PERIOD_MINUTES` is not configured in the database.
    pub default_grace_minutes: i64,
    /// Eligibility threshold when `THRESHOLD_PERCENT` is not configured.
    pub default_threshold_percent: f64,
    /// Retention in years when `DATA_RETENTION_YEARS` is not configured.
    pub default_retention_years: i64,
    /// Devices whose punches flagged SIMULATED count as attendance (demonstration rooms);
    /// every other device's simulated punches are kept out of attendance.
    pub demo_devices: Vec<String>,
}

/// `[jobs]`.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Run the scheduled jobs on this replica (`rollcall-ingest jobs run` works either way).
    pub enabled: bool,
    /// Session generation interval; zero: not scheduled.
    pub generate_sessions_every: Duration,
    /// Campus days ahead of today to generate.
    pub generate_days_ahead: u32,
    /// Auto open/close interval; zero: not scheduled.
    pub open_close_every: Duration,
    /// Statistics interval; zero: not scheduled.
    pub statistics_every: Duration,
    /// Retention interval; zero: not scheduled.
    pub retention_every: Duration,
    /// Device health interval; zero: not scheduled.
    pub device_health_every: Duration,
    /// An enabled device silent this long is marked `error`.
    pub device_silent_after: Duration,
    /// How long the ledger, dead letters and job history are kept.
    pub ledger_retention: Duration,
    /// `[jobs.owner]`: which of the jobs CampsHub360's beat also declares Rollcall runs.
    pub owner: JobOwners,
}

/// `[metrics]`.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Where to serve `/metrics`; absent: not served.
    pub listen: Option<SocketAddr>,
}

/// The whole file, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Stable name of this replica (MQTT client id `rollcall-ingest-<node_name>`).
    pub node_name: String,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[mqtt]`.
    pub mqtt: MqttConfig,
    /// `[campus]`.
    pub campus: CampusConfig,
    /// `[ingest]`.
    pub ingest: IngestConfig,
    /// `[attendance]`.
    pub attendance: AttendanceConfig,
    /// `[jobs]`.
    pub jobs: JobsConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
    /// `[adms]`: where ZKTeco PUSH terminals reach the service; absent: not served.
    pub adms: Option<crate::adms::AdmsConfig>,
    /// `[credentials]`: the credential store and room rosters; absent: punches only.
    pub credentials: Option<crate::credentials::CredentialsConfig>,
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

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// How each duration is bounded, checked by `validate`.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// The configuration key, as the error names it (e.g. `jobs.retention_every`).
    pub key: &'static str,
    /// Least value (a job interval may also be zero: not scheduled).
    pub min: Duration,
    /// Greatest value: anything longer could not be added to a clock instant or a date.
    pub max: Duration,
    /// The value must be a multiple of this (job occurrences are counted in whole seconds,
    /// the early-arrival window in minutes).
    pub step: Duration,
    /// What to write, for the message.
    pub example: &'static str,
}

const fn limit(
    key: &'static str,
    min: Duration,
    max: Duration,
    step: Duration,
    example: &'static str,
) -> Limit {
    Limit {
        key,
        min,
        max,
        step,
        example,
    }
}

const MONTH: Duration = Duration::from_secs(31 * 86_400);
const NANO: Duration = Duration::from_nanos(1);

/// Every duration's bounds.
pub const LIMITS: &[Limit] = &[
    limit(
        "mqtt.keep_alive",
        Duration::from_secs(5),
        Duration::from_secs(u16::MAX as u64),
        SECOND,
        "30s",
    ),
    limit(
        "ingest.linger",
        Duration::ZERO,
        Duration::from_secs(10),
        NANO,
        "5ms",
    ),
    limit("ingest.early_arrival", Duration::ZERO, DAY, MINUTE, "15m"),
    limit("ingest.max_future_skew", Duration::ZERO, DAY, SECOND, "5m"),
    limit("jobs.generate_sessions_every", SECOND, MONTH, SECOND, "1h"),
    limit("jobs.open_close_every", SECOND, MONTH, SECOND, "1m"),
    limit("jobs.statistics_every", SECOND, MONTH, SECOND, "1h"),
    limit("jobs.retention_every", SECOND, MONTH, SECOND, "1day"),
    limit("jobs.device_health_every", SECOND, MONTH, SECOND, "1m"),
    limit(
        "jobs.device_silent_after",
        Duration::from_secs(10),
        MONTH,
        SECOND,
        "5m",
    ),
    limit(
        "jobs.ledger_retention",
        DAY,
        Duration::from_secs(100 * 366 * 86_400),
        SECOND,
        "2562days",
    ),
];

/// Longest `jobs.generate_days_ahead`: a year of sessions in one transaction is already a lot.
pub const MAX_DAYS_AHEAD: u32 = 366;

/// Collects the problems of one file.
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, line: String) {
        self.0.push(line);
    }

    /// One duration from its two spellings (`new` with a unit, `old` in the unit of its name),
    /// or `default`; bounded by [`LIMITS`] (a job interval may be zero).
    fn duration(
        &mut self,
        key: &str,
        new: Option<file::Human>,
        old_key: &str,
        old: Option<Duration>,
        default: Duration,
    ) -> Duration {
        let value = match (new, old) {
            (Some(_), Some(_)) => {
                self.push(format!(
                    "{key} and {old_key} are the same setting: keep only {key} (with a unit, e.g. \"30s\")"
                ));
                return default;
            }
            (Some(file::Human(d)), None) | (None, Some(d)) => d,
            (None, None) => default,
        };
        let Some(l) = LIMITS.iter().find(|l| l.key == key) else {
            return value;
        };
        let is_interval = key.ends_with("_every");
        if is_interval && value.is_zero() {
            return value;
        }
        if !(l.min..=l.max).contains(&value) {
            let zero = if is_interval {
                " (or 0s: not scheduled)"
            } else {
                ""
            };
            self.push(format!(
                "{key}: {} is out of range: use {} to {}{zero}, e.g. \"{}\"",
                humantime::format_duration(value),
                humantime::format_duration(l.min),
                humantime::format_duration(l.max),
                l.example,
            ));
        } else if value.as_nanos() % l.step.as_nanos() != 0 {
            self.push(format!(
                "{key}: {} is not a whole number of {}, e.g. \"{}\"",
                humantime::format_duration(value),
                if l.step == MINUTE {
                    "minutes"
                } else {
                    "seconds"
                },
                l.example,
            ));
        }
        value
    }

    /// An integer within `range`, or `default`.
    fn int<T: Copy + TryFrom<i64>>(
        &mut self,
        key: &str,
        value: Option<i64>,
        range: std::ops::RangeInclusive<i64>,
        default: T,
        unit: &str,
    ) -> T {
        let Some(v) = value else { return default };
        match T::try_from(v) {
            Ok(t) if range.contains(&v) => t,
            _ => {
                self.push(format!(
                    "{key}: {v} is out of range: use {} to {}{unit}",
                    range.start(),
                    range.end()
                ));
                default
            }
        }
    }
}

/// Seconds, or a negative number refused (an old `*_s` key).
fn secs(p: &mut Problems, key: &str, v: Option<i64>) -> Option<Duration> {
    let v = v?;
    if v < 0 {
        p.push(format!(
            "{key}: {v} is negative: give a duration with a unit instead, e.g. \"5m\""
        ));
        return None;
    }
    Some(Duration::from_secs(v as u64))
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a TOML string.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, Path::new("<string>"))
    }

    fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let f: file::File = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        Self::validate(f)
    }

    /// Turns the file into typed values, or lists every problem (one line each, naming the key
    /// and what to write).
    fn validate(f: file::File) -> Result<Self, ConfigError> {
        let mut p = Problems(Vec::new());
        if !rollcall_protocol::v1::valid_id(&f.node_name) {
            p.push(format!(
                "node_name {:?}: use 1-64 of [A-Za-z0-9._-]",
                f.node_name
            ));
        }

        let tz_name = f.campus.timezone.as_deref().unwrap_or("Asia/Kolkata");
        let timezone = tz_name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            p.push(format!(
                "campus.timezone {tz_name:?} is not an IANA time zone (e.g. Asia/Kolkata, Europe/London)"
            ));
            chrono_tz::UTC
        });

        let m = f.mqtt;
        let (broker, broker_ok) = match parse_broker(&m.url) {
            Ok(b) => (b, true),
            Err(e) => {
                p.push(e);
                (
                    Broker {
                        host: String::new(),
                        port: 1883,
                        tls: false,
                    },
                    false,
                )
            }
        };
        if m.client_cert.is_some() != m.client_key.is_some() {
            p.push("mqtt.client_cert and mqtt.client_key go together: set both or neither".into());
        }
        if m.password_file.is_some() && m.username.is_none() {
            p.push("mqtt.password_file is set without mqtt.username: set both".into());
        }
        if broker.tls && m.ca_file.is_none() {
            p.push(format!(
                "mqtt.url {:?} is mqtts:// but mqtt.ca_file is not set: give the CA that signed the broker's certificate",
                m.url
            ));
        }
        if m.username.is_some() && broker_ok && !broker.tls && !is_loopback(&broker.host) {
            p.push(format!(
                "mqtt.url {:?} is plain MQTT to {}, which would send mqtt.username's password \
                 across the network in clear: use mqtts:// (with mqtt.ca_file)",
                m.url, broker.host
            ));
        }
        let keep_alive = p.duration(
            "mqtt.keep_alive",
            m.keep_alive,
            "mqtt.keep_alive_s",
            m.keep_alive_s.map(Duration::from_secs),
            Duration::from_secs(30),
        );
        let share_group = m.share_group.unwrap_or_else(|| "rollcall-ingest".into());
        if !rollcall_protocol::v1::valid_id(&share_group) {
            p.push(format!(
                "mqtt.share_group {share_group:?}: use 1-64 of [A-Za-z0-9._-]"
            ));
        }

        let i = f.ingest;
        let max_batch_messages = p.int(
            "ingest.max_batch_messages",
            i.max_batch_messages.map(clamp_u64),
            1..=100_000,
            256usize,
            "",
        );
        let max_batch_punches = p.int(
            "ingest.max_batch_punches",
            i.max_batch_punches.map(clamp_u64),
            1..=1_000_000,
            20_000usize,
            "",
        );
        let writers = p.int(
            "ingest.writers",
            i.writers.map(clamp_u64),
            1..=64,
            2usize,
            "",
        );
        let linger = p.duration(
            "ingest.linger",
            i.linger,
            "ingest.linger_ms",
            i.linger_ms.map(Duration::from_millis),
            Duration::from_millis(5),
        );
        let early_min = i.early_arrival_minutes.map(|v| v.saturating_mul(60));
        let early_arrival = {
            let old = secs(&mut p, "ingest.early_arrival_minutes", early_min);
            p.duration(
                "ingest.early_arrival",
                i.early_arrival,
                "ingest.early_arrival_minutes",
                old,
                15 * MINUTE,
            )
        };
        let max_future_skew = {
            let old = secs(&mut p, "ingest.max_future_skew_s", i.max_future_skew_s);
            p.duration(
                "ingest.max_future_skew",
                i.max_future_skew,
                "ingest.max_future_skew_s",
                old,
                5 * MINUTE,
            )
        };

        let a = f.attendance;
        let default_grace_minutes = p.int(
            "attendance.default_grace_minutes",
            a.default_grace_minutes,
            0..=1440,
            5i64,
            " minutes",
        );
        let default_threshold_percent = a.default_threshold_percent.unwrap_or(75.0);
        if !(0.0..=100.0).contains(&default_threshold_percent) {
            p.push(format!(
                "attendance.default_threshold_percent: {default_threshold_percent} is out of range: use 0 to 100"
            ));
        }
        let default_retention_years = p.int(
            "attendance.default_retention_years",
            a.default_retention_years,
            1..=100,
            7i64,
            " years",
        );
        if let Some(bad) = a
            .demo_devices
            .iter()
            .find(|d| !rollcall_protocol::v1::valid_id(d))
        {
            p.push(format!(
                "attendance.demo_devices: {bad:?} is not a device id (1-64 of [A-Za-z0-9._-])"
            ));
        }

        let j = f.jobs;
        let mut every = |key: &str, new, old: Option<u64>, default| {
            let old_key = format!("{key}_s");
            p.duration(key, new, &old_key, old.map(Duration::from_secs), default)
        };
        let generate_sessions_every = every(
            "jobs.generate_sessions_every",
            j.generate_sessions_every,
            j.generate_sessions_every_s,
            HOUR,
        );
        let open_close_every = every(
            "jobs.open_close_every",
            j.open_close_every,
            j.open_close_every_s,
            MINUTE,
        );
        let statistics_every = every(
            "jobs.statistics_every",
            j.statistics_every,
            j.statistics_every_s,
            HOUR,
        );
        let retention_every = every(
            "jobs.retention_every",
            j.retention_every,
            j.retention_every_s,
            DAY,
        );
        let device_health_every = every(
            "jobs.device_health_every",
            j.device_health_every,
            j.device_health_every_s,
            MINUTE,
        );
        let generate_days_ahead = p.int(
            "jobs.generate_days_ahead",
            j.generate_days_ahead,
            0..=MAX_DAYS_AHEAD as i64,
            7u32,
            " days (e.g. 7)",
        );
        let device_silent_after = {
            let old = secs(
                &mut p,
                "jobs.device_silent_after_s",
                j.device_silent_after_s,
            );
            p.duration(
                "jobs.device_silent_after",
                j.device_silent_after,
                "jobs.device_silent_after_s",
                old,
                5 * MINUTE,
            )
        };
        let ledger_retention = {
            let old = secs(
                &mut p,
                "jobs.ledger_retention_days",
                j.ledger_retention_days.map(|d| d.saturating_mul(86_400)),
            );
            p.duration(
                "jobs.ledger_retention",
                j.ledger_retention,
                "jobs.ledger_retention_days",
                old,
                7 * 366 * DAY,
            )
        };

        let owner = {
            let o = &j.owner;
            let d = JobOwners::default();
            JobOwners {
                generate_sessions: o.generate_sessions.unwrap_or(d.generate_sessions),
                open_close: o.open_close.unwrap_or(d.open_close),
                statistics: o.statistics.unwrap_or(d.statistics),
                retention: o.retention.unwrap_or(d.retention),
            }
        };
        let system_user = f.campus.system_user.clone();
        if let Some(u) = &system_user
            && !valid_system_user(u)
        {
            p.push(format!(
                "campus.system_user {u:?}: give the email (or the id) of an accounts_user, \
                 e.g. \"rollcall@campus.edu\""
            ));
        }

        let database = f.database;
        if let Err(ConfigError::Invalid(lines)) = database.tls() {
            p.0.extend(lines);
        }
        if database.pool_size < 2 {
            p.push(format!(
                "database.pool_size {}: must be at least 2 (writer + jobs)",
                database.pool_size
            ));
        }

        let adms = f.adms.map(|a| adms(&mut p, a));
        let credentials = f.credentials.map(|c| c.validate(&mut p.0));

        if !p.0.is_empty() {
            return Err(ConfigError::Invalid(p.0));
        }
        Ok(Config {
            node_name: f.node_name,
            database,
            mqtt: MqttConfig {
                broker,
                share_group,
                ca_file: m.ca_file,
                client_cert: m.client_cert,
                client_key: m.client_key,
                username: m.username,
                password_file: m.password_file,
                keep_alive,
            },
            campus: CampusConfig {
                timezone,
                session_clock: f
                    .campus
                    .session_clock
                    .unwrap_or(SessionClock::WallclockAsUtc),
                system_user,
            },
            ingest: IngestConfig {
                max_batch_messages,
                max_batch_punches,
                writers,
                linger,
                early_arrival,
                max_future_skew,
            },
            attendance: AttendanceConfig {
                late_counts_as_attended: a.late_counts_as_attended.unwrap_or(true),
                default_grace_minutes,
                default_threshold_percent,
                default_retention_years,
                demo_devices: a.demo_devices,
            },
            jobs: JobsConfig {
                enabled: j.enabled.unwrap_or(true),
                generate_sessions_every,
                generate_days_ahead,
                open_close_every,
                statistics_every,
                retention_every,
                device_health_every,
                device_silent_after,
                ledger_retention,
                owner,
            },
            metrics: MetricsConfig {
                listen: f.metrics.listen,
            },
            adms,
            credentials,
        })
    }

    /// Whether `device`'s SIMULATED punches count as attendance.
    pub fn is_demo_device(&self, device: &str) -> bool {
        self.attendance.demo_devices.iter().any(|d| d == device)
    }
}

/// `[adms]`, its problems pushed to `p`.
fn adms(p: &mut Problems, a: file::Adms) -> crate::adms::AdmsConfig {
    if a.tls_cert.is_some() != a.tls_key.is_some() {
        p.push(
            "adms.tls_cert and adms.tls_key go together: set both (HTTPS) or neither (HTTP)".into(),
        );
    }
    let max_body = a.max_body.unwrap_or(crate::adms::DEFAULT_MAX_BODY as u64);
    if !(1024..=64 * 1024 * 1024).contains(&max_body) {
        p.push(format!(
            "adms.max_body {max_body}: give bytes between 1024 and 67108864 (default 4194304)"
        ));
    }
    let mut secs = |key: &str, v: Option<file::Human>, default: u32| match v {
        None => default,
        Some(file::Human(d)) if (1..=3600).contains(&d.as_secs()) => d.as_secs() as u32,
        Some(file::Human(d)) => {
            p.push(format!("{key} {d:?}: give 1s to 1h, e.g. \"{default}s\""));
            default
        }
    };
    let timing = crate::adms::Timing {
        delay_s: secs("adms.delay", a.delay, 10),
        error_delay_s: secs("adms.error_delay", a.error_delay, 30),
    };
    crate::adms::AdmsConfig {
        listen: a.listen,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        max_body: max_body.min(64 * 1024 * 1024) as usize,
        timing,
    }
}

/// An accounts_user id, or an email as `accounts_user.email` can hold it (254 characters, one
/// `@`, nothing blank or invisible).
fn valid_system_user(u: &str) -> bool {
    if uuid::Uuid::parse_str(u).is_ok() {
        return true;
    }
    let Some((local, domain)) = u.split_once('@') else {
        return false;
    };
    u.len() <= 254
        && !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && u.chars().all(|c| {
            c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        })
}

fn clamp_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `mqtt.url` as host, port and TLS.
fn parse_broker(url: &str) -> Result<Broker, String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false)
    } else {
        return Err(format!(
            "mqtt.url {url:?} must start with mqtt:// or mqtts://"
        ));
    };
    let rest = rest.trim_end_matches('/');
    // The port follows the last ':' unless that ':' is inside an IPv6 address's brackets.
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (
            h,
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("mqtt.url {url:?}: port {p:?} is not 1-65535"))?,
        ),
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "mqtt.url {url:?}: write mqtt://host:port or mqtts://host:port"
        ));
    }
    Ok(Broker {
        host: host.to_string(),
        port,
        tls,
    })
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
        assert_eq!(
            c.mqtt.broker,
            Broker {
                host: "127.0.0.1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(c.campus.timezone, chrono_tz::Asia::Kolkata);
        assert_eq!(c.ingest.linger, Duration::from_millis(5));
        assert_eq!(c.jobs.open_close_every, Duration::from_secs(60));
        assert_eq!(c.jobs.generate_days_ahead, 7);
        assert_eq!(
            c.jobs.ledger_retention,
            Duration::from_secs(7 * 366 * 86_400)
        );
    }

    #[test]
    fn durations_take_units_and_the_old_keys_still_work() {
        let c = Config::from_toml(&format!(
            "{MIN}[ingest]\nlinger = \"20ms\"\nearly_arrival = \"10m\"\n\
             [jobs]\nopen_close_every = \"30s\"\ngenerate_sessions_every = \"0s\"\n\
             device_silent_after = \"2m\"\nledger_retention = \"30days\"\n"
        ))
        .unwrap();
        assert_eq!(c.ingest.linger, Duration::from_millis(20));
        assert_eq!(c.ingest.early_arrival, Duration::from_secs(600));
        assert_eq!(c.jobs.open_close_every, Duration::from_secs(30));
        assert_eq!(
            c.jobs.generate_sessions_every,
            Duration::ZERO,
            "0s: not scheduled"
        );
        assert_eq!(c.jobs.device_silent_after, Duration::from_secs(120));
        assert_eq!(c.jobs.ledger_retention, Duration::from_secs(30 * 86_400));
        let old = Config::from_toml(&format!(
            "{MIN}keep_alive_s = 20\n[ingest]\nlinger_ms = 2\nearly_arrival_minutes = 10\nmax_future_skew_s = 60\n\
             [jobs]\nopen_close_every_s = 1\nstatistics_every_s = 0\ndevice_silent_after_s = 120\nledger_retention_days = 30\n"
        ))
        .unwrap();
        assert_eq!(old.mqtt.keep_alive, Duration::from_secs(20));
        assert_eq!(old.ingest.linger, Duration::from_millis(2));
        assert_eq!(old.ingest.early_arrival, Duration::from_secs(600));
        assert_eq!(old.ingest.max_future_skew, Duration::from_secs(60));
        assert_eq!(old.jobs.open_close_every, Duration::from_secs(1));
        assert_eq!(old.jobs.statistics_every, Duration::ZERO);
        assert_eq!(old.jobs.device_silent_after, Duration::from_secs(120));
        assert_eq!(old.jobs.ledger_retention, Duration::from_secs(30 * 86_400));
        let e = refused("[ingest]\nlinger = 5\n");
        assert!(e.contains("linger") && e.contains("\"90s\""), "{e}");
        let e = refused("[ingest]\nlinger = \"5 parsecs\"\n");
        assert!(e.contains("linger"), "{e}");
    }

    #[test]
    fn every_problem_is_listed_at_once_with_what_to_write() {
        let e = Config::from_toml(
            "node_name = \"bad name\"\n[database]\nurl = \"postgres://x/y\"\npool_size = 1\n\
             [mqtt]\nurl = \"tcp://broker\"\n[campus]\ntimezone = \"Mars/Base\"\n\
             [ingest]\nwriters = 0\nlinger = \"1h\"\nlinger_ms = 3\n\
             [attendance]\ndefault_threshold_percent = 120.0\n\
             [jobs]\ngenerate_days_ahead = 9223372036854775807\nopen_close_every = \"1500ms\"\n\
             retention_every_s = 18446744073709551615\nledger_retention_days = 9223372036854775807\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "node_name \"bad name\"",
            "database.pool_size 1",
            "mqtt.url \"tcp://broker\" must start with mqtt:// or mqtts://",
            "campus.timezone \"Mars/Base\" is not an IANA time zone",
            "ingest.writers: 0 is out of range: use 1 to 64",
            "ingest.linger and ingest.linger_ms are the same setting",
            "attendance.default_threshold_percent: 120 is out of range",
            "jobs.generate_days_ahead: 9223372036854775807 is out of range: use 0 to 366 days",
            "jobs.open_close_every: 1s 500ms is not a whole number of seconds",
            "jobs.retention_every: ",
            "jobs.ledger_retention: ",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
        assert_eq!(e.lines().count(), 12, "one line per problem:\n{e}");
    }

    #[test]
    fn broker_urls_become_host_port_and_tls() {
        let b = |u: &str| parse_broker(u);
        assert_eq!(
            b("mqtts://broker.campus").unwrap(),
            Broker {
                host: "broker.campus".into(),
                port: 8883,
                tls: true
            }
        );
        assert_eq!(
            b("mqtt://[::1]:1884/").unwrap(),
            Broker {
                host: "[::1]".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(b("mqtt://[::1]").unwrap().port, 1883);
        assert!(b("mqtt://h:0").unwrap_err().contains("not 1-65535"));
        assert!(b("mqtt://h:99999").unwrap_err().contains("not 1-65535"));
        assert!(b("mqtt://").is_err());
        let e = refused_url("mqtts://broker.campus:8883", "");
        assert!(e.contains("mqtt.ca_file"), "{e}");
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

    fn refused_url(url: &str, extra: &str) -> String {
        with_mqtt(url, extra).unwrap_err().to_string()
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
        ] {
            with_mqtt(url, user).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        {
            let url = "mqtts://broker.campus:8883";
            with_mqtt(url, &format!("{user}ca_file = \"/etc/rollcall/ca.pem\"\n"))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        // Without credentials plain MQTT anywhere stays allowed (the broker decides).
        with_mqtt("mqtt://broker.campus:1883", "").unwrap();
    }

    #[test]
    fn password_file_without_username_is_refused() {
        let e = with_mqtt("mqtt://127.0.0.1", "password_file = \"/p\"\n")
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

    #[test]
    fn job_owners_default_to_rollcall_and_name_campshub360_per_job() {
        let c = Config::from_toml(MIN).unwrap();
        assert_eq!(c.jobs.owner, JobOwners::default());
        assert_eq!(c.jobs.owner.statistics, Owner::Rollcall);
        assert_eq!(c.campus.system_user, None);
        let c = Config::from_toml(&format!(
            "{MIN}[campus]\nsystem_user = \"rollcall@campus.edu\"\n\
             [jobs.owner]\nstatistics = \"campshub360\"\nretention = \"campshub360\"\n"
        ))
        .unwrap();
        assert_eq!(c.jobs.owner.statistics, Owner::Campshub360);
        assert_eq!(c.jobs.owner.retention, Owner::Campshub360);
        assert_eq!(c.jobs.owner.open_close, Owner::Rollcall);
        assert_eq!(c.campus.system_user.as_deref(), Some("rollcall@campus.edu"));
        let id = "0b7c8e3a-51a4-4b0e-9e55-0c9d2d4b8a11";
        let c = Config::from_toml(&format!("{MIN}[campus]\nsystem_user = \"{id}\"\n")).unwrap();
        assert_eq!(c.campus.system_user.as_deref(), Some(id));
        // device_health has no counterpart in the beat: no owner to choose.
        let e = Config::from_toml(&format!(
            "{MIN}[jobs.owner]\ndevice_health = \"rollcall\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("device_health"), "{e}");
        let e = Config::from_toml(&format!("{MIN}[jobs.owner]\nstatistics = \"celery\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("campshub360"), "{e}");
        for bad in ["rollcall", "", "a b@c", "@campus.edu", "x@", "a@b@c"] {
            let e = Config::from_toml(&format!("{MIN}[campus]\nsystem_user = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("campus.system_user"), "{bad:?}: {e}");
        }
    }
}
