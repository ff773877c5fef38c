//! rollcalld's configuration: facts about the installation, in one TOML file, validated into
//! typed values with messages that name the key and the fix (`rollcalld validate`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rollcall_drivers::{IndicatorConfig, ReaderConfig, ReaderKind};
use rollcall_protocol::v1::valid_id;
use serde::Deserialize;

/// rollcalld's configuration file, parsed; [`Config::validate`] checks it before start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[device]`: its id (the CampsHub360 device row), site and state directory.
    pub device: DeviceConfig,
    /// The punch journal.
    #[serde(default)]
    pub journal: JournalConfig,
    /// The link to the centre.
    pub mqtt: MqttConfig,
    /// Who is expected in this room.
    #[serde(default)]
    pub roster: RosterConfig,
    /// `[capture]`: the duplicate window and the software-match threshold.
    #[serde(default)]
    pub capture: CaptureConfig,
    /// `[metrics]`: where `/metrics` listens (empty: off).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The local control socket (simulated readers, `rollcalld tap`).
    #[serde(default)]
    pub control: ControlConfig,
    /// Readers, one table each.
    #[serde(default, rename = "reader")]
    pub readers: Vec<ReaderConfig>,
    /// Indicators, one table each.
    #[serde(default, rename = "indicator")]
    pub indicators: Vec<IndicatorConfig>,
}

/// `[device]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// `attendance_biometric_device.device_id` of this gateway.
    pub id: String,
    /// Campus / site id (a topic level).
    pub site: String,
    /// Directory for the journal and the device's card-hash key.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// `[journal]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// Most unacked punches held before new ones are refused ("storage full").
    #[serde(default = "default_capacity")]
    pub capacity: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            capacity: default_capacity(),
        }
    }
}

/// `[mqtt]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (8883 for TLS, by convention).
    #[serde(default = "default_port")]
    pub port: u16,
    /// MQTT client id; default `rollcalld-<device id>`. Must be stable: the broker keeps the
    /// session (and queued acks) under it.
    #[serde(default)]
    pub client_id: Option<String>,
    /// TLS with a client certificate (required unless `allow_plaintext`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Plain TCP, only to a broker on this machine (loopback), e.g. a local bridge or a demo.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// How often the client pings an idle broker; the broker drops a client silent for 1.5
    /// times this and publishes its last will.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Most punches per published batch.
    #[serde(default = "default_batch_max")]
    pub batch_max: u64,
    /// Most batches awaiting the centre's ack.
    #[serde(default = "default_window")]
    pub window: usize,
    /// How long to wait for the centre's ack before re-sending from the journal.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// How often the retained status heartbeat is published.
    #[serde(default = "default_status_interval", with = "humantime_serde")]
    pub status_interval: Duration,
}

/// `[mqtt.tls]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM certificate of this device (its CN is the device id).
    pub cert_file: PathBuf,
    /// PEM private key of this device.
    pub key_file: PathBuf,
}

/// `[roster]`: where the room's roster comes from.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RosterConfig {
    /// `centre` (the default): the centre publishes the roster, the gateway keeps it sealed in
    /// the state directory (see `credentials`). `file`: a hand-written roster file at `path`,
    /// for a gateway run offline.
    #[serde(default)]
    pub source: RosterSource,
    /// The roster file (see `roster.rs`), with `source = "file"` only.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// Where the roster comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RosterSource {
    /// Published by the centre.
    #[default]
    Centre,
    /// A file on this gateway.
    File,
}

/// `[capture]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// A second punch of the same person within this window is answered "duplicate" and not
    /// stored. `0s` turns it off.
    #[serde(default = "default_duplicate_window", with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// `iso-template` readers: the matcher score (0 to 1) at which the best enrolled student is
    /// accepted; below it the finger is unknown. Default `rollcall_matcher::THRESHOLD` (0.135:
    /// 0.01 % of impostor comparisons reach it).
    #[serde(default = "default_match_threshold")]
    pub match_threshold: f32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            duplicate_window: default_duplicate_window(),
            match_threshold: default_match_threshold(),
        }
    }
}

fn default_match_threshold() -> f32 {
    rollcall_matcher::THRESHOLD
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (`/metrics`); empty turns it off.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

/// `[control]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket for presenting cards and fingers to simulated readers; default
    /// `<state_dir>/control.sock`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/rollcall")
}
fn default_capacity() -> u64 {
    2_000_000
}
fn default_port() -> u16 {
    8883
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(15)
}
fn default_batch_max() -> u64 {
    500
}
fn default_window() -> usize {
    8
}
fn default_ack_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_status_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_duplicate_window() -> Duration {
    Duration::from_secs(60)
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

/// The ack timeout doubles on each consecutive expiry up to this many times its configured value.
pub const ACK_TIMEOUT_BACKOFF: u32 = 12;
/// Longest `mqtt.ack_timeout`: with [`ACK_TIMEOUT_BACKOFF`] a re-send still happens within 12 h,
/// and every deadline computed from it stays far inside what a clock instant can hold.
pub const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest `mqtt.keep_alive`: MQTT carries it as 16 bits of seconds.
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(u16::MAX as u64);
/// Longest `mqtt.status_interval`: the centre judges a gateway's health by its heartbeats.
pub const MAX_STATUS_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest `capture.duplicate_window`: a longer one would swallow the next day's punches.
pub const MAX_DUPLICATE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        Self::parse(&text).map_err(|ConfigErrors(errs)| {
            ConfigErrors(
                errs.into_iter()
                    .map(|e| format!("{}: {e}", path.display()))
                    .collect(),
            )
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigErrors(vec![e.to_string()]))?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration that needs no file: simulated readers, a broker on this machine, state
    /// in `state_dir`. This is what `rollcalld run --simulate` uses without `--config`.
    pub fn simulated(state_dir: PathBuf, broker_port: u16) -> Self {
        let text = format!(
            r#"
            [device]
            id = "demo-gateway"
            site = "demo"
            state_dir = "{dir}"
            [mqtt]
            host = "127.0.0.1"
            port = {broker_port}
            allow_plaintext = true
            [roster]
            source = "file"
            path = "{dir}/roster.toml"
            [metrics]
            listen = ""
            [[reader]]
            id = "door-card"
            kind = "simulated-card"
            [[reader]]
            id = "door-finger"
            kind = "simulated-fingerprint"
            [[indicator]]
            kind = "log"
            "#,
            dir = state_dir.display()
        );
        toml::from_str(&text).expect("the built-in simulated configuration is valid")
    }

    /// Checks what types cannot: ids, ranges, TLS, readers.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errs = Vec::new();
        let id_rule = "use 1 to 64 letters, digits, '-', '_' or '.'";
        if !valid_id(&self.device.id) {
            errs.push(format!(
                "device.id: {:?} is not a valid id: {id_rule}",
                self.device.id
            ));
        }
        if !valid_id(&self.device.site) {
            errs.push(format!(
                "device.site: {:?} is not a valid id: {id_rule}",
                self.device.site
            ));
        }
        if !self.device.state_dir.is_absolute() {
            errs.push(format!(
                "device.state_dir: {:?} must be an absolute path",
                self.device.state_dir
            ));
        }
        if self.journal.capacity == 0 {
            errs.push("journal.capacity: must be at least 1 (default 2000000)".into());
        }
        let m = &self.mqtt;
        if m.host.is_empty() {
            errs.push("mqtt.host: must name the broker".into());
        }
        if m.port == 0 {
            errs.push("mqtt.port: 0 is not a valid port: use 1..=65535 (8883 for TLS)".into());
        }
        if let Some(id) = &m.client_id
            && (id.is_empty() || id.len() > 128)
        {
            errs.push("mqtt.client_id: must be 1 to 128 characters".into());
        }
        match (&m.tls, m.allow_plaintext) {
            (None, false) => errs.push(
                "mqtt.tls: missing: punches must not leave the device in clear text; set ca_file, cert_file and \
                 key_file (see `rollcall` provisioning), or allow_plaintext = true for a broker on this machine"
                    .into(),
            ),
            (None, true) if !is_loopback(&m.host) => errs.push(format!(
                "mqtt.allow_plaintext: only allowed for a broker on this machine (127.0.0.1, ::1, localhost), not {:?}; configure mqtt.tls",
                m.host
            )),
            (Some(tls), _) => {
                for (key, path) in [("ca_file", &tls.ca_file), ("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
                    if !path.is_file() {
                        errs.push(format!("mqtt.tls.{key}: {} does not exist or is not a file", path.display()));
                    }
                }
            }
            _ => {}
        }
        if m.batch_max == 0 || m.batch_max > rollcall_protocol::v1::MAX_BATCH_PUNCHES as u64 {
            errs.push(format!(
                "mqtt.batch_max: {} is out of range: use 1..={}",
                m.batch_max,
                rollcall_protocol::v1::MAX_BATCH_PUNCHES
            ));
        }
        if m.window == 0 || m.window > 64 {
            errs.push(format!(
                "mqtt.window: {} is out of range: use 1..=64",
                m.window
            ));
        }
        // Every duration is later added to a clock instant (and the ack timeout multiplied), so an
        // absurd value must stop here, not panic in `run`.
        for (key, value, min, max, example) in [
            (
                "mqtt.ack_timeout",
                m.ack_timeout,
                Duration::from_millis(100),
                MAX_ACK_TIMEOUT,
                "10s",
            ),
            (
                "mqtt.keep_alive",
                m.keep_alive,
                Duration::from_secs(1),
                MAX_KEEP_ALIVE,
                "15s",
            ),
            (
                "mqtt.status_interval",
                m.status_interval,
                Duration::from_secs(1),
                MAX_STATUS_INTERVAL,
                "30s",
            ),
            (
                "capture.duplicate_window",
                self.capture.duplicate_window,
                Duration::ZERO,
                MAX_DUPLICATE_WINDOW,
                "60s",
            ),
        ] {
            if !(min..=max).contains(&value) {
                errs.push(format!(
                    "{key}: {} is out of range: use {} to {} (e.g. \"{example}\")",
                    humantime::format_duration(value),
                    humantime::format_duration(min),
                    humantime::format_duration(max),
                ));
            }
        }
        // Below the 1:1 verification threshold a roster search takes strangers for students
        // (the false match rate grows with the number of enrolled impressions).
        let t = self.capture.match_threshold;
        if !(rollcall_matcher::VERIFICATION_THRESHOLD..=1.0).contains(&t) {
            errs.push(format!(
                "capture.match_threshold: {t} is out of range: use {} to 1 (default {}; lower \
                 values let strangers punch as students)",
                rollcall_matcher::VERIFICATION_THRESHOLD,
                rollcall_matcher::THRESHOLD
            ));
        }
        match (self.roster.source, &self.roster.path) {
            (RosterSource::File, None) => errs.push(
                "roster.path: required with roster.source = \"file\": name the roster file, or \
                 remove source to take the roster from the centre"
                    .into(),
            ),
            (RosterSource::Centre, Some(path)) => errs.push(format!(
                "roster.path: {path:?} is set but roster.source is \"centre\" (the default): \
                 the centre publishes the roster. Remove path, or set source = \"file\" to use \
                 the file offline"
            )),
            (RosterSource::File, Some(path)) if !path.is_absolute() => {
                errs.push(format!("roster.path: {path:?} must be an absolute path"))
            }
            _ => {}
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            errs.push(format!(
                "metrics.listen: {:?} is not an address: use e.g. \"127.0.0.1:9464\", or \"\" to turn metrics off",
                self.metrics.listen
            ));
        }
        if self.readers.is_empty() {
            errs.push(
                "reader: no [[reader]] configured: add at least one (see README, \"Configure\")"
                    .into(),
            );
        }
        let mut ids = std::collections::HashSet::new();
        for (i, r) in self.readers.iter().enumerate() {
            if let Err(e) = r.validate(i) {
                errs.push(e.to_string());
            }
            if !ids.insert(r.id.clone()) {
                errs.push(format!(
                    "reader[{i}].id: {:?} is used by another reader: ids must be unique",
                    r.id
                ));
            }
        }
        for (i, ind) in self.indicators.iter().enumerate() {
            if let Err(e) = ind.validate(i) {
                errs.push(e.to_string());
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("rollcalld-{}", self.device.id))
    }

    /// Where the journal lives: `journal.redb` in the state directory.
    pub fn journal_path(&self) -> PathBuf {
        self.device.state_dir.join("journal.redb")
    }

    /// The control socket's path: `control.socket`, else `control.sock` in the state directory.
    pub fn control_socket(&self) -> PathBuf {
        self.control
            .socket
            .clone()
            .unwrap_or_else(|| self.device.state_dir.join("control.sock"))
    }

    /// Whether any reader is simulated (so the control socket is useful).
    pub fn has_simulated_readers(&self) -> bool {
        self.readers.iter().any(is_simulated)
    }

    /// The indicators, or a log indicator when none are configured.
    pub fn indicators_or_log(&self) -> Vec<IndicatorConfig> {
        if self.indicators.is_empty() {
            vec![toml::from_str("kind = \"log\"").expect("a log indicator needs no settings")]
        } else {
            self.indicators.clone()
        }
    }
}

/// Whether a reader is fed by the control socket instead of hardware.
pub fn is_simulated(reader: &ReaderConfig) -> bool {
    reader.simulate
        || matches!(
            reader.kind,
            ReaderKind::SimulatedCard | ReaderKind::SimulatedFingerprint
        )
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [device]
        id = "room-101"
        site = "north"
        state_dir = "/var/lib/rollcall"
        [mqtt]
        host = "127.0.0.1"
        port = 1883
        allow_plaintext = true
        [[reader]]
        id = "door-card"
        kind = "simulated-card"
    "#;

    #[test]
    fn a_minimal_config_gets_sensible_defaults() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.capture.duplicate_window, Duration::from_secs(60));
        assert_eq!(c.journal.capacity, 2_000_000);
        assert_eq!(c.client_id(), "rollcalld-room-101");
        assert_eq!(
            c.journal_path(),
            PathBuf::from("/var/lib/rollcall/journal.redb")
        );
    }

    #[test]
    fn the_roster_comes_from_the_centre_unless_a_file_is_named_explicitly() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.roster.source, RosterSource::Centre);
        let file =
            format!("{GOOD}\n[roster]\nsource = \"file\"\npath = \"/etc/rollcall/roster.toml\"\n");
        let c = Config::parse(&file).expect("file with path");
        assert_eq!(c.roster.source, RosterSource::File);
        for (text, want) in [
            (
                "source = \"file\"",
                "roster.path: required with roster.source = \"file\"",
            ),
            (
                "path = \"/etc/rollcall/roster.toml\"",
                "roster.source is \"centre\"",
            ),
            (
                "source = \"centre\"\npath = \"/r.toml\"",
                "Remove path, or set source = \"file\"",
            ),
            (
                "source = \"file\"\npath = \"roster.toml\"",
                "must be an absolute path",
            ),
        ] {
            let e = Config::parse(&format!("{GOOD}\n[roster]\n{text}\n"))
                .expect_err(text)
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let e = Config::parse(&format!("{GOOD}\n[roster]\nsource = \"cloud\"\n"))
            .expect_err("unknown source")
            .to_string();
        assert!(e.contains("centre") && e.contains("file"), "{e}");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let bad = GOOD
            .replace("room-101", "room 101")
            .replace("port = 1883", "port = 0");
        let errs = Config::parse(&bad).expect_err("invalid").0;
        assert!(
            errs.iter()
                .any(|e| e.starts_with("device.id:") && e.contains("letters, digits")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("mqtt.port:") && e.contains("1..=65535")),
            "{errs:?}"
        );
    }

    #[test]
    fn plaintext_to_a_remote_broker_is_refused() {
        let bad = GOOD.replace("127.0.0.1", "broker.campus.example");
        let errs = Config::parse(&bad).expect_err("invalid").0;
        assert!(
            errs.iter().any(|e| e.starts_with("mqtt.allow_plaintext:")),
            "{errs:?}"
        );
        let bad = GOOD.replace("allow_plaintext = true", "");
        let errs = Config::parse(&bad).expect_err("invalid").0;
        assert!(
            errs.iter().any(|e| e.starts_with("mqtt.tls: missing")),
            "{errs:?}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_reported_with_their_place() {
        let err = Config::parse(&GOOD.replace("[mqtt]", "[mqtt]\nhots = \"x\""))
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("hots"), "{err}");
        let err = Config::parse(&GOOD.replace("port = 1883", "port = \"x\""))
            .expect_err("wrong type")
            .to_string();
        assert!(err.contains("port"), "{err}");
        let err = Config::parse(&format!("{GOOD}\n[capture]\nduplicate_window = \"soon\""))
            .expect_err("bad duration")
            .to_string();
        assert!(err.contains("duplicate_window"), "{err}");
    }

    #[test]
    fn durations_that_would_overflow_at_run_time_are_refused_naming_the_key() {
        let with = |table: &str, key: &str, value: &str| {
            let text = if table == "mqtt" {
                GOOD.replace("[mqtt]", &format!("[mqtt]\n{key} = \"{value}\""))
            } else {
                format!("{GOOD}\n[{table}]\n{key} = \"{value}\"\n")
            };
            Config::parse(&text)
        };
        for (table, key) in [
            ("mqtt", "ack_timeout"),
            ("mqtt", "keep_alive"),
            ("mqtt", "status_interval"),
            ("capture", "duplicate_window"),
        ] {
            let errs = with(table, key, "500000000000y").expect_err(key).0;
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(&format!("{table}.{key}: "))
                        && e.contains("out of range: use")),
                "{errs:?}"
            );
        }
        // The largest accepted values, and the arithmetic `run` does with them, do not overflow.
        let c = with("mqtt", "ack_timeout", "1h").expect("1h is accepted");
        let deadline = std::time::Instant::now() + c.mqtt.ack_timeout * ACK_TIMEOUT_BACKOFF;
        assert!(deadline > std::time::Instant::now());
        with("mqtt", "keep_alive", "65535s").expect("the MQTT maximum is accepted");
        with("mqtt", "keep_alive", "65536s").expect_err("beyond 16 bits of seconds");
        with("mqtt", "status_interval", "1h").expect("accepted");
        with("capture", "duplicate_window", "0s").expect("0s turns the window off");
    }

    #[test]
    fn the_match_threshold_defaults_to_the_matchers_and_refuses_unsafe_values() {
        let c = Config::parse(GOOD).expect("valid");
        assert_eq!(c.capture.match_threshold, rollcall_matcher::THRESHOLD);
        let with = |v: &str| Config::parse(&format!("{GOOD}\n[capture]\nmatch_threshold = {v}\n"));
        assert_eq!(with("0.2").expect("0.2").capture.match_threshold, 0.2);
        with("1.0").expect("1 accepts only perfect scores");
        for bad in ["0.0", "0.05", "1.5", "-1", "nan", "inf"] {
            let errs = with(bad).expect_err(bad).0;
            assert!(
                errs.iter()
                    .any(|e| e.starts_with("capture.match_threshold: ") && e.contains("strangers")),
                "{bad}: {errs:?}"
            );
        }
    }

    #[test]
    fn duplicate_reader_ids_are_refused() {
        let twice =
            format!("{GOOD}\n[[reader]]\nid = \"door-card\"\nkind = \"simulated-fingerprint\"\n");
        let errs = Config::parse(&twice).expect_err("dup").0;
        assert!(
            errs.iter().any(|e| e.contains("used by another reader")),
            "{errs:?}"
        );
    }

    #[test]
    fn reader_timing_keys_are_validated_with_the_rest() {
        let ok = format!(
            "{GOOD}\n[[reader]]\nid = \"em\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA2\"\nrepeat_window = \"600ms\"\n\
             [[reader]]\nid = \"gate\"\nkind = \"wiegand\"\nd0_line = 17\nd1_line = 27\nmax_bit_interval = \"20ms\"\n"
        );
        Config::parse(&ok).expect("valid timing keys");
        let bad = format!(
            "{GOOD}\n[[reader]]\nid = \"em\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA2\"\nrepeat_window = \"20s\"\n"
        );
        let errs = Config::parse(&bad).expect_err("out of range").0;
        assert!(
            errs.iter()
                .any(|e| e.starts_with("reader[1].repeat_window: 20s is out of range")),
            "{errs:?}"
        );
    }

    #[test]
    fn the_simulated_config_is_valid() {
        let c = Config::simulated(PathBuf::from("/tmp/rollcall-demo"), 1883);
        c.validate().expect("valid");
        assert!(c.has_simulated_readers());
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The shipped example parses; its only complaints are the TLS files absent on this machine.
    #[test]
    fn the_example_config_is_valid_but_for_its_certificate_files() {
        let text = include_str!("../rollcalld.example.toml");
        let errs = Config::parse(text)
            .expect_err("certificate files do not exist here")
            .0;
        assert!(errs.iter().all(|e| e.starts_with("mqtt.tls.")), "{errs:?}");
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    /// The commented hardware readers at its end are valid too once uncommented.
    #[test]
    fn the_examples_hardware_readers_are_valid_when_uncommented() {
        let text = include_str!("../rollcalld.example.toml");
        let (head, tail) = text
            .split_once("# Hardware readers")
            .expect("the example ends with hardware readers");
        let readers: String = tail
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect::<Vec<_>>()
            .join("\n");
        let errs = Config::parse(&format!("{head}\n{readers}\n"))
            .expect_err("certificate files do not exist here")
            .0;
        assert!(errs.iter().all(|e| e.starts_with("mqtt.tls.")), "{errs:?}");
    }
}
