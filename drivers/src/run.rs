//! Running one configured reader or indicator until shutdown.

use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::simulated::{Presentation, Presenter};
use crate::{IndicatorConfig, IndicatorKind, ReaderConfig, ReaderEvent, ReaderKind, Signal};

/// A reader or indicator failed in a way its task cannot recover from.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The daemon stopped listening for events.
    #[error("reader {0}: event receiver closed")]
    Closed(String),
}

/// Drives the reader described by `config`, sending its events to `events` until `shutdown`.
/// Simulated kinds listen to `presenter`.
pub async fn run_reader(
    config: &ReaderConfig,
    presenter: &Presenter,
    events: mpsc::Sender<ReaderEvent>,
    shutdown: CancellationToken,
) -> Result<(), DriverError> {
    let mut rx = presenter.subscribe();
    loop {
        let (target, what) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            got = rx.recv() => match got {
                Ok(v) => v,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(reader = %config.id, lost = n, "simulated presentations dropped");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        };
        if target != config.id {
            continue;
        }
        let event = match (config.kind, what) {
            (ReaderKind::SimulatedCard, Presentation::Card(uid)) => ReaderEvent::Card { uid },
            (ReaderKind::SimulatedFingerprint, Presentation::Finger(Some(slot))) => {
                ReaderEvent::Fingerprint { slot, score: 120 }
            }
            (ReaderKind::SimulatedFingerprint, Presentation::Finger(None)) => {
                ReaderEvent::FingerprintNoMatch
            }
            (kind, what) => {
                tracing::warn!(reader = %config.id, kind = kind.as_str(), ?what, "presentation does not fit this reader");
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return Err(DriverError::Closed(config.id.clone()));
        }
    }
}

/// Drives the indicator described by `config`, showing each signal from `signals` until
/// `shutdown` or until the sender is dropped.
pub async fn run_indicator(
    config: &IndicatorConfig,
    mut signals: mpsc::Receiver<Signal>,
    shutdown: CancellationToken,
) -> Result<(), DriverError> {
    loop {
        let signal = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            s = signals.recv() => match s { Some(s) => s, None => return Ok(()) },
        };
        match config.kind {
            IndicatorKind::Log => tracing::info!(?signal, "indicator"),
        }
    }
}
