//! Configuration of readers and indicators, as it appears in rollcalld's TOML file.

use std::path::PathBuf;

use serde::Deserialize;

use crate::CredentialKind;

/// A configuration value that cannot work, with the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The TOML key at fault, e.g. `reader[1].port`.
    pub key: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// Which device family a reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReaderKind {
    /// A card reader fed by [`crate::simulated::Presenter`] (no hardware).
    SimulatedCard,
    /// A fingerprint reader fed by [`crate::simulated::Presenter`] (no hardware).
    SimulatedFingerprint,
}

impl ReaderKind {
    /// The credential this kind of reader reads.
    pub fn credential(self) -> CredentialKind {
        match self {
            ReaderKind::SimulatedCard => CredentialKind::Card,
            ReaderKind::SimulatedFingerprint => CredentialKind::Fingerprint,
        }
    }

    /// Name used in config files, logs and the wire protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderKind::SimulatedCard => "simulated-card",
            ReaderKind::SimulatedFingerprint => "simulated-fingerprint",
        }
    }
}

/// One `[[reader]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// Stable id of this reader on this device (appears in punches), e.g. `door-card`.
    pub id: String,
    /// Device family.
    pub kind: ReaderKind,
    /// Serial port for UART readers, e.g. `/dev/ttyAMA0`.
    #[serde(default)]
    pub port: Option<PathBuf>,
    /// Baud rate override for UART readers.
    #[serde(default)]
    pub baud: Option<u32>,
}

impl ReaderConfig {
    /// Checks values that TOML types alone cannot; `index` is the table's position, for messages.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("reader[{index}].{k}");
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError {
                key: key("id"),
                message: format!(
                    "{:?} is not a valid reader id: use letters, digits, '-' or '_'",
                    self.id
                ),
            });
        }
        Ok(())
    }
}

/// Which kind of indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndicatorKind {
    /// Writes each signal to the log (the default; useful with simulated readers).
    Log,
}

/// One `[[indicator]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorConfig {
    /// Indicator family.
    pub kind: IndicatorKind,
}

impl IndicatorConfig {
    /// Checks values that TOML types alone cannot.
    pub fn validate(&self, _index: usize) -> Result<(), ConfigError> {
        Ok(())
    }
}
