//! rollcall-ingest run in-process for the MQTT tests.

use rollcall_ingest::config::Config;
use rollcall_ingest::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn config(db_url: &str, broker: &str, node: &str, jobs: bool) -> String {
    format!(
        "node_name = \"{node}\"\n[database]\nurl = \"{db_url}\"\npool_size = 4\nschema_mode = \"existing\"\n\
         [mqtt]\nurl = \"{broker}\"\n[ingest]\nlinger_ms = 2\n\
         [jobs]\nenabled = {jobs}\nopen_close_every_s = 1\ngenerate_sessions_every_s = 0\nstatistics_every_s = 0\n\
         retention_every_s = 0\ndevice_health_every_s = 0\n"
    )
}

pub struct Ingest {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), rollcall_ingest::IngestError>>,
    pub metrics: Arc<Metrics>,
}

pub fn start(toml: &str) -> Ingest {
    let cfg = Config::from_toml(toml).unwrap();
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let task = tokio::spawn(rollcall_ingest::run_with_metrics(
        cfg,
        metrics.clone(),
        stop.clone(),
    ));
    Ingest {
        stop,
        task,
        metrics,
    }
}

impl Ingest {
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("graceful shutdown in time")
            .unwrap()
            .unwrap();
    }
}

/// Runs the `rollcall-ingest` binary with `args` and `-c config`; its stdout and stderr. Panics
/// (saying both) unless it succeeds.
pub fn cli(config: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(rollcall_tests::binaries::ingest())
        .args(args)
        .arg("-c")
        .arg(config)
        .output()
        .expect("run rollcall-ingest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "rollcall-ingest {args:?}: {text}");
    text
}

/// rollcall-ingest with `[credentials]`: a key file made by `credentials init-key` in `dir`,
/// rosters refreshed every second, `extra` lines added to the section. Returns the written
/// configuration (for the command line) and the running service.
pub fn with_credentials(
    dir: &std::path::Path,
    db_url: &str,
    broker: &str,
    node: &str,
    extra: &str,
) -> (std::path::PathBuf, Ingest) {
    let keys = dir.join("credential-keys");
    cli(
        &keys,
        &[
            "credentials",
            "init-key",
            keys.to_str().expect("utf-8 path"),
        ],
    );
    let toml = format!(
        "{}[credentials]\nkey_file = \"{}\"\nroster_every = \"1s\"\n{extra}",
        config(db_url, broker, node, false),
        keys.display()
    );
    let path = dir.join("ingest.toml");
    std::fs::write(&path, &toml).expect("write ingest.toml");
    (path, start(&toml))
}
