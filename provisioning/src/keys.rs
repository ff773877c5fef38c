//! `rollcall keys`: Rotating the device data key.

use std::process::ExitCode;

/// `rollcall keys`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall keys`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall keys: not built yet")
}
