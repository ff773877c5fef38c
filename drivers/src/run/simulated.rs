//! Sessions on simulators: the real driver on one end of a pipe (or a pseudo-terminal, for the
//! serial kinds with `simulate = true`), the device's byte-level simulator on the other, and a
//! bridge turning presentations into what the device would send.

use tokio::sync::broadcast;

use super::bridge::{self, CardSims};
use super::devices;
use super::library::LibraryPort;
use super::source::{Serial, Simulated};
use super::{Ctx, Stop};
use crate::ReaderConfig;
use crate::ef01::Ef01;
use crate::ef01::sim::{SimHandle, SimModel};
use crate::indicator::AuraPort;
use crate::pn532::Pn532;
use crate::pn532::sim::{Pn532Handle, Pn532Sim};
use crate::rdm6300::Rdm6300;
use crate::simulated::{Presentation, Presenter};
use crate::wiegand::WiegandReader;

/// The model `simulated-fingerprint` and `ef01` with `simulate = true` imitate.
pub(crate) const SIM_FINGERPRINT: SimModel = SimModel {
    library_size: 1000,
    ..SimModel::R503
};

type Presentations = broadcast::Receiver<(String, Presentation)>;

/// One session on `simulated`, fed by `presenter`.
pub(crate) async fn session(
    simulated: Simulated,
    config: &ReaderConfig,
    presenter: &Presenter,
    aura: Option<&mut AuraPort>,
    library: Option<&mut LibraryPort>,
    ctx: &Ctx,
) -> Result<(), Stop> {
    // Subscribe before the device starts so no presentation is missed during initialisation.
    let presentations = presenter.subscribe();
    let label = simulated.label();
    let window = config.repeat_window_or_default();
    let timing = config.wiegand_timing();
    match simulated {
        Simulated::Fingerprint => {
            let (host, module) = tokio::io::duplex(4096);
            let sim = SimHandle::powering_on(SIM_FINGERPRINT);
            tokio::select! {
                r = devices::ef01(Ef01::new(host), config, aura, library, ctx, label) => r,
                r = devices::serve_ef01(&sim, module) => r,
                r = bridge::fingers(presentations, ctx.id(), &sim) => r,
            }
        }
        Simulated::Cards => {
            let (rdm_host, rdm_card) = tokio::io::duplex(1024);
            let (pn_host, pn_chip) = tokio::io::duplex(1024);
            let pn532_sim = Pn532Handle::new(Pn532Sim::new());
            let (edge_tx, edge_rx) = tokio::sync::mpsc::channel(512);
            let sims = CardSims {
                rdm6300: Some((rdm_card, window)),
                pn532: Some(&pn532_sim),
                wiegand: Some((edge_tx, timing)),
            };
            let rdm = Rdm6300::new(rdm_host).with_repeat_window(window);
            tokio::select! {
                r = devices::rdm6300(rdm, ctx, "simulated card (rdm6300)") => r,
                r = devices::pn532(Pn532::new(pn_host), ctx, "simulated card (pn532)") => r,
                r = devices::wiegand(WiegandReader::new(edge_rx, timing), ctx, "simulated card (wiegand)") => r,
                r = devices::serve_pn532(&pn532_sim, pn_chip) => r,
                r = bridge::cards(presentations, ctx.id(), sims) => r,
            }
        }
        Simulated::Wiegand => {
            let (edge_tx, edge_rx) = tokio::sync::mpsc::channel(512);
            let sims = CardSims::<tokio::io::DuplexStream> {
                rdm6300: None,
                pn532: None,
                wiegand: Some((edge_tx, timing)),
            };
            tokio::select! {
                r = devices::wiegand(WiegandReader::new(edge_rx, timing), ctx, label) => r,
                r = bridge::cards(presentations, ctx.id(), sims) => r,
            }
        }
        Simulated::OnPty(serial) => on_pty(serial, config, presentations, aura, library, ctx).await,
    }
}

/// A serial kind's simulator on a pseudo-terminal's master side; the driver opens the slave by
/// path, through the same tokio-serial code as a real UART.
#[cfg(feature = "linux")]
async fn on_pty(
    kind: Serial,
    config: &ReaderConfig,
    presentations: Presentations,
    aura: Option<&mut AuraPort>,
    library: Option<&mut LibraryPort>,
    ctx: &Ctx,
) -> Result<(), Stop> {
    use super::serial;
    let (master, path, _slave) = serial::pty()?;
    let port = serial::open(std::path::Path::new(&path), config.baud_or_default())?;
    let label = format!("{path} ({})", Simulated::OnPty(kind).label());
    match kind {
        Serial::Ef01 => {
            let sim = SimHandle::powering_on(SIM_FINGERPRINT);
            tokio::select! {
                r = devices::ef01(devices::ef01_device(port, config), config, aura, library, ctx, &label) => r,
                r = devices::serve_ef01(&sim, master) => r,
                r = bridge::fingers(presentations, ctx.id(), &sim) => r,
            }
        }
        Serial::Rdm6300 => {
            let window = config.repeat_window_or_default();
            let sims = CardSims {
                rdm6300: Some((master, window)),
                pn532: None,
                wiegand: None,
            };
            let rdm = Rdm6300::new(port).with_repeat_window(window);
            tokio::select! {
                r = devices::rdm6300(rdm, ctx, &label) => r,
                r = bridge::cards(presentations, ctx.id(), sims) => r,
            }
        }
        Serial::IsoTemplate => {
            let dev = crate::iso_template::IsoTemplateReader::new(port);
            tokio::select! {
                r = devices::iso_template(dev, ctx, &label) => r,
                r = bridge::templates(presentations, ctx.id(), master) => r,
            }
        }
        Serial::Pn532 => {
            let sim = Pn532Handle::new(Pn532Sim::new());
            let sims = CardSims::<tokio::io::DuplexStream> {
                rdm6300: None,
                pn532: Some(&sim),
                wiegand: None,
            };
            tokio::select! {
                r = devices::pn532(Pn532::new(port), ctx, &label) => r,
                r = devices::serve_pn532(&sim, master) => r,
                r = bridge::cards(presentations, ctx.id(), sims) => r,
            }
        }
    }
}

#[cfg(not(feature = "linux"))]
async fn on_pty(
    kind: Serial,
    config: &ReaderConfig,
    _presentations: Presentations,
    _aura: Option<&mut AuraPort>,
    _library: Option<&mut LibraryPort>,
    _ctx: &Ctx,
) -> Result<(), Stop> {
    Err(Stop::Fatal(super::DriverError::Unsupported(format!(
        "reader {}: a {} on a pseudo-terminal needs rollcall-drivers built with the \"linux\" feature",
        config.id,
        Simulated::OnPty(kind).label()
    ))))
}
