//! An EF01 fingerprint module (the byte-level simulator) behind a pseudo-terminal, as the Pi's
//! UART presents one: rollcalld opens [`Module::path`]; the module, and its library, live in the
//! test across rollcalld restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use rollcall_drivers::ef01::sim::{Ef01Sim, SimHandle, SimModel};

/// A simulated module on a pty.
#[derive(Debug)]
pub struct Module {
    /// The simulator: place fingers, read its library.
    pub sim: SimHandle,
    /// The pty rollcalld opens.
    pub path: String,
    slave: tokio_serial::SerialStream,
}

/// A small, fast module: R307-like (512-byte templates), no boot time, `slots` slots.
pub fn model(slots: u16) -> SimModel {
    SimModel {
        library_size: slots,
        boot_time: Duration::ZERO,
        ..SimModel::R307
    }
}

impl Module {
    /// Starts serving `model` on a new pty pair (needs a tokio runtime).
    pub fn start(model: SimModel) -> anyhow::Result<Self> {
        use tokio_serial::SerialPort;
        let (master, slave) = tokio_serial::SerialStream::pair()?;
        let path = slave
            .name()
            .ok_or_else(|| anyhow::anyhow!("pty without a name"))?;
        let sim = SimHandle::new(Ef01Sim::new(model));
        let serving = sim.clone();
        tokio::spawn(async move {
            let _ = serving
                .serve(master, tokio_util::sync::CancellationToken::new())
                .await;
        });
        Ok(Self { sim, path, slave })
    }

    /// After a kill: drops what the module sent to the dead process.
    pub fn flush(&self) {
        use tokio_serial::SerialPort;
        let _ = self.slave.clear(tokio_serial::ClearBuffer::All);
    }

    /// The library: slot -> template.
    pub fn library(&self) -> BTreeMap<u16, Vec<u8>> {
        self.sim.lock().library().clone()
    }

    /// The simulator's template for finger `seed`.
    pub fn template(&self, seed: u32) -> Vec<u8> {
        self.sim.lock().template_for(seed)
    }

    /// The `[[reader]]` table of this module (kind `r307`).
    pub fn reader(&self, id: &str) -> String {
        format!(
            "[[reader]]\nid = \"{id}\"\nkind = \"r307\"\nport = \"{}\"\n",
            self.path
        )
    }
}
