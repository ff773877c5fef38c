//! Runs the real rollcalld binary as a child process, with a config written for the test, and
//! talks to it through its control socket, as a person at a terminal would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// What a test may vary in a gateway's configuration.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// `device.id`, and so the topics the gateway publishes on (default `room-101`).
    pub device_id: String,
    /// Broker port on 127.0.0.1.
    pub broker_port: u16,
    /// `journal.capacity`: unacked punches before the gateway answers storage full.
    pub capacity: u64,
    /// Duplicate window, humantime (e.g. "0s").
    pub duplicate_window: String,
    /// Ack timeout, humantime.
    pub ack_timeout: String,
    /// Metrics port, if any.
    pub metrics_port: Option<u16>,
    /// `mqtt.batch_max`: most punches per published batch.
    pub batch_max: u64,
    /// Batches in flight.
    pub window: usize,
    /// TLS: (CA, client certificate, client key); plain TCP to loopback when `None`.
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
    /// `[[reader]]` tables replacing the default simulated card and fingerprint readers.
    pub readers: Option<String>,
    /// `roster.source = "centre"` (the test plays the centre) instead of the roster file.
    pub roster_from_centre: bool,
}

impl GatewayOptions {
    /// Defaults for a test gateway on `broker_port`.
    pub fn new(broker_port: u16) -> Self {
        Self {
            device_id: "room-101".into(),
            broker_port,
            capacity: 1_000_000,
            duplicate_window: "0s".into(),
            ack_timeout: "2s".into(),
            metrics_port: None,
            batch_max: 100,
            window: 8,
            tls: None,
            readers: None,
            roster_from_centre: false,
        }
    }

    /// Writes `<dir>/rollcalld.toml` (state in `<dir>/state`) and returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let state = dir.join("state");
        std::fs::create_dir_all(&state)?;
        std::fs::write(
            state.join("roster.toml"),
            "[cards]\n\"0000000001\" = \"S001\"\n\"0000000002\" = \"S002\"\n[fingerprints]\n\"1\" = \"S001\"\n",
        )?;
        let metrics = self
            .metrics_port
            .map_or(String::new(), |p| format!("127.0.0.1:{p}"));
        let text = format!(
            r#"
[device]
id = "{id}"
site = "test-site"
state_dir = "{state}"
[journal]
capacity = {capacity}
[mqtt]
host = "127.0.0.1"
port = {port}
{transport}
keep_alive = "5s"
ack_timeout = "{ack_timeout}"
batch_max = {batch_max}
window = {window}
status_interval = "2s"
[roster]
{roster}
[capture]
duplicate_window = "{dup}"
[metrics]
listen = "{metrics}"
{readers}
"#,
            id = self.device_id,
            state = state.display(),
            capacity = self.capacity,
            port = self.broker_port,
            ack_timeout = self.ack_timeout,
            batch_max = self.batch_max,
            window = self.window,
            readers = self.readers.clone().unwrap_or_else(|| {
                "[[reader]]\nid = \"door-card\"\nkind = \"simulated-card\"\n\
                 [[reader]]\nid = \"door-finger\"\nkind = \"simulated-fingerprint\"\n"
                    .to_owned()
            }),
            transport = match &self.tls {
                None => "allow_plaintext = true".to_owned(),
                Some((ca, cert, key)) => format!(
                    "tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}",
                    ca.display(),
                    cert.display(),
                    key.display()
                ),
            },
            dup = self.duplicate_window,
            roster = if self.roster_from_centre {
                "source = \"centre\"".to_owned()
            } else {
                format!(
                    "source = \"file\"\npath = \"{}/roster.toml\"",
                    state.display()
                )
            },
        );
        let path = dir.join("rollcalld.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

/// A rollcalld child process, its control socket and its log file; killed when dropped.
#[derive(Debug)]
pub struct Rollcalld {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Rollcalld {
    /// Starts `binary run --config <config>` and waits until its control socket answers.
    pub async fn start(binary: &Path, config: &Path) -> anyhow::Result<Self> {
        Self::start_with(binary, config, &[], &[]).await
    }

    /// As [`Rollcalld::start`], with extra `run` flags and environment variables.
    pub async fn start_with(
        binary: &Path,
        config: &Path,
        flags: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = config.parent().context("config has a directory")?;
        let socket = dir.join("state").join("control.sock");
        Self::start_inner(binary, config, socket, flags, envs).await
    }

    /// As [`Rollcalld::start_with`], for a config whose `[control] socket` is `socket`.
    pub async fn start_at(
        binary: &Path,
        config: &Path,
        socket: &Path,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::start_inner(binary, config, socket.to_owned(), &[], envs).await
    }

    async fn start_inner(
        binary: &Path,
        config: &Path,
        socket: PathBuf,
        flags: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = config.parent().context("config has a directory")?;
        let log = dir.join("rollcalld.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .args(flags)
            .envs(envs.iter().copied())
            .env(
                "ROLLCALL_LOG",
                "info,rollcall_daemon::capture=warn,rumqttc=warn",
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("starting rollcalld")?;
        let mut me = Self {
            child: Some(child),
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(reply) = me.command("status").await
                && reply.starts_with("epoch=")
            {
                return Ok(me);
            }
            if let Some(child) = me.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("rollcalld exited at start ({status}); log:\n{}", me.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "rollcalld did not open its control socket in 20 s; log:\n{}",
                    me.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends one control command and returns the reply line.
    pub async fn command(&self, line: &str) -> anyhow::Result<String> {
        let stream = UnixStream::connect(&self.socket).await?;
        let (read, mut write) = stream.into_split();
        write.write_all(format!("{line}\n").as_bytes()).await?;
        let mut lines = BufReader::new(read).lines();
        Ok(lines.next_line().await?.unwrap_or_default())
    }

    /// The journal counters from the `status` command, as (last_seq, acked, depth).
    pub async fn journal(&self) -> anyhow::Result<(u64, u64, u64)> {
        let reply = self.command("status").await?;
        let get = |key: &str| -> anyhow::Result<u64> {
            reply
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{key} in {reply:?}"))
        };
        Ok((get("last_seq=")?, get("acked=")?, get("depth=")?))
    }

    /// Waits up to a minute for the journal counters to become `want` (last_seq, acked, depth).
    pub async fn wait_journal(&self, want: (u64, u64, u64)) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.journal().await?;
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "journal is {got:?}, expected {want:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        Ok(child.wait()?)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rollcalld {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A tap's parsed reply: `<outcome> <seq|-> <subject>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// accepted, unknown, duplicate, storage_full, failed.
    pub outcome: String,
    /// Seq when stored.
    pub seq: Option<u64>,
    /// The subject as printed.
    pub subject: String,
}

/// Parses a tap reply; `None` for an error line.
pub fn parse_reply(line: &str) -> Option<Reply> {
    let mut words = line.split_whitespace();
    let outcome = words.next()?.to_owned();
    if outcome == "error:" {
        return None;
    }
    let seq = words.next()?.parse().ok();
    let subject = words.next().unwrap_or_default().to_owned();
    Some(Reply {
        outcome,
        seq,
        subject,
    })
}
