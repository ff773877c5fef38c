//! Fingerprint sensors that send an ISO/IEC 19794-2 minutiae template for every finger placed
//! (UART, transmit only); the gateway matches the template in software against its roster.
//!
//! Such sensors (a capacitive sensor with an extractor that outputs standard templates instead
//! of searching a library of its own) differ in how they frame a template on the wire, and
//! readers.md documents none of them, so Rollcall defines one simple framing, documented in
//! [`codec`], that a sensor's firmware (or a small bridge MCU in front of it) sends. [`sim`]
//! produces those bytes for a template, with faults, and is what `simulate = true` runs.
//!
//! ```text
//! offset  size  field
//! 0       2     sync: F5 1F
//! 2       2     payload length N, big-endian, 1..=8192
//! 4       N     payload: one finger minutiae record (ISO/IEC 19794-2:2005 or ANSI INCITS 378)
//! 4+N     2     checksum: the 16-bit sum of the length bytes and the payload, big-endian
//! ```
//!
//! One frame per placement: the sensor sends a template when a finger is placed and nothing more
//! until the finger has been lifted, so every frame is one presentation (no debouncing). The
//! driver does not read the record (the daemon's matcher does, and refuses malformed ones).
//!
//! # Wiring (Raspberry Pi 4/5)
//!
//! | sensor pin | Pi                                                   |
//! |------------|------------------------------------------------------|
//! | VCC        | what the sensor's datasheet says (3.3 V: pin 1; 5 V: pin 2) |
//! | GND        | pin 6                                                |
//! | TX         | the UART's RX (UART0: GPIO15, pin 10); through a level shifter if the sensor's logic is 5 V |
//! | RX         | not needed (the sensor only transmits)               |
//!
//! # UART setup
//!
//! 115200 baud 8N1 by default (`baud` to change it; a 300-byte template takes 26 ms at 115200)
//! on a PL011 UART (`/dev/ttyAMA*`), serial console off on that port (`raspi-config` >
//! Interface > Serial); the rollcall user in group `dialout`.
//!
//! # Troubleshooting
//!
//! - No punches: read the port by hand (`stty -F /dev/ttyAMA0 115200 raw; xxd /dev/ttyAMA0`) and
//!   place a finger: a frame starts `f5 1f`. Nothing at all: wiring or baud rate.
//! - "corrupt frame" at debug level: wrong baud rate, a mini UART (`ttyS0`), or no common ground.
//! - "unreadable template" warnings from rollcalld: the sensor sends a record that is not ISO/IEC
//!   19794-2 or ANSI 378 (check its output format setting).

pub mod codec;
mod device;
pub mod sim;

pub use codec::{Decoded, FrameError, MAX_PAYLOAD, encode, parse};
pub use device::{IsoTemplateCodec, IsoTemplateReader};
