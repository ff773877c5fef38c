//! `rollcall enrol`: Guided enrolment at a reader of the local gateway.

use std::process::ExitCode;

/// `rollcall enrol`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rollcall enrol`.
pub async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("rollcall enrol: not built yet")
}
