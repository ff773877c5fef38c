//! `rollcall provision`: Writes the whole installation of one gateway.

use std::process::ExitCode;

/// `rollcall provision`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall provision`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall provision: not built yet")
}
