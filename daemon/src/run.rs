//! `run(config, options, shutdown)`: the one entry point that starts every part of rollcalld and
//! stops them in order.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_drivers::simulated::{Presentation, Presenter};
use rollcall_drivers::{CredentialKind, ReaderKind, run_indicator, run_reader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::{Accept, ReaderInfo};
use crate::config::Config;
use crate::journal::Journal;
use crate::journal::actor::JournalHandle;
use crate::metrics::Metrics;
use crate::roster::Roster;
use crate::uplink::UplinkShell;

/// How rollcalld runs (flags, not facts about the installation).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Present a random roster card or finger to the simulated readers this often (demo).
    pub demo_every: Option<Duration>,
    /// Tell systemd when ready and feed its watchdog.
    pub systemd: bool,
}

/// Starts rollcalld and runs until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let state_dir = &config.device.state_dir;
    prepare_state_dir(state_dir)?;

    let path = config.journal_path();
    let capacity = config.journal.capacity;
    let journal = tokio::task::spawn_blocking(move || Journal::open(&path, capacity)).await??;
    tracing::info!(
        journal = journal.label(),
        epoch = journal.epoch(),
        depth = journal.depth(),
        last_seq = journal.last_seq(),
        "journal open"
    );
    let journal = JournalHandle::spawn(journal);
    let hash_key = load_or_create_key(&state_dir.join("card-hash.key"))?;
    let roster = load_roster(&config)?;
    let metrics = Arc::new(Metrics::default());
    let tracker = TaskTracker::new();
    // Readers stop first; the accept path drains what they delivered; then the uplink.
    let readers_stop = shutdown.child_token();
    let uplink_stop = CancellationToken::new();

    if !config.metrics.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("metrics.listen {}: cannot listen", config.metrics.listen))?;
        tracker.spawn(crate::metrics::serve(
            listener,
            metrics.clone(),
            uplink_stop.clone(),
        ));
    }

    let mut signal_senders = Vec::new();
    for ind in config.indicators_or_log() {
        let (tx, rx) = mpsc::channel(64);
        signal_senders.push(tx);
        let stop = uplink_stop.clone();
        tracker.spawn(async move {
            if let Err(e) = run_indicator(&ind, rx, stop).await {
                tracing::error!(error = %e, "indicator stopped");
            }
        });
    }
    let accept = Arc::new(Accept::new(
        journal.clone(),
        roster.clone(),
        hash_key,
        config.capture.duplicate_window,
        signal_senders,
        metrics.clone(),
    ));

    let presenter = Presenter::new();
    let mut accept_tasks = Vec::new();
    for reader in &config.readers {
        let (tx, rx) = mpsc::channel(1024);
        let info = ReaderInfo {
            id: reader.id.clone(),
            kind: reader.kind.as_str().to_owned(),
            simulated: crate::config::is_simulated(reader),
        };
        let a = accept.clone();
        accept_tasks.push(tracker.spawn(async move { a.run_reader(info, rx).await }));
        let (cfg, p, stop) = (reader.clone(), presenter.clone(), readers_stop.clone());
        tracker.spawn(async move {
            if let Err(e) = run_reader(&cfg, &p, tx, stop).await {
                tracing::error!(reader = %cfg.id, error = %e, "reader stopped");
            }
        });
    }

    if config.has_simulated_readers() {
        let socket = config.control_socket();
        let listener = crate::control::bind(&socket)?;
        tracing::info!(socket = %socket.display(), "control socket ready: `rollcalld tap card door-card 0462E3086C`");
        tracker.spawn(crate::control::serve(
            listener,
            presenter.clone(),
            accept.clone(),
            journal.clone(),
            readers_stop.clone(),
        ));
    }
    if let Some(every) = options.demo_every {
        tracker.spawn(demo(
            config.clone(),
            roster,
            presenter.clone(),
            every,
            readers_stop.clone(),
        ));
    }

    let uplink = UplinkShell {
        config: config.clone(),
        journal: journal.clone(),
        metrics,
        accept: accept.clone(),
        started,
    };
    let uplink_task = tracker.spawn(uplink.run(uplink_stop.clone()));

    if options.systemd {
        crate::systemd::ready();
        tracker.spawn(crate::systemd::watchdog(uplink_stop.clone()));
    }
    tracing::info!(device = %config.device.id, readers = config.readers.len(), "rollcalld running");

    tokio::select! {
        _ = shutdown.cancelled() => {}
        result = uplink_task => {
            // The uplink ended on its own: a bug or a journal failure. Stop everything.
            readers_stop.cancel();
            uplink_stop.cancel();
            tracker.close();
            tracker.wait().await;
            return match result {
                Ok(Ok(())) => Err(anyhow::anyhow!("the uplink stopped unexpectedly")),
                Ok(Err(e)) => Err(e.context("uplink failed")),
                Err(e) => Err(anyhow::anyhow!("uplink task: {e}")),
            };
        }
    }
    tracing::info!("shutting down: readers first, then the uplink");
    if options.systemd {
        crate::systemd::stopping();
    }
    readers_stop.cancel();
    drop(accept);
    for t in accept_tasks {
        let _ = t.await;
    }
    uplink_stop.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop within 10 s");
    }
    let s = *journal.stats().borrow();
    tracing::info!(
        depth = s.depth,
        last_seq = s.last_seq,
        "stopped; every accepted punch is in the journal"
    );
    Ok(())
}

/// Creates the state directory (mode 0700, whatever the umask) or checks the existing one: it
/// must belong to the user rollcalld runs as (the journal, the card-hash key and the control
/// socket live there), and nobody else may read it.
pub fn prepare_state_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state directory {}", dir.display()))?;
    }
    let meta =
        std::fs::metadata(dir).with_context(|| format!("state directory {}", dir.display()))?;
    let me = crate::sys::effective_uid();
    if meta.uid() != me {
        anyhow::bail!(
            "state directory {dir} belongs to uid {owner}, not to uid {me} that rollcalld runs as: \
             another user could read or replace the journal and the card-hash key. Give it to \
             this user (chown -R {me} {dir}), or set device.state_dir to a directory of its own \
             (the systemd unit's StateDirectory does this)",
            dir = dir.display(),
            owner = meta.uid(),
        );
    }
    if !meta.is_dir() {
        anyhow::bail!("state directory {} is not a directory", dir.display());
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making state directory {} private", dir.display()))?;
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.mode() & 0o777), "state directory was readable by others; now 0700");
    }
    Ok(())
}

/// The device's secret for hashing unknown card UIDs; created on first start (mode 0600).
fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|_| {
            anyhow::anyhow!(
                "{}: must hold exactly 32 bytes; delete it to make a new one",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key: [u8; 32] = rand::random();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

fn load_roster(config: &Config) -> anyhow::Result<Roster> {
    let Some(path) = &config.roster.path else {
        tracing::warn!("no roster.path configured: every credential will be reported as unknown");
        return Ok(Roster::default());
    };
    if !path.exists() && config.has_simulated_readers() {
        std::fs::write(path, demo_roster_text())
            .with_context(|| format!("writing demo roster {}", path.display()))?;
        tracing::info!(roster = %path.display(), "wrote a demo roster of 40 students");
    }
    let roster = Roster::load(path)?;
    let (cards, fingers) = roster.len();
    tracing::info!(roster = %path.display(), cards, fingers, "roster loaded");
    Ok(roster)
}

/// Student `i` of the demo roster has card `0000000i` (5 bytes, as an RDM6300 reports) and
/// fingerprint slot `i`.
fn demo_roster_text() -> String {
    let mut cards = String::from("version = 1\n[cards]\n");
    let mut fingers = String::from("[fingerprints]\n");
    for i in 1..=40u32 {
        cards.push_str(&format!("\"00{i:08X}\" = \"DEMO{i:03}\"\n"));
        fingers.push_str(&format!("\"{i}\" = \"DEMO{i:03}\"\n"));
    }
    cards + &fingers
}

/// Presents random credentials to the simulated readers: 9 in 10 from the roster, the rest
/// unknown.
async fn demo(
    config: Config,
    _roster: Roster,
    presenter: Presenter,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for reader in &config.readers {
            let i: u32 = rand::random_range(1..=44);
            if !crate::config::is_simulated(reader) {
                continue;
            }
            // UIDs of the length each card family reports; the demo roster uses 5-byte ones.
            let what = match (reader.kind.credential(), reader.kind) {
                (CredentialKind::Fingerprint, _) => {
                    Presentation::Finger((i <= 40).then_some(i as u16))
                }
                (CredentialKind::Card, ReaderKind::Wiegand) => {
                    Presentation::Card(i.to_be_bytes()[1..].to_vec())
                }
                (CredentialKind::Card, ReaderKind::Pn532) => {
                    Presentation::Card(i.to_be_bytes().to_vec())
                }
                (CredentialKind::Card, _) => {
                    let mut uid = vec![0u8];
                    uid.extend_from_slice(&i.to_be_bytes());
                    Presentation::Card(uid)
                }
            };
            presenter.present(&reader.id, what);
        }
    }
}
