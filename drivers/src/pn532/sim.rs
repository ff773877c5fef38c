//! A byte-level PN532 in HSU mode with an ISO14443A field and fault injection.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::codec::{Decoded, Frame, TFI_CHIP, TFI_HOST, parse};

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
        let reply: Option<Vec<u8>> = match (code, &data[1..]) {
            (0x02, _) => Some(vec![0x03, 0x32, 0x01, 0x06, 0x07]),
            (0x14, _) => {
                self.configured = true;
                Some(vec![0x15])
            }
            (0x32, [0x05, _, _, n, ..]) => {
                self.passive_retries = Some(*n);
                Some(vec![0x33])
            }
            (0x32, _) => Some(vec![0x33]),
            (0x4A, _) if !self.configured => None, // not woken up: real chips stay silent
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
                    Some(r)
                }
                None => {
                    self.empty_polls += 1;
                    // With infinite retries the chip keeps searching and says nothing.
                    self.passive_retries
                        .filter(|&n| n != 0xFF)
                        .map(|_| vec![0x4B, 0x00])
                }
            },
            (0x52, _) => Some(vec![0x53, 0x00]),
            _ => Some(vec![code.wrapping_add(1)]),
        };
        let Some(reply) = reply else { return };
        if fault == Some(Fault::NoReply) {
            return;
        }
        let mut bytes = Frame::Info {
            tfi: TFI_CHIP,
            data: reply,
        }
        .encode();
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
