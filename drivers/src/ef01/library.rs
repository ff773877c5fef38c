//! Library flows of the EF01 device: capture and merge, template transfer (UpChar / DownChar),
//! slots (Store, LoadChar, DeletChar, Empty), occupancy (TemplateNum, ReadIndexTable, capacity),
//! enrolment and reconciliation with a roster.
//!
//! Template transfer on the wire (datasheet; `N` = the packet size from ReadSysPara, 32, 64, 128
//! or 256 bytes):
//!
//! ```text
//! UpChar:   host  01 [08 buffer]            module  07 [00]  02 [N bytes] ... 08 [<= N bytes]
//! DownChar: host  01 [09 buffer]            module  07 [00]
//!           host  02 [N bytes] ... 08 [<= N bytes]            (no acknowledgement of data)
//! ```
//!
//! Data packets are never acknowledged, so a download is sent in one burst after the DownChar
//! acknowledgement and the line carries only the two short acknowledgements (DownChar, Store)
//! per template besides the data itself.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{PacketKind, split_data};
use super::device::{Ef01, Ef01Error, Reconciled, protocol};
use super::instruction::{Confirm, Instruction};

/// The most template data [`Ef01::upload_char`] accepts before an end-of-data packet, and the
/// longest template [`Ef01::download_char`] sends. Real templates are 512 bytes (R30x, AS608)
/// or 1536 bytes (R503); the bound keeps a broken or hostile module from making the host
/// allocate without limit.
pub const MAX_TEMPLATE_LEN: usize = 4096;

/// What one capture ([`Ef01::capture`]) produced. All of these are ordinary: tell the student.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// The image was taken and its features are in the character buffer.
    Captured,
    /// Nothing on the sensor: ask the student to place the finger.
    NoFinger,
    /// A finger was there but the image was unusable (capture failed 0x03, too messy 0x06, too
    /// few features 0x07, no valid image 0x15): ask the student to lift and place it again.
    BadImage(Confirm),
}

/// What merging the character buffers into a template ([`Ef01::register_model`]) produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// The captures agree: the template is in the character buffers, ready to store or upload.
    Merged,
    /// The captures are not of the same finger (0x0A, merge failed): capture again.
    Mismatch,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Ef01<T> {
    /// One GenImg: whether a finger is on the sensor now (it also takes an image, which a later
    /// Img2Tz would use). Enrolment uses it to wait for the student to lift the finger.
    pub async fn finger_present(&mut self) -> Result<bool, Ef01Error> {
        let ack = self.command(&Instruction::GenImg).await?;
        match ack.code {
            Confirm::OK | Confirm::IMAGE_FAILED => Ok(true),
            Confirm::NO_FINGER => Ok(false),
            code => Err(Ef01Error::Module {
                command: "GenImg",
                code,
            }),
        }
    }

    /// GenImg, then Img2Tz into character buffer `buffer` (1 or 2; the R503 has 1 to 6).
    pub async fn capture(&mut self, buffer: u8) -> Result<Capture, Ef01Error> {
        let image = self.command(&Instruction::GenImg).await?;
        match image.code {
            Confirm::OK => {}
            Confirm::NO_FINGER => return Ok(Capture::NoFinger),
            Confirm::IMAGE_FAILED => return Ok(Capture::BadImage(image.code)),
            code => {
                return Err(Ef01Error::Module {
                    command: "GenImg",
                    code,
                });
            }
        }
        let tz = self.command(&Instruction::Img2Tz { buffer }).await?;
        match tz.code {
            Confirm::OK => Ok(Capture::Captured),
            Confirm::IMAGE_MESSY | Confirm::TOO_FEW_FEATURES | Confirm::NO_VALID_IMAGE => {
                Ok(Capture::BadImage(tz.code))
            }
            code => Err(Ef01Error::Module {
                command: "Img2Tz",
                code,
            }),
        }
    }

    /// RegModel: merges the captures in the character buffers into one template.
    pub async fn register_model(&mut self) -> Result<Merge, Ef01Error> {
        let ack = self.command(&Instruction::RegModel).await?;
        match ack.code {
            Confirm::OK => Ok(Merge::Merged),
            Confirm::MERGE_FAILED => Ok(Merge::Mismatch),
            code => Err(Ef01Error::Module {
                command: "RegModel",
                code,
            }),
        }
    }

    /// Waits (polling GenImg every 100 ms) until a finger is captured into `buffer`, retrying
    /// unusable images, within `within`.
    async fn capture_within(&mut self, buffer: u8, within: Duration) -> Result<(), Ef01Error> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.capture(buffer).await? {
                Capture::Captured => return Ok(()),
                Capture::NoFinger | Capture::BadImage(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Ef01Error::NoFingerInTime(within));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (polling GenImg every 100 ms) until the finger is lifted, within `within`.
    async fn lift_within(&mut self, within: Duration) -> Result<(), Ef01Error> {
        let deadline = tokio::time::Instant::now() + within;
        while self.finger_present().await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Ef01Error::NoFingerInTime(within));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Enrols a finger into `slot` from `captures` placements (2 works on every model; R503
    /// accepts up to 6), refusing a finger already in the library, and returns the template read
    /// back out of the module for the centre. A caller that guides the student step by step
    /// uses [`Self::capture`], [`Self::register_model`], [`Self::search`], [`Self::store`] and
    /// [`Self::upload_char`] itself.
    pub async fn enroll(
        &mut self,
        slot: u16,
        captures: u8,
        finger_timeout: Duration,
    ) -> Result<Vec<u8>, Ef01Error> {
        let captures = captures.clamp(2, 6);
        let library_size = self.capacity().await?;
        for buffer in 1..=captures {
            self.capture_within(buffer, finger_timeout).await?;
            if buffer < captures {
                self.lift_within(finger_timeout).await?;
            }
        }
        if self.register_model().await? == Merge::Mismatch {
            return Err(Ef01Error::Module {
                command: "RegModel",
                code: Confirm::MERGE_FAILED,
            });
        }
        if let Some((existing, _)) = self.search(1, 0, library_size).await? {
            return Err(Ef01Error::AlreadyEnrolled {
                slot: Some(existing),
            });
        }
        self.store(1, slot).await?;
        self.upload_char(1).await
    }

    /// Store: writes character buffer `buffer` into library slot `slot`, replacing what the
    /// slot held (the module does not refuse an occupied slot).
    pub async fn store(&mut self, buffer: u8, slot: u16) -> Result<(), Ef01Error> {
        match self
            .expect_ok(&Instruction::Store { buffer, page: slot })
            .await
        {
            // Not a Store code in the R30x/R503 manuals, but firmware that checks duplicates
            // answers it; it means the same thing as a Search hit before storing.
            Err(Ef01Error::Module {
                code: Confirm::ALREADY_ENROLLED,
                ..
            }) => Err(Ef01Error::AlreadyEnrolled { slot: None }),
            other => other.map(drop),
        }
    }

    /// LoadChar: reads library slot `slot` into character buffer `buffer` (0x0C: the slot is
    /// empty; 0x0B: beyond the library).
    pub async fn load_char(&mut self, buffer: u8, slot: u16) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::LoadChar { buffer, page: slot })
            .await
            .map(drop)
    }

    /// UpChar: reads character buffer `buffer` out of the module (512 bytes on R30x, 1536 on
    /// R503). Sent once, never re-sent: a second UpChar would interleave a second data stream
    /// with the first. A bad checksum, a packet that does not belong in a transfer, more than
    /// [`MAX_TEMPLATE_LEN`] bytes, or a pause longer than the reply timeout is an error; the
    /// rest of the stream is then discarded so the next command starts clean, and the buffer is
    /// unchanged, so the caller may simply ask again.
    pub async fn upload_char(&mut self, buffer: u8) -> Result<Vec<u8>, Ef01Error> {
        let result = self.upload_char_once(buffer).await;
        if matches!(
            result,
            Err(Ef01Error::Protocol { .. } | Ef01Error::Timeout { .. })
        ) {
            self.discard_until_quiet().await;
        }
        result
    }

    async fn upload_char_once(&mut self, buffer: u8) -> Result<Vec<u8>, Ef01Error> {
        const NAME: &str = "UpChar";
        self.send(PacketKind::Command, Instruction::UpChar { buffer }.encode())
            .await?;
        let ack = self.receive(NAME, self.timeout).await?;
        match (ack.kind, ack.payload.first().copied().map(Confirm)) {
            (PacketKind::Ack, Some(Confirm::OK)) => {}
            (PacketKind::Ack, Some(code)) => {
                return Err(Ef01Error::Module {
                    command: NAME,
                    code,
                });
            }
            (PacketKind::Ack, None) => return Err(protocol(NAME, "empty acknowledgement")),
            (kind, _) => {
                return Err(protocol(
                    NAME,
                    format!("{kind:?} packet where the acknowledgement belongs"),
                ));
            }
        }
        // A whole transfer at 9600 baud in 32-byte packets takes about 2 s for 1536 bytes; a
        // module that trickles data slower than that is broken.
        let deadline = tokio::time::Instant::now() + self.timeout * 8;
        let mut template = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let packet = match self.receive(NAME, self.timeout.min(left)).await {
                Ok(packet) => packet,
                Err(Ef01Error::Timeout { .. }) if left < self.timeout => {
                    return Err(protocol(
                        NAME,
                        format!(
                            "no end-of-data packet within {:?} ({} bytes so far): the module \
                             sends too slowly",
                            self.timeout * 8,
                            template.len()
                        ),
                    ));
                }
                Err(Ef01Error::Timeout { .. }) => {
                    return Err(protocol(
                        NAME,
                        format!(
                            "data stopped after {} bytes without an end-of-data packet",
                            template.len()
                        ),
                    ));
                }
                Err(Ef01Error::Protocol { reason, .. }) => {
                    return Err(protocol(
                        NAME,
                        format!(
                            "corrupt data packet after {} bytes: {reason}",
                            template.len()
                        ),
                    ));
                }
                Err(e) => return Err(e),
            };
            if !matches!(packet.kind, PacketKind::Data | PacketKind::EndData) {
                return Err(protocol(
                    NAME,
                    format!(
                        "{:?} packet inside the data after {} bytes",
                        packet.kind,
                        template.len()
                    ),
                ));
            }
            if template.len() + packet.payload.len() > MAX_TEMPLATE_LEN {
                return Err(protocol(
                    NAME,
                    format!(
                        "more than {MAX_TEMPLATE_LEN} bytes of template data without an \
                         end-of-data packet"
                    ),
                ));
            }
            template.extend_from_slice(&packet.payload);
            if packet.kind == PacketKind::EndData {
                return Ok(template);
            }
        }
    }

    /// Reads and drops whatever the module is still sending, until the line has been quiet for
    /// 50 ms (at most twice the reply timeout), so the next reply parses from a clean start.
    async fn discard_until_quiet(&mut self) {
        let until = tokio::time::Instant::now() + self.timeout * 2;
        while let Ok(Ok(Some(Ok(_)))) = tokio::time::timeout_at(
            until,
            tokio::time::timeout(Duration::from_millis(50), self.io.next()),
        )
        .await
        {}
        self.io.read_buffer_mut().clear();
    }

    /// DownChar: writes `template` into character buffer `buffer`, in data packets of the
    /// module's packet size (asked with ReadSysPara the first time), the last one marked end of
    /// data. The module does not acknowledge data: a template it could not take shows at the
    /// next Store.
    pub async fn download_char(&mut self, buffer: u8, template: &[u8]) -> Result<(), Ef01Error> {
        if template.is_empty() || template.len() > MAX_TEMPLATE_LEN {
            return Err(protocol(
                "DownChar",
                format!(
                    "a template of {} bytes (templates are 1 to {MAX_TEMPLATE_LEN} bytes)",
                    template.len()
                ),
            ));
        }
        let packet_size = match self.packet_size {
            Some(size) => size,
            None => self.read_system_parameters().await?.packet_size(),
        };
        self.expect_ok(&Instruction::DownChar { buffer }).await?;
        for packet in split_data(self.address, template, packet_size) {
            self.io.feed(packet).await?;
        }
        self.io.flush().await?;
        Ok(())
    }

    /// DownChar into buffer 1, then Store into `slot`: loads a template from the host.
    pub async fn load_template(&mut self, slot: u16, template: &[u8]) -> Result<(), Ef01Error> {
        self.download_char(1, template).await?;
        self.store(1, slot).await
    }

    /// DeletChar: deletes `count` slots from `slot` (empty ones included). 0x10: the range
    /// reaches beyond the library.
    pub async fn delete(&mut self, slot: u16, count: u16) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::DeleteChar { page: slot, count })
            .await
            .map(drop)
    }

    /// Empty: erases the whole library.
    pub async fn empty_library(&mut self) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::Empty).await.map(drop)
    }

    /// TemplateNum: how many slots hold a template.
    pub async fn template_count(&mut self) -> Result<u16, Ef01Error> {
        let data = self.expect_ok(&Instruction::TemplateNum).await?;
        match data[..] {
            [hi, lo, ..] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(protocol("TemplateNum", "reply shorter than a count")),
        }
    }

    /// The library size (slots 0 to size - 1), from ReadSysPara: 200 on an R503, 1000 on an
    /// R307, whatever the module says on others.
    pub async fn capacity(&mut self) -> Result<u16, Ef01Error> {
        Ok(self.read_system_parameters().await?.library_size)
    }

    /// The occupied slots, from ReadIndexTable: one index page per 256 slots of the library
    /// (at most 4), bit 0 of byte 0 being slot 0 (as Adafruit's and PyFingerprint's drivers
    /// read it).
    pub async fn read_index_table(&mut self) -> Result<BTreeSet<u16>, Ef01Error> {
        let capacity = self.capacity().await?;
        let mut slots = BTreeSet::new();
        for page in 0..capacity.div_ceil(256).min(4) as u8 {
            let table = self
                .expect_ok(&Instruction::ReadIndexTable { page })
                .await?;
            let Some(table) = table.get(..32) else {
                return Err(protocol(
                    "ReadIndexTable",
                    format!("page {page}: {} bytes instead of 32", table.len()),
                ));
            };
            for (byte_index, byte) in table.iter().enumerate() {
                for bit in 0..8 {
                    let slot = u16::from(page) * 256 + byte_index as u16 * 8 + bit;
                    if byte & (1 << bit) != 0 && slot < capacity {
                        slots.insert(slot);
                    }
                }
            }
        }
        Ok(slots)
    }

    /// Makes the module's library hold exactly the roster's slots: deletes slots the roster does
    /// not have and loads the roster's templates the module lacks. A slot present on both sides is
    /// trusted (templates cannot be compared without reading each one out).
    pub async fn reconcile(
        &mut self,
        roster: &BTreeMap<u16, Vec<u8>>,
    ) -> Result<Reconciled, Ef01Error> {
        let capacity = self.capacity().await?;
        if let Some((&slot, _)) = roster.range(capacity..).next() {
            return Err(protocol(
                "Store",
                format!("roster slot {slot} is beyond the module's library of {capacity}"),
            ));
        }
        let occupied = self.read_index_table().await?;
        let mut done = Reconciled::default();
        for &slot in occupied.iter().filter(|s| !roster.contains_key(s)) {
            self.delete(slot, 1).await?;
            done.deleted.push(slot);
        }
        for (&slot, template) in roster.iter().filter(|(s, _)| !occupied.contains(s)) {
            self.load_template(slot, template).await?;
            done.loaded.push(slot);
        }
        // TemplateNum cross-checks the index table: a mismatch means a write did not land.
        let count = self.template_count().await?;
        if usize::from(count) != roster.len() {
            return Err(protocol(
                "TemplateNum",
                format!(
                    "module holds {count} templates after reconciling, roster has {}",
                    roster.len()
                ),
            ));
        }
        Ok(done)
    }
}
