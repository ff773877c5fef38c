//! `rollcall doctor`: Every check that tells why a gateway is not working, each failure with its fix.

use std::process::ExitCode;

/// `rollcall doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall doctor`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall doctor: not built yet")
}
