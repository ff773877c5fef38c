//! A real Mosquitto broker, started by the test as a child process on a free loopback port in a
//! temporary directory, so each test has its own broker that it can kill and restart.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::free_port;

/// A running (or stopped) Mosquitto of one test.
#[derive(Debug)]
pub struct Mosquitto {
    dir: tempfile::TempDir,
    port: u16,
    tls: Option<(u16, PathBuf)>,
    child: Option<Child>,
}

/// Finds the mosquitto binary (Debian puts it in /usr/sbin, often not on a user's PATH).
pub fn binary() -> anyhow::Result<PathBuf> {
    for candidate in [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ] {
        let p = PathBuf::from(candidate);
        if p.exists() {
            return Ok(p);
        }
    }
    let out = Command::new("sh")
        .args(["-c", "command -v mosquitto"])
        .output()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() {
        bail!(
            "mosquitto not found: install it with `apt-get install mosquitto` (the README's test command does)"
        );
    }
    Ok(PathBuf::from(path))
}

impl Mosquitto {
    /// Starts a broker with persistence in its own temporary directory.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// Starts a broker with two listeners: the plain one of [`Mosquitto::start`] (anonymous, no
    /// ACL: for the test's own clients) and a TLS one that requires a client certificate signed
    /// by `pki`'s CA, takes the certificate's CN as the user name, and lets each device publish
    /// and read only its own topics (`pattern ... rollcall/v1/+/%u/...`).
    pub fn start_tls(pki: &crate::pki::Pki) -> anyhow::Result<Self> {
        Self::start_with(Some((free_port()?, pki.dir().to_owned())))
    }

    fn start_with(tls: Option<(u16, PathBuf)>) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("rollcall-mosquitto")
            .tempdir()?;
        let mut broker = Self {
            dir,
            port: free_port()?,
            tls,
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// The TLS listener's port, if any.
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|t| t.0)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let conf = self.dir.path().join("mosquitto.conf");
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        // Running as root, mosquitto would switch to the `mosquitto` user, who cannot write
        // into our temporary directory; `user` keeps the current user.
        let user = if is_root() { "user root\n" } else { "" };
        let tls = match &self.tls {
            None => String::new(),
            Some((port, pki)) => {
                let acl = self.dir.path().join("acl");
                std::fs::write(&acl, rollcall_protocol::topic::device_acl())?;
                format!(
                    "listener {port} 127.0.0.1\ncafile {pki}/ca.pem\ncertfile {pki}/server.pem\n\
                     keyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n\
                     acl_file {acl}\n",
                    pki = pki.display(),
                    acl = acl.display(),
                )
            }
        };
        let per_listener = if self.tls.is_some() {
            "per_listener_settings true\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "{user}{per_listener}set_tcp_nodelay true\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {data}/\nautosave_interval 1\nmax_queued_messages 0\n\
                 max_inflight_messages 0\nmessage_size_limit 0\nlog_dest file {dir}/mosquitto.log\n\
                 log_type error\nlog_type warning\nlog_type notice\n{tls}",
                port = self.port,
                data = data.display(),
                dir = self.dir.path().display(),
            ),
        )?;
        let child = Command::new(binary()?)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("mosquitto exited at start ({status}); log: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "mosquitto did not listen on port {} within 10 s; log: {}",
            self.port,
            self.log()
        )
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id while it runs (for resource figures read from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `mqtt://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// kill -9: no goodbye, no persistence flush beyond what autosave wrote.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean stop that saves the persistence file.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port with the same persistence directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}
