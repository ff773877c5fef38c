//! A byte-level PN532 in HSU mode with an ISO14443A field and fault injection.
//!
//! Like the chip it answers every frame it reads with an ACK, then with the reply; a command it
//! does not implement gets the error frame `00 00 FF 01 FF 7F 81 00`. Frames longer than 254
//! data bytes travel as extended frames both ways (Diagnose's line test echoes any length up to
//! the chip's buffer). After [`Pn532Sim::power_cycle`] it sleeps and ignores every frame until
//! the host sends the HSU wake-up (`55 55 00 ...`), and searches for cards only once
//! SAMConfiguration has been sent again.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::codec::{Decoded, Frame, TFI_CHIP, TFI_ERROR, TFI_HOST, parse};

/// A fault applied to the chip's next answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No ACK and no reply.
    Silent,
    /// The ACK comes, the reply does not.
    NoReply,
    /// The reply's data checksum is wrong.
    BadChecksum,
    /// The reply is cut after this many bytes.
    Truncate(usize),
    /// Noise before the ACK.
    Garbage,
}

/// A PN532 in HSU (UART) mode at byte level: answers commands with the frames the
/// real chip sends, holds at most one card in its field, and injects faults on request.
#[derive(Debug, Default)]
pub struct Pn532Sim {
    input: Vec<u8>,
    card: Option<(Vec<u8>, u32)>,
    empty_polls: u32,
    passive_retries: Option<u8>,
    configured: bool,
    faults: std::collections::VecDeque<Fault>,
    commands: Vec<u8>,
    last_reply: Vec<u8>,
    asleep: bool,
}

impl Pn532Sim {
    /// A chip fresh from power-on, no card in the field.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds a card in the field for `polls` InListPassiveTarget commands.
    pub fn place_card(&mut self, uid: Vec<u8>, polls: u32) {
        self.card = Some((uid, polls.max(1)));
        self.empty_polls = 0;
    }

    /// Whether a card is in the field.
    pub fn card_present(&self) -> bool {
        self.card.is_some()
    }

    /// Polls answered "no card" since the last card left.
    pub fn empty_polls(&self) -> u32 {
        self.empty_polls
    }

    /// Power off and on: the chip sleeps until the HSU wake-up, forgets SAMConfiguration and
    /// RFConfiguration, and drops what it was reading. A card in the field stays there.
    pub fn power_cycle(&mut self) {
        self.asleep = true;
        self.configured = false;
        self.passive_retries = None;
        self.input.clear();
        self.last_reply.clear();
    }

    /// Whether the chip sleeps (waiting for the wake-up preamble).
    pub fn is_asleep(&self) -> bool {
        self.asleep
    }

    /// Queues a fault for the next command.
    pub fn inject(&mut self, fault: Fault) {
        self.faults.push_back(fault);
    }

    /// Command codes received so far.
    pub fn commands(&self) -> &[u8] {
        &self.commands
    }

    /// Feeds the host's bytes; returns the chip's answer.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.input.extend_from_slice(bytes);
        let mut out = Vec::new();
        if self.asleep {
            // Only the wake-up's 0x55 rouses it; frames before it are lost.
            match self.input.iter().position(|&b| b == 0x55) {
                Some(i) => {
                    self.asleep = false;
                    self.input.drain(..i);
                }
                None => {
                    self.input.clear();
                    return out;
                }
            }
        }
        loop {
            match parse(&self.input) {
                Ok(Decoded::NeedMore(_)) => break,
                Ok(Decoded::Frame { frame, len }) => {
                    self.input.drain(..len);
                    match frame {
                        Frame::Info {
                            tfi: TFI_HOST,
                            data,
                        } => self.handle(&data, &mut out),
                        // The host could not read the last reply: send it again, intact.
                        Frame::Nack => out.extend_from_slice(&self.last_reply),
                        _ => {}
                    }
                }
                // Wake-up 55s and noise land here.
                Err(e) => {
                    self.input.drain(..e.skip().min(self.input.len()));
                }
            }
        }
        out
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Some(&code) = data.first() else { return };
        self.commands.push(code);
        let fault = self.faults.pop_front();
        if fault == Some(Fault::Silent) {
            return;
        }
        if fault == Some(Fault::Garbage) {
            out.extend_from_slice(&[0x13, 0x37, 0xFF]);
        }
        out.extend_from_slice(&Frame::Ack.encode());
        let reply: Option<Frame> = match (code, &data[1..]) {
            // Diagnose, communication line test: the parameters come back as they went.
            (0x00, [0x00, ..]) => Some(chip_frame([&[0x01][..], &data[1..]].concat())),
            (0x02, _) => Some(chip_frame(vec![0x03, 0x32, 0x01, 0x06, 0x07])),
            (0x14, _) => {
                self.configured = true;
                Some(chip_frame(vec![0x15]))
            }
            (0x32, [0x05, _, _, n, ..]) => {
                self.passive_retries = Some(*n);
                Some(chip_frame(vec![0x33]))
            }
            (0x32, _) => Some(chip_frame(vec![0x33])),
            (0x4A, _) if !self.configured => None, // not configured: real chips stay silent
            (0x4A, _) => match self.card.take() {
                Some((uid, polls)) => {
                    let (sens, sel) = if uid.len() == 4 {
                        ([0x00, 0x04], 0x08)
                    } else {
                        ([0x00, 0x44], 0x00)
                    };
                    let mut r = vec![0x4B, 0x01, 0x01, sens[0], sens[1], sel, uid.len() as u8];
                    r.extend_from_slice(&uid);
                    if polls > 1 {
                        self.card = Some((uid, polls - 1));
                    }
                    Some(chip_frame(r))
                }
                None => {
                    self.empty_polls += 1;
                    // With infinite retries the chip keeps searching and says nothing.
                    self.passive_retries
                        .filter(|&n| n != 0xFF)
                        .map(|_| chip_frame(vec![0x4B, 0x00]))
                }
            },
            (0x52, _) => Some(chip_frame(vec![0x53, 0x00])),
            // Anything else (an unknown code, or one this simulator does not model).
            _ => Some(Frame::Info {
                tfi: TFI_ERROR,
                data: vec![],
            }),
        };
        let Some(reply) = reply else { return };
        if fault == Some(Fault::NoReply) {
            return;
        }
        let mut bytes = reply.encode();
        self.last_reply = bytes.clone();
        match fault {
            Some(Fault::BadChecksum) => {
                let i = bytes.len() - 2;
                bytes[i] ^= 0x01;
            }
            Some(Fault::Truncate(n)) => bytes.truncate(n),
            _ => {}
        }
        out.extend_from_slice(&bytes);
    }
}

fn chip_frame(data: Vec<u8>) -> Frame {
    Frame::Info {
        tfi: TFI_CHIP,
        data,
    }
}

/// Shared handle on a running simulated chip.
#[derive(Debug, Clone, Default)]
pub struct Pn532Handle(Arc<Mutex<Pn532Sim>>);

impl Pn532Handle {
    /// Wraps a simulator.
    pub fn new(sim: Pn532Sim) -> Self {
        Self(Arc::new(Mutex::new(sim)))
    }

    /// Locks the simulator (never held across an await).
    pub fn lock(&self) -> MutexGuard<'_, Pn532Sim> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers the host on `io` until `shutdown` or end of input.
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: T,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        crate::sim_io::pump(io, shutdown, |bytes| self.lock().receive(bytes)).await
    }
}
