//! The device loops shared by hardware and simulated sources: initialise the device, then read
//! until something breaks. Each is generic over its transport.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use super::library::{self, LibraryPort, LibraryWork};
use super::{Ctx, Stop};
use crate::ef01::sim::SimHandle;
use crate::ef01::{Confirm, Ef01, Identify, Instruction};
use crate::indicator::AuraPort;
use crate::pn532::sim::Pn532Handle;
use crate::pn532::{Pn532, Presence};
use crate::rdm6300::Rdm6300;
use crate::wiegand::{EdgeSource, WiegandReader};
use crate::{ReaderConfig, ReaderEvent};

/// How often an idle fingerprint sensor is asked for an image.
const FINGER_POLL: Duration = Duration::from_millis(150);
/// How long a fingerprint module may take to answer after the port opens: modules ignore
/// commands while they boot (a few hundred ms after power-on) and then send 0x55.
const EF01_BOOT_WAIT: Duration = Duration::from_secs(2);
/// How often a PN532 looks for a card.
const CARD_POLL: Duration = Duration::from_millis(100);

/// An EF01 device at the configured address.
pub(crate) fn ef01_device<T: AsyncRead + AsyncWrite + Unpin>(
    port: T,
    config: &ReaderConfig,
) -> Ef01<T> {
    let dev = Ef01::new(port);
    match config.address {
        Some(address) => dev.with_address(address),
        None => dev,
    }
}

pub(crate) async fn serve_ef01<T: AsyncRead + AsyncWrite + Unpin>(
    sim: &SimHandle,
    io: T,
) -> Result<(), Stop> {
    let never = tokio_util::sync::CancellationToken::new();
    let r = sim.serve(io, never).await;
    Err(Stop::Down(format!("fingerprint simulator stopped: {r:?}")))
}

pub(crate) async fn serve_pn532<T: AsyncRead + AsyncWrite + Unpin>(
    sim: &Pn532Handle,
    io: T,
) -> Result<(), Stop> {
    let never = tokio_util::sync::CancellationToken::new();
    let r = sim.serve(io, never).await;
    Err(Stop::Down(format!("pn532 simulator stopped: {r:?}")))
}

/// Fingerprint: wait for the module to boot, verify the password, read the library size, then
/// identify in a loop while serving Aura LED requests from an `aura` indicator.
pub(crate) async fn ef01<T: AsyncRead + AsyncWrite + Unpin>(
    mut dev: Ef01<T>,
    config: &ReaderConfig,
    mut aura: Option<&mut AuraPort>,
    mut library: Option<&mut LibraryPort>,
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
    if let Some(port) = aura.as_deref_mut() {
        port.discard_stale();
    }
    if let Some(port) = library.as_deref_mut() {
        library::sync(&mut dev, port, ctx, label).await?;
    }
    let mut tick = tokio::time::interval(FINGER_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut await_lift = false;
    loop {
        tokio::select! {
            step = next_aura_step(aura.as_deref_mut()) => {
                match dev.aura(step.control, step.speed, step.colour, step.count).await {
                    Ok(()) => {}
                    Err(crate::ef01::Ef01Error::Module { code, .. }) => {
                        tracing::warn!(reader = %ctx.id(), %code, "module refused the Aura LED command (not an R503?)");
                    }
                    Err(e) => return Err(down(e)),
                }
            }
            work = next_library_work(library.as_deref_mut()) => {
                if let Some(port) = library.as_deref_mut() {
                    match work {
                        LibraryWork::Sync => library::sync(&mut dev, port, ctx, label).await?,
                        LibraryWork::Enrol(job) => {
                            library::enrol(&mut dev, job, port, label).await?;
                            await_lift = true;
                        }
                    }
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

async fn next_library_work(port: Option<&mut LibraryPort>) -> LibraryWork {
    match port {
        Some(port) => port.next_work().await,
        None => std::future::pending().await,
    }
}

async fn next_aura_step(port: Option<&mut AuraPort>) -> crate::indicator::AuraStep {
    match port {
        Some(port) => port.next().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn rdm6300<T: AsyncRead + Unpin>(
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

pub(crate) async fn pn532<T: AsyncRead + AsyncWrite + Unpin>(
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

pub(crate) async fn iso_template<T: AsyncRead + Unpin>(
    mut dev: crate::iso_template::IsoTemplateReader<T>,
    ctx: &Ctx,
    label: &str,
) -> Result<(), Stop> {
    // Transmit only, like the RDM6300: an open port is all the health there is to check.
    ctx.up().await?;
    loop {
        match dev.next_template().await {
            Ok(Some(template)) => {
                ctx.emit(ReaderEvent::FingerprintTemplate { template })
                    .await?
            }
            Ok(None) => {
                return Err(Stop::Down(format!(
                    "{label}: port closed (sensor unplugged?)"
                )));
            }
            Err(e) => return Err(Stop::Down(format!("{label}: {e} (sensor unplugged?)"))),
        }
    }
}

pub(crate) async fn wiegand<S: EdgeSource>(
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
