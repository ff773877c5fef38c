//! The device data key's one owner in rollcalld, and its rotation (`rollcall keys rotate`).
//!
//! The data key (`<state_dir>/template.key`, see `templates.rs`) seals the centre's roster
//! (`roster.sealed`), the enrolment outbox (`outbox/*.sealed`) and the template files a roster
//! file lists (`[[template]]`). In rollcalld one [`Keyring`] holds it: the credentials store and
//! the outbox seal and open under it, the roster file's templates are opened with it at start.
//! `card-hash.key` (the keyed hash of unknown cards) is another key and is never rotated: the
//! centre knows an unknown card by its hash, and a new key would make every unknown card a new
//! one.
//!
//! # Rotation, and why it survives kill -9 at any instant
//!
//! ```text
//! 1. template.key.next.tmp: 32 new random bytes, fsync; renamed to template.key.next; dir fsync
//! 2. every protected file: opened with whichever key opens it (new, then old), sealed under the
//!    new key, replaced atomically (<file>.tmp, fsync, rename); then each directory fsync'd once
//!    (a rename a power cut undoes leaves the old file, which the old key still opens)
//! 3. template.key linked as template.key.old; template.key.next renamed over template.key;
//!    dir fsync; template.key.old overwritten with random bytes, fsync, unlinked
//! 4. the old key dropped (overwritten in memory)
//! ```
//!
//! The invariant at every instant: each protected file opens with `template.key` or with
//! `template.key.next`, because a file is only ever sealed under the new key after step 1 made
//! that key durable, and the old key is only replaced (step 3) once every file is under the new
//! one. A crash before step 1's rename leaves at most a `.next.tmp` that sealed nothing (it is
//! deleted). A crash between 1 and 3 leaves both key files: at start-up, before anything reads a
//! sealed file, [`Keyring::open`] finishes the rotation (step 2 again for every file, then 3):
//! re-sealing a file that is already under the new key is harmless. A crash after 3 leaves the
//! new key only, with every file under it (and perhaps `template.key.old`, overwritten and removed
//! at start; while `template.key.next` is there, `.old` is only another name of the live
//! `template.key` and is merely unlinked). A `<file>.tmp` left by a crash is a partial copy and
//! is deleted; the file itself is the old or the new version, both openable.
//!
//! This was chosen over a key id in every file's header (files stay in their current formats, and
//! after a rotation no file opens with the old key, which is the point of rotating after a leak)
//! and over re-sealing into a new directory then swapping it (the template files live beside the
//! roster file, not in one directory rollcalld owns).
//!
//! # While rollcalld runs
//!
//! Sealing and opening in rollcalld happen under the keyring's read lock, on blocking threads;
//! a rotation holds its write lock while it re-seals, so no file is written under the old key
//! after the rotation listed it. Capture needs no data key (the roster in memory is already
//! opened; unknown cards use `card-hash.key`), so taps, the journal and the uplink go on
//! throughout; roster updates and enrolments wait for the rotation (well under a second for
//! hundreds of files). Between processes (`rollcalld roster add-template`, `rollcall keys rotate
//! --offline`), `template.key.lock` is held with `flock` around each use.
//!
//! If a rotation fails half-way (a full disk), the new key stays in use for sealing, both are kept
//! for opening, `template.key.next` stays on disk, and the next rotation or start finishes it.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

use zeroize::Zeroizing;

use crate::config::{Config, RosterSource};
use crate::credentials::outbox::OUTBOX_DIR;
use crate::credentials::store::{self, ENROLMENT_MAGIC, ROSTER_FILE, ROSTER_MAGIC};
use crate::templates::{self, DataKey, KEY_FILE};

/// The new key while a rotation is under way (see the module docs).
pub const NEXT_FILE: &str = "template.key.next";
/// The replaced key, overwritten and removed at the end of a rotation.
pub const OLD_FILE: &str = "template.key.old";
/// Held with `flock` by every process while it uses or rotates the key.
pub const LOCK_FILE: &str = "template.key.lock";
/// Test-only: makes a rotation kill its own process with SIGKILL (kill -9) after re-sealing this
/// many files (0: right after the new key is durable; the number of files: just before the
/// rename).
/// Read by [`Keyring::rotate`] only, never by the start-up recovery.
pub const TEST_ONLY_ABORT_ENV: &str = "ROLLCALL_TEST_ONLY_ABORT_ROTATION_AFTER";

/// Test-only: makes a rotation wait, after re-sealing this many files, until the file
/// [`TEST_ONLY_RESUME_FILE`] appears in the state directory (it is removed, and the rotation goes
/// on), so a test can act while a rotation is surely under way.
pub const TEST_ONLY_PAUSE_ENV: &str = "ROLLCALL_TEST_ONLY_PAUSE_ROTATION_AFTER";
/// See [`TEST_ONLY_PAUSE_ENV`].
pub const TEST_ONLY_RESUME_FILE: &str = "test-only-resume-rotation";

/// The test-only hooks of a rotation ([`TEST_ONLY_ABORT_ENV`], [`TEST_ONLY_PAUSE_ENV`]); never
/// set in production, and never read by the start-up recovery.
#[derive(Debug, Clone, Copy, Default)]
struct TestOnlyHooks {
    abort_after: Option<usize>,
    pause_after: Option<usize>,
}

impl TestOnlyHooks {
    fn from_env() -> Self {
        let get = |name| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        Self {
            abort_after: get(TEST_ONLY_ABORT_ENV),
            pause_after: get(TEST_ONLY_PAUSE_ENV),
        }
    }
}

/// Why the key could not be opened or rotated.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// Anything else, with its fix.
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |error| KeyError::Io {
        path: path.to_owned(),
        error,
    }
}

impl From<store::StoreError> for KeyError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Io { path, error } => KeyError::Io { path, error },
            other => KeyError::Invalid(other.to_string()),
        }
    }
}

/// The keys in memory: the one new files are sealed under, and during a rotation that did not
/// finish, the previous one (files are opened with either).
#[derive(Debug)]
pub struct Keys {
    key: DataKey,
    old: Option<DataKey>,
}

impl Keys {
    /// One key (tests, tools).
    pub fn single(key: DataKey) -> Self {
        Self { key, old: None }
    }

    /// The key to seal under.
    pub fn sealing(&self) -> &DataKey {
        &self.key
    }

    /// What `open` answers with the first key that opens.
    pub fn open<T>(&self, open: impl Fn(&DataKey) -> Option<T>) -> Option<T> {
        open(&self.key).or_else(|| self.old.as_ref().and_then(open))
    }
}

/// What the data key protects in one installation.
#[derive(Debug, Clone)]
pub struct Protected {
    /// The state directory (the key, `roster.sealed`, `outbox/`).
    pub state_dir: PathBuf,
    /// The device id (associated data of the roster and the outbox).
    pub device_id: String,
    /// The roster file whose `[[template]]` entries name sealed templates, when the roster
    /// comes from a file.
    pub roster_file: Option<PathBuf>,
}

impl Protected {
    /// What `config`'s installation protects.
    pub fn from_config(config: &Config) -> Self {
        Self {
            state_dir: config.device.state_dir.clone(),
            device_id: config.device.id.clone(),
            roster_file: match config.roster.source {
                RosterSource::File => config.roster.path.clone(),
                RosterSource::Centre => None,
            },
        }
    }

    /// The roster file's `[[template]]` entries (student, file), each file once.
    fn templates(&self) -> Result<Vec<(String, PathBuf)>, KeyError> {
        let Some(path) = self.roster_file.as_deref().filter(|p| p.exists()) else {
            return Ok(Vec::new());
        };
        let roster = crate::roster::Roster::load(path).map_err(|e| {
            KeyError::Invalid(format!(
                "{e}: the sealed templates it lists cannot be found to re-seal: correct the \
                 roster file first (rollcalld validate shows what is wrong)"
            ))
        })?;
        let mut out: Vec<(String, PathBuf)> = Vec::new();
        for (student, file) in roster.template_files() {
            if !out.iter().any(|(_, f)| f == file) {
                out.push((student.clone(), file.clone()));
            }
        }
        Ok(out)
    }
}

/// What a rotation re-sealed under the new key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resealed {
    /// Template files of the roster file.
    pub templates: usize,
    /// The sealed roster (0 or 1).
    pub roster: usize,
    /// Enrolments in the outbox.
    pub outbox: usize,
    /// Files that opened with neither key (damaged, or from another device): left as they were.
    pub unreadable: Vec<PathBuf>,
    /// The new key's fingerprint ([`fingerprint`]).
    pub fingerprint: String,
    /// Directories with a renamed file, fsync'd before the key file is replaced.
    directories: Vec<PathBuf>,
}

impl Resealed {
    /// The control socket's reply line.
    pub fn to_line(&self) -> String {
        format!(
            "rotated fingerprint={} templates={} roster={} outbox={} unreadable={}",
            self.fingerprint,
            self.templates,
            self.roster,
            self.outbox,
            self.unreadable.len()
        )
    }
}

/// A short fingerprint of a key (16 hex digits of a BLAKE3 key derivation from it): tells two
/// keys apart in logs and replies, and reveals nothing of the key.
pub fn fingerprint(key: &DataKey) -> String {
    let derived = blake3::derive_key("rollcall 2026 device data key fingerprint", key.bytes());
    hex::encode(&derived[..8])
}

/// `template.key.lock`, held (`flock`, exclusive) while a process uses or rotates the key files.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Waits for the lock of `state_dir`.
    pub fn acquire(state_dir: &Path) -> Result<Self, KeyError> {
        let path = state_dir.join(LOCK_FILE);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                like_dir(&f, state_dir);
                f
            }
            // Created by another user (root running `rollcall keys rotate --offline` leaves it
            // to the state directory's owner); reading is enough for flock.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                File::open(&path).map_err(io(&path))?
            }
            Err(e) => return Err(io(&path)(e)),
        };
        file.lock().map_err(io(&path))?;
        Ok(Self { _file: file })
    }
}

/// As root, gives a file created in the state directory to the directory's owner, so rollcalld
/// (running as its own user) can still read what root wrote.
fn like_dir(file: &File, state_dir: &Path) {
    if let Ok(meta) = std::fs::metadata(state_dir) {
        chown_like(file, &meta);
    }
}

fn chown_like(file: &File, meta: &Metadata) {
    if crate::sys::effective_uid() == 0 {
        let _ = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()));
    }
}

/// The device data key's one owner: the keys in memory, behind a lock a rotation takes.
#[derive(Debug)]
pub struct Keyring {
    state_dir: PathBuf,
    keys: RwLock<Keys>,
    /// The sealing key's fingerprint, readable while a rotation holds the keys.
    shown: std::sync::Mutex<String>,
}

impl Keyring {
    /// The key of `protected`'s state directory: finishes a rotation a crash interrupted, or
    /// creates the key (32 random bytes, mode 0600) when there is none.
    pub fn open(protected: &Protected) -> Result<Self, KeyError> {
        let lock = StateLock::acquire(&protected.state_dir)?;
        Self::open_under(&lock, protected)
    }

    /// As [`Keyring::open`], for a caller that already holds the state directory's lock.
    pub fn open_under(_lock: &StateLock, protected: &Protected) -> Result<Self, KeyError> {
        let dir = &protected.state_dir;
        remove_if_there(&dir.join(format!("{NEXT_FILE}.tmp")))?;
        let key_path = dir.join(KEY_FILE);
        let next_path = dir.join(NEXT_FILE);
        let keys = if next_path.exists() {
            let next = read_key(&next_path)?;
            let old = if key_path.exists() {
                Some(read_key(&key_path)?)
            } else {
                None
            };
            let mut keys = Keys { key: next, old };
            tracing::warn!(
                fingerprint = %fingerprint(&keys.key),
                "a key rotation was interrupted: finishing it before anything is opened"
            );
            let done = complete(
                protected,
                &protected.templates()?,
                &keys,
                TestOnlyHooks::default(),
            )?;
            keys.old = None;
            tracing::info!(
                templates = done.templates,
                roster = done.roster,
                outbox = done.outbox,
                unreadable = done.unreadable.len(),
                "interrupted key rotation finished"
            );
            keys
        } else {
            // A crash after the rename left the replaced key: nothing is sealed under it.
            shred(&dir.join(OLD_FILE))?;
            Keys::single(
                DataKey::load_or_create(&key_path).map_err(|e| KeyError::Invalid(e.to_string()))?,
            )
        };
        Ok(Self {
            state_dir: dir.clone(),
            shown: std::sync::Mutex::new(fingerprint(&keys.key)),
            keys: RwLock::new(keys),
        })
    }

    /// A keyring holding `key` and nothing on disk (tests).
    pub fn in_memory(state_dir: &Path, key: DataKey) -> Self {
        Self {
            state_dir: state_dir.to_owned(),
            shown: std::sync::Mutex::new(fingerprint(&key)),
            keys: RwLock::new(Keys::single(key)),
        }
    }

    /// The keys, for sealing and opening; hold the guard until the sealed file is written.
    /// Blocks while a rotation runs: call it on a blocking thread, never on the async runtime.
    pub fn keys(&self) -> RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The fingerprint of the key files are sealed under (never waits for a rotation: during
    /// one, the key before it).
    pub fn fingerprint(&self) -> String {
        self.shown.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Seconds since the key in use was made (its file's modification time), when known.
    pub fn age_s(&self) -> Option<u64> {
        let modified = std::fs::metadata(self.state_dir.join(KEY_FILE))
            .and_then(|m| m.modified())
            .ok()?;
        Some(modified.elapsed().map_or(0, |d| d.as_secs()))
    }

    /// Rotates the key (see the module docs): blocking, holds the key's locks throughout.
    pub fn rotate(&self, protected: &Protected) -> Result<Resealed, KeyError> {
        let hooks = TestOnlyHooks::from_env();
        let abort_after = hooks.abort_after;
        let _lock = StateLock::acquire(&self.state_dir)?;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.old.is_some() {
            // A rotation that failed half-way: finish it first.
            complete(
                protected,
                &protected.templates()?,
                &keys,
                TestOnlyHooks::default(),
            )?;
            keys.old = None;
        }
        let dir = &self.state_dir;
        // Listed before anything changes: a roster file that does not parse refuses the rotation.
        let templates = protected.templates()?;
        let owner = std::fs::metadata(dir.join(KEY_FILE)).map_err(io(&dir.join(KEY_FILE)))?;
        let new = DataKey::from_bytes(rand::random());
        write_replacing(&dir.join(NEXT_FILE), new.bytes(), &owner)?;
        let old = std::mem::replace(&mut keys.key, new);
        keys.old = Some(old);
        tracing::info!(fingerprint = %fingerprint(&keys.key), "key rotation: new key stored, re-sealing");
        if abort_after == Some(0) {
            crate::sys::kill_self();
        }
        let done = complete(protected, &templates, &keys, hooks)?;
        // Overwritten as it is dropped.
        keys.old = None;
        *self.shown.lock().unwrap_or_else(|p| p.into_inner()) = done.fingerprint.clone();
        tracing::info!(
            fingerprint = %done.fingerprint,
            templates = done.templates,
            roster = done.roster,
            outbox = done.outbox,
            unreadable = done.unreadable.len(),
            "device data key rotated"
        );
        Ok(done)
    }
}

/// Steps 2 and 3: every protected file under `keys.sealing()`, then the new key in place.
fn complete(
    protected: &Protected,
    templates: &[(String, PathBuf)],
    keys: &Keys,
    hooks: TestOnlyHooks,
) -> Result<Resealed, KeyError> {
    let mut done = reseal_all(protected, templates, keys, hooks)?;
    let dir = &protected.state_dir;
    // Every re-sealed file's rename durable before the key's: one fsync per directory.
    for d in std::mem::take(&mut done.directories) {
        store::sync_dir(&d)?;
    }
    let (next, key, old) = (dir.join(NEXT_FILE), dir.join(KEY_FILE), dir.join(OLD_FILE));
    // The old key's file stays reachable by a second name across the rename, so it can be
    // overwritten once nothing needs it (a rename alone would leave its bytes in a free block).
    remove_if_there(&old)?;
    if key.exists() {
        std::fs::hard_link(&key, &old).map_err(io(&old))?;
    }
    std::fs::rename(&next, &key).map_err(io(&next))?;
    store::sync_dir(dir)?;
    shred(&old)?;
    done.fingerprint = fingerprint(keys.sealing());
    Ok(done)
}

/// Overwrites `path` with random bytes, fsyncs, unlinks it, fsyncs its directory.
fn shred(path: &Path) -> Result<(), KeyError> {
    let mut f = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path)(e)),
    };
    f.write_all(&rand::random::<[u8; 32]>()).map_err(io(path))?;
    f.sync_all().map_err(io(path))?;
    drop(f);
    remove_if_there(path)?;
    store::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(())
}

fn reseal_all(
    p: &Protected,
    template_files: &[(String, PathBuf)],
    keys: &Keys,
    hooks: TestOnlyHooks,
) -> Result<Resealed, KeyError> {
    let mut done = Resealed::default();
    let mut count = 0usize;
    let resume = p.state_dir.join(TEST_ONLY_RESUME_FILE);
    let mut step = || {
        count += 1;
        if hooks.abort_after == Some(count) {
            crate::sys::kill_self();
        }
        if hooks.pause_after == Some(count) {
            tracing::warn!(
                count,
                "test-only: rotation paused until {} exists",
                resume.display()
            );
            while std::fs::remove_file(&resume).is_err() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    };
    let device = p.device_id.as_str();

    let roster = p.state_dir.join(ROSTER_FILE);
    remove_if_there(&tmp_of(&roster))?;
    if let Some(bytes) = store::read_sealed(&roster)?
        && reseal_store_file(keys, ROSTER_MAGIC, device, roster, &bytes, &mut done)?
    {
        done.roster += 1;
        step();
    }

    let outbox = p.state_dir.join(OUTBOX_DIR);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&outbox) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&outbox)(e)),
    };
    files.sort();
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".sealed.tmp") {
            remove_if_there(&path)?;
            continue;
        }
        if !name.ends_with(".sealed") {
            continue;
        }
        let bytes = store::read_sealed(&path)?.unwrap_or_default();
        if reseal_store_file(keys, ENROLMENT_MAGIC, device, path, &bytes, &mut done)? {
            done.outbox += 1;
            step();
        }
    }

    let max = templates::MAGIC.len() + 12 + templates::MAX_RECORD + 16;
    for (student, path) in template_files {
        let path = path.clone();
        remove_if_there(&tmp_of(&path))?;
        let bytes = match templates::read_bounded(&path, max) {
            Ok(b) => b,
            Err(_) if !path.exists() => continue,
            Err(e) => {
                return Err(KeyError::Invalid(format!("{}: {e}", path.display())));
            }
        };
        match keys.open(|k| templates::open(k, student, &bytes).ok()) {
            Some(record) => {
                let sealed = templates::seal(keys.sealing(), student, &record)
                    .map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))?;
                replace(&path, &sealed, &mut done)?;
                done.templates += 1;
                step();
            }
            None => unreadable(&mut done, path),
        }
    }
    Ok(done)
}

/// Re-seals one file of the credentials store (the roster or an enrolment, told by `magic`)
/// under the new key: `true` when it was, `false` when neither key opens it (reported and left
/// as it is).
fn reseal_store_file(
    keys: &Keys,
    magic: &[u8; 4],
    device: &str,
    path: PathBuf,
    bytes: &[u8],
    done: &mut Resealed,
) -> Result<bool, KeyError> {
    match keys.open(|k| store::open(k, magic, device, bytes)) {
        Some(plain) => {
            let sealed = store::seal(keys.sealing(), magic, device, &plain);
            replace(&path, &sealed, done)?;
            Ok(true)
        }
        None => {
            unreadable(done, path);
            Ok(false)
        }
    }
}

fn unreadable(done: &mut Resealed, path: PathBuf) {
    tracing::warn!(file = %path.display(), "opens with neither the old nor the new data key: left as it is");
    done.unreadable.push(path);
}

fn tmp_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically, keeping its owner and mode; its directory is
/// fsync'd later, once for all the files in it ([`complete`]).
fn replace(path: &Path, bytes: &[u8], done: &mut Resealed) -> Result<(), KeyError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    write_tmp_and_rename(path, bytes, &meta)?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    if !done.directories.contains(&dir) {
        done.directories.push(dir);
    }
    Ok(())
}

/// Writes `<path>.tmp` (owner and mode of `like`), fsyncs it, renames it to `path`, fsyncs the
/// directory (the new key file: durable before anything is sealed under it).
fn write_replacing(path: &Path, bytes: &[u8], like: &Metadata) -> Result<(), KeyError> {
    write_tmp_and_rename(path, bytes, like)?;
    store::sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    Ok(())
}

fn write_tmp_and_rename(path: &Path, bytes: &[u8], like: &Metadata) -> Result<(), KeyError> {
    let tmp = tmp_of(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    chown_like(&f, like);
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn remove_if_there(path: &Path) -> Result<(), KeyError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path)(e)),
    }
}

fn read_key(path: &Path) -> Result<DataKey, KeyError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        KeyError::Invalid(format!(
            "{}: must hold exactly 32 bytes (a device data key): restore it from backup",
            path.display()
        ))
    })?;
    Ok(DataKey::from_bytes(key))
}

#[cfg(test)]
mod tests;
