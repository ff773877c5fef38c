//! The workspace's binaries, for tests in a package other than the one that builds them (a
//! package's own integration tests use `env!("CARGO_BIN_EXE_<name>")`, which cargo provides only
//! there).
//!
//! Each is built, or found up to date, by cargo into the target directory the running test
//! binary lives in, in the same profile, so `cargo test --release` tests release binaries.
//! `ROLLCALL_ROLLCALLD_BIN` and `ROLLCALL_INGEST_BIN` name other builds to test instead (a
//! release, or the code before a fix, to see a regression test fail).

use std::path::{Path, PathBuf};

/// rollcalld, or the build `ROLLCALL_ROLLCALLD_BIN` names.
pub fn rollcalld() -> PathBuf {
    workspace_binary("ROLLCALL_ROLLCALLD_BIN", "rollcall-daemon", "rollcalld")
}

/// rollcall-ingest, or the build `ROLLCALL_INGEST_BIN` names.
pub fn ingest() -> PathBuf {
    workspace_binary("ROLLCALL_INGEST_BIN", "rollcall-ingest", "rollcall-ingest")
}

/// `rollcall-ingest -c <config> migrate`: creates or upgrades the tables (standalone, with
/// CampsHub360's own), failing with its standard error.
pub fn migrate(config: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new(ingest())
        .args(["-c", &config.to_string_lossy(), "migrate"])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "rollcall-ingest migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn workspace_binary(override_var: &str, package: &str, bin: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return path.into();
    }
    // target/<profile>/deps/<test binary>: the profile directory is two levels up.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", bin]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let target_dir = profile_dir.parent().expect("target directory");
    let status = cmd
        .env("CARGO_TARGET_DIR", target_dir)
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build {bin}: {e}"));
    assert!(
        status.success(),
        "building {bin} (cargo build -p {package})"
    );
    profile_dir.join(bin)
}
