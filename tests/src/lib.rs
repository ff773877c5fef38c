//! Rollcall's whole-system test harness: real services as child processes on free ports.
//!
//! * [`mosquitto`]: a Mosquitto broker per test, killable and restartable.
//! * [`postgres`]: a PostgreSQL server per test (initdb in a temporary directory).
//! * [`pki`]: a throwaway CA and certificates for TLS tests (openssl CLI).
//! * [`acker`]: a stand-in for the centre that acks what it receives (tests only).
//! * [`rollcalld`]: runs the real rollcalld binary as a child process.
//! * [`chaos`]: the chaos soak (issue 11): every part real, faults at random moments, a verdict.
//! * [`binaries`]: finds (building if needed) the workspace's binaries.
//! * [`ef01`]: an EF01 fingerprint module simulator on a pseudo-terminal.
//! * [`chromium`]: headless Chromium's DOM dump and screenshot, for the fleet page's test.
//! * [`fixtures`]: one valid punch to start from.
//! * [`fleet`]: the fleet-scale load benchmark: hundreds of simulated gateways at the start of a
//!   period, real broker, ingest replicas and PostgreSQL.
//! * [`zkteco`]: a ZKTeco PUSH (ADMS) terminal speaking the protocol like firmware.
//! * [`free_port`] and [`skip`]: a port to listen on; a missing input that must not pass
//!   silently under CI.

pub mod acker;
pub mod binaries;
pub mod chaos;
pub mod chromium;
pub mod ef01;
pub mod fixtures;
pub mod fleet;
pub mod mosquitto;
pub mod pki;
pub mod postgres;
pub mod rollcalld;
pub mod zkteco;

/// This machine's processors for a benchmark's report: `<count> x <model name>` from
/// `/proc/cpuinfo` (`?` for a model it does not name).
pub fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    let n = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{n} x {model}")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether this is a CI run (`CI=true`, as GitHub Actions, GitLab CI and most others set it).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Skips the part of a test that needs an input this machine lacks, saying so; under CI a
/// skip is a failure, so a green CI run never hides a test that did not run. `what` is the
/// part skipped, `missing` what is absent, `how` how to provide it.
pub fn skip(what: &str, missing: &str, how: &str) {
    if under_ci() {
        panic!("{what} cannot run: {missing}. {how}. (Under CI, CI=true, a skipped test fails.)");
    }
    println!("SKIPPED {what}: {missing}. {how}.");
}
