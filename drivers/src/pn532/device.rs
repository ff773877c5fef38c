//! The async PN532 (HSU/UART): wake-up, SAMConfiguration, polling for ISO14443A cards.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, Framed};

use super::codec::{
    Decoded, Frame, FrameError, MAX_DATA, TFI_CHIP, TFI_ERROR, TargetA, parse,
    parse_list_passive_target,
};

/// tokio-util codec over [`parse`]; corrupt frames are items so the stream continues.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pn532Codec;

impl Decoder for Pn532Codec {
    type Item = Result<Frame, FrameError>;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, io::Error> {
        match parse(src) {
            Ok(Decoded::Frame { frame, len }) => {
                src.advance(len);
                Ok(Some(Ok(frame)))
            }
            Ok(Decoded::NeedMore(_)) => Ok(None),
            Err(e) => {
                src.advance(e.skip().min(src.len()));
                Ok(Some(Err(e)))
            }
        }
    }
}

impl Encoder<Frame> for Pn532Codec {
    type Error = io::Error;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), io::Error> {
        dst.extend_from_slice(&item.encode());
        Ok(())
    }
}

/// A PN532 operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Pn532Error {
    /// The transport failed.
    #[error("serial I/O: {0}")]
    Io(#[from] io::Error),
    /// The port or pipe is gone.
    #[error("port closed")]
    Closed,
    /// No ACK or reply, even after retries.
    #[error(
        "command {command:#04x}: no answer after {attempts} attempt(s): check power, TX/RX crossed, \
         that the board's mode switches select HSU (UART), and 115200 baud"
    )]
    Timeout {
        /// The command byte that went unanswered (e.g. `0x4A` InListPassiveTarget).
        command: u8,
        /// How many times it was sent.
        attempts: u32,
    },
    /// The chip answered with the error frame or something unexpected.
    #[error("command {command:#04x}: {reason}")]
    Protocol {
        /// The command byte whose answer was wrong.
        command: u8,
        /// What was wrong.
        reason: String,
    },
}

/// Firmware version reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware {
    /// IC (0x32 for a PN532).
    pub ic: u8,
    /// Firmware version (1 for the PN532 v1.6).
    pub version: u8,
    /// Firmware revision (6 for the PN532 v1.6).
    pub revision: u8,
    /// Supported protocols bit field.
    pub support: u8,
}

/// Turns successive polls into taps: a card is tapped when it appears, and must be absent for
/// `absent_polls` consecutive polls before the same card counts again (one missed read while a
/// card is held does not make a second tap).
#[derive(Debug, Clone)]
pub struct Presence {
    current: Option<Vec<u8>>,
    absent: u32,
    absent_polls: u32,
}

impl Presence {
    /// A tracker needing `absent_polls` empty polls to forget a card.
    pub fn new(absent_polls: u32) -> Self {
        Self {
            current: None,
            absent: 0,
            absent_polls: absent_polls.max(1),
        }
    }

    /// Feeds one poll result; returns the UID if this is a new tap.
    pub fn observe(&mut self, uid: Option<&[u8]>) -> Option<Vec<u8>> {
        match uid {
            None => {
                self.absent += 1;
                if self.absent >= self.absent_polls {
                    self.current = None;
                }
                None
            }
            Some(uid) => {
                self.absent = 0;
                if self.current.as_deref() == Some(uid) {
                    return None;
                }
                self.current = Some(uid.to_vec());
                Some(uid.to_vec())
            }
        }
    }
}

/// What one wait for a frame produced.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    Frame(Frame),
    Corrupt,
    Nothing,
}

/// A PN532 on any byte transport.
#[derive(Debug)]
pub struct Pn532<T> {
    io: Framed<T, Pn532Codec>,
    timeout: Duration,
    retries: u32,
    corrupt: u64,
    /// What [`Pn532::set_passive_retries`] set, to set again after the chip power-cycled.
    passive_retries: Option<u8>,
}

/// The HSU wake-up: 55 55 and zeros (PN532 user manual, HSU wake-up condition).
const WAKE_UP: [u8; 16] = [0x55, 0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// SAMConfiguration, normal mode, timeout 1 s (0x14 x 50 ms), IRQ used.
const SAM_CONFIGURATION: [u8; 4] = [0x14, 0x01, 0x14, 0x01];

impl<T: AsyncRead + AsyncWrite + Unpin> Pn532<T> {
    /// Wraps a transport; 1 s timeouts, 2 retries.
    pub fn new(transport: T) -> Self {
        Self {
            io: Framed::new(transport, Pn532Codec),
            timeout: Duration::from_secs(1),
            retries: 2,
            corrupt: 0,
            passive_retries: None,
        }
    }

    /// Sets the ACK/reply timeout and the number of re-sends.
    pub fn with_timeout(mut self, timeout: Duration, retries: u32) -> Self {
        self.timeout = timeout;
        self.retries = retries;
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

    /// Wakes the chip from power-down (55 55 and zeros), then SAMConfiguration normal mode.
    pub async fn wake_up(&mut self) -> Result<(), Pn532Error> {
        self.send_wake_up().await?;
        self.sam_configuration().await
    }

    /// SAMConfiguration: normal mode, timeout 1 s (0x14 x 50 ms), IRQ used.
    pub async fn sam_configuration(&mut self) -> Result<(), Pn532Error> {
        self.command(&SAM_CONFIGURATION, self.timeout)
            .await
            .map(drop)
    }

    /// Asks the chip who it is (GetFirmwareVersion, 0x02): the first sign of a wired,
    /// powered chip in HSU mode.
    pub async fn firmware_version(&mut self) -> Result<Firmware, Pn532Error> {
        match self.command(&[0x02], self.timeout).await?[..] {
            [_, ic, version, revision, support, ..] => Ok(Firmware {
                ic,
                version,
                revision,
                support,
            }),
            _ => Err(Pn532Error::Protocol {
                command: 0x02,
                reason: "short firmware reply".into(),
            }),
        }
    }

    /// RFConfiguration MaxRetries: bounds how long InListPassiveTarget looks for a card
    /// (0xFF = forever, the chip's default), so polling returns "no card" instead of blocking.
    pub async fn set_passive_retries(&mut self, retries: u8) -> Result<(), Pn532Error> {
        self.command(&[0x32, 0x05, 0xFF, 0x01, retries], self.timeout)
            .await?;
        self.passive_retries = Some(retries);
        Ok(())
    }

    /// One InListPassiveTarget for a single 106 kbps type A target. `None` when no card answered
    /// within `wait`; a chip still searching is told to stop with an ACK.
    pub async fn poll(&mut self, wait: Duration) -> Result<Option<TargetA>, Pn532Error> {
        match self.command(&[0x4A, 0x01, 0x00], wait).await {
            Ok(data) => parse_list_passive_target(&data).map_err(|reason| Pn532Error::Protocol {
                command: 0x4A,
                reason: reason.into(),
            }),
            Err(Pn532Error::Timeout { attempts: 1, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends a command (code and parameters), waits for the ACK then the reply; returns the
    /// reply's data from its code on. A command that is not even ACKed went to a chip that
    /// may have power-cycled and be asleep: before sending it again the driver wakes the chip
    /// (HSU wake-up, SAMConfiguration, and the MaxRetries it had set), so a brown-out costs one
    /// timeout instead of a reader-down cycle.
    pub async fn command(
        &mut self,
        data: &[u8],
        reply_timeout: Duration,
    ) -> Result<Vec<u8>, Pn532Error> {
        let code = data.first().copied().unwrap_or(0);
        if data.len() > MAX_DATA {
            return Err(Pn532Error::Protocol {
                command: code,
                reason: format!(
                    "{} bytes do not fit the chip's frame ({MAX_DATA} at most)",
                    data.len()
                ),
            });
        }
        let attempts = self.retries + 1;
        let mut asleep = false;
        for attempt in 1..=attempts {
            if std::mem::take(&mut asleep) {
                self.rewake(code).await?;
            }
            self.io.send(Frame::command(data)).await?;
            match self.receive(code, self.timeout).await? {
                Received::Frame(Frame::Ack) => {}
                other => {
                    tracing::debug!(command = code, attempt, ?other, "pn532: no ACK, re-sending");
                    asleep = other == Received::Nothing;
                    self.io.read_buffer_mut().clear();
                    continue;
                }
            }
            let mut reply = self.receive(code, reply_timeout).await?;
            let mut nacks = 0;
            // A garbled reply: a NACK asks the chip to send it again.
            while reply == Received::Corrupt && nacks < self.retries {
                nacks += 1;
                self.io.send(Frame::Nack).await?;
                reply = self.receive(code, self.timeout).await?;
            }
            match reply {
                Received::Frame(Frame::Info {
                    tfi: TFI_CHIP,
                    data: reply,
                }) if reply.first() == Some(&code.wrapping_add(1)) => {
                    return Ok(reply);
                }
                Received::Frame(Frame::Info { tfi: TFI_ERROR, .. }) => {
                    return Err(Pn532Error::Protocol {
                        command: code,
                        reason: "chip answered the error frame: command not supported by this \
                                 chip or firmware, or its parameters are wrong"
                            .into(),
                    });
                }
                Received::Nothing | Received::Corrupt => {
                    // ACKed but unanswered: an ACK from the host aborts whatever the chip is
                    // still doing (a card search), so the next command starts clean.
                    self.io.send(Frame::Ack).await?;
                    self.io.read_buffer_mut().clear();
                    if code == 0x4A {
                        return Err(Pn532Error::Timeout {
                            command: code,
                            attempts: attempt,
                        });
                    }
                    tracing::debug!(command = code, attempt, "pn532: no reply, re-sending");
                }
                Received::Frame(other) => {
                    tracing::debug!(
                        command = code,
                        attempt,
                        ?other,
                        "pn532: unexpected frame, re-sending"
                    );
                    self.io.read_buffer_mut().clear();
                }
            }
        }
        Err(Pn532Error::Timeout {
            command: code,
            attempts,
        })
    }

    /// The HSU wake-up preamble.
    async fn send_wake_up(&mut self) -> Result<(), Pn532Error> {
        let io = self.io.get_mut();
        io.write_all(&WAKE_UP).await?;
        io.flush().await?;
        Ok(())
    }

    /// Wakes a chip that power-cycled and restores its configuration, before `code` is sent
    /// again. Each step is tried once: the retried command decides whether the chip is back.
    async fn rewake(&mut self, code: u8) -> Result<(), Pn532Error> {
        tracing::info!(
            command = code,
            "pn532: no ACK; waking the chip (power cycle?)"
        );
        self.send_wake_up().await?;
        if code != SAM_CONFIGURATION[0] {
            self.once(&SAM_CONFIGURATION).await?;
            if let Some(n) = self.passive_retries.filter(|_| code != 0x32) {
                self.once(&[0x32, 0x05, 0xFF, 0x01, n]).await?;
            }
        }
        Ok(())
    }

    /// One exchange without retries; whether the chip answered it.
    async fn once(&mut self, data: &[u8]) -> Result<bool, Pn532Error> {
        let code = data[0];
        self.io.send(Frame::command(data)).await?;
        if self.receive(code, self.timeout).await? != Received::Frame(Frame::Ack) {
            self.io.read_buffer_mut().clear();
            return Ok(false);
        }
        let answered = matches!(
            self.receive(code, self.timeout).await?,
            Received::Frame(Frame::Info { tfi: TFI_CHIP, data }) if data.first() == Some(&code.wrapping_add(1))
        );
        Ok(answered)
    }

    /// Next frame within `timeout`, skipping garbage.
    async fn receive(&mut self, command: u8, timeout: Duration) -> Result<Received, Pn532Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.io.next()).await {
                Err(_) => return Ok(Received::Nothing),
                Ok(None) => return Err(Pn532Error::Closed),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(Err(FrameError::Garbage(n))))) => {
                    self.corrupt += 1;
                    tracing::debug!(command, skipped = n, "pn532: garbage on the line");
                }
                Ok(Some(Ok(Err(e)))) => {
                    self.corrupt += 1;
                    tracing::debug!(command, error = %e, "pn532: corrupt frame");
                    return Ok(Received::Corrupt);
                }
                Ok(Some(Ok(Ok(frame)))) => return Ok(Received::Frame(frame)),
            }
        }
    }
}
