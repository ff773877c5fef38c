//! Outputs for GPIO patterns.

use std::io;
use std::sync::{Arc, Mutex};

use super::pattern::{Lights, Step};

/// Something that shows [`Lights`].
pub trait Lamp: Send {
    /// Sets the outputs.
    fn show(&mut self, lights: Lights) -> io::Result<()>;
}

/// Plays `steps` on `lamp`.
pub async fn play<L: Lamp + ?Sized>(lamp: &mut L, steps: &[Step]) -> io::Result<()> {
    for step in steps {
        lamp.show(step.lights)?;
        if !step.duration.is_zero() {
            tokio::time::sleep(step.duration).await;
        }
    }
    Ok(())
}

/// Logs each change (for `simulate = true` and development machines).
#[derive(Debug, Default)]
pub struct LogLamp {
    last: Option<Lights>,
}

impl Lamp for LogLamp {
    fn show(&mut self, lights: Lights) -> io::Result<()> {
        if self.last != Some(lights) {
            tracing::debug!(
                green = lights.green,
                red = lights.red,
                buzzer = lights.buzzer,
                "lamp"
            );
            self.last = Some(lights);
        }
        Ok(())
    }
}

/// Records every state shown, for tests. Clones share the record.
#[derive(Debug, Default, Clone)]
pub struct RecordingLamp(pub Arc<Mutex<Vec<Lights>>>);

impl Lamp for RecordingLamp {
    fn show(&mut self, lights: Lights) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lights);
        Ok(())
    }
}

#[cfg(feature = "linux")]
pub use gpio::GpioLamp;

#[cfg(feature = "linux")]
mod gpio {
    use std::io;
    use std::path::Path;

    use gpiocdev::line::{Offset, Value};

    use super::{Lamp, Lights};

    /// Green LED, red LED and buzzer on GPIO output lines (any may be absent).
    #[derive(Debug)]
    pub struct GpioLamp {
        request: gpiocdev::Request,
        green: Option<Offset>,
        red: Option<Offset>,
        buzzer: Option<Offset>,
    }

    impl GpioLamp {
        /// Requests the given lines of `chip` as outputs, initially off.
        pub fn open(
            chip: &Path,
            green: Option<Offset>,
            red: Option<Offset>,
            buzzer: Option<Offset>,
            active_low: bool,
        ) -> Result<Self, gpiocdev::Error> {
            let lines: Vec<Offset> = [green, red, buzzer].into_iter().flatten().collect();
            let mut builder = gpiocdev::Request::builder();
            builder
                .on_chip(chip)
                .with_consumer("rollcall-indicator")
                .with_lines(&lines)
                .as_output(Value::Inactive);
            if active_low {
                builder.as_active_low();
            }
            Ok(Self {
                request: builder.request()?,
                green,
                red,
                buzzer,
            })
        }
    }

    impl Lamp for GpioLamp {
        fn show(&mut self, lights: Lights) -> io::Result<()> {
            let value = |on: bool| if on { Value::Active } else { Value::Inactive };
            for (line, on) in [
                (self.green, lights.green),
                (self.red, lights.red),
                (self.buzzer, lights.buzzer),
            ] {
                if let Some(line) = line {
                    self.request
                        .set_value(line, value(on))
                        .map_err(io::Error::other)?;
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Signal;
    use crate::indicator::gpio_pattern;

    #[tokio::test(start_paused = true)]
    async fn accepted_is_green_with_a_short_beep_then_dark() {
        let lamp = RecordingLamp::default();
        let started = tokio::time::Instant::now();
        play(&mut lamp.clone(), &gpio_pattern(Signal::Accepted))
            .await
            .unwrap();
        let shown = lamp.0.lock().unwrap().clone();
        let on = |green, red, buzzer| Lights { green, red, buzzer };
        assert_eq!(
            shown,
            [
                on(true, false, true),
                on(true, false, false),
                Lights::default()
            ]
        );
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
    }
}
