//! The file as written: TOML keys and their spellings, old and new. Nothing here is used outside
//! [`super`], which turns it into typed values and collects every problem.

use super::{DatabaseConfig, Owner, SessionClock};
use serde::{Deserialize, Deserializer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A duration written with its unit (`"90s"`, `"5m"`, `"1h"`, `"7days"`), as rollcalld's
/// configuration writes them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Human(pub Duration);

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Human;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration with its unit, e.g. \"90s\", \"5m\", \"1h\" or \"7days\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Human, E> {
                humantime::parse_duration(s).map(Human).map_err(|e| {
                    E::custom(format!("{s:?}: {e} (write e.g. \"90s\", \"5m\", \"1h\")"))
                })
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub node_name: String,
    pub database: DatabaseConfig,
    pub mqtt: Mqtt,
    #[serde(default)]
    pub campus: Campus,
    #[serde(default)]
    pub ingest: Ingest,
    #[serde(default)]
    pub attendance: Attendance,
    #[serde(default)]
    pub jobs: Jobs,
    #[serde(default)]
    pub metrics: Metrics,
    /// ZKTeco PUSH terminals (issue 14); absent: no endpoint.
    pub adms: Option<Adms>,
    /// Credentials and rosters (issue 9); absent: punches only, no rosters published.
    pub credentials: Option<crate::credentials::CredentialsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Mqtt {
    pub url: String,
    pub share_group: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub keep_alive: Option<Human>,
    /// Old spelling of `keep_alive`, in seconds.
    pub keep_alive_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Campus {
    pub timezone: Option<String>,
    pub session_clock: Option<SessionClock>,
    pub system_user: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ingest {
    pub max_batch_messages: Option<u64>,
    pub max_batch_punches: Option<u64>,
    pub writers: Option<u64>,
    pub linger: Option<Human>,
    /// Old spelling of `linger`, in milliseconds.
    pub linger_ms: Option<u64>,
    pub early_arrival: Option<Human>,
    /// Old spelling of `early_arrival`, in minutes.
    pub early_arrival_minutes: Option<i64>,
    pub max_future_skew: Option<Human>,
    /// Old spelling of `max_future_skew`, in seconds.
    pub max_future_skew_s: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Attendance {
    pub late_counts_as_attended: Option<bool>,
    pub default_grace_minutes: Option<i64>,
    pub default_threshold_percent: Option<f64>,
    pub default_retention_years: Option<i64>,
    #[serde(default)]
    pub demo_devices: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Jobs {
    pub enabled: Option<bool>,
    pub generate_sessions_every: Option<Human>,
    pub generate_sessions_every_s: Option<u64>,
    pub generate_days_ahead: Option<i64>,
    pub open_close_every: Option<Human>,
    pub open_close_every_s: Option<u64>,
    pub statistics_every: Option<Human>,
    pub statistics_every_s: Option<u64>,
    pub retention_every: Option<Human>,
    pub retention_every_s: Option<u64>,
    pub device_health_every: Option<Human>,
    pub device_health_every_s: Option<u64>,
    pub device_silent_after: Option<Human>,
    pub device_silent_after_s: Option<i64>,
    pub ledger_retention: Option<Human>,
    /// Old spelling of `ledger_retention`, in days.
    pub ledger_retention_days: Option<i64>,
    #[serde(default)]
    pub owner: Owners,
}

/// `[jobs.owner]`: who runs each job CampsHub360's beat also declares.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Owners {
    pub generate_sessions: Option<Owner>,
    pub open_close: Option<Owner>,
    pub statistics: Option<Owner>,
    pub retention: Option<Owner>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Metrics {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Adms {
    pub listen: SocketAddr,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Bytes.
    pub max_body: Option<u64>,
    pub delay: Option<Human>,
    pub error_delay: Option<Human>,
}
