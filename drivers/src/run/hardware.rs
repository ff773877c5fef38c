//! Sessions on real devices: open the UART or the GPIO lines, then run the device loop.

use super::devices;
use super::library::LibraryPort;
use super::source::Hardware;
use super::{Ctx, Stop};
use crate::ReaderConfig;
use crate::indicator::AuraPort;

/// One session on `hardware`.
#[cfg(feature = "linux")]
pub(crate) async fn session(
    hardware: &Hardware,
    config: &ReaderConfig,
    aura: Option<&mut AuraPort>,
    library: Option<&mut LibraryPort>,
    ctx: &Ctx,
) -> Result<(), Stop> {
    use super::serial;
    use crate::pn532::Pn532;
    use crate::rdm6300::Rdm6300;
    use crate::wiegand::WiegandReader;

    let baud = config.baud_or_default();
    let kind = config.kind.as_str();
    let opened = |port: &std::path::Path| {
        tracing::info!(reader = %ctx.id(), port = %port.display(), baud, kind, "serial reader opened");
    };
    match hardware {
        Hardware::Ef01 { port: path } => {
            let port = serial::open(path, baud)?;
            opened(path);
            let dev = devices::ef01_device(port, config);
            devices::ef01(dev, config, aura, library, ctx, &path.display().to_string()).await
        }
        Hardware::Rdm6300 { port: path } => {
            let port = serial::open(path, baud)?;
            opened(path);
            let dev = Rdm6300::new(port).with_repeat_window(config.repeat_window_or_default());
            devices::rdm6300(dev, ctx, &path.display().to_string()).await
        }
        Hardware::Pn532 { port: path } => {
            let port = serial::open(path, baud)?;
            opened(path);
            devices::pn532(Pn532::new(port), ctx, &path.display().to_string()).await
        }
        Hardware::IsoTemplate { port: path } => {
            let port = serial::open(path, baud)?;
            opened(path);
            let dev = crate::iso_template::IsoTemplateReader::new(port);
            devices::iso_template(dev, ctx, &path.display().to_string()).await
        }
        Hardware::Wiegand { chip, d0, d1 } => {
            let label = format!("{} lines {d0}/{d1}", chip.display());
            let edges = crate::wiegand::GpioEdges::open(chip, *d0, *d1)
                .map_err(|e| Stop::Down(explain_gpio(&label, &e.to_string())))?;
            let reader = WiegandReader::new(edges, config.wiegand_timing());
            devices::wiegand(reader, ctx, &label).await
        }
    }
}

/// Without the Linux backends there is no hardware to open.
#[cfg(not(feature = "linux"))]
pub(crate) async fn session(
    _hardware: &Hardware,
    config: &ReaderConfig,
    _aura: Option<&mut AuraPort>,
    _library: Option<&mut LibraryPort>,
    _ctx: &Ctx,
) -> Result<(), Stop> {
    Err(Stop::Fatal(super::DriverError::Unsupported(format!(
        "reader {}: kind {} needs rollcall-drivers built with the \"linux\" feature",
        config.id,
        config.kind.as_str()
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
