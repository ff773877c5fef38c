//! `rollcall reset --factory`: crypto-shredding a gateway.
//!
//! Every stored template, the roster and the enrolment outbox are sealed with AES-256-GCM under
//! the device data key (`<state_dir>/template.key`); unknown cards are hashed under the card-hash
//! key (`card-hash.key`). Destroying those two keys makes everything sealed under them
//! unreadable wherever a copy of it survives (a backup, a block the SD card's wear levelling kept):
//! the key destruction is what counts, overwriting is only a best effort.
//!
//! The sequence, each step only after the one before succeeded:
//!
//! 1. If rollcalld answers on its control socket and the journal holds unacknowledged punches,
//!    refuse unless `--export DIR` or `--force` (nothing is stopped yet).
//! 2. Stop rollcalld: `systemctl stop rollcalld` when the unit is active (it would be restarted
//!    otherwise: `Restart=always`), else refuse while a daemon still answers.
//! 3. Read the journal (closed now) with the salvage reader: still unacknowledged punches are
//!    refused again, or written to `--export DIR` as CBOR batches (`rollcall journal salvage`'s
//!    format), or dropped with `--force`.
//! 4. Empty each EF01 module's library (the module keeps its templates in clear in its own flash)
//!    directly on its serial port, which the stopped daemon no longer holds. Done here rather
//!    than through the daemon's reader task so that a reset works on a gateway whose daemon
//!    cannot start (a damaged journal, a lost key), and so that no capture happens between the
//!    export and the erase. A module that does not answer is reported, and the reset goes on.
//! 5. Destroy the keys: overwrite with random bytes, fsync, unlink, fsync the directory.
//! 6. Remove the sealed roster, the sealed templates, the outbox and the journal (the journal is
//!    overwritten first too: it names students in clear).
//!
//! What it does not erase: the TLS client key and certificate and the CA in /etc/rollcall (unless
//! `--certificates`), the configuration, logs in the journal of systemd, and whatever the SD card's
//! flash translation layer keeps of old blocks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_drivers::ReaderKind;
use rollcall_drivers::ef01::Ef01;

use crate::status::{DEFAULT_CONFIG, load_config};

const EXAMPLES: &str = "\
Examples:
  rollcall reset --factory                        # refused while punches are unacknowledged
  rollcall reset --factory --export /root/room-101-punches
  rollcall reset --factory --force --certificates # decommission: drops unsent punches too

Afterwards no stored template, roster or enrolment can be decrypted: the device data key and the
card-hash key are destroyed, the sealed files and the journal removed, each fingerprint module's
library emptied. Not erased: the configuration, and the TLS key and certificates in /etc/rollcall
unless --certificates. Overwriting files on an SD card is no guarantee (wear levelling keeps old
blocks): the destroyed keys are what makes the rest unreadable. To use the gateway again, run
rollcall provision.";

/// `rollcall reset`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Destroy the keys, credentials and journal (the only kind of reset there is).
    #[arg(long, required = true)]
    factory: bool,
    /// First write the unacknowledged punches here (as `rollcall journal salvage --out`).
    #[arg(long)]
    export: Option<PathBuf>,
    /// Drop unacknowledged punches without exporting them.
    #[arg(long)]
    force: bool,
    /// Also remove the TLS client key, certificate and CA file named in the config.
    #[arg(long)]
    certificates: bool,
    /// rollcalld's configuration (state directory, readers, TLS files).
    #[arg(short, long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

/// Runs `rollcall reset`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let socket = config.control_socket();
    let may_drop = args.export.is_some() || args.force;

    if let Ok(reply) = rollcall_daemon::control::send(&socket, "status").await {
        let depth = reply
            .split_whitespace()
            .find_map(|w| w.strip_prefix("depth="))
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or(0);
        if depth > 0 && !may_drop {
            anyhow::bail!(unacked_refusal(depth));
        }
        stop_daemon(&socket).await?;
    }

    let journal = config.journal_path();
    let mut problems = Vec::new();
    if journal.exists() {
        let salvaged = crate::journal::recover(&journal, None)?;
        let depth = salvaged.punches.len() as u64;
        if depth > 0 {
            match (&args.export, args.force) {
                (Some(dir), _) => {
                    let epoch = salvaged
                        .epoch
                        .context("the journal's epoch is unreadable: export with rollcall journal salvage --epoch, then --force")?;
                    let batches =
                        crate::journal::batches(&config.device.id, epoch, &salvaged.punches, 2000);
                    let files = crate::journal::write_out(
                        dir,
                        &journal,
                        &config.device.id,
                        &salvaged,
                        &batches,
                    )?;
                    println!(
                        "exported {depth} unacknowledged punches to {} ({} files)",
                        dir.display(),
                        files.len()
                    );
                    if !salvaged.missing().is_empty() {
                        println!("note: some seqs were unreadable: see the summary");
                    }
                }
                (None, true) => println!("dropping {depth} unacknowledged punches (--force)"),
                (None, false) => {
                    anyhow::bail!(
                        "{} (rollcalld is stopped now: start it again with systemctl start rollcalld)",
                        unacked_refusal(depth)
                    )
                }
            }
        }
    }

    for reader in config
        .readers
        .iter()
        .filter(|r| r.kind == ReaderKind::Ef01 && !r.simulate)
    {
        let Some(port) = &reader.port else { continue };
        match empty_module(reader, port).await {
            Ok(()) => println!("{}: fingerprint module library emptied", reader.id),
            Err(e) => problems.push(format!(
                "{}: the module's library was not emptied ({e:#}): it still holds its templates \
                 in clear; connect it and run this again, or erase it elsewhere",
                reader.id
            )),
        }
    }

    let state = &config.device.state_dir;
    // template.key.next and .old: what an interrupted key rotation (rollcall keys rotate) left.
    for key in [
        "template.key",
        "template.key.next",
        "template.key.next.tmp",
        "template.key.old",
        "card-hash.key",
    ] {
        let path = state.join(key);
        if shred(&path).with_context(|| format!("destroying {}", path.display()))? {
            println!("destroyed {}", path.display());
        }
    }
    for dir in ["templates", "outbox"] {
        remove_tree(&state.join(dir), &mut problems);
    }
    for file in ["roster.sealed", "roster.sealed.tmp"] {
        remove(&state.join(file), &mut problems);
    }
    if journal.exists() {
        match shred(&journal) {
            Ok(_) => println!("removed {}", journal.display()),
            Err(e) => problems.push(format!("{}: {e:#}", journal.display())),
        }
    }
    if args.certificates
        && let Some(tls) = &config.mqtt.tls
    {
        for f in [&tls.key_file, &tls.cert_file, &tls.ca_file] {
            match shred(f) {
                Ok(true) => println!("removed {}", f.display()),
                Ok(false) => {}
                Err(e) => problems.push(format!("{}: {e:#}", f.display())),
            }
        }
    }
    sync_dir(state);
    if problems.is_empty() {
        println!(
            "factory reset done: nothing stored on this gateway can be decrypted any more; run \
             rollcall provision to use it again"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for p in &problems {
            eprintln!("problem: {p}");
        }
        println!("factory reset done except for the problems above: the keys are destroyed");
        Ok(ExitCode::from(1))
    }
}

fn unacked_refusal(depth: u64) -> String {
    format!(
        "the journal holds {depth} punches the centre has not acknowledged: let rollcalld send \
         them (rollcall status shows the depth), or keep them with --export DIR (publish them \
         later with rollcall journal salvage --publish), or drop them with --force"
    )
}

/// Stops rollcalld through systemd (which would restart it otherwise), and waits until its
/// control socket no longer answers.
async fn stop_daemon(socket: &Path) -> anyhow::Result<()> {
    let under_systemd = std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", "rollcalld"])
        .status()
        .is_ok_and(|s| s.success());
    if !under_systemd {
        anyhow::bail!(
            "rollcalld is running (it answers on {}), not as the systemd unit: stop it first, \
             then run this again",
            socket.display()
        );
    }
    let status = std::process::Command::new("systemctl")
        .args(["stop", "rollcalld"])
        .status()
        .context("systemctl stop rollcalld")?;
    anyhow::ensure!(
        status.success(),
        "systemctl stop rollcalld failed ({status}): run rollcall reset as root"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while rollcall_daemon::control::send(socket, "status")
        .await
        .is_ok()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "rollcalld still answers 30 s after systemctl stop: stop it by hand"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("stopped rollcalld");
    Ok(())
}

/// Empty on the module at `port`, then checks that no slot is used.
async fn empty_module(reader: &rollcall_drivers::ReaderConfig, port: &Path) -> anyhow::Result<()> {
    use tokio_serial::SerialPortBuilderExt;
    let baud = reader.baud.unwrap_or(reader.kind.default_baud());
    let serial = tokio_serial::new(port.to_string_lossy(), baud)
        .open_native_async()
        .with_context(|| format!("opening {}", port.display()))?;
    let mut dev = Ef01::new(serial);
    if let Some(a) = reader.address {
        dev = dev.with_address(a);
    }
    let work = async {
        dev.wait_ready(Duration::from_secs(2)).await?;
        dev.verify_password(reader.password.unwrap_or(0)).await?;
        dev.empty_library().await?;
        dev.template_count().await
    };
    let left = tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .context("no answer within 20 s")??;
    anyhow::ensure!(left == 0, "{left} templates still stored after Empty");
    Ok(())
}

/// Overwrites `path` with random bytes, syncs, unlinks, syncs its directory. `false` if absent.
fn shred(path: &Path) -> anyhow::Result<bool> {
    use std::io::Write;
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        let mut left = len;
        let mut block = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            rand::fill(&mut block[..n]);
            f.write_all(&block[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    std::fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(true)
}

fn remove(path: &Path, problems: &mut Vec<String>) {
    match std::fs::remove_file(path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("{}: {e}", path.display())),
    }
}

fn remove_tree(path: &Path, problems: &mut Vec<String>) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => println!("removed {}/", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(format!("{}: {e}", path.display())),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
