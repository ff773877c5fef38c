//! Readers and indicators for Rollcall.
//!
//! This crate knows nothing of punches, students or journals. It turns bytes from a reader into
//! [`ReaderEvent`]s and turns [`Signal`]s into light and sound. The daemon talks to it through
//! two functions, [`run_reader`] and [`run_indicator`], each driving one configured device until
//! the shutdown token fires, plus the [`ReaderConfig`] / [`IndicatorConfig`] types that the
//! daemon's TOML config embeds.
#![deny(missing_docs)]

mod config;
pub mod ef01;
mod event;
pub mod indicator;
pub mod pn532;
pub mod rdm6300;
mod run;
pub mod simulated;
pub mod wiegand;

pub use config::{ConfigError, IndicatorConfig, IndicatorKind, ReaderConfig, ReaderKind};
pub use event::{CredentialKind, ReaderEvent, ReaderHealth, Signal};
pub use run::{DriverError, run_indicator, run_reader};
