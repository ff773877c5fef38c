//! A redb storage backend that loses power: writes stay volatile until `sync_data`, and a
//! [`PowerSwitch`] can cut power at any moment, keeping only what was synced (optionally plus a
//! prefix of the unsynced writes, the last of them torn in half, as a disk may do).
//!
//! This is what makes the power-cut guarantee testable in-process on any machine, CI included:
//! the journal must recover, from the surviving image, every punch it reported committed.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::StorageBackend;

#[derive(Debug, Default)]
struct Disk {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<(u64, Vec<u8>)>,
    durable_len: u64,
    powered_off: bool,
    max_len: Option<u64>,
    syncs: u64,
}

/// The backend given to redb.
#[derive(Debug, Clone)]
pub struct PowerCutBackend {
    disk: Arc<Mutex<Disk>>,
}

/// The test's hand on the power switch of a [`PowerCutBackend`].
#[derive(Debug, Clone)]
pub struct PowerSwitch {
    disk: Arc<Mutex<Disk>>,
}

fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

impl PowerCutBackend {
    /// A blank disk that is powered on, and its switch.
    pub fn new() -> (Self, PowerSwitch) {
        Self::from_image(Vec::new())
    }

    /// A disk holding `image`, all of it durable (what survived the last power cut).
    pub fn from_image(image: Vec<u8>) -> (Self, PowerSwitch) {
        let disk = Disk {
            durable_len: image.len() as u64,
            current: image.clone(),
            durable: image,
            ..Disk::default()
        };
        let disk = Arc::new(Mutex::new(disk));
        (Self { disk: disk.clone() }, PowerSwitch { disk })
    }
}

impl PowerSwitch {
    /// Cuts power. Every later operation on the backend fails. Returns the surviving image: the
    /// synced bytes plus the first `keep_unsynced` unsynced writes, the last of those torn to its
    /// first half when `tear` is set.
    pub fn cut(&self, keep_unsynced: usize, tear: bool) -> Vec<u8> {
        let mut d = lock(&self.disk);
        d.powered_off = true;
        let mut image = d.durable.clone();
        image.resize(d.durable_len as usize, 0);
        let kept = keep_unsynced.min(d.unsynced.len());
        for (i, (offset, data)) in d.unsynced[..kept].iter().enumerate() {
            let data = if tear && i + 1 == kept {
                &data[..data.len() / 2]
            } else {
                &data[..]
            };
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        image
    }

    /// Power comes back with `image` on the disk, all of it durable: what [`PowerSwitch::cut`]
    /// returned, or an older image (a card restored from a backup, a disk whose cache lied about
    /// a sync). Whoever still holds the backend reads and writes that image from now on, as a
    /// program that outlived the outage would.
    pub fn restore(&self, image: Vec<u8>) {
        let mut d = lock(&self.disk);
        d.durable_len = image.len() as u64;
        d.current = image.clone();
        d.durable = image;
        d.unsynced.clear();
        d.powered_off = false;
    }

    /// Writes not yet synced.
    pub fn unsynced_writes(&self) -> usize {
        lock(&self.disk).unsynced.len()
    }

    /// Number of `sync_data` calls so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.disk).syncs
    }

    /// Makes the disk "full" at `len` bytes: growing past it fails with ENOSPC.
    pub fn set_max_len(&self, len: Option<u64>) {
        lock(&self.disk).max_len = len;
    }
}

fn off() -> io::Error {
    io::Error::other("power is off")
}

impl StorageBackend for PowerCutBackend {
    fn len(&self) -> Result<u64, io::Error> {
        let d = lock(&self.disk);
        if d.powered_off {
            return Err(off());
        }
        Ok(d.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let d = lock(&self.disk);
        if d.powered_off {
            return Err(off());
        }
        let start = offset as usize;
        let end = start + out.len();
        if end > d.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        out.copy_from_slice(&d.current[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut d = lock(&self.disk);
        if d.powered_off {
            return Err(off());
        }
        if d.max_len.is_some_and(|max| len > max) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        d.current.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut d = lock(&self.disk);
        if d.powered_off {
            return Err(off());
        }
        d.durable = d.current.clone();
        d.durable_len = d.current.len() as u64;
        d.unsynced.clear();
        d.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut d = lock(&self.disk);
        if d.powered_off {
            return Err(off());
        }
        let start = offset as usize;
        let end = start + data.len();
        if end > d.current.len() {
            if d.max_len.is_some_and(|max| end as u64 > max) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            d.current.resize(end, 0);
        }
        d.current[start..end].copy_from_slice(data);
        d.unsynced.push((offset, data.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
