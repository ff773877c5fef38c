//! A byte-level RDM6300: the frames a card in the field produces, with faults.

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::codec::Tag;

/// How the module repeats frames while a card stays in the field (about every 65 ms).
pub const REPEAT_INTERVAL: Duration = Duration::from_millis(65);

/// A fault in one presentation's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The first frame's checksum digit is wrong.
    BadChecksum,
    /// The first frame is cut after this many bytes.
    Truncated(usize),
    /// Line noise before the first frame.
    Garbage,
}

/// The bytes of one presentation: `repeats` frames for `tag` (at least one), with `fault`
/// applied to the first. The frames after a fault are intact, as when a card moves into range.
pub fn presentation(tag: Tag, repeats: usize, fault: Option<Fault>) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = (0..repeats.max(1)).map(|_| tag.encode().to_vec()).collect();
    match fault {
        None => {}
        Some(Fault::BadChecksum) => frames[0][12] ^= 0x01,
        Some(Fault::Truncated(n)) => frames[0].truncate(n),
        Some(Fault::Garbage) => frames[0]
            .splice(0..0, [0xFF, 0x00, 0x7E, 0x02, 0x30])
            .for_each(drop),
    }
    frames
}

/// Writes one presentation to `io`, frames [`REPEAT_INTERVAL`] apart, as the module would.
pub async fn present<W: AsyncWrite + Unpin>(
    io: &mut W,
    tag: Tag,
    repeats: usize,
    fault: Option<Fault>,
) -> std::io::Result<()> {
    for (i, frame) in presentation(tag, repeats, fault).into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(REPEAT_INTERVAL).await;
        }
        io.write_all(&frame).await?;
        io.flush().await?;
    }
    Ok(())
}
