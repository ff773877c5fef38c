//! A byte-level EF01 module: feed it the host's bytes, it answers the bytes a module would.
//! Fingers are template byte strings; a search matches a library slot holding the same bytes.
//! Faults are injected per reply, so tests can garble exactly the exchange they target.
//!
//! Where the datasheets (R503 user manual, R30x user manual; readers.md) say how the module
//! behaves, the simulator does the same: DownChar takes data packets of exactly the module's
//! packet size (the last one up to it) and, without acknowledging them, fills the character
//! buffer only with a whole template of the model's length (512 bytes on R30x, 1536 on R503);
//! anything else leaves the buffer empty, and Store of an empty buffer answers 0x22 (template
//! empty). UpChar answers OK and then the buffer in data packets of the packet size, the last
//! with PID 08. Store overwrites an occupied slot and refuses a slot beyond the library (0x0B);
//! it does not look for duplicates (on the R503 that check belongs to AutoEnroll, 0x31, which
//! answers 0x27). DeletChar beyond the library answers 0x10; ReadIndexTable answers 32 bytes per
//! page of 256 slots, bit 0 of byte 0 being slot 0.
//!
//! Booting: after [`Ef01Sim::power_cycle`] or SoftReset the module ignores every byte until
//! [`Ef01Sim::boot_done`], which answers the lone 0x55 a real module sends when it is ready. The
//! simulator itself keeps no clock: [`SimHandle::serve`] calls `boot_done` once the model's
//! [`SimModel::boot_time`] has passed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::codec::{DEFAULT_ADDRESS, Decoded, Packet, PacketKind, parse, split_data};
use super::instruction::{Confirm, Instruction, SystemParameters};

/// What kind of module to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimModel {
    /// Library slots (R503: 200, R307: 1000).
    pub library_size: u16,
    /// Template length in bytes (R503: 1536, R30x: 512).
    pub template_len: usize,
    /// Data packet size code 0..3.
    pub packet_size_code: u16,
    /// Whether the Aura LED instruction is supported (R503 only).
    pub aura: bool,
    /// How long the module ignores commands after power-on or SoftReset before it sends 0x55.
    /// readers.md gives about 50 ms for the R503; modules in the field were seen deaf for a few
    /// hundred ms (issue 8), so both models take the slower figure.
    pub boot_time: Duration,
}

impl SimModel {
    /// An R503: 200 slots, 1536-byte templates, Aura LED.
    pub const R503: SimModel = SimModel {
        library_size: 200,
        template_len: 1536,
        packet_size_code: 2,
        aura: true,
        boot_time: Duration::from_millis(300),
    };
    /// An R307: 1000 slots, 512-byte templates, no Aura LED.
    pub const R307: SimModel = SimModel {
        library_size: 1000,
        template_len: 512,
        packet_size_code: 2,
        aura: false,
        boot_time: Duration::from_millis(300),
    };
}

/// A fault applied to the next reply the module sends. The reply to UpChar is its
/// acknowledgement and every data packet after it, so `Truncate` cuts the data stream and
/// `BadChecksum` spoils the end-of-data packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The checksum is off by one.
    BadChecksum,
    /// Only the first n bytes are sent.
    Truncate(usize),
    /// These bytes are sent first.
    GarbageBefore(Vec<u8>),
    /// Nothing is sent (a timeout on the host's side).
    NoReply,
    /// The instruction is not executed and answers this code instead (library full, already
    /// enrolled, hardware error...).
    Code(Confirm),
}

/// The simulated module's state.
#[derive(Debug)]
pub struct Ef01Sim {
    model: SimModel,
    address: u32,
    password: u32,
    verified: bool,
    security_level: u16,
    baud_multiplier: u16,
    library: BTreeMap<u16, Vec<u8>>,
    fingers: VecDeque<Vec<u8>>,
    lift_next: bool,
    image: Option<Vec<u8>>,
    buffers: [Option<Vec<u8>>; 6],
    receiving: Option<Download>,
    faults: VecDeque<Fault>,
    stuck: bool,
    input: Vec<u8>,
    aura: Option<[u8; 4]>,
    received: Vec<Instruction>,
    booting: bool,
    random: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// A DownChar in progress: the buffer it fills and the data so far.
#[derive(Debug)]
struct Download {
    buffer: u8,
    data: Vec<u8>,
    /// A data packet was not of the packet size, or more data came than a template holds.
    bad: bool,
}

impl Ef01Sim {
    /// A module that has booted (its 0x55 already sent), with an empty library, default
    /// address and password 0.
    pub fn new(model: SimModel) -> Self {
        Self {
            model,
            address: DEFAULT_ADDRESS,
            password: 0,
            verified: false,
            security_level: 3,
            baud_multiplier: 6,
            library: BTreeMap::new(),
            fingers: VecDeque::new(),
            lift_next: false,
            image: None,
            buffers: Default::default(),
            receiving: None,
            faults: VecDeque::new(),
            stuck: false,
            input: Vec::new(),
            aura: None,
            received: Vec::new(),
            booting: false,
            random: 0x2545_F491_4F6C_DD1D,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The module this simulator answers as: its library size, template length, packet size
    /// and whether it has an Aura LED.
    pub fn model(&self) -> SimModel {
        self.model
    }

    /// Power off and on: RAM state (buffers, image, verified password) is lost, flash (the
    /// library, password, settings) kept, and the module ignores every byte until
    /// [`Self::boot_done`].
    pub fn power_cycle(&mut self) {
        self.verified = false;
        self.buffers = Default::default();
        self.image = None;
        self.receiving = None;
        self.lift_next = false;
        self.input.clear();
        self.booting = true;
    }

    /// Whether the module is booting (deaf to commands).
    pub fn is_booting(&self) -> bool {
        self.booting
    }

    /// Boot finished: the module answers again; returns the ready byte 0x55 it sends (nothing
    /// if it was not booting).
    pub fn boot_done(&mut self) -> Vec<u8> {
        if std::mem::take(&mut self.booting) {
            self.bytes_out += 1;
            vec![Confirm::MODULE_OK.0]
        } else {
            Vec::new()
        }
    }

    /// Sets a password the host must verify first.
    pub fn set_password(&mut self, password: u32) {
        self.password = password;
    }

    /// Puts a template straight into a slot (enrolled earlier, by hand).
    pub fn insert(&mut self, slot: u16, template: Vec<u8>) {
        self.library.insert(slot, template);
    }

    /// The library as it stands.
    pub fn library(&self) -> &BTreeMap<u16, Vec<u8>> {
        &self.library
    }

    /// A finger is placed: the next GenImg captures it (one capture per placement).
    pub fn place_finger(&mut self, template: Vec<u8>) {
        self.fingers.push_back(template);
    }

    /// Placements not yet captured.
    pub fn fingers_waiting(&self) -> usize {
        self.fingers.len()
    }

    /// Queues a fault for the next reply.
    pub fn inject(&mut self, fault: Fault) {
        self.faults.push_back(fault);
    }

    /// A stuck module reads everything and answers nothing.
    pub fn set_stuck(&mut self, stuck: bool) {
        self.stuck = stuck;
    }

    /// Last Aura LED setting: control, speed, colour, count.
    pub fn aura(&self) -> Option<[u8; 4]> {
        self.aura
    }

    /// Bytes that crossed the line so far: (from the host, to the host), ready bytes included.
    pub fn line_bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// Every instruction received so far.
    pub fn received(&self) -> &[Instruction] {
        &self.received
    }

    /// A deterministic fake template of the model's length for a finger identified by `seed`.
    pub fn template_for(&self, seed: u32) -> Vec<u8> {
        let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..self.model.template_len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Feeds the host's bytes; returns what the module sends back. A booting module drops them.
    pub fn receive(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.bytes_in += bytes.len() as u64;
        if self.booting {
            return Vec::new();
        }
        self.input.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match parse(&self.input) {
                Ok(Decoded::NeedMore(_)) => break,
                Ok(Decoded::Packet { packet, len }) => {
                    self.input.drain(..len);
                    if packet.address == self.address && !self.stuck {
                        self.handle(packet, &mut out);
                    }
                    if self.booting {
                        // SoftReset: what followed it in the same chunk went to a deaf module.
                        self.input.clear();
                        break;
                    }
                }
                Err(e) => {
                    self.input.drain(..e.skip().min(self.input.len()));
                }
            }
        }
        self.bytes_out += out.len() as u64;
        out
    }

    fn handle(&mut self, packet: Packet, out: &mut Vec<u8>) {
        match packet.kind {
            PacketKind::Data | PacketKind::EndData => {
                let size = self.packet_size();
                let template_len = self.model.template_len;
                let Some(download) = &mut self.receiving else {
                    return; // data nobody asked for (no DownChar): ignored
                };
                let fits = match packet.kind {
                    PacketKind::Data => packet.payload.len() == size,
                    _ => (1..=size).contains(&packet.payload.len()),
                };
                if !fits || download.data.len() + packet.payload.len() > template_len {
                    download.bad = true;
                } else {
                    download.data.extend_from_slice(&packet.payload);
                }
                if packet.kind == PacketKind::EndData {
                    let Some(download) = self.receiving.take() else {
                        return;
                    };
                    let whole = !download.bad && download.data.len() == template_len;
                    if let Some(i) = self.buffer_index(download.buffer) {
                        self.buffers[i] = whole.then_some(download.data);
                    }
                }
            }
            PacketKind::Ack => {}
            PacketKind::Command => {
                if let Some(cut) = self.receiving.take() {
                    // A download cut short by a command: the buffer holds part of a template.
                    if let Some(i) = self.buffer_index(cut.buffer) {
                        self.buffers[i] = None;
                    }
                }
                let Some(instruction) = Instruction::decode(&packet.payload) else {
                    self.reply(Confirm::UNSUPPORTED, &[], out);
                    return;
                };
                self.received.push(instruction.clone());
                if let Some(Fault::Code(code)) = self.faults.front().cloned() {
                    self.faults.pop_front();
                    self.reply(code, &[], out);
                    return;
                }
                let locked = self.password != 0 && !self.verified;
                if locked && !matches!(instruction, Instruction::VfyPwd { .. }) {
                    self.reply(Confirm::PASSWORD_REQUIRED, &[], out);
                    return;
                }
                self.execute(instruction, out);
            }
        }
    }

    fn execute(&mut self, instruction: Instruction, out: &mut Vec<u8>) {
        use Instruction::*;
        let (code, data): (Confirm, Vec<u8>) = match instruction {
            // Every placement is captured once and then lifted: the host sees one "no finger"
            // after each capture, as it would with a real hand.
            GenImg if self.lift_next => {
                self.lift_next = false;
                (Confirm::NO_FINGER, vec![])
            }
            GenImg => match self.fingers.pop_front() {
                Some(finger) => {
                    self.lift_next = true;
                    self.image = Some(finger);
                    (Confirm::OK, vec![])
                }
                None => (Confirm::NO_FINGER, vec![]),
            },
            Img2Tz { buffer } => match (self.buffer_index(buffer), self.image.take()) {
                (None, _) => (Confirm::INVALID_REGISTER, vec![]),
                (_, None) => (Confirm::NO_VALID_IMAGE, vec![]),
                (Some(_), Some(image)) => {
                    self.set_buffer(buffer, image);
                    (Confirm::OK, vec![])
                }
            },
            Match => match (&self.buffers[0], &self.buffers[1]) {
                (Some(a), Some(b)) if a == b => (Confirm::OK, 200u16.to_be_bytes().to_vec()),
                _ => (Confirm::NO_MATCH, 0u16.to_be_bytes().to_vec()),
            },
            Search {
                buffer,
                start,
                count,
            }
            | HighSpeedSearch {
                buffer,
                start,
                count,
            } => self.search(buffer, start, count),
            RegModel => {
                let filled: Vec<&Vec<u8>> = self.buffers.iter().flatten().collect();
                if filled.len() >= 2 && filled.iter().all(|b| *b == filled[0]) {
                    let template = filled[0].clone();
                    self.buffers[1] = Some(template.clone());
                    self.buffers[0] = Some(template);
                    (Confirm::OK, vec![])
                } else {
                    (Confirm::MERGE_FAILED, vec![])
                }
            }
            Store { buffer, page } => (self.store(buffer, page), vec![]),
            LoadChar { buffer, page } => match self.library.get(&page).cloned() {
                None if page >= self.model.library_size => (Confirm::BAD_PAGE, vec![]),
                None => (Confirm::BAD_TEMPLATE, vec![]),
                Some(t) if self.buffer_index(buffer).is_some() => {
                    self.set_buffer(buffer, t);
                    (Confirm::OK, vec![])
                }
                Some(_) => (Confirm::INVALID_REGISTER, vec![]),
            },
            UpChar { buffer } => {
                let data = self
                    .buffer_index(buffer)
                    .and_then(|i| self.buffers[i].clone());
                match data {
                    Some(data) => {
                        let mut bytes = self.ack(Confirm::OK, &[]);
                        for p in split_data(self.address, &data, self.packet_size()) {
                            p.encode_into(&mut bytes);
                        }
                        self.send(bytes, out);
                        return;
                    }
                    None => (Confirm::UPLOAD_FAILED, vec![]),
                }
            }
            DownChar { buffer } => match self.buffer_index(buffer) {
                Some(_) => {
                    self.receiving = Some(Download {
                        buffer,
                        data: Vec::new(),
                        bad: false,
                    });
                    (Confirm::OK, vec![])
                }
                None => (Confirm::CANNOT_RECEIVE, vec![]),
            },
            DeleteChar { page, count } => {
                let end = u32::from(page) + u32::from(count);
                if count == 0 || end > u32::from(self.model.library_size) {
                    (Confirm::DELETE_FAILED, vec![])
                } else {
                    self.library
                        .retain(|s, _| u32::from(*s) < u32::from(page) || u32::from(*s) >= end);
                    (Confirm::OK, vec![])
                }
            }
            Empty => {
                self.library.clear();
                (Confirm::OK, vec![])
            }
            SetSysPara { parameter, value } => match (parameter, value) {
                (4, 1..=12) => {
                    self.baud_multiplier = value.into();
                    (Confirm::OK, vec![])
                }
                (5, 1..=5) => {
                    self.security_level = value.into();
                    (Confirm::OK, vec![])
                }
                (6, 0..=3) => {
                    self.model.packet_size_code = value.into();
                    (Confirm::OK, vec![])
                }
                _ => (Confirm::INVALID_REGISTER, vec![]),
            },
            ReadSysPara => (Confirm::OK, self.parameters().encode()),
            SetPwd { password } => {
                self.password = password;
                (Confirm::OK, vec![])
            }
            VfyPwd { password } => {
                self.verified = password == self.password;
                let code = if self.verified {
                    Confirm::OK
                } else {
                    Confirm::WRONG_PASSWORD
                };
                (code, vec![])
            }
            TemplateNum => (
                Confirm::OK,
                (self.library.len() as u16).to_be_bytes().to_vec(),
            ),
            ReadIndexTable { page } if page <= 3 => {
                let mut table = vec![0u8; 32];
                for &slot in self.library.keys() {
                    if slot / 256 == u16::from(page) {
                        let bit = usize::from(slot % 256);
                        table[bit / 8] |= 1 << (bit % 8);
                    }
                }
                (Confirm::OK, table)
            }
            ReadIndexTable { .. } => (Confirm::BAD_PAGE, vec![]),
            AuraLedConfig {
                control,
                speed,
                colour,
                count,
            } if self.model.aura => {
                self.aura = Some([control, speed, colour, count]);
                (Confirm::OK, vec![])
            }
            AuraLedConfig { .. } => (Confirm::UNSUPPORTED, vec![]),
            SoftReset => {
                self.reply(Confirm::OK, &[], out);
                self.power_cycle();
                return;
            }
            HandShake => (Confirm::OK, vec![]),
            GetEcho => (Confirm::MODULE_OK, vec![]),
            GetRandomCode => {
                let x = &mut self.random;
                *x ^= *x << 13;
                *x ^= *x >> 7;
                *x ^= *x << 17;
                (Confirm::OK, (*x as u32).to_be_bytes().to_vec())
            }
        };
        self.reply(code, &data, out);
    }

    fn search(&self, buffer: u8, start: u16, count: u16) -> (Confirm, Vec<u8>) {
        let Some(query) = self
            .buffer_index(buffer)
            .and_then(|i| self.buffers[i].as_ref())
        else {
            return (Confirm::NO_VALID_IMAGE, vec![]);
        };
        let end = (u32::from(start) + u32::from(count)).min(u32::from(self.model.library_size));
        let found = self
            .library
            .range(start..)
            .take_while(|(s, _)| u32::from(**s) < end)
            .find(|(_, t)| *t == query);
        match found {
            Some((slot, _)) => (
                Confirm::OK,
                [slot.to_be_bytes(), 150u16.to_be_bytes()].concat(),
            ),
            None => (Confirm::NOT_FOUND, vec![0, 0, 0, 0]),
        }
    }

    fn store(&mut self, buffer: u8, page: u16) -> Confirm {
        let Some(index) = self.buffer_index(buffer) else {
            return Confirm::INVALID_REGISTER;
        };
        if page >= self.model.library_size {
            return Confirm::BAD_PAGE;
        }
        let Some(template) = self.buffers[index].clone() else {
            return Confirm::TEMPLATE_EMPTY;
        };
        self.library.insert(page, template);
        Confirm::OK
    }

    /// Data packet size in bytes, from the packet size code (SetSysPara 6 changes it).
    fn packet_size(&self) -> usize {
        32 << self.model.packet_size_code.min(3)
    }

    fn parameters(&self) -> SystemParameters {
        SystemParameters {
            status: 0,
            system_id: 0x0009,
            library_size: self.model.library_size,
            security_level: self.security_level,
            address: self.address,
            packet_size_code: self.model.packet_size_code,
            baud_multiplier: self.baud_multiplier,
        }
    }

    fn buffer_index(&self, buffer: u8) -> Option<usize> {
        let max = if self.model.aura { 6 } else { 2 };
        (1..=max).contains(&buffer).then(|| usize::from(buffer - 1))
    }

    fn set_buffer(&mut self, buffer: u8, data: Vec<u8>) {
        if let Some(i) = self.buffer_index(buffer) {
            self.buffers[i] = Some(data);
        }
    }

    fn ack(&self, code: Confirm, data: &[u8]) -> Vec<u8> {
        Packet {
            address: self.address,
            kind: PacketKind::Ack,
            payload: [&[code.0][..], data].concat(),
        }
        .encode()
    }

    fn reply(&mut self, code: Confirm, data: &[u8], out: &mut Vec<u8>) {
        let bytes = self.ack(code, data);
        self.send(bytes, out);
    }

    /// Sends one reply (an acknowledgement, with its data packets after UpChar), spoilt by the
    /// next queued fault.
    fn send(&mut self, mut bytes: Vec<u8>, out: &mut Vec<u8>) {
        match self.faults.pop_front() {
            None | Some(Fault::Code(_)) => {}
            Some(Fault::BadChecksum) => {
                if let Some(last) = bytes.last_mut() {
                    *last = last.wrapping_add(1);
                }
            }
            Some(Fault::Truncate(n)) => bytes.truncate(n),
            Some(Fault::GarbageBefore(garbage)) => bytes.splice(0..0, garbage).for_each(drop),
            Some(Fault::NoReply) => bytes.clear(),
        }
        out.extend_from_slice(&bytes);
    }
}

/// A shared handle on a running simulator, for tests and the simulated reader bridge.
/// The lock is never held across an await.
#[derive(Debug, Clone)]
pub struct SimHandle {
    sim: Arc<Mutex<Ef01Sim>>,
    power: Arc<Notify>,
    line: Arc<Mutex<LineStats>>,
}

/// Where the time went on a paced line ([`SimHandle::serve_at_baud`]), beyond the bytes' own
/// time on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineStats {
    /// The line stood idle from the moment the simulator wrote a reply (or finished taking in
    /// the host's last bytes) until it read the host's next bytes: the host's turnaround, with
    /// the pty and both sides' wake-ups.
    pub host_turnaround: Duration,
    /// The simulator acted this much later than the line time said, in all (its own wake-ups on
    /// a busy machine).
    pub simulator_late: Duration,
}

impl SimHandle {
    /// Wraps a simulator.
    pub fn new(sim: Ef01Sim) -> Self {
        Self {
            sim: Arc::new(Mutex::new(sim)),
            power: Arc::new(Notify::new()),
            line: Arc::default(),
        }
    }

    /// A module just switched on: it boots (deaf) for its model's boot time, then sends 0x55.
    pub fn powering_on(model: SimModel) -> Self {
        let mut sim = Ef01Sim::new(model);
        sim.power_cycle();
        Self::new(sim)
    }

    /// Locks the simulator to inspect or change it.
    pub fn lock(&self) -> MutexGuard<'_, Ef01Sim> {
        self.sim
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Where the time went on a paced line so far.
    pub fn line_stats(&self) -> LineStats {
        *self
            .line
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Switches the running module off and on (see [`Ef01Sim::power_cycle`]).
    pub fn power_cycle(&self) {
        self.lock().power_cycle();
        self.power.notify_one();
    }

    /// Answers the host on `io` until `shutdown` or until the host closes the line; sends the
    /// ready byte when a boot (power-on, power cycle, SoftReset) has lasted the model's boot time.
    /// Bytes move as fast as `io` carries them (a pseudo-terminal has no baud rate).
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: T,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        self.serve_inner(io, None, shutdown).await
    }

    /// Like [`Self::serve`], but bytes take the time they would on a UART at `baud` bit/s, 8N1
    /// (10 bits a byte) in each direction: what the host sends is acted on only once its last
    /// byte would have arrived, and a reply is written once its last byte would have been sent.
    /// For benchmarks over a pseudo-terminal, which has no baud rate of its own.
    pub async fn serve_at_baud<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: T,
        baud: u32,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let line = Line::new(baud, self.line.clone());
        self.serve_inner(io, Some(line), shutdown).await
    }

    async fn serve_inner<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: T,
        mut line: Option<Line>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut buf = [0u8; 512];
        let mut ready_at: Option<tokio::time::Instant> = None;
        loop {
            if ready_at.is_none() {
                let sim = self.lock();
                if sim.is_booting() {
                    ready_at = Some(tokio::time::Instant::now() + sim.model().boot_time);
                }
            }
            let out = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                // A power cycle from outside: start the boot time again.
                () = self.power.notified() => {
                    ready_at = None;
                    continue;
                }
                () = sleep_until(ready_at) => {
                    ready_at = None;
                    self.lock().boot_done()
                }
                n = io.read(&mut buf) => match n? {
                    0 => return Ok(()),
                    n => {
                        if let Some(line) = &mut line {
                            line.receive(n).await;
                        }
                        self.lock().receive(&buf[..n])
                    }
                },
            };
            if !out.is_empty() {
                if let Some(line) = &mut line {
                    line.send(out.len()).await;
                }
                io.write_all(&out).await?;
                io.flush().await?;
            }
        }
    }
}

/// The time bytes take on a UART, each direction on its own (the line is full duplex).
#[derive(Debug)]
struct Line {
    baud: u32,
    /// When the last byte read from the host finished arriving.
    rx_until: tokio::time::Instant,
    /// When the last byte written to the host finished leaving.
    tx_until: tokio::time::Instant,
    /// When the simulator last acted (took bytes in or wrote a reply), in real time.
    acted: Option<tokio::time::Instant>,
    stats: Arc<Mutex<LineStats>>,
}

impl Line {
    fn new(baud: u32, stats: Arc<Mutex<LineStats>>) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            baud: baud.max(1),
            rx_until: now,
            tx_until: now,
            acted: None,
            stats,
        }
    }

    fn record(&mut self, turnaround: Duration, late: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.host_turnaround += turnaround;
        stats.simulator_late += late;
        self.acted = Some(tokio::time::Instant::now());
    }

    /// 10 bits a byte: start, 8 data, stop.
    fn duration(&self, bytes: usize) -> Duration {
        Duration::from_nanos((bytes as u64 * 10 * 1_000_000_000) / u64::from(self.baud))
    }

    /// `bytes` just read: they started arriving when the line was free (or now) and the module
    /// sees them when the last one is in.
    async fn receive(&mut self, bytes: usize) {
        let now = tokio::time::Instant::now();
        let turnaround = match self.acted {
            Some(acted) if now > self.rx_until => now.saturating_duration_since(acted),
            _ => Duration::ZERO,
        };
        self.rx_until = self.rx_until.max(now) + self.duration(bytes);
        let late = wait_until(self.rx_until).await;
        self.record(turnaround, late);
    }

    /// `bytes` about to be written: they leave when the line is free (or now), and the host has
    /// them when the last one is out.
    async fn send(&mut self, bytes: usize) {
        self.tx_until = self.tx_until.max(tokio::time::Instant::now()) + self.duration(bytes);
        let late = wait_until(self.tx_until).await;
        self.record(Duration::ZERO, late);
    }
}

/// Waits until `at` to within microseconds: tokio's timer rounds up to the millisecond, which
/// would add up over hundreds of packets, so the last millisecond is spent yielding. Returns how
/// late it woke.
async fn wait_until(at: tokio::time::Instant) -> Duration {
    if let Some(early) = at.checked_sub(Duration::from_millis(1)) {
        tokio::time::sleep_until(early).await;
    }
    // Bounded, so a paused test clock (which only moves when every task sleeps) still gets there.
    for _ in 0..100_000 {
        let now = tokio::time::Instant::now();
        if now >= at {
            return now - at;
        }
        tokio::task::yield_now().await;
    }
    tokio::time::sleep_until(at).await;
    tokio::time::Instant::now().saturating_duration_since(at)
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
