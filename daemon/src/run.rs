//! `run(config, options, shutdown)`: the one entry point that starts every part of rollcalld and
//! stops them in order.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rollcall_drivers::indicator::AuraWiring;
use rollcall_drivers::simulated::Presenter;
use rollcall_drivers::{ReaderWiring, run_indicator, run_reader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
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
    let journal = open_journal(&config).await?;
    let hash_key = load_or_create_key(&state_dir.join("card-hash.key"))?;
    // Before anything opens a sealed file: finishes a key rotation a crash interrupted.
    let protected = crate::keys::Protected::from_config(&config);
    let keyring = Arc::new(crate::keys::Keyring::open(&protected)?);
    let roster = load_roster(&config, &keyring)?;
    let metrics = Arc::new(Metrics::default());
    if let Some(tls) = &config.mqtt.tls {
        metrics.watch_client_certificate(tls.cert_file.clone());
    }
    let mut tasks = Tasks::new(&shutdown);

    if !config.metrics.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
            .await
            .with_context(|| format!("metrics.listen {}: cannot listen", config.metrics.listen))?;
        tasks.spawn_late(crate::metrics::serve(
            listener,
            metrics.clone(),
            tasks.late_stop(),
        ));
    }
    // Each `aura` indicator is linked to its reader here, explicitly.
    let mut aura = AuraWiring::new(&config.indicators);
    let signals = tasks.spawn_indicators(&config, &aura);
    let accept = Arc::new(Accept::new(
        journal.clone(),
        roster,
        hash_key,
        config.capture.duplicate_window,
        signals,
        metrics.clone(),
    ));
    let crate::credentials::Wiring {
        mut ports,
        link,
        enroller,
        actor,
    } = crate::credentials::wire(&config, &keyring, &accept, &metrics)?;
    tasks.spawn_late(actor.run(tasks.late_stop()));
    let presenter = Presenter::new();
    tasks.spawn_readers(&config, &accept, &presenter, &mut aura, &mut ports);
    let control = crate::control::Control {
        presenter: presenter.clone(),
        accept: accept.clone(),
        journal: journal.clone(),
        enroller,
        metrics: metrics.clone(),
        keyring,
        protected,
    };
    tasks.spawn_control(&config, &options, control)?;

    let uplink = UplinkShell {
        config: config.clone(),
        journal: journal.clone(),
        metrics,
        signals: accept.signals(),
        reader_health: accept.reader_health(),
        started,
        credentials: Some(link),
    };
    let uplink_task = tasks.spawn_late(uplink.run(tasks.late_stop()));
    if options.systemd {
        crate::systemd::ready();
        tasks.spawn_late(crate::systemd::watchdog(tasks.late_stop()));
    }
    tracing::info!(device = %config.device.id, readers = config.readers.len(), "rollcalld running");

    tokio::select! {
        _ = shutdown.cancelled() => {}
        result = uplink_task => {
            // The uplink ended on its own: a bug or a journal failure. Stop everything.
            tasks.stop_at_once().await;
            return Err(match result {
                Ok(Ok(())) => anyhow::anyhow!("the uplink stopped unexpectedly"),
                Ok(Err(e)) => e.context("uplink failed"),
                Err(e) => anyhow::anyhow!("uplink task: {e}"),
            });
        }
    }
    tracing::info!("shutting down: readers first, then the uplink");
    if options.systemd {
        crate::systemd::stopping();
    }
    drop(accept);
    tasks.stop_in_order().await;
    let s = *journal.stats().borrow();
    tracing::info!(
        depth = s.depth,
        last_seq = s.last_seq,
        "stopped; every accepted punch is in the journal"
    );
    Ok(())
}

/// Opens the journal on a blocking thread and hands it to its actor.
async fn open_journal(config: &Config) -> anyhow::Result<JournalHandle> {
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
    Ok(JournalHandle::spawn(journal))
}

/// rollcalld's tasks, in two groups that stop in order. Early: what produces punches (readers,
/// the control socket, the demo ticker). Late: what serves them (indicators, the uplink,
/// metrics, the watchdog). Between the two, the accept path drains what the readers delivered,
/// so every punch a reader read is journaled and signalled before the indicators go dark.
struct Tasks {
    tracker: TaskTracker,
    early_stop: CancellationToken,
    late_stop: CancellationToken,
    /// The accept path's task per reader; each ends when its reader's channel closes.
    accepting: Vec<JoinHandle<()>>,
}

impl Tasks {
    fn new(shutdown: &CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            early_stop: shutdown.child_token(),
            late_stop: CancellationToken::new(),
            accepting: Vec::new(),
        }
    }

    fn early_stop(&self) -> CancellationToken {
        self.early_stop.clone()
    }

    fn late_stop(&self) -> CancellationToken {
        self.late_stop.clone()
    }

    fn spawn_late<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// One task per configured indicator (a log indicator when none is); answers the senders
    /// the accept path signals them through.
    fn spawn_indicators(
        &self,
        config: &Config,
        aura: &AuraWiring,
    ) -> Vec<mpsc::Sender<rollcall_drivers::Signal>> {
        let mut senders = Vec::new();
        for ind in config.indicators_or_log() {
            let (tx, rx) = mpsc::channel(64);
            senders.push(tx);
            let stop = self.late_stop();
            let link = aura.link_for(&ind);
            self.tracker.spawn(async move {
                if let Err(e) = run_indicator(&ind, link, rx, stop).await {
                    tracing::error!(error = %e, "indicator stopped");
                }
            });
        }
        senders
    }

    /// Two tasks per configured reader: the driver, and the accept path serving its events.
    fn spawn_readers(
        &mut self,
        config: &Config,
        accept: &Arc<Accept>,
        presenter: &Presenter,
        aura: &mut AuraWiring,
        ports: &mut std::collections::HashMap<String, rollcall_drivers::LibraryPort>,
    ) {
        for reader in &config.readers {
            let (tx, rx) = mpsc::channel(1024);
            let info = ReaderInfo {
                id: reader.id.clone(),
                kind: reader.kind.as_str().to_owned(),
                simulated: crate::config::is_simulated(reader),
            };
            let a = accept.clone();
            self.accepting.push(
                self.tracker
                    .spawn(async move { a.run_reader(info, rx).await }),
            );
            let wiring = ReaderWiring::for_config(reader, presenter)
                .with_aura(aura.take_port(&reader.id))
                .with_library(ports.remove(&reader.id));
            let (cfg, stop) = (reader.clone(), self.early_stop());
            self.tracker.spawn(async move {
                if let Err(e) = run_reader(&cfg, wiring, tx, stop).await {
                    tracing::error!(reader = %cfg.id, error = %e, "reader stopped");
                }
            });
        }
    }

    /// The control socket (status, enrolment, and with simulated readers `rollcalld tap
    /// ...`); with `--demo-every`, the demo ticker.
    fn spawn_control(
        &self,
        config: &Config,
        options: &RunOptions,
        control: crate::control::Control,
    ) -> anyhow::Result<()> {
        let socket = config.control_socket();
        let listener = crate::control::bind(&socket)?;
        tracing::info!(socket = %socket.display(), "control socket ready: `rollcalld tap card door-card 0462E3086C`, `enrol <reader> <student>`");
        let presenter = control.presenter.clone();
        self.tracker
            .spawn(crate::control::serve(listener, control, self.early_stop()));
        if let Some(every) = options.demo_every {
            self.tracker.spawn(crate::demo::ticker(
                config.clone(),
                presenter,
                every,
                self.early_stop(),
            ));
        }
        Ok(())
    }

    /// The orderly stop: readers first, then the accept path drains (the caller has dropped
    /// its own handle on it), then everything else, waiting at most 10 s.
    async fn stop_in_order(self) {
        self.early_stop.cancel();
        for t in self.accepting {
            let _ = t.await;
        }
        self.late_stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not stop within 10 s");
        }
    }

    /// Stops everything at once (the uplink already failed: nothing would carry punches out).
    async fn stop_at_once(self) {
        self.early_stop.cancel();
        self.late_stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
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

fn load_roster(config: &Config, keyring: &crate::keys::Keyring) -> anyhow::Result<Roster> {
    let (crate::config::RosterSource::File, Some(path)) =
        (config.roster.source, &config.roster.path)
    else {
        // The centre's roster, sealed in the state directory, is installed by the credentials
        // actor before the readers start.
        return Ok(Roster::default());
    };
    if !path.exists() && config.has_simulated_readers() {
        crate::demo::write_roster(path)?;
    }
    let roster = Roster::load_with_templates(
        path,
        keyring.keys().sealing(),
        config.capture.match_threshold,
    )?;
    let (cards, fingers) = roster.len();
    let (students, templates) = roster.templates().map_or((0, 0), |t| t.len());
    tracing::info!(roster = %path.display(), cards, fingers, students, templates, "roster loaded");
    Ok(roster)
}
