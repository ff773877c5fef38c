//! Readers and indicators for Rollcall.
//!
//! This crate knows nothing of punches, students or journals. It turns bytes from a reader into
//! [`ReaderEvent`]s and turns [`Signal`]s into light and sound. The daemon talks to it through
//! two functions, [`run_reader`] and [`run_indicator`], each driving one configured device until
//! the shutdown token fires, plus the [`ReaderConfig`] / [`IndicatorConfig`] types that the
//! daemon's TOML config embeds. What a reader is connected to is passed in, never looked up: a
//! [`ReaderWiring`] carries the presenter of a simulated reader and the Aura LED link of an
//! `aura` indicator ([`indicator::AuraWiring`] makes those links for a configuration).
//!
//! Each device family has a pure codec, an async device generic over its transport (a serial
//! port, a simulator's pipe or a scripted mock all work the same) and a byte-level simulator
//! with fault injection: [`ef01`] (R305/R307/R503/AS608 fingerprint), [`rdm6300`] (125 kHz
//! cards), [`pn532`] (13.56 MHz cards, UART), [`wiegand`] (26/34-bit on two GPIO lines),
//! [`iso_template`] (sensors that send ISO/IEC 19794-2 templates), and
//! [`indicator`] (GPIO LEDs and buzzer, R503 Aura LED, log). Each module's header documents
//! wiring, Raspberry Pi UART/GPIO setup, permissions and troubleshooting.
//!
//! # Configuration
//!
//! ```toml
//! [[reader]]                    # fingerprint: R503 on the PL011 UART
//! id = "door-finger"
//! kind = "ef01"                 # aliases: "r503", "r307", "r305", "as608"
//! port = "/dev/ttyAMA0"
//! # baud = 57600                # 9600 x N, N = 1..12
//! # password = 0                # if one was set on the module
//! # address = 0xFFFFFFFF
//!
//! [[reader]]                    # 125 kHz EM4100 cards (5-byte UIDs)
//! id = "door-em"
//! kind = "rdm6300"
//! port = "/dev/ttyAMA2"         # 9600 baud by default
//! # repeat_window = "1200ms"    # frames of one card closer than this are one tap
//!
//! [[reader]]                    # MIFARE / NTAG cards (4- or 7-byte UIDs)
//! id = "door-nfc"
//! kind = "pn532"
//! port = "/dev/ttyAMA3"         # 115200 baud by default
//!
//! [[reader]]                    # Wiegand 26 (3-byte UID) or 34 (4-byte UID)
//! id = "gate"
//! kind = "wiegand"
//! chip = "/dev/gpiochip0"       # the default
//! d0_line = 17
//! d1_line = 27
//! # max_bit_interval = "25ms"   # slowest reader's bit spacing; 2x this ends a frame
//!
//! [[reader]]                    # a sensor that sends ISO/IEC 19794-2 templates (matched by
//! id = "door-template"          # rollcalld against the roster's encrypted templates)
//! kind = "iso-template"
//! port = "/dev/ttyAMA1"         # 115200 baud by default
//!
//! [[reader]]                    # any kind above, against its simulator, fed by the Presenter
//! id = "demo-finger"
//! kind = "r503"
//! simulate = true
//!
//! [[reader]]                    # simulated kinds (no port): fed by the Presenter
//! id = "sim-card"
//! kind = "simulated-card"       # or "simulated-fingerprint"
//!
//! [[indicator]]
//! kind = "gpio"
//! green_line = 5
//! red_line = 6
//! buzzer_line = 13
//! # active_low = false
//! # simulate = true             # log the lines instead of driving them
//!
//! [[indicator]]
//! kind = "aura"                 # the R503's ring LED, through its running reader
//! reader = "door-finger"
//!
//! [[indicator]]
//! kind = "log"
//! ```
#![deny(missing_docs)]

mod config;
pub mod ef01;
mod event;
pub mod indicator;
pub mod iso_template;
pub mod pn532;
pub mod rdm6300;
mod run;
mod sim_io;
pub mod simulated;
pub mod wiegand;

pub use config::{ConfigError, IndicatorConfig, IndicatorKind, ReaderConfig, ReaderKind};
pub use event::{CredentialKind, ReaderEvent, ReaderHealth, Signal};
pub use run::{
    DriverError, EnrolError, EnrolJob, EnrolStep, Enrolled, Library, LibraryPort, LibraryReport,
    ReaderWiring, Template, run_indicator, run_reader,
};
