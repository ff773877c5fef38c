//! Headless Chromium (Debian's `chromium`) driven from its command line: the DOM of a page after
//! its scripts ran (`--dump-dom`) and a screenshot (`--screenshot`). No DevTools protocol, no
//! crate: the two flags are all a page test needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

/// The chromium binary; an error naming the package when it is missing (a test must fail, not
/// skip, without it).
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in ["chromium", "chromium-browser"] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!("chromium not found: install Debian's chromium package (scripts/install-deps.sh does)")
}

/// A headless browser with its own throwaway profile.
#[derive(Debug)]
pub struct Chromium {
    bin: PathBuf,
    profile: tempfile::TempDir,
}

impl Chromium {
    /// Finds chromium; see [`binary`].
    pub fn new() -> anyhow::Result<Self> {
        Ok(Chromium {
            bin: binary()?,
            profile: tempfile::tempdir()?,
        })
    }

    fn run(&self, extra: &[String], url: &str) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox", // tests may run as root, where the sandbox refuses to start
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            // Lets the page's scripts run (fetch, redraw) for this much virtual time first.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", self.profile.path().display()))
        .args(extra)
        .arg(url);
        let out = run_with_timeout(cmd, Duration::from_secs(60))?;
        if !out.status.success() {
            bail!(
                "chromium failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The serialised DOM of `url` once its scripts have run.
    pub fn dump_dom(&self, url: &str) -> anyhow::Result<String> {
        self.run(&["--dump-dom".into()], url)
    }

    /// A PNG screenshot of `url`, `width` x `height` pixels, written to `out`.
    pub fn screenshot(&self, url: &str, out: &Path, width: u32, height: u32) -> anyhow::Result<()> {
        self.run(
            &[
                format!("--screenshot={}", out.display()),
                format!("--window-size={width},{height}"),
            ],
            url,
        )?;
        if !out.is_file() {
            bail!("chromium wrote no screenshot at {}", out.display());
        }
        Ok(())
    }
}

/// Runs `cmd` with its output in files (a pipe could fill and stall it), killing it past `limit`.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> anyhow::Result<std::process::Output> {
    let dir = tempfile::tempdir()?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .context("starting chromium")?;
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "chromium did not finish in {limit:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: std::fs::read(&err_path)?,
    })
}
