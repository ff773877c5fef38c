//! The fleet-scale load benchmark (issue 11, point 2): a campus at the start of a period.
//!
//! Topology, all real and started here: PostgreSQL with the CampsHub360 tables (ingest's
//! standalone schema, every index), Mosquitto (the harness's, persistence on), `replicas`
//! rollcall-ingest processes (the real binary) sharing the subscription, and `gateways`
//! simulated gateways in this process ([`gateway`]), each its own MQTT connection and device,
//! speaking the protocol through the protocol crate's uplink state machine as rollcalld does.
//!
//! The campus ([`seed`]): `students` students spread over one room per gateway, each room with
//! one course section, its students ENROLLED, and one session open now, with CampsHub360's
//! pre-created `absent` row per student, so every punch is an UPDATE to `present` (recorded),
//! not only a ledger row. Every student taps once ([`plans`]): tap moments follow a Beta(2, 5)
//! curve over the period (mode at a fifth of it, 89 % within its first half: with the default
//! ten minutes, most of the campus within 3-5 minutes), a reader taking at least a second per
//! tap. `time_scale` K compresses the period (and the reader's second) K times: the same
//! campus arriving K times faster, to find the bend without waiting ten minutes.
//!
//! Measured ([`Report`]): throughput into the ledger, reader-to-row latency per punch (the
//! scheduled tap to the arrival of the gateway's first ack covering it: ingest acks only after
//! COMMIT, so this is an upper bound on tap-to-commit that includes the ack's way back), the
//! backlog (tapped, not yet acked) over time, CPU seconds and peak memory of Mosquitto,
//! PostgreSQL, the ingest replicas and this process (the load generator) from /proc, and, from
//! ingest's metrics, how many punches each transaction carried. At the end the database is
//! checked: every punch in the ledger exactly once as `recorded` and its student `present`.

pub mod gateway;
pub mod procstat;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use rollcall_protocol::uplink::UplinkConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::chaos::Rng;
use crate::chaos::centre::{Ingest, connect};
use crate::mosquitto::Mosquitto;
use crate::postgres::Postgres;
use gateway::{Plan, Progress};

/// The site in every topic.
pub const SITE: &str = "campus";

/// One run's shape.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// Simulated gateways, one room each.
    pub gateways: usize,
    /// Students of the campus, spread evenly over the rooms; each taps once.
    pub students: usize,
    /// rollcall-ingest replicas sharing the subscription.
    pub replicas: usize,
    /// The period over which the campus arrives (ten minutes by default), before compression.
    pub period: Duration,
    /// Compression of `period`: K times faster arrivals.
    pub time_scale: f64,
    /// Seed of the arrival moments.
    pub seed: u64,
    /// The gateways' uplink tuning (rollcalld's defaults unless changed).
    pub uplink: UplinkConfig,
    /// Each replica's PostgreSQL pool.
    pub pool_size: usize,
    /// Each replica's writer tasks (`ingest.writers`).
    pub writers: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            gateways: 300,
            students: 12_000,
            replicas: 2,
            period: Duration::from_secs(600),
            time_scale: 1.0,
            seed: 1,
            // rollcalld's defaults (mqtt.batch_max, mqtt.window, mqtt.ack_timeout).
            uplink: UplinkConfig {
                batch_max: 500,
                window: 8,
                ack_timeout: Duration::from_secs(10),
                ack_timeout_max: Duration::from_secs(120),
            },
            pool_size: 4,
            writers: 2,
        }
    }
}

/// Device id of room `r` (0-based).
pub fn device(r: usize) -> String {
    format!("gw-{:04}", r + 1)
}

/// `students_student.id` of student `s` (0-based).
pub fn student(s: usize) -> String {
    format!("00000000-0000-4000-8000-{s:012}")
}

/// Who taps where and when: student `s` is in room `s % gateways`; each room's tap moments are
/// drawn from Beta(2, 5) over the compressed period, sorted, and spaced at least one
/// (compressed) second apart, as one reader serves one student at a time.
pub fn plans(cfg: &FleetConfig) -> Vec<Plan> {
    let window = cfg.period.as_secs_f64() / cfg.time_scale;
    let gap = 1.0 / cfg.time_scale;
    let mut rng = Rng::new(cfg.seed);
    let mut unit = || rng.below(1 << 53) as f64 / (1u64 << 53) as f64;
    (0..cfg.gateways)
        .map(|r| {
            let students: Vec<String> = (r..cfg.students)
                .step_by(cfg.gateways)
                .map(student)
                .collect();
            let mut at: Vec<f64> = students
                .iter()
                .map(|_| {
                    // Beta(2, 5) is the 2nd smallest of 6 uniforms.
                    let mut u: Vec<f64> = (0..6).map(|_| unit()).collect();
                    u.sort_by(f64::total_cmp);
                    u[1] * window
                })
                .collect();
            at.sort_by(f64::total_cmp);
            for i in 1..at.len() {
                at[i] = at[i].max(at[i - 1] + gap);
            }
            Plan {
                device: device(r),
                students,
                taps: at.into_iter().map(Duration::from_secs_f64).collect(),
            }
        })
        .collect()
}

/// The offered load's peak: most taps in any 5 s of the compressed period, per second (the
/// same window as [`Report::peak_acked_per_s`]).
pub fn offered_peak_per_s(plans: &[Plan]) -> f64 {
    let mut all: Vec<Duration> = plans.iter().flat_map(|p| p.taps.iter().copied()).collect();
    all.sort();
    let w = Duration::from_secs(5);
    let (mut best, mut j) = (0usize, 0usize);
    for i in 0..all.len() {
        while all[i] - all[j] > w {
            j += 1;
        }
        best = best.max(i - j + 1);
    }
    best as f64 / w.as_secs_f64()
}

/// The campus in CampsHub360's tables (created by `rollcall-ingest migrate` beforehand).
pub async fn seed(db_url: &str, gateways: usize, students: usize) -> anyhow::Result<()> {
    let c = connect(db_url).await?;
    c.batch_execute(&format!(
        "SET session_replication_role = replica;
         INSERT INTO academics_coursesection (id, section_type, current_enrollment, is_active, notes, created_at, updated_at, course_id, faculty_id)
           OVERRIDING SYSTEM VALUE SELECT r, 'LECTURE', 0, true, '', now(), now(), r, gen_random_uuid() FROM generate_series(1, {gateways}) r;
         INSERT INTO students_student (id, created_at, updated_at, roll_number, first_name, last_name, date_of_birth, gender, country, enrollment_date, status)
           SELECT ('00000000-0000-4000-8000-' || lpad(s::text, 12, '0'))::uuid, now(), now(), 'R' || s, 'F', 'L', '2005-01-01', 'M', 'IN', '2024-07-01', 'ACTIVE'
           FROM generate_series(0, {students} - 1) s;
         INSERT INTO academics_courseenrollment (enrollment_date, status, grade, enrollment_type, notes, created_at, updated_at, student_id, course_section_id)
           SELECT '2024-07-01', 'ENROLLED', '', 'REGULAR', '', now(), now(), ('00000000-0000-4000-8000-' || lpad(s::text, 12, '0'))::uuid, s % {gateways} + 1
           FROM generate_series(0, {students} - 1) s;
         INSERT INTO attendance_biometric_device (created_at, updated_at, device_id, device_name, device_type, location, room, status, firmware_version,
             is_enabled, auto_sync, sync_interval_minutes, ip_address, port, api_endpoint, api_key)
           SELECT now(), now(), 'gw-' || lpad(r::text, 4, '0'), 'gw', 'fingerprint', '', 'R' || r, 'active', '', true, true, 5,
                  '10.0.0.1', 80, '', '' FROM generate_series(1, {gateways}) r;
         INSERT INTO attendance_session (created_at, updated_at, scheduled_date, start_datetime, end_datetime, room, status, auto_opened, auto_closed,
             makeup, notes, qr_token, course_section_id, faculty_id, biometric_device_id, biometric_enabled, offline_sync_token)
           SELECT now(), now(), current_date, date_trunc('second', now()), date_trunc('second', now()) + interval '3 hours',
                  'R' || r, 'open', true, false, false, '', '', r, gen_random_uuid(), '', true, ''
           FROM generate_series(1, {gateways}) r;
         -- CampsHub360 pre-creates an absent row per student and session: a punch UPDATEs it.
         INSERT INTO attendance_record (created_at, updated_at, mark, marked_at, source, reason, vendor_event_id, client_uuid, user_agent,
             student_id, session_id, device_id, device_type, notes, sync_status, vendor_data)
           SELECT now(), now(), 'absent', now(), 'system', 'Auto-marked absent - no attendance recorded', '', '', '',
                  e.student_id, s.id, '', '', '', 'synced', '{{}}'
           FROM academics_courseenrollment e JOIN attendance_session s ON s.course_section_id = e.course_section_id;
         SET session_replication_role = DEFAULT;
         ANALYZE;"
    ))
    .await
    .context("seeding the campus")?;
    Ok(())
}

/// The replica's configuration: production defaults except the campus clock (UTC) and the
/// jobs (off: the benchmark measures the punch path).
pub fn ingest_config(
    node: &str,
    db_url: &str,
    broker_url: &str,
    cfg: &FleetConfig,
    metrics_port: u16,
) -> String {
    format!(
        "node_name = \"{node}\"\n[database]\nurl = \"{db_url}\"\npool_size = {}\nschema_mode = \"standalone\"\n\
         [mqtt]\nurl = \"{broker_url}\"\n[campus]\ntimezone = \"UTC\"\nsession_clock = \"utc\"\n\
         [ingest]\nwriters = {}\n[jobs]\nenabled = false\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        cfg.pool_size, cfg.writers
    )
}

/// One scrape of a replica's `/metrics`: every sample summed over its labels.
pub fn scrape(port: u16) -> anyhow::Result<HashMap<String, f64>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let mut m = HashMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name).to_string();
        if let Ok(v) = value.parse::<f64>() {
            *m.entry(name).or_insert(0.0) += v;
        }
    }
    Ok(m)
}

/// Resource use of the services over the load (first tap to last ack).
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// CPU seconds: Mosquitto.
    pub broker_cpu_s: f64,
    /// CPU seconds: PostgreSQL (postmaster and backends).
    pub postgres_cpu_s: f64,
    /// CPU seconds: all ingest replicas.
    pub ingest_cpu_s: f64,
    /// CPU seconds: this process (the simulated gateways).
    pub generator_cpu_s: f64,
    /// Peak resident set of Mosquitto, MiB.
    pub broker_rss_mib: f64,
    /// Peak of PostgreSQL's summed proportional set size, MiB.
    pub postgres_pss_mib: f64,
    /// Largest peak resident set of one ingest replica, MiB.
    pub ingest_rss_mib: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Punches tapped (= students).
    pub punches: u64,
    /// Punches acked.
    pub acked: u64,
    /// The compressed period's length.
    pub window: Duration,
    /// Offered load: most taps per second over 5 s.
    pub offered_peak_per_s: f64,
    /// First scheduled tap to last ack.
    pub elapsed: Duration,
    /// Highest acked punches per second over 5 s.
    pub peak_acked_per_s: f64,
    /// Reader-to-row latency percentiles p50, p95, p99, max.
    pub latency: [Duration; 4],
    /// Most punches tapped and not yet acked at once.
    pub peak_backlog: u64,
    /// Last scheduled tap to last ack.
    pub drain_after_last_tap: Duration,
    /// Batches published (re-sends included).
    pub batches: u64,
    /// Go-back-N re-sends after ack timeouts, all gateways.
    pub retransmits: u64,
    /// Longest a tap fired after its scheduled moment (load generator lag).
    pub tap_lag: Duration,
    /// Services' CPU and memory.
    pub resources: Resources,
    /// Ingest transactions (writer batches) in all replicas.
    pub transactions: f64,
    /// Punches in those transactions.
    pub transaction_punches: f64,
    /// Seconds spent in those transactions.
    pub transaction_seconds: f64,
    /// Ledger rows; ledger rows `recorded`; `attendance_record` rows `present` or `late`.
    pub ledger: (i64, i64, i64),
    /// Load average (1 min) before and after the run.
    pub load: (f64, f64),
}

impl Report {
    /// Whether every punch was acked, and recorded exactly once.
    pub fn complete(&self) -> bool {
        let p = self.punches as i64;
        self.acked == self.punches && self.ledger == (p, p, p)
    }
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the whole benchmark once; `dir` holds the replicas' configurations and logs.
pub async fn run(cfg: &FleetConfig, dir: &Path) -> anyhow::Result<Report> {
    anyhow::ensure!(
        cfg.gateways > 0 && cfg.students >= cfg.gateways,
        "need at least one student per gateway"
    );
    anyhow::ensure!(cfg.time_scale > 0.0, "the time scale must be positive");
    let load_before = load_average();
    let pg = Postgres::start()?;
    let broker = Mosquitto::start()?;
    let db = pg.create_database("fleet")?;
    let ports: Vec<u16> = (0..cfg.replicas)
        .map(|_| crate::free_port())
        .collect::<Result<_, _>>()?;
    let configs: Vec<String> = (0..cfg.replicas)
        .map(|i| ingest_config(&format!("fleet-{i}"), &db, &broker.url(), cfg, ports[i]))
        .collect();
    let path = dir.join("migrate.toml");
    std::fs::write(&path, &configs[0])?;
    crate::binaries::migrate(&path)?;
    seed(&db, cfg.gateways, cfg.students).await?;
    let mut replicas = Vec::new();
    for (i, text) in configs.iter().enumerate() {
        replicas.push(Ingest::start(dir, &format!("fleet-{i}"), text)?);
    }
    // Ready when each replica has connected to the broker (it subscribes on CONNACK).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (i, port) in ports.iter().enumerate() {
        loop {
            if scrape(*port).is_ok_and(|m| {
                m.get("rollcall_ingest_broker_connects_total")
                    .is_some_and(|v| *v >= 1.0)
            }) {
                break;
            }
            anyhow::ensure!(
                replicas[i].is_running(),
                "replica {i} exited: {}",
                replicas[i].log_tail(20)
            );
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "replica {i} did not connect to the broker in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let plans = plans(cfg);
    let offered = offered_peak_per_s(&plans);
    let punches: u64 = plans.iter().map(|p| p.taps.len() as u64).sum();
    let last_tap = plans
        .iter()
        .filter_map(|p| p.taps.last())
        .max()
        .copied()
        .unwrap_or_default();
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    // Taps start once every gateway has had time to connect; connecting is not measured.
    let start =
        Instant::now() + Duration::from_secs(3) + Duration::from_millis(cfg.gateways as u64 * 5);
    let mut tasks = tokio::task::JoinSet::new();
    for plan in plans {
        tasks.spawn(gateway::run(
            broker.port(),
            SITE,
            plan,
            cfg.uplink.clone(),
            start,
            progress.clone(),
            stop.clone(),
        ));
    }
    tokio::time::sleep_until(start).await;
    anyhow::ensure!(
        progress.online.load(Ordering::Relaxed) == cfg.gateways as u64,
        "only {} of {} gateways connected before the period started",
        progress.online.load(Ordering::Relaxed),
        cfg.gateways
    );

    let pids = Pids {
        broker: broker.pid().context("mosquitto not running")?,
        postgres: pg.pid().context("postgres not running")?,
        ingest: replicas.iter().filter_map(|r| r.pid()).collect(),
    };
    let cpu0 = pids.cpu();
    // The sampler: backlog and PostgreSQL's memory every 250 ms until the gateways are done.
    let sampling = CancellationToken::new();
    let sampler = {
        let (progress, sampling, pg_pid) = (progress.clone(), sampling.clone(), pids.postgres);
        tokio::task::spawn_blocking(move || {
            let mut samples = Vec::new();
            let mut pss: f64 = 0.0;
            while !sampling.is_cancelled() {
                let t = std::time::Instant::now();
                samples.push((
                    t,
                    progress.tapped.load(Ordering::Relaxed),
                    progress.acked.load(Ordering::Relaxed),
                ));
                pss = pss.max(procstat::tree_pss_mib(pg_pid));
                std::thread::sleep(Duration::from_millis(250).saturating_sub(t.elapsed()));
            }
            (samples, pss)
        })
    };
    let limit = last_tap + Duration::from_secs(600);
    let mut outcomes = Vec::new();
    let timed_out = tokio::time::timeout(limit, async {
        while let Some(o) = tasks.join_next().await {
            outcomes.push(o);
        }
    })
    .await
    .is_err();
    let end = Instant::now();
    stop.cancel();
    while let Some(o) = tasks.join_next().await {
        outcomes.push(o);
    }
    sampling.cancel();
    let (samples, pg_pss) = sampler.await?;
    let cpu1 = pids.cpu();

    let mut latencies = Vec::with_capacity(punches as usize);
    let mut r = Report {
        punches,
        window: cfg.period.div_f64(cfg.time_scale),
        offered_peak_per_s: offered,
        ..Report::default()
    };
    let mut last_ack = start;
    for o in outcomes {
        let o = o?;
        r.acked += o.acked;
        r.retransmits += o.retransmits;
        r.tap_lag = r.tap_lag.max(o.tap_lag);
        last_ack = last_ack.max(o.last_ack.unwrap_or(start));
        latencies.extend(o.latencies);
    }
    latencies.sort();
    r.latency = [0.5, 0.95, 0.99, 1.0].map(|p| percentile(&latencies, p));
    if timed_out {
        last_ack = end;
    }
    r.elapsed = last_ack.saturating_duration_since(start);
    r.drain_after_last_tap = last_ack.saturating_duration_since(start + last_tap);
    r.batches = progress.batches.load(Ordering::Relaxed);
    r.peak_backlog = samples
        .iter()
        .map(|s| s.1 - s.2.min(s.1))
        .max()
        .unwrap_or(0);
    let w = Duration::from_secs(5);
    let mut j = 0;
    for i in 0..samples.len() {
        while samples[i].0 - samples[j].0 > w {
            j += 1;
        }
        let dt = (samples[i].0 - samples[j].0).as_secs_f64();
        if dt >= 4.0 {
            r.peak_acked_per_s = r
                .peak_acked_per_s
                .max((samples[i].2 - samples[j].2) as f64 / dt);
        }
    }
    r.resources = Resources {
        broker_cpu_s: cpu1.0 - cpu0.0,
        postgres_cpu_s: cpu1.1 - cpu0.1,
        ingest_cpu_s: cpu1.2 - cpu0.2,
        generator_cpu_s: cpu1.3 - cpu0.3,
        broker_rss_mib: procstat::peak_rss_mib(pids.broker).unwrap_or(f64::NAN),
        postgres_pss_mib: pg_pss,
        ingest_rss_mib: pids
            .ingest
            .iter()
            .filter_map(|p| procstat::peak_rss_mib(*p))
            .fold(0.0, f64::max),
    };
    for port in &ports {
        let m = scrape(*port)?;
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        r.transactions += get("rollcall_ingest_commit_seconds_count");
        r.transaction_seconds += get("rollcall_ingest_commit_seconds_sum");
        r.transaction_punches += get("rollcall_ingest_batch_punches_sum");
    }
    let c = connect(&db).await?;
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM rollcall.ledger),
                    (SELECT count(*) FROM rollcall.ledger WHERE outcome = 'recorded'),
                    (SELECT count(*) FROM attendance_record WHERE mark IN ('present', 'late'))",
            &[],
        )
        .await?;
    r.ledger = (row.get(0), row.get(1), row.get(2));
    r.load = (load_before, load_average());
    for (i, rep) in replicas.iter_mut().enumerate() {
        anyhow::ensure!(
            rep.is_running(),
            "replica {i} exited during the run: {}",
            rep.log_tail(20)
        );
    }
    drop(replicas);
    Ok(r)
}

struct Pids {
    broker: u32,
    postgres: u32,
    ingest: Vec<u32>,
}

impl Pids {
    /// CPU seconds so far: (broker, postgres tree, ingest replicas, this process).
    fn cpu(&self) -> (f64, f64, f64, f64) {
        (
            procstat::cpu_seconds(self.broker, false),
            procstat::cpu_seconds(self.postgres, true),
            self.ingest
                .iter()
                .map(|p| procstat::cpu_seconds(*p, false))
                .sum(),
            procstat::cpu_seconds(std::process::id(), false),
        )
    }
}
