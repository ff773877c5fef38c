//! Wiegand 26 and 34 card readers on two GPIO lines (D0, D1).
//!
//! [`decoder`] is a pure state machine (edges and kernel timestamps in, cards out, parity
//! checked; silence for twice the maximum bit interval ends a frame); [`WiegandReader`] is its async shell; [`GpioEdges`] reads
//! the lines through the Linux GPIO character device (`/dev/gpiochipN`, via gpiocdev) with
//! kernel edge timestamps, so scheduling delays in user space do not corrupt bit timing;
//! [`sim`] produces the edges of a card read.
//!
//! # Wiring (Raspberry Pi 4/5)
//!
//! | reader wire (usual colours) | Pi                                                      |
//! |-----------------------------|---------------------------------------------------------|
//! | red, +12 V (or +5 V)        | the reader's own supply, **not** the Pi                  |
//! | black, GND                  | supply GND **and** a Pi GND pin (common ground)         |
//! | green, D0                   | level shifter -> a GPIO, e.g. GPIO17 (pin 11): `d0_line = 17` |
//! | white, D1                   | level shifter -> a GPIO, e.g. GPIO27 (pin 13): `d1_line = 27` |
//!
//! **5 V logic.** Most Wiegand readers pull D0/D1 up to 5 V (some to 12 V!). Pi GPIO pins are
//! 3.3 V only: use a bidirectional level shifter (BSS138 boards) or an optocoupler. With
//! open-collector outputs the Pi's internal pull-ups (enabled by the driver) suffice at 3.3 V.
//! On a Pi 5 the header GPIOs are on `/dev/gpiochip4` on older kernels and `/dev/gpiochip0` on
//! current ones: `gpioinfo` (package gpiod) shows which chip lists `GPIO17`.
//!
//! # Permissions
//!
//! `/dev/gpiochip*` belongs to group `gpio` on Raspberry Pi OS: `sudo usermod -aG gpio rollcall`.
//! "permission denied" in the reader's health means exactly this. "busy" means another
//! program (or a device-tree overlay) holds the line.
//!
//! # Timing
//!
//! Pulses count from 10 us to 2 ms (SIA: 20-100 us). Bits come 200 us to 20 ms apart under
//! SIA's timing (most readers: 1-2 ms); `max_bit_interval` (default 25 ms, from 500 us to 100 ms)
//! bounds it, and twice that without a bit ends the frame, so a card is reported 50 ms after its
//! last bit by default. Two cards less than that apart would run together: no person taps that
//! fast. With the old fixed 5 ms gap a slow reader's frame fell apart into one-bit frames.
//!
//! # Troubleshooting
//!
//! - "1-bit frame" over and over: the reader sends bits further apart than `max_bit_interval`;
//!   raise it.
//! - "N-bit frame": the reader is set to another format (many can be switched to 26 or 34 with
//!   a DIP switch or a config card), or bits were lost: check the common ground.
//! - Parity errors: noisy long cable; use twisted pairs and keep the cable away from mains.
//! - Nothing at all: `gpiomon -c gpiochip0 17 27` (gpiod v2 tools) shows whether edges arrive.

pub mod decoder;
mod reader;
pub mod sim;

pub use decoder::{Card, Decoder, Edge, Line, Timing, WiegandError};
#[cfg(feature = "linux")]
pub use reader::GpioEdges;
pub use reader::{EdgeSource, WiegandReader};
