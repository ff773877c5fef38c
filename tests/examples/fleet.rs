//! Fleet-scale load (issue 11, point 2): hundreds of simulated gateways tap a campus's students
//! in at the start of a period, through real Mosquitto and rollcall-ingest replicas into real
//! PostgreSQL. See `rollcall_tests::fleet` for what is simulated and what is measured.
//!
//! ```sh
//! cargo run --release -p rollcall-tests --example fleet -- --gateways 300 --students 12000 \
//!     --replicas 2 --minutes 10 [--time-scale K] [--seed N] [--writers N] [--pool N]
//!     [--ack-timeout SECONDS]
//! ```
//!
//! `--gateways`, `--students`, `--replicas` and `--time-scale` take comma-separated lists; every
//! combination is run (each on a fresh PostgreSQL and broker) and the table printed at the end.
//! With `--per-room N`, `--students` is ignored and each gateway's room holds N students.
//! Exits non-zero if any punch was not acked, or not recorded exactly once.

use std::time::Duration;

use rollcall_tests::fleet::{self, FleetConfig, Report};

fn value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn list<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<Vec<T>> {
    match value(args, name) {
        None => Ok(vec![default]),
        Some(v) => v
            .split(',')
            .map(|x| {
                x.trim().parse().map_err(|_| {
                    anyhow::anyhow!("{name} {x:?}: not a number (e.g. {name} 100,300)")
                })
            })
            .collect(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn row(cfg: &FleetConfig, r: &Report) -> String {
    let res = &r.resources;
    let s = r.elapsed.as_secs_f64().max(1e-9);
    format!(
        "| {} | {} | {} | {} | {:.0} s | {:.0} | {:.0} | {} / {} / {} / {} | {} | {:.1} s | {:.0} % / {:.0} % / {:.0} % / {:.0} % | {:.0} / {:.0} / {:.0} | {:.1} | {:.2} / {:.2} | {} |",
        cfg.gateways,
        r.punches,
        cfg.replicas,
        cfg.time_scale,
        r.window.as_secs_f64(),
        r.offered_peak_per_s,
        r.peak_acked_per_s,
        ms(r.latency[0]),
        ms(r.latency[1]),
        ms(r.latency[2]),
        ms(r.latency[3]),
        r.peak_backlog,
        r.drain_after_last_tap.as_secs_f64(),
        100.0 * res.broker_cpu_s / s,
        100.0 * res.postgres_cpu_s / s,
        100.0 * res.ingest_cpu_s / s,
        100.0 * res.generator_cpu_s / s,
        res.broker_rss_mib,
        res.postgres_pss_mib,
        res.ingest_rss_mib,
        r.transaction_punches / r.transactions.max(1.0),
        r.load.0,
        r.load.1,
        if r.complete() { "yes" } else { "**NO**" },
    )
}

const HEADER: &str = "| gateways | punches | replicas | time scale | period | offered peak /s | acked peak /s | reader-to-row p50 / p95 / p99 / max ms | peak backlog | drain after last tap | CPU of a core: broker / PostgreSQL / ingest / gateways | peak MiB: broker RSS / PostgreSQL PSS / ingest RSS | punches per transaction | load before / after | all recorded once |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let gateways = list(&args, "--gateways", 300usize)?;
    let students = list(&args, "--students", 12_000usize)?;
    let replicas = list(&args, "--replicas", 2usize)?;
    let scales = list(&args, "--time-scale", 1.0f64)?;
    let per_room: Option<usize> = value(&args, "--per-room").map(str::parse).transpose()?;
    let minutes: f64 = value(&args, "--minutes")
        .map(str::parse)
        .transpose()?
        .unwrap_or(10.0);
    let base = FleetConfig {
        period: Duration::from_secs_f64(minutes * 60.0),
        seed: value(&args, "--seed")
            .map(str::parse)
            .transpose()?
            .unwrap_or(1),
        writers: value(&args, "--writers")
            .map(str::parse)
            .transpose()?
            .unwrap_or(2),
        pool_size: value(&args, "--pool")
            .map(str::parse)
            .transpose()?
            .unwrap_or(4),
        ..FleetConfig::default()
    };
    let mut base = base;
    if let Some(s) = value(&args, "--ack-timeout")
        .map(str::parse::<u64>)
        .transpose()?
    {
        base.uplink.ack_timeout = Duration::from_secs(s);
        base.uplink.ack_timeout_max = Duration::from_secs(s * 12);
    }
    println!("machine: {}", rollcall_tests::cpu());
    println!(
        "latency: scheduled tap -> the gateway's first ack covering the punch (acks follow COMMIT)"
    );
    let mut rows = Vec::new();
    let mut all_ok = true;
    for &g in &gateways {
        for &s in &students {
            for &rep in &replicas {
                for &k in &scales {
                    let cfg = FleetConfig {
                        gateways: g,
                        students: per_room.map(|n| n * g).unwrap_or(s),
                        replicas: rep,
                        time_scale: k,
                        ..base.clone()
                    };
                    println!(
                        "\n== {} gateways, {} students, {} replicas, {} min period{}",
                        cfg.gateways,
                        cfg.students,
                        cfg.replicas,
                        minutes,
                        if k == 1.0 {
                            " (real time)".to_string()
                        } else {
                            format!(" COMPRESSED {k}x into {:.1} s", minutes * 60.0 / k)
                        }
                    );
                    let dir = tempfile::tempdir()?;
                    let r = fleet::run(&cfg, dir.path()).await?;
                    print_run(&r);
                    all_ok &= r.complete();
                    rows.push(row(&cfg, &r));
                }
            }
        }
    }
    println!("\n{HEADER}");
    for r in &rows {
        println!("{r}");
    }
    anyhow::ensure!(
        all_ok,
        "some punch was not acked, or not recorded exactly once (see above)"
    );
    Ok(())
}

fn print_run(r: &Report) {
    let res = &r.resources;
    let s = r.elapsed.as_secs_f64();
    println!(
        "punches {} acked {}; ledger rows {}, recorded {}, attendance present/late {}",
        r.punches, r.acked, r.ledger.0, r.ledger.1, r.ledger.2
    );
    println!(
        "offered peak {:.0}/s (5 s window); acked peak {:.0}/s (5 s window); mean {:.0}/s over {:.1} s (first tap to last ack)",
        r.offered_peak_per_s,
        r.peak_acked_per_s,
        r.punches as f64 / s.max(1e-9),
        s
    );
    println!(
        "reader-to-row: p50 {} ms, p95 {} ms, p99 {} ms, max {} ms; peak backlog {} punches; last ack {:.2} s after the last tap",
        ms(r.latency[0]),
        ms(r.latency[1]),
        ms(r.latency[2]),
        ms(r.latency[3]),
        r.peak_backlog,
        r.drain_after_last_tap.as_secs_f64()
    );
    println!(
        "batches published {} (re-sends after ack timeout: {}); load generator's worst tap lag {} ms",
        r.batches,
        r.retransmits,
        ms(r.tap_lag)
    );
    println!(
        "CPU s (share of one core): broker {:.1} ({:.0} %), PostgreSQL {:.1} ({:.0} %), ingest {:.1} ({:.0} %), gateways {:.1} ({:.0} %)",
        res.broker_cpu_s,
        100.0 * res.broker_cpu_s / s,
        res.postgres_cpu_s,
        100.0 * res.postgres_cpu_s / s,
        res.ingest_cpu_s,
        100.0 * res.ingest_cpu_s / s,
        res.generator_cpu_s,
        100.0 * res.generator_cpu_s / s
    );
    println!(
        "peak memory: broker RSS {:.1} MiB, PostgreSQL PSS {:.0} MiB, largest ingest RSS {:.1} MiB",
        res.broker_rss_mib, res.postgres_pss_mib, res.ingest_rss_mib
    );
    println!(
        "ingest transactions {:.0}, {:.1} punches and {:.1} ms each on average; load average {:.2} -> {:.2}",
        r.transactions,
        r.transaction_punches / r.transactions.max(1.0),
        1000.0 * r.transaction_seconds / r.transactions.max(1.0),
        r.load.0,
        r.load.1
    );
}
