//! The punch journal: every accepted punch, durable on the device's own disk until the centre
//! has committed it.
//!
//! # Guarantees
//!
//! * [`Journal::append`] returns only after the punches are committed with an fsync
//!   (`Durability::Immediate`): a punch whose "accepted" signal was shown survives a crash or a
//!   power cut. A burst of punches shares one transaction and one fsync (group commit).
//! * Each punch gets the next `seq` (from 1, strictly increasing, never reused: the next seq is
//!   stored, not derived from what is left).
//! * [`Journal::ack`] deletes only punches up to a seq the centre acked, never beyond what was
//!   assigned. The journal therefore always holds the contiguous run `acked+1 ..= last_seq`.
//! * A new journal gets a fresh random 64-bit `epoch`, so a replaced SD card never reuses a
//!   `(device, epoch, seq)` key that the centre has already seen.
//! * When `capacity` unacked punches are held, further punches are refused (the caller shows
//!   "storage full"); nothing unacked is ever overwritten.
//! * A file that is corrupt, truncated, or not a Rollcall journal is never silently replaced:
//!   opening it fails with [`JournalError::Corrupt`], naming the file and what to do, and leaves
//!   it byte for byte as it was (it is checked through a read-only view before redb opens it
//!   for writing; only a file that needs crash recovery is repaired before it can be checked).
//!
//! # Layout (redb, format 1)
//!
//! ```text
//! table "meta"     &str -> u64     "format" = 1, "epoch", "next_seq", "acked"
//! table "punches"  u64  -> bytes   seq -> the punch, CBOR-encoded as rollcall_protocol::v1::Punch
//! ```
//!
//! A journal file is created under a temporary name, initialised, synced and then renamed into
//! place, so a file at the configured path is always a complete journal; anything else there
//! (empty, truncated, foreign) is an error, not a fresh start.
//!
//! # Why redb
//!
//! See the README: sled's flush is not an fsync (it lost flushed records in every power-cut run
//! measured); redb commits with one fsync per write transaction and lets tests plug in a storage
//! backend that drops unsynced writes ([`powercut::PowerCutBackend`]).

pub mod actor;
pub mod powercut;
pub mod salvage;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, StorageBackend, TableDefinition};
use rollcall_protocol::v1::Punch;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PUNCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("punches");
const FORMAT: u64 = 1;
/// Page cache redb may use. Small on purpose: a Pi has other work, and the journal is read
/// sequentially.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file cannot be trusted. Its unacked punches may still be recoverable by hand.
    #[error(
        "journal {path} is unreadable ({detail}). Its unacked punches may still be recoverable: \
         stop rollcalld, move the file aside (mv {path} {path}.corrupt), keep it for the \
         administrators, and start rollcalld again; it will create a new journal with a new epoch"
    )]
    Corrupt {
        /// Path of the journal file.
        path: String,
        /// What was found.
        detail: String,
    },
    /// Another process holds the journal open.
    #[error("journal {0} is already open by another process: is another rollcalld running?")]
    Locked(String),
    /// The journal's file or directory is not accessible to this process.
    #[error(
        "journal {path}: {source}: the journal directory and file must belong to the user \
         rollcalld runs as (see the systemd unit's StateDirectory) and be on a writable file system"
    )]
    Access {
        /// Path of the journal file.
        path: String,
        /// What the operating system answered.
        #[source]
        source: io::Error,
    },
    /// The disk is full.
    #[error("journal {0}: no space left on the device: free space or enlarge the partition")]
    DiskFull(String),
    /// Any other I/O or storage failure.
    #[error("journal {path}: {source}")]
    Storage {
        /// Path of the journal file.
        path: String,
        /// What redb answered.
        #[source]
        source: redb::Error,
    },
    /// A stored punch could not be decoded (the file is damaged).
    #[error("journal {path}: punch {seq} is damaged: {detail}")]
    Damaged {
        /// Path of the journal file.
        path: String,
        /// Seq of the damaged punch.
        seq: u64,
        /// What the decoder said.
        detail: String,
    },
}

/// The journal. Blocking; [`actor::JournalHandle`] runs it on its own thread for async callers.
#[derive(Debug)]
pub struct Journal {
    /// `None` only after a failed write whose reopen failed too (see [`Journal::recover`]).
    db: Option<Database>,
    reopen: Reopen,
    /// A write failed: the database must be closed and opened again before the next write.
    broken: Option<Broken>,
    label: String,
    epoch: u64,
    last_seq: u64,
    acked: u64,
    capacity: u64,
    acks_since_sync: u32,
}

/// One ack transaction in this many is committed durably (see [`Journal::ack`]).
const ACKS_PER_SYNC: u32 = 8;

/// After a failed write, writes are refused at once (with the same kind of error) for this long
/// before the journal is reopened: reopening repairs the file, which takes a while on a large
/// journal, and a full disk stays full for longer than a student's tap.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Opens the same database again (a file path, or a test's storage backend).
struct Reopen(Box<dyn Fn() -> Result<Database, redb::DatabaseError> + Send>);

impl std::fmt::Debug for Reopen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reopen")
    }
}

#[derive(Debug, Clone, Copy)]
struct Broken {
    disk_full: bool,
    retry_at: Instant,
}

impl Journal {
    /// Opens the journal at `path`, creating it (atomically) if there is no file.
    pub fn open(path: &Path, capacity: u64) -> Result<Self, JournalError> {
        let label = path.display().to_string();
        if !path.exists() {
            create_file(path)?;
        }
        // Opening for writing updates the file's header even when its contents are then refused,
        // so the file is first checked through a read-only view, which never writes. A file that
        // needs crash recovery (rollcalld was killed, the power was cut) cannot be read without
        // redb's repair; that is the normal case after a crash, so such a file goes straight to
        // the writable open, which repairs it.
        match guarded_read_only(&label, || builder().open_read_only(path)) {
            Ok(Some(view)) => {
                read_meta(&view, &label)?;
            }
            Ok(None) => {
                tracing::warn!(journal = %label, "journal was not closed cleanly; recovering")
            }
            Err(e) => return Err(e),
        }
        let db = guarded(&label, || builder().open(path))?;
        let path = path.to_owned();
        let reopen = Reopen(Box::new(move || builder().open(&path)));
        Self::load(db, reopen, label, capacity, false)
    }

    /// Opens (or, if the backend is empty, creates) a journal on any redb storage backend. The
    /// backend is cloned to reopen it after a failed write.
    pub fn open_backend(
        backend: impl StorageBackend + Clone + 'static,
        label: &str,
        capacity: u64,
    ) -> Result<Self, JournalError> {
        let fresh = backend.len().map(|l| l == 0).unwrap_or(false);
        let db = guarded(label, || builder().create_with_backend(backend.clone()))?;
        let reopen = Reopen(Box::new(move || {
            builder().create_with_backend(backend.clone())
        }));
        Self::load(db, reopen, label.to_owned(), capacity, fresh)
    }

    fn load(
        db: Database,
        reopen: Reopen,
        label: String,
        capacity: u64,
        fresh: bool,
    ) -> Result<Self, JournalError> {
        if fresh {
            initialise(&db, &label)?;
        }
        let (epoch, next_seq, acked) = read_meta(&db, &label)?;
        Ok(Self {
            db: Some(db),
            reopen,
            broken: None,
            label,
            epoch,
            last_seq: next_seq - 1,
            acked,
            capacity,
            acks_since_sync: 0,
        })
    }

    /// Commits `punches` (their `seq` fields are overwritten with the assigned seqs), oldest
    /// first, in one transaction with one fsync. Returns how many were accepted: the first
    /// `n` of `punches`; the rest were refused because the journal is at capacity.
    pub fn append(&mut self, punches: &mut [Punch]) -> Result<usize, JournalError> {
        self.recover()?;
        let result = self.append_inner(punches);
        self.note(&result);
        result
    }

    fn append_inner(&mut self, punches: &mut [Punch]) -> Result<usize, JournalError> {
        let room = self.capacity.saturating_sub(self.depth());
        let n = punches
            .len()
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        let err = |e: redb::Error| storage(&self.label, e);
        let mut tx = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| err(e.into()))?;
        let mut seq = self.last_seq;
        {
            let mut table = tx.open_table(PUNCHES).map_err(|e| err(e.into()))?;
            let mut buf = Vec::with_capacity(256);
            for p in punches[..n].iter_mut() {
                seq += 1;
                p.seq = seq;
                buf.clear();
                minicbor::encode(&*p, &mut buf).expect("a Punch always encodes into a Vec");
                table
                    .insert(seq, buf.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert("next_seq", seq + 1)
                .map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))?;
        self.last_seq = seq;
        Ok(n)
    }

    /// The encoded punches `first..=last` (clamped to what the journal holds).
    pub fn read(&self, first: u64, last: u64) -> Result<Vec<Vec<u8>>, JournalError> {
        let first = first.max(self.acked + 1);
        let last = last.min(self.last_seq);
        if first > last {
            return Ok(Vec::new());
        }
        let err = |e: redb::Error| storage(&self.label, e);
        let tx = self.db()?.begin_read().map_err(|e| err(e.into()))?;
        let table = tx.open_table(PUNCHES).map_err(|e| err(e.into()))?;
        // The journal holds a contiguous run of seqs; a hole means the file is damaged.
        let missing = |seq: u64| JournalError::Damaged {
            path: self.label.clone(),
            seq,
            detail: "missing from the journal".into(),
        };
        let mut out = Vec::with_capacity((last - first + 1) as usize);
        for entry in table.range(first..=last).map_err(|e| err(e.into()))? {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            let expected = first + out.len() as u64;
            if k.value() != expected {
                return Err(missing(expected));
            }
            out.push(v.value().to_vec());
        }
        if out.len() as u64 != last - first + 1 {
            return Err(missing(first + out.len() as u64));
        }
        Ok(out)
    }

    /// Decoded punches `first..=last`.
    pub fn read_punches(&self, first: u64, last: u64) -> Result<Vec<Punch>, JournalError> {
        self.read(first, last)?
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                minicbor::decode(bytes).map_err(|e| JournalError::Damaged {
                    path: self.label.clone(),
                    seq: first.max(self.acked + 1) + i as u64,
                    detail: e.to_string(),
                })
            })
            .collect()
    }

    /// The centre committed everything up to `up_to`: delete it. Returns how many punches were
    /// deleted. Seqs beyond what was assigned are clamped, never trusted.
    pub fn ack(&mut self, up_to: u64) -> Result<u64, JournalError> {
        let up_to = up_to.min(self.last_seq);
        if up_to <= self.acked {
            return Ok(0);
        }
        self.recover()?;
        let result = self.ack_inner(up_to);
        self.note(&result);
        result
    }

    fn ack_inner(&mut self, up_to: u64) -> Result<u64, JournalError> {
        let err = |e: redb::Error| storage(&self.label, e);
        let mut tx = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        // Losing a deletion in a power cut only means re-sending acked punches, which the
        // centre ignores; so most deletions skip their own fsync (the next append's persists
        // them). Every few acks one is durable anyway, so that a long drain with no appends
        // lets redb reuse the freed pages instead of growing the file.
        self.acks_since_sync += 1;
        let durability = if self.acks_since_sync >= ACKS_PER_SYNC {
            self.acks_since_sync = 0;
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability).map_err(|e| err(e.into()))?;
        {
            let mut table = tx.open_table(PUNCHES).map_err(|e| err(e.into()))?;
            table
                .retain_in(..=up_to, |_, _| false)
                .map_err(|e| err(e.into()))?;
            let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert("acked", up_to).map_err(|e| err(e.into()))?;
        }
        tx.commit().map_err(|e| err(e.into()))?;
        let deleted = up_to - self.acked;
        self.acked = up_to;
        Ok(deleted)
    }

    fn db(&self) -> Result<&Database, JournalError> {
        self.db
            .as_ref()
            .ok_or_else(|| storage(&self.label, redb::Error::PreviousIo))
    }

    /// Remembers a failed write: redb refuses every later write (`PreviousIo`) until the
    /// database is closed and opened again, which [`Journal::recover`] does.
    fn note<T>(&mut self, result: &Result<T, JournalError>) {
        if let Err(e) = result {
            self.broke(matches!(e, JournalError::DiskFull(_)));
        }
    }

    fn broke(&mut self, disk_full: bool) {
        self.broken = Some(Broken {
            disk_full,
            retry_at: Instant::now() + RETRY_AFTER_FAILURE,
        });
    }

    /// After a failed write (a full disk, an I/O error), closes and reopens the database so that
    /// writing works again once the cause is gone (space freed), without restarting rollcalld.
    /// Within [`RETRY_AFTER_FAILURE`] of the failure it answers at once with the same kind of
    /// error. Everything committed before the failure is kept: the reopened file is the truth.
    pub fn recover(&mut self) -> Result<(), JournalError> {
        let Some(broken) = self.broken else {
            return Ok(());
        };
        if Instant::now() < broken.retry_at {
            return Err(if broken.disk_full {
                JournalError::DiskFull(self.label.clone())
            } else {
                storage(&self.label, redb::Error::PreviousIo)
            });
        }
        // Close first: the file is locked while open.
        self.db = None;
        let reopened = guarded(&self.label, || (self.reopen.0)())
            .and_then(|db| read_meta(&db, &self.label).map(|meta| (db, meta)));
        let (db, (epoch, next_seq, acked)) = match reopened {
            Ok(v) => v,
            Err(e) => {
                self.broke(matches!(e, JournalError::DiskFull(_)));
                return Err(e);
            }
        };
        if epoch != self.epoch || next_seq - 1 < self.last_seq {
            // Committed punches are missing: never write over that.
            let e = corrupt(
                &self.label,
                &format!(
                    "after reopening, epoch {epoch} and next seq {next_seq} do not match the \
                     journal's epoch {} and last seq {}",
                    self.epoch, self.last_seq
                ),
            );
            self.broke(false);
            return Err(e);
        }
        let wanted_acked = self.acked;
        self.db = Some(db);
        self.broken = None;
        self.last_seq = next_seq - 1;
        self.acked = acked;
        tracing::warn!(journal = %self.label, last_seq = self.last_seq, "journal reopened after a storage error; writing again");
        // Deletions committed without their own fsync may have been rolled back; redo them.
        if wanted_acked > acked {
            self.ack(wanted_acked)?;
        }
        Ok(())
    }

    /// Capture time of the oldest unacked punch.
    pub fn oldest_captured_at_ms(&self) -> Result<Option<i64>, JournalError> {
        if self.depth() == 0 {
            return Ok(None);
        }
        Ok(self
            .read_punches(self.acked + 1, self.acked + 1)?
            .first()
            .map(|p| p.captured_at_ms))
    }

    /// Random epoch of this journal file.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// Highest seq assigned (0 if none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
    /// Highest seq acked and deleted.
    pub fn acked(&self) -> u64 {
        self.acked
    }
    /// Unacked punches held.
    pub fn depth(&self) -> u64 {
        self.last_seq - self.acked
    }
    /// Most unacked punches the journal will hold.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    /// The file (or backend label) for messages.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Reads and checks the journal's metadata: (epoch, next_seq, acked).
fn read_meta(db: &impl ReadableDatabase, label: &str) -> Result<(u64, u64, u64), JournalError> {
    let (format, epoch, next_seq, acked) = {
        let err = |e: redb::Error| storage(label, e);
        let tx = db.begin_read().map_err(|e| err(e.into()))?;
        let meta = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                return Err(corrupt(label, "it holds no Rollcall journal metadata"));
            }
            Err(e) => return Err(err(e.into())),
        };
        let get = |k: &str| -> Result<Option<u64>, JournalError> {
            Ok(meta.get(k).map_err(|e| err(e.into()))?.map(|v| v.value()))
        };
        (
            get("format")?,
            get("epoch")?,
            get("next_seq")?,
            get("acked")?,
        )
    };
    let (Some(format), Some(epoch), Some(next_seq), Some(acked)) = (format, epoch, next_seq, acked)
    else {
        return Err(corrupt(label, "its metadata is incomplete"));
    };
    if format != FORMAT {
        return Err(corrupt(
            label,
            &format!("format {format}; this rollcalld reads format {FORMAT}"),
        ));
    }
    if acked >= next_seq {
        return Err(corrupt(
            label,
            &format!("acked seq {acked} is not below next seq {next_seq}"),
        ));
    }
    Ok((epoch, next_seq, acked))
}

fn builder() -> redb::Builder {
    let mut b = Database::builder();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// redb checks some invariants with debug assertions; a damaged file must give an error, not a
/// panic, so opening runs under [`crate::panic::catch`] (which rollcalld's exit-on-panic hook
/// lets unwind).
fn guarded(
    label: &str,
    open: impl FnOnce() -> Result<Database, redb::DatabaseError>,
) -> Result<Database, JournalError> {
    match crate::panic::catch(open) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            Err(JournalError::Locked(label.to_owned()))
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))) => match e.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                Err(JournalError::Access {
                    path: label.to_owned(),
                    source: e,
                })
            }
            _ if e.raw_os_error().is_some() => {
                Err(storage(label, redb::StorageError::Io(e).into()))
            }
            // redb reports what it finds in the file (bad magic, empty, short) as I/O errors
            // without an OS error code.
            _ => Err(corrupt(label, &e.to_string())),
        },
        Ok(Err(e)) => Err(corrupt(label, &e.to_string())),
        Err(_) => Err(corrupt(label, "the storage engine found inconsistent data")),
    }
}

/// [`guarded`] for a read-only view: `Ok(None)` when the file needs crash recovery first.
fn guarded_read_only(
    label: &str,
    open: impl FnOnce() -> Result<redb::ReadOnlyDatabase, redb::DatabaseError>,
) -> Result<Option<redb::ReadOnlyDatabase>, JournalError> {
    match crate::panic::catch(open) {
        Ok(Ok(db)) => Ok(Some(db)),
        Ok(Err(redb::DatabaseError::RepairAborted)) => Ok(None),
        Ok(Err(e)) => guarded(label, || Err(e)).map(|_| None),
        Err(_) => Err(corrupt(label, "the storage engine found inconsistent data")),
    }
}

fn create_file(path: &Path) -> Result<(), JournalError> {
    let label = path.display().to_string();
    let io_err = |e: io::Error| storage(&label, redb::StorageError::Io(e).into());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".creating");
    let _ = fs::remove_file(&tmp);
    // Private from the start, whatever the umask: redb would create the file 0666 & ~umask.
    {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err)?;
    }
    {
        let db = guarded(&label, || builder().create(&tmp))?;
        initialise(&db, &label)?;
    }
    fs::rename(&tmp, path).map_err(io_err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err)?;
    }
    tracing::info!(journal = %label, "created a new journal");
    Ok(())
}

fn initialise(db: &Database, label: &str) -> Result<(), JournalError> {
    let err = |e: redb::Error| storage(label, e);
    let epoch = loop {
        let e: u64 = rand::random();
        if e != 0 {
            break e;
        }
    };
    let tx = db.begin_write().map_err(|e| err(e.into()))?;
    {
        let mut meta = tx.open_table(META).map_err(|e| err(e.into()))?;
        for (k, v) in [
            ("format", FORMAT),
            ("epoch", epoch),
            ("next_seq", 1),
            ("acked", 0),
        ] {
            meta.insert(k, v).map_err(|e| err(e.into()))?;
        }
        tx.open_table(PUNCHES).map_err(|e| err(e.into()))?;
    }
    tx.commit().map_err(|e| err(e.into()))?;
    Ok(())
}

fn corrupt(label: &str, detail: &str) -> JournalError {
    JournalError::Corrupt {
        path: label.to_owned(),
        detail: detail.to_owned(),
    }
}

fn storage(label: &str, e: redb::Error) -> JournalError {
    let is_full = |io: &io::Error| {
        io.kind() == io::ErrorKind::StorageFull || io.raw_os_error() == Some(libc::ENOSPC)
    };
    match &e {
        redb::Error::Io(io) if is_full(io) => JournalError::DiskFull(label.to_owned()),
        redb::Error::Corrupted(detail) => corrupt(label, detail),
        _ => JournalError::Storage {
            path: label.to_owned(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests;
