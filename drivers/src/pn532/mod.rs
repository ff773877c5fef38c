//! NXP PN532 13.56 MHz reader over its HSU (UART) interface: MIFARE, NTAG and other
//! ISO14443A cards with 4- or 7-byte UIDs.
//!
//! [`codec`] parses and builds frames with no I/O; [`Pn532`] is the async device; [`sim`] a
//! byte-level chip with a card field.
//!
//! # Wiring (Raspberry Pi 4/5)
//!
//! Most PN532 breakouts (Adafruit, Elechouse "PN532 NFC module V3") select the interface with
//! two switches or jumpers: set them to **HSU** (both off / SEL0 = 0, SEL1 = 0).
//!
//! | PN532 board | Pi                                              |
//! |-------------|-------------------------------------------------|
//! | VCC         | 3.3 V (pin 1) - or 5 V only if the board has its own regulator *and* 3.3 V logic |
//! | GND         | pin 6                                           |
//! | TXD         | the UART's RX (UART0: GPIO15, pin 10)           |
//! | RXD         | the UART's TX (UART0: GPIO14, pin 8)            |
//!
//! The PN532 itself is a 3.3 V part; boards powered from 5 V still drive 3.3 V logic, but check
//! your board's schematic before wiring TXD to a Pi pin (3.3 V only).
//!
//! # UART setup
//!
//! 115200 baud 8N1 on a PL011 UART (`/dev/ttyAMA*`, `dtoverlay=uart2`..`uart5` on a Pi 4). Turn
//! the serial console off on that port (`raspi-config` > Interface > Serial). Group `dialout`
//! must include the service user: `sudo usermod -aG dialout rollcall`.
//!
//! The chip sleeps after power-on; the driver sends the HSU wake-up (`55 55` and zeros) and
//! SAMConfiguration, then bounds InListPassiveTarget's search with RFConfiguration MaxRetries
//! (PN532 user manual, section 7.3.1) so each poll returns; if a chip ignores that, the driver
//! stops the search with an ACK after its timeout.
//!
//! # Timing and recovery
//!
//! Every command waits up to 1 s for the chip's ACK and its reply, and is sent three times. A
//! command that is not even ACKed usually means the chip power-cycled (a brown-out on a shared
//! 3.3 V rail) and sleeps: before sending it again the driver sends the HSU wake-up,
//! SAMConfiguration and the MaxRetries it had set, so a power cycle costs about one second, not
//! a reader-down cycle. A command the chip does not support is answered with the error frame
//! `00 00 FF 01 FF 7F 81 00`: an error, not a retry. Frames longer than 254 bytes travel as
//! extended frames (`00 FF FF FF LENM LENL LCS ...`), up to the chip's 264 data bytes.
//!
//! # Troubleshooting
//!
//! - "no answer": mode switches not on HSU, TX/RX not crossed, wrong baud, or the console is on.
//! - Cards read intermittently: keep the antenna away from metal and from the Pi's own Wi-Fi.
//! - ISO14443A UIDs can be cloned or emulated: an identifier, not a secret.

pub mod codec;
mod device;
pub mod sim;

pub use codec::TargetA;
pub use device::{Firmware, Pn532, Pn532Codec, Pn532Error, Presence};
