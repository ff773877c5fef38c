//! RDM6300 125 kHz EM4100 card reader (UART, transmit only).
//!
//! The module sends a 14-byte frame for every read and repeats it while the card stays in the
//! field; [`Rdm6300`] collapses the repeats into one tap per presentation. [`codec`] is pure;
//! [`sim`] produces the bytes a card in the field would.
//!
//! # Wiring (Raspberry Pi 4/5)
//!
//! | RDM6300 pin   | Pi                                                      |
//! |---------------|---------------------------------------------------------|
//! | +5V           | pin 2 or 4 (5 V)                                         |
//! | GND           | pin 6                                                   |
//! | TX            | through a level shifter (or a 1k/2k divider) to the UART's RX (UART0: GPIO15, pin 10) |
//! | RX            | not connected (the module does not listen)              |
//! | ANT1/ANT2     | the coil                                                |
//!
//! **5 V logic.** The RDM6300 runs on 5 V and its TX swings to 5 V; Pi GPIO pins are 3.3 V only
//! and are damaged by 5 V. Always put a level shifter or a resistor divider (1 kOhm in series,
//! 2 kOhm to GND) between its TX and the Pi.
//!
//! # UART setup
//!
//! 9600 baud 8N1 on a PL011 UART (`/dev/ttyAMA*`; `dtoverlay=uart2`..`uart5` on a Pi 4 for extra
//! ports); the serial console must be off on that port (`raspi-config` > Interface > Serial).
//! The device belongs to group `dialout`: `sudo usermod -aG dialout rollcall`.
//!
//! # Timing
//!
//! A card held in the field repeats its frame. Modules and the libraries written for them
//! disagree on the period (readers.md says about 220 ms; host libraries wait 300 ms to several
//! seconds), so frames of one card less than `repeat_window` apart are one tap. The default,
//! 1.2 s, gives one tap per presentation for any repeat period up to 500 ms even when a frame is
//! lost (a 1 s gap); the cost is that the same card taken away and shown again within 1.2 s is
//! the same tap. Another card is always a new tap. Set `repeat_window = "600ms"` (50 ms to 10 s)
//! for a module known to repeat fast where quick re-taps matter.
//!
//! # Troubleshooting
//!
//! - One card punches twice while held: the module repeats slower than half the window; raise
//!   `repeat_window`.
//! - No taps at all: check 5 V on the module, the coil connector, the divider, and read the port
//!   by hand (`stty -F /dev/ttyAMA2 9600 raw; xxd /dev/ttyAMA2`): each tap prints `02 ... 03`.
//! - Corrupt frames at debug level: a mini UART (`ttyS0`) or a missing common ground.
//! - Range is a few centimetres; metal behind the coil detunes it.
//! - EM4100 numbers are read-only and trivially cloned: an identifier, not a secret.

pub mod codec;
mod device;
pub mod sim;

pub use codec::{DEFAULT_REPEAT_WINDOW, Debouncer, Tag};
pub use device::{Rdm6300, Rdm6300Codec};
