//! `rollcall status`: The local daemon's state, for people and scripts.

use std::process::ExitCode;

/// `rollcall status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall status`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall status: not built yet")
}
