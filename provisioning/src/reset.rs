//! `rollcall reset`: Factory reset by crypto-shredding.

use std::process::ExitCode;

/// `rollcall reset`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall reset`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall reset: not built yet")
}
