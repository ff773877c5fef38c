//! `rollcall journal`: Recovering the unacknowledged punches of a journal rollcalld refused.

use std::process::ExitCode;

/// `rollcall journal`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall journal`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall journal: not built yet")
}
