//! Running an indicator: one pattern per signal; a new signal cuts the current pattern short
//! (the student now at the reader is the one looking).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::DriverError;
use crate::indicator::aura::Sent;
use crate::indicator::{AuraLink, Lamp, Lights, LogLamp, aura_pattern, gpio_pattern, play};
use crate::{IndicatorConfig, IndicatorKind, Signal};

/// Drives the indicator described by `config`, showing each signal from `signals` until
/// `shutdown` or until the sender is dropped. An `aura` indicator speaks through `aura`, the
/// link to its reader (see [`crate::indicator::AuraWiring`]); other kinds ignore it. An
/// indicator whose hardware is missing logs an actionable error and keeps retrying; it never
/// stops the daemon.
pub async fn run_indicator(
    config: &IndicatorConfig,
    aura: Option<AuraLink>,
    mut signals: mpsc::Receiver<Signal>,
    shutdown: CancellationToken,
) -> Result<(), DriverError> {
    config
        .validate(0)
        .map_err(|e| DriverError::Config(format!("indicator: {}", super::key_and_message(&e))))?;
    let mut lamp = LampSlot::new(config);
    let mut pending: Option<Signal> = None;
    loop {
        let signal = match pending.take() {
            Some(s) => s,
            None => tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                s = signals.recv() => match s { Some(s) => s, None => return Ok(()) },
            },
        };
        let interrupted = tokio::select! {
            _ = shutdown.cancelled() => None,
            () = show(config, aura.as_ref(), &mut lamp, signal) => Some(None),
            s = signals.recv() => Some(s),
        };
        match interrupted {
            None => {
                lamp.off();
                return Ok(());
            }
            Some(None) => {}
            Some(Some(next)) => {
                lamp.off();
                pending = Some(next);
            }
        }
    }
}

async fn show(
    config: &IndicatorConfig,
    aura: Option<&AuraLink>,
    lamp: &mut LampSlot,
    signal: Signal,
) {
    match config.kind {
        IndicatorKind::Log => tracing::info!(?signal, "indicator"),
        IndicatorKind::Gpio => {
            let Some(out) = lamp.get() else {
                tracing::info!(?signal, "indicator (lamp unavailable)");
                return;
            };
            if let Err(e) = play(out.as_mut(), &gpio_pattern(signal)).await {
                tracing::warn!(error = %e, "indicator: cannot set GPIO lines");
                lamp.reset();
            }
        }
        IndicatorKind::Aura => {
            let reader = config.reader.as_deref().unwrap_or_default();
            let Some(link) = aura else {
                tracing::warn!(
                    reader,
                    ?signal,
                    "aura: not connected to reader {reader} (check the indicator's `reader` id)"
                );
                return;
            };
            for step in aura_pattern(signal) {
                match link.send(step) {
                    Sent::Queued => {}
                    Sent::Busy => tracing::debug!(reader, "aura: reader busy, step skipped"),
                    Sent::Gone => {
                        tracing::warn!(
                            reader,
                            ?signal,
                            "aura: reader {reader} is not running or has no Aura LED (it must be an ef01 / simulated-fingerprint reader)"
                        );
                        return;
                    }
                }
                tokio::time::sleep(step.hold).await;
            }
        }
    }
}

/// The GPIO lamp, opened lazily and re-opened at most every 10 s after a failure.
struct LampSlot {
    config: IndicatorConfig,
    lamp: Option<Box<dyn Lamp>>,
    last_try: Option<tokio::time::Instant>,
}

impl LampSlot {
    fn new(config: &IndicatorConfig) -> Self {
        Self {
            config: config.clone(),
            lamp: None,
            last_try: None,
        }
    }

    fn get(&mut self) -> Option<&mut Box<dyn Lamp>> {
        if self.lamp.is_none()
            && self
                .last_try
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_try = Some(tokio::time::Instant::now());
            self.lamp = self.open();
        }
        self.lamp.as_mut()
    }

    fn reset(&mut self) {
        self.lamp = None;
    }

    fn off(&mut self) {
        if let Some(lamp) = self.lamp.as_mut() {
            let _ = lamp.show(Lights::default());
        }
    }

    fn open(&self) -> Option<Box<dyn Lamp>> {
        if self.config.simulate || self.config.kind != IndicatorKind::Gpio {
            return Some(Box::new(LogLamp::default()));
        }
        open_gpio(&self.config)
    }
}

#[cfg(feature = "linux")]
fn open_gpio(c: &IndicatorConfig) -> Option<Box<dyn Lamp>> {
    let chip = c.chip.clone().unwrap_or_else(|| "/dev/gpiochip0".into());
    match crate::indicator::GpioLamp::open(
        &chip,
        c.green_line,
        c.red_line,
        c.buzzer_line,
        c.active_low,
    ) {
        Ok(lamp) => Some(Box::new(lamp)),
        Err(e) => {
            let label = format!("indicator on {}", chip.display());
            tracing::error!(message = %super::hardware::explain_gpio(&label, &e.to_string()), "indicator unavailable; retrying");
            None
        }
    }
}

#[cfg(not(feature = "linux"))]
fn open_gpio(_: &IndicatorConfig) -> Option<Box<dyn Lamp>> {
    tracing::error!("gpio indicators need rollcall-drivers built with the \"linux\" feature");
    None
}
