//! The chaos soak's long variant (issue 11; see `rollcall_tests::chaos`):
//!
//! ```text
//! cargo run --release -p rollcall-tests --example chaos -- --minutes 60 --faults 200 [--seed N]
//! ```
//!
//! `--kills` is another name for `--faults`; `--backlog` (punches, default 100,000) and
//! `--backlog-minutes` (default 15) bound the broker outage.
//!
//! Prints the verdict and exits 1 on any lost or duplicated punch (2 when the harness fails).

use rollcall_tests::chaos::{self, SoakConfig};

fn main() {
    let mut minutes = 60;
    let mut faults = 200;
    let mut seed = chaos::seed_from_env_or_clock();
    let mut backlog = None;
    let mut backlog_minutes = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--minutes", Some(v)) => minutes = v,
            ("--faults" | "--kills", Some(v)) => faults = v as u32,
            ("--seed", Some(v)) => seed = v,
            ("--backlog", Some(v)) => backlog = Some(v),
            ("--backlog-minutes", Some(v)) => backlog_minutes = Some(v),
            _ => {
                eprintln!(
                    "usage: chaos [--minutes N] [--faults N] [--seed N] [--backlog PUNCHES] [--backlog-minutes N]"
                );
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut config = SoakConfig::long(seed, minutes, faults);
    if let Some(b) = backlog {
        config.backlog = b;
    }
    if let Some(m) = backlog_minutes {
        config.backlog_cap = std::time::Duration::from_secs(m * 60);
    }
    match runtime.block_on(chaos::run(config)) {
        Ok(verdict) => {
            println!("{verdict}");
            std::process::exit(if verdict.passed() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("chaos soak harness failed: {e:#}");
            std::process::exit(2);
        }
    }
}
