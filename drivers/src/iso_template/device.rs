//! The async template reader: bytes in, one template per placed finger out.

use std::io;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

use super::codec::{Decoded, FrameError, parse};

/// A frame's bytes arrive back to back: a partial frame that gets no byte for one to two times
/// this was cut (finger lifted, line noise) and is dropped, so it cannot swallow the start of the
/// next placement's frame.
pub const FRAME_GAP: Duration = Duration::from_millis(250);

/// tokio-util codec over [`parse`]; corrupt frames are items so the stream continues.
#[derive(Debug, Default, Clone, Copy)]
pub struct IsoTemplateCodec;

impl Decoder for IsoTemplateCodec {
    type Item = Result<Vec<u8>, FrameError>;
    type Error = io::Error;

    fn decode(&mut self, src: &mut bytes::BytesMut) -> Result<Option<Self::Item>, io::Error> {
        use bytes::Buf;
        match parse(src) {
            Ok(Decoded::Template { template, len }) => {
                src.advance(len);
                Ok(Some(Ok(template)))
            }
            Ok(Decoded::NeedMore(_)) => Ok(None),
            Err(e) => {
                src.advance(e.skip().min(src.len()));
                Ok(Some(Err(e)))
            }
        }
    }
}

/// A template sensor on any byte source (it only transmits).
#[derive(Debug)]
pub struct IsoTemplateReader<T> {
    io: FramedRead<T, IsoTemplateCodec>,
    corrupt: u64,
}

impl<T: AsyncRead + Unpin> IsoTemplateReader<T> {
    /// Wraps a transport.
    pub fn new(transport: T) -> Self {
        Self {
            io: FramedRead::new(transport, IsoTemplateCodec),
            corrupt: 0,
        }
    }

    /// Gives the transport back.
    pub fn into_inner(self) -> T {
        self.io.into_inner()
    }

    /// Corrupt or cut frames seen so far.
    pub fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }

    /// Waits for the next template. `Ok(None)` when the line closed.
    pub async fn next_template(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            // Reading a frame is cancel-safe (bytes stay in the buffer), so a read is stopped
            // every FRAME_GAP to look: nothing buffered is idle, a buffer that grew is a frame
            // still arriving, a buffer that did not grow is a cut frame.
            let before = self.io.read_buffer().len();
            let next = match tokio::time::timeout(FRAME_GAP, self.io.next()).await {
                Ok(next) => next,
                Err(_) if self.io.read_buffer().is_empty() => continue,
                Err(_) if self.io.read_buffer().len() != before => continue,
                Err(_) => {
                    let cut = self.io.read_buffer().len();
                    self.io.read_buffer_mut().clear();
                    self.corrupt += 1;
                    tracing::debug!(bytes = cut, "template sensor: cut frame dropped");
                    continue;
                }
            };
            match next {
                None => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(Err(e))) => {
                    self.corrupt += 1;
                    tracing::debug!(error = %e, "template sensor: corrupt frame skipped");
                }
                Some(Ok(Ok(template))) => return Ok(Some(template)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cut_frame_is_dropped_after_the_gap_and_the_next_one_read() {
        let frame = [0xF5, 0x1F, 0x00, 0x03, 0xAA, 0xBB, 0xCC, 0x02, 0x34];
        let (sensor, host) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut sensor = sensor;
            // Declares 256 bytes, sends one: a finger lifted mid-frame.
            sensor.write_all(&[0xF5, 0x1F, 0x01, 0x00, 0x11]).await?;
            tokio::time::sleep(FRAME_GAP * 4).await;
            sensor.write_all(&frame).await?;
            sensor.write_all(&[0x00, 0x42]).await?;
            sensor.write_all(&frame).await?;
            std::io::Result::Ok(())
        });
        let mut reader = IsoTemplateReader::new(host);
        assert_eq!(
            reader.next_template().await.unwrap(),
            Some(vec![0xAA, 0xBB, 0xCC])
        );
        assert_eq!(reader.corrupt_frames(), 1, "the cut frame");
        assert_eq!(
            reader.next_template().await.unwrap(),
            Some(vec![0xAA, 0xBB, 0xCC])
        );
        assert_eq!(reader.corrupt_frames(), 2, "the garbage");
        assert_eq!(reader.next_template().await.unwrap(), None);
    }
}
