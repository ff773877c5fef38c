//! Edge benchmarks (DESIGN.md targets): `cargo bench -p rollcall-daemon --bench edge`.
//!
//! 1. accept path (event -> journal fsync -> indicator) p50/p99, one punch at a time, beside a
//!    bare append+fdatasync on the same disk;
//! 2. sustained journaling with group commit (many concurrent single-punch appends);
//! 3. a 1,000,000-punch backlog: reopen time, then rollcalld (the real binary) draining it to
//!    a Mosquitto on loopback with the test acker answering: drain rate and peak resident memory.
//!
//! Set ROLLCALL_BENCH_BACKLOG to change the backlog size (default 1000000).

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rollcall_daemon::capture::{Accept, ReaderInfo};
use rollcall_daemon::journal::Journal;
use rollcall_daemon::journal::actor::JournalHandle;
use rollcall_daemon::metrics::Metrics;
use rollcall_daemon::roster::Roster;
use rollcall_drivers::ReaderEvent;
use rollcall_protocol::v1::{Punch, Subject};
use rollcall_tests::acker::Acker;
use rollcall_tests::mosquitto::Mosquitto;
use rollcall_tests::rollcalld::{GatewayOptions, Rollcalld};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn punch(n: u64) -> Punch {
    Punch {
        seq: 0,
        subject: Subject::Student(format!("2024CS{:05}", n % 100_000)),
        ..rollcall_tests::fixtures::punch(n)
    }
}

fn bare_fsync(dir: &Path, n: usize) -> Vec<Duration> {
    let f = std::fs::File::create(dir.join("bare-fsync")).expect("create");
    let record = [0x5Au8; 256];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f.write_all_at(&record, (i * record.len()) as u64)
            .expect("write");
        f.sync_data().expect("fdatasync");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn accept_path(dir: &Path, n: usize) -> Vec<Duration> {
    let journal = Journal::open(&dir.join("accept.redb"), 10_000_000).expect("journal");
    let handle = JournalHandle::spawn(journal);
    let (tx, mut signals) = tokio::sync::mpsc::channel(16);
    let roster = Roster::from_pairs(
        (0..1000u32).map(|i| (i.to_be_bytes().to_vec(), format!("S{i}"))),
        [],
    );
    let accept = Accept::new(
        handle,
        roster,
        [1; 32],
        Duration::ZERO,
        vec![tx],
        Arc::new(Metrics::default()),
    );
    let reader = ReaderInfo {
        id: "door-card".into(),
        kind: "rdm6300".into(),
        simulated: false,
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let event = ReaderEvent::Card {
            uid: ((i % 1000) as u32).to_be_bytes().to_vec(),
        };
        let t = Instant::now();
        accept.handle_burst(&reader, vec![event]).await;
        signals.recv().await.expect("signal");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn sustained(dir: &Path, total: u64, producers: u64) -> f64 {
    let handle = JournalHandle::spawn(
        Journal::open(&dir.join("sustained.redb"), 100_000_000).expect("journal"),
    );
    let t = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let h = handle.clone();
            tokio::spawn(async move {
                for i in 0..total / producers {
                    let seqs = h
                        .append(vec![punch(p * 1_000_000 + i)])
                        .await
                        .expect("append");
                    assert!(seqs[0].is_some());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("producer");
    }
    let rate = (total / producers * producers) as f64 / t.elapsed().as_secs_f64();
    assert_eq!(handle.stats().borrow().depth, total / producers * producers);
    rate
}

fn build_backlog(path: &Path, n: u64) -> Duration {
    let t = Instant::now();
    let mut j = Journal::open(path, n + 1).expect("journal");
    let mut i = 0;
    while i < n {
        let chunk = (n - i).min(20_000);
        let mut batch: Vec<Punch> = (i..i + chunk).map(punch).collect();
        assert_eq!(j.append(&mut batch).expect("append"), chunk as usize);
        i += chunk;
    }
    t.elapsed()
}

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(key)?
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()
    })
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base)?;
    let dir = tempfile::tempdir_in(base)?;
    let backlog = env_or("ROLLCALL_BENCH_BACKLOG", 1_000_000);
    let mut report = String::new();
    let mut line = |s: String| {
        println!("{s}");
        report.push_str(&s);
        report.push('\n');
    };

    line("| measurement | result | target |".into());
    line("|---|---|---|".into());
    let bare = bare_fsync(dir.path(), 2000);
    line(format!(
        "| bare 256 B append + fdatasync, p50 / p99 | {} / {} | (reference) |",
        ms(percentile(&bare, 0.5)),
        ms(percentile(&bare, 0.99))
    ));
    let accept = runtime.block_on(accept_path(dir.path(), 2000));
    line(format!(
        "| accept path (event -> journal fsync -> signal), p50 / p99 | {} / {} | p99 < 2 ms |",
        ms(percentile(&accept, 0.5)),
        ms(percentile(&accept, 0.99))
    ));
    let rate = runtime.block_on(sustained(dir.path(), 400_000, 256));
    line(format!(
        "| sustained journaling, 256 concurrent producers, group commit | {rate:.0} punches/s | >= 20,000/s |"
    ));

    let state = dir.path().join("gw").join("state");
    std::fs::create_dir_all(&state)?;
    let journal_path = state.join("journal.redb");
    let built = build_backlog(&journal_path, backlog);
    let size = std::fs::metadata(&journal_path)?.len();
    let t = Instant::now();
    let j = Journal::open(&journal_path, backlog + 1)?;
    let reopen = t.elapsed();
    assert_eq!(j.depth(), backlog);
    drop(j);
    line(format!(
        "| {backlog}-punch backlog: file size (built in {:.1} s) | {:.0} MB | |",
        built.as_secs_f64(),
        size as f64 / 1e6
    ));
    line(format!(
        "| {backlog}-punch backlog: reopen after a clean close | {} | < 1 s |",
        ms(reopen)
    ));
    let crash_reopen = runtime.block_on(async {
        // rollcalld opens the journal and is killed -9 (no broker: nothing is deleted).
        let opts = GatewayOptions {
            capacity: backlog + 1,
            ..GatewayOptions::new(rollcall_tests::free_port()?)
        };
        let config = opts.write(&dir.path().join("gw"))?;
        let mut gw = Rollcalld::start(Path::new(env!("CARGO_BIN_EXE_rollcalld")), &config).await?;
        gw.command("card door-card 00000000FF").await?;
        gw.kill9();
        let t = Instant::now();
        let j = Journal::open(&journal_path, backlog + 2)?;
        let took = t.elapsed();
        anyhow::ensure!(
            j.depth() == backlog + 1,
            "depth {} after the crash",
            j.depth()
        );
        Ok::<_, anyhow::Error>(took)
    })?;
    line(format!(
        "| {backlog}-punch backlog: reopen after kill -9 of rollcalld | {} | < 1 s |",
        ms(crash_reopen)
    ));

    let (drain, hwm) = runtime.block_on(async {
        let broker = Mosquitto::start()?;
        let acker = Acker::start(broker.port()).await?;
        let mut opts = GatewayOptions::new(broker.port());
        opts.capacity = backlog + 2;
        opts.batch_max = env_or("ROLLCALL_BENCH_BATCH", 500);
        opts.window = env_or("ROLLCALL_BENCH_WINDOW", 8) as usize;
        opts.ack_timeout = "10s".into();
        let config = opts.write(&dir.path().join("gw"))?;
        let t = Instant::now();
        let gw = Rollcalld::start(Path::new(env!("CARGO_BIN_EXE_rollcalld")), &config).await?;
        let pid = gw_pid(&dir.path().join("gw"))?;
        let mut hwm = 0;
        loop {
            hwm = hwm.max(vm_kb(pid, "VmHWM:").unwrap_or(0));
            let (_, _, depth) = gw.journal().await?;
            if depth == 0 {
                break;
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(600),
                "drain took over 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elapsed = t.elapsed();
        hwm = hwm.max(vm_kb(pid, "VmHWM:").unwrap_or(0));
        anyhow::ensure!(
            acker.seen().deliveries >= backlog,
            "acker saw fewer punches than the backlog"
        );
        Ok::<_, anyhow::Error>(((backlog + 1) as f64 / elapsed.as_secs_f64(), hwm))
    })?;
    line(format!(
        "| {backlog}-punch backlog: drained by rollcalld to Mosquitto on loopback (acked) | {drain:.0} punches/s | >= 20,000/s |"
    ));
    line(format!(
        "| {backlog}-punch backlog: rollcalld peak resident memory (VmHWM) while draining | {:.1} MB | < 64 MB |",
        hwm as f64 / 1024.0
    ));
    let mut f = std::fs::File::create(base.join("edge-bench.md"))?;
    f.write_all(report.as_bytes())?;
    println!("(also written to {})", base.join("edge-bench.md").display());
    Ok(())
}

/// rollcalld's pid, found by its config path in /proc (the harness owns the Child).
fn gw_pid(dir: &Path) -> anyhow::Result<u32> {
    let config = dir.join("rollcalld.toml");
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&*config.to_string_lossy()) {
            return Ok(pid);
        }
    }
    anyhow::bail!("rollcalld's pid not found")
}
