//! A byte-level template sensor: the frame a placed finger produces, with faults.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::codec::encode;

/// A fault in one placement's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The frame's checksum is wrong.
    BadChecksum,
    /// The frame is cut after this many bytes.
    Truncated(usize),
    /// Line noise before the frame.
    Garbage,
}

/// The bytes a sensor sends when a finger whose template is `template` is placed, with
/// `fault` applied; `None` if the template cannot be framed (empty or over 8 KiB).
pub fn placement(template: &[u8], fault: Option<Fault>) -> Option<Vec<u8>> {
    let mut frame = encode(template)?;
    match fault {
        None => {}
        Some(Fault::BadChecksum) => {
            if let Some(last) = frame.last_mut() {
                *last ^= 0x01;
            }
        }
        Some(Fault::Truncated(n)) => frame.truncate(n),
        Some(Fault::Garbage) => frame.splice(0..0, [0xFF, 0x00, 0xF5, 0x7E]).for_each(drop),
    }
    Some(frame)
}

/// Writes one placement to the sensor's line.
pub async fn place<W: AsyncWrite + Unpin>(
    line: &mut W,
    template: &[u8],
    fault: Option<Fault>,
) -> std::io::Result<()> {
    let bytes = placement(template, fault).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a template must have 1 to 8192 bytes",
        )
    })?;
    line.write_all(&bytes).await?;
    line.flush().await
}
