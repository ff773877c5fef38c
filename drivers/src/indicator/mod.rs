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
//!   `aura` indicator names that reader's id and speaks through its running driver.
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

pub(crate) mod aura_registry {
    //! Aura indicators reach the R503 through its reader's task: the reader registers a
    //! channel under its id while it runs.
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    use tokio::sync::mpsc;

    use super::AuraStep;

    static READERS: LazyLock<Mutex<HashMap<String, mpsc::Sender<AuraStep>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));

    fn readers() -> std::sync::MutexGuard<'static, HashMap<String, mpsc::Sender<AuraStep>>> {
        READERS.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers reader `id`; its task receives Aura steps on the returned channel.
    pub fn register(id: &str) -> mpsc::Receiver<AuraStep> {
        let (tx, rx) = mpsc::channel(16);
        readers().insert(id.to_owned(), tx);
        rx
    }

    /// The channel to reader `id`, if it is running.
    pub fn sender(id: &str) -> Option<mpsc::Sender<AuraStep>> {
        readers().get(id).filter(|tx| !tx.is_closed()).cloned()
    }
}
