//! Library flows of the EF01 device: enrolment, template transfer, deletion, reconciliation.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{PacketKind, split_data};
use super::device::{Ef01, Ef01Error, Reconciled, protocol};
use super::instruction::{Confirm, Instruction};

impl<T: AsyncRead + AsyncWrite + Unpin> Ef01<T> {
    /// Polls GenImg until a finger is captured (`true`) or lifted (`false`), within `within`.
    async fn wait_for_finger(&mut self, present: bool, within: Duration) -> Result<(), Ef01Error> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ack = self.command(&Instruction::GenImg).await?;
            let captured = match ack.code {
                Confirm::OK => true,
                Confirm::NO_FINGER => false,
                Confirm::IMAGE_FAILED => present, // try again
                code => {
                    return Err(Ef01Error::Module {
                        command: "GenImg",
                        code,
                    });
                }
            };
            if captured == present {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Ef01Error::NoFingerInTime(within));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Enrols a finger into `slot` from `captures` placements (2 works on every model; R503
    /// accepts up to 6), refusing a finger already in the library, and returns the template read
    /// back out of the module for the centre.
    pub async fn enroll(
        &mut self,
        slot: u16,
        captures: u8,
        finger_timeout: Duration,
    ) -> Result<Vec<u8>, Ef01Error> {
        let captures = captures.clamp(2, 6);
        let library_size = self.read_system_parameters().await?.library_size;
        for buffer in 1..=captures {
            self.wait_for_finger(true, finger_timeout).await?;
            self.expect_ok(&Instruction::Img2Tz { buffer }).await?;
            if buffer < captures {
                self.wait_for_finger(false, finger_timeout).await?;
            }
        }
        self.expect_ok(&Instruction::RegModel).await?;
        if let Some((existing, _)) = self.search(1, 0, library_size).await? {
            return Err(Ef01Error::AlreadyEnrolled {
                slot: Some(existing),
            });
        }
        self.store(1, slot).await?;
        self.upload_template(1).await
    }

    /// Stores character buffer `buffer` into `slot`.
    pub async fn store(&mut self, buffer: u8, slot: u16) -> Result<(), Ef01Error> {
        match self
            .expect_ok(&Instruction::Store { buffer, page: slot })
            .await
        {
            Err(Ef01Error::Module {
                code: Confirm::ALREADY_ENROLLED,
                ..
            }) => Err(Ef01Error::AlreadyEnrolled { slot: None }),
            other => other.map(drop),
        }
    }

    /// UpChar: reads character buffer `buffer` out of the module.
    pub async fn upload_template(&mut self, buffer: u8) -> Result<Vec<u8>, Ef01Error> {
        self.expect_ok(&Instruction::UpChar { buffer }).await?;
        let mut template = Vec::new();
        loop {
            let packet = self.receive("UpChar", self.timeout).await?;
            match packet.kind {
                PacketKind::Data => template.extend_from_slice(&packet.payload),
                PacketKind::EndData => {
                    template.extend_from_slice(&packet.payload);
                    return Ok(template);
                }
                kind => {
                    return Err(protocol(
                        "UpChar",
                        format!("{kind:?} packet inside a transfer"),
                    ));
                }
            }
        }
    }

    /// DownChar then Store: loads a template from the host into `slot`.
    pub async fn load_template(&mut self, slot: u16, template: &[u8]) -> Result<(), Ef01Error> {
        if template.is_empty() {
            return Err(protocol("DownChar", "empty template"));
        }
        self.expect_ok(&Instruction::DownChar { buffer: 1 }).await?;
        for packet in split_data(self.address, template, self.packet_size) {
            self.io.feed(packet).await?;
        }
        self.io.flush().await?;
        self.store(1, slot).await
    }

    /// Deletes `count` slots from `slot`.
    pub async fn delete(&mut self, slot: u16, count: u16) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::DeleteChar { page: slot, count })
            .await
            .map(drop)
    }

    /// Erases the whole library.
    pub async fn empty(&mut self) -> Result<(), Ef01Error> {
        self.expect_ok(&Instruction::Empty).await.map(drop)
    }

    /// Number of stored templates.
    pub async fn template_count(&mut self) -> Result<u16, Ef01Error> {
        let data = self.expect_ok(&Instruction::TemplateNum).await?;
        match data[..] {
            [hi, lo, ..] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(protocol("TemplateNum", "reply shorter than a count")),
        }
    }

    /// Occupied slots below `library_size`, from ReadIndexTable (bit 0 of byte 0 is slot 0).
    pub async fn occupied_slots(&mut self, library_size: u16) -> Result<Vec<u16>, Ef01Error> {
        let mut slots = Vec::new();
        for page in 0..library_size.div_ceil(256).min(4) as u8 {
            let table = self
                .expect_ok(&Instruction::ReadIndexTable { page })
                .await?;
            for (byte_index, byte) in table.iter().take(32).enumerate() {
                for bit in 0..8 {
                    let slot = u16::from(page) * 256 + byte_index as u16 * 8 + bit;
                    if byte & (1 << bit) != 0 && slot < library_size {
                        slots.push(slot);
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
        let params = self.read_system_parameters().await?;
        if let Some((&slot, _)) = roster.range(params.library_size..).next() {
            return Err(protocol(
                "Store",
                format!(
                    "roster slot {slot} is beyond the module's library of {}",
                    params.library_size
                ),
            ));
        }
        let occupied = self.occupied_slots(params.library_size).await?;
        let mut done = Reconciled::default();
        for &slot in occupied.iter().filter(|s| !roster.contains_key(s)) {
            self.delete(slot, 1).await?;
            done.deleted.push(slot);
        }
        for (&slot, template) in roster
            .iter()
            .filter(|(s, _)| occupied.binary_search(s).is_err())
        {
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
