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

/// How a module repeats the frame of a card held in its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repeat {
    /// Time between frames (modules differ: 65 ms to 500 ms).
    pub period: Duration,
    /// Frames sent while the card is held (at least one).
    pub frames: usize,
    /// Indexes of frames lost on the way (a weak read, line noise): never sent.
    pub lost: Vec<usize>,
}

impl Repeat {
    /// A card held for `hold`: a frame at the start and one every `period` until `hold` ends.
    pub fn held(period: Duration, hold: Duration) -> Self {
        let frames = (hold.as_nanos() / period.as_nanos().max(1)) as usize + 1;
        Self {
            period,
            frames,
            lost: Vec::new(),
        }
    }

    /// The same, with frame `index` lost.
    pub fn losing(mut self, index: usize) -> Self {
        self.lost.push(index);
        self
    }
}

/// Writes a held card's frames to `io` as `repeat` says, lost frames left out.
pub async fn present_repeating<W: AsyncWrite + Unpin>(
    io: &mut W,
    tag: Tag,
    repeat: &Repeat,
) -> std::io::Result<()> {
    let start = tokio::time::Instant::now();
    for i in 0..repeat.frames.max(1) {
        tokio::time::sleep_until(start + repeat.period * i as u32).await;
        if !repeat.lost.contains(&i) {
            io.write_all(&tag.encode()).await?;
            io.flush().await?;
        }
    }
    Ok(())
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
