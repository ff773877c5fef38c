//! The real rollcall-ingest binary as a child process, watched from outside as an operator
//! would: its exit status, its log, its peak memory (VmHWM) and its `/metrics`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Metric ingest counts its broker connections with (a CONNACK each).
pub const CONNECTS: &str = "rollcall_ingest_broker_connects_total";
/// The log line ingest writes on every CONNACK.
pub const CONNECTED_LINE: &str = "connected to broker";

pub struct IngestProcess {
    child: Mutex<Child>,
    pid: u32,
    log: PathBuf,
    pub metrics_port: u16,
}

impl IngestProcess {
    /// Writes `toml` to `<dir>/ingest.toml` and runs `rollcall-ingest -c <it> run` with the log
    /// at info level (the connect line is info) in `<dir>/ingest.log`.
    pub fn start(binary: &Path, dir: &Path, toml: &str, metrics_port: u16) -> IngestProcess {
        let config = dir.join("ingest.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.join("ingest.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .arg("run")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            // The test's RUST_BACKTRACE would bury a start error under frames in the log tail.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting rollcall-ingest");
        IngestProcess {
            pid: child.id(),
            child: Mutex::new(child),
            log,
            metrics_port,
        }
    }

    /// The exit status, if the process has ended.
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many times the log says ingest connected to the broker.
    pub fn connects_in_log(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(CONNECTED_LINE) && !l.contains("disconnected"))
            .count()
    }

    /// Peak resident memory in KiB (VmHWM of /proc/<pid>/status), while the process runs.
    pub fn vm_hwm_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// Whether it is running, and the end of its log: for failure messages.
    pub fn diagnose(&self) -> String {
        let state = match self.exited() {
            None => "rollcall-ingest is running".to_owned(),
            Some(s) => format!("rollcall-ingest EXITED with {s}"),
        };
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("{state}; last lines of its log:\n{tail}")
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        scrape(self.metrics_port).await
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// `GET /metrics` on 127.0.0.1:`port`; the body.
pub async fn scrape(port: u16) -> Result<String, String> {
    let get = async {
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        sock.write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await?;
        let mut text = String::new();
        sock.read_to_string(&mut text).await?;
        Ok::<_, std::io::Error>(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .map_err(|_| format!("GET /metrics on port {port} took over 5 s"))?
        .map_err(|e| format!("GET /metrics on port {port}: {e}"))?;
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(format!("GET /metrics on port {port} answered: {text:.300}")),
    }
}

/// The value of a sample line `name value` (no labels) in a metrics text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse().ok()).flatten()
    })
}
