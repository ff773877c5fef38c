//! Where a reader's input comes from, decided once from its configuration: hardware (a UART or
//! two GPIO lines) or a byte-level simulator fed by a presenter. Every (kind, simulate) pair has
//! its own arm, so a new kind cannot fall into another kind's driver.

use std::path::PathBuf;

use super::DriverError;
use crate::{ReaderConfig, ReaderKind};

/// A reader's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Hardware(Hardware),
    Simulated(Simulated),
}

/// A real device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hardware {
    Ef01 { port: PathBuf },
    Rdm6300 { port: PathBuf },
    Pn532 { port: PathBuf },
    IsoTemplate { port: PathBuf },
    Wiegand { chip: PathBuf, d0: u32, d1: u32 },
}

/// A simulator in place of a device, through the same driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Simulated {
    /// `simulated-fingerprint`: the EF01 simulator over an in-memory pipe.
    Fingerprint,
    /// `simulated-card`: RDM6300, PN532 and Wiegand simulators, chosen by UID length.
    Cards,
    /// `wiegand` with `simulate = true`: edges from the simulator's channel.
    Wiegand,
    /// A serial kind with `simulate = true`: its simulator on a pseudo-terminal.
    OnPty(Serial),
}

/// The kinds that talk over a UART.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serial {
    Ef01,
    Rdm6300,
    Pn532,
    IsoTemplate,
}

impl Simulated {
    /// The reader kind it imitates, for logs.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Simulated::Fingerprint => "simulated fingerprint",
            Simulated::Cards => "simulated card",
            Simulated::Wiegand => "simulated wiegand",
            Simulated::OnPty(Serial::Ef01) => "simulated ef01",
            Simulated::OnPty(Serial::Rdm6300) => "simulated rdm6300",
            Simulated::OnPty(Serial::Pn532) => "simulated pn532",
            Simulated::OnPty(Serial::IsoTemplate) => "simulated iso-template",
        }
    }
}

impl Source {
    /// The source `config` describes. Errors name the missing key (validation catches them
    /// first; this keeps the hardware arms free of `Option`s).
    pub(crate) fn of(config: &ReaderConfig) -> Result<Self, DriverError> {
        let required =
            |key: &str| DriverError::Config(format!("reader {}: {key} is required", config.id));
        let port = || config.port.clone().ok_or_else(|| required("port"));
        Ok(match (config.kind, config.simulate) {
            (ReaderKind::SimulatedFingerprint, _) => Source::Simulated(Simulated::Fingerprint),
            (ReaderKind::SimulatedCard, _) => Source::Simulated(Simulated::Cards),
            (ReaderKind::Ef01, true) => Source::Simulated(Simulated::OnPty(Serial::Ef01)),
            (ReaderKind::Rdm6300, true) => Source::Simulated(Simulated::OnPty(Serial::Rdm6300)),
            (ReaderKind::Pn532, true) => Source::Simulated(Simulated::OnPty(Serial::Pn532)),
            (ReaderKind::IsoTemplate, true) => {
                Source::Simulated(Simulated::OnPty(Serial::IsoTemplate))
            }
            (ReaderKind::Wiegand, true) => Source::Simulated(Simulated::Wiegand),
            (ReaderKind::Ef01, false) => Source::Hardware(Hardware::Ef01 { port: port()? }),
            (ReaderKind::Rdm6300, false) => Source::Hardware(Hardware::Rdm6300 { port: port()? }),
            (ReaderKind::Pn532, false) => Source::Hardware(Hardware::Pn532 { port: port()? }),
            (ReaderKind::IsoTemplate, false) => {
                Source::Hardware(Hardware::IsoTemplate { port: port()? })
            }
            (ReaderKind::Wiegand, false) => Source::Hardware(Hardware::Wiegand {
                chip: config
                    .chip
                    .clone()
                    .unwrap_or_else(|| "/dev/gpiochip0".into()),
                d0: config.d0_line.ok_or_else(|| required("d0_line"))?,
                d1: config.d1_line.ok_or_else(|| required("d1_line"))?,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> Source {
        Source::of(&toml::from_str(text).unwrap()).unwrap()
    }

    #[test]
    fn every_kind_has_its_own_source() {
        assert_eq!(
            source("id = \"a\"\nkind = \"pn532\"\nport = \"/dev/ttyAMA3\""),
            Source::Hardware(Hardware::Pn532 {
                port: "/dev/ttyAMA3".into()
            })
        );
        assert_eq!(
            source("id = \"a\"\nkind = \"rdm6300\"\nport = \"/dev/ttyAMA2\""),
            Source::Hardware(Hardware::Rdm6300 {
                port: "/dev/ttyAMA2".into()
            })
        );
        assert_eq!(
            source("id = \"a\"\nkind = \"r503\"\nport = \"/dev/ttyAMA0\""),
            Source::Hardware(Hardware::Ef01 {
                port: "/dev/ttyAMA0".into()
            })
        );
        assert_eq!(
            source("id = \"g\"\nkind = \"wiegand\"\nd0_line = 17\nd1_line = 27"),
            Source::Hardware(Hardware::Wiegand {
                chip: "/dev/gpiochip0".into(),
                d0: 17,
                d1: 27
            })
        );
        assert_eq!(
            source("id = \"a\"\nkind = \"rdm6300\"\nsimulate = true"),
            Source::Simulated(Simulated::OnPty(Serial::Rdm6300))
        );
        assert_eq!(
            source("id = \"a\"\nkind = \"iso-template\"\nport = \"/dev/ttyAMA1\""),
            Source::Hardware(Hardware::IsoTemplate {
                port: "/dev/ttyAMA1".into()
            })
        );
        assert_eq!(
            source("id = \"a\"\nkind = \"iso-template\"\nsimulate = true"),
            Source::Simulated(Simulated::OnPty(Serial::IsoTemplate))
        );
        assert_eq!(
            source("id = \"a\"\nkind = \"simulated-card\""),
            Source::Simulated(Simulated::Cards)
        );
        assert_eq!(
            source("id = \"a\"\nkind = \"simulated-fingerprint\"\nsimulate = true"),
            Source::Simulated(Simulated::Fingerprint)
        );
    }

    #[test]
    fn a_hardware_reader_without_its_port_is_a_config_error() {
        let config: ReaderConfig = toml::from_str("id = \"x\"\nkind = \"pn532\"").unwrap();
        let err = Source::of(&config).unwrap_err();
        assert_eq!(err.to_string(), "reader x: port is required");
    }
}
