//! One session per reader kind: initialise the device, then read until something breaks.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::bridge;
use super::{Ctx, Stop};
use crate::ef01::sim::{SimHandle, SimModel};
use crate::ef01::{Confirm, Ef01, Identify, Instruction};
use crate::indicator::aura_registry;
use crate::pn532::sim::{Pn532Handle, Pn532Sim};
use crate::pn532::{Pn532, Presence};
use crate::rdm6300::Rdm6300;
use crate::simulated::Presenter;
use crate::wiegand::{EdgeSource, Timing, WiegandReader};
use crate::{ReaderConfig, ReaderEvent, ReaderKind};

/// How often an idle fingerprint sensor is asked for an image.
const FINGER_POLL: Duration = Duration::from_millis(150);
/// How long a fingerprint module may take to answer after the port opens: modules ignore
/// commands while they boot (a few hundred ms after power-on) and then send 0x55.
const EF01_BOOT_WAIT: Duration = Duration::from_secs(2);
/// How often a PN532 looks for a card.
const CARD_POLL: Duration = Duration::from_millis(100);

/// The model `simulated-fingerprint` and `ef01` with `simulate = true` imitate.
pub(crate) const SIM_FINGERPRINT: SimModel = SimModel {
    library_size: 1000,
    ..SimModel::R503
};

pub(crate) async fn session(
    config: &ReaderConfig,
    presenter: &Presenter,
    ctx: &Ctx,
) -> Result<(), Stop> {
    // Subscribe before the device starts so no presentation is missed during initialisation.
    let presentations = presenter.subscribe();
    match (config.kind, config.simulate) {
        (ReaderKind::SimulatedFingerprint, _) => {
            let (host, module) = tokio::io::duplex(4096);
            let sim = SimHandle::powering_on(SIM_FINGERPRINT);
            tokio::select! {
                r = ef01(Ef01::new(host), config, ctx, "simulated fingerprint") => r,
                r = serve_ef01(&sim, module) => r,
                r = bridge::fingers(presentations, ctx.id(), &sim) => r,
            }
        }
        (ReaderKind::SimulatedCard, _) => {
            let (rdm_host, rdm_card) = tokio::io::duplex(1024);
            let (pn_host, pn_chip) = tokio::io::duplex(1024);
            let pn532_sim = Pn532Handle::new(Pn532Sim::new());
            let (edge_tx, edge_rx) = tokio::sync::mpsc::channel(512);
            tokio::select! {
                r = rdm6300(Rdm6300::new(rdm_host), ctx, "simulated card (rdm6300)") => r,
                r = pn532(Pn532::new(pn_host), ctx, "simulated card (pn532)") => r,
                r = wiegand(WiegandReader::new(edge_rx, Timing::default()), ctx, "simulated card (wiegand)") => r,
                r = serve_pn532(&pn532_sim, pn_chip) => r,
                r = bridge::cards(presentations, ctx.id(), Some(rdm_card), Some(&pn532_sim), Some(edge_tx)) => r,
            }
        }
        (ReaderKind::Wiegand, true) => {
            let (edge_tx, edge_rx) = tokio::sync::mpsc::channel(512);
            tokio::select! {
                r = wiegand(WiegandReader::new(edge_rx, Timing::default()), ctx, "simulated wiegand") => r,
                r = bridge::cards(presentations, ctx.id(), None::<tokio::io::DuplexStream>, None, Some(edge_tx)) => r,
            }
        }
        (ReaderKind::Wiegand, false) => real_wiegand(config, ctx).await,
        (kind, simulate) => serial_session(config, kind, simulate, presentations, ctx).await,
    }
}

#[cfg(feature = "linux")]
async fn serial_session(
    config: &ReaderConfig,
    kind: ReaderKind,
    simulate: bool,
    presentations: tokio::sync::broadcast::Receiver<(String, crate::simulated::Presentation)>,
    ctx: &Ctx,
) -> Result<(), Stop> {
    use super::serial;
    let baud = config.baud_or_default();
    if !simulate {
        let Some(path) = config.port.as_deref() else {
            return Err(Stop::Fatal(super::DriverError::Config(format!(
                "reader {}: port is required",
                ctx.id()
            ))));
        };
        let label = path.display().to_string();
        let port = serial::open(path, baud)?;
        tracing::info!(reader = %ctx.id(), port = %label, baud, kind = kind.as_str(), "serial reader opened");
        return match kind {
            ReaderKind::Ef01 => ef01(ef01_device(port, config), config, ctx, &label).await,
            ReaderKind::Rdm6300 => rdm6300(Rdm6300::new(port), ctx, &label).await,
            _ => pn532(Pn532::new(port), ctx, &label).await,
        };
    }
    // The simulator on a pseudo-terminal's master side; the driver opens the slave by path,
    // through the same tokio-serial code as a real UART.
    let (master, path, _slave) = serial::pty()?;
    let port = serial::open(std::path::Path::new(&path), baud)?;
    let label = format!("{path} (simulated {})", kind.as_str());
    match kind {
        ReaderKind::Ef01 => {
            let sim = SimHandle::powering_on(SIM_FINGERPRINT);
            tokio::select! {
                r = ef01(ef01_device(port, config), config, ctx, &label) => r,
                r = serve_ef01(&sim, master) => r,
                r = bridge::fingers(presentations, ctx.id(), &sim) => r,
            }
        }
        ReaderKind::Rdm6300 => tokio::select! {
            r = rdm6300(Rdm6300::new(port), ctx, &label) => r,
            r = bridge::cards(presentations, ctx.id(), Some(master), None, None) => r,
        },
        _ => {
            let sim = Pn532Handle::new(Pn532Sim::new());
            tokio::select! {
                r = pn532(Pn532::new(port), ctx, &label) => r,
                r = serve_pn532(&sim, master) => r,
                r = bridge::cards(presentations, ctx.id(), None::<tokio::io::DuplexStream>, Some(&sim), None) => r,
            }
        }
    }
}

#[cfg(not(feature = "linux"))]
async fn serial_session(
    config: &ReaderConfig,
    kind: ReaderKind,
    _simulate: bool,
    _presentations: tokio::sync::broadcast::Receiver<(String, crate::simulated::Presentation)>,
    _ctx: &Ctx,
) -> Result<(), Stop> {
    Err(Stop::Fatal(super::DriverError::Unsupported(format!(
        "reader {}: kind {} needs rollcall-drivers built with the \"linux\" feature",
        config.id,
        kind.as_str()
    ))))
}

#[cfg(feature = "linux")]
fn ef01_device<T: AsyncRead + AsyncWrite + Unpin>(port: T, config: &ReaderConfig) -> Ef01<T> {
    let dev = Ef01::new(port);
    match config.address {
        Some(address) => dev.with_address(address),
        None => dev,
    }
}

async fn serve_ef01<T: AsyncRead + AsyncWrite + Unpin>(sim: &SimHandle, io: T) -> Result<(), Stop> {
    let never = tokio_util::sync::CancellationToken::new();
    let r = sim.serve(io, never).await;
    Err(Stop::Down(format!("fingerprint simulator stopped: {r:?}")))
}

async fn serve_pn532<T: AsyncRead + AsyncWrite + Unpin>(
    sim: &Pn532Handle,
    io: T,
) -> Result<(), Stop> {
    let never = tokio_util::sync::CancellationToken::new();
    let r = sim.serve(io, never).await;
    Err(Stop::Down(format!("pn532 simulator stopped: {r:?}")))
}

/// Fingerprint: verify the password, read the library size, then identify in a loop while
/// serving Aura LED requests from an `aura` indicator.
async fn ef01<T: AsyncRead + AsyncWrite + Unpin>(
    mut dev: Ef01<T>,
    config: &ReaderConfig,
    ctx: &Ctx,
    label: &str,
) -> Result<(), Stop> {
    let down = |e: crate::ef01::Ef01Error| {
        let hint = match &e {
            crate::ef01::Ef01Error::Module {
                code: Confirm::WRONG_PASSWORD | Confirm::PASSWORD_REQUIRED,
                ..
            } => ": set the module's password in the reader's config (password = ...)",
            _ => "",
        };
        Stop::Down(format!("{label}: {e}{hint}"))
    };
    dev.wait_ready(EF01_BOOT_WAIT).await.map_err(down)?;
    dev.verify_password(config.password.unwrap_or(0))
        .await
        .map_err(down)?;
    let params = dev.read_system_parameters().await.map_err(down)?;
    tracing::info!(reader = %ctx.id(), library = params.library_size, "fingerprint module ready");
    ctx.up().await?;
    let mut aura = aura_registry::register(ctx.id());
    let mut tick = tokio::time::interval(FINGER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut await_lift = false;
    loop {
        tokio::select! {
            Some(step) = aura.recv() => {
                match dev.aura(step.control, step.speed, step.colour, step.count).await {
                    Ok(()) => {}
                    Err(crate::ef01::Ef01Error::Module { code, .. }) => {
                        tracing::warn!(reader = %ctx.id(), %code, "module refused the Aura LED command (not an R503?)");
                    }
                    Err(e) => return Err(down(e)),
                }
            }
            _ = tick.tick() => {
                if await_lift {
                    // One finger, one event: wait until it leaves the sensor.
                    let ack = dev.command(&Instruction::GenImg).await.map_err(down)?;
                    await_lift = ack.code != Confirm::NO_FINGER;
                    continue;
                }
                let got = dev.identify(params.library_size).await;
                match got.map_err(down)? {
                    Identify::NoFinger => {}
                    Identify::BadImage(code) => tracing::debug!(reader = %ctx.id(), %code, "unusable image"),
                    Identify::Match { slot, score } => {
                        ctx.emit(ReaderEvent::Fingerprint { slot, score }).await?;
                        await_lift = true;
                    }
                    Identify::NoMatch => {
                        ctx.emit(ReaderEvent::FingerprintNoMatch).await?;
                        await_lift = true;
                    }
                }
            }
        }
    }
}

async fn rdm6300<T: AsyncRead + Unpin>(
    mut dev: Rdm6300<T>,
    ctx: &Ctx,
    label: &str,
) -> Result<(), Stop> {
    // The RDM6300 only transmits: an open port is all the health there is to check.
    ctx.up().await?;
    loop {
        match dev.next_tap().await {
            Ok(Some(tag)) => {
                ctx.emit(ReaderEvent::Card {
                    uid: tag.uid().to_vec(),
                })
                .await?
            }
            Ok(None) => {
                return Err(Stop::Down(format!(
                    "{label}: port closed (reader unplugged?)"
                )));
            }
            Err(e) => return Err(Stop::Down(format!("{label}: {e} (reader unplugged?)"))),
        }
    }
}

async fn pn532<T: AsyncRead + AsyncWrite + Unpin>(
    mut dev: Pn532<T>,
    ctx: &Ctx,
    label: &str,
) -> Result<(), Stop> {
    let down = |e: crate::pn532::Pn532Error| Stop::Down(format!("{label}: {e}"));
    dev.wake_up().await.map_err(down)?;
    let fw = dev.firmware_version().await.map_err(down)?;
    dev.set_passive_retries(0x02).await.map_err(down)?;
    tracing::info!(reader = %ctx.id(), ic = fw.ic, version = fw.version, revision = fw.revision, "pn532 ready");
    ctx.up().await?;
    let mut presence = Presence::new(2);
    loop {
        let target = dev.poll(Duration::from_millis(500)).await.map_err(down)?;
        if let Some(uid) = presence.observe(target.as_ref().map(|t| &t.uid[..])) {
            ctx.emit(ReaderEvent::Card { uid }).await?;
        }
        tokio::time::sleep(CARD_POLL).await;
    }
}

async fn wiegand<S: EdgeSource>(
    mut reader: WiegandReader<S>,
    ctx: &Ctx,
    label: &str,
) -> Result<(), Stop> {
    ctx.up().await?;
    loop {
        match reader.next_frame().await {
            Ok(Some(Ok(card))) => ctx.emit(ReaderEvent::Card { uid: card.uid() }).await?,
            Ok(Some(Err(e))) => {
                tracing::warn!(reader = %ctx.id(), error = %e, "wiegand frame dropped")
            }
            Ok(None) => return Err(Stop::Down(format!("{label}: edge source closed"))),
            Err(e) => return Err(Stop::Down(format!("{label}: {e}"))),
        }
    }
}

#[cfg(feature = "linux")]
async fn real_wiegand(config: &ReaderConfig, ctx: &Ctx) -> Result<(), Stop> {
    let chip = config
        .chip
        .clone()
        .unwrap_or_else(|| "/dev/gpiochip0".into());
    let (Some(d0), Some(d1)) = (config.d0_line, config.d1_line) else {
        return Err(Stop::Fatal(super::DriverError::Config(format!(
            "reader {}: d0_line and d1_line are required",
            ctx.id()
        ))));
    };
    let label = format!("{} lines {d0}/{d1}", chip.display());
    let edges = crate::wiegand::GpioEdges::open(&chip, d0, d1)
        .map_err(|e| Stop::Down(explain_gpio(&label, &e.to_string())))?;
    wiegand(WiegandReader::new(edges, Timing::default()), ctx, &label).await
}

#[cfg(not(feature = "linux"))]
async fn real_wiegand(config: &ReaderConfig, _ctx: &Ctx) -> Result<(), Stop> {
    Err(Stop::Fatal(super::DriverError::Unsupported(format!(
        "reader {}: kind wiegand needs rollcall-drivers built with the \"linux\" feature",
        config.id
    ))))
}

/// Turns a GPIO error into advice.
#[cfg(feature = "linux")]
pub(crate) fn explain_gpio(label: &str, error: &str) -> String {
    let lower = error.to_lowercase();
    if lower.contains("permission denied") {
        format!(
            "{label}: permission denied: add the rollcall user to the gpio group (sudo usermod -aG gpio rollcall) and restart the service"
        )
    } else if lower.contains("busy") {
        format!(
            "{label}: line busy: another program or a device-tree overlay holds it (gpioinfo shows the consumer)"
        )
    } else if lower.contains("no such file")
        || lower.contains("not found")
        || lower.contains("not a gpio")
        || lower.contains("not a character device")
    {
        format!(
            "{label}: no such GPIO chip: check `chip` (gpiodetect lists them; a Pi 5 on an early kernel uses /dev/gpiochip4)"
        )
    } else {
        format!("{label}: {error}")
    }
}
