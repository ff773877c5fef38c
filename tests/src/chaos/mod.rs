//! The chaos soak (issue 11): the whole system under a steady stream of taps while faults land
//! at random moments drawn from a printed seed, then a verdict read from the database.
//!
//! Topology, all real and started here: three rollcalld gateways (one on the temporary
//! directory's disk with its wall clock under libfaketime, one on [`powerfs`], one on a small
//! tmpfs), Mosquitto, `replicas` rollcall-ingest processes sharing the subscription, and
//! PostgreSQL. Each gateway's readers are tapped by [`gateway::LANES`] concurrent lanes through
//! its control socket; every `accepted`/`unknown` reply (the punch is fsync'd) is remembered.
//!
//! Faults, one at a time, at random moments ([`Fault`]): kill -9 of a gateway, of an ingest
//! replica, of the broker, of PostgreSQL; a clean PostgreSQL restart; a power cut of the
//! power-loss gateway (kill -9, unsynced writes dropped, remount, restart); the tmpfs gateway's
//! disk filled for a few seconds; the clock gateway stepped hours forward or back for a few
//! seconds; hostile MQTT traffic ([`inject`]). Once per run, at set points: the broker away
//! until the gateways hold `backlog` punches between them, then the drain (timed); PostgreSQL
//! away for `pg_outage`.
//!
//! At the end every fault is healed, the taps stop, every journal must drain to empty, and
//! [`verdict::judge`] compares the replies with `rollcall.ledger` and `attendance_record`.
//!
//! Power loss uses [`powerfs`], a FUSE passthrough in the spirit of LazyFS (not dm-flakey /
//! dm-log-writes: device-mapper targets need a block device, which the CI container lacks).
//! The clock is stepped with libfaketime (`LD_PRELOAD`, Debian's faketime package) reading its
//! offset from a file, with the monotonic clock left real; rollcalld itself has no test hook.

pub mod centre;
pub mod gateway;
pub mod inject;
pub mod powerfs;
pub mod verdict;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::mosquitto::Mosquitto;
use crate::postgres::Postgres;
use centre::Ingest;
use gateway::{Gateway, Storage};
use verdict::{GatewayFacts, Verdict};

/// How long and how hard the soak runs.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Time the taps run (faults included).
    pub duration: Duration,
    /// Faults to inject at random moments over `duration` (besides the two set outages).
    pub faults: u32,
    /// Punches to pile up across the gateways while the broker is away.
    pub backlog: u64,
    /// Longest the broker stays away building the backlog.
    pub backlog_cap: Duration,
    /// PostgreSQL's long outage.
    pub pg_outage: Duration,
    /// rollcall-ingest replicas.
    pub replicas: usize,
    /// Pause between two taps of one lane while no backlog is being built.
    pub tap_gap: Duration,
    /// Longest a drain may take before the journal counts as undrained.
    pub drain_timeout: Duration,
    /// Refuse to run when a kind of fault cannot be injected here (the long soak), rather than
    /// skip it (the short one outside CI; under CI a skip fails anyway).
    pub every_fault: bool,
}

impl SoakConfig {
    /// The short variant for the ordinary test run (about three minutes here).
    pub fn short(seed: u64) -> Self {
        SoakConfig {
            seed,
            duration: Duration::from_secs(100),
            faults: 40,
            backlog: 5_000,
            backlog_cap: Duration::from_secs(30),
            pg_outage: Duration::from_secs(8),
            replicas: 2,
            tap_gap: Duration::from_millis(15),
            drain_timeout: Duration::from_secs(120),
            every_fault: false,
        }
    }

    /// The long variant: `minutes` of taps and `faults` faults, a 100,000-punch backlog.
    pub fn long(seed: u64, minutes: u64, faults: u32) -> Self {
        SoakConfig {
            seed,
            duration: Duration::from_secs(minutes * 60),
            faults,
            backlog: 100_000,
            backlog_cap: Duration::from_secs(15 * 60),
            pg_outage: Duration::from_secs(60),
            replicas: 2,
            tap_gap: Duration::from_millis(10),
            drain_timeout: Duration::from_secs(600),
            every_fault: true,
        }
    }
}

/// `ROLLCALL_CHAOS_SEED`, else one from the clock.
pub fn seed_from_env_or_clock() -> u64 {
    std::env::var("ROLLCALL_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// xorshift64: small, seedable, enough for choosing moments and victims.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From a seed (zero is replaced: xorshift has no zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 { 0 } else { self.0 % n }
    }

    /// A duration in `lo..hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo))
    }
}

/// The faults drawn at random moments, with their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of one gateway, restarted after a moment.
    KillGateway,
    /// kill -9 of one ingest replica, restarted after a moment.
    KillIngest,
    /// kill -9 of Mosquitto, restarted on its persistence.
    KillBroker,
    /// kill -9 of the postmaster.
    KillPostgres,
    /// A clean PostgreSQL restart.
    RestartPostgres,
    /// Power loss of the power-loss gateway.
    PowerCut,
    /// The tmpfs gateway's disk full for a few seconds.
    DiskFull,
    /// The clock gateway's wall clock stepped hours forward or back for a few seconds.
    ClockStep,
    /// Duplicated, replayed, reordered and malformed messages at the broker.
    Inject,
}

const WEIGHTS: [(Fault, u64); 9] = [
    (Fault::KillGateway, 22),
    (Fault::KillIngest, 18),
    (Fault::KillBroker, 8),
    (Fault::KillPostgres, 6),
    (Fault::RestartPostgres, 6),
    (Fault::PowerCut, 18),
    (Fault::DiskFull, 6),
    (Fault::ClockStep, 6),
    (Fault::Inject, 10),
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillGateway => "kill9_gateway",
            Fault::KillIngest => "kill9_ingest",
            Fault::KillBroker => "kill9_broker",
            Fault::KillPostgres => "kill9_postgres",
            Fault::RestartPostgres => "restart_postgres",
            Fault::PowerCut => "power_cut",
            Fault::DiskFull => "disk_full",
            Fault::ClockStep => "clock_step",
            Fault::Inject => "inject",
        }
    }

    fn draw(rng: &mut Rng) -> Fault {
        let total: u64 = WEIGHTS.iter().map(|w| w.1).sum();
        let mut x = rng.below(total);
        for (f, w) in WEIGHTS {
            if x < w {
                return f;
            }
            x -= w;
        }
        Fault::Inject
    }
}

/// Everything the soak runs, so faults can reach it.
struct World {
    pg: Postgres,
    broker: Mosquitto,
    ingest: Vec<Ingest>,
    gateways: Vec<Gateway>,
    injector: inject::Injector,
    clock_stepped: bool,
    session_hours: u32,
    /// Each gateway's session (its room's).
    sessions: Vec<i64>,
}

/// Runs the soak and returns its verdict (an `Err` is a harness failure, not a verdict).
pub async fn run(cfg: SoakConfig) -> anyhow::Result<Verdict> {
    println!(
        "chaos soak: seed {} (ROLLCALL_CHAOS_SEED={0} reruns it)",
        cfg.seed
    );
    let mut rng = Rng::new(cfg.seed);
    let dir = tempfile::Builder::new()
        .prefix("rollcall-chaos")
        .tempdir()?;
    let mut v = Verdict {
        seed: cfg.seed,
        topology: (3, cfg.replicas),
        ..Verdict::default()
    };
    let mut w = setup(&cfg, dir.path()).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let gap = Arc::new(AtomicU64::new(cfg.tap_gap.as_micros() as u64));
    let mut lanes = Vec::new();
    for g in &w.gateways {
        let counter = Arc::new(AtomicU64::new(0));
        for lane in 0..gateway::LANES {
            lanes.push(tokio::spawn(g.lane(
                lane,
                stop.clone(),
                gap.clone(),
                counter.clone(),
            )));
        }
    }

    let started = Instant::now();
    let every = cfg.duration / (cfg.faults + 3);
    let backlog_at = cfg.faults / 3;
    let pg_outage_at = 2 * cfg.faults / 3;
    for i in 0..cfg.faults {
        // A random moment within this fault's slot.
        let slot_end = started + every * (i + 1);
        let at = slot_end.checked_sub(rng.ms(0, every.as_millis() as u64 / 2 + 1));
        if let Some(at) = at {
            tokio::time::sleep_until(at.into()).await;
        }
        if i == backlog_at {
            broker_outage(&cfg, &mut w, &gap, &mut v).await?;
            gap.store(cfg.tap_gap.as_micros() as u64, Ordering::Relaxed);
        }
        if i == pg_outage_at {
            println!("chaos: PostgreSQL away for {:?}", cfg.pg_outage);
            tokio::task::block_in_place(|| w.pg.stop())?;
            tokio::time::sleep(cfg.pg_outage).await;
            tokio::task::block_in_place(|| w.pg.restart())?;
            *v.faults.entry("postgres_outage").or_default() += 1;
        }
        let fault = Fault::draw(&mut rng);
        inflict(fault, &mut w, &mut rng, &mut v).await?;
        *v.faults.entry(fault.name()).or_default() += 1;
        if i % 10 == 9 {
            println!(
                "chaos: {} faults, {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    tokio::time::sleep_until((started + cfg.duration).into()).await;
    stop.store(true, Ordering::Relaxed);
    for lane in lanes {
        let _ = tokio::time::timeout(Duration::from_secs(10), lane).await;
    }
    v.ran_for = started.elapsed();

    // Heal: everything running, and wait for every journal to drain.
    heal(&mut w).await?;
    let drain_started = Instant::now();
    let deadline = drain_started + cfg.drain_timeout;
    let mut facts = Vec::new();
    loop {
        let mut all = true;
        for g in &w.gateways {
            match g.journal().await {
                Some((last, acked, depth)) if acked == last && depth == 0 => {}
                _ => all = false,
            }
        }
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    v.final_drain = drain_started.elapsed();
    for (i, g) in w.gateways.iter().enumerate() {
        let journal = g.journal().await;
        let a = g.answers.lock().unwrap_or_else(|p| p.into_inner());
        v.accepted += a.stored.len() as u64;
        v.storage_full += a.storage_full;
        facts.push(GatewayFacts {
            device: g.id.clone(),
            session: w.sessions[i],
            epochs: a
                .stored
                .keys()
                .map(|k| k.0)
                .chain([g.epoch.load(Ordering::Relaxed)])
                .collect::<BTreeSet<_>>(),
            stored: a.stored.clone(),
            reused: a.reused.clone(),
            journal,
            clock_stepped: g.has_clock() && w.clock_stepped,
        });
    }
    let client = centre::connect(&w.pg.url("campus")).await?;
    let ledger = centre::ledger(&client).await?;
    let records: Vec<(i64, String, String)> = client
        .query(
            "SELECT r.session_id, s.roll_number::text, r.mark::text FROM attendance_record r \
             JOIN students_student s ON s.id = r.student_id",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    verdict::judge(&mut v, &facts, &ledger, &records);
    if !v.passed() {
        for g in &w.gateways {
            eprintln!("--- {} log tail:\n{}", g.id, g.log_tail(30));
        }
        for (i, ing) in w.ingest.iter().enumerate() {
            eprintln!("--- ingest-{i} log tail:\n{}", ing.log_tail(30));
        }
    }
    drop(w);
    Ok(v)
}

async fn setup(cfg: &SoakConfig, dir: &std::path::Path) -> anyhow::Result<World> {
    let pg = Postgres::start()?;
    let db = pg.create_database("campus")?;
    let broker = Mosquitto::start()?;
    let devices: Vec<String> = (0..3).map(|i| format!("chaos-gw{i}")).collect();
    let mut ingest = Vec::new();
    for i in 0..cfg.replicas {
        let node = format!("ingest-{i}");
        let text = centre::ingest_config(&node, &db, &broker.url(), &devices);
        if i == 0 {
            // Tables first (standalone: ingest creates CampsHub360's), then the campus.
            let path = dir.join("migrate.toml");
            std::fs::write(&path, &text)?;
            crate::binaries::migrate(&path)?;
        }
        ingest.push(Ingest::start(dir, &node, &text)?);
    }
    let client = centre::connect(&db).await?;
    let session_hours = (cfg.duration.as_secs() / 3600 + 2) as u32;
    let sessions = centre::seed(&client, &devices, session_hours)
        .await
        .context("seeding the campus")?;
    let kinds = [Storage::Disk, Storage::PowerLoss, Storage::SmallTmpfs];
    let mut gateways = Vec::new();
    for (i, (id, storage)) in devices.iter().zip(kinds).enumerate() {
        let mut g = Gateway::new(&dir.join(id), id, broker.port(), storage, i == 0)?;
        g.start().await?;
        gateways.push(g);
    }
    if !gateways[0].has_clock() {
        // The long soak's verdict is read as "every kind of fault": it does not run without one.
        anyhow::ensure!(
            !cfg.every_fault,
            "libfaketime is not installed, so the clock-step fault cannot run: install Debian's \
             faketime (scripts/install-deps.sh does)"
        );
        crate::skip(
            "the clock-step fault",
            "libfaketime is not installed",
            "Install Debian's faketime (scripts/install-deps.sh does)",
        );
    }
    let injector = inject::Injector::start(broker.port());
    Ok(World {
        pg,
        broker,
        ingest,
        gateways,
        injector,
        clock_stepped: false,
        session_hours,
        sessions,
    })
}

async fn inflict(
    fault: Fault,
    w: &mut World,
    rng: &mut Rng,
    v: &mut Verdict,
) -> anyhow::Result<()> {
    match fault {
        Fault::KillGateway => {
            let i = rng.below(w.gateways.len() as u64) as usize;
            w.gateways[i].kill9();
            tokio::time::sleep(rng.ms(0, 500)).await;
            w.gateways[i].start().await?;
        }
        Fault::KillIngest => {
            let i = rng.below(w.ingest.len() as u64) as usize;
            w.ingest[i].kill9();
            tokio::time::sleep(rng.ms(0, 1500)).await;
            w.ingest[i].spawn()?;
        }
        Fault::KillBroker => {
            w.broker.kill();
            tokio::time::sleep(rng.ms(0, 1500)).await;
            tokio::task::block_in_place(|| w.broker.restart())?;
        }
        Fault::KillPostgres => {
            w.pg.kill()?;
            tokio::time::sleep(rng.ms(0, 1000)).await;
            tokio::task::block_in_place(|| w.pg.restart())?;
        }
        Fault::RestartPostgres => {
            tokio::task::block_in_place(|| w.pg.restart())?;
        }
        Fault::PowerCut => {
            let g = &mut w.gateways[1];
            let dropped = tokio::task::block_in_place(|| g.power_cut())?;
            v.dropped_bytes += dropped;
            tokio::time::sleep(rng.ms(0, 500)).await;
            g.start().await?;
        }
        Fault::DiskFull => {
            let g = &w.gateways[2];
            let filler = tokio::task::block_in_place(|| g.fill_disk())?;
            tokio::time::sleep(rng.ms(3000, 8000)).await;
            std::fs::remove_file(filler)?;
        }
        Fault::ClockStep => {
            let g = &w.gateways[0];
            let hours = w.session_hours + 2;
            let step = if rng.below(2) == 0 {
                format!("+{hours}h")
            } else {
                format!("-{hours}h")
            };
            w.clock_stepped |= g.set_clock(&step)?;
            tokio::time::sleep(rng.ms(2000, 5000)).await;
            g.set_clock("+0")?;
            // libfaketime re-reads its file once a second.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        Fault::Inject => {
            let n = w.injector.inject(|m| rng.below(m));
            for (k, c) in [
                ("duplicated", n.duplicated),
                ("replayed", n.replayed),
                ("reordered", n.reordered),
                ("malformed", n.malformed),
            ] {
                *v.injected.entry(k).or_default() += c;
            }
        }
    }
    Ok(())
}

/// The broker away until the gateways hold `backlog` punches (or `backlog_cap`), taps at full
/// speed; then back, and timed until everything queued before it came back is acked.
async fn broker_outage(
    cfg: &SoakConfig,
    w: &mut World,
    gap: &AtomicU64,
    v: &mut Verdict,
) -> anyhow::Result<()> {
    println!(
        "chaos: broker away until {} punches are queued",
        cfg.backlog
    );
    w.broker.kill();
    gap.store(0, Ordering::Relaxed);
    let since = Instant::now();
    let mut depth = 0;
    while since.elapsed() < cfg.backlog_cap {
        depth = 0;
        for g in &w.gateways {
            depth += g.journal().await.map_or(0, |j| j.2);
        }
        v.max_backlog = v.max_backlog.max(depth);
        if depth >= cfg.backlog {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    gap.store(cfg.tap_gap.as_micros() as u64, Ordering::Relaxed);
    let mut targets = Vec::new();
    for g in &w.gateways {
        targets.push(g.journal().await.map_or(0, |j| j.0));
    }
    println!(
        "chaos: {depth} punches queued after {:.0} s; broker back",
        since.elapsed().as_secs_f64()
    );
    tokio::task::block_in_place(|| w.broker.restart())?;
    let back = Instant::now();
    while back.elapsed() < cfg.drain_timeout {
        let mut done = true;
        for (g, target) in w.gateways.iter().zip(&targets) {
            if g.journal().await.is_none_or(|j| j.1 < *target) {
                done = false;
            }
        }
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    v.longest_drain = v.longest_drain.max(back.elapsed());
    println!("chaos: drained in {:.1} s", back.elapsed().as_secs_f64());
    *v.faults.entry("broker_outage").or_default() += 1;
    Ok(())
}

/// Everything running again with its clock right, for the final drain.
async fn heal(w: &mut World) -> anyhow::Result<()> {
    if !w.pg.is_running() {
        tokio::task::block_in_place(|| w.pg.restart())?;
    }
    for i in &mut w.ingest {
        if !i.is_running() {
            i.spawn()?;
        }
    }
    for g in &mut w.gateways {
        g.set_clock("+0")?;
        if g.journal().await.is_none() {
            g.start().await?;
        }
    }
    Ok(())
}
