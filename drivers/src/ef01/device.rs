//! The async EF01 device: command/ack exchanges with timeouts, retries and resynchronisation,
//! and the flows a gateway needs (identify, enrol, template transfer, reconcile, Aura LED).

use std::io;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::codec::{DEFAULT_ADDRESS, Ef01Codec, FrameError, Packet, PacketKind};
use super::instruction::{Confirm, Instruction, SystemParameters};

/// An EF01 operation that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum Ef01Error {
    /// The transport failed (port unplugged, read error).
    #[error("serial I/O: {0}")]
    Io(#[from] io::Error),
    /// The transport reached end of file: the port or pipe is gone.
    #[error("port closed")]
    Closed,
    /// No valid reply, even after retries: the module is absent, stuck, or at another baud.
    #[error(
        "{command}: no valid reply after {attempts} attempt(s): check power (3.3 V), TX/RX crossed, \
         baud rate and that the serial console is off on this port"
    )]
    Timeout {
        /// The instruction that went unanswered.
        command: &'static str,
        /// How many times it was sent.
        attempts: u32,
    },
    /// The module answered with a failure code.
    #[error("{command}: module answered {code}")]
    Module {
        /// Name of the instruction the module failed (e.g. `Search`).
        command: &'static str,
        /// Its confirmation code.
        code: Confirm,
    },
    /// The module answered something that does not fit the instruction.
    #[error("{command}: unexpected reply: {reason}")]
    Protocol {
        /// Name of the instruction whose reply did not fit (e.g. `Search`).
        command: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The finger being enrolled is already in the library.
    #[error("fingerprint already enrolled{}", .slot.map(|s| format!(" in slot {s}")).unwrap_or_default())]
    AlreadyEnrolled {
        /// The slot holding it, when the module said.
        slot: Option<u16>,
    },
    /// Nobody put a finger on the sensor in time.
    #[error("no finger placed within {0:?}")]
    NoFingerInTime(Duration),
}

/// An acknowledgement: confirmation code and the bytes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Confirmation code.
    pub code: Confirm,
    /// Reply parameters after the code.
    pub data: Vec<u8>,
}

/// Outcome of one identify attempt. All of these are ordinary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identify {
    /// Nothing on the sensor.
    NoFinger,
    /// The finger matched this slot.
    Match {
        /// The matching template's slot in the module's library (the roster maps slots to
        /// students).
        slot: u16,
        /// Match score.
        score: u16,
    },
    /// A finger was read but is not in the library.
    NoMatch,
    /// A finger was there but the image was unusable (messy, too few features); ask again.
    BadImage(Confirm),
}

/// What [`Ef01::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Slots deleted because the roster does not have them.
    pub deleted: Vec<u16>,
    /// Slots loaded from the roster because the module lacked them.
    pub loaded: Vec<u16>,
}

/// What a wait for the module produced.
enum Wait {
    Packet(Packet),
    /// The lone 0x55 a module sends when it has booted.
    Ready,
    Elapsed,
}

/// An EF01 module (R305, R307, R503, AS608) on any byte transport.
#[derive(Debug)]
pub struct Ef01<T> {
    pub(super) io: Framed<T, Ef01Codec>,
    pub(super) address: u32,
    pub(super) timeout: Duration,
    retries: u32,
    /// Data packet size adopted from ReadSysPara; `None` until the module has said.
    pub(super) packet_size: Option<usize>,
    corrupt: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Ef01<T> {
    /// Wraps a transport (serial port, simulator pipe, scripted mock). Default address,
    /// 1 s reply timeout, 2 retries. The data packet size is asked of the module
    /// ([`Self::read_system_parameters`]) before the first template download.
    pub fn new(transport: T) -> Self {
        Self {
            io: Framed::new(transport, Ef01Codec),
            address: DEFAULT_ADDRESS,
            timeout: Duration::from_secs(1),
            retries: 2,
            packet_size: None,
            corrupt: 0,
        }
    }

    /// Talks to the module at `address` instead of FF FF FF FF.
    pub fn with_address(mut self, address: u32) -> Self {
        self.address = address;
        self
    }

    /// Sets the reply timeout and how many times an unanswered or garbled command is re-sent.
    pub fn with_timeout(mut self, timeout: Duration, retries: u32) -> Self {
        self.timeout = timeout;
        self.retries = retries;
        self
    }

    /// Gives the transport back.
    pub fn into_inner(self) -> T {
        self.io.into_inner()
    }

    /// Corrupt frames seen so far (bad checksums, impossible headers, garbage runs).
    pub fn corrupt_frames(&self) -> u64 {
        self.corrupt
    }

    /// Sends `instruction` and returns the acknowledgement, whatever its code. Re-sends after a
    /// timeout or a garbled reply.
    pub async fn command(&mut self, instruction: &Instruction) -> Result<Ack, Ef01Error> {
        let name = instruction.name();
        let timeout = self.timeout_for(instruction);
        let attempts = self.retries + 1;
        for attempt in 1..=attempts {
            self.send(PacketKind::Command, instruction.encode()).await?;
            match self.receive(name, timeout).await {
                Ok(packet) if packet.kind == PacketKind::Ack => {
                    let Some((&code, data)) = packet.payload.split_first() else {
                        return Err(protocol(name, "empty acknowledgement"));
                    };
                    return Ok(Ack {
                        code: Confirm(code),
                        data: data.to_vec(),
                    });
                }
                Ok(packet) => {
                    tracing::debug!(command = name, kind = ?packet.kind, "ignoring non-ack packet");
                }
                Err(Ef01Error::Timeout { .. }) => {
                    tracing::debug!(command = name, attempt, "no reply, re-sending");
                }
                Err(Ef01Error::Protocol { reason, .. }) => {
                    tracing::debug!(command = name, attempt, %reason, "garbled reply, re-sending");
                }
                Err(e) => return Err(e),
            }
            // Drop half-read bytes so the next reply parses from a clean buffer.
            self.io.read_buffer_mut().clear();
        }
        Err(Ef01Error::Timeout {
            command: name,
            attempts,
        })
    }

    /// Like [`Self::command`] but any code other than OK is an error; returns the reply data.
    pub async fn expect_ok(&mut self, instruction: &Instruction) -> Result<Vec<u8>, Ef01Error> {
        let ack = self.command(instruction).await?;
        if ack.code != Confirm::OK {
            return Err(Ef01Error::Module {
                command: instruction.name(),
                code: ack.code,
            });
        }
        Ok(ack.data)
    }

    /// HandShake (0x40): the module answers confirmation 0x00 once it is up.
    pub async fn handshake(&mut self) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::HandShake).await.map(drop)
    }

    /// GetEcho (0x53): the module answers confirmation 0x55.
    pub async fn get_echo(&mut self) -> Result<(), Ef01Error> {
        let ack = self.command(&Instruction::GetEcho).await?;
        match ack.code {
            Confirm::MODULE_OK => Ok(()),
            code => Err(Ef01Error::Module {
                command: "GetEcho",
                code,
            }),
        }
    }

    /// GetRandomCode (0x14): a 32-bit random number from the module.
    pub async fn random_code(&mut self) -> Result<u32, Ef01Error> {
        match self.expect_ok(&Instruction::GetRandomCode).await?[..] {
            [a, b, c, d, ..] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(protocol("GetRandomCode", "reply shorter than 4 bytes")),
        }
    }

    /// Waits, for at most `within`, until the module answers. A module ignores commands while it
    /// boots (a few hundred ms after power-on or SoftReset) and sends one 0x55 byte when it is
    /// ready. This sends HandShake, and sends it again soon after the ready byte arrives (if the
    /// first one was lost to the boot) or when the reply timeout passes. Any acknowledgement
    /// counts: a module with a password answers 0x21 (password must be verified) until VfyPwd,
    /// and that too shows it is up.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<(), Ef01Error> {
        // A HandShake that arrived just after the boot is answered right after the ready byte:
        // wait this long for that answer before asking again, so no stale reply is left behind.
        const AFTER_READY: Duration = Duration::from_millis(50);
        let deadline = tokio::time::Instant::now() + within;
        let mut attempts = 0;
        while tokio::time::Instant::now() < deadline {
            attempts += 1;
            self.io.read_buffer_mut().clear();
            self.send(PacketKind::Command, Instruction::HandShake.encode())
                .await?;
            let mut until = deadline.min(tokio::time::Instant::now() + self.timeout);
            loop {
                match self.receive_or_ready("HandShake", until).await? {
                    Wait::Packet(packet) if packet.kind == PacketKind::Ack => {
                        let code = packet.payload.first().copied().map(Confirm);
                        tracing::debug!(?code, attempts, "module answers");
                        return Ok(());
                    }
                    Wait::Packet(packet) => {
                        tracing::debug!(kind = ?packet.kind, "ignoring non-ack packet while waiting for the module");
                    }
                    Wait::Ready => {
                        until = deadline.min(tokio::time::Instant::now() + AFTER_READY);
                    }
                    Wait::Elapsed => break,
                }
            }
            tracing::debug!(attempts, "module not answering yet");
        }
        Err(Ef01Error::Timeout {
            command: "HandShake",
            attempts,
        })
    }

    /// The next packet or ready byte (a 0x55 outside a packet) before `until`. Corrupt frames are
    /// skipped.
    async fn receive_or_ready(
        &mut self,
        command: &'static str,
        until: tokio::time::Instant,
    ) -> Result<Wait, Ef01Error> {
        loop {
            let Ok(item) = tokio::time::timeout_at(until, self.io.next()).await else {
                return Ok(Wait::Elapsed);
            };
            match item {
                None => return Err(Ef01Error::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Err(FrameError::Garbage(bytes)))) if bytes.ends_with(&[0x55]) => {
                    tracing::debug!(command, "module sent its ready byte");
                    return Ok(Wait::Ready);
                }
                Some(Ok(Err(e))) => {
                    self.corrupt += 1;
                    tracing::debug!(command, error = %e, "corrupt frame while waiting for the module");
                }
                Some(Ok(Ok(packet))) if packet.address != self.address => {}
                Some(Ok(Ok(packet))) => return Ok(Wait::Packet(packet)),
            }
        }
    }

    /// VfyPwd; must be the first command after power-on when a password is set.
    pub async fn verify_password(&mut self, password: u32) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::VfyPwd { password })
            .await
            .map(drop)
    }

    /// ReadSysPara; also adopts the module's data packet size.
    pub async fn read_system_parameters(&mut self) -> Result<SystemParameters, Ef01Error> {
        let data = self.expect_ok(&Instruction::ReadSysPara).await?;
        let params = SystemParameters::decode(&data).ok_or_else(|| {
            protocol("ReadSysPara", format!("{} bytes instead of 16", data.len()))
        })?;
        self.packet_size = Some(params.packet_size());
        Ok(params)
    }

    /// One identify attempt: capture, extract, search `count` slots from 0.
    pub async fn identify(&mut self, library_size: u16) -> Result<Identify, Ef01Error> {
        let image = self.command(&Instruction::GenImg).await?;
        match image.code {
            Confirm::OK => {}
            Confirm::NO_FINGER => return Ok(Identify::NoFinger),
            Confirm::IMAGE_FAILED => return Ok(Identify::BadImage(image.code)),
            code => {
                return Err(Ef01Error::Module {
                    command: "GenImg",
                    code,
                });
            }
        }
        let tz = self.command(&Instruction::Img2Tz { buffer: 1 }).await?;
        match tz.code {
            Confirm::OK => {}
            Confirm::IMAGE_MESSY | Confirm::TOO_FEW_FEATURES | Confirm::NO_VALID_IMAGE => {
                return Ok(Identify::BadImage(tz.code));
            }
            code => {
                return Err(Ef01Error::Module {
                    command: "Img2Tz",
                    code,
                });
            }
        }
        match self.search(1, 0, library_size).await? {
            Some((slot, score)) => Ok(Identify::Match { slot, score }),
            None => Ok(Identify::NoMatch),
        }
    }

    /// Searches the library for character buffer `buffer`; `None` when not found.
    pub async fn search(
        &mut self,
        buffer: u8,
        start: u16,
        count: u16,
    ) -> Result<Option<(u16, u16)>, Ef01Error> {
        let ack = self
            .command(&Instruction::Search {
                buffer,
                start,
                count,
            })
            .await?;
        match ack.code {
            Confirm::OK => match ack.data[..] {
                [s0, s1, c0, c1, ..] => Ok(Some((
                    u16::from_be_bytes([s0, s1]),
                    u16::from_be_bytes([c0, c1]),
                ))),
                _ => Err(protocol("Search", "reply shorter than page id and score")),
            },
            Confirm::NOT_FOUND | Confirm::NO_MATCH => Ok(None),
            code => Err(Ef01Error::Module {
                command: "Search",
                code,
            }),
        }
    }

    /// R503 Aura LED: control (1 breathe, 2 flash, 3 on, 4 off, 5 fade on, 6 fade off),
    /// speed, colour (1 red .. 7 white), count (0 = forever).
    pub async fn aura(
        &mut self,
        control: u8,
        speed: u8,
        colour: u8,
        count: u8,
    ) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::AuraLedConfig {
            control,
            speed,
            colour,
            count,
        })
        .await
        .map(drop)
    }

    /// SoftReset, then waits (at most twice the reply timeout) for the module's ready byte, and as
    /// long again for it to answer.
    pub async fn soft_reset(&mut self) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::SoftReset).await?;
        // The module ignores commands until it sends 0x55: listen first, so the handshake is
        // not sent into a booting module when the ready byte is prompt.
        let until = tokio::time::Instant::now() + self.timeout * 2;
        while let Wait::Packet(packet) = self.receive_or_ready("SoftReset", until).await? {
            tracing::debug!(kind = ?packet.kind, "unexpected packet after SoftReset");
        }
        self.wait_ready(self.timeout * 2).await
    }

    pub(super) async fn send(
        &mut self,
        kind: PacketKind,
        payload: Vec<u8>,
    ) -> Result<(), Ef01Error> {
        let packet = Packet {
            address: self.address,
            kind,
            payload,
        };
        self.io.send(packet).await?;
        Ok(())
    }

    /// Next valid packet from our module within `timeout`. Garbage before it is skipped;
    /// a corrupt frame is reported as a protocol error so the caller can re-send.
    pub(super) async fn receive(
        &mut self,
        command: &'static str,
        timeout: Duration,
    ) -> Result<Packet, Ef01Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let item = tokio::time::timeout_at(deadline, self.io.next())
                .await
                .map_err(|_| Ef01Error::Timeout {
                    command,
                    attempts: 1,
                })?;
            match item {
                None => return Err(Ef01Error::Closed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Err(FrameError::Garbage(bytes)))) => {
                    self.corrupt += 1;
                    tracing::debug!(command, skipped = bytes.len(), "garbage on the line");
                }
                Some(Ok(Err(e))) => {
                    self.corrupt += 1;
                    return Err(protocol(command, e.to_string()));
                }
                Some(Ok(Ok(packet))) if packet.address != self.address => {
                    tracing::debug!(
                        command,
                        address = packet.address,
                        "packet for another address"
                    );
                }
                Some(Ok(Ok(packet))) => return Ok(packet),
            }
        }
    }

    fn timeout_for(&self, instruction: &Instruction) -> Duration {
        match instruction {
            // Searching 1000 prints, erasing or writing flash take longer than a plain reply.
            Instruction::Search { .. }
            | Instruction::HighSpeedSearch { .. }
            | Instruction::Empty
            | Instruction::Store { .. }
            | Instruction::DeleteChar { .. }
            | Instruction::GenImg => self.timeout * 3,
            _ => self.timeout,
        }
    }
}

pub(super) fn protocol(command: &'static str, reason: impl Into<String>) -> Ef01Error {
    Ef01Error::Protocol {
        command,
        reason: reason.into(),
    }
}
