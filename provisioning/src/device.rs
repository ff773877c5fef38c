//! `rollcall device`: Registers a gateway at the centre (its attendance_biometric_device row), enables or disables it.

use std::process::ExitCode;

/// `rollcall device`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall device`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall device: not built yet")
}
