//! Configuration of readers and indicators, as it appears in rollcalld's TOML file.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Grow/ZhianTec EF01 fingerprint module (R305, R307, R503, AS608) on a UART.
    #[serde(alias = "r503", alias = "r307", alias = "r305", alias = "as608")]
    Ef01,
    /// RDM6300 125 kHz EM4100 card reader on a UART.
    Rdm6300,
    /// PN532 13.56 MHz ISO14443A reader on a UART (HSU).
    Pn532,
    /// Wiegand 26/34 reader on two GPIO lines.
    Wiegand,
    /// A fingerprint sensor that sends ISO/IEC 19794-2 templates on a UART (see
    /// [`crate::iso_template`]); the daemon matches them in software.
    IsoTemplate,
}

impl ReaderKind {
    /// The credential this kind of reader reads.
    pub fn credential(self) -> CredentialKind {
        match self {
            ReaderKind::SimulatedCard
            | ReaderKind::Rdm6300
            | ReaderKind::Pn532
            | ReaderKind::Wiegand => CredentialKind::Card,
            ReaderKind::SimulatedFingerprint | ReaderKind::Ef01 | ReaderKind::IsoTemplate => {
                CredentialKind::Fingerprint
            }
        }
    }

    /// Name used in config files, logs and the wire protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            ReaderKind::SimulatedCard => "simulated-card",
            ReaderKind::SimulatedFingerprint => "simulated-fingerprint",
            ReaderKind::Ef01 => "ef01",
            ReaderKind::Rdm6300 => "rdm6300",
            ReaderKind::Pn532 => "pn532",
            ReaderKind::Wiegand => "wiegand",
            ReaderKind::IsoTemplate => "iso-template",
        }
    }

    /// Whether this kind talks over a UART (`port`, `baud`).
    pub fn is_serial(self) -> bool {
        matches!(
            self,
            ReaderKind::Ef01 | ReaderKind::Rdm6300 | ReaderKind::Pn532 | ReaderKind::IsoTemplate
        )
    }

    /// The UART speed the device ships with.
    pub fn default_baud(self) -> u32 {
        match self {
            ReaderKind::Ef01 => 57_600,
            ReaderKind::Pn532 | ReaderKind::IsoTemplate => 115_200,
            _ => 9_600,
        }
    }
}

/// One `[[reader]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    /// Stable id of this reader on this device (appears in punches), e.g. `door-card`.
    pub id: String,
    /// Which driver reads it (`ef01` alias `r503`, `rdm6300`, `pn532`, `wiegand`,
    /// `iso-template`, or a simulated kind).
    pub kind: ReaderKind,
    /// Serial port for UART readers, e.g. `/dev/ttyAMA0`.
    #[serde(default)]
    pub port: Option<PathBuf>,
    /// Baud rate override for UART readers.
    #[serde(default)]
    pub baud: Option<u32>,
    /// Run the real driver against its byte-level simulator on a pseudo-terminal (serial kinds)
    /// or an edge channel (wiegand) instead of hardware; fed by the Presenter like the
    /// simulated kinds.
    #[serde(default)]
    pub simulate: bool,
    /// EF01 module address (default 0xFFFFFFFF).
    #[serde(default)]
    pub address: Option<u32>,
    /// EF01 module password (default 0).
    #[serde(default)]
    pub password: Option<u32>,
    /// GPIO chip for Wiegand lines (default `/dev/gpiochip0`).
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Wiegand D0 line offset on `chip` (the BCM GPIO number on a Pi).
    #[serde(default)]
    pub d0_line: Option<u32>,
    /// Wiegand D1 line offset on `chip`.
    #[serde(default)]
    pub d1_line: Option<u32>,
    /// RDM6300 (and `simulated-card`): frames of one card less than this apart are one tap,
    /// e.g. `"600ms"` (default 1.2 s: one tap for repeat periods up to 500 ms with a frame lost).
    #[serde(default, with = "humantime_serde")]
    pub repeat_window: Option<Duration>,
    /// Wiegand (and `simulated-card`): the longest time between two bits of a frame, e.g.
    /// `"25ms"` (the default, covering SIA's 20 ms); a frame ends after twice this without a bit.
    #[serde(default, with = "humantime_serde")]
    pub max_bit_interval: Option<Duration>,
}

/// Bounds of `repeat_window`: below a module's fastest repeat nothing collapses; above this a
/// second tap of the same card goes unnoticed for too long.
const REPEAT_WINDOW: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(10));
/// Bounds of `max_bit_interval`: the fastest readers send bits 200 us apart, SIA allows 20 ms.
const MAX_BIT_INTERVAL: (Duration, Duration) =
    (Duration::from_micros(500), Duration::from_millis(100));

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
        let err = |k: &str, message: String| {
            Err(ConfigError {
                key: key(k),
                message,
            })
        };
        let kind = self.kind.as_str();
        let real = !self.simulate
            && !matches!(
                self.kind,
                ReaderKind::SimulatedCard | ReaderKind::SimulatedFingerprint
            );
        if self.kind.is_serial() && real && self.port.is_none() {
            return err(
                "port",
                format!(
                    "required for kind {kind}: the UART the reader is wired to, e.g. \"/dev/ttyAMA0\" \
                     (or set simulate = true)"
                ),
            );
        }
        if !self.kind.is_serial() && (self.port.is_some() || self.baud.is_some()) {
            let k = if self.port.is_some() { "port" } else { "baud" };
            return err(
                k,
                format!("kind {kind} has no serial port: remove this key"),
            );
        }
        if let Some(baud) = self.baud {
            let ok = match self.kind {
                ReaderKind::Ef01 => baud % 9600 == 0 && (1..=12).contains(&(baud / 9600)),
                _ => baud > 0,
            };
            if !ok {
                return err(
                    "baud",
                    format!(
                        "{baud} is not a speed an {kind} module supports: use 9600 x N, N = 1..12 (default 57600)"
                    ),
                );
            }
        }
        if self.kind != ReaderKind::Ef01 && (self.address.is_some() || self.password.is_some()) {
            let k = if self.address.is_some() {
                "address"
            } else {
                "password"
            };
            return err(
                k,
                format!(
                    "only fingerprint modules of kind ef01 have one: remove it for kind {kind}"
                ),
            );
        }
        if self.kind == ReaderKind::Wiegand {
            match (self.d0_line, self.d1_line) {
                (Some(d0), Some(d1)) if d0 == d1 => {
                    return err(
                        "d1_line",
                        format!("D0 and D1 cannot both be line {d0}: wire them to two GPIOs"),
                    );
                }
                (None, _) if real => {
                    return err(
                        "d0_line",
                        "required for kind wiegand: the GPIO line of the green D0 wire, e.g. 17"
                            .into(),
                    );
                }
                (_, None) if real => {
                    return err(
                        "d1_line",
                        "required for kind wiegand: the GPIO line of the white D1 wire, e.g. 27"
                            .into(),
                    );
                }
                _ => {}
            }
        } else if self.d0_line.is_some() || self.d1_line.is_some() || self.chip.is_some() {
            return err(
                "d0_line",
                format!("GPIO lines only apply to kind wiegand, not {kind}: remove them"),
            );
        }
        for (k, value, kinds, (min, max), example) in [
            (
                "repeat_window",
                self.repeat_window,
                [ReaderKind::Rdm6300, ReaderKind::SimulatedCard],
                REPEAT_WINDOW,
                "1200ms",
            ),
            (
                "max_bit_interval",
                self.max_bit_interval,
                [ReaderKind::Wiegand, ReaderKind::SimulatedCard],
                MAX_BIT_INTERVAL,
                "25ms",
            ),
        ] {
            let Some(value) = value else { continue };
            if !kinds.contains(&self.kind) {
                return err(
                    k,
                    format!(
                        "only applies to kind {}, not {kind}: remove it",
                        kinds[0].as_str()
                    ),
                );
            }
            if !(min..=max).contains(&value) {
                return err(
                    k,
                    format!(
                        "{value:?} is out of range: use {min:?} to {max:?} (e.g. \"{example}\")"
                    ),
                );
            }
        }
        Ok(())
    }

    /// The RDM6300 repeat window to use.
    pub fn repeat_window_or_default(&self) -> Duration {
        self.repeat_window
            .unwrap_or(crate::rdm6300::DEFAULT_REPEAT_WINDOW)
    }

    /// The Wiegand timing to use.
    pub fn wiegand_timing(&self) -> crate::wiegand::Timing {
        crate::wiegand::Timing::with_max_bit_interval(
            self.max_bit_interval
                .unwrap_or(crate::wiegand::Timing::DEFAULT_MAX_BIT_INTERVAL),
        )
    }

    /// The baud rate to open the port at.
    pub fn baud_or_default(&self) -> u32 {
        self.baud.unwrap_or(self.kind.default_baud())
    }
}

/// Which kind of indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndicatorKind {
    /// Writes each signal to the log (the default; useful with simulated readers).
    Log,
    /// Green LED, red LED and/or buzzer on GPIO output lines.
    Gpio,
    /// The R503's ring LED, driven through the fingerprint reader named by `reader`.
    Aura,
}

/// One `[[indicator]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorConfig {
    /// How it shows the outcome: GPIO LEDs and buzzer, an R503's Aura LED, or the log.
    pub kind: IndicatorKind,
    /// GPIO chip for `gpio` (default `/dev/gpiochip0`).
    #[serde(default)]
    pub chip: Option<PathBuf>,
    /// Line of the green LED (`gpio`).
    #[serde(default)]
    pub green_line: Option<u32>,
    /// Line of the red LED (`gpio`).
    #[serde(default)]
    pub red_line: Option<u32>,
    /// Line of the buzzer (`gpio`).
    #[serde(default)]
    pub buzzer_line: Option<u32>,
    /// Outputs are active low (many relay boards) (`gpio`).
    #[serde(default)]
    pub active_low: bool,
    /// Id of the `ef01` / `simulated-fingerprint` reader whose Aura LED to use (`aura`).
    #[serde(default)]
    pub reader: Option<String>,
    /// Log line changes instead of driving GPIO (`gpio`).
    #[serde(default)]
    pub simulate: bool,
}

impl IndicatorConfig {
    /// Checks values that TOML types alone cannot.
    pub fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("indicator[{index}].{k}");
        let lines = [self.green_line, self.red_line, self.buzzer_line];
        match self.kind {
            IndicatorKind::Gpio => {
                if lines.iter().all(Option::is_none) {
                    return Err(ConfigError {
                        key: key("green_line"),
                        message: "a gpio indicator needs at least one of green_line, red_line, buzzer_line".into(),
                    });
                }
                let set: Vec<u32> = lines.iter().flatten().copied().collect();
                if (1..set.len()).any(|i| set[..i].contains(&set[i])) {
                    return Err(ConfigError {
                        key: key("buzzer_line"),
                        message: "two outputs share one GPIO line: give each its own".into(),
                    });
                }
            }
            IndicatorKind::Aura => {
                if self.reader.as_deref().unwrap_or("").is_empty() {
                    return Err(ConfigError {
                        key: key("reader"),
                        message:
                            "required for kind aura: the id of the R503 reader whose LED to use"
                                .into(),
                    });
                }
            }
            IndicatorKind::Log => {}
        }
        if self.kind != IndicatorKind::Gpio
            && (lines.iter().any(Option::is_some) || self.chip.is_some())
        {
            return Err(ConfigError {
                key: key("green_line"),
                message: "GPIO lines only apply to kind gpio: remove them".into(),
            });
        }
        Ok(())
    }
}
