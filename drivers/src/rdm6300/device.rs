//! The async RDM6300 reader: bytes in, one [`Tag`] per presentation out.

use std::io;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};

use super::codec::{DEFAULT_REPEAT_WINDOW, Debouncer, Decoded, FrameError, Tag, parse};

/// tokio-util codec over [`parse`]; corrupt frames are items so the stream continues.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rdm6300Codec;

impl Decoder for Rdm6300Codec {
    type Item = Result<Tag, FrameError>;
    type Error = io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, io::Error> {
        use bytes::Buf;
        match parse(src) {
            Ok(Decoded::Tag { tag, len }) => {
                src.advance(len);
                Ok(Some(Ok(tag)))
            }
            Ok(Decoded::NeedMore(_)) => Ok(None),
            Err(e) => {
                src.advance(e.skip().min(src.len()));
                Ok(Some(Err(e)))
            }
        }
    }
}

/// An RDM6300 on any byte source (it only transmits).
#[derive(Debug)]
pub struct Rdm6300<T> {
    io: FramedRead<T, Rdm6300Codec>,
    debounce: Debouncer,
    epoch: Instant,
    corrupt: u64,
}

impl<T: AsyncRead + Unpin> Rdm6300<T> {
    /// Wraps a transport with the default repeat window ([`DEFAULT_REPEAT_WINDOW`]).
    pub fn new(transport: T) -> Self {
        Self {
            io: FramedRead::new(transport, Rdm6300Codec),
            debounce: Debouncer::new(DEFAULT_REPEAT_WINDOW),
            epoch: Instant::now(),
            corrupt: 0,
        }
    }

    /// Frames of the same tag less than `window` apart are one presentation (one tap).
    pub fn with_repeat_window(mut self, window: Duration) -> Self {
        self.debounce = Debouncer::new(window);
        self
    }

    /// Gives the transport back.
    pub fn into_inner(self) -> T {
        self.io.into_inner()
    }

    /// Corrupt frames seen so far.
    pub fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }

    /// Waits for the next presentation. `Ok(None)` when the line closed.
    pub async fn next_tap(&mut self) -> io::Result<Option<Tag>> {
        loop {
            match self.io.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(Err(e))) => {
                    self.corrupt += 1;
                    tracing::debug!(error = %e, "rdm6300: corrupt frame skipped");
                }
                Some(Ok(Ok(tag))) => {
                    if self.debounce.accept(tag, self.epoch.elapsed()) {
                        return Ok(Some(tag));
                    }
                }
            }
        }
    }
}
