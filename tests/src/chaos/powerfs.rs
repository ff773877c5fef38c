//! A FUSE file system that loses power: a passthrough to a backing directory whose file writes
//! stay in this process's memory until the file is fsync'd (or fdatasync'd), the way
//! [LazyFS](https://github.com/dsrhaslab/lazyfs) keeps them, so a power cut can drop exactly
//! what the kernel would still have held in its page cache.
//!
//! * Data: the first open of a file reads it from the backing directory into memory; reads and
//!   writes then use the copy (opened `direct_io`, so the kernel's page cache never holds our
//!   pages); `fsync` writes the file's dirty 4 KiB pages and its length to the backing file.
//!   Nothing else (not `flush`, not `close`) makes data durable.
//! * Names: create, mkdir, unlink, rmdir and rename go to the backing directory at once, as on a
//!   file system that journals metadata (ext4 `data=ordered`): after a cut a file created but
//!   never synced exists with the data of its last fsync (empty if none).
//! * [`PowerFs::cut`]: the daemon using it must already be dead (kill -9); the mount is
//!   detached and its memory, with every unsynced byte, thrown away; a fresh mount of the
//!   backing directory takes its place, as the disk after the power comes back.
//!
//! Pure Rust ([`fuser`] without libfuse); mounting uses mount(2), so it needs root (CI runs as
//! root), falling back to `fusermount3` (Debian's fuse3) elsewhere.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use fuser::{
    BackgroundSession, FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow,
};

const PAGE: u64 = 4096;
const TTL: Duration = Duration::ZERO;

/// Counters shared between the mounted file system and the test.
#[derive(Debug, Default)]
struct Counters {
    /// Bytes written and not yet synced (dirty pages times the page size).
    unsynced: AtomicU64,
    /// fsync calls served.
    fsyncs: AtomicU64,
}

/// A mounted power-losing file system over a backing directory.
#[derive(Debug)]
pub struct PowerFs {
    backing: PathBuf,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
    counters: Arc<Counters>,
}

/// What a [`PowerFs::cut`] threw away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// Unsynced bytes dropped (whole dirty pages).
    pub dropped_bytes: u64,
    /// fsyncs served since the mount.
    pub fsyncs: u64,
}

impl PowerFs {
    /// Mounts `backing` at `mountpoint` (both created if missing).
    pub fn mount(backing: &Path, mountpoint: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let mut me = PowerFs {
            backing: backing.to_owned(),
            mountpoint: mountpoint.to_owned(),
            session: None,
            counters: Arc::default(),
        };
        me.attach()?;
        Ok(me)
    }

    fn attach(&mut self) -> anyhow::Result<()> {
        self.counters = Arc::default();
        let fs = Passthrough::new(self.backing.clone(), self.counters.clone());
        let session = fuser::spawn_mount2(
            fs,
            &self.mountpoint,
            &[MountOption::FSName("rollcall-powerfs".into())],
        )
        .with_context(|| {
            format!(
                "mounting the power-loss FUSE file system at {} (needs /dev/fuse and root, or \
                 fusermount3 from Debian's fuse3: scripts/install-deps.sh installs it)",
                self.mountpoint.display()
            )
        })?;
        self.session = Some(session);
        Ok(())
    }

    /// Bytes written and not yet synced.
    pub fn unsynced(&self) -> u64 {
        self.counters.unsynced.load(Ordering::Relaxed)
    }

    /// The power cut: unmounts, dropping every unsynced write, and mounts the backing
    /// directory again. Kill the processes using the mount first.
    pub fn cut(&mut self) -> anyhow::Result<Cut> {
        let cut = Cut {
            dropped_bytes: self.unsynced(),
            fsyncs: self.counters.fsyncs.load(Ordering::Relaxed),
        };
        drop(self.session.take());
        // The detached mount's thread ends on its own; wait until the path is ours again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_mounted(&self.mountpoint) {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{} still mounted 10 s after the cut",
                self.mountpoint.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.attach()?;
        Ok(cut)
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        drop(self.session.take());
    }
}

fn is_mounted(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(&*path.to_string_lossy()))
    })
}

/// A file's contents as the application sees them, and which pages the backing file lacks.
#[derive(Debug, Default)]
struct Cached {
    data: Vec<u8>,
    dirty: BTreeSet<u64>,
}

#[derive(Debug)]
struct Passthrough {
    backing: PathBuf,
    counters: Arc<Counters>,
    paths: HashMap<u64, PathBuf>,
    inos: HashMap<PathBuf, u64>,
    next_ino: u64,
    files: HashMap<u64, Cached>,
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl Passthrough {
    fn new(backing: PathBuf, counters: Arc<Counters>) -> Self {
        let mut me = Passthrough {
            backing,
            counters,
            paths: HashMap::new(),
            inos: HashMap::new(),
            next_ino: fuser::FUSE_ROOT_ID + 1,
            files: HashMap::new(),
        };
        me.paths.insert(fuser::FUSE_ROOT_ID, PathBuf::new());
        me.inos.insert(PathBuf::new(), fuser::FUSE_ROOT_ID);
        me
    }

    fn real(&self, ino: u64) -> Option<PathBuf> {
        self.paths.get(&ino).map(|p| self.backing.join(p))
    }

    fn ino_of(&mut self, rel: PathBuf) -> u64 {
        if let Some(&ino) = self.inos.get(&rel) {
            return ino;
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.paths.insert(ino, rel.clone());
        self.inos.insert(rel, ino);
        ino
    }

    fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.paths.get(&parent).map(|p| p.join(name))
    }

    fn attr(&self, ino: u64) -> std::io::Result<FileAttr> {
        let path = self
            .real(ino)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))?;
        let m = std::fs::symlink_metadata(&path)?;
        let kind = if m.is_dir() {
            FileType::Directory
        } else if m.file_type().is_symlink() {
            FileType::Symlink
        } else {
            FileType::RegularFile
        };
        let size = self
            .files
            .get(&ino)
            .map_or(m.len(), |c| c.data.len() as u64);
        let time = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(m.atime()),
            mtime: time(m.mtime()),
            ctime: time(m.ctime()),
            crtime: time(m.ctime()),
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    /// Loads the file into memory if it is not there yet.
    fn load(&mut self, ino: u64) -> std::io::Result<&mut Cached> {
        if !self.files.contains_key(&ino) {
            let path = self
                .real(ino)
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))?;
            let mut data = Vec::new();
            std::fs::File::open(path)?.read_to_end(&mut data)?;
            self.files.insert(
                ino,
                Cached {
                    data,
                    dirty: BTreeSet::new(),
                },
            );
        }
        Ok(self.files.get_mut(&ino).expect("just loaded"))
    }

    fn resize(&mut self, ino: u64, len: u64) -> std::io::Result<()> {
        let counters = self.counters.clone();
        let c = self.load(ino)?;
        let old = c.data.len() as u64;
        c.data.resize(len as usize, 0);
        // Every page between the two lengths differs from the backing file (zeros or gone);
        // the page holding the new end too.
        for page in (old.min(len) / PAGE)..=(old.max(len) / PAGE) {
            if c.dirty.insert(page) {
                counters.unsynced.fetch_add(PAGE, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn sync(&mut self, ino: u64) -> std::io::Result<()> {
        let Some(path) = self.real(ino) else {
            return Ok(());
        };
        let Some(c) = self.files.get_mut(&ino) else {
            return Ok(());
        };
        if c.dirty.is_empty() {
            return Ok(());
        }
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        let len = c.data.len() as u64;
        for &page in &c.dirty {
            let start = page * PAGE;
            if start >= len {
                continue;
            }
            let end = (start + PAGE).min(len);
            f.seek(SeekFrom::Start(start))?;
            f.write_all(&c.data[start as usize..end as usize])?;
        }
        f.set_len(len)?;
        let n = c.dirty.len() as u64;
        c.dirty.clear();
        self.counters
            .unsynced
            .fetch_sub(n * PAGE, Ordering::Relaxed);
        Ok(())
    }

    fn forget_path(&mut self, rel: &Path) {
        if let Some(ino) = self.inos.remove(rel) {
            self.paths.remove(&ino);
            if let Some(c) = self.files.remove(&ino) {
                self.counters
                    .unsynced
                    .fetch_sub(c.dirty.len() as u64 * PAGE, Ordering::Relaxed);
            }
        }
    }

    fn entry(&mut self, rel: PathBuf, reply: ReplyEntry) {
        let ino = self.ino_of(rel);
        match self.attr(ino) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

impl Filesystem for Passthrough {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match std::fs::symlink_metadata(self.backing.join(&rel)) {
            Ok(_) => self.entry(rel, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let result = (|| {
            if let (Some(mode), Some(path)) = (mode, self.real(ino)) {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let Some(size) = size {
                self.resize(ino, size)?;
            }
            self.attr(ino)
        })();
        match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let made = std::fs::create_dir(self.backing.join(&rel)).and_then(|()| {
            std::fs::set_permissions(
                self.backing.join(&rel),
                std::fs::Permissions::from_mode(mode & 0o7777),
            )
        });
        match made {
            Ok(()) => self.entry(rel, reply),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match std::fs::remove_file(self.backing.join(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        match std::fs::remove_dir(self.backing.join(&rel)) {
            Ok(()) => {
                self.forget_path(&rel);
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        let (Some(from), Some(to)) = (self.child(parent, name), self.child(newparent, newname))
        else {
            return reply.error(libc::ENOENT);
        };
        // A rename replaces the target's contents with the source's *synced* contents after a
        // cut unless the source was synced; applications sync before renaming (write, fsync,
        // rename), which is exactly what a power cut tests.
        match std::fs::rename(self.backing.join(&from), self.backing.join(&to)) {
            Ok(()) => {
                self.forget_path(&to);
                if let Some(ino) = self.inos.remove(&from) {
                    self.paths.insert(ino, to.clone());
                    self.inos.insert(to, ino);
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let loaded = if self
            .attr(ino)
            .is_ok_and(|a| a.kind == FileType::RegularFile)
        {
            if flags & libc::O_TRUNC != 0 {
                self.resize(ino, 0)
            } else {
                self.load(ino).map(|_| ())
            }
        } else {
            Ok(())
        };
        match loaded {
            Ok(()) => reply.opened(0, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.load(ino) {
            Ok(c) => {
                let start = (offset.max(0) as usize).min(c.data.len());
                let end = (start + size as usize).min(c.data.len());
                reply.data(&c.data[start..end])
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let counters = self.counters.clone();
        match self.load(ino) {
            Ok(c) => {
                let start = offset.max(0) as usize;
                let end = start + data.len();
                if c.data.len() < end {
                    c.data.resize(end, 0);
                }
                c.data[start..end].copy_from_slice(data);
                for page in (start as u64 / PAGE)..=((end.max(1) as u64 - 1) / PAGE) {
                    if c.dirty.insert(page) {
                        counters.unsynced.fetch_add(PAGE, Ordering::Relaxed);
                    }
                }
                reply.written(data.len() as u32)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _owner: u64, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        match self.sync(ino) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let Some(rel) = self.paths.get(&ino).cloned() else {
            return reply.error(libc::ENOENT);
        };
        let listing = match std::fs::read_dir(self.backing.join(&rel)) {
            Ok(rd) => rd.filter_map(Result::ok).collect::<Vec<_>>(),
            Err(e) => return reply.error(errno(&e)),
        };
        let mut entries = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for e in listing {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            let child = self.ino_of(rel.join(e.file_name()));
            entries.push((child, kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _d: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(
            1 << 24,
            1 << 23,
            1 << 23,
            1 << 20,
            1 << 19,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(rel) = self.child(parent, name) else {
            return reply.error(libc::ENOENT);
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).mode(mode & 0o7777);
        if flags & libc::O_EXCL != 0 {
            opts.create_new(true);
        } else {
            opts.create(true);
        }
        if let Err(e) = opts.open(self.backing.join(&rel)) {
            return reply.error(errno(&e));
        }
        let ino = self.ino_of(rel);
        let opened = if flags & libc::O_TRUNC != 0 {
            self.resize(ino, 0)
        } else {
            self.load(ino).map(|_| ())
        };
        match opened.and_then(|()| self.attr(ino)) {
            Ok(a) => reply.created(&TTL, &a, 0, 0, fuser::consts::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(&e)),
        }
    }
}
