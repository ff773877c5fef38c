//! Indicators: GPIO LEDs and a buzzer, the R503's Aura LED, or the log.
//!
//! [`pattern`] defines what each signal looks like; [`Lamp`] is the output behind a small trait
//! (GPIO lines in production, a recorder in tests); [`play`] runs a pattern on a lamp.
//!
//! # Wiring (Raspberry Pi 4/5)
//!
//! - LEDs: GPIO -> 330 Ohm -> LED anode, cathode -> GND. A Pi pin sources at most ~16 mA at
//!   3.3 V; for bright panel LEDs or a 12 V stack light use a transistor or a relay board
//!   (many relay boards are active-low: set `active_low = true`).
//! - Buzzer: an *active* 3.3-5 V buzzer through an NPN transistor (2N2222, 1 kOhm base
//!   resistor) from 5 V; a passive buzzer would need a tone, which this driver does not make.
//! - R503 Aura LED: no wiring of its own; it is driven over the fingerprint reader's UART, so an
//!   `aura` indicator names that reader's id and speaks through its running driver: the daemon
//!   connects the two with an [`aura_link`] ([`AuraWiring`] does it for a whole configuration).
//!
//! # Permissions and troubleshooting
//!
//! `/dev/gpiochip*` belongs to group `gpio`: `sudo usermod -aG gpio rollcall`. "busy" means
//! another program or an overlay holds the line (`gpioinfo` shows the consumer). On a Pi 5 the
//! header is `/dev/gpiochip0` on current kernels (`gpiochip4` on early ones).

mod lamp;
pub mod pattern;

#[cfg(feature = "linux")]
pub use lamp::GpioLamp;
pub use lamp::{Lamp, LogLamp, RecordingLamp, play};
pub use pattern::{AuraStep, Lights, Step, aura_pattern, gpio_pattern};

pub(crate) mod aura;

pub use aura::{AuraLink, AuraPort, AuraWiring, aura_link};
