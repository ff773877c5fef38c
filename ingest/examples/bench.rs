//! End-to-end ingest benchmark: simulated gateways -> real Mosquitto -> rollcall-ingest ->
//! real PostgreSQL (fsync on), until every device holds the ack for its last punch (acks are
//! sent only after COMMIT, so every punch is then in the ledger and in attendance_record).
//! In the same run, a naive writer (the same decode and SQL, one punch per transaction) on a
//! second database; and the latency from publish to ack, idle and under load.
//!
//! Alongside the gateways' backlog, simulated ZKTeco terminals (`rollcall_tests::zkteco`, one
//! HTTP connection per request as firmware does) each upload a backlog of ATTLOG records in
//! batches to the service's ADMS endpoint, in rooms of their own; a terminal's upload is
//! answered `OK` only after COMMIT, so its round trip is the latency to COMMIT as the terminal
//! sees it. Before the load, one terminal's realtime uploads (one record each) give the idle
//! figure.
//!
//! `cargo run --release -p rollcall-ingest --example bench [-- --punches 200000 --naive 5000
//! --terminals 20 --terminal-records 2000 --terminal-batch 500]`

use rollcall_ingest::config::Config;
use rollcall_ingest::db::writer::{WriterSettings, write_batch};
use rollcall_ingest::metrics::Metrics;
use rollcall_ingest::punch::Envelope;
use rollcall_protocol::{topic, v1};
use rollcall_tests::postgres::Postgres;
use rollcall_tests::zkteco::{Dialect, Terminal};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const ROOMS: usize = 50;
const STUDENTS_PER_ROOM: usize = 100;
const SESSIONS_PER_ROOM: usize = 40; // hourly, over the last 40 hours
const BATCH: usize = 500;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Rooms 1..=ROOMS have a gateway `gw-<r>`; rooms ROOMS+1..=ROOMS+terminals a ZKTeco terminal
/// `zk-<r>`, each with its own students and sessions.
async fn seed(url: &str, terminals: usize) -> anyhow::Result<()> {
    let rooms = ROOMS + terminals;
    let (mut c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    rollcall_ingest::db::schema::migrate(&mut c, rollcall_ingest::config::SchemaMode::Standalone)
        .await?;
    c.batch_execute(&format!(
        "INSERT INTO academics_coursesection (id, section_type, current_enrollment, is_active, notes, created_at, updated_at, course_id, faculty_id)
           OVERRIDING SYSTEM VALUE SELECT r, 'LECTURE', 0, true, '', now(), now(), r, gen_random_uuid() FROM generate_series(1, {rooms}) r;
         INSERT INTO students_student (id, created_at, updated_at, roll_number, first_name, last_name, date_of_birth, gender, country, enrollment_date, status)
           SELECT ('00000000-0000-4000-8000-' || lpad(s::text, 12, '0'))::uuid, now(), now(), 'R' || s, 'F', 'L', '2005-01-01', 'M', 'IN', '2024-07-01', 'ACTIVE'
           FROM generate_series(0, {rooms} * {STUDENTS_PER_ROOM} - 1) s;
         INSERT INTO academics_courseenrollment (enrollment_date, status, grade, enrollment_type, notes, created_at, updated_at, student_id, course_section_id)
           SELECT '2024-07-01', 'ENROLLED', '', 'REGULAR', '', now(), now(), ('00000000-0000-4000-8000-' || lpad(s::text, 12, '0'))::uuid, s / {STUDENTS_PER_ROOM} + 1
           FROM generate_series(0, {rooms} * {STUDENTS_PER_ROOM} - 1) s;
         INSERT INTO attendance_biometric_device (created_at, updated_at, device_id, device_name, device_type, location, room, status, firmware_version,
             is_enabled, auto_sync, sync_interval_minutes, ip_address, port, api_endpoint, api_key)
           SELECT now(), now(), CASE WHEN r <= {ROOMS} THEN 'gw-' ELSE 'zk-' END || r, 'gw', 'fingerprint', '', 'R' || r, 'active', '', true, true, 5,
                  '10.0.0.1', 80, '', '' FROM generate_series(1, {rooms}) r;
         INSERT INTO attendance_session (created_at, updated_at, scheduled_date, start_datetime, end_datetime, room, status, auto_opened, auto_closed,
             makeup, notes, qr_token, course_section_id, faculty_id, biometric_device_id, biometric_enabled, offline_sync_token)
           SELECT now(), now(), current_date, date_trunc('hour', now()) - (k + 1) * interval '1 hour', date_trunc('hour', now()) - k * interval '1 hour',
                  'R' || r, 'closed', false, false, false, '', '', r, gen_random_uuid(), '', false, ''
           FROM generate_series(1, {rooms}) r, generate_series(0, {SESSIONS_PER_ROOM} - 1) k;"
    ))
    .await?;
    if terminals > 0 {
        // The idle realtime terminal, in the first terminal room: a serial of its own, so its
        // cursor (kept by the server) is not the backlog terminal's.
        c.batch_execute(&format!(
            "INSERT INTO attendance_biometric_device (created_at, updated_at, device_id, device_name, device_type, location, room, status,
                 firmware_version, is_enabled, auto_sync, sync_interval_minutes, ip_address, port, api_endpoint, api_key)
             VALUES (now(), now(), 'zk-idle', 'zk', 'fingerprint', '', 'R{}', 'active', '', true, true, 5, '10.0.0.1', 80, '', '')",
            ROOMS + 1
        ))
        .await?;
    }
    Ok(())
}

/// Punches of room `r` (1-based): every (session, student) once, in time order, seq from 1.
fn room_punches(r: usize, n: usize) -> Vec<v1::Punch> {
    let hour = chrono::Utc::now().timestamp() / 3600 * 3600;
    (0..n)
        .map(|i| {
            let k = SESSIONS_PER_ROOM - 1 - (i / STUDENTS_PER_ROOM) % SESSIONS_PER_ROOM; // oldest session first
            let s = (r - 1) * STUDENTS_PER_ROOM + i % STUDENTS_PER_ROOM;
            let start = hour - (k as i64 + 1) * 3600;
            v1::Punch {
                seq: i as u64 + 1,
                event_id: Uuid::now_v7(),
                captured_at_ms: (start + 60) * 1000 + (i % STUDENTS_PER_ROOM) as i64 * 1000,
                clock: v1::ClockState {
                    ntp_synced: true,
                    offset_ms: None,
                    boot_id: Uuid::nil(),
                    monotonic_ms: i as u64,
                },
                reader_id: "door".into(),
                reader_kind: "r503".into(),
                credential: v1::CredentialKind::Fingerprint,
                subject: v1::Subject::Student(format!("00000000-0000-4000-8000-{s:012}")),
                score: Some(100),
                flags: 0,
            }
        })
        .collect()
}

/// Mosquitto as a child, configured like a production broker for ingest: unlimited in-flight
/// window, no queue limit, TCP_NODELAY (small acks are not held back by Nagle).
struct Mosquitto {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.path().join("m.conf");
        let root = std::fs::read_to_string("/proc/self/status")?
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        std::fs::write(
            &conf,
            format!(
                "{}listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\nlog_dest none\n",
                if root { "user root\n" } else { "" }
            ),
        )?;
        let child = std::process::Command::new(rollcall_tests::mosquitto::binary()?)
            .arg("-c")
            .arg(&conf)
            .spawn()?;
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(Instant::now() < end, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Mosquitto {
            child,
            port,
            _dir: dir,
        })
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type History = Arc<std::sync::Mutex<Vec<(String, u64, u64, Instant)>>>;

struct Acks {
    latest: Arc<std::sync::Mutex<HashMap<String, (u64, Instant)>>>,
    /// Every ack: (device, epoch, up_to_seq, arrival).
    history: History,
}

/// Publish -> ack of each sent batch `(device, epoch, last seq, sent at)`.
fn latencies(history: &History, sent: &[(String, u64, u64, Instant)]) -> Vec<Duration> {
    let h = history.lock().unwrap();
    sent.iter()
        .filter_map(|(d, e, last, t)| {
            h.iter()
                .filter(|(hd, he, up, at)| hd == d && he == e && up >= last && at >= t)
                .map(|x| x.3)
                .min()
                .map(|at| at - *t)
        })
        .collect()
}

async fn ack_listener(port: u16) -> Acks {
    let latest = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let mut o = MqttOptions::new("bench-acks", "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    el.network_options.set_tcp_nodelay(true);
    client
        .subscribe("rollcall/v1/+/+/ack", QoS::AtLeastOnce)
        .await
        .unwrap();
    let l2 = latest.clone();
    let history: History = Arc::default();
    let h2 = history.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    if let Ok(a) = v1::Ack::decode(&p.payload) {
                        h2.lock().unwrap().push((
                            a.device_id.clone(),
                            a.epoch,
                            a.up_to_seq,
                            Instant::now(),
                        ));
                        let mut m = l2.lock().unwrap();
                        let e = m.entry(a.device_id).or_insert((0, Instant::now()));
                        if a.up_to_seq > e.0 {
                            *e = (a.up_to_seq, Instant::now());
                        }
                    }
                }
                _ => {}
            }
        }
    });
    let _ = rx.await;
    Acks { latest, history }
}

impl Acks {
    fn get(&self, d: &str) -> u64 {
        self.latest.lock().unwrap().get(d).map(|x| x.0).unwrap_or(0)
    }
    async fn wait_all(&self, want: &HashMap<String, u64>, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if want.iter().all(|(d, s)| self.get(d) >= *s) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    }
}

async fn publisher(port: u16, id: &str) -> AsyncClient {
    let mut o = MqttOptions::new(format!("bench-{id}"), "127.0.0.1", port);
    o.set_max_packet_size(1 << 20, 1 << 20).set_inflight(1000);
    let (client, mut el) = AsyncClient::new(o, 1000);
    el.network_options.set_tcp_nodelay(true);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    client
}

/// Terminal `zk-<r>` holding the records of `n` (session, student) pairs of its room, on its
/// wall clock in the campus zone, PIN = roll number.
fn terminal(r: usize, n: usize, addr: &str, batch: usize, tz: chrono_tz::Tz) -> Terminal {
    let mut t = Terminal::new(&format!("zk-{r}"), addr, Dialect::Classic);
    t.chunk = batch;
    for (i, p) in room_punches(r, n).iter().enumerate() {
        let s = (r - 1) * STUDENTS_PER_ROOM + i % STUDENTS_PER_ROOM;
        let at = chrono::DateTime::from_timestamp_millis(p.captured_at_ms).unwrap_or_default();
        t.punch(&format!("R{s}"), at.with_timezone(&tz).naive_local(), 1);
    }
    t
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    // 200 (session, student) pairs per room are kept for the steady phase.
    let total =
        arg("--punches", 190_000).min(ROOMS * (STUDENTS_PER_ROOM * SESSIONS_PER_ROOM - 200));
    let naive_n = arg("--naive", 5_000);
    let terminals = arg("--terminals", 20);
    let terminal_records =
        arg("--terminal-records", 2_000).min(STUDENTS_PER_ROOM * SESSIONS_PER_ROOM);
    let terminal_batch = arg("--terminal-batch", 500).max(1);
    let writers = arg("--writers", 2);
    let per_room = total / ROOMS;
    let tuned = std::env::args().any(|a| a == "--tuned");
    let pg = if tuned {
        let settings = [
            ("shared_buffers", "1GB"),
            ("wal_buffers", "64MB"),
            ("max_wal_size", "8GB"),
            ("checkpoint_timeout", "30min"),
        ];
        rollcall_tests::postgres::Postgres::start_with(rollcall_tests::postgres::PgOptions {
            fsync: true,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })?
    } else {
        Postgres::start()?
    };
    let broker = Mosquitto::start()?;
    let fast_url = pg.create_database("fast")?;
    let naive_url = pg.create_database("naive")?;
    seed(&fast_url, terminals).await?;
    seed(&naive_url, 0).await?;
    let acks = ack_listener(broker.port()).await;

    let adms = format!("127.0.0.1:{}", rollcall_tests::free_port()?);
    let cfg = Config::from_toml(&format!(
        "node_name = \"bench\"\n[database]\nurl = \"{fast_url}\"\npool_size = 4\nschema_mode = \"existing\"\n\
         [mqtt]\nurl = \"{}\"\n[campus]\nsession_clock = \"utc\"\n[ingest]\nwriters = {}\nmax_batch_messages = 64\nmax_batch_punches = 20000\nlinger_ms = 2\n\
         [jobs]\nenabled = false\n[adms]\nlisten = \"{adms}\"\n",
        broker.url(),
        writers
    ))?;
    let tz = cfg.campus.timezone;
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let ingest = tokio::spawn(rollcall_ingest::run_with_metrics(
        cfg,
        metrics.clone(),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Idle latency: one single-punch batch at a time, publish -> ack.
    let warm = publisher(broker.port(), "gw-1").await;
    let warm_punches = room_punches(1, 200);
    let mut idle = Vec::new();
    for p in &warm_punches[..200] {
        let b = v1::PunchBatch {
            device_id: "gw-1".into(),
            epoch: 999,
            punches: vec![p.clone()],
        };
        let t0 = Instant::now();
        warm.publish(
            topic::build("bench", "gw-1", topic::Kind::Punches),
            QoS::AtLeastOnce,
            false,
            b.encode(),
        )
        .await?;
        let want = HashMap::from([("gw-1".to_string(), 0u64)]);
        let _ = want;
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if acks
                .latest
                .lock()
                .unwrap()
                .get("gw-1")
                .is_some_and(|x| x.0 >= p.seq)
            {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        idle.push(t0.elapsed());
    }
    acks.latest.lock().unwrap().clear();

    // A terminal's realtime uploads, idle: one record per request, one request at a time.
    let mut idle_terminal = Vec::new();
    if terminals > 0 {
        let r = ROOMS + 1;
        let mut t = Terminal::new("zk-idle", &adms, Dialect::Classic);
        t.chunk = 1;
        anyhow::ensure!(t.sync(Duration::from_secs(10)).await, "terminal handshake");
        let ps = room_punches(r, STUDENTS_PER_ROOM * SESSIONS_PER_ROOM);
        for p in &ps[ps.len() - 100..] {
            let s = (r - 1) * STUDENTS_PER_ROOM + (p.seq as usize - 1) % STUDENTS_PER_ROOM;
            let at = chrono::DateTime::from_timestamp_millis(p.captured_at_ms).unwrap_or_default();
            t.punch(&format!("R{s}"), at.with_timezone(&tz).naive_local(), 1);
            anyhow::ensure!(t.upload().await? == 1, "realtime upload not OK");
        }
        idle_terminal = t.upload_times.iter().map(|x| x.0).collect();
    }

    // Steady online load: every device sends a 10-punch batch every 100 ms (5,000 punches/s in
    // all) for 2 s, on punches the backlog below does not use.
    let mut steady_clients = HashMap::new();
    for r in 1..=ROOMS {
        let d = format!("gw-{r}");
        steady_clients.insert(
            d.clone(),
            publisher(broker.port(), &format!("{d}-steady")).await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = STUDENTS_PER_ROOM * SESSIONS_PER_ROOM;
    let mut steady_sent = Vec::new();
    for round in 0..20usize {
        for r in 1..=ROOMS {
            let d = format!("gw-{r}");
            let ps: Vec<v1::Punch> = room_punches(r, all)
                [all - 200 + round * 10..all - 200 + round * 10 + 10]
                .iter()
                .enumerate()
                .map(|(i, p)| v1::Punch {
                    seq: (round * 10 + i + 1) as u64,
                    ..p.clone()
                })
                .collect();
            let b = v1::PunchBatch {
                device_id: d.clone(),
                epoch: 2,
                punches: ps,
            };
            steady_clients[&d]
                .publish(
                    topic::build("bench", &d, topic::Kind::Punches),
                    QoS::AtLeastOnce,
                    false,
                    b.encode(),
                )
                .await?;
            steady_sent.push((d, 2u64, (round * 10 + 10) as u64, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let steady_want: HashMap<String, u64> = (1..=ROOMS).map(|r| (format!("gw-{r}"), 200)).collect();
    anyhow::ensure!(
        acks.wait_all(&steady_want, Duration::from_secs(60)).await,
        "steady phase not acked"
    );
    let mut steady = latencies(&acks.history, &steady_sent);
    anyhow::ensure!(
        steady.len() == steady_sent.len(),
        "steady phase: {} of {} batches acked",
        steady.len(),
        steady_sent.len()
    );
    acks.latest.lock().unwrap().clear();

    // Throughput: every room drains its backlog as 500-punch batches, all at once.
    let mut batches: Vec<(String, Vec<u8>, u64)> = Vec::new();
    let mut want = HashMap::new();
    for r in 1..=ROOMS {
        let d = format!("gw-{r}");
        let ps = room_punches(r, per_room);
        for chunk in ps.chunks(BATCH) {
            let b = v1::PunchBatch {
                device_id: d.clone(),
                epoch: 1,
                punches: chunk.to_vec(),
            };
            batches.push((
                d.clone(),
                b.encode(),
                chunk.last().map(|p| p.seq).unwrap_or(0),
            ));
        }
        want.insert(d, per_room as u64);
    }
    let mut clients = HashMap::new();
    for r in 1..=ROOMS {
        let d = format!("gw-{r}");
        clients.insert(
            d.clone(),
            publisher(broker.port(), &format!("{d}-load")).await,
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut zk: Vec<Terminal> = (ROOMS + 1..=ROOMS + terminals)
        .map(|r| terminal(r, terminal_records, &adms, terminal_batch, tz))
        .collect();
    let sent_at: History = Arc::default();
    let t0 = Instant::now();
    // The terminals upload their backlogs while the gateways drain theirs.
    let zk_tasks: Vec<_> = zk
        .drain(..)
        .map(|mut t| {
            tokio::spawn(async move {
                let ok = t.sync(Duration::from_secs(600)).await;
                (t, ok, Instant::now())
            })
        })
        .collect();
    // Interleave rooms, as a period start would.
    let mut order: Vec<usize> = (0..batches.len()).collect();
    order.sort_by_key(|&i| (batches[i].2, i));
    for i in order {
        let (d, payload, last) = &batches[i];
        clients[d]
            .publish(
                topic::build("bench", d, topic::Kind::Punches),
                QoS::AtLeastOnce,
                false,
                payload.clone(),
            )
            .await?;
        sent_at
            .lock()
            .unwrap()
            .push((d.clone(), 1, *last, Instant::now()));
    }
    let ok = acks.wait_all(&want, Duration::from_secs(600)).await;
    let elapsed = t0.elapsed();
    anyhow::ensure!(ok, "not every punch was acked");
    let mut zk_done = t0;
    let mut zk_rtt = Vec::new();
    let mut zk_batches = 0;
    for task in zk_tasks {
        let (t, ok, done) = task.await?;
        anyhow::ensure!(
            ok && t.pending() == 0,
            "terminal {} did not upload",
            t.serial
        );
        zk_done = zk_done.max(done);
        zk_batches += t.upload_times.len();
        zk_rtt.extend(t.upload_times.iter().map(|x| x.0));
    }
    let zk_elapsed = zk_done - t0;
    let zk_total = terminals * terminal_records;
    let rate = total as f64 / elapsed.as_secs_f64();
    let mut drain = latencies(&acks.history, &sent_at.lock().unwrap().clone());
    // Publish -> ack under load: per batch, the first ack covering its last seq. Acks only
    // record the latest per device, so this is approximated by the device's final ack time for
    // its last batch and per-batch samples taken while draining (upper bound).
    // Replay: the whole backlog re-sent (as after an outage); every punch is already stored.
    acks.latest.lock().unwrap().clear();
    let t1 = Instant::now();
    for (d, payload, _) in &batches {
        clients[d]
            .publish(
                topic::build("bench", d, topic::Kind::Punches),
                QoS::AtLeastOnce,
                false,
                payload.clone(),
            )
            .await?;
    }
    anyhow::ensure!(
        acks.wait_all(&want, Duration::from_secs(600)).await,
        "replay not acked"
    );
    let replay_rate = total as f64 / t1.elapsed().as_secs_f64();
    let (mut c, conn) = tokio_postgres::connect(&fast_url, NoTls).await?;
    tokio::spawn(conn);
    let ledger: i64 = c
        .query_one("SELECT count(*) FROM rollcall.ledger WHERE epoch = 1", &[])
        .await?
        .get(0);
    let records: i64 = c
        .query_one("SELECT count(*) FROM attendance_record", &[])
        .await?
        .get(0);
    let (zk_ledger, zk_stored): (i64, i64) = c
        .query_one(
            "SELECT (SELECT count(*) FROM rollcall.ledger WHERE device_id LIKE 'zk-%'),
                    (SELECT count(*) FROM rollcall.adms_record)",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))?;
    let zk_expected = zk_total as i64 + if terminals > 0 { 100 } else { 0 };
    anyhow::ensure!(
        zk_ledger == zk_expected && zk_stored == zk_expected,
        "terminal records: {zk_ledger} ledger rows and {zk_stored} adms_record rows, {zk_expected} expected"
    );
    let m = metrics.encode();
    stop.cancel();
    let _ = ingest.await;

    // Naive: the same decode and SQL, one punch per transaction, from the same broker.
    let naive_rate = naive(&broker, &naive_url, naive_n).await?;

    let mut idle_ms = idle.clone();
    println!("machine: {}", rollcall_tests::cpu());
    println!(
        "writers: {writers}; postgres: {}",
        if tuned {
            "shared_buffers=1GB wal_buffers=64MB max_wal_size=8GB"
        } else {
            "harness defaults (shared_buffers=64MB)"
        }
    );
    println!(
        "punches: {total} in {} batches of {BATCH} from {ROOMS} devices",
        batches.len()
    );
    println!("ledger rows: {ledger}, attendance_record rows: {records}");
    println!(
        "rollcall-ingest: {:.0} punches/s end to end ({:.2} s)",
        rate,
        elapsed.as_secs_f64()
    );
    println!(
        "replay of the same backlog (all duplicates): {:.0} punches/s",
        replay_rate
    );
    println!(
        "naive (one punch per transaction): {:.0} punches/s over {naive_n} punches",
        naive_rate
    );
    println!("speed-up: {:.1}x", rate / naive_rate);
    println!(
        "idle publish->ack (1-punch batches, 200 samples): p50 {:.2} ms, p99 {:.2} ms",
        pct(&mut idle_ms, 0.5),
        pct(&mut idle_ms, 0.99)
    );
    println!(
        "steady 5,000 punches/s (50 devices x 10-punch batch every 100 ms, {} batches) publish->ack: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        steady.len(),
        pct(&mut steady, 0.5),
        pct(&mut steady, 0.99),
        pct(&mut steady, 1.0)
    );
    println!(
        "backlog drain publish->ack (queueing included, {} batches): p50 {:.0} ms, p99 {:.0} ms",
        drain.len(),
        pct(&mut drain, 0.5),
        pct(&mut drain, 0.99)
    );
    if terminals > 0 {
        println!(
            "terminals: {terminals} ZKTeco terminals x {terminal_records} records in {zk_batches} ATTLOG uploads of {terminal_batch}, \
             alongside the gateways' backlog; ledger rows {zk_ledger}, adms_record rows {zk_stored}"
        );
        println!(
            "terminal records: {:.0} records/s ({:.2} s for all terminals)",
            zk_total as f64 / zk_elapsed.as_secs_f64(),
            zk_elapsed.as_secs_f64()
        );
        println!(
            "terminal upload -> OK (after COMMIT) under load, {} uploads: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            zk_rtt.len(),
            pct(&mut zk_rtt, 0.5),
            pct(&mut zk_rtt, 0.99),
            pct(&mut zk_rtt, 1.0)
        );
        println!(
            "terminal realtime upload -> OK, idle (1 record, 100 samples): p50 {:.2} ms, p99 {:.2} ms",
            pct(&mut idle_terminal, 0.5),
            pct(&mut idle_terminal, 0.99)
        );
    }
    for line in m.lines().filter(|l| {
        l.starts_with("rollcall_ingest_ack_after_commit_seconds_sum")
            || l.starts_with("rollcall_ingest_ack_after_commit_seconds_count")
            || l.starts_with("rollcall_ingest_commit_seconds_sum")
            || l.starts_with("rollcall_ingest_commit_seconds_count")
            || l.starts_with("rollcall_ingest_batch_punches_sum")
            || l.starts_with("rollcall_ingest_batch_punches_count")
    }) {
        println!("  {line}");
    }
    c.execute("SELECT 1", &[]).await?;
    let _ = &mut c;
    Ok(())
}

async fn naive(broker: &Mosquitto, url: &str, n: usize) -> anyhow::Result<f64> {
    let (mut c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    let settings = WriterSettings {
        node: "naive".into(),
        tz: chrono_tz::Asia::Kolkata,
        clock: rollcall_ingest::config::SessionClock::Utc,
        default_grace_minutes: 5,
        early_arrival_minutes: 15,
        max_future_skew_s: 300,
        demo_devices: Default::default(),
    };
    let mut o = MqttOptions::new("bench-naive", "127.0.0.1", broker.port());
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(o, 1000);
    client
        .subscribe("rollcall/v1/+/+/punches", QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = el.poll().await? {
            break;
        }
    }
    let pubr = publisher(broker.port(), "naive-pub").await;
    let ps = room_punches(1, n);
    let t0 = Instant::now();
    for chunk in ps.chunks(BATCH) {
        let b = v1::PunchBatch {
            device_id: "gw-1".into(),
            epoch: 1,
            punches: chunk.to_vec(),
        };
        pubr.publish(
            topic::build("bench", "gw-1", topic::Kind::Punches),
            QoS::AtLeastOnce,
            false,
            b.encode(),
        )
        .await?;
    }
    let mut done = 0;
    while done < n {
        if let Event::Incoming(Packet::Publish(p)) = el.poll().await? {
            let b = v1::PunchBatch::decode(&p.payload)?;
            for punch in b.punches {
                let one = v1::PunchBatch {
                    device_id: b.device_id.clone(),
                    epoch: b.epoch,
                    punches: vec![punch],
                };
                let env = Envelope::new(&p.topic, one.encode().into());
                write_batch(&mut c, &[env], &settings, chrono::Utc::now()).await?;
                done += 1;
            }
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}
