//! Running one configured reader or indicator until shutdown.
//!
//! A reader runs as a *session* (open the port, initialise the device, read until something
//! breaks) inside a supervisor loop: a failed session reports [`ReaderHealth::Down`] with a
//! message a person can act on, waits with exponential backoff (0.5 s doubling to 30 s) and
//! starts again; the first session that initialises after a failure reports
//! [`ReaderHealth::Ok`]. Only a closed event channel or an unusable configuration ends
//! [`run_reader`] with an error.

mod bridge;
mod devices;
mod hardware;
mod indicator;
mod library;
#[cfg(feature = "linux")]
mod serial;
mod simulated;
mod source;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::indicator::AuraPort;
use crate::simulated::Presenter;
use crate::{ReaderConfig, ReaderEvent, ReaderHealth};
use source::Source;

pub use indicator::run_indicator;
pub use library::{
    EnrolError, EnrolJob, EnrolStep, Enrolled, Library, LibraryPort, LibraryReport, Template,
};

/// A reader or indicator failed in a way its task cannot recover from.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The daemon stopped listening for events.
    #[error("reader {0}: event receiver closed")]
    Closed(String),
    /// The configuration cannot work; the message names the key and the fix.
    #[error("{0}")]
    Config(String),
    /// This build lacks what the configuration asks for.
    #[error("{0}")]
    Unsupported(String),
}

/// `port: required ...` from `reader[0].port: required ...`.
pub(crate) fn key_and_message(e: &crate::ConfigError) -> String {
    let key = e.key.split_once("].").map_or(e.key.as_str(), |(_, k)| k);
    format!("{key}: {}", e.message)
}

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The device is unusable for now; retry after a pause. The text is for a person.
    Down(String),
    /// Give up.
    Fatal(DriverError),
}

/// What sessions share with the supervisor: the event channel and health state.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    id: Arc<str>,
    events: mpsc::Sender<ReaderEvent>,
    last_down: Arc<Mutex<Option<String>>>,
    ups: Arc<AtomicU64>,
}

impl Ctx {
    fn new(id: &str, events: mpsc::Sender<ReaderEvent>) -> Self {
        Self {
            id: id.into(),
            events,
            last_down: Arc::default(),
            ups: Arc::default(),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Sends an event to the daemon.
    pub(crate) async fn emit(&self, event: ReaderEvent) -> Result<(), Stop> {
        self.events
            .send(event)
            .await
            .map_err(|_| Stop::Fatal(DriverError::Closed(self.id.to_string())))
    }

    /// The device initialised: reports recovery if it was down.
    pub(crate) async fn up(&self) -> Result<(), Stop> {
        self.ups.fetch_add(1, Ordering::Relaxed);
        let was_down = self.last_down.lock().await.take().is_some();
        if was_down {
            tracing::info!(reader = %self.id, "reader recovered");
            self.emit(ReaderEvent::Health(ReaderHealth::Ok)).await?;
        }
        Ok(())
    }

    async fn down(&self, message: String) -> Result<(), Stop> {
        let mut last = self.last_down.lock().await;
        if last.as_deref() != Some(message.as_str()) {
            tracing::warn!(reader = %self.id, %message, "reader down");
            *last = Some(message.clone());
            drop(last);
            self.emit(ReaderEvent::Health(ReaderHealth::Down(message)))
                .await?;
        }
        Ok(())
    }
}

/// A source with what it needs to run.
enum Running {
    Hardware(source::Hardware),
    Simulated(source::Simulated, Presenter),
}

/// What a reader task is connected to besides its configuration and event channel: the
/// presenter that feeds a simulated reader, and the Aura LED link of an `aura` indicator.
#[derive(Debug, Default)]
pub struct ReaderWiring {
    presenter: Option<Presenter>,
    aura: Option<AuraPort>,
    library: Option<LibraryPort>,
}

impl ReaderWiring {
    /// A reader on hardware: it reads its UART or GPIO lines and needs nothing else.
    pub fn hardware() -> Self {
        Self::default()
    }

    /// A simulated reader (a simulated kind, or `simulate = true`), fed by `presenter`.
    pub fn simulated(presenter: Presenter) -> Self {
        Self {
            presenter: Some(presenter),
            aura: None,
            library: None,
        }
    }

    /// The wiring `config` needs: a simulated reader is fed by `presenter`, a hardware reader
    /// does not see it.
    pub fn for_config(config: &ReaderConfig, presenter: &Presenter) -> Self {
        match Source::of(config) {
            Ok(Source::Simulated(_)) => Self::simulated(presenter.clone()),
            _ => Self::hardware(),
        }
    }

    /// Serves an `aura` indicator's link (ef01 and simulated-fingerprint readers; other kinds
    /// drop it, and the indicator then says the reader cannot show it).
    pub fn with_aura(mut self, port: Option<AuraPort>) -> Self {
        self.aura = port;
        self
    }

    /// Keeps an EF01 module's library as the daemon wants it and runs its enrolments (other
    /// kinds drop it).
    pub fn with_library(mut self, port: Option<LibraryPort>) -> Self {
        self.library = port;
        self
    }
}

/// Drives the reader described by `config`, sending its events to `events` until `shutdown`.
///
/// Hardware readers open their UART or GPIO lines. Kinds `simulated-card` and
/// `simulated-fingerprint`, and any kind with `simulate = true`, run the real driver against
/// its byte-level simulator and are fed by the wiring's presenter: `simulated-fingerprint` is an
/// R503-like EF01 simulator (1000 slots; a `Presentation::Finger(Some(slot))` matches that
/// slot); `simulated-card` routes a card UID by its length to the simulator of a reader that
/// produces it (3 bytes Wiegand 26, 5 bytes RDM6300, 4/7/10 bytes PN532; 4 bytes could be
/// Wiegand 34 too, PN532 is used). An EF01 reader serves the wiring's Aura link.
/// Recovery after a failure is reported as `Health(Ok)`; the first start is not reported.
pub async fn run_reader(
    config: &ReaderConfig,
    wiring: ReaderWiring,
    events: mpsc::Sender<ReaderEvent>,
    shutdown: CancellationToken,
) -> Result<(), DriverError> {
    config.validate(0).map_err(|e| {
        DriverError::Config(format!("reader {}: {}", config.id, key_and_message(&e)))
    })?;
    let ReaderWiring {
        presenter,
        mut aura,
        mut library,
    } = wiring;
    let source = match (Source::of(config)?, presenter) {
        (Source::Hardware(hardware), _) => Running::Hardware(hardware),
        (Source::Simulated(simulated), Some(presenter)) => Running::Simulated(simulated, presenter),
        (Source::Simulated(_), None) => {
            return Err(DriverError::Config(format!(
                "reader {}: a simulated reader needs a presenter (ReaderWiring::simulated)",
                config.id
            )));
        }
    };
    let ctx = Ctx::new(&config.id, events);
    const FIRST: Duration = Duration::from_millis(500);
    let mut delay = FIRST;
    loop {
        let ups = ctx.ups.load(Ordering::Relaxed);
        let session = async {
            match &source {
                Running::Hardware(hardware) => {
                    hardware::session(hardware, config, aura.as_mut(), library.as_mut(), &ctx).await
                }
                Running::Simulated(simulated, presenter) => {
                    simulated::session(
                        *simulated,
                        config,
                        presenter,
                        aura.as_mut(),
                        library.as_mut(),
                        &ctx,
                    )
                    .await
                }
            }
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            outcome = session => outcome,
        };
        match outcome {
            Ok(()) => return Ok(()),
            Err(Stop::Fatal(e)) => return Err(e),
            Err(Stop::Down(message)) => {
                if ctx.ups.load(Ordering::Relaxed) != ups {
                    delay = FIRST; // it worked for a while: retry promptly
                }
                if let Err(Stop::Fatal(e)) = ctx.down(message).await {
                    return Err(e);
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}
