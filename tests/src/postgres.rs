//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` as a
//! child process on a free loopback port (unix socket in the same directory), fsync on unless
//! asked otherwise, with kill -9, clean stop and restart; [`Postgres::start_tls`] serves TLS with a
//! given certificate (`ssl = on`).
//!
//! Binaries come from `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
//! `initdb` and `postgres` refuse to run as root; when the tests run as root (CI here does),
//! both are run as the existing `postgres` system user (Debian's postgresql package creates it)
//! and the temporary directory is handed to that user. No user is ever created.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let mut pg = rollcall_tests::postgres::Postgres::start()?;
//! let url = pg.create_database("ingest")?;
//! pg.kill()?; // kill -9 of the postmaster
//! pg.restart()?;
//! # let _ = url; Ok(()) }
//! ```

use anyhow::{Context, Result, anyhow, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options for [`Postgres::start_with`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `fsync` setting of the server (on by default: tests of durability need it).
    pub fsync: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            fsync: true,
            settings: Vec::new(),
        }
    }
}

/// A running (or stopped) test server. Dropping it stops the server and removes its files.
#[derive(Debug)]
pub struct Postgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    child: Option<Child>,
    run_as: Option<(u32, u32)>,
    opts: PgOptions,
}

/// The directory holding `initdb`, `postgres` and `psql`.
pub fn bindir() -> Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return Ok(p);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let b = e.path().join("bin");
                    b.join("initdb").exists().then_some((v, b))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        anyhow!("PostgreSQL server binaries not found: install postgresql (Debian: apt-get install postgresql)")
    })
}

/// Whether a PostgreSQL server can be started here (binaries present).
pub fn available() -> bool {
    bindir().is_ok()
}

fn is_root() -> bool {
    // No libc: /proc/self/status says who we are.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn postgres_user() -> Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("running as root and there is no `postgres` system user to run initdb/postgres as")
}

impl Postgres {
    /// initdb and start with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(PgOptions::default())
    }

    /// initdb and start with `ssl = on`, serving `cert` and `key` (PEM, e.g. from
    /// [`Pki`](crate::pki::Pki)); clients may still connect without TLS.
    pub fn start_tls(cert: &Path, key: &Path) -> Result<Self> {
        Self::start_inner(PgOptions::default(), Some((cert, key)))
    }

    /// initdb and start.
    pub fn start_with(opts: PgOptions) -> Result<Self> {
        Self::start_inner(opts, None)
    }

    fn start_inner(mut opts: PgOptions, tls: Option<(&Path, &Path)>) -> Result<Self> {
        let bindir = bindir()?;
        let dir = tempfile::Builder::new().prefix("rollcall-pg-").tempdir()?;
        let run_as = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        if let Some((cert, key)) = tls {
            // The server reads them as its own user and refuses a key others can read.
            let (c, k) = (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::copy(cert, &c).with_context(|| format!("copying {}", cert.display()))?;
            std::fs::copy(key, &k).with_context(|| format!("copying {}", key.display()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))?;
            if let Some((uid, gid)) = run_as {
                std::os::unix::fs::chown(&c, Some(uid), Some(gid))?;
                std::os::unix::fs::chown(&k, Some(uid), Some(gid))?;
            }
            for (name, value) in [
                ("ssl", "on".to_string()),
                ("ssl_cert_file", c.to_string_lossy().into_owned()),
                ("ssl_key_file", k.to_string_lossy().into_owned()),
            ] {
                opts.settings.push((name.into(), value));
            }
        }
        let mut pg = Postgres {
            dir,
            bindir,
            port: crate::free_port()?,
            child: None,
            run_as,
            opts,
        };
        let out = pg
            .command("initdb")
            .args([
                "-D",
                &pg.data_dir().to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .args(["--no-locale", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        pg.launch()?;
        Ok(pg)
    }

    fn command(&self, bin: &str) -> Command {
        let mut c = Command::new(self.bindir.join(bin));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c.current_dir(self.dir.path());
        c
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs; its backends are its children.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The server log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    fn launch(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join("postgres.log"))?;
            let mut cmd = self.command("postgres");
            cmd.args(["-D", &self.data_dir().to_string_lossy()])
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-k",
                    &self.dir.path().to_string_lossy(),
                ])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args([
                    "-c",
                    &format!("fsync={}", if self.opts.fsync { "on" } else { "off" }),
                ])
                .args(["-c", "max_connections=60", "-c", "shared_buffers=64MB"]);
            for (k, v) in &self.opts.settings {
                cmd.args(["-c", &format!("{k}={v}")]);
            }
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting postgres")?;
            // Ready when it accepts a query; a stale shared-memory block after kill -9 makes the
            // first start fail, so retry until the deadline.
            loop {
                if let Some(status) = child.try_wait()? {
                    if Instant::now() > deadline {
                        bail!("postgres exited with {status}; log:\n{}", self.log());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
                if self.psql("postgres", "SELECT 1").is_ok() {
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "postgres did not become ready in 30 s; log:\n{}",
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// psql, connected to database `db` as postgres over TCP, reading no ~/.psqlrc.
    fn psql_command(&self, db: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
            ]);
        cmd
    }

    /// Runs SQL through psql in database `db` and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = self
            .psql_command(db)
            .args(["-A", "-t", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "2")
            .output()?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs an SQL file through psql (ON_ERROR_STOP) in database `db`.
    pub fn psql_file(&self, db: &str, file: &Path) -> Result<()> {
        let out = self.psql_command(db).arg("-f").arg(file).output()?;
        if !out.status.success() {
            bail!(
                "psql -f {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Creates database `name` and returns its connection URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Connection URL of database `db` (TCP, trust authentication, user postgres).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// kill -9 of the postmaster (its backends notice and exit); the data stays for [`restart`](Self::restart).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Fast clean shutdown (SIGINT).
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while c.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    c.kill()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            c.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data (after [`kill`](Self::kill) or [`stop`](Self::stop)).
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.launch()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Immediate shutdown: the postmaster takes its backends down with it.
            let _ = Command::new("kill")
                .args(["-QUIT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
