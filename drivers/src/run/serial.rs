//! Opening UARTs with errors a person can act on, and pseudo-terminals for simulators.

use std::path::Path;

use super::Stop;

#[cfg(feature = "linux")]
pub(crate) type Port = tokio_serial::SerialStream;

/// Opens `path` at `baud`, 8N1, exclusive.
#[cfg(feature = "linux")]
pub(crate) fn open(path: &Path, baud: u32) -> Result<Port, Stop> {
    use tokio_serial::SerialPortBuilderExt;
    tokio_serial::new(path.to_string_lossy(), baud)
        .open_native_async()
        .map_err(|e| Stop::Down(explain(path, &e)))
}

#[cfg(feature = "linux")]
fn explain(path: &Path, e: &tokio_serial::Error) -> String {
    use std::io::ErrorKind as Io;
    use tokio_serial::ErrorKind;
    let p = path.display();
    let text = e.description.to_lowercase();
    match e.kind {
        ErrorKind::Io(Io::PermissionDenied) => format!(
            "{p}: permission denied: add the rollcall user to the dialout group \
             (sudo usermod -aG dialout rollcall) and restart the service"
        ),
        ErrorKind::Io(Io::NotFound) | ErrorKind::NoDevice if !text.contains("busy") => format!(
            "{p}: no such device: check the reader's cable or USB adapter, and that the UART is \
             enabled (enable_uart=1 / dtoverlay=uartN in /boot/firmware/config.txt)"
        ),
        _ if text.contains("busy") => format!(
            "{p}: busy: another program holds the port (a serial console or getty? \
             turn it off with raspi-config; see `sudo fuser {p}`)"
        ),
        _ => format!("{p}: cannot open: {}", e.description),
    }
}

/// A pseudo-terminal pair: the simulator's end, and the path the driver opens.
/// The returned slave handle must be kept open while the driver may reconnect.
#[cfg(feature = "linux")]
pub(crate) fn pty() -> Result<(Port, String, Port), Stop> {
    use tokio_serial::SerialPort;
    let (master, slave) = tokio_serial::SerialStream::pair().map_err(|e| {
        Stop::Down(format!(
            "cannot create a pseudo-terminal for the simulator: {e}"
        ))
    })?;
    let path = slave
        .name()
        .ok_or_else(|| Stop::Down("pseudo-terminal has no path".into()))?;
    Ok((master, path, slave))
}

#[cfg(all(test, feature = "linux"))]
mod tests {
    use std::io::ErrorKind as Io;
    use std::path::Path;

    use tokio_serial::{Error, ErrorKind};

    use super::explain;

    #[test]
    fn errors_say_what_to_do() {
        let p = Path::new("/dev/ttyAMA0");
        let denied = explain(
            p,
            &Error::new(ErrorKind::Io(Io::PermissionDenied), "Permission denied"),
        );
        assert_eq!(
            denied,
            "/dev/ttyAMA0: permission denied: add the rollcall user to the dialout group \
             (sudo usermod -aG dialout rollcall) and restart the service"
        );
        let missing = explain(
            p,
            &Error::new(ErrorKind::NoDevice, "No such file or directory"),
        );
        assert!(
            missing.contains("no such device") && missing.contains("dtoverlay"),
            "{missing}"
        );
        let busy = explain(
            p,
            &Error::new(ErrorKind::Io(Io::Other), "Device or resource busy"),
        );
        assert!(busy.contains("busy") && busy.contains("fuser"), "{busy}");
    }
}
