//! One soak gateway: the real rollcalld on a state directory of a chosen kind, restartable
//! after kill -9 or a power cut, and the lanes of taps that keep its readers busy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::powerfs::PowerFs;
use crate::rollcalld::{GatewayOptions, Rollcalld, parse_reply};

/// Where a gateway keeps its state, and so which faults it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// The temporary directory's own file system.
    Disk,
    /// [`PowerFs`]: unsynced writes are lost at a power cut.
    PowerLoss,
    /// A small tmpfs that a filler file can make full.
    SmallTmpfs,
}

/// What the taps of one gateway were told, keyed by (epoch, seq).
#[derive(Debug, Default)]
pub struct Answers {
    /// Stored punches (`accepted` and `unknown` replies): subject as printed.
    pub stored: BTreeMap<(u64, u64), String>,
    /// A seq answered twice within one epoch (must never happen).
    pub reused: Vec<(u64, u64)>,
    /// `storage_full` replies.
    pub storage_full: u64,
    /// Other replies (`duplicate`, `failed`) and errors.
    pub other: u64,
}

/// A gateway of the soak.
#[derive(Debug)]
pub struct Gateway {
    /// `device.id`.
    pub id: String,
    /// Storage kind.
    pub storage: Storage,
    dir: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    state: PathBuf,
    powerfs: Option<PowerFs>,
    tmpfs: bool,
    /// libfaketime's offset file when the clock can be stepped.
    clock_file: Option<PathBuf>,
    process: Option<Rollcalld>,
    /// The journal epoch the gateway reported at its last start.
    pub epoch: Arc<AtomicU64>,
    /// Replies so far.
    pub answers: Arc<Mutex<Answers>>,
}

/// libfaketime's preload library, if installed (Debian's faketime package); its thread-safe
/// build first, as rollcalld is multithreaded.
pub fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl Gateway {
    /// Prepares (does not start) gateway `id` in `dir` on `storage`; `clock` steps its wall
    /// clock through libfaketime.
    pub fn new(
        dir: &Path,
        id: &str,
        broker_port: u16,
        storage: Storage,
        clock: bool,
    ) -> anyhow::Result<Gateway> {
        std::fs::create_dir_all(dir)?;
        let state = dir.join("state");
        let mut powerfs = None;
        let mut tmpfs = false;
        match storage {
            Storage::Disk => {}
            Storage::PowerLoss => {
                powerfs = Some(PowerFs::mount(&dir.join("disk"), &state)?);
            }
            Storage::SmallTmpfs => {
                std::fs::create_dir_all(&state)?;
                let out = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=96m,mode=0700", "tmpfs"])
                    .arg(&state)
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "mounting a tmpfs at {} failed ({}): the disk-full fault needs root (CI runs as root)",
                    state.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                tmpfs = true;
            }
        }
        let mut opts = GatewayOptions::new(broker_port);
        opts.device_id = id.to_owned();
        opts.readers = Some(
            (0..LANES)
                .map(|r| format!("[[reader]]\nid = \"c{r}\"\nkind = \"simulated-card\"\n"))
                .chain([
                    "[[reader]]\nid = \"door-finger\"\nkind = \"simulated-fingerprint\"\n".into(),
                ])
                .collect(),
        );
        let config = opts.write(dir)?;
        // The control socket lives outside the state directory: on the power-loss file system
        // it would be a FUSE inode; on the full tmpfs it could not be created.
        let socket = dir.join("control.sock");
        let mut text = std::fs::read_to_string(&config)?;
        text.push_str(&format!("[control]\nsocket = \"{}\"\n", socket.display()));
        std::fs::write(&config, text)?;
        let clock_file = if clock {
            let f = dir.join("faketime");
            std::fs::write(&f, "+0\n")?;
            Some(f)
        } else {
            None
        };
        Ok(Gateway {
            id: id.to_owned(),
            storage,
            dir: dir.to_owned(),
            config,
            socket,
            state,
            powerfs,
            tmpfs,
            clock_file,
            process: None,
            epoch: Arc::default(),
            answers: Arc::default(),
        })
    }

    /// Starts rollcalld (again) and records its epoch.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let preload;
        let mut envs: Vec<(&str, &str)> = Vec::new();
        if let (Some(file), Some(lib)) = (&self.clock_file, libfaketime()) {
            preload = lib.to_string_lossy().into_owned();
            envs.extend([
                ("LD_PRELOAD", preload.as_str()),
                ("FAKETIME_TIMESTAMP_FILE", file.to_str().unwrap_or_default()),
                ("FAKETIME_CACHE_DURATION", "1"),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ("FAKETIME_DONT_RESET", "1"),
            ]);
        }
        let p = Rollcalld::start_at(
            &crate::binaries::rollcalld(),
            &self.config,
            &self.socket,
            &envs,
        )
        .await?;
        let status = p.command("status").await?;
        let epoch = status
            .split_whitespace()
            .find_map(|w| w.strip_prefix("epoch="))
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        self.epoch.store(epoch, Ordering::Relaxed);
        self.process = Some(p);
        Ok(())
    }

    /// kill -9 (no-op when not running).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// Power cut: kill -9, drop every unsynced write, remount. Returns the bytes dropped.
    pub fn power_cut(&mut self) -> anyhow::Result<u64> {
        self.kill9();
        let fs = self
            .powerfs
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("{} is not on the power-loss file system", self.id))?;
        Ok(fs.cut()?.dropped_bytes)
    }

    /// Steps the wall clock by `offset` (libfaketime syntax, e.g. `+2h`, `-90m`, `+0`).
    pub fn set_clock(&self, offset: &str) -> anyhow::Result<bool> {
        match &self.clock_file {
            Some(f) if libfaketime().is_some() => {
                std::fs::write(f, format!("{offset}\n"))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Whether its clock can be stepped.
    pub fn has_clock(&self) -> bool {
        self.clock_file.is_some() && libfaketime().is_some()
    }

    /// Fills the state tmpfs; returns the filler's path (remove it to free the space).
    pub fn fill_disk(&self) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(self.tmpfs, "{} has no tmpfs", self.id);
        let path = self.state.join("filler");
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0u8; 256 * 1024];
        use std::io::Write;
        for _ in 0..4096 {
            match f.write(&chunk) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(path)
    }

    /// The journal counters (last_seq, acked, depth), if it answers.
    pub async fn journal(&self) -> Option<(u64, u64, u64)> {
        match &self.process {
            Some(p) => p.journal().await.ok(),
            None => None,
        }
    }

    /// The log's last lines.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("rollcalld.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Runs one lane of taps on card reader `c<lane>` (lane 0 also taps the finger reader)
    /// until `stop`, pausing `gap_us` between taps; replies go into [`Gateway::answers`].
    pub fn lane(
        &self,
        lane: usize,
        stop: Arc<AtomicBool>,
        gap_us: Arc<AtomicU64>,
        counter: Arc<AtomicU64>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let socket = self.socket.clone();
        let answers = self.answers.clone();
        let epoch = self.epoch.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let k = counter.fetch_add(1, Ordering::Relaxed);
                let line = tap_line(lane, k);
                let reply = tokio::time::timeout(Duration::from_secs(5), command(&socket, &line))
                    .await
                    .ok()
                    .and_then(Result::ok);
                match reply.as_deref().and_then(parse_reply) {
                    Some(r) if ["accepted", "unknown"].contains(&r.outcome.as_str()) => {
                        let mut a = answers.lock().unwrap_or_else(|p| p.into_inner());
                        let key = (epoch.load(Ordering::Relaxed), r.seq.unwrap_or(0));
                        if a.stored.insert(key, r.subject).is_some() {
                            a.reused.push(key);
                        }
                    }
                    Some(r) if r.outcome == "storage_full" => {
                        answers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .storage_full += 1;
                    }
                    Some(_) => {
                        answers.lock().unwrap_or_else(|p| p.into_inner()).other += 1;
                    }
                    // Down (killed, cut, restarting): try again shortly.
                    None => tokio::time::sleep(Duration::from_millis(20)).await,
                }
                let gap = gap_us.load(Ordering::Relaxed);
                if gap > 0 {
                    tokio::time::sleep(Duration::from_micros(gap)).await;
                }
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        drop(self.powerfs.take());
        if self.tmpfs {
            let _ = Command::new("umount").arg("-l").arg(&self.state).status();
        }
    }
}

/// Card readers per gateway, tapped concurrently (group commits).
pub const LANES: usize = 3;

/// The k-th tap of a lane: mostly cards never seen before (ledger outcome unknown_credential),
/// with S001 by card and by finger and S002 by card among them.
fn tap_line(lane: usize, k: u64) -> String {
    match k % 10 {
        0 => format!("card c{lane} 0000000001"),
        5 if lane == 0 => "finger door-finger 1".into(),
        7 => format!("card c{lane} 0000000002"),
        _ => format!("card c{lane} {:010X}", 0x10_0000 + k),
    }
}

async fn command(socket: &Path, line: &str) -> anyhow::Result<String> {
    let stream = UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{line}\n").as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no reply"))
}

/// Whether a ledger subject is the punch a tap's reply described (`student=S001` is `S001`;
/// `unknown-card=<first bytes>` is `card:<all bytes>`; `unknown-finger` is `finger:unknown`).
pub fn same_subject(reply: &str, ledger: &str) -> bool {
    match (
        reply.strip_prefix("student="),
        reply.strip_prefix("unknown-card="),
    ) {
        (Some(s), _) => ledger == s,
        (_, Some(h)) => ledger.starts_with(&format!("card:{h}")),
        _ => reply == "unknown-finger" && ledger == "finger:unknown",
    }
}
